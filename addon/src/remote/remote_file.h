// A remote blob as a ReadableFile: reads are served from the block cache; misses are fetched by a
// BlobFetcher (in deviced: JS + undici through a ThreadSafeFunction, see binding.cc) and complete
// asynchronously — no thread waits for the network.
//
// - Misses are fetched per refill unit; contiguous missing units of one read become one fetch
//   (at most maxFetchUnits). A unit already being fetched is never fetched twice: later readers
//   wait on the same fetch, and once its bytes have arrived (before they are durable in the cache)
//   they are copied from memory.
// - Sequential access (a read starting where the previous one ended) triggers read-ahead of the
//   next readAheadUnits units, fetched in the background.
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

namespace obd {

// Gets bytes of remote blobs. `done` runs exactly once, on any thread, with exactly `length` bytes
// or an error.
class BlobFetcher {
 public:
  using Done = std::function<void(Status, std::vector<uint8_t>)>;
  virtual ~BlobFetcher() = default;
  virtual void fetch(const std::string& digest, uint64_t offset, uint64_t length, Done done) = 0;
};

struct RemoteFileOptions {
  uint32_t readAheadUnits = 64;  // 16 MiB ahead with the default 256 KiB unit: ~4 GETs in flight
  uint32_t maxFetchUnits = 16;   // one GET ≤ 4 MiB with the default unit
};

struct RemoteFileStats {
  uint64_t reads = 0;
  uint64_t hits = 0;          // reads served from the cache (or memory) without waiting
  uint64_t fetches = 0;       // fetcher calls
  uint64_t fetchedBytes = 0;
  uint64_t readAheadFetches = 0;
  uint64_t failedFetches = 0;
};

class RemoteFile : public ReadableFile, public std::enable_shared_from_this<RemoteFile> {
 public:
  static Result<std::shared_ptr<RemoteFile>> open(std::shared_ptr<BlockCache> cache, std::shared_ptr<BlobFetcher> fetcher,
                                                  const std::string& digest, uint64_t size, RemoteFileOptions opts = {});
  uint64_t size() const override { return blob_->size(); }
  const std::string& name() const override { return blob_->digest(); }
  void readAsync(void* buf, size_t n, uint64_t off, IoCallback cb) override;
  RemoteFileStats stats() const;
  const std::shared_ptr<CachedBlob>& cachedBlob() const { return blob_; }
  const std::shared_ptr<BlockCache>& cache() const { return cache_; }

 private:
  struct ReadOp;
  struct Fetch;
  RemoteFile(std::shared_ptr<BlockCache> cache, std::shared_ptr<BlobFetcher> fetcher, std::shared_ptr<CachedBlob> blob,
             RemoteFileOptions opts)
      : cache_(std::move(cache)), fetcher_(std::move(fetcher)), blob_(std::move(blob)), opts_(opts) {}
  void readRange(const std::shared_ptr<ReadOp>& op, uint64_t off, uint64_t n, bool track);
  void startFetch(const std::shared_ptr<Fetch>& f);
  void onFetched(const std::shared_ptr<Fetch>& f, Status st, std::vector<uint8_t> data);
  void readAhead(uint64_t lastUnit, std::vector<std::shared_ptr<Fetch>>* out);  // mu_ held
  bool busy(uint64_t unit) const;                                                // mu_ held

  const std::shared_ptr<BlockCache> cache_;
  const std::shared_ptr<BlobFetcher> fetcher_;
  const std::shared_ptr<CachedBlob> blob_;
  const RemoteFileOptions opts_;
  mutable std::mutex mu_;
  std::map<uint64_t, std::shared_ptr<Fetch>> inflight_;  // unit → the fetch covering it (until durable)
  uint64_t nextSequential_ = UINT64_MAX;                 // byte offset where a sequential read would start
  RemoteFileStats stats_;
};

}  // namespace obd
