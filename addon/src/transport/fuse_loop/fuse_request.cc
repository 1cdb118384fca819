#include "transport/fuse_loop/fuse_request.h"

#include <cerrno>
#include <cstring>

#include "transport/fuse_loop/fuse_ring_channel.h"

namespace obd {

void sendFuseReply(const FuseReplyTarget& to, int error, const iovec* iov, int iovcnt) {
  if (to.ring) return commitFuseRingReply(to.ring, to.unique, error, iov, iovcnt);
  fuse_out_header h{};
  h.unique = to.unique;
  h.error = error ? -error : 0;
  iovec v[4];
  v[0] = {&h, sizeof h};
  size_t len = sizeof h;
  int n = 1;
  for (int i = 0; !error && i < iovcnt && n < 4; i++) {
    v[n++] = iov[i];
    len += iov[i].iov_len;
  }
  h.len = static_cast<uint32_t>(len);
  while (::writev(to.fd, v, n) < 0 && errno == EINTR) {
  }
}

}  // namespace obd
