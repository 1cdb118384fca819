// A FUSE connection as the kernel sees it: one /dev/fuse open file description, mounted on a
// directory. We open and mount it ourselves (not through libfuse) so that the descriptor is ours to
// hand to the fd store and a later deviced can serve the same connection after we are gone.
//
// Takeover facts (kernel fs/fuse/dev.c): the connection lives while any duplicate of the descriptor
// is open anywhere; closing the last one aborts it (every request fails, the mount answers ENOTCONN).
// Requests a dead server had read but not answered stay on that description's processing list until
// FUSE_NOTIFY_RESEND (Linux 6.9, protocol 7.40) puts them back on the pending queue. The kernel sends
// FUSE_INIT once per connection, so a successor replays the INIT its predecessor saw (see
// FuseFileServer::adopt) instead of waiting for one.
#pragma once

#include <string>

#include "util/status.h"
#include "util/unique_fd.h"

namespace obd {

// Opens /dev/fuse and mounts it on `dir` as type "fuse.<subtype>" with `source` as the mount source.
Result<UniqueFd> mountFuse(const std::string& dir, const std::string& source, const std::string& subtype);

// Asks the kernel to resend every request read from this connection and not yet answered. ENOSYS-like
// failure (EINVAL) means the kernel predates FUSE_NOTIFY_RESEND; the caller logs what that costs.
Status notifyResend(int fuseFd);

// Drops the kernel's cached pages of inode `ino` (FUSE_NOTIFY_INVAL_INODE, whole file). Dirty pages
// are written back first through this connection, so its server must still be serving.
Status notifyInvalInode(int fuseFd, uint64_t ino);

// FUSE_INIT's opcode and where its `unique` sits in the request header (UAPI fuse_in_header).
constexpr uint32_t kFuseInitOpcode = 26;
constexpr size_t kFuseInHeaderSize = 40;

}  // namespace obd
