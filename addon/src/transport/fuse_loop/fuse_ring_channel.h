// FUSE over io_uring (Linux 6.14+, `enable_uring` on): requests arrive in per-CPU queues of
// registered entries instead of read(2) on /dev/fuse, and one COMMIT_AND_FETCH both answers a
// request and waits for the next one on the same buffers, which halves the syscalls per request.
// A queue's thread batches further: the answers it makes go out with the wait for the next requests
// in one io_uring_enter (fuse_ring_channel.cc, FuseRingQueue).
//
// The kernel has one queue per possible CPU and waits until each has an entry before it sends any
// request; a request goes to the queue of the CPU its caller runs on. We run one thread and one
// io_uring per queue, pinned to that CPU. FORGET, INTERRUPT and notifications (RESEND) still use
// /dev/fuse, so the /dev/fuse readers keep running next to the rings.
//
// Restarts: requests held in ring entries are not resent after a crash (FUSE_NOTIFY_RESEND walks
// only /dev/fuse processing lists), so a killed server strands them. See docs/architecture.md for
// what deviced does about it.
#pragma once

#include <sys/uio.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "transport/fuse_loop/fuse_request.h"
#include "util/status.h"

namespace obd {

class FuseRingQueue;

// One registered entry: its header buffer (fuse_uring_req_header) and payload buffer, owned by its queue.
struct FuseRingEntry {
  FuseRingQueue* queue = nullptr;
  char* header = nullptr;
  char* payload = nullptr;
  size_t payloadSize = 0;
  uint64_t commitId = 0;  // of the request the entry holds
  iovec iov[2]{};
};

// Answers the request held in `entry` and asks for the next one (COMMIT_AND_FETCH).
void commitFuseRingReply(FuseRingEntry* entry, uint64_t unique, int error, const iovec* iov, int iovcnt);

class FuseRingChannel {
 public:
  using Handler = std::function<void(const FuseRequest&)>;

  // Sets up a ring and `entriesPerQueue` entries of `payloadSize` bytes for every queue of the
  // connection `connFd`. Done before the INIT reply that negotiates io_uring: once the kernel has
  // that reply it holds every request until each queue has an entry, so nothing may fail after it.
  static Result<std::unique_ptr<FuseRingChannel>> prepare(int connFd, size_t payloadSize, int entriesPerQueue, Handler handler);
  // After the INIT reply: registers the entries and starts the queue threads.
  void registerEntries();
  ~FuseRingChannel();

  // Stops the queue threads; entries still holding a request are answered first by their owners.
  void stop();

 private:
  FuseRingChannel() = default;
  Handler handler_;
  std::vector<std::unique_ptr<FuseRingQueue>> queues_;
};

}  // namespace obd
