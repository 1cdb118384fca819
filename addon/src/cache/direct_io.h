// Cache data moved past the page cache (O_DIRECT). Filling the cache through the page cache copies
// every byte into freshly allocated pages, which costs more CPU than receiving it (on a VM whose free
// memory goes back to the host, several microseconds per page) and keeps a second copy of bytes the
// container's own filesystem caches above the device anyway. Direct writes go from a reused aligned
// buffer to the disk; the verification pass reads the same way. Pages of the cache file are then
// cached only for ranges that are read again.
//
// Only the writer thread of a BlockCache uses one (it owns the bounce buffer). A filesystem that
// refuses O_DIRECT (tmpfs) gets no direct descriptor, and everything goes through the page cache.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "util/status.h"
#include "util/unique_fd.h"

namespace obd {

class DirectIo {
 public:
  static constexpr size_t kAlign = 4096;
  DirectIo();
  // `path` opened with O_DIRECT and `flags`; invalid when the filesystem refuses it.
  static UniqueFd open(const std::string& path, int flags);
  // [data, data + n) at `off`: the whole blocks through `directFd` (from `data` itself when it is
  // aligned, else through the bounce buffer), a partial last block through `bufferedFd` (the tail
  // of a blob whose size is not a multiple of the block).
  Status write(int directFd, int bufferedFd, const uint8_t* data, size_t n, uint64_t off, const std::string& name);
  // min(n, kBounce) bytes at `off` (a multiple of kAlign), in a buffer valid until the next call;
  // bytes past end of file read as zero.
  Result<const uint8_t*> read(int directFd, size_t n, uint64_t off, const std::string& name);
  static constexpr size_t kBounce = 4 << 20;

 private:
  struct FreeAligned {
    void operator()(uint8_t* p) const;
  };
  std::unique_ptr<uint8_t, FreeAligned> bounce_;
};

}  // namespace obd
