#include "transport/fuse_loop/loop_device.h"

#include <fcntl.h>
#include <linux/loop.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>

namespace obd {

namespace {

constexpr int kLoopMajor = 7;
constexpr int kAttachAttempts = 32;  // LOOP_CTL_GET_FREE races with other users of loop devices

Result<UniqueFd> openLoopNode(const std::string& path, int index) {
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC));
  if (!fd.valid() && errno == ENOENT) {
    // Containers without udev: the kernel made the device, nobody made its node.
    if (::mknod(path.c_str(), S_IFBLK | 0660, makedev(kLoopMajor, index)) != 0 && errno != EEXIST)
      return SysError(path + ": mknod");
    fd.reset(::open(path.c_str(), O_RDWR | O_CLOEXEC));
  }
  if (!fd.valid()) return SysError(path + ": open");
  return Result<UniqueFd>(std::move(fd));
}

// Kernels before 5.8 have no LOOP_CONFIGURE: bind, then set flags. Not atomic (a racing udev may see
// the device half-configured), which is why LOOP_CONFIGURE is tried first.
int configureLegacy(int devFd, const loop_config& cfg) {
  if (::ioctl(devFd, LOOP_SET_FD, cfg.fd) != 0) return -1;
  loop_info64 info = cfg.info;
  if (::ioctl(devFd, LOOP_SET_STATUS64, &info) != 0) {
    int err = errno;
    ::ioctl(devFd, LOOP_CLR_FD, 0);
    errno = err;
    return -1;
  }
  if (cfg.info.lo_flags & LO_FLAGS_DIRECT_IO) ::ioctl(devFd, LOOP_SET_DIRECT_IO, 1UL);  // best effort
  return 0;
}

}  // namespace

Result<LoopDevice> LoopDevice::attach(int backingFd, const std::string& label, const LoopOptions& opts) {
  UniqueFd ctl(::open("/dev/loop-control", O_RDWR | O_CLOEXEC));
  if (!ctl.valid()) return SysError("/dev/loop-control: open (is the loop module loaded?)");
  bool directIo = opts.directIo;
  bool legacy = false;
  for (int attempt = 0; attempt < kAttachAttempts; attempt++) {
    int index = ::ioctl(ctl.get(), LOOP_CTL_GET_FREE);
    if (index < 0) return SysError("LOOP_CTL_GET_FREE");
    std::string path = "/dev/loop" + std::to_string(index);
    auto dev = openLoopNode(path, index);
    if (!dev.ok()) return dev.status();

    loop_config cfg;
    std::memset(&cfg, 0, sizeof cfg);
    cfg.fd = static_cast<uint32_t>(backingFd);
    cfg.block_size = opts.blockSize;
    cfg.info.lo_flags = LO_FLAGS_AUTOCLEAR | (opts.readOnly ? LO_FLAGS_READ_ONLY : 0) |
                        (directIo ? LO_FLAGS_DIRECT_IO : 0);
    std::strncpy(reinterpret_cast<char*>(cfg.info.lo_file_name), label.c_str(), LO_NAME_SIZE - 1);

    int rc = legacy ? configureLegacy(dev.value().get(), cfg) : ::ioctl(dev.value().get(), LOOP_CONFIGURE, &cfg);
    if (rc != 0 && !legacy && errno == ENOTTY) {
      legacy = true;
      rc = configureLegacy(dev.value().get(), cfg);
    }
    if (rc != 0 && errno == EINVAL && directIo) {  // backing file refused O_DIRECT: go buffered
      directIo = false;
      attempt--;
      continue;
    }
    if (rc != 0 && errno == EBUSY) continue;  // someone else took this one first
    if (rc != 0) return SysError(path + ": configure loop device");

    LoopDevice d;
    struct stat st;
    d.rdev_ = ::fstat(dev.value().get(), &st) == 0 ? st.st_rdev : makedev(kLoopMajor, index);
    d.fd_ = dev.take();
    d.path_ = path;
    d.index_ = index;
    return Result<LoopDevice>(std::move(d));
  }
  return Status(EBUSY, "no free loop device after " + std::to_string(kAttachAttempts) + " attempts");
}

Result<LoopDevice> LoopDevice::adopt(UniqueFd devFd) {
  struct stat st;
  if (!devFd.valid() || ::fstat(devFd.get(), &st) != 0 || !S_ISBLK(st.st_mode) || major(st.st_rdev) != kLoopMajor)
    return InvalidArg("handed-over descriptor is not a loop device");
  // The minor is the index only without partitions (max_part=0); sysfs names the device either way.
  char link[256];
  std::string sys = "/sys/dev/block/" + std::to_string(major(st.st_rdev)) + ":" + std::to_string(minor(st.st_rdev));
  ssize_t n = ::readlink(sys.c_str(), link, sizeof link - 1);
  if (n <= 0) return SysError(sys + ": readlink");
  link[n] = '\0';
  const char* name = std::strrchr(link, '/');
  name = name ? name + 1 : link;
  if (std::strncmp(name, "loop", 4) != 0) return InvalidArg(sys + " is not a loop device");
  LoopDevice d;
  d.index_ = std::atoi(name + 4);
  d.path_ = std::string("/dev/") + name;
  d.rdev_ = st.st_rdev;
  d.fd_ = std::move(devFd);
  return Result<LoopDevice>(std::move(d));
}

bool LoopDevice::directIo() const {
  std::ifstream in("/sys/block/loop" + std::to_string(index_) + "/loop/dio");
  int v = 0;
  return (in >> v) && v == 1;
}

Status LoopDevice::setDirectIo(bool on) {
  if (::ioctl(fd_.get(), LOOP_SET_DIRECT_IO, on ? 1UL : 0UL) != 0) return SysError(path_ + ": LOOP_SET_DIRECT_IO " + (on ? "1" : "0"));
  return Status::Ok();
}

Status LoopDevice::detach(bool force) {
  if (!fd_.valid()) return Status::Ok();
  if (!force) {
    // An exclusive open fails with EBUSY exactly when a filesystem is mounted on the device (in any
    // mount namespace) or a tool such as mkfs holds it: the kernel's own notion of "in use".
    UniqueFd probe(::open(path_.c_str(), O_RDONLY | O_EXCL | O_CLOEXEC));
    if (!probe.valid() && errno == EBUSY)
      return Status(EBUSY, path_ + " is in use (a filesystem is mounted on it or a program holds it open)");
  }
  // With AUTOCLEAR set, LOOP_CLR_FD only marks the device; the unbind happens at the last close,
  // which is ours unless a mount still holds it (then it happens at unmount).
  if (::ioctl(fd_.get(), LOOP_CLR_FD, 0) != 0 && errno != ENXIO) {
    Status st = SysError(path_ + ": LOOP_CLR_FD");
    if (!force) return st;
  }
  fd_.reset();
  return Status::Ok();
}

Status clearLoopDevice(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return SysError(path + ": open");
  UniqueFd probe(::open(path.c_str(), O_RDONLY | O_EXCL | O_CLOEXEC));
  if (!probe.valid() && errno == EBUSY) return Status(EBUSY, path + " is still mounted or held open");
  probe.reset();
  if (::ioctl(fd.get(), LOOP_CLR_FD, 0) != 0 && errno != ENXIO) return SysError(path + ": LOOP_CLR_FD");
  return Status::Ok();
}

}  // namespace obd
