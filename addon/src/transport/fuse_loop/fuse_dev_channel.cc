#include "transport/fuse_loop/fuse_dev_channel.h"

#include <fcntl.h>
#include <linux/fuse.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cerrno>
#include <mutex>

#include "transport/fuse_loop/fuse_protocol.h"

#ifndef PR_SET_IO_FLUSHER
#define PR_SET_IO_FLUSHER 57
#endif

namespace obd {

namespace {

// A real-time signal nothing else in a node process uses; installed without SA_RESTART so that it
// ends a blocked read(2) with EINTR.
int wakeSignal() {
  static const int sig = [] {
    int s = SIGRTMIN + 5;
    struct sigaction sa {};
    sa.sa_handler = [](int) {};
    sigemptyset(&sa.sa_mask);
    ::sigaction(s, &sa, nullptr);
    return s;
  }();
  return sig;
}

Result<UniqueFd> readerFd(int connFd, bool clone) {
  if (!clone) {
    UniqueFd fd(::fcntl(connFd, F_DUPFD_CLOEXEC, 3));
    if (!fd.valid()) return SysError("dup /dev/fuse");
    return Result<UniqueFd>(std::move(fd));
  }
  UniqueFd fd(::open("/dev/fuse", O_RDWR | O_CLOEXEC));
  if (!fd.valid()) return SysError("/dev/fuse: open for a clone");
  uint32_t src = static_cast<uint32_t>(connFd);
  if (::ioctl(fd.get(), FUSE_DEV_IOC_CLONE, &src) != 0) return SysError("FUSE_DEV_IOC_CLONE");
  return Result<UniqueFd>(std::move(fd));
}

}  // namespace

Result<std::unique_ptr<FuseDevChannel>> FuseDevChannel::start(int connFd, int readers, bool clone, Handler handler) {
  std::unique_ptr<FuseDevChannel> c(new FuseDevChannel());
  c->handler_ = std::move(handler);
  wakeSignal();
  // Blocking reads: the flag lives on the shared description, and a predecessor may have set it.
  ::fcntl(connFd, F_SETFL, ::fcntl(connFd, F_GETFL) & ~O_NONBLOCK);
  for (int i = 0; i < std::max(1, readers); i++) {
    auto fd = readerFd(connFd, clone);
    if (!fd.ok()) {
      c->stop();
      return fd.status();
    }
    auto r = std::make_unique<Reader>();
    r->fd = fd.take();
    c->readers_.push_back(std::move(r));
  }
  for (auto& r : c->readers_) r->thread = std::thread([p = c.get(), rp = r.get()] { p->readLoop(*rp); });
  return c;
}

FuseDevChannel::~FuseDevChannel() { stop(); }

void FuseDevChannel::readLoop(Reader& r) {
  // We write to the host filesystem on behalf of kernel writeback: without this the kernel could
  // throttle us on the very dirty pages we are trying to clean (the FUSE+loop pitfall).
  ::prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0);
  void* mem = ::mmap(nullptr, kFuseRequestBufferSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  char* buf = mem == MAP_FAILED ? nullptr : static_cast<char*>(mem);
  while (buf && !stopping_.load(std::memory_order_relaxed)) {
    ssize_t n = ::read(r.fd.get(), buf, kFuseRequestBufferSize);
    if (n > 0) {
      handler_(r.fd.get(), buf, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && (errno == EINTR || errno == ENOENT)) continue;  // woken to stop; a request interrupted meanwhile
    if (n < 0 && errno == EAGAIN) {  // someone set O_NONBLOCK on the shared description again
      pollfd p{r.fd.get(), POLLIN, 0};
      ::poll(&p, 1, 100);
      continue;
    }
    break;  // ENODEV: unmounted or aborted
  }
  if (buf) ::munmap(buf, kFuseRequestBufferSize);
  r.done = true;
}

void FuseDevChannel::stop() {
  stopping_ = true;
  for (auto& r : readers_) {
    if (!r->thread.joinable()) continue;
    // Re-sent until the reader is out: a signal landing just before it enters read(2) is lost.
    while (!r->done.load()) {
      ::pthread_kill(r->thread.native_handle(), wakeSignal());
      ::usleep(1000);
    }
    r->thread.join();
  }
}

void FuseDevChannel::discardLateReplies() {
  UniqueFd devNull(::open("/dev/null", O_RDWR | O_CLOEXEC));
  if (!devNull.valid()) return;
  for (auto& r : readers_)
    if (r->fd.valid()) ::dup3(devNull.get(), r->fd.get(), O_CLOEXEC);
}

}  // namespace obd
