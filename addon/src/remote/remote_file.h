// A remote blob as a ReadableFile: reads are served from the block cache; misses are fetched by a
// BlobFetcher (in deviced: JS + undici through a ThreadSafeFunction, see binding.cc) and complete
// asynchronously — no thread waits for the network.
//
// - Misses are fetched per refill unit; contiguous missing units of one read become one fetch
//   (at most maxFetchUnits). A unit already being fetched is never fetched twice: later readers
//   wait on the same fetch, and once its bytes have arrived (before they are durable in the cache)
//   they are copied from memory.
// - Read-ahead is earned per reader (ReadAheadPolicy); its window is bounded by what the link
//   delivers in readAheadSeconds (measured by the FetchScheduler), within [2 units, readAheadUnits].
// - Every fetch goes through the FetchScheduler with its kind: demand misses first; a read-ahead,
//   prefetch or background fetch that a demand read waits on is promoted.
// - A failed fetch (the fetcher's retry budget or deadline ran out) fails every waiting read with
//   EIO and the fetcher's message; nothing waits forever as long as the fetcher answers every call.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "cache/block_cache.h"
#include "io/file.h"
#include "remote/fetch_scheduler.h"
#include "remote/read_ahead.h"

namespace obd {

struct RemoteFileOptions {
  uint32_t readAheadUnits = 64;   // largest read-ahead window (0: no read-ahead)
  uint32_t maxFetchUnits = 16;    // one demand GET ≤ 4 MiB with the default unit
  uint64_t readAheadStartBytes = 1 << 20;  // contiguous bytes a reader reads before any read-ahead
  double readAheadSeconds = 0.25;  // a window holds at most what the link delivers in this time
  std::string cacheScope;          // the block cache scope of this blob's entry (BlockCache::blob)
};

struct RemoteFileStats {
  uint64_t reads = 0;
  uint64_t hits = 0;          // reads served from the cache (or memory) without waiting
  uint64_t fetches = 0;       // fetcher calls
  uint64_t fetchedBytes = 0;
  uint64_t readAheadFetches = 0;
  uint64_t readAheadBytes = 0;
  uint64_t prefetchBytes = 0;    // fetched for trace prefetch
  uint64_t backgroundBytes = 0;  // fetched by the background download
  uint64_t promotedFetches = 0;  // read-ahead/prefetch/background fetches a demand read overtook
  uint64_t failedFetches = 0;
};

class RemoteFile : public ReadableFile, public std::enable_shared_from_this<RemoteFile> {
 public:
  static Result<std::shared_ptr<RemoteFile>> open(std::shared_ptr<BlockCache> cache, std::shared_ptr<FetchScheduler> fetcher,
                                                  const std::string& digest, uint64_t size, RemoteFileOptions opts = {});
  uint64_t size() const override { return blob_->size(); }
  const std::string& name() const override { return blob_->digest(); }
  void readAsync(void* buf, size_t n, uint64_t off, IoCallback cb) override;  // a demand read
  // A read on behalf of trace prefetch or background download: not seen by the read-ahead policy,
  // its misses are fetched with `priority`.
  void readAsync(void* buf, size_t n, uint64_t off, FetchPriority priority, IoCallback cb);
  // Byte offset of the first unit at or after `off` that is neither cached nor being fetched, or
  // size() when there is none.
  uint64_t nextMissing(uint64_t off) const;
  RemoteFileStats stats() const;
  const std::shared_ptr<CachedBlob>& cachedBlob() const { return blob_; }
  const std::shared_ptr<BlockCache>& cache() const { return cache_; }

 private:
  struct ReadOp;
  struct Fetch;
  RemoteFile(std::shared_ptr<BlockCache> cache, std::shared_ptr<FetchScheduler> fetcher, std::shared_ptr<CachedBlob> blob,
             RemoteFileOptions opts)
      : cache_(std::move(cache)), fetcher_(std::move(fetcher)), blob_(std::move(blob)), opts_(opts),
        policy_(blob_->unitSize(), blob_->size(), opts.readAheadStartBytes) {}
  void readOp(void* buf, size_t n, uint64_t off, FetchPriority priority, IoCallback cb);
  void readRange(const std::shared_ptr<ReadOp>& op, uint64_t off, uint64_t n, FetchPriority priority, bool track);
  void startFetch(const std::shared_ptr<Fetch>& f);
  void onFetched(const std::shared_ptr<Fetch>& f, Status st, AlignedBytes data);
  void onArrived(const std::shared_ptr<Fetch>& f, const uint8_t* data, uint64_t arrived);
  void readAhead(const ReadAheadWindow& w, std::vector<std::shared_ptr<Fetch>>* out);  // mu_ held
  std::shared_ptr<Fetch> newFetch(uint64_t first, uint64_t end, FetchPriority priority);  // mu_ held
  uint64_t maxWindowUnits() const;
  bool busy(uint64_t unit) const;                                                // mu_ held

  const std::shared_ptr<BlockCache> cache_;
  const std::shared_ptr<FetchScheduler> fetcher_;
  const std::shared_ptr<CachedBlob> blob_;
  const RemoteFileOptions opts_;
  mutable std::mutex mu_;
  std::map<uint64_t, std::shared_ptr<Fetch>> inflight_;  // unit → the fetch covering it (until durable)
  ReadAheadPolicy policy_;
  RemoteFileStats stats_;
};

}  // namespace obd
