#include "transport/serve.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

namespace obd {
namespace {

// Counts what the kernel asks of the device (the ring only knows SCSI commands).
class CountingBlockDevice : public BlockDevice {
 public:
  CountingBlockDevice(std::shared_ptr<BlockDevice> dev, std::shared_ptr<DeviceCounters> c)
      : dev_(std::move(dev)), c_(std::move(c)) {}
  uint64_t size() const override { return dev_->size(); }
  bool readOnly() const override { return dev_->readOnly(); }
  void readAsync(void* buf, size_t n, uint64_t off, IoCallback cb) override {
    c_->readOps++;
    c_->readBytes += n;
    c_->inFlight++;
    auto c = c_;
    dev_->readAsync(buf, n, off, [c, cb = std::move(cb)](Status st) {
      c->inFlight--;
      if (!st.ok()) c->errors++;
      cb(std::move(st));
    });
  }
  Status write(const void* buf, size_t n, uint64_t off) override {
    c_->writeOps++;
    c_->writeBytes += n;
    return count(dev_->write(buf, n, off));
  }
  Status discard(uint64_t off, uint64_t n) override {
    c_->discardOps++;
    c_->discardBytes += n;
    return count(dev_->discard(off, n));
  }
  Status flush() override {
    c_->flushOps++;
    return count(dev_->flush());
  }

 private:
  Status count(Status st) {
    if (!st.ok()) c_->errors++;
    return st;
  }
  std::shared_ptr<BlockDevice> dev_;
  std::shared_ptr<DeviceCounters> c_;
};

class TcmuServedDevice : public ServedDevice {
 public:
  TcmuServedDevice(std::unique_ptr<tcmu::TcmuDevice> dev, std::shared_ptr<DeviceCounters> c, uint64_t size, bool ro)
      : dev_(std::move(dev)), counters_(std::move(c)), size_(size), readOnly_(ro) {
    struct stat st;
    if (::stat(dev_->devicePath().c_str(), &st) == 0) rdev_ = st.st_rdev;
  }
  ~TcmuServedDevice() override { (void)dev_->close(); }

  const std::string& path() const override { return dev_->devicePath(); }
  dev_t rdev() const override { return rdev_; }
  uint64_t size() const override { return size_; }
  bool readOnly() const override { return readOnly_; }
  DeviceStats stats() const override {
    DeviceStats s = snapshotCounters(*counters_);
    tcmu::RingStats r = dev_->stats().ring;
    s.ringCommands = r.commands;
    s.ringPads = r.pads;
    s.ringBadEntries = r.badEntries;
    s.ringNotifications = r.notifications;
    return s;
  }
  Status close(bool force) override {
    if (!force && !dev_->devicePath().empty()) {
      // O_EXCL on a block device fails with EBUSY while it is mounted or otherwise held exclusively.
      int fd = ::open(dev_->devicePath().c_str(), O_RDONLY | O_EXCL | O_CLOEXEC);
      if (fd < 0 && errno == EBUSY) return Status(EBUSY, dev_->devicePath() + " is in use");
      if (fd >= 0) ::close(fd);
    }
    return dev_->close();
  }
  void release(bool) override { dev_->abandon(); }

 private:
  std::unique_ptr<tcmu::TcmuDevice> dev_;
  std::shared_ptr<DeviceCounters> counters_;
  uint64_t size_;
  bool readOnly_;
  dev_t rdev_ = 0;
};

}  // namespace

Result<std::unique_ptr<ServedDevice>> serveBlockDevice(std::shared_ptr<BlockDevice> dev, const ServeOptions& opts) {
  if (!dev) return InvalidArg("serve: no block device");
  if (opts.kind == TransportKind::FuseLoop) {
    auto d = FuseLoopDevice::create(std::move(dev), opts.fuseLoop);
    if (!d.ok()) return d.status();
    return std::unique_ptr<ServedDevice>(d.take());
  }
  auto counters = std::make_shared<DeviceCounters>();
  const uint64_t size = dev->size();
  const bool ro = dev->readOnly();
  auto d = tcmu::TcmuDevice::create(opts.tcmu, std::make_shared<CountingBlockDevice>(std::move(dev), counters));
  if (!d.ok()) return d.status();
  return std::unique_ptr<ServedDevice>(new TcmuServedDevice(d.take(), std::move(counters), size, ro));
}

}  // namespace obd
