// The FUSE kernel protocol as far as a one-file filesystem needs it: the wire structs come from the
// UAPI header (<linux/fuse.h>); what that copy (Debian's, protocol 7.38) lacks is defined here, and
// the INIT negotiation is one pure function of the kernel's INIT request, so a successor deviced
// that only has the recorded request arrives at exactly the state its predecessor negotiated.
#pragma once

#include <linux/fuse.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "util/status.h"

namespace obd {

constexpr int32_t kFuseNotifyResend = 7;          // enum fuse_notify_code, protocol 7.40
constexpr uint64_t kFuseUniqueResend = 1ull << 63;  // set by the kernel on a resent request's unique

// What we ask for: requests of up to 1 MiB (256 pages) in both directions, and async direct I/O so
// the loop device keeps many requests in flight on one open file. max_readahead in the reply can only
// lower the kernel's offer (the bdi's read_ahead_kb at mount time); a page-cached device raises it
// through sysfs instead (fuse_bdi.h).
constexpr uint32_t kFuseMaxWrite = 1u << 20;
constexpr uint16_t kFuseMaxPages = 256;
// Bounds the kernel's outstanding async requests, hence our read buffers (memory stays bounded).
constexpr uint16_t kFuseMaxBackground = 64;
// A read(2) on /dev/fuse must offer header + fuse_write_in + max_write bytes.
constexpr size_t kFuseRequestBufferSize = kFuseMaxWrite + 4096;

// The negotiated connection state (fuse_init_out) and its size on the wire for the kernel's minor.
struct FuseInitReply {
  fuse_init_out out{};
  size_t size = 0;
  int error = 0;      // non-zero: answer INIT with this errno instead
  bool ring = false;  // the reply turns on FUSE over io_uring
};

// What the server asks for beyond the fixed set; both are the device's configuration, so a successor
// that has the same configuration and the recorded INIT arrives at the same reply.
struct FuseInitWishes {
  bool ring = false;            // take FUSE over io_uring when the kernel offers it (FUSE_OVER_IO_URING in flags2, 7.42)
  bool writebackCache = false;  // page-cached writable device: writes are gathered in the file's page cache
};

// The reply to the INIT request `msg` (header included); errors name what is wrong with it.
Result<FuseInitReply> negotiateInit(const char* msg, size_t len, const FuseInitWishes& wishes);

}  // namespace obd
