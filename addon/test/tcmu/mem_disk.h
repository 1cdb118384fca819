// A BlockDevice over an in-memory reference image, with knobs for the ring tests: read-only, failing
// ranges, and asynchronous reads completed later on a worker thread in shuffled order (or held until
// released) so that commands finish out of ring order.
#pragma once

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "io/file.h"

namespace obd::tcmu::sim {

class MemDisk : public BlockDevice {
 public:
  explicit MemDisk(uint64_t size, bool readOnly = false) : data_(size), readOnly_(readOnly) {
    std::mt19937 rng(7);
    for (auto& b : data_) b = uint8_t(rng());
  }
  ~MemDisk() override { setAsync(false); }

  uint64_t size() const override { return data_.size(); }
  bool readOnly() const override { return readOnly_; }

  void readAsync(void* buf, size_t n, uint64_t off, IoCallback cb) override {
    std::unique_lock<std::mutex> lock(mu_);
    if (!async_) {
      lock.unlock();
      cb(doRead(buf, n, off));
      return;
    }
    queue_.push_back({buf, n, off, std::move(cb)});
    cv_.notify_all();
  }
  Status write(const void* buf, size_t n, uint64_t off) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (off % 512 || n % 512) return InvalidArg("unaligned write");
    if (off + n > data_.size()) return IoError("write beyond end");
    if (overlaps(failWrite_, off, n)) return IoError("injected write error");
    std::memcpy(data_.data() + off, buf, n);
    writes_++;
    return Status::Ok();
  }
  Status discard(uint64_t off, uint64_t n) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (off + n > data_.size()) return IoError("discard beyond end");
    std::memset(data_.data() + off, 0, n);
    discards_++;
    return Status::Ok();
  }
  Status flush() override {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return !flushBlocked_; });
    flushes_++;
    return failFlush_ ? IoError("injected flush error") : Status::Ok();
  }

  // Reads are queued; a worker completes them in shuffled batches of `batch` (or after a short idle).
  void setAsync(bool on, size_t batch = 8) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (on == async_) return;
      async_ = on;
      batch_ = batch;
      stopping_ = !on;
      cv_.notify_all();
    }
    if (on) {
      worker_ = std::thread([this] { work(); });
    } else if (worker_.joinable()) {
      worker_.join();
    }
  }
  // While held, queued reads whose offset is `off` are not completed.
  void hold(uint64_t off) { std::lock_guard<std::mutex> l(mu_); held_.push_back(off); }
  void releaseHolds() { std::lock_guard<std::mutex> l(mu_); held_.clear(); cv_.notify_all(); }

  void failReads(uint64_t off, uint64_t n) { std::lock_guard<std::mutex> l(mu_); failRead_ = {off, n}; }
  void failWrites(uint64_t off, uint64_t n) { std::lock_guard<std::mutex> l(mu_); failWrite_ = {off, n}; }
  // While blocked, flush() waits (a slow fdatasync).
  void blockFlushes(bool on) { std::lock_guard<std::mutex> l(mu_); flushBlocked_ = on; cv_.notify_all(); }
  void failFlush(bool on) { std::lock_guard<std::mutex> l(mu_); failFlush_ = on; }

  std::vector<uint8_t> snapshot(uint64_t off, size_t n) {
    std::lock_guard<std::mutex> l(mu_);
    return {data_.begin() + off, data_.begin() + off + n};
  }
  std::vector<uint64_t> completionOrder() { std::lock_guard<std::mutex> l(mu_); return order_; }
  uint64_t flushes() { std::lock_guard<std::mutex> l(mu_); return flushes_; }
  uint64_t discards() { std::lock_guard<std::mutex> l(mu_); return discards_; }

 private:
  struct Req {
    void* buf;
    size_t n;
    uint64_t off;
    IoCallback cb;
  };
  using Range = std::pair<uint64_t, uint64_t>;
  static bool overlaps(Range r, uint64_t off, uint64_t n) { return r.second && off < r.first + r.second && r.first < off + n; }

  Status doRead(void* buf, size_t n, uint64_t off) {
    std::lock_guard<std::mutex> lock(mu_);
    if (off % 512 || n % 512) return InvalidArg("unaligned read");
    if (off + n > data_.size()) return IoError("read beyond end");
    order_.push_back(off);
    if (overlaps(failRead_, off, n)) return IoError("injected read error");
    std::memcpy(buf, data_.data() + off, n);
    return Status::Ok();
  }

  void work() {
    std::mt19937 rng(11);
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      auto ready = [&] {
        std::vector<size_t> idx;
        for (size_t i = 0; i < queue_.size(); i++)
          if (std::find(held_.begin(), held_.end(), queue_[i].off) == held_.end()) idx.push_back(i);
        return idx;
      };
      cv_.wait_for(lock, std::chrono::milliseconds(5), [&] { return stopping_ || ready().size() >= batch_; });
      std::vector<size_t> idx = ready();
      if (idx.empty()) {
        if (stopping_ && queue_.empty()) return;
        if (stopping_) held_.clear();  // never strand a request on shutdown
        continue;
      }
      std::shuffle(idx.begin(), idx.end(), rng);
      std::vector<Req> batch;
      for (size_t i : idx) batch.push_back(std::move(queue_[i]));
      std::sort(idx.begin(), idx.end(), std::greater<size_t>());
      for (size_t i : idx) queue_.erase(queue_.begin() + long(i));
      lock.unlock();
      for (auto& r : batch) r.cb(doRead(r.buf, r.n, r.off));
      lock.lock();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<uint8_t> data_;
  bool readOnly_;
  bool async_ = false, stopping_ = false;
  size_t batch_ = 8;
  std::deque<Req> queue_;
  std::vector<uint64_t> held_;
  std::thread worker_;
  Range failRead_{0, 0}, failWrite_{0, 0};
  bool failFlush_ = false, flushBlocked_ = false;
  std::vector<uint64_t> order_;
  uint64_t flushes_ = 0, discards_ = 0, writes_ = 0;
};

}  // namespace obd::tcmu::sim
