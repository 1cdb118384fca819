#include "io/local_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

namespace obd {

Result<std::shared_ptr<LocalFile>> LocalFile::open(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return SysError(path + ": open");
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return SysError(path + ": stat");
  if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) return InvalidArg(path + ": not a regular file");
  return std::shared_ptr<LocalFile>(new LocalFile(path, std::move(fd), static_cast<uint64_t>(st.st_size)));
}

Status LocalFile::readSync(void* buf, size_t n, uint64_t off) {
  auto* p = static_cast<char*>(buf);
  while (n > 0) {
    if (off >= size_) {  // past EOF reads as zero (see ReadableFile contract)
      std::memset(p, 0, n);
      return Status::Ok();
    }
    ssize_t r = ::pread(fd_.get(), p, n, static_cast<off_t>(off));
    if (r < 0) {
      if (errno == EINTR) continue;
      return SysError(path_ + ": read at offset " + std::to_string(off));
    }
    if (r == 0) {  // file shrank under us
      std::memset(p, 0, n);
      return Status::Ok();
    }
    p += r;
    n -= static_cast<size_t>(r);
    off += static_cast<uint64_t>(r);
  }
  return Status::Ok();
}

}  // namespace obd
