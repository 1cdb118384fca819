// The fuse-loop transport: a BlockDevice served as a file on a private FUSE mount, with a loop
// device on top of that file. The loop device is what the kernel and users see (/dev/loopN).
//
// Teardown order matters: dirty pages of a page-cached device are written back first (fsync of the
// loop device reaches the FUSE file and our flush), then the loop device is unbound (it drains its I/O
// through our still running FUSE threads), then the FUSE mount goes.
//
// Restarts: deviced keeps both descriptors (/dev/fuse and /dev/loopN) in an fd store outside itself,
// so a killed deviced leaves the connection alive with its requests queued, the loop device bound and
// every mount in place; the next deviced creates the device with `takeover` and serves the same
// connection and /dev/loopN. Without a holder a killed process's last /dev/fuse close aborts the
// connection (I/O fails with EIO) and AUTOCLEAR unbinds the loop device once nothing mounts it.
#pragma once

#include <sys/types.h>

#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "io/file.h"
#include "transport/fuse_loop/fuse_file_server.h"
#include "transport/fuse_loop/loop_device.h"
#include "transport/transport.h"

namespace obd {

// A live device a previous deviced served: its descriptors (borrowed, duplicated) and its FUSE_INIT.
struct FuseTakeover {
  int fuseFd = -1;
  int loopFd = -1;
  std::string initRequest;
};

struct FuseLoopOptions {
  std::string id;        // device id, shown as the FUSE source "obd:<id>" and the loop file name
  std::string mountDir;  // private, empty directory for the FUSE mount (created if missing)
  // Page-cached (buffered loop device on a KEEP_CACHE open, writeback cache for a writable device, the
  // bdi's limits raised) or direct (loop direct I/O on a FOPEN_DIRECT_IO open, nothing cached between
  // the loop device and us). See docs/architecture.md "The fuse-loop data path".
  bool pageCache = false;
  // Direct mode, but the file opened without O_DIRECT (a KEEP_CACHE open; the loop device's direct I/O
  // still bypasses its page cache), so that usePageCache() can switch the device later. A writable
  // device negotiates the writeback cache at once (INIT is the only moment); its direct writes bypass it.
  // With takeover: how the predecessor opened it (the caller's record; the kernel does not tell).
  bool cacheableFile = false;
  int threads = 2;
  bool fuseIoUring = false;  // FUSE over io_uring when the kernel offers it (opt-in: see fuse_ring_channel.h)
  std::optional<FuseTakeover> takeover;
  int releaseDrainMs = 5000;  // release(handOver): how long reads in flight may take to be answered
};

class FuseLoopDevice : public ServedDevice {
 public:
  static Result<std::unique_ptr<FuseLoopDevice>> create(std::shared_ptr<BlockDevice> dev, const FuseLoopOptions& opts);
  ~FuseLoopDevice() override;

  const std::string& path() const override { return path_; }
  DeviceStats stats() const override { return snapshotCounters(*counters_); }
  Status close(bool force) override;
  void release(bool handOver) override;

  // What the fd store keeps for a successor (descriptors stay ours; valid while attached).
  int fuseFd() const { return server_ ? server_->fuseFd() : -1; }
  int loopFd() const { return loop_.fd(); }
  std::string initRequest() const { return server_ ? server_->initRequest() : std::string(); }
  bool tookOver() const { return tookOver_; }
  // After a takeover: whether the kernel resent the requests the predecessor left unanswered.
  Status resendStatus() const { return server_ ? server_->resendStatus() : Status::Ok(); }

  int loopIndex() const { return loopIndex_; }
  dev_t rdev() const override { return rdev_; }
  bool directIo() const { return directIo_; }
  // Buffered loop device on the FUSE file's page cache (read from the kernel, so a successor knows too).
  bool pageCache() const { return !directIo_; }
  // Direct → page-cached on a live device (a lazy device whose blobs are all local now): the loop
  // device goes buffered. Only for a device whose file was opened with cacheableFile (an O_DIRECT open
  // stays uncached whatever the loop device does). No LOOP_CHANGE_FD: it marks the block device dead, which
  // shuts down a filesystem mounted on it.
  Status usePageCache();
  // Page-cached device whose bdi limits could not be raised: why (writes then run at FUSE_WRITE speed).
  const std::string& bdiError() const { return bdiError_; }
  const std::string& backingFile() const { return backingFile_; }
  // How the kernel's requests reach us: "/dev/fuse" (read/write on cloned descriptors) or "io_uring".
  std::string fusePath() const { return server_ ? server_->fusePath() : "/dev/fuse"; }
  uint64_t size() const override { return size_; }
  bool readOnly() const override { return readOnly_; }

 private:
  FuseLoopDevice() = default;
  static Result<std::unique_ptr<FuseLoopDevice>> takeOver(std::unique_ptr<FuseLoopDevice> d, std::shared_ptr<BlockDevice> dev,
                                                          const FuseLoopOptions& opts, const FuseServerOptions& so);
  void setLoopInfo();
  Status flushDirtyPages();
  void raiseBdiLimits(int fileFd);
  std::mutex mu_;
  std::shared_ptr<DeviceCounters> counters_ = std::make_shared<DeviceCounters>();
  std::shared_ptr<FuseFileServer> server_;
  LoopDevice loop_;
  std::string path_, backingFile_, mountDir_, bdiError_;
  int loopIndex_ = -1;
  dev_t rdev_ = 0;
  bool directIo_ = false, readOnly_ = true, tookOver_ = false, cacheableFile_ = false;
  int releaseDrainMs_ = 5000;
  uint64_t size_ = 0;
};

}  // namespace obd
