#include "util/fd_io.h"

#include <unistd.h>

#include <cstring>

namespace obd {

namespace {

// One loop for every call: `op(p, n, off)` transfers at most n bytes at off. At end of file the
// rest of the buffer is zeroed when `zeroAtEof`, else the transfer fails.
template <typename Op>
Status transferAll(Op op, char* p, size_t n, uint64_t off, const std::string& name, const char* what,
                   bool zeroAtEof = false) {
  while (n > 0) {
    ssize_t r = op(p, n, off);
    if (r < 0) {
      if (errno == EINTR) continue;
      return SysError(name + ": " + what + " at offset " + std::to_string(off));
    }
    if (r == 0 && zeroAtEof) {
      std::memset(p, 0, n);
      return Status::Ok();
    }
    if (r == 0) return Corrupt(name + ": unexpected end of file at offset " + std::to_string(off));
    p += r;
    n -= static_cast<size_t>(r);
    off += static_cast<uint64_t>(r);
  }
  return Status::Ok();
}

}  // namespace

Status pwriteAll(int fd, const void* buf, size_t n, uint64_t off, const std::string& name) {
  return transferAll([fd](char* p, size_t k, uint64_t o) { return ::pwrite(fd, p, k, static_cast<off_t>(o)); },
                     const_cast<char*>(static_cast<const char*>(buf)), n, off, name, "write");
}

Status preadAll(int fd, void* buf, size_t n, uint64_t off, const std::string& name) {
  return transferAll([fd](char* p, size_t k, uint64_t o) { return ::pread(fd, p, k, static_cast<off_t>(o)); },
                     static_cast<char*>(buf), n, off, name, "read");
}

Status preadOrZero(int fd, void* buf, size_t n, uint64_t off, const std::string& name) {
  return transferAll([fd](char* p, size_t k, uint64_t o) { return ::pread(fd, p, k, static_cast<off_t>(o)); },
                     static_cast<char*>(buf), n, off, name, "read", true);
}

Status writeAll(int fd, const void* buf, size_t n, const std::string& name) {
  return transferAll([fd](char* p, size_t k, uint64_t) { return ::write(fd, p, k); },
                     const_cast<char*>(static_cast<const char*>(buf)), n, 0, name, "write");
}

}  // namespace obd
