#include "remote/remote_file.h"

#include <algorithm>
#include <cstring>

namespace obd {

// One caller's read: completes when every piece (cache hits, fetches it waits on) has arrived.
struct RemoteFile::ReadOp {
  ReadOp(uint8_t* b, uint64_t o, uint64_t len, IoCallback c) : buf(b), off(o), n(len), cb(std::move(c)) {}
  uint8_t* buf;
  uint64_t off;
  uint64_t n;
  std::atomic<int> pending{1};  // the submitter's own reference
  std::mutex mu;
  Status error;
  IoCallback cb;

  void hold() { pending.fetch_add(1, std::memory_order_relaxed); }
  void release(const Status& st) {
    if (!st.ok()) {
      std::lock_guard<std::mutex> g(mu);
      if (error.ok()) error = st;
    }
    if (pending.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
    Status e;
    {
      std::lock_guard<std::mutex> g(mu);
      e = error;
    }
    IoCallback c = std::move(cb);
    c(e);
  }
  // Copies the part of [srcOff, srcOff + len) that this read covers.
  void copyFrom(uint64_t srcOff, const uint8_t* src, uint64_t len) {
    uint64_t a = std::max(off, srcOff), b = std::min(off + n, srcOff + len);
    if (a < b) std::memcpy(buf + (a - off), src + (a - srcOff), b - a);
  }
};

// One range GET of whole units; registered in inflight_ for each unit until the units are durable.
struct RemoteFile::Fetch {
  uint64_t firstUnit = 0;
  uint64_t count = 0;
  uint64_t off = 0;
  uint64_t len = 0;
  bool readAhead = false;
  bool landed = false;
  std::shared_ptr<const std::vector<uint8_t>> data;
  std::vector<std::shared_ptr<ReadOp>> waiters;
};

Result<std::shared_ptr<RemoteFile>> RemoteFile::open(std::shared_ptr<BlockCache> cache, std::shared_ptr<BlobFetcher> fetcher,
                                                     const std::string& digest, uint64_t size, RemoteFileOptions opts) {
  if (!cache || !fetcher) return InvalidArg(digest + ": remote file needs a cache and a fetcher");
  auto blob = cache->blob(digest, size);
  if (!blob.ok()) return blob.status();
  if (opts.maxFetchUnits == 0) opts.maxFetchUnits = 1;
  return std::shared_ptr<RemoteFile>(new RemoteFile(std::move(cache), std::move(fetcher), blob.take(), opts));
}

RemoteFileStats RemoteFile::stats() const {
  std::lock_guard<std::mutex> g(mu_);
  return stats_;
}

void RemoteFile::readAsync(void* buf, size_t n, uint64_t off, IoCallback cb) {
  uint64_t size = blob_->size();
  auto* p = static_cast<uint8_t*>(buf);
  if (off >= size || n == 0) {
    std::memset(p, 0, n);
    cb(Status::Ok());
    return;
  }
  uint64_t m = std::min<uint64_t>(n, size - off);
  if (m < n) std::memset(p + m, 0, n - m);  // past the end reads as zero
  auto op = std::make_shared<ReadOp>(p, off, m, std::move(cb));
  {
    std::lock_guard<std::mutex> g(mu_);
    stats_.reads++;
  }
  readRange(op, off, m, true);
  op->release(Status::Ok());
}

bool RemoteFile::busy(uint64_t unit) const { return inflight_.count(unit) > 0 || blob_->present(unit); }

void RemoteFile::readRange(const std::shared_ptr<ReadOp>& op, uint64_t off, uint64_t n, bool track) {
  const uint64_t unit = blob_->unitSize();
  const uint64_t first = off / unit, last = (off + n - 1) / unit;
  std::vector<std::shared_ptr<Fetch>> toStart;
  std::vector<std::shared_ptr<const std::vector<uint8_t>>> landed;
  std::vector<uint64_t> landedOff;
  std::vector<std::pair<uint64_t, uint64_t>> hitRuns;  // [first, last] units present in the cache

  auto fast = blob_->readIfPresent(op->buf + (off - op->off), n, off);
  if (!fast.ok()) {
    op->hold();
    op->release(fast.status());
    return;
  }
  {
    std::lock_guard<std::mutex> g(mu_);
    bool sequential = track && off <= nextSequential_ && nextSequential_ < off + n + 1 && nextSequential_ != UINT64_MAX;
    if (track) nextSequential_ = off + n;
    bool waited = false;  // a hit is a read that waits for no fetch (cache or landed bytes)
    if (!fast.value()) {
      for (uint64_t u = first; u <= last;) {
        auto it = inflight_.find(u);
        if (it != inflight_.end()) {
          const auto& f = it->second;
          if (f->landed) {
            landed.push_back(f->data);
            landedOff.push_back(f->off);
          } else {
            op->hold();
            f->waiters.push_back(op);
            waited = true;
          }
          u = f->firstUnit + f->count;
          continue;
        }
        uint64_t start = u;
        if (blob_->present(u)) {
          while (u <= last && !inflight_.count(u) && blob_->present(u)) u++;
          hitRuns.emplace_back(start, u - 1);
          continue;
        }
        while (u <= last && u - start < opts_.maxFetchUnits && !inflight_.count(u) && !blob_->present(u)) u++;
        auto f = std::make_shared<Fetch>();
        f->firstUnit = start;
        f->count = u - start;
        f->off = start * unit;
        f->len = std::min<uint64_t>(u * unit, blob_->size()) - f->off;
        for (uint64_t k = start; k < u; k++) inflight_[k] = f;
        op->hold();
        f->waiters.push_back(op);
        toStart.push_back(f);
        waited = true;
      }
    }
    if (!waited && track) stats_.hits++;
    if (sequential) readAhead(last, &toStart);
  }
  if (fast.value()) cache_->touch(blob_.get(), first, last);
  for (size_t i = 0; i < landed.size(); i++) op->copyFrom(landedOff[i], landed[i]->data(), landed[i]->size());
  for (auto [a, b] : hitRuns) {
    uint64_t s = std::max(off, a * unit), e = std::min(off + n, std::min((b + 1) * unit, blob_->size()));
    auto r = blob_->readIfPresent(op->buf + (s - op->off), e - s, s);
    if (r.ok() && r.value()) {
      cache_->touch(blob_.get(), a, b);
      continue;
    }
    op->hold();
    if (!r.ok()) {
      op->release(r.status());
      continue;
    }
    readRange(op, s, e - s, false);  // evicted under us: go again (it will fetch)
    op->release(Status::Ok());
  }
  for (auto& f : toStart) startFetch(f);
}

void RemoteFile::readAhead(uint64_t lastUnit, std::vector<std::shared_ptr<Fetch>>* out) {
  if (opts_.readAheadUnits == 0) return;
  const uint64_t unit = blob_->unitSize();
  const uint64_t end = std::min<uint64_t>(blob_->unitCount(), lastUnit + 1 + opts_.readAheadUnits);
  uint64_t a = lastUnit + 1;
  while (a < end && busy(a)) a++;
  // Enough is ahead already: wait until the reader has used half of the window.
  if (a >= end || a > lastUnit + 1 + opts_.readAheadUnits / 2) return;
  while (a < end) {
    uint64_t start = a;
    while (a < end && a - start < opts_.maxFetchUnits && !busy(a)) a++;
    if (a > start) {
      auto f = std::make_shared<Fetch>();
      f->firstUnit = start;
      f->count = a - start;
      f->off = start * unit;
      f->len = std::min<uint64_t>(a * unit, blob_->size()) - f->off;
      f->readAhead = true;
      for (uint64_t k = start; k < a; k++) inflight_[k] = f;
      out->push_back(f);
      stats_.readAheadFetches++;
    }
    while (a < end && busy(a)) a++;
  }
}

void RemoteFile::startFetch(const std::shared_ptr<Fetch>& f) {
  {
    std::lock_guard<std::mutex> g(mu_);
    stats_.fetches++;
  }
  auto self = shared_from_this();  // alive until the fetcher answers
  fetcher_->fetch(blob_->digest(), f->off, f->len,
                  [self, f](Status st, std::vector<uint8_t> data) { self->onFetched(f, std::move(st), std::move(data)); });
}

void RemoteFile::onFetched(const std::shared_ptr<Fetch>& f, Status st, std::vector<uint8_t> data) {
  if (st.ok() && data.size() != f->len)
    st = IoError("fetcher returned " + std::to_string(data.size()) + " bytes, expected " + std::to_string(f->len));
  std::vector<std::shared_ptr<ReadOp>> waiters;
  if (!st.ok()) {
    {
      std::lock_guard<std::mutex> g(mu_);
      for (uint64_t u = f->firstUnit; u < f->firstUnit + f->count; u++) {
        auto it = inflight_.find(u);
        if (it != inflight_.end() && it->second == f) inflight_.erase(it);
      }
      waiters.swap(f->waiters);
      stats_.failedFetches++;
    }
    Status err(EIO, blob_->digest() + ": fetch of bytes " + std::to_string(f->off) + "-" +
                        std::to_string(f->off + f->len - 1) + " failed: " + st.message());
    for (auto& w : waiters) w->release(err);
    return;
  }
  auto d = std::make_shared<const std::vector<uint8_t>>(std::move(data));
  {
    std::lock_guard<std::mutex> g(mu_);
    f->data = d;
    f->landed = true;
    waiters.swap(f->waiters);
    stats_.fetchedBytes += f->len;
  }
  for (auto& w : waiters) {
    w->copyFrom(f->off, d->data(), d->size());
    w->release(Status::Ok());
  }
  // The writer thread must never hold the last reference to this file (it owns the cache).
  std::weak_ptr<RemoteFile> weak = weak_from_this();
  cache_->persist(blob_, f->firstUnit, d, [weak, f] {
    auto self = weak.lock();
    if (!self) return;
    std::lock_guard<std::mutex> g(self->mu_);
    for (uint64_t u = f->firstUnit; u < f->firstUnit + f->count; u++) {
      auto it = self->inflight_.find(u);
      if (it != self->inflight_.end() && it->second == f) self->inflight_.erase(it);
    }
  });
}

}  // namespace obd
