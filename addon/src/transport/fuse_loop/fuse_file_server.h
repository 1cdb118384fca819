// Serves one BlockDevice as a single regular file ("<mountDir>/disk") through a private FUSE mount.
// It speaks the FUSE kernel protocol itself (fuse_protocol.h) on our own reader threads
// (fuse_dev_channel.h), never node's libuv pool: a one-file filesystem needs a dozen opcodes, and
// owning the protocol lets a successor take the connection over from a recorded INIT.
//
// Replies are asynchronous: a read is handed to BlockDevice::readAsync and answered from its callback,
// on whatever thread that runs (inline for local layers, later for remote misses), so no thread is
// parked per I/O. Reads that fall inside a read already in flight wait for it instead of reaching the
// stack twice. write / fallocate(PUNCH_HOLE|ZERO_RANGE) / fsync map to write / discard / flush.
//
// Each open of the file chooses its caching by its own flags: an O_DIRECT open is answered with
// FOPEN_DIRECT_IO (every request reaches us at the size the loop device issued it, nothing cached in
// the kernel), any other with FOPEN_KEEP_CACHE (the file's page cache serves repeated reads and, with
// the writeback cache negotiated, gathers writes). FuseLoopDevice opens it one way or the other.
//
// Lifecycle: start() mounts a new connection; adopt() serves a live one a previous process left (its
// /dev/fuse descriptor came from the fd store); release() stops at a request boundary and leaves the
// connection to a successor; stop() ends it. The /dev/fuse descriptor is ours (fuseFd()); the readers
// use duplicates (or clones) of it.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <condition_variable>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "io/file.h"
#include "transport/fuse_loop/fuse_dev_channel.h"
#include "transport/fuse_loop/fuse_protocol.h"
#include "transport/fuse_loop/fuse_read_workers.h"
#include "transport/fuse_loop/fuse_ring_channel.h"
#include "transport/transport.h"
#include "util/unique_fd.h"

namespace obd {

struct ReadBuffer {
  char* data = nullptr;
  size_t size = 0;
  bool borrowed = false;  // an io_uring entry's payload buffer: the reply is already in place
};

struct FuseServerOptions {
  std::string fsName = "obd";  // shows up as the mount source in mountinfo
  int threads = 2;             // reader threads on /dev/fuse
  bool cloneFds = false;       // one cloned /dev/fuse descriptor per reader (see fuse_dev_channel.h)
  bool ioUring = false;        // serve requests through io_uring when the kernel offers it (fuse_ring_channel.h)
  bool writebackCache = false; // negotiate FUSE_WRITEBACK_CACHE (a writable, page-cached device)
};

class FuseFileServer : public std::enable_shared_from_this<FuseFileServer> {
 public:
  static Result<std::shared_ptr<FuseFileServer>> start(std::shared_ptr<BlockDevice> dev, const std::string& mountDir,
                                                       const FuseServerOptions& opts,
                                                       std::shared_ptr<DeviceCounters> counters);
  // Serves the connection mounted on mountDir whose descriptor is `fuseFd`, as the server that saw
  // `initRequest` would: negotiates from that INIT as the predecessor did, then asks the kernel to
  // resend what the previous server read and never answered (resendStatus() says whether it could).
  static Result<std::shared_ptr<FuseFileServer>> adopt(std::shared_ptr<BlockDevice> dev, const std::string& mountDir,
                                                       UniqueFd fuseFd, const std::string& initRequest,
                                                       const FuseServerOptions& opts,
                                                       std::shared_ptr<DeviceCounters> counters);
  ~FuseFileServer();

  const std::string& filePath() const { return filePath_; }
  const std::string& mountDir() const { return mountDir_; }
  int fuseFd() const { return fuseFd_.get(); }
  // The FUSE_INIT request the kernel sent on this connection, as received (a successor replays it).
  std::string initRequest() const;
  const Status& resendStatus() const { return resend_; }
  // How the kernel's requests reach us: "io_uring" once the rings are registered, else "/dev/fuse".
  std::string fusePath() const { return ring_ ? "io_uring" : "/dev/fuse"; }
  // Unmounts and stops the session threads. Outstanding and later kernel requests fail (ENOTCONN):
  // the caller has made sure no other process still holds the descriptor.
  void stop();
  // Process exit with a successor to come: stops reading at a request boundary, waits up to
  // drainMs for reads in flight to be answered, and leaves mount and descriptor alone. Whatever stays
  // unanswered is resent to the successor.
  void release(int drainMs);

  struct PendingRead;

 private:
  FuseFileServer(std::shared_ptr<BlockDevice> dev, std::string mountDir, std::shared_ptr<DeviceCounters> counters)
      : dev_(std::move(dev)), mountDir_(std::move(mountDir)), filePath_(mountDir_ + "/disk"), counters_(std::move(counters)) {}
  static Result<std::shared_ptr<FuseFileServer>> serve(std::shared_ptr<BlockDevice> dev, const std::string& mountDir,
                                                       UniqueFd fuseFd, const std::string& replayInit,
                                                       const FuseServerOptions& opts,
                                                       std::shared_ptr<DeviceCounters> counters);
  void stopThreads();
  // One request as read from /dev/fuse (header included); answers it now or when its read completes.
  void dispatch(int fd, char* msg, size_t len);
  void handleInit(const FuseReplyTarget& to, const char* msg, size_t len);
  void handle(const FuseRequest& r);
  bool prepareRing();
  void handleLookup(const FuseRequest& r);
  void handleAttr(const FuseReplyTarget& to, uint64_t ino, const char* arg, size_t len, bool set);
  void handleOpen(const FuseReplyTarget& to, uint64_t ino, const char* arg, size_t len, bool dir);
  void handleReaddir(const FuseReplyTarget& to, uint64_t ino, const char* arg, size_t len);
  void handleStatfs(const FuseReplyTarget& to);
  void handleRead(const FuseReplyTarget& to, const char* arg, size_t len);
  void handleWrite(const FuseRequest& r);
  void handleFallocate(const FuseReplyTarget& to, const char* arg, size_t len);
  void handleFsync(const FuseReplyTarget& to);
  void finishRead(const std::shared_ptr<PendingRead>& pr, const Status& st);
  void forgetReadsOverlapping(uint64_t off, uint64_t len);
  ReadBuffer takeBuffer(size_t len);
  void giveBuffer(ReadBuffer b);

  std::shared_ptr<BlockDevice> dev_;
  std::string mountDir_, filePath_;
  std::shared_ptr<DeviceCounters> counters_;
  std::unique_ptr<FuseDevChannel> channel_;
  std::unique_ptr<FuseRingChannel> ring_;
  std::unique_ptr<FuseReadWorkers> bigReads_;  // io_uring only: reads of kBigReadBytes and more
  FuseInitWishes wishes_;
  static constexpr int kRingEntriesPerQueue = 16;
  static constexpr uint64_t kBigReadBytes = 64 * 1024;
  UniqueFd fuseFd_;  // our duplicate of the connection
  bool mounted_ = false;
  Status resend_;
  mutable std::mutex initMu_;
  std::string initRequest_;
  std::atomic<bool> haveInit_{false};

  // At most this many bytes of idle read buffers are kept per device (bounded server memory).
  static constexpr size_t kPoolBytes = 4u << 20;
  std::mutex poolMu_;
  std::vector<ReadBuffer> pool_;
  size_t pooledBytes_ = 0;

  std::mutex readsMu_;
  std::list<std::shared_ptr<PendingRead>> reads_;  // in flight and still joinable
};

}  // namespace obd
