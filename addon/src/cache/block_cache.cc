#include "cache/block_cache.h"

#include <dirent.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstring>

#include "util/fd_io.h"

namespace obd {

namespace {

constexpr char kMagic[8] = {'O', 'B', 'D', 'C', 'A', 'C', 'H', '1'};
constexpr uint64_t kHeaderSize = 64;

struct BitmapHeader {  // little-endian on disk (x86/arm64 hosts)
  char magic[8];
  uint32_t unitSize;
  uint32_t reserved;
  uint64_t blobSize;
  uint8_t pad[kHeaderSize - 24];
};
static_assert(sizeof(BitmapHeader) == kHeaderSize, "bitmap header is 64 bytes");

std::string fileStem(const std::string& digest) { return "sha256_" + digest.substr(7); }

std::string entryKey(const std::string& scope, const std::string& digest) { return scope.empty() ? digest : scope + "/" + digest; }

std::string scopeDir(const std::string& dir, const std::string& scope) { return scope.empty() ? dir : dir + "/" + scope; }

}  // namespace

bool isSha256Digest(const std::string& d) {
  if (d.size() != 71 || d.compare(0, 7, "sha256:") != 0) return false;
  return std::all_of(d.begin() + 7, d.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

bool isCacheScope(const std::string& s) {
  if (s.size() > 64) return false;
  return std::all_of(s.begin(), s.end(), [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-'; });
}

// ---- CachedBlob ----

CachedBlob::CachedBlob(BlockCache* cache, std::string digest, std::string scope, uint64_t size, uint32_t unitSize, std::string stem)
    : cache_(cache), digest_(std::move(digest)), scope_(std::move(scope)), stem_(std::move(stem)), size_(size), unitSize_(unitSize),
      units_((size + unitSize - 1) / unitSize), bits_((units_ + 7) / 8, 0) {}

uint64_t CachedBlob::unitBytes(uint64_t unit) const {
  uint64_t start = unit * unitSize_;
  return start >= size_ ? 0 : std::min<uint64_t>(unitSize_, size_ - start);
}

bool CachedBlob::present(uint64_t unit) const {
  std::lock_guard<std::mutex> g(mu_);
  return unit < units_ && (bits_[unit / 8] >> (unit % 8)) & 1;
}

uint64_t CachedBlob::presentCount() const {
  std::lock_guard<std::mutex> g(mu_);
  return presentCount_;
}

Result<bool> CachedBlob::readIfPresent(void* buf, size_t n, uint64_t off) {
  if (n == 0) return true;
  if (off + n > size_ || off + n < off) return InvalidArg(digest_ + ": cache read beyond blob end");
  uint64_t first = off / unitSize_, last = (off + n - 1) / unitSize_;
  std::shared_lock<std::shared_mutex> files(filesMu_);
  if (!open_) return false;  // released: no reader is expected, and a miss is always correct
  uint64_t epoch;
  {
    std::lock_guard<std::mutex> g(mu_);
    for (uint64_t u = first; u <= last; u++)
      if (!((bits_[u / 8] >> (u % 8)) & 1)) return false;
    epoch = epoch_;
  }
  OBD_RETURN_IF_ERROR(preadOrZero(data_.get(), buf, n, off, digest_ + " cache"));
  std::lock_guard<std::mutex> g(mu_);
  return epoch == epoch_;  // units dropped meanwhile: the bytes may be a punched hole
}

Status CachedBlob::openFiles(bool create) {
  const std::string dataPath = stem_ + ".data", bitmapPath = stem_ + ".bitmap";
  int flags = O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0);
  data_.reset(::open(dataPath.c_str(), flags, 0600));
  if (!data_.valid()) return SysError(dataPath + ": open");
  bitmap_.reset(::open(bitmapPath.c_str(), flags, 0600));
  if (!bitmap_.valid()) return SysError(bitmapPath + ": open");
  if (create) {
    if (::ftruncate(data_.get(), static_cast<off_t>(size_)) != 0) return SysError(dataPath + ": truncate");
    BitmapHeader h{};
    std::memcpy(h.magic, kMagic, sizeof kMagic);
    h.unitSize = unitSize_;
    h.blobSize = size_;
    if (::ftruncate(bitmap_.get(), 0) != 0) return SysError(bitmapPath + ": truncate");
    OBD_RETURN_IF_ERROR(pwriteAll(bitmap_.get(), &h, sizeof h, 0, bitmapPath));
    OBD_RETURN_IF_ERROR(pwriteAll(bitmap_.get(), bits_.data(), bits_.size(), kHeaderSize, bitmapPath));
    if (::fsync(bitmap_.get()) != 0) return SysError(bitmapPath + ": fsync");
    open_ = true;
    return Status::Ok();
  }
  OBD_RETURN_IF_ERROR(preadOrZero(bitmap_.get(), bits_.data(), bits_.size(), kHeaderSize, bitmapPath));
  // Bits past the last unit are meaningless; clear them so counts stay exact.
  if (units_ % 8) bits_.back() &= static_cast<uint8_t>((1u << (units_ % 8)) - 1);
  presentCount_ = 0;
  for (uint8_t b : bits_) presentCount_ += static_cast<uint64_t>(__builtin_popcount(b));
  open_ = true;
  return Status::Ok();
}

Status CachedBlob::reopenFiles() {
  if (open_) return Status::Ok();
  UniqueFd data(::open((stem_ + ".data").c_str(), O_RDWR | O_CLOEXEC));
  if (!data.valid()) return SysError(stem_ + ".data: open");
  UniqueFd bitmap(::open((stem_ + ".bitmap").c_str(), O_RDWR | O_CLOEXEC));
  if (!bitmap.valid()) return SysError(stem_ + ".bitmap: open");
  data_ = std::move(data);
  bitmap_ = std::move(bitmap);
  open_ = true;
  return Status::Ok();
}

void CachedBlob::closeFiles() {
  data_.reset();
  bitmap_.reset();
  open_ = false;
}

Status CachedBlob::withFiles(const std::function<Status()>& op) {
  {
    std::shared_lock<std::shared_mutex> g(filesMu_);
    if (open_) return op();
  }
  std::unique_lock<std::shared_mutex> g(filesMu_);
  if (open_) return op();  // a user came meanwhile
  OBD_RETURN_IF_ERROR(reopenFiles());
  Status st = op();
  closeFiles();
  return st;
}

Status CachedBlob::writeBitmapBytes(uint64_t firstByte, uint64_t lastByte) {
  return pwriteAll(bitmap_.get(), bits_.data() + firstByte, lastByte - firstByte + 1, kHeaderSize + firstByte,
                   digest_ + " bitmap");
}

Status CachedBlob::setPresent(uint64_t first, uint64_t count) {
  std::lock_guard<std::mutex> g(mu_);
  for (uint64_t u = first; u < first + count; u++) {
    uint8_t& b = bits_[u / 8];
    if (!((b >> (u % 8)) & 1)) presentCount_++;
    b |= static_cast<uint8_t>(1u << (u % 8));
  }
  return writeBitmapBytes(first / 8, (first + count - 1) / 8);
}

Status CachedBlob::clearPresent(const std::vector<uint64_t>& units, bool syncBitmap) {
  std::lock_guard<std::mutex> g(mu_);
  epoch_++;
  verified_ = false;
  for (uint64_t u : units) {
    uint8_t& b = bits_[u / 8];
    if ((b >> (u % 8)) & 1) presentCount_--;
    b &= static_cast<uint8_t>(~(1u << (u % 8)));
    OBD_RETURN_IF_ERROR(writeBitmapBytes(u / 8, u / 8));
  }
  if (syncBitmap && ::fdatasync(bitmap_.get()) != 0) return SysError(digest_ + " bitmap: fdatasync");
  return Status::Ok();
}

// ---- BlockCache ----

BlockCache::BlockCache(BlockCacheOptions opts) : opts_(std::move(opts)) { stats_.capacityBytes = opts_.capacityBytes; }

Result<std::shared_ptr<BlockCache>> BlockCache::open(const BlockCacheOptions& opts) {
  if (opts.dir.empty()) return InvalidArg("block cache: cacheDir is empty");
  if (opts.unitSize < 4096 || opts.unitSize > (64u << 20) || (opts.unitSize & (opts.unitSize - 1)))
    return InvalidArg("block cache: refill unit must be a power of two between 4 KiB and 64 MiB, got " +
                      std::to_string(opts.unitSize));
  if (::mkdir(opts.dir.c_str(), 0700) != 0 && errno != EEXIST) return SysError(opts.dir + ": mkdir");
  std::shared_ptr<BlockCache> c(new BlockCache(opts));
  OBD_RETURN_IF_ERROR(c->load());
  c->writer_ = std::thread([raw = c.get()] { raw->writerLoop(); });
  c->enqueue(Job{nullptr, 0, nullptr, nullptr, Job::Kind::kEvict});  // on the writer, like every file change
  return c;
}

BlockCache::~BlockCache() {
  {
    std::lock_guard<std::mutex> g(qmu_);
    stopping_ = true;
  }
  qcv_.notify_all();
  if (writer_.joinable()) writer_.join();
}

namespace {

Result<std::vector<std::string>> listDir(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (!d) return SysError(dir + ": opendir");
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d)) names.emplace_back(e->d_name);
  ::closedir(d);
  return names;
}

bool isDir(const std::string& p) {
  struct stat st{};
  return ::lstat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

}  // namespace

// Every entry of `dir` and of its scope subdirectories: the size limit covers what earlier runs cached.
Status BlockCache::load() {
  auto names = listDir(opts_.dir);
  if (!names.ok()) return names.status();
  OBD_RETURN_IF_ERROR(loadScope(""));
  for (const std::string& name : names.value())
    if (name != "." && name != ".." && isCacheScope(name) && isDir(opts_.dir + "/" + name)) OBD_RETURN_IF_ERROR(loadScope(name));
  stats_.blobs = blobs_.size();
  return Status::Ok();
}

Status BlockCache::loadScope(const std::string& scope) {
  const std::string dir = scopeDir(opts_.dir, scope);
  auto names = listDir(dir);
  if (!names.ok()) return names.status();
  for (const std::string& name : names.value()) {
    const std::string suffix = ".bitmap";
    if (name.size() != 7 + 64 + suffix.size() || name.compare(0, 7, "sha256_") != 0 ||
        name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0)
      continue;
    std::string digest = "sha256:" + name.substr(7, 64);
    if (!isSha256Digest(digest)) continue;
    std::string stem = dir + "/" + fileStem(digest);
    UniqueFd fd(::open((stem + ".bitmap").c_str(), O_RDONLY | O_CLOEXEC));
    BitmapHeader h{};
    bool ok = fd.valid() && ::pread(fd.get(), &h, sizeof h, 0) == static_cast<ssize_t>(sizeof h) &&
              std::memcmp(h.magic, kMagic, sizeof kMagic) == 0 && h.unitSize == opts_.unitSize;
    struct stat st{};
    ok = ok && ::stat((stem + ".data").c_str(), &st) == 0 && static_cast<uint64_t>(st.st_size) == h.blobSize;
    if (!ok) {  // foreign, torn at creation, or another unit size: start this blob over
      ::unlink((stem + ".bitmap").c_str());
      ::unlink((stem + ".data").c_str());
      continue;
    }
    std::shared_ptr<CachedBlob> b(new CachedBlob(this, digest, scope, h.blobSize, opts_.unitSize, stem));
    Status st2 = b->openFiles(false);
    if (!st2.ok()) return st2;
    b->closeFiles();  // no users yet: the bitmap is in memory
    for (uint64_t u = 0; u < b->units_; u++) {
      if (!((b->bits_[u / 8] >> (u % 8)) & 1)) continue;
      lru_.push_back(UnitKey{b.get(), u});  // older than anything touched in this run
      lruIndex_[lru_.back()] = std::prev(lru_.end());
      stats_.usedBytes += b->unitBytes(u);
    }
    // Complete but maybe never verified (a crash between the last write and the check).
    if (b->presentCount_ == b->units_ && b->units_ > 0) queue_.push_back(Job{b, 0, nullptr, nullptr, Job::Kind::kVerify});
    blobs_[entryKey(scope, digest)] = std::move(b);
  }
  return Status::Ok();
}

Result<std::shared_ptr<CachedBlob>> BlockCache::blob(const std::string& digest, uint64_t size, const std::string& scope) {
  if (!isSha256Digest(digest)) return InvalidArg("block cache: \"" + digest + "\" is not a sha256 digest");
  if (!isCacheScope(scope)) return InvalidArg("block cache: scope \"" + scope + "\" is not a directory name of [A-Za-z0-9_-]");
  std::shared_ptr<CachedBlob> b;
  {
    std::lock_guard<std::mutex> g(mu_);
    auto it = blobs_.find(entryKey(scope, digest));
    if (it != blobs_.end()) {
      if (it->second->size() != size)
        return InvalidArg(digest + ": size " + std::to_string(size) + " does not match the cached size " +
                          std::to_string(it->second->size()));
      b = it->second;
      b->users_++;
    }
  }
  if (b) {  // reopened without mu_ held: the writer thread takes mu_ while it holds an entry's files
    std::unique_lock<std::shared_mutex> files(b->filesMu_);
    Status st = b->reopenFiles();
    if (st.ok()) return b;
    files.unlock();
    release(digest, scope);
    return st;
  }
  const std::string dir = scopeDir(opts_.dir, scope);
  if (!scope.empty() && ::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return SysError(dir + ": mkdir");
  b.reset(new CachedBlob(this, digest, scope, size, opts_.unitSize, dir + "/" + fileStem(digest)));
  OBD_RETURN_IF_ERROR(b->openFiles(true));
  if (size == 0) b->verified_ = true;
  std::lock_guard<std::mutex> g(mu_);
  auto [it, fresh] = blobs_.emplace(entryKey(scope, digest), b);
  if (!fresh) return InvalidArg(digest + ": cache entry created twice at once");  // blob() runs on one thread
  b->users_ = 1;
  stats_.blobs = blobs_.size();
  return b;
}

void BlockCache::release(const std::string& digest, const std::string& scope) {
  std::shared_ptr<CachedBlob> b;
  {
    std::lock_guard<std::mutex> g(mu_);
    auto it = blobs_.find(entryKey(scope, digest));
    if (it == blobs_.end() || it->second->users_ == 0) return;
    if (--it->second->users_ > 0) return;
    b = it->second;
  }
  std::unique_lock<std::shared_mutex> files(b->filesMu_);
  std::lock_guard<std::mutex> g(mu_);
  if (b->users_ == 0) b->closeFiles();  // unless blob() took it again meanwhile
}

void BlockCache::persist(std::shared_ptr<CachedBlob> blob, uint64_t firstUnit, std::shared_ptr<const AlignedBytes> data,
                         std::function<void()> done) {
  enqueue(Job{std::move(blob), firstUnit, std::move(data), std::move(done)});
}

void BlockCache::enqueue(Job job) {
  {
    std::lock_guard<std::mutex> g(qmu_);
    queue_.push_back(std::move(job));
  }
  qcv_.notify_one();
}

void BlockCache::drop(const std::string& digest, const std::string& scope) {
  std::shared_ptr<CachedBlob> b;
  {
    std::lock_guard<std::mutex> g(mu_);
    auto it = blobs_.find(entryKey(scope, digest));
    if (it == blobs_.end() || it->second->users_ > 0) return;
    b = it->second;
  }
  enqueue(Job{std::move(b), 0, nullptr, nullptr, Job::Kind::kDrop});
}

void BlockCache::setCapacity(uint64_t bytes) {
  {
    std::lock_guard<std::mutex> g(mu_);
    stats_.capacityBytes = bytes;
  }
  enqueue(Job{nullptr, 0, nullptr, nullptr, Job::Kind::kEvict});
}

// Takes the blob's cached units out of the LRU and the used bytes (mu_ held); returns which they were.
std::vector<uint64_t> BlockCache::forgetUnitsLocked(CachedBlob& blob) {
  std::vector<uint64_t> units;
  for (uint64_t u = 0; u < blob.units_; u++) {
    auto it = lruIndex_.find(UnitKey{&blob, u});
    if (it == lruIndex_.end()) continue;
    lru_.erase(it->second);
    lruIndex_.erase(it);
    stats_.usedBytes -= blob.unitBytes(u);
    units.push_back(u);
  }
  return units;
}

void BlockCache::dropEntryNow(const std::shared_ptr<CachedBlob>& blob) {
  std::unique_lock<std::shared_mutex> files(blob->filesMu_);
  {
    std::lock_guard<std::mutex> g(mu_);
    auto it = blobs_.find(entryKey(blob->scope_, blob->digest_));
    if (it == blobs_.end() || it->second != blob || blob->users_ > 0) return;  // taken again meanwhile
    forgetUnitsLocked(*blob);
    blobs_.erase(it);
    stats_.blobs = blobs_.size();
  }
  blob->closeFiles();
  ::unlink((blob->stem_ + ".bitmap").c_str());  // the bitmap first: without it the data file is not an entry
  ::unlink((blob->stem_ + ".data").c_str());
}

void BlockCache::touch(CachedBlob* blob, uint64_t firstUnit, uint64_t lastUnit) {
  std::lock_guard<std::mutex> g(mu_);
  for (uint64_t u = firstUnit; u <= lastUnit; u++) {
    auto it = lruIndex_.find(UnitKey{blob, u});
    if (it != lruIndex_.end()) lru_.splice(lru_.begin(), lru_, it->second);
  }
}

void BlockCache::drain() {
  std::unique_lock<std::mutex> g(qmu_);
  idle_.wait(g, [this] { return queue_.empty() && !busy_; });
}

BlockCacheStats BlockCache::stats() const {
  std::lock_guard<std::mutex> g(mu_);
  BlockCacheStats s = stats_;
  for (const auto& [key, b] : blobs_) s.openBlobs += b->users_ > 0;
  return s;
}

void BlockCache::writerLoop() {
  for (;;) {
    Job job;
    {
      std::unique_lock<std::mutex> g(qmu_);
      busy_ = false;
      if (queue_.empty()) idle_.notify_all();
      qcv_.wait(g, [this] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping and nothing left
      job = std::move(queue_.front());
      queue_.pop_front();
      busy_ = true;
    }
    switch (job.kind) {
      case Job::Kind::kPersist: persistNow(job.blob, job.firstUnit, *job.data); break;
      case Job::Kind::kVerify: verify(job.blob); break;
      case Job::Kind::kEvict: evictIfNeeded(); break;
      case Job::Kind::kDrop: dropEntryNow(job.blob); break;
    }
    if (job.done) job.done();
  }
}

void BlockCache::persistNow(const std::shared_ptr<CachedBlob>& blob, uint64_t firstUnit, const AlignedBytes& data) {
  uint64_t off = firstUnit * blob->unitSize_;
  uint64_t count = (data.size() + blob->unitSize_ - 1) / blob->unitSize_;
  if (count == 0 || firstUnit + count > blob->units_ || off + data.size() > blob->size_ ||
      (off + data.size() != blob->size_ && data.size() % blob->unitSize_ != 0)) {
    recordError(blob->digest_ + ": refusing to cache a misaligned piece at " + std::to_string(off), true);
    return;
  }
  if (!makeRoomOnDisk(data.size())) {
    std::lock_guard<std::mutex> g(mu_);
    stats_.skippedForSpace += count;
    return;
  }
  Status st = blob->withFiles([&] {
    // A direct descriptor only for the time of the write: the entry keeps one descriptor per file.
    UniqueFd direct = DirectIo::open(blob->stem_ + ".data", O_WRONLY);
    if (direct.valid())
      OBD_RETURN_IF_ERROR(directIo_.write(direct.get(), blob->data_.get(), data.data(), data.size(), off, blob->digest_ + " cache"));
    else
      OBD_RETURN_IF_ERROR(pwriteAll(blob->data_.get(), data.data(), data.size(), off, blob->digest_ + " cache"));
    if (opts_.sync && ::fdatasync(blob->data_.get()) != 0) return SysError(blob->digest_ + " cache: fdatasync");
    return blob->setPresent(firstUnit, count);
  });
  if (!st.ok()) {
    recordError(st.message(), true);
    return;
  }
  account(blob.get(), firstUnit, count);
  evictIfNeeded();
  bool complete;
  {
    std::lock_guard<std::mutex> g(blob->mu_);
    complete = blob->presentCount_ == blob->units_ && !blob->verified_;
  }
  if (complete) verify(blob);
}

void BlockCache::account(CachedBlob* blob, uint64_t firstUnit, uint64_t count) {
  std::lock_guard<std::mutex> g(mu_);
  for (uint64_t u = firstUnit; u < firstUnit + count; u++) {
    UnitKey k{blob, u};
    auto it = lruIndex_.find(k);
    if (it != lruIndex_.end()) {
      lru_.splice(lru_.begin(), lru_, it->second);
      continue;
    }
    lru_.push_front(k);
    lruIndex_[k] = lru_.begin();
    stats_.usedBytes += blob->unitBytes(u);
    stats_.writtenUnits++;
  }
}

bool BlockCache::makeRoomOnDisk(uint64_t bytes) {
  if (opts_.minFreeBytes == 0) return true;
  for (int round = 0; round < 2; round++) {
    struct statvfs vfs{};
    if (::statvfs(opts_.dir.c_str(), &vfs) != 0) return true;  // cannot tell: rely on the size limit
    uint64_t freeBytes = static_cast<uint64_t>(vfs.f_bavail) * vfs.f_frsize;
    if (freeBytes >= opts_.minFreeBytes + bytes) return true;
    if (round == 1) break;
    evictIfNeeded(opts_.minFreeBytes + bytes - freeBytes);
  }
  recordError(opts_.dir + ": less than " + std::to_string(opts_.minFreeBytes >> 20) + " MiB free; not caching", false);
  return false;
}

// Evicts least recently used units until the cache is within its capacity (down to 95% of it, so a
// full cache does not evict on every write) and, when extraBytes > 0, at least that much more.
void BlockCache::evictIfNeeded(uint64_t extraBytes) {
  for (;;) {
    std::map<CachedBlob*, std::vector<uint64_t>> victims;
    {
      std::lock_guard<std::mutex> g(mu_);
      const uint64_t capacity = stats_.capacityBytes;
      if ((stats_.usedBytes <= capacity && extraBytes == 0) || lru_.empty()) return;
      uint64_t target = capacity - capacity / 20;
      if (stats_.usedBytes <= capacity) target = stats_.usedBytes;
      target = target > extraBytes ? target - extraBytes : 0;
      extraBytes = 0;
      while (stats_.usedBytes > target && !lru_.empty()) {
        UnitKey k = lru_.back();
        lru_.pop_back();
        lruIndex_.erase(k);
        stats_.usedBytes -= k.blob->unitBytes(k.unit);
        stats_.evictedUnits++;
        victims[k.blob].push_back(k.unit);
      }
    }
    for (auto& [blob, units] : victims) {
      Status st = blob->withFiles([&, b = blob, &us = units] {
        OBD_RETURN_IF_ERROR(b->clearPresent(us, opts_.sync));  // bits gone and durable before the data goes
        for (uint64_t u : us)
          if (::fallocate(b->data_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(u * b->unitSize_),
                          static_cast<off_t>(b->unitBytes(u))) != 0)
            return SysError(b->digest_ + " cache: punch hole");
        return Status::Ok();
      });
      if (!st.ok()) recordError(st.message(), true);
    }
  }
}

void BlockCache::verify(const std::shared_ptr<CachedBlob>& blob) {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  bool ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr) == 1;
  std::vector<uint8_t> buf;
  uint64_t epoch;
  {
    std::lock_guard<std::mutex> g(blob->mu_);
    epoch = blob->epoch_;
  }
  Status st = blob->withFiles([&] {
    // Direct reads where the file allows: hashing must not fill the page cache either.
    const uint64_t chunk = DirectIo::kBounce;
    UniqueFd direct = DirectIo::open(blob->stem_ + ".data", O_RDONLY);
    for (uint64_t off = 0; ok && off < blob->size_; off += chunk) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(chunk, blob->size_ - off));
      const uint8_t* bytes = nullptr;
      if (direct.valid()) {
        auto r = directIo_.read(direct.get(), n, off, blob->digest_ + " cache");
        if (r.ok()) bytes = r.value();
        else if (r.status().code() != EINVAL) return r.status();
        else direct.reset();  // opened, yet refused: read through the page cache
      }
      if (!bytes) {
        buf.resize(chunk);
        OBD_RETURN_IF_ERROR(preadOrZero(blob->data_.get(), buf.data(), n, off, blob->digest_ + " cache"));
        bytes = buf.data();
      }
      ok = EVP_DigestUpdate(ctx, bytes, n) == 1;
    }
    return Status::Ok();
  });
  ok = ok && st.ok();
  unsigned char md[32];
  unsigned int mdLen = 0;
  ok = ok && EVP_DigestFinal_ex(ctx, md, &mdLen) == 1 && mdLen == 32;
  EVP_MD_CTX_free(ctx);
  if (!ok) {
    recordError(st.ok() ? blob->digest_ + ": sha256 failed" : st.message(), false);
    return;
  }
  static const char* hex = "0123456789abcdef";
  std::string got = "sha256:";
  for (unsigned char c : md) {
    got += hex[c >> 4];
    got += hex[c & 15];
  }
  {
    std::lock_guard<std::mutex> g(blob->mu_);
    if (blob->epoch_ != epoch) return;  // units were evicted while hashing: check again when complete
    if (got == blob->digest_) {
      blob->verified_ = true;
    }
  }
  if (got == blob->digest_) {
    std::lock_guard<std::mutex> g(mu_);
    stats_.verifiedBlobs++;
    return;
  }
  dropBlob(blob, blob->digest_ + ": cached content has digest " + got + "; dropped from the cache");
}

void BlockCache::dropBlob(const std::shared_ptr<CachedBlob>& blob, const std::string& why) {
  std::vector<uint64_t> units;
  {
    std::lock_guard<std::mutex> g(mu_);
    units = forgetUnitsLocked(*blob);
    stats_.verifyFailures++;
    stats_.lastError = why;
  }
  Status st = blob->withFiles([&] {
    OBD_RETURN_IF_ERROR(blob->clearPresent(units, true));
    if (::fallocate(blob->data_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, static_cast<off_t>(blob->size_)) != 0)
      return SysError(blob->digest_ + " cache: punch hole");
    return Status::Ok();
  });
  if (!st.ok()) recordError(st.message(), true);
}

void BlockCache::recordError(const std::string& msg, bool writeError) {
  std::lock_guard<std::mutex> g(mu_);
  if (writeError) stats_.writeErrors++;
  stats_.lastError = msg;
}

}  // namespace obd
