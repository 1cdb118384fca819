#include "transport/fuse_loop/fuse_loop_device.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>

#include "transport/fuse_loop/fuse_bdi.h"
#include "util/unique_fd.h"

namespace obd {

Result<std::unique_ptr<FuseLoopDevice>> FuseLoopDevice::create(std::shared_ptr<BlockDevice> dev,
                                                               const FuseLoopOptions& opts) {
  if (!dev) return InvalidArg("no block device");
  if (dev->size() == 0 || dev->size() % 512) return InvalidArg("device size must be a non-zero multiple of 512");
  if (::mkdir(opts.mountDir.c_str(), 0700) != 0 && errno != EEXIST) return SysError(opts.mountDir + ": mkdir");

  std::unique_ptr<FuseLoopDevice> d(new FuseLoopDevice());
  d->readOnly_ = dev->readOnly();
  d->size_ = dev->size();
  d->mountDir_ = opts.mountDir;
  d->releaseDrainMs_ = opts.releaseDrainMs;
  FuseServerOptions so;
  so.fsName = "obd:" + opts.id;
  so.threads = opts.threads;
  so.ioUring = opts.fuseIoUring;
  // A device that may become page-cached later needs the writeback cache now: INIT is negotiated once.
  so.writebackCache = (opts.pageCache || opts.cacheableFile) && !d->readOnly_;
  if (opts.takeover) return takeOver(std::move(d), std::move(dev), opts, so);
  auto server = FuseFileServer::start(std::move(dev), opts.mountDir, so, d->counters_);
  if (!server.ok()) return server.status().wrap("device " + opts.id);
  d->server_ = server.take();
  d->backingFile_ = d->server_->filePath();

  // This open (LOOKUP + OPEN) is answered by our session threads, which never need the JS thread.
  // Its O_DIRECT flag is what makes the server answer FOPEN_DIRECT_IO rather than KEEP_CACHE.
  d->cacheableFile_ = opts.pageCache || opts.cacheableFile;
  const int mode = (d->readOnly_ ? O_RDONLY : O_RDWR) | O_CLOEXEC | (d->cacheableFile_ ? 0 : O_DIRECT);
  UniqueFd file(::open(d->backingFile_.c_str(), mode));
  if (!file.valid()) return SysError("device " + opts.id + ": open " + d->backingFile_);
  if (opts.pageCache) d->raiseBdiLimits(file.get());
  LoopOptions lo;
  lo.readOnly = d->readOnly_;
  lo.directIo = !opts.pageCache;
  auto loop = LoopDevice::attach(file.get(), "obd:" + opts.id, lo);
  if (!loop.ok()) return loop.status().wrap("device " + opts.id);
  d->loop_ = loop.take();
  d->setLoopInfo();
  return d;
}

Result<std::unique_ptr<FuseLoopDevice>> FuseLoopDevice::takeOver(std::unique_ptr<FuseLoopDevice> d, std::shared_ptr<BlockDevice> dev,
                                                                 const FuseLoopOptions& opts, const FuseServerOptions& so) {
  const FuseTakeover& t = *opts.takeover;
  UniqueFd fuseFd(::fcntl(t.fuseFd, F_DUPFD_CLOEXEC, 3));
  UniqueFd loopFd(::fcntl(t.loopFd, F_DUPFD_CLOEXEC, 3));
  if (!fuseFd.valid() || !loopFd.valid()) return SysError("device " + opts.id + ": handed-over descriptors");
  auto loop = LoopDevice::adopt(std::move(loopFd));
  if (!loop.ok()) return loop.status().wrap("device " + opts.id);
  d->loop_ = loop.take();
  // The loop device must still be bound to this device's file, or the descriptors are not what we think.
  d->backingFile_ = opts.mountDir + "/disk";
  std::ifstream in("/sys/block/loop" + std::to_string(d->loop_.index()) + "/loop/backing_file");
  std::string bound;
  std::getline(in, bound);
  if (bound != d->backingFile_)
    return InvalidArg("device " + opts.id + ": " + d->loop_.path() + " is bound to \"" + bound + "\", not " + d->backingFile_);
  auto server = FuseFileServer::adopt(std::move(dev), opts.mountDir, std::move(fuseFd), t.initRequest, so, d->counters_);
  if (!server.ok()) return server.status().wrap("device " + opts.id);
  d->server_ = server.take();
  d->tookOver_ = true;
  d->cacheableFile_ = opts.cacheableFile;  // as the predecessor recorded it
  d->setLoopInfo();
  return d;
}

void FuseLoopDevice::raiseBdiLimits(int fileFd) {
  struct stat st;
  Status bdi = ::fstat(fileFd, &st) == 0 ? applyBdiSettings(st.st_dev, FuseBdiSettings{}) : SysError(backingFile_ + ": fstat");
  bdiError_ = bdi.ok() ? std::string() : bdi.message();
}

Status FuseLoopDevice::usePageCache() {
  std::lock_guard<std::mutex> lk(mu_);
  if (!directIo_) return Status::Ok();
  if (!cacheableFile_ || !loop_.attached()) return InvalidArg(path_ + ": its FUSE file was opened for direct I/O only");
  UniqueFd file(::open(backingFile_.c_str(), O_RDONLY | O_CLOEXEC));
  if (!file.valid()) return SysError(path_ + ": open " + backingFile_);
  raiseBdiLimits(file.get());
  OBD_RETURN_IF_ERROR(loop_.setDirectIo(false));
  directIo_ = loop_.directIo();
  return Status::Ok();
}

void FuseLoopDevice::setLoopInfo() {
  path_ = loop_.path();
  loopIndex_ = loop_.index();
  rdev_ = loop_.rdev();
  directIo_ = loop_.directIo();
}

void FuseLoopDevice::release(bool handOver) {
  if (!handOver) return (void)close(true);
  std::lock_guard<std::mutex> lk(mu_);
  if (server_) server_->release(releaseDrainMs_);
  loop_.abandon();
}

FuseLoopDevice::~FuseLoopDevice() { (void)close(true); }

// The loop device's unbind drops the file at its last close, possibly later and from another context,
// and our server stops right after: dirty pages still in the FUSE file's page cache would be lost.
// fsync of the loop device writes its own dirty buffers, then its flush reaches the file's fsync:
// the writeback cache goes out as FUSE_WRITEs and FUSE_FSYNC makes our layer files durable.
Status FuseLoopDevice::flushDirtyPages() {
  if (readOnly_ || directIo_ || !loop_.attached()) return Status::Ok();
  if (::fsync(loop_.fd()) != 0) return SysError(path_ + ": fsync before detach");
  return Status::Ok();
}

Status FuseLoopDevice::close(bool force) {
  std::lock_guard<std::mutex> lk(mu_);
  Status flushed = flushDirtyPages();
  if (!flushed.ok() && !force) return flushed;
  OBD_RETURN_IF_ERROR(loop_.detach(force));
  if (server_) {
    server_->stop();
    server_.reset();
  }
  if (!mountDir_.empty()) ::rmdir(mountDir_.c_str());  // best effort; deviced also sweeps its dirs
  return Status::Ok();
}

}  // namespace obd
