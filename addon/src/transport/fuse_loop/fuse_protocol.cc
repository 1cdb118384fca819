#include "transport/fuse_loop/fuse_protocol.h"

#include <algorithm>
#include <cstring>

namespace obd {

namespace {
// Older kernels take shorter fuse_init_out replies (UAPI FUSE_COMPAT_*_INIT_OUT_SIZE).
constexpr size_t kCompatInitOutSize = 8, kCompat22InitOutSize = 24;
constexpr uint32_t kOverIoUring2 = 1u << 9;  // FUSE_OVER_IO_URING (bit 41) as a flags2 bit
}  // namespace

Result<FuseInitReply> negotiateInit(const char* msg, size_t len, const FuseInitWishes& wishes) {
  if (len < sizeof(fuse_in_header) + 16) return InvalidArg("FUSE_INIT request is " + std::to_string(len) + " bytes, too short");
  fuse_in_header h;
  std::memcpy(&h, msg, sizeof h);
  if (h.opcode != FUSE_INIT) return InvalidArg("not a FUSE_INIT request (opcode " + std::to_string(h.opcode) + ")");
  fuse_init_in in{};
  std::memcpy(&in, msg + sizeof h, std::min(len - sizeof h, sizeof in));

  FuseInitReply r;
  r.out.major = FUSE_KERNEL_VERSION;
  r.out.minor = FUSE_KERNEL_MINOR_VERSION;
  if (in.major < 7) {
    r.error = EPROTO;
    return r;
  }
  // A newer major: answer with ours only; the kernel then re-sends INIT in our version.
  if (in.major > 7) {
    r.size = kCompatInitOutSize;
    return r;
  }
  r.out.minor = std::min<uint32_t>(in.minor, FUSE_KERNEL_MINOR_VERSION);
  r.out.max_readahead = in.max_readahead;
  const uint32_t wanted = FUSE_ASYNC_READ | FUSE_BIG_WRITES | FUSE_ASYNC_DIO | FUSE_MAX_PAGES;
  r.out.flags = in.flags & wanted;
  // Writeback cache: dirty pages of the file are written back in large FUSE_WRITEs by the kernel's
  // flusher (and on fsync), instead of one round trip per write the loop device issues.
  if (wishes.writebackCache) r.out.flags |= in.flags & FUSE_WRITEBACK_CACHE;
  r.out.max_background = kFuseMaxBackground;
  r.out.congestion_threshold = kFuseMaxBackground * 3 / 4;
  r.out.max_write = kFuseMaxWrite;
  r.out.time_gran = 1;
  r.out.max_pages = kFuseMaxPages;
  // flags2 counts only with FUSE_INIT_EXT set in the reply.
  if (wishes.ring && (in.flags & FUSE_INIT_EXT) && (in.flags2 & kOverIoUring2)) {
    r.out.flags |= FUSE_INIT_EXT;
    r.out.flags2 = kOverIoUring2;
    r.ring = true;
  }
  r.size = r.out.minor < 5 ? kCompatInitOutSize : r.out.minor < 23 ? kCompat22InitOutSize : sizeof r.out;
  return r;
}

}  // namespace obd
