// The local block cache of remote blobs (docs/architecture.md, docs/formats.md "Block cache files").
//
// Per blob digest: a sparse data file `sha256_<hex>.data` (bytes at their blob offsets) and a
// bitmap file `sha256_<hex>.bitmap` (64-byte header + one bit per refill unit that is present).
// Refill unit default 256 KiB: overlaybd's own `cacheConfig.refillSize` default, so a migrated
// config behaves the same; small enough that random 4 KiB reads of ext4 metadata do not drag in
// megabytes (read amplification), while sequential reads are coalesced into multi-unit GETs by
// the remote file's read-ahead, so the small unit costs no throughput.
//
// Writes bypass the page cache where the filesystem allows (cache/direct_io.h): filling it through
// the page cache cost more CPU than receiving the bytes, and the container's filesystem caches them
// above the device anyway. Reads of present units go through the page cache.
//
// Crash safety: a unit's bit is set only after its data was written and fdatasync'ed; an evicted
// unit's bit is cleared and the bitmap synced before the hole is punched. So after kill -9 or a
// power cut every bit that says "present" covers durable, correct bytes.
//
// Scopes: a blob's entry may live in a scope, a subdirectory of `dir` (deviced uses one per registry
// location, so ranges served by one registry are never read for an image of another); the size limit
// and the LRU span every scope, and entries found on disk in any scope at open count from the start.
//
// Open files: an entry keeps its two descriptors only while it has users (blob() adds one, release()
// takes it back). An entry without users keeps its bitmap in memory and its units in the LRU; the
// writer thread opens its files just for the time of a write, an eviction or a verification.
//
// Size limit: total present bytes over all blobs ≤ capacity; least recently used units are evicted
// first (punch hole). When every unit of a blob is present its sha256 is checked against the digest;
// on mismatch the blob's cached bytes are dropped and the failure is counted and reported in stats.
//
// Threads: readers call readIfPresent from any thread; writes, syncs, eviction and verification
// run on the cache's own writer thread (persist()), never on the caller's.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "cache/direct_io.h"
#include "util/aligned_bytes.h"
#include "util/status.h"
#include "util/unique_fd.h"

namespace obd {

class BlockCache;

struct BlockCacheOptions {
  std::string dir;
  uint64_t capacityBytes = 8ull << 30;
  uint32_t unitSize = 256 << 10;  // power of two, 4 KiB .. 64 MiB
  bool sync = true;               // fdatasync before marking present (tests of crash safety need it)
  // Disk-free floor: when the filesystem of `dir` has less free space than this, least recently
  // used units are evicted first, and if that is not enough the new bytes are not cached (reads
  // still complete from memory). Default 1 GiB.
  uint64_t minFreeBytes = 1ull << 30;
};

struct BlockCacheStats {
  uint64_t capacityBytes = 0;
  uint64_t usedBytes = 0;
  uint64_t blobs = 0;
  uint64_t openBlobs = 0;  // entries with users: their files are open
  uint64_t writtenUnits = 0;
  uint64_t evictedUnits = 0;
  uint64_t verifiedBlobs = 0;
  uint64_t verifyFailures = 0;
  uint64_t writeErrors = 0;
  uint64_t skippedForSpace = 0;  // units not cached because of the disk-free floor
  std::string lastError;
};

// One blob's cache files. Created and owned by BlockCache; lives as long as the cache.
class CachedBlob {
 public:
  const std::string& digest() const { return digest_; }
  const std::string& scope() const { return scope_; }
  uint64_t size() const { return size_; }
  uint32_t unitSize() const { return unitSize_; }
  uint64_t unitCount() const { return units_; }
  uint64_t unitBytes(uint64_t unit) const;  // the last unit may be short
  bool present(uint64_t unit) const;
  uint64_t presentCount() const;
  // Copies [off, off+n) into buf when every unit it touches is present (and stays present while it
  // is read); false means "miss" — fetch and try again (also once the entry was released). Requires
  // off + n <= size().
  Result<bool> readIfPresent(void* buf, size_t n, uint64_t off);

 private:
  friend class BlockCache;
  CachedBlob(BlockCache* cache, std::string digest, std::string scope, uint64_t size, uint32_t unitSize, std::string stem);
  Status openFiles(bool create);  // create: new empty entry; else reads the bitmap from disk
  Status reopenFiles();           // filesMu_ held exclusively; the in-memory bitmap stays
  void closeFiles();              // filesMu_ held exclusively
  // Runs `op` with the files open: with the entry's descriptors if it has users, else with the files
  // opened for the time of `op` (writer thread: writes, evictions, verification).
  Status withFiles(const std::function<Status()>& op);
  Status setPresent(uint64_t first, uint64_t count);  // data already durable
  Status clearPresent(const std::vector<uint64_t>& units, bool syncBitmap);
  Status writeBitmapBytes(uint64_t firstByte, uint64_t lastByte);  // mu_ held

  BlockCache* cache_;
  const std::string digest_;
  const std::string scope_;
  const std::string stem_;  // <dir>[/<scope>]/sha256_<hex>
  const uint64_t size_;
  const uint32_t unitSize_;
  const uint64_t units_;
  std::shared_mutex filesMu_;  // data_/bitmap_/open_: readers share it, open and close take it alone
  bool open_ = false;
  uint64_t users_ = 0;  // BlockCache::mu_
  UniqueFd data_;
  UniqueFd bitmap_;
  mutable std::mutex mu_;
  std::vector<uint8_t> bits_;
  uint64_t presentCount_ = 0;
  uint64_t epoch_ = 0;     // bumped whenever units are dropped: readers re-check after pread
  bool verified_ = false;  // sha256 checked since it became complete
};

class BlockCache {
 public:
  static Result<std::shared_ptr<BlockCache>> open(const BlockCacheOptions& opts);
  ~BlockCache();
  BlockCache(const BlockCache&) = delete;
  BlockCache& operator=(const BlockCache&) = delete;

  uint32_t unitSize() const { return opts_.unitSize; }
  const std::string& dir() const { return opts_.dir; }
  // The cache entry of a blob in `scope` (created empty on first use), with one more user: its files
  // stay open until as many release() calls. `size` must match an existing entry. A scope is a
  // directory name of letters, digits, '_' and '-' ("" = `dir` itself).
  Result<std::shared_ptr<CachedBlob>> blob(const std::string& digest, uint64_t size, const std::string& scope = "");
  // One user less; the last one closes the entry's files (its cached units stay, and still count).
  void release(const std::string& digest, const std::string& scope = "");
  // Removes an entry without users and its files (its bytes are kept elsewhere now), on the writer thread.
  void drop(const std::string& digest, const std::string& scope = "");
  // A new size limit (the owner gives part of its budget to other files); evicts on the writer thread.
  void setCapacity(uint64_t bytes);
  // Queues units [firstUnit, firstUnit + n) of `blob` whose bytes are `data` (exactly their length)
  // for writing; `done` runs on the writer thread once they are present (or failed to persist).
  void persist(std::shared_ptr<CachedBlob> blob, uint64_t firstUnit, std::shared_ptr<const AlignedBytes> data,
               std::function<void()> done);
  // Marks units as recently used (reads that hit).
  void touch(CachedBlob* blob, uint64_t firstUnit, uint64_t lastUnit);
  // Waits until every queued write/verification is finished (tests, shutdown).
  void drain();
  BlockCacheStats stats() const;

 private:
  explicit BlockCache(BlockCacheOptions opts);
  Status load();
  Status loadScope(const std::string& scope);
  void writerLoop();
  void persistNow(const std::shared_ptr<CachedBlob>& blob, uint64_t firstUnit, const AlignedBytes& data);
  void account(CachedBlob* blob, uint64_t firstUnit, uint64_t count);  // LRU insert + used bytes
  void evictIfNeeded(uint64_t extraBytes = 0);
  bool makeRoomOnDisk(uint64_t bytes);  // the disk-free floor; false → do not write
  void verify(const std::shared_ptr<CachedBlob>& blob);
  void dropBlob(const std::shared_ptr<CachedBlob>& blob, const std::string& why);
  void dropEntryNow(const std::shared_ptr<CachedBlob>& blob);
  std::vector<uint64_t> forgetUnitsLocked(CachedBlob& blob);
  void recordError(const std::string& msg, bool writeError);

  struct Job {
    std::shared_ptr<CachedBlob> blob;
    uint64_t firstUnit = 0;
    std::shared_ptr<const AlignedBytes> data;  // null → verification job
    std::function<void()> done;
    enum class Kind { kPersist, kVerify, kEvict, kDrop } kind = Kind::kPersist;
  };
  void enqueue(Job job);
  struct UnitKey {
    CachedBlob* blob;
    uint64_t unit;
    bool operator==(const UnitKey& o) const { return blob == o.blob && unit == o.unit; }
  };
  struct UnitKeyHash {
    size_t operator()(const UnitKey& k) const { return std::hash<const void*>()(k.blob) ^ (k.unit * 0x9E3779B97F4A7C15ull); }
  };

  const BlockCacheOptions opts_;
  mutable std::mutex mu_;  // blobs_, LRU, stats (never held while taking a blob's mu_)
  std::map<std::string, std::shared_ptr<CachedBlob>> blobs_;  // by entryKey(scope, digest)
  std::list<UnitKey> lru_;  // front = most recently used
  std::unordered_map<UnitKey, std::list<UnitKey>::iterator, UnitKeyHash> lruIndex_;
  BlockCacheStats stats_;

  std::mutex qmu_;
  std::condition_variable qcv_;
  std::condition_variable idle_;
  std::deque<Job> queue_;
  DirectIo directIo_;  // writer thread only
  bool busy_ = false;
  bool stopping_ = false;
  std::thread writer_;
};

// "sha256:<64 hex>" → true; anything else (it becomes a file name) → false.
bool isSha256Digest(const std::string& digest);
// A block cache scope: "" or 1..64 of [A-Za-z0-9_-] (it becomes a directory name).
bool isCacheScope(const std::string& scope);

}  // namespace obd
