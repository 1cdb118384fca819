#include "transport/fuse_loop/fuse_read_workers.h"

#include <sys/prctl.h>

#include <algorithm>

#ifndef PR_SET_IO_FLUSHER
#define PR_SET_IO_FLUSHER 57
#endif

namespace obd {

FuseReadWorkers::FuseReadWorkers(int threads) {
  for (int i = 0; i < std::max(1, threads); i++) threads_.emplace_back([this] { run(); });
}

void FuseReadWorkers::post(std::function<void()> job) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    jobs_.push_back(std::move(job));
  }
  cv_.notify_one();
}

void FuseReadWorkers::stop() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_)
    if (t.joinable()) t.join();
}

void FuseReadWorkers::run() {
  // Same as the /dev/fuse readers: we serve the loop device's I/O, never throttle us on its dirty pages.
  ::prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0);
  for (;;) {
    std::function<void()> job;
    {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [this] { return stopping_ || !jobs_.empty(); });
      if (jobs_.empty()) return;  // stopping, and everything posted has run
      job = std::move(jobs_.front());
      jobs_.pop_front();
    }
    job();
  }
}

}  // namespace obd
