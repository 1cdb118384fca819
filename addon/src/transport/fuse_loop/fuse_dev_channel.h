// The /dev/fuse side of a FUSE connection: reader threads that read(2) requests and hand them to the
// filesystem, and the write(2) that answers one.
//
// Each reader blocks in read(2) (one syscall per request, no poll round trip); stop() wakes them with
// a signal whose handler does nothing, so a reader ends between requests: one it has read is always
// dispatched first.
//
// Readers use duplicates of the connection's descriptor by default, so every request read sits on the
// processing list of the one open file description the fd store holds: if we are killed, the
// successor's FUSE_NOTIFY_RESEND brings those requests back. Clones (FUSE_DEV_IOC_CLONE, `clone`) give
// each reader its own processing list, but a clone only this process holds takes its unanswered
// requests down with it when we die (they fail with ECONNABORTED), so they are opt-in.
#pragma once

#include <sys/uio.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "transport/fuse_loop/fuse_request.h"
#include "util/status.h"
#include "util/unique_fd.h"

namespace obd {

class FuseDevChannel {
 public:
  using Handler = std::function<void(int fd, char* msg, size_t len)>;

  // Starts `readers` threads on duplicates (or clones) of `connFd`; `handler` gets every request.
  static Result<std::unique_ptr<FuseDevChannel>> start(int connFd, int readers, bool clone, Handler handler);
  ~FuseDevChannel();

  // Stops the readers between requests and waits for them. Idempotent.
  void stop();
  // After stop(): late replies (remote reads completing afterwards) go to /dev/null, not the kernel.
  void discardLateReplies();

 private:
  struct Reader {
    UniqueFd fd;
    std::thread thread;
    std::atomic<bool> done{false};
  };
  FuseDevChannel() = default;
  void readLoop(Reader& r);

  Handler handler_;
  std::atomic<bool> stopping_{false};
  std::vector<std::unique_ptr<Reader>> readers_;
};

}  // namespace obd
