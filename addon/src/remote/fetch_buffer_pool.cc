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

AlignedBytes FetchBufferPool::take(size_t bytes) {
  AlignedBytes out;
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

void FetchBufferPool::give(AlignedBytes buf) {
  if (buf.capacity() < kSmallest || buf.capacity() > keepBytes_) return;
  std::lock_guard<std::mutex> g(mu_);
  // Full: smaller kept buffers make room for a larger one (a window fits where they would not:
  // kept small, a read's ramp-up buffers would leave every full-size window to fresh pages).
  size_t room = keepBytes_ - keptBytes_;
  for (const auto& k : kept_)
    if (k.capacity() < buf.capacity()) room += k.capacity();
  if (room < buf.capacity()) return;
  std::sort(kept_.begin(), kept_.end(), [](const AlignedBytes& a, const AlignedBytes& b) { return a.capacity() < b.capacity(); });
  while (keptBytes_ + buf.capacity() > keepBytes_) {
    keptBytes_ -= kept_.front().capacity();
    kept_.erase(kept_.begin());
  }
  keptBytes_ += buf.capacity();
  kept_.push_back(std::move(buf));
}

std::shared_ptr<const AlignedBytes> FetchBufferPool::share(AlignedBytes buf) {
  return std::shared_ptr<const AlignedBytes>(new AlignedBytes(std::move(buf)), [this](const AlignedBytes* v) {
    give(std::move(*const_cast<AlignedBytes*>(v)));
    delete v;
  });
}

size_t FetchBufferPool::keptBytes() const {
  std::lock_guard<std::mutex> g(mu_);
  return keptBytes_;
}

}  // namespace obd
