// A BlockDevice served through target_core_user as /dev/sdX: creates the configfs backstore and the
// tcm_loop LUN, maps the UIO ring and runs a RingProcessor over a ScsiDisk. One object per device;
// close() (or the destructor) tears everything down in reverse order, also after a failed create.
//
// How deviced uses it (create/close block for up to timeoutMs: call them off the JS thread):
//   at start   checkTcmuSupport(true) decides transport=auto (reason names the missing module);
//              listBackstores(paths, hba) → adopt (adoptExisting) what its state knows, removeStaleDevice
//              the rest.
//   attach     opts.backstore = {hba, "dev_<id>", "obd/<config.v1.json>", size 0 = device size,
//              loopbackWwn = aciLoopbackWwn(id)}; TcmuDevice::create(opts, blockDevice) → devicePath().
//   detach     close(); on a deviced upgrade abandon() leaves /dev/sdX for the next process to adopt.
#pragma once

#include <memory>
#include <string>

#include "io/file.h"
#include "transport/tcmu/kernel.h"
#include "transport/tcmu/ring_processor.h"
#include "transport/tcmu/scsi.h"
#include "util/status.h"
#include "util/unique_fd.h"

namespace obd::tcmu {

struct TcmuDeviceOptions {
  BackstoreSpec backstore;  // hba, name, cfgString, size (filled from the device if 0), ...
  SysPaths paths;
  int timeoutMs = 10000;    // for the UIO device and the SCSI disk to appear
  uint32_t maxTransferBlocks = 2048;
  // If the backstore already exists (left by a previous process), serve it again instead of failing:
  // its /dev/sdX survives our restart. Commands the old process fetched but never completed are
  // fetched again from cmd_tail (reads and writes are idempotent).
  bool adoptExisting = false;
};

struct TcmuDeviceStats {
  RingStats ring;
};

class TcmuDevice {
 public:
  static Result<std::unique_ptr<TcmuDevice>> create(TcmuDeviceOptions opts, std::shared_ptr<BlockDevice> dev);
  ~TcmuDevice();
  TcmuDevice(const TcmuDevice&) = delete;
  TcmuDevice& operator=(const TcmuDevice&) = delete;

  const std::string& devicePath() const { return devicePath_; }  // /dev/sdX
  const std::string& uioPath() const { return uioPath_; }
  TcmuDeviceStats stats() const;
  Status ringError() const;
  // Removes the LUN and the backstore, stops the ring. Idempotent; returns the first error.
  Status close();
  // Stops serving but leaves backstore, LUN and /dev/sdX in the kernel for a later adoptExisting
  // (deviced upgrade/restart). I/O stalls meanwhile, up to the backstore's cmd_time_out.
  void abandon();

 private:
  TcmuDevice(TcmuDeviceOptions opts, std::shared_ptr<BlockDevice> dev);
  Status open();

  TcmuDeviceOptions opts_;
  std::shared_ptr<BlockDevice> dev_;
  std::unique_ptr<ScsiDisk> scsi_;
  std::unique_ptr<RingProcessor> ring_;
  UniqueFd uio_;
  void* map_ = nullptr;
  size_t mapSize_ = 0;
  bool backstoreMade_ = false, lunMade_ = false;  // ours to remove on close()
  std::string devicePath_, uioPath_;
};

}  // namespace obd::tcmu
