#include "transport/tcmu/tcmu_device.h"

#include <fcntl.h>
#include <sys/mman.h>

namespace obd::tcmu {

Result<std::unique_ptr<TcmuDevice>> TcmuDevice::create(TcmuDeviceOptions opts, std::shared_ptr<BlockDevice> dev) {
  if (!dev) return InvalidArg("tcmu: no block device");
  if (opts.backstore.sizeBytes == 0) opts.backstore.sizeBytes = dev->size();
  if (opts.backstore.sizeBytes % opts.backstore.blockSize != 0)
    return InvalidArg("tcmu: device size " + std::to_string(opts.backstore.sizeBytes) + " is not a multiple of " +
                      std::to_string(opts.backstore.blockSize));
  TcmuSupport support = checkTcmuSupport(false, opts.paths);
  if (!support.ok) return Status(ENOTSUP, "tcmu: " + support.reason);
  std::unique_ptr<TcmuDevice> d(new TcmuDevice(std::move(opts), std::move(dev)));
  Status st = d->open();
  if (!st.ok()) {
    d->close();
    return st.wrap("tcmu device " + d->opts_.backstore.name);
  }
  return d;
}

TcmuDevice::TcmuDevice(TcmuDeviceOptions opts, std::shared_ptr<BlockDevice> dev)
    : opts_(std::move(opts)), dev_(std::move(dev)) {}

TcmuDevice::~TcmuDevice() { close(); }

Status TcmuDevice::open() {
  const BackstoreSpec& spec = opts_.backstore;
  if (!(opts_.adoptExisting && backstoreExists(opts_.paths, spec))) {
    OBD_RETURN_IF_ERROR(createBackstore(opts_.paths, spec));
  }
  backstoreMade_ = true;
  auto uio = findUioDevice(opts_.paths, spec, opts_.timeoutMs);
  if (!uio.ok()) return uio.status();
  uioPath_ = uio.value().devPath;
  uio_.reset(::open(uioPath_.c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC));
  if (!uio_.valid()) return SysError("open " + uioPath_);
  mapSize_ = size_t(uio.value().mapSize);
  void* p = ::mmap(nullptr, mapSize_, PROT_READ | PROT_WRITE, MAP_SHARED, uio_.get(), 0);
  if (p == MAP_FAILED) return SysError("mmap " + uioPath_);
  map_ = p;

  ScsiDiskParams params;
  params.blockSize = spec.blockSize;
  params.maxTransferBlocks = opts_.maxTransferBlocks;
  params.unitSerial = readUnitSerial(opts_.paths, spec);
  params.cfgString = spec.cfgString;
  // Unlike overlaybd (WCE off), a writable disk reports a write cache: only then does the initiator
  // send SYNCHRONIZE CACHE on fsync and journal commits, which is what makes the LSMT upper's data
  // and index durable (BlockDevice::flush). Read-only disks have nothing to flush.
  params.writeCache = !dev_->readOnly();
  scsi_ = std::make_unique<ScsiDisk>(*dev_, params);
  auto ring = RingProcessor::create(static_cast<uint8_t*>(map_), mapSize_, Doorbell{uio_.get(), uio_.get(), 4}, *scsi_);
  if (!ring.ok()) return ring.status();
  ring_ = ring.take();
  OBD_RETURN_IF_ERROR(ring_->start());

  auto disk = exportLoopbackLun(opts_.paths, spec, opts_.timeoutMs);
  lunMade_ = true;
  if (!disk.ok()) return disk.status();
  devicePath_ = disk.value();
  return Status::Ok();
}

Status TcmuDevice::close() {
  Status first;
  auto keep = [&first](Status st) {
    if (first.ok() && !st.ok()) first = st;
  };
  // The ring keeps serving while the SCSI disk goes away: sd may still send SYNCHRONIZE CACHE.
  if (lunMade_) {
    keep(removeLoopbackLun(opts_.paths, opts_.backstore));
    lunMade_ = false;
  }
  if (ring_) {
    ring_->stop();
    ring_.reset();
  }
  if (map_) {
    ::munmap(map_, mapSize_);
    map_ = nullptr;
  }
  uio_.reset();
  if (backstoreMade_) {
    keep(removeBackstore(opts_.paths, opts_.backstore));
    backstoreMade_ = false;
  }
  scsi_.reset();
  return first;
}

void TcmuDevice::abandon() {
  lunMade_ = false;
  backstoreMade_ = false;
  close();
}

TcmuDeviceStats TcmuDevice::stats() const {
  TcmuDeviceStats s;
  if (ring_) s.ring = ring_->stats();
  return s;
}

Status TcmuDevice::ringError() const { return ring_ ? ring_->ringError() : Status::Ok(); }

}  // namespace obd::tcmu
