// The fuse-loop transport: a BlockDevice served as a file on a private FUSE mount, with a loop
// device on top of that file. The loop device is what the kernel and users see (/dev/loopN).
//
// Teardown order matters: the loop device is unbound first (it drains its I/O through our still
// running FUSE threads), then the FUSE mount goes. A killed process needs no teardown from us: its
// /dev/fuse descriptor closes, the kernel aborts the connection (I/O fails fast with ENOTCONN/EIO),
// and the loop device's AUTOCLEAR unbinds it once nothing has it mounted.
#pragma once

#include <sys/types.h>

#include <memory>
#include <mutex>
#include <string>

#include "io/file.h"
#include "transport/fuse_loop/fuse_file_server.h"
#include "transport/fuse_loop/loop_device.h"
#include "transport/transport.h"

namespace obd {

struct FuseLoopOptions {
  std::string id;        // device id, shown as the FUSE source "obd:<id>" and the loop file name
  std::string mountDir;  // private, empty directory for the FUSE mount (created if missing)
  bool loopDirectIo = true;
  int threads = 2;
};

class FuseLoopDevice : public ServedDevice {
 public:
  static Result<std::unique_ptr<FuseLoopDevice>> create(std::shared_ptr<BlockDevice> dev, const FuseLoopOptions& opts);
  ~FuseLoopDevice() override;

  const std::string& path() const override { return path_; }
  DeviceStats stats() const override { return snapshotCounters(*counters_); }
  Status close(bool force) override;

  int loopIndex() const { return loopIndex_; }
  dev_t rdev() const override { return rdev_; }
  bool directIo() const { return directIo_; }
  const std::string& backingFile() const { return backingFile_; }
  // How the kernel's requests reach us: "/dev/fuse" (read/write on cloned descriptors) or "io_uring".
  std::string fusePath() const { return "/dev/fuse"; }
  uint64_t size() const override { return size_; }
  bool readOnly() const override { return readOnly_; }

 private:
  FuseLoopDevice() = default;
  std::mutex mu_;
  std::shared_ptr<DeviceCounters> counters_ = std::make_shared<DeviceCounters>();
  std::shared_ptr<FuseFileServer> server_;
  LoopDevice loop_;
  std::string path_, backingFile_, mountDir_;
  int loopIndex_ = -1;
  dev_t rdev_ = 0;
  bool directIo_ = false, readOnly_ = true;
  uint64_t size_ = 0;
};

}  // namespace obd
