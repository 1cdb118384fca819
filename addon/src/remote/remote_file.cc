#include "remote/remote_file.h"

#include "remote/fetch_buffer_pool.h"

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
  FetchPriority priority = FetchPriority::kDemand;
  uint64_t arrived = 0;  // bytes received so far (a fetcher that streams reports them before the end)
  bool landed = false;
  std::shared_ptr<FetchScheduler::Ticket> ticket;
  std::shared_ptr<const AlignedBytes> data;
  std::vector<std::shared_ptr<ReadOp>> waiters;
};

Result<std::shared_ptr<RemoteFile>> RemoteFile::open(std::shared_ptr<BlockCache> cache, std::shared_ptr<FetchScheduler> fetcher,
                                                     const std::string& digest, uint64_t size, RemoteFileOptions opts) {
  if (!cache || !fetcher) return InvalidArg(digest + ": remote file needs a cache and a fetcher");
  auto blob = cache->blob(digest, size, opts.cacheScope);
  if (!blob.ok()) return blob.status();
  if (opts.maxFetchUnits == 0) opts.maxFetchUnits = 1;
  return std::shared_ptr<RemoteFile>(new RemoteFile(std::move(cache), std::move(fetcher), blob.take(), opts));
}

RemoteFileStats RemoteFile::stats() const {
  std::lock_guard<std::mutex> g(mu_);
  return stats_;
}

void RemoteFile::readAsync(void* buf, size_t n, uint64_t off, IoCallback cb) {
  readOp(buf, n, off, FetchPriority::kDemand, std::move(cb));
}

void RemoteFile::readAsync(void* buf, size_t n, uint64_t off, FetchPriority priority, IoCallback cb) {
  readOp(buf, n, off, priority, std::move(cb));
}

void RemoteFile::readOp(void* buf, size_t n, uint64_t off, FetchPriority priority, IoCallback cb) {
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
  const bool demand = priority == FetchPriority::kDemand;
  if (demand) {
    std::lock_guard<std::mutex> g(mu_);
    stats_.reads++;
  }
  readRange(op, off, m, priority, demand);
  op->release(Status::Ok());
}

uint64_t RemoteFile::nextMissing(uint64_t off) const {
  const uint64_t unit = blob_->unitSize();
  std::lock_guard<std::mutex> g(mu_);
  for (uint64_t u = off / unit; u < blob_->unitCount(); u++)
    if (!busy(u)) return std::max(off, u * unit);
  return blob_->size();
}

uint64_t RemoteFile::maxWindowUnits() const {
  if (opts_.readAheadUnits == 0) return 0;
  const double unit = blob_->unitSize();
  double byLink = fetcher_->linkBytesPerSec() * opts_.readAheadSeconds / unit;
  uint64_t floor = std::max<uint64_t>(2, (1 << 20) / blob_->unitSize());  // until the link is measured
  uint64_t w = std::max<uint64_t>(floor, static_cast<uint64_t>(byLink));
  return std::min<uint64_t>(w, opts_.readAheadUnits);
}

bool RemoteFile::busy(uint64_t unit) const { return inflight_.count(unit) > 0 || blob_->present(unit); }

void RemoteFile::readRange(const std::shared_ptr<ReadOp>& op, uint64_t off, uint64_t n, FetchPriority priority, bool track) {
  const uint64_t unit = blob_->unitSize();
  const uint64_t first = off / unit, last = (off + n - 1) / unit;
  std::vector<std::shared_ptr<Fetch>> toStart;
  std::vector<std::shared_ptr<const AlignedBytes>> landed;
  std::vector<uint64_t> landedOff;
  std::vector<std::pair<uint64_t, uint64_t>> hitRuns;  // [first, last] units present in the cache
  std::vector<std::shared_ptr<FetchScheduler::Ticket>> toPromote;
  const uint64_t maxWindow = track ? maxWindowUnits() : 0;

  auto fast = blob_->readIfPresent(op->buf + (off - op->off), n, off);
  if (!fast.ok()) {
    op->hold();
    op->release(fast.status());
    return;
  }
  {
    std::lock_guard<std::mutex> g(mu_);
    ReadAheadWindow ahead = track ? policy_.onRead(off, n, maxWindow) : ReadAheadWindow{};
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
            if (priority == FetchPriority::kDemand && f->priority != FetchPriority::kDemand) {
              f->priority = FetchPriority::kDemand;  // a fetch not yet submitted starts as demand
              if (f->ticket) toPromote.push_back(f->ticket);
              stats_.promotedFetches++;
            }
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
        auto f = newFetch(start, u, priority);
        op->hold();
        f->waiters.push_back(op);
        toStart.push_back(f);
        waited = true;
      }
    }
    if (!waited && track) stats_.hits++;
    if (ahead.count > 0) readAhead(ahead, &toStart);
  }
  for (auto& t : toPromote) fetcher_->promote(t);
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
    readRange(op, s, e - s, priority, false);  // evicted under us: go again (it will fetch)
    op->release(Status::Ok());
  }
  for (auto& f : toStart) startFetch(f);
}

std::shared_ptr<RemoteFile::Fetch> RemoteFile::newFetch(uint64_t first, uint64_t end, FetchPriority priority) {
  auto f = std::make_shared<Fetch>();
  f->firstUnit = first;
  f->count = end - first;
  f->off = first * blob_->unitSize();
  f->len = std::min<uint64_t>(end * blob_->unitSize(), blob_->size()) - f->off;
  f->priority = priority;
  for (uint64_t k = first; k < end; k++) inflight_[k] = f;
  return f;
}

// The window as few GETs as possible: one per run of units not cached and not being fetched.
void RemoteFile::readAhead(const ReadAheadWindow& w, std::vector<std::shared_ptr<Fetch>>* out) {
  const uint64_t end = std::min<uint64_t>(blob_->unitCount(), w.firstUnit + w.count);
  for (uint64_t a = w.firstUnit; a < end;) {
    if (busy(a)) {
      a++;
      continue;
    }
    uint64_t start = a;
    while (a < end && !busy(a)) a++;
    out->push_back(newFetch(start, a, FetchPriority::kReadAhead));
    stats_.readAheadFetches++;
  }
}

void RemoteFile::startFetch(const std::shared_ptr<Fetch>& f) {
  FetchPriority priority;
  {
    std::lock_guard<std::mutex> g(mu_);
    stats_.fetches++;
    priority = f->priority;
  }
  auto self = shared_from_this();  // alive until the fetcher answers
  auto ticket = fetcher_->submit(
      blob_->digest(), f->off, f->len, priority,
      [self, f](Status st, AlignedBytes data) { self->onFetched(f, std::move(st), std::move(data)); },
      [self, f](const uint8_t* data, uint64_t arrived) { self->onArrived(f, data, arrived); });
  bool promote;
  {
    std::lock_guard<std::mutex> g(mu_);
    f->ticket = ticket;
    promote = f->priority != priority;  // a demand read came to wait on it meanwhile
  }
  if (promote) fetcher_->promote(ticket);
}

// Part of a fetch has arrived: the readers whose part of it is complete need not wait for the rest.
void RemoteFile::onArrived(const std::shared_ptr<Fetch>& f, const uint8_t* data, uint64_t arrived) {
  std::vector<std::shared_ptr<ReadOp>> ready;
  {
    std::lock_guard<std::mutex> g(mu_);
    f->arrived = std::max(f->arrived, arrived);
    auto complete = [&](const std::shared_ptr<ReadOp>& w) { return std::min(w->off + w->n, f->off + f->len) <= f->off + arrived; };
    auto split = std::stable_partition(f->waiters.begin(), f->waiters.end(), [&](const auto& w) { return !complete(w); });
    ready.assign(std::make_move_iterator(split), std::make_move_iterator(f->waiters.end()));
    f->waiters.erase(split, f->waiters.end());
  }
  for (auto& w : ready) {
    w->copyFrom(f->off, data, arrived);
    w->release(Status::Ok());
  }
}

void RemoteFile::onFetched(const std::shared_ptr<Fetch>& f, Status st, AlignedBytes data) {
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
  auto d = FetchBufferPool::shared().share(std::move(data));
  {
    std::lock_guard<std::mutex> g(mu_);
    f->data = d;
    f->landed = true;
    waiters.swap(f->waiters);
    stats_.fetchedBytes += f->len;
    if (f->priority == FetchPriority::kReadAhead) stats_.readAheadBytes += f->len;
    if (f->priority == FetchPriority::kPrefetch) stats_.prefetchBytes += f->len;
    if (f->priority == FetchPriority::kBackground) stats_.backgroundBytes += f->len;
    f->ticket.reset();
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
