// A kernel loop device bound to one backing file, owned for its lifetime (RAII).
//
// Configured atomically with LOOP_CONFIGURE (LOOP_SET_FD + LOOP_SET_STATUS64 on kernels without it)
// and always with LO_FLAGS_AUTOCLEAR: if the owning process dies, the kernel unbinds the device as
// soon as the last opener (a mounted filesystem, say) lets go — a killed deviced leaks nothing that
// outlives the mounts on top of it.
#pragma once

#include <sys/types.h>

#include <string>

#include "util/status.h"
#include "util/unique_fd.h"

namespace obd {

struct LoopOptions {
  bool readOnly = false;
  bool directIo = true;       // LO_FLAGS_DIRECT_IO: no second page cache between loop and the file
  uint32_t blockSize = 512;   // logical block size
};

class LoopDevice {
 public:
  LoopDevice() = default;
  LoopDevice(LoopDevice&&) = default;
  LoopDevice& operator=(LoopDevice&&) = default;
  ~LoopDevice() { (void)detach(true); }

  // Binds `backingFd` (kept open by the loop driver) to a free /dev/loopN.
  static Result<LoopDevice> attach(int backingFd, const std::string& label, const LoopOptions& opts);
  // Owns a bound loop device from an open descriptor of it (handed over by a previous process).
  static Result<LoopDevice> adopt(UniqueFd devFd);

  const std::string& path() const { return path_; }
  int index() const { return index_; }
  dev_t rdev() const { return rdev_; }
  bool directIo() const;  // what the driver actually chose (it may refuse direct I/O)
  // Switches a bound device between direct and buffered I/O to its file (the queue is drained first).
  Status setDirectIo(bool on);
  bool attached() const { return fd_.valid(); }

  // Without force: EBUSY if anyone holds the device exclusively (mounted filesystem, mkfs).
  // With force: the binding is dropped now, or — while still mounted — as soon as it is unmounted.
  Status detach(bool force);
  // Closes our descriptor and leaves the binding: a successor holding another descriptor keeps it.
  void abandon() { fd_.reset(); }
  int fd() const { return fd_.get(); }

 private:
  UniqueFd fd_;
  std::string path_;
  int index_ = -1;
  dev_t rdev_ = 0;
};

// Unbinds a loop device left behind by an earlier process (stale-state cleanup). EBUSY while mounted.
Status clearLoopDevice(const std::string& path);

}  // namespace obd
