#include "cache/direct_io.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "util/fd_io.h"

namespace obd {

void DirectIo::FreeAligned::operator()(uint8_t* p) const { std::free(p); }

DirectIo::DirectIo() : bounce_(static_cast<uint8_t*>(std::aligned_alloc(kAlign, kBounce))) {}

UniqueFd DirectIo::open(const std::string& path, int flags) {
  return UniqueFd(::open(path.c_str(), flags | O_DIRECT | O_CLOEXEC));
}

Status DirectIo::write(int directFd, int bufferedFd, const uint8_t* data, size_t n, uint64_t off, const std::string& name) {
  const bool alignedData = reinterpret_cast<uintptr_t>(data) % kAlign == 0;
  size_t whole = (off % kAlign == 0 && (bounce_ || alignedData)) ? n - n % kAlign : 0;
  size_t done = 0;
  if (alignedData && whole > 0) {  // fetched bytes (AlignedBytes): straight from their buffer
    Status st = pwriteAll(directFd, data, whole, off, name);
    if (st.code() == EINVAL) {
      whole = 0;  // opened, yet refused (a block size above 4 KiB): the page cache takes it all
    } else {
      OBD_RETURN_IF_ERROR(st);
      done = whole;
    }
  }
  while (done < whole) {
    size_t k = std::min(kBounce, whole - done);
    std::memcpy(bounce_.get(), data + done, k);  // user buffers are not block aligned
    Status st = pwriteAll(directFd, bounce_.get(), k, off + done, name);
    if (st.code() == EINVAL) break;  // opened, yet refused (a block size above 4 KiB): the page cache takes the rest
    OBD_RETURN_IF_ERROR(st);
    done += k;
  }
  if (done < n) OBD_RETURN_IF_ERROR(pwriteAll(bufferedFd, data + done, n - done, off + done, name));
  return Status::Ok();
}

Result<const uint8_t*> DirectIo::read(int directFd, size_t n, uint64_t off, const std::string& name) {
  if (!bounce_) return IoError(name + ": no buffer for direct reads");
  n = std::min(n, kBounce);
  size_t aligned = (n + kAlign - 1) / kAlign * kAlign;
  for (size_t done = 0; done < aligned;) {
    ssize_t r;
    do r = ::pread(directFd, bounce_.get() + done, aligned - done, static_cast<off_t>(off + done));
    while (r < 0 && errno == EINTR);
    if (r < 0) return SysError(name + ": direct read at " + std::to_string(off + done));
    if (r == 0) {  // end of file
      std::memset(bounce_.get() + done, 0, aligned - done);
      break;
    }
    done += static_cast<size_t>(r);
  }
  return static_cast<const uint8_t*>(bounce_.get());
}

}  // namespace obd
