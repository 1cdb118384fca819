// A few threads that serve large reads for the io_uring path. A ring queue gets the requests of the
// CPU their caller runs on, and the loop device submits from one worker at a time, so without help
// one queue thread would copy every byte of a sequential stream alone. Large reads are handed to
// these threads instead (their answers go back through the queue's hand-over), small ones stay
// inline where a hand-over would cost more than the read.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace obd {

class FuseReadWorkers {
 public:
  explicit FuseReadWorkers(int threads);
  ~FuseReadWorkers() { stop(); }

  void post(std::function<void()> job);
  // Runs what was posted, then joins the threads. Idempotent.
  void stop();

 private:
  void run();

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace obd
