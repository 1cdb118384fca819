#include "transport/fuse_loop/fuse_file_server.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "transport/fuse_loop/fuse_connection.h"

namespace obd {

namespace {

constexpr uint64_t kRootIno = FUSE_ROOT_ID;
constexpr uint64_t kDiskIno = 2;
constexpr const char* kDiskName = "disk";
constexpr uint64_t kAttrTimeout = 86400;  // the file never changes size or identity while mounted
constexpr uint64_t kSector = 512;

FuseInitWishes wishesOf(const FuseServerOptions& opts) {
  FuseInitWishes w;
  w.ring = opts.ioUring;
  w.writebackCache = opts.writebackCache;
  return w;
}

int errOf(const Status& st) { return st.code() > 0 ? st.code() : EIO; }

// Reads the fixed-size argument T at the start of `arg`; false if the request is too short for it.
template <typename T>
bool argOf(const char* arg, size_t len, T* out) {
  if (len < sizeof(T)) return false;
  std::memcpy(out, arg, sizeof(T));
  return true;
}

template <typename T>
void replyWith(const FuseReplyTarget& to, const T& v, size_t size = sizeof(T)) {
  iovec iov{const_cast<T*>(&v), size};
  sendFuseReply(to, 0, &iov, 1);
}

fuse_attr attrOf(uint64_t ino, const BlockDevice& dev) {
  fuse_attr a{};
  a.ino = ino;
  a.blksize = 4096;
  if (ino == kRootIno) {
    a.mode = S_IFDIR | 0700;
    a.nlink = 2;
  } else {
    a.mode = S_IFREG | (dev.readOnly() ? 0400 : 0600);
    a.nlink = 1;
    a.size = dev.size();
    a.blocks = dev.size() / kSector;
  }
  return a;
}

}  // namespace

void FuseFileServer::dispatch(int fd, char* msg, size_t len) {
  FuseRequest r;
  if (len < sizeof r.h) return;  // the kernel never sends less; nothing to answer
  std::memcpy(&r.h, msg, sizeof r.h);
  r.to = FuseReplyTarget{fd, r.h.unique, nullptr};
  if (r.h.len != len) return sendFuseReply(r.to, EIO);
  if (r.h.opcode == FUSE_INIT) return handleInit(r.to, msg, len);
  r.arg = msg + sizeof r.h;
  r.argLen = len - sizeof r.h;
  handle(r);
}

void FuseFileServer::handle(const FuseRequest& r) {
  const FuseReplyTarget& to = r.to;
  const uint64_t ino = r.h.nodeid;
  switch (r.h.opcode) {
    case FUSE_LOOKUP: return handleLookup(r);
    case FUSE_GETATTR: return handleAttr(to, ino, r.arg, r.argLen, false);
    case FUSE_SETATTR: return handleAttr(to, ino, r.arg, r.argLen, true);
    case FUSE_OPEN: return handleOpen(to, ino, r.arg, r.argLen, false);
    case FUSE_OPENDIR: return handleOpen(to, ino, r.arg, r.argLen, true);
    case FUSE_READ: return handleRead(to, r.arg, r.argLen);
    case FUSE_WRITE: return handleWrite(r);
    case FUSE_READDIR: return handleReaddir(to, ino, r.arg, r.argLen);
    case FUSE_STATFS: return handleStatfs(to);
    case FUSE_FALLOCATE: return handleFallocate(to, r.arg, r.argLen);
    case FUSE_FSYNC: return handleFsync(to);
    case FUSE_FLUSH:
    case FUSE_RELEASE:
    case FUSE_RELEASEDIR:
    case FUSE_FSYNCDIR:
    case FUSE_DESTROY: return sendFuseReply(to, 0);
    // No reply: lookup counts do not matter for two fixed inodes; a request runs to its end anyway.
    case FUSE_FORGET:
    case FUSE_BATCH_FORGET:
    case FUSE_INTERRUPT: return;
    default: return sendFuseReply(to, ENOSYS);
  }
}

void FuseFileServer::handleInit(const FuseReplyTarget& to, const char* msg, size_t len) {
  auto r = negotiateInit(msg, len, wishes_);
  if (!r.ok()) return sendFuseReply(to, EPROTO);
  if (r.value().error) return sendFuseReply(to, r.value().error);
  {
    std::lock_guard<std::mutex> lk(initMu_);
    if (initRequest_.empty()) initRequest_.assign(msg, len);
  }
  haveInit_ = true;
  // The rings must be ready before a reply that negotiates them (the kernel then waits for them).
  if (r.value().ring && !prepareRing()) {
    FuseInitWishes noRing = wishes_;
    noRing.ring = false;
    r = negotiateInit(msg, len, noRing);
  }
  replyWith(to, r.value().out, r.value().size);
  if (ring_) ring_->registerEntries();
}

bool FuseFileServer::prepareRing() {
  size_t payload = std::max<size_t>({8192, kFuseMaxWrite, size_t{kFuseMaxPages} * 4096});
  auto ch = FuseRingChannel::prepare(fuseFd_.get(), payload, kRingEntriesPerQueue, [this](const FuseRequest& r) { handle(r); });
  if (!ch.ok()) return false;
  ring_ = ch.take();
  bigReads_ = std::make_unique<FuseReadWorkers>(static_cast<int>(std::thread::hardware_concurrency()));
  return true;
}

void FuseFileServer::handleLookup(const FuseRequest& r) {
  const FuseReplyTarget& to = r.to;
  auto [name, len] = r.after(0);
  // The name arrives NUL-terminated; compare within the request's bytes only.
  if (r.h.nodeid != kRootIno || !name || len < 5 || std::memcmp(name, kDiskName, 5) != 0) return sendFuseReply(to, ENOENT);
  fuse_entry_out e{};
  e.nodeid = kDiskIno;
  e.generation = 1;
  e.entry_valid = kAttrTimeout;
  e.attr_valid = kAttrTimeout;
  e.attr = attrOf(kDiskIno, *dev_);
  replyWith(to, e);
}

// chmod/utimes, and the mtime/ctime a writeback cache sends back, are accepted and ignored; the size
// of a disk is fixed.
void FuseFileServer::handleAttr(const FuseReplyTarget& to, uint64_t ino, const char* arg, size_t len, bool set) {
  if (ino != kRootIno && ino != kDiskIno) return sendFuseReply(to, ENOENT);
  if (set) {
    fuse_setattr_in in;
    if (!argOf(arg, len, &in)) return sendFuseReply(to, EINVAL);
    if ((in.valid & FATTR_SIZE) && in.size != dev_->size()) return sendFuseReply(to, EPERM);
  }
  fuse_attr_out out{};
  out.attr_valid = kAttrTimeout;
  out.attr = attrOf(ino, *dev_);
  replyWith(to, out);
}

void FuseFileServer::handleOpen(const FuseReplyTarget& to, uint64_t ino, const char* arg, size_t len, bool dir) {
  fuse_open_in in;
  if (!argOf(arg, len, &in)) return sendFuseReply(to, EINVAL);
  if (dir != (ino == kRootIno)) return sendFuseReply(to, dir ? ENOTDIR : EISDIR);
  if (!dir && (in.flags & O_ACCMODE) != O_RDONLY && dev_->readOnly()) return sendFuseReply(to, EROFS);
  if (in.flags & O_TRUNC) return sendFuseReply(to, EPERM);
  fuse_open_out out{};
  // O_DIRECT (a direct-mode loop device): every request reaches us at the size the loop device issued
  // it. Parallel direct writes: the kernel takes the file's lock shared, not exclusive, to send a
  // write (the device's size never changes, so no write extends the file).
  // Otherwise the page cache: KEEP_CACHE, as the file's bytes change only through this kernel's writes.
  if (!dir) out.open_flags = (in.flags & O_DIRECT) ? FOPEN_DIRECT_IO | FOPEN_PARALLEL_DIRECT_WRITES : FOPEN_KEEP_CACHE;
  replyWith(to, out);
}

void FuseFileServer::handleReaddir(const FuseReplyTarget& to, uint64_t ino, const char* arg, size_t len) {
  fuse_read_in in;
  if (!argOf(arg, len, &in)) return sendFuseReply(to, EINVAL);
  if (ino != kRootIno) return sendFuseReply(to, ENOTDIR);
  const struct { const char* name; uint64_t ino; uint32_t type; } entries[] = {
      {".", kRootIno, DT_DIR}, {"..", kRootIno, DT_DIR}, {kDiskName, kDiskIno, DT_REG}};
  char buf[256];
  size_t used = 0, room = std::min<size_t>(in.size, sizeof buf);
  for (uint64_t i = in.offset; i < 3; i++) {
    size_t nameLen = std::strlen(entries[i].name);
    size_t n = FUSE_DIRENT_ALIGN(FUSE_NAME_OFFSET + nameLen);
    if (used + n > room) break;
    fuse_dirent d{};
    d.ino = entries[i].ino;
    d.off = i + 1;
    d.namelen = static_cast<uint32_t>(nameLen);
    d.type = entries[i].type;
    std::memset(buf + used, 0, n);
    std::memcpy(buf + used, &d, FUSE_NAME_OFFSET);
    std::memcpy(buf + used + FUSE_NAME_OFFSET, entries[i].name, nameLen);
    used += n;
  }
  iovec iov{buf, used};
  sendFuseReply(to, 0, &iov, used ? 1 : 0);
}

void FuseFileServer::handleStatfs(const FuseReplyTarget& to) {
  fuse_statfs_out out{};
  out.st.bsize = 4096;
  out.st.frsize = 4096;
  out.st.blocks = dev_->size() / 4096;
  out.st.files = 1;
  out.st.namelen = 255;
  replyWith(to, out);
}

struct FuseFileServer::PendingRead {
  struct Waiter {
    FuseReplyTarget to;
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
  if (!b.data || b.borrowed) return;
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
  // Our INIT answer is a function of the request alone: checking it parses is all a successor needs.
  auto init = negotiateInit(initRequest.data(), initRequest.size(), wishesOf(opts));
  if (!init.ok()) return init.status().wrap(mountDir + ": the recorded FUSE_INIT");
  return serve(std::move(dev), mountDir, std::move(fuseFd), initRequest, opts, std::move(counters));
}

Result<std::shared_ptr<FuseFileServer>> FuseFileServer::serve(std::shared_ptr<BlockDevice> dev, const std::string& mountDir,
                                                              UniqueFd fuseFd, const std::string& recordedInit,
                                                              const FuseServerOptions& opts,
                                                              std::shared_ptr<DeviceCounters> counters) {
  std::shared_ptr<FuseFileServer> s(new FuseFileServer(std::move(dev), mountDir, std::move(counters)));
  s->fuseFd_ = std::move(fuseFd);
  s->mounted_ = true;
  s->wishes_ = wishesOf(opts);
  if (!recordedInit.empty()) {
    s->initRequest_ = recordedInit;
    s->haveInit_ = true;
    // A connection in io_uring mode stays in it: the new rings replace the dead server's.
    auto init = negotiateInit(recordedInit.data(), recordedInit.size(), s->wishes_);
    if (init.ok() && init.value().ring) {
      if (!s->prepareRing()) return IoError(mountDir + ": the connection uses io_uring and no ring could be set up");
      s->ring_->registerEntries();
    }
    // Before any reader starts: a request we had already read would otherwise be delivered twice.
    s->resend_ = notifyResend(s->fuseFd_.get());
  }
  // Readers hold only a raw pointer: the server outlives them (stop() joins them first).
  FuseFileServer* self = s.get();
  auto ch = FuseDevChannel::start(s->fuseFd_.get(), opts.threads, opts.cloneFds,
                                  [self](int fd, char* msg, size_t len) { self->dispatch(fd, msg, len); });
  if (!ch.ok()) return ch.status().wrap(mountDir);
  s->channel_ = ch.take();
  return s;
}

FuseFileServer::~FuseFileServer() {
  stopThreads();
  for (const ReadBuffer& b : pool_) ::munmap(b.data, b.size);
}

std::string FuseFileServer::initRequest() const {
  std::lock_guard<std::mutex> lk(initMu_);
  return initRequest_;
}

void FuseFileServer::stopThreads() {
  // A reader stops between requests: one it has read is answered (or its read is in flight) first.
  if (channel_) channel_->stop();
  if (bigReads_) bigReads_->stop();  // their answers go through the rings: those stop last
  if (ring_) ring_->stop();
}

void FuseFileServer::stop() {
  // A page-cached file's pages would keep answering reads after the connection is gone (a force
  // detach under a mount): drop them while our threads can still write back whatever is dirty.
  if (mounted_ && haveInit_) (void)notifyInvalInode(fuseFd_.get(), kDiskIno);
  stopThreads();
  if (!mounted_) return;
  mounted_ = false;
  // Closing the last descriptor aborts the connection: whatever still holds the file (a force-detached
  // loop device under a mounted filesystem) gets errors instead of waiting for a server that is gone.
  // Then a lazy unmount, so a loop device still holding the file cannot block it.
  // The readers' descriptors become /dev/null rather than closed: a read still in flight replies into nothing.
  fuseFd_.reset();
  if (channel_) channel_->discardLateReplies();
  ::umount2(mountDir_.c_str(), MNT_DETACH);
}

void FuseFileServer::release(int drainMs) {
  if (channel_) channel_->stop();
  // Remote misses answer from their own callbacks: give them time, so the successor has less to redo.
  // The rings keep serving meanwhile: a request they hold when they stop is never resent.
  for (int waited = 0; waited < drainMs; waited += 10) {
    {
      std::lock_guard<std::mutex> lk(readsMu_);
      if (reads_.empty()) break;
    }
    ::usleep(10000);
  }
  if (bigReads_) bigReads_->stop();
  if (ring_) ring_->stop();
  mounted_ = false;  // the mount and the connection now belong to the successor
}

void FuseFileServer::handleRead(const FuseReplyTarget& to, const char* arg, size_t len) {
  fuse_read_in in;
  if (!argOf(arg, len, &in)) return sendFuseReply(to, EINVAL);
  uint64_t devSize = dev_->size(), off = in.offset;
  if (off >= devSize || in.size == 0) return sendFuseReply(to, 0);
  uint64_t end = std::min<uint64_t>(off + std::min<uint32_t>(in.size, kFuseMaxWrite), devSize);
  counters_->readOps++;
  counters_->readBytes += end - off;
  counters_->inFlight++;
  {
    std::lock_guard<std::mutex> lk(readsMu_);
    for (auto& pr : reads_) {
      if (pr->joinable && pr->off <= off && pr->off + pr->len >= end) {
        pr->waiters.push_back({to, off, static_cast<size_t>(end - off)});
        counters_->coalescedReads++;
        return;
      }
    }
  }
  auto pr = std::make_shared<PendingRead>();
  pr->off = off & ~(kSector - 1);
  pr->len = std::min<uint64_t>((end + kSector - 1) & ~(kSector - 1), devSize) - pr->off;
  // On io_uring the stack reads straight into the entry's payload buffer, which is the reply.
  if (to.ring && pr->off == off && pr->len <= to.ring->payloadSize)
    pr->buf = ReadBuffer{to.ring->payload, static_cast<size_t>(pr->len), true};
  else
    pr->buf = takeBuffer(pr->len);
  if (!pr->buf.data) {
    counters_->inFlight--;
    counters_->errors++;
    return sendFuseReply(to, ENOMEM);
  }
  pr->waiters.push_back({to, off, static_cast<size_t>(end - off)});
  {
    std::lock_guard<std::mutex> lk(readsMu_);
    reads_.push_back(pr);
  }
  // The callback keeps the server alive: a remote miss may complete after detach began.
  auto self = shared_from_this();
  auto issue = [self, pr] { self->dev_->readAsync(pr->buf.data, pr->len, pr->off, [self, pr](Status st) { self->finishRead(pr, st); }); };
  // A large read off the ring's queue thread: that thread then only moves requests and replies
  // (fuse_read_workers.h). The workers stop before the rings, after the last job they hold.
  if (to.ring && bigReads_ && pr->len >= kBigReadBytes) return bigReads_->post(std::move(issue));
  issue();
}

void FuseFileServer::finishRead(const std::shared_ptr<PendingRead>& pr, const Status& st) {
  std::vector<PendingRead::Waiter> waiters;
  {
    std::lock_guard<std::mutex> lk(readsMu_);
    reads_.remove(pr);
    pr->joinable = false;
    waiters.swap(pr->waiters);
  }
  // The first waiter issued the read; it is answered last, as its io_uring entry's buffer may hold
  // the data the others copy (a committed entry's buffers go back to the kernel).
  for (auto it = waiters.rbegin(); it != waiters.rend(); ++it) {
    const PendingRead::Waiter& w = *it;
    if (st.ok()) {
      iovec iov{pr->buf.data + (w.off - pr->off), w.len};
      sendFuseReply(w.to, 0, &iov, 1);
    } else {
      counters_->errors++;
      sendFuseReply(w.to, errOf(st));
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

void FuseFileServer::handleWrite(const FuseRequest& r) {
  const FuseReplyTarget& to = r.to;
  fuse_write_in in;
  if (!argOf(r.arg, r.argLen, &in)) return sendFuseReply(to, EINVAL);
  auto [buf, dataLen] = r.after(sizeof in);
  if (!buf || dataLen < in.size) return sendFuseReply(to, EINVAL);
  uint64_t off = in.offset, size = in.size;
  if (dev_->readOnly()) return sendFuseReply(to, EROFS);
  if (off % kSector || size % kSector) return sendFuseReply(to, EINVAL);
  if (off > dev_->size() || size > dev_->size() - off) return sendFuseReply(to, ENOSPC);
  counters_->writeOps++;
  counters_->inFlight++;
  forgetReadsOverlapping(off, size);
  Status st = dev_->write(buf, size, off);
  counters_->inFlight--;
  if (!st.ok()) {
    counters_->errors++;
    return sendFuseReply(to, errOf(st));
  }
  counters_->writeBytes += size;
  fuse_write_out out{};
  out.size = in.size;
  replyWith(to, out);
}

void FuseFileServer::handleFallocate(const FuseReplyTarget& to, const char* arg, size_t len) {
  fuse_fallocate_in in;
  if (!argOf(arg, len, &in)) return sendFuseReply(to, EINVAL);
  const uint32_t mode = in.mode;
  const uint32_t known = FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE;
  if (mode & ~known) return sendFuseReply(to, EOPNOTSUPP);
  // Plain allocation: a virtual disk is always fully "allocated".
  if (!(mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE))) return sendFuseReply(to, 0);
  if (dev_->readOnly()) return sendFuseReply(to, EROFS);
  if (in.length == 0 || in.offset > dev_->size()) return sendFuseReply(to, EINVAL);
  uint64_t off = in.offset;
  uint64_t end = off + std::min<uint64_t>(in.length, dev_->size() - off);
  if (off % kSector || (end % kSector && end != dev_->size())) return sendFuseReply(to, EINVAL);
  if (off >= end) return sendFuseReply(to, 0);
  counters_->discardOps++;
  counters_->inFlight++;
  forgetReadsOverlapping(off, end - off);
  // Punch and zero-range both become LSMT zeroed extents: later reads return zeros either way.
  Status st = dev_->discard(off, end - off);
  counters_->inFlight--;
  if (!st.ok()) {
    counters_->errors++;
    return sendFuseReply(to, errOf(st));
  }
  counters_->discardBytes += end - off;
  sendFuseReply(to, 0);
}

void FuseFileServer::handleFsync(const FuseReplyTarget& to) {
  counters_->flushOps++;
  Status st = dev_->readOnly() ? Status::Ok() : dev_->flush();
  if (!st.ok()) {
    counters_->errors++;
    return sendFuseReply(to, errOf(st));
  }
  sendFuseReply(to, 0);
}

}  // namespace obd
