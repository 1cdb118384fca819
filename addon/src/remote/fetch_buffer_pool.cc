#include "remote/fetch_buffer_pool.h"

#include <algorithm>

namespace obd {

namespace {
constexpr size_t kSmallest = 1 << 20;  // below this malloc reuses memory well enough
}  // namespace

FetchBufferPool& FetchBufferPool::shared() {
  // The read-ahead in flight of one fast reader (4 windows of 16 MiB); kept for the process's life.
  static FetchBufferPool* pool = new FetchBufferPool(64u << 20);
  return *pool;
}

std::vector<uint8_t> FetchBufferPool::take(size_t bytes) {
  std::vector<uint8_t> out;
  if (bytes >= kSmallest) {
    std::lock_guard<std::mutex> g(mu_);
    auto best = kept_.end();
    for (auto it = kept_.begin(); it != kept_.end(); ++it)
      if (it->capacity() >= bytes && (best == kept_.end() || it->capacity() < best->capacity())) best = it;
    if (best != kept_.end()) {
      out = std::move(*best);
      keptBytes_ -= out.capacity();
      kept_.erase(best);
    }
  }
  out.clear();
  out.reserve(bytes);
  return out;
}

void FetchBufferPool::give(std::vector<uint8_t> buf) {
  if (buf.capacity() < kSmallest) return;
  std::lock_guard<std::mutex> g(mu_);
  if (keptBytes_ + buf.capacity() > keepBytes_) return;
  keptBytes_ += buf.capacity();
  kept_.push_back(std::move(buf));
}

std::shared_ptr<const std::vector<uint8_t>> FetchBufferPool::share(std::vector<uint8_t> buf) {
  return std::shared_ptr<const std::vector<uint8_t>>(new std::vector<uint8_t>(std::move(buf)), [this](const std::vector<uint8_t>* v) {
    give(std::move(*const_cast<std::vector<uint8_t>*>(v)));
    delete v;
  });
}

size_t FetchBufferPool::keptBytes() const {
  std::lock_guard<std::mutex> g(mu_);
  return keptBytes_;
}

}  // namespace obd
