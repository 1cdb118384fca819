// One FUSE request as the filesystem sees it, whichever way it came (read(2) on /dev/fuse or an
// io_uring entry), and the one call that answers it the same way.
#pragma once

#include <linux/fuse.h>
#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <utility>

namespace obd {

struct FuseRingEntry;  // fuse_ring_channel.h

// Where the answer goes. /dev/fuse: the descriptor that read the request (the kernel looks a reply up
// on that description's processing list only). io_uring: the entry whose buffers hold the request.
struct FuseReplyTarget {
  int fd = -1;
  uint64_t unique = 0;  // as received (a resent request's bit 63 included)
  FuseRingEntry* ring = nullptr;
};

struct FuseRequest {
  fuse_in_header h{};
  // The first argument; from /dev/fuse also everything after it, contiguous.
  const char* arg = nullptr;
  size_t argLen = 0;
  // io_uring only: the payload buffer (every argument after the first: names, write data).
  const char* payload = nullptr;
  size_t payloadLen = 0;
  FuseReplyTarget to;

  // The bytes after a first argument of `firstArgSize` bytes (a LOOKUP name, WRITE data).
  std::pair<const char*, size_t> after(size_t firstArgSize) const {
    if (payload) return {payload, payloadLen};
    if (argLen < firstArgSize) return {nullptr, 0};
    return {arg + firstArgSize, argLen - firstArgSize};
  }
};

// Sends `error` (0 or a positive errno) or the payload `iov` as the reply. A reply the kernel no
// longer wants (the request was interrupted, the connection is gone) is dropped without complaint.
void sendFuseReply(const FuseReplyTarget& to, int error, const iovec* iov = nullptr, int iovcnt = 0);

}  // namespace obd
