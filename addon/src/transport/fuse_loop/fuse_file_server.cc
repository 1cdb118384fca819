#include "transport/fuse_loop/fuse_file_server.h"

#include <fuse_lowlevel.h>

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "transport/fuse_loop/fuse_connection.h"

#ifndef PR_SET_IO_FLUSHER
#define PR_SET_IO_FLUSHER 57
#endif

namespace obd {

namespace {

constexpr fuse_ino_t kRootIno = FUSE_ROOT_ID;
constexpr fuse_ino_t kDiskIno = 2;
constexpr const char* kDiskName = "disk";
constexpr double kAttrTimeout = 86400;  // the file never changes size or identity while mounted
constexpr uint64_t kSector = 512;
// Bounds the kernel's outstanding async requests (each at most max_write/max_pages = 1 MiB), which
// bounds our read buffers: the server's memory stays small under memory pressure.
constexpr unsigned kMaxBackground = 64;

FuseFileServer* server(fuse_req_t req) { return static_cast<FuseFileServer*>(fuse_req_userdata(req)); }

struct stat attrOf(fuse_ino_t ino, BlockDevice& dev) {
  struct stat st;
  std::memset(&st, 0, sizeof st);
  st.st_ino = ino;
  if (ino == kRootIno) {
    st.st_mode = S_IFDIR | 0700;
    st.st_nlink = 2;
  } else {
    st.st_mode = S_IFREG | (dev.readOnly() ? 0400 : 0600);
    st.st_nlink = 1;
    st.st_size = static_cast<off_t>(dev.size());
    st.st_blocks = static_cast<blkcnt_t>(dev.size() / kSector);
    st.st_blksize = 4096;
  }
  return st;
}

int errOf(const Status& st) { return st.code() > 0 ? st.code() : EIO; }

void opInit(void*, fuse_conn_info* conn) {
  // Splice would move pages through a pipe per thread; our buffers are small and plain reads are simpler.
  conn->want &= ~(FUSE_CAP_SPLICE_READ | FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE);
  // Async direct I/O lets the loop device keep many requests in flight (QD > 1) on one file.
  if (conn->capable & FUSE_CAP_ASYNC_DIO) conn->want |= FUSE_CAP_ASYNC_DIO;
  conn->max_write = 1u << 20;
  conn->max_background = kMaxBackground;
  conn->congestion_threshold = kMaxBackground * 3 / 4;
}

void opLookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  if (parent != kRootIno || std::strcmp(name, kDiskName) != 0) return (void)fuse_reply_err(req, ENOENT);
  fuse_entry_param e;
  std::memset(&e, 0, sizeof e);
  e.ino = kDiskIno;
  e.generation = 1;
  e.attr = attrOf(kDiskIno, server(req)->device());
  e.attr_timeout = kAttrTimeout;
  e.entry_timeout = kAttrTimeout;
  fuse_reply_entry(req, &e);
}

void opGetattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
  if (ino != kRootIno && ino != kDiskIno) return (void)fuse_reply_err(req, ENOENT);
  struct stat st = attrOf(ino, server(req)->device());
  fuse_reply_attr(req, &st, kAttrTimeout);
}

// chmod/utimes are accepted and ignored; the size of a disk is fixed.
void opSetattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int toSet, fuse_file_info*) {
  if (ino != kRootIno && ino != kDiskIno) return (void)fuse_reply_err(req, ENOENT);
  if ((toSet & FUSE_SET_ATTR_SIZE) && static_cast<uint64_t>(attr->st_size) != server(req)->device().size())
    return (void)fuse_reply_err(req, EPERM);
  struct stat st = attrOf(ino, server(req)->device());
  fuse_reply_attr(req, &st, kAttrTimeout);
}

void opOpen(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  if (ino != kDiskIno) return (void)fuse_reply_err(req, EISDIR);
  if ((fi->flags & O_ACCMODE) != O_RDONLY && server(req)->device().readOnly()) return (void)fuse_reply_err(req, EROFS);
  if (fi->flags & O_TRUNC) return (void)fuse_reply_err(req, EPERM);
  // Every request reaches us at the size the loop device issued it; nothing is cached twice.
  fi->direct_io = 1;
  fi->keep_cache = 0;
  fi->noflush = 1;
  fuse_reply_open(req, fi);
}

void opRead(fuse_req_t req, fuse_ino_t, size_t size, off_t off, fuse_file_info*) { server(req)->handleRead(req, size, off); }

void opWrite(fuse_req_t req, fuse_ino_t, const char* buf, size_t size, off_t off, fuse_file_info*) {
  server(req)->handleWrite(req, buf, size, off);
}

void opFallocate(fuse_req_t req, fuse_ino_t, int mode, off_t off, off_t len, fuse_file_info*) {
  server(req)->handleFallocate(req, mode, off, len);
}

void opFsync(fuse_req_t req, fuse_ino_t, int, fuse_file_info*) { server(req)->handleFsync(req); }

void opOk(fuse_req_t req, fuse_ino_t, fuse_file_info*) { fuse_reply_err(req, 0); }

void opOpendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  if (ino != kRootIno) return (void)fuse_reply_err(req, ENOTDIR);
  fuse_reply_open(req, fi);
}

void opReaddir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
  if (ino != kRootIno) return (void)fuse_reply_err(req, ENOTDIR);
  const struct { const char* name; fuse_ino_t ino; mode_t mode; } entries[] = {
      {".", kRootIno, S_IFDIR}, {"..", kRootIno, S_IFDIR}, {kDiskName, kDiskIno, S_IFREG}};
  std::vector<char> buf(size);
  size_t used = 0;
  for (off_t i = off; i < 3; i++) {
    struct stat st;
    std::memset(&st, 0, sizeof st);
    st.st_ino = entries[i].ino;
    st.st_mode = entries[i].mode;
    size_t n = fuse_add_direntry(req, buf.data() + used, size - used, entries[i].name, &st, i + 1);
    if (n > size - used) break;
    used += n;
  }
  fuse_reply_buf(req, buf.data(), used);
}

void opStatfs(fuse_req_t req, fuse_ino_t) {
  struct statvfs st;
  std::memset(&st, 0, sizeof st);
  st.f_bsize = 4096;
  st.f_frsize = 4096;
  st.f_blocks = server(req)->device().size() / 4096;
  st.f_files = 1;
  st.f_namemax = 255;
  fuse_reply_statfs(req, &st);
}

fuse_lowlevel_ops makeOps() {
  fuse_lowlevel_ops ops;
  std::memset(&ops, 0, sizeof ops);
  ops.init = opInit;
  ops.lookup = opLookup;
  ops.getattr = opGetattr;
  ops.setattr = opSetattr;
  ops.open = opOpen;
  ops.read = opRead;
  ops.write = opWrite;
  ops.flush = opOk;
  ops.release = opOk;
  ops.fsync = opFsync;
  ops.opendir = opOpendir;
  ops.readdir = opReaddir;
  ops.releasedir = opOk;
  ops.statfs = opStatfs;
  ops.fallocate = opFallocate;
  return ops;
}

}  // namespace

struct FuseFileServer::PendingRead {
  struct Waiter {
    fuse_req_t req;
    uint64_t off;
    size_t len;
  };
  uint64_t off = 0, len = 0;  // the 512-aligned range read from the device
  ReadBuffer buf;
  bool joinable = true;  // false once a write overlapped it or it completed
  std::vector<Waiter> waiters;
};

// Read buffers come from mmap (page-aligned, and unmapped memory really goes back to the kernel;
// malloc would keep freed 1 MiB blocks in per-thread arenas at their peak) through a small pool,
// so sequential 1 MiB reads do not pay for mmap + page faults + munmap every time.
ReadBuffer FuseFileServer::takeBuffer(size_t len) {
  size_t n = 4096;
  while (n < len) n <<= 1;
  {
    std::lock_guard<std::mutex> lk(poolMu_);
    for (size_t i = 0; i < pool_.size(); i++) {
      if (pool_[i].size != n) continue;
      ReadBuffer b = pool_[i];
      pool_[i] = pool_.back();
      pool_.pop_back();
      pooledBytes_ -= n;
      return b;
    }
  }
  void* p = ::mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  return p == MAP_FAILED ? ReadBuffer{} : ReadBuffer{static_cast<char*>(p), n};
}

void FuseFileServer::giveBuffer(ReadBuffer b) {
  if (!b.data) return;
  {
    std::lock_guard<std::mutex> lk(poolMu_);
    if (pooledBytes_ + b.size <= kPoolBytes) {
      pool_.push_back(b);
      pooledBytes_ += b.size;
      return;
    }
  }
  ::munmap(b.data, b.size);
}

namespace {

// The unique our replayed INIT carries: even (as ordinary requests), bit 63 clear (not a resend), and
// far above any the kernel hands out, so libfuse's reply finds no request and is dropped (ENOENT).
constexpr uint64_t kReplayedInitUnique = 0x7ffffffffffffff0ull;

Result<fuse_session*> newSession(const std::string& mountDir, int fd, const FuseServerOptions& opts, void* userdata) {
  std::string mountOpts = "fsname=" + opts.fsName + ",subtype=obd";
  std::vector<std::string> argvStore = {"obd-deviced", "-o", mountOpts};
  std::vector<char*> argv;
  for (auto& a : argvStore) argv.push_back(a.data());
  fuse_args args = FUSE_ARGS_INIT(static_cast<int>(argv.size()), argv.data());
  fuse_lowlevel_ops ops = makeOps();
  fuse_session* se = fuse_session_new(&args, &ops, sizeof ops, userdata);
  if (!se) return IoError(mountDir + ": fuse_session_new failed");
  // "/dev/fd/N" makes libfuse use an open /dev/fuse descriptor instead of mounting; it closes N on destroy.
  std::string devFd = "/dev/fd/" + std::to_string(fd);
  if (fuse_session_mount(se, devFd.c_str()) != 0) {
    fuse_session_destroy(se);
    return IoError(mountDir + ": libfuse refused the /dev/fuse descriptor");
  }
  return se;
}

}  // namespace

Result<std::shared_ptr<FuseFileServer>> FuseFileServer::start(std::shared_ptr<BlockDevice> dev, const std::string& mountDir,
                                                              const FuseServerOptions& opts,
                                                              std::shared_ptr<DeviceCounters> counters) {
  auto fd = mountFuse(mountDir, opts.fsName, "obd");
  if (!fd.ok()) return fd.status();
  auto s = serve(std::move(dev), mountDir, fd.take(), std::string(), opts, std::move(counters));
  if (!s.ok()) ::umount2(mountDir.c_str(), MNT_DETACH);
  return s;
}

Result<std::shared_ptr<FuseFileServer>> FuseFileServer::adopt(std::shared_ptr<BlockDevice> dev, const std::string& mountDir,
                                                              UniqueFd fuseFd, const std::string& initRequest,
                                                              const FuseServerOptions& opts,
                                                              std::shared_ptr<DeviceCounters> counters) {
  if (initRequest.size() < kFuseInHeaderSize) return InvalidArg(mountDir + ": no recorded FUSE_INIT to take the session over with");
  uint32_t opcode;
  std::memcpy(&opcode, initRequest.data() + 4, sizeof opcode);
  if (opcode != kFuseInitOpcode) return InvalidArg(mountDir + ": the recorded FUSE_INIT is not an INIT request");
  return serve(std::move(dev), mountDir, std::move(fuseFd), initRequest, opts, std::move(counters));
}

Result<std::shared_ptr<FuseFileServer>> FuseFileServer::serve(std::shared_ptr<BlockDevice> dev, const std::string& mountDir,
                                                              UniqueFd fuseFd, const std::string& replayInit,
                                                              const FuseServerOptions& opts,
                                                              std::shared_ptr<DeviceCounters> counters) {
  std::shared_ptr<FuseFileServer> s(new FuseFileServer(std::move(dev), mountDir, std::move(counters)));
  s->fuseFd_ = std::move(fuseFd);
  s->mounted_ = true;
  s->stopFd_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!s->stopFd_.valid()) return SysError("eventfd");
  int sessionFd = ::fcntl(s->fuseFd_.get(), F_DUPFD_CLOEXEC, 3);
  if (sessionFd < 0) return SysError(mountDir + ": dup /dev/fuse");
  auto se = newSession(mountDir, sessionFd, opts, s.get());
  if (!se.ok()) {
    ::close(sessionFd);
    return se.status();
  }
  s->se_ = se.value();
  // Shared by every duplicate: threads poll, EAGAIN just means another thread took the request.
  ::fcntl(sessionFd, F_SETFL, ::fcntl(sessionFd, F_GETFL) | O_NONBLOCK);
  if (!replayInit.empty()) {
    // The kernel sent INIT to our predecessor; libfuse needs it to know the negotiated protocol.
    std::string init = replayInit;
    std::memcpy(init.data() + 8, &kReplayedInitUnique, sizeof kReplayedInitUnique);
    fuse_buf b;
    std::memset(&b, 0, sizeof b);
    b.mem = init.data();
    b.size = init.size();
    fuse_session_process_buf(s->se_, &b);
    s->initRequest_ = replayInit;
    s->haveInit_ = true;
    // Before any thread reads: a request we had already read would otherwise be delivered twice.
    s->resend_ = notifyResend(s->fuseFd_.get());
  }
  int n = std::max(1, opts.threads);
  for (int i = 0; i < n; i++) s->threads_.emplace_back([p = s.get()] { p->sessionThread(); });
  return s;
}

FuseFileServer::~FuseFileServer() {
  stopThreads();
  if (se_) fuse_session_destroy(se_);
  for (const ReadBuffer& b : pool_) ::munmap(b.data, b.size);
}

std::string FuseFileServer::initRequest() const {
  std::lock_guard<std::mutex> lk(initMu_);
  return initRequest_;
}

void FuseFileServer::keepInit(const fuse_buf& buf) {
  if (buf.flags & FUSE_BUF_IS_FD || buf.size < kFuseInHeaderSize) return;
  uint32_t opcode;
  std::memcpy(&opcode, static_cast<const char*>(buf.mem) + 4, sizeof opcode);
  if (opcode != kFuseInitOpcode) return;
  std::lock_guard<std::mutex> lk(initMu_);
  if (initRequest_.empty()) initRequest_.assign(static_cast<const char*>(buf.mem), buf.size);
  haveInit_ = true;
}

void FuseFileServer::sessionThread() {
  // We write to the host filesystem on behalf of kernel writeback: without this the kernel could
  // throttle us on the very dirty pages we are trying to clean (the FUSE+loop pitfall).
  ::prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0);
  fuse_buf buf;
  std::memset(&buf, 0, sizeof buf);
  pollfd fds[2] = {{fuse_session_fd(se_), POLLIN, 0}, {stopFd_.get(), POLLIN, 0}};
  // Read first and poll only when there is nothing to read: under load a request costs one read(2).
  while (!stopping_.load(std::memory_order_relaxed) && !fuse_session_exited(se_)) {
    int n = fuse_session_receive_buf(se_, &buf);
    if (n == -EINTR) continue;
    if (n == -EAGAIN) {
      int r = ::poll(fds, 2, -1);
      if (r < 0 && errno != EINTR) break;
      if (fds[1].revents) break;
      if (fds[0].revents & (POLLERR | POLLHUP | POLLNVAL)) break;  // connection aborted or unmounted
      continue;
    }
    if (n <= 0) break;
    if (!haveInit_.load(std::memory_order_relaxed)) keepInit(buf);
    fuse_session_process_buf(se_, &buf);
  }
  std::free(buf.mem);
}

void FuseFileServer::stopThreads() {
  // A thread stops between requests: one it has read is answered (or its read is in flight) first.
  stopping_ = true;
  uint64_t one = 1;
  if (stopFd_.valid()) (void)!::write(stopFd_.get(), &one, sizeof one);
  for (auto& t : threads_)
    if (t.joinable()) t.join();
  threads_.clear();
}

void FuseFileServer::stop() {
  stopThreads();
  if (!mounted_) return;
  mounted_ = false;
  // Closing the last descriptor aborts the connection: whatever still holds the file (a force-detached
  // loop device under a mounted filesystem) gets errors instead of waiting for a server that is gone.
  // Then a lazy unmount, so a loop device still holding the file cannot block it.
  // libfuse's duplicate becomes /dev/null rather than closed: a read still in flight replies into nothing.
  fuseFd_.reset();
  UniqueFd devNull(::open("/dev/null", O_RDWR | O_CLOEXEC));
  if (se_ && devNull.valid()) ::dup3(devNull.get(), fuse_session_fd(se_), O_CLOEXEC);
  ::umount2(mountDir_.c_str(), MNT_DETACH);
}

void FuseFileServer::release(int drainMs) {
  stopThreads();
  // Remote misses answer from their own callbacks: give them time, so the successor has less to redo.
  for (int waited = 0; waited < drainMs; waited += 10) {
    {
      std::lock_guard<std::mutex> lk(readsMu_);
      if (reads_.empty()) break;
    }
    ::usleep(10000);
  }
  mounted_ = false;  // the mount and the connection now belong to the successor
}

void FuseFileServer::handleRead(fuse_req_t req, size_t size, off_t offArg) {
  uint64_t devSize = dev_->size(), off = static_cast<uint64_t>(offArg);
  if (offArg < 0 || off >= devSize || size == 0) return (void)fuse_reply_buf(req, nullptr, 0);
  uint64_t end = std::min<uint64_t>(off + size, devSize);
  counters_->readOps++;
  counters_->readBytes += end - off;
  counters_->inFlight++;
  {
    std::lock_guard<std::mutex> lk(readsMu_);
    for (auto& pr : reads_) {
      if (pr->joinable && pr->off <= off && pr->off + pr->len >= end) {
        pr->waiters.push_back({req, off, static_cast<size_t>(end - off)});
        counters_->coalescedReads++;
        return;
      }
    }
  }
  auto pr = std::make_shared<PendingRead>();
  pr->off = off & ~(kSector - 1);
  pr->len = std::min<uint64_t>((end + kSector - 1) & ~(kSector - 1), devSize) - pr->off;
  pr->buf = takeBuffer(pr->len);
  if (!pr->buf.data) {
    counters_->inFlight--;
    counters_->errors++;
    return (void)fuse_reply_err(req, ENOMEM);
  }
  pr->waiters.push_back({req, off, static_cast<size_t>(end - off)});
  {
    std::lock_guard<std::mutex> lk(readsMu_);
    reads_.push_back(pr);
  }
  // The callback keeps the server alive: a remote miss may complete after detach began.
  auto self = shared_from_this();
  dev_->readAsync(pr->buf.data, pr->len, pr->off, [self, pr](Status st) { self->finishRead(pr, st); });
}

void FuseFileServer::finishRead(const std::shared_ptr<PendingRead>& pr, const Status& st) {
  std::vector<PendingRead::Waiter> waiters;
  {
    std::lock_guard<std::mutex> lk(readsMu_);
    reads_.remove(pr);
    pr->joinable = false;
    waiters.swap(pr->waiters);
  }
  for (const auto& w : waiters) {
    if (st.ok()) {
      fuse_reply_buf(w.req, pr->buf.data + (w.off - pr->off), w.len);
    } else {
      counters_->errors++;
      fuse_reply_err(w.req, errOf(st));
    }
    counters_->inFlight--;
  }
  giveBuffer(std::exchange(pr->buf, ReadBuffer{}));
}

void FuseFileServer::forgetReadsOverlapping(uint64_t off, uint64_t len) {
  // A read that starts after this write must see it, so it may not join a read that began before.
  std::lock_guard<std::mutex> lk(readsMu_);
  for (auto& pr : reads_)
    if (pr->off < off + len && off < pr->off + pr->len) pr->joinable = false;
}

void FuseFileServer::handleWrite(fuse_req_t req, const char* buf, size_t size, off_t offArg) {
  uint64_t off = static_cast<uint64_t>(offArg);
  if (dev_->readOnly()) return (void)fuse_reply_err(req, EROFS);
  if (offArg < 0 || off % kSector || size % kSector) return (void)fuse_reply_err(req, EINVAL);
  if (off + size > dev_->size()) return (void)fuse_reply_err(req, ENOSPC);
  counters_->writeOps++;
  counters_->inFlight++;
  forgetReadsOverlapping(off, size);
  Status st = dev_->write(buf, size, off);
  counters_->inFlight--;
  if (!st.ok()) {
    counters_->errors++;
    return (void)fuse_reply_err(req, errOf(st));
  }
  counters_->writeBytes += size;
  fuse_reply_write(req, size);
}

void FuseFileServer::handleFallocate(fuse_req_t req, int mode, off_t offArg, off_t lenArg) {
  const int known = FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE;
  if (mode & ~known) return (void)fuse_reply_err(req, EOPNOTSUPP);
  // Plain allocation: a virtual disk is always fully "allocated".
  if (!(mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE))) return (void)fuse_reply_err(req, 0);
  if (dev_->readOnly()) return (void)fuse_reply_err(req, EROFS);
  if (offArg < 0 || lenArg <= 0) return (void)fuse_reply_err(req, EINVAL);
  uint64_t off = static_cast<uint64_t>(offArg);
  uint64_t end = std::min<uint64_t>(off + static_cast<uint64_t>(lenArg), dev_->size());
  if (off % kSector || (end % kSector && end != dev_->size())) return (void)fuse_reply_err(req, EINVAL);
  if (off >= end) return (void)fuse_reply_err(req, 0);
  counters_->discardOps++;
  counters_->inFlight++;
  forgetReadsOverlapping(off, end - off);
  // Punch and zero-range both become LSMT zeroed extents: later reads return zeros either way.
  Status st = dev_->discard(off, end - off);
  counters_->inFlight--;
  if (!st.ok()) {
    counters_->errors++;
    return (void)fuse_reply_err(req, errOf(st));
  }
  counters_->discardBytes += end - off;
  fuse_reply_err(req, 0);
}

void FuseFileServer::handleFsync(fuse_req_t req) {
  counters_->flushOps++;
  Status st = dev_->readOnly() ? Status::Ok() : dev_->flush();
  if (!st.ok()) {
    counters_->errors++;
    return (void)fuse_reply_err(req, errOf(st));
  }
  fuse_reply_err(req, 0);
}

}  // namespace obd
