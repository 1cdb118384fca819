#include "io/file.h"

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>

namespace obd {

namespace {

// Waits for a readAsync callback. Most local reads call back inline, before readAsync returns:
// that case takes no lock and parks nothing. Otherwise the caller waits on a condition variable.
// The callback holds the state by shared_ptr, so it may finish after the caller has returned.
template <typename Source>
Status blockingRead(Source& src, void* buf, size_t n, uint64_t off) {
  enum : int { kRunning, kDone, kWaiting };
  struct Wait {
    std::atomic<int> state{kRunning};
    Status st;
    std::mutex mu;
    std::condition_variable cv;
  };
  auto w = std::make_shared<Wait>();
  src.readAsync(buf, n, off, [w](Status st) {
    w->st = std::move(st);
    if (w->state.exchange(kDone, std::memory_order_acq_rel) == kWaiting) {
      std::lock_guard<std::mutex> lock(w->mu);
      w->cv.notify_one();
    }
  });
  int expected = kRunning;
  if (w->state.compare_exchange_strong(expected, kWaiting, std::memory_order_acq_rel)) {
    std::unique_lock<std::mutex> lock(w->mu);
    w->cv.wait(lock, [&] { return w->state.load(std::memory_order_acquire) == kDone; });
  }
  return std::move(w->st);
}

}  // namespace

Status ReadableFile::read(void* buf, size_t n, uint64_t off) { return blockingRead(*this, buf, n, off); }
Status BlockDevice::read(void* buf, size_t n, uint64_t off) { return blockingRead(*this, buf, n, off); }

}  // namespace obd
