#include "io/local_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "util/fd_io.h"

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
  // Past size() reads as zero (see ReadableFile contract), as does a tail the file lost since open.
  size_t inFile = off >= size_ ? 0 : static_cast<size_t>(std::min<uint64_t>(n, size_ - off));
  std::memset(static_cast<char*>(buf) + inFile, 0, n - inFile);
  return preadOrZero(fd_.get(), buf, inFile, off, path_);
}

}  // namespace obd
