// Fault-injecting source for exercising the ZFile reader's asynchronous paths from tests: reads of
// the wrapped file can complete later on another thread (as a remote blob's do), and after
// corruptNext(n) the next n reads come back with one byte flipped (as a bad network/cache read
// would). Not used on the data path.
#pragma once

#include <atomic>
#include <memory>

#include "io/file.h"

namespace obd::zfile {

class FaultySource : public ReadableFile {
 public:
  // otherThread: complete every read on a separate thread, after a short random delay.
  FaultySource(std::shared_ptr<ReadableFile> inner, bool otherThread);
  uint64_t size() const override { return state_->inner->size(); }
  const std::string& name() const override { return state_->inner->name(); }
  void readAsync(void* buf, size_t n, uint64_t off, IoCallback cb) override;
  uint64_t readCount() const { return state_->reads.load(); }
  void corruptNext(uint32_t n) { state_->corruptLeft.store(n); }

 private:
  struct State {
    std::shared_ptr<ReadableFile> inner;
    bool otherThread = false;
    std::atomic<uint64_t> reads{0};
    std::atomic<uint32_t> corruptLeft{0};
    bool takeCorruption() {
      uint32_t left = corruptLeft.load();
      while (left > 0 && !corruptLeft.compare_exchange_weak(left, left - 1)) {
      }
      return left > 0;
    }
  };
  std::shared_ptr<State> state_;  // shared with reads still in flight on their threads
};

}  // namespace obd::zfile
