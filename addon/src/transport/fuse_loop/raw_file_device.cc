#include "transport/fuse_loop/raw_file_device.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/fd_io.h"

namespace obd {

Result<std::unique_ptr<BlockDevice>> RawFileDevice::open(const std::string& path, bool writable) {
  UniqueFd fd(::open(path.c_str(), (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC));
  if (!fd.valid()) return SysError(path + ": open");
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return SysError(path + ": stat");
  if (!S_ISREG(st.st_mode)) return InvalidArg(path + ": not a regular file");
  uint64_t size = static_cast<uint64_t>(st.st_size) & ~uint64_t{511};
  if (size == 0) return InvalidArg(path + ": smaller than one 512-byte sector");
  return std::unique_ptr<BlockDevice>(new RawFileDevice(path, std::move(fd), size, writable));
}

void RawFileDevice::readAsync(void* buf, size_t n, uint64_t off, IoCallback cb) {
  cb(preadOrZero(fd_.get(), buf, n, off, path_));
}

Status RawFileDevice::write(const void* buf, size_t n, uint64_t off) {
  if (!writable_) return Status(EROFS, path_ + ": read-only");
  return pwriteAll(fd_.get(), buf, n, off, path_);
}

Status RawFileDevice::discard(uint64_t off, uint64_t n) {
  if (!writable_) return Status(EROFS, path_ + ": read-only");
  if (::fallocate(fd_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(off),
                  static_cast<off_t>(n)) != 0)
    return SysError(path_ + ": punch hole at " + std::to_string(off));
  return Status::Ok();
}

Status RawFileDevice::flush() {
  if (writable_ && ::fdatasync(fd_.get()) != 0) return SysError(path_ + ": fdatasync");
  return Status::Ok();
}

}  // namespace obd
