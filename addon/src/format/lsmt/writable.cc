#include "format/lsmt/writable.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <vector>

#include "util/fd_io.h"

namespace obd::lsmt {

namespace {

constexpr size_t kReplayChunk = 64 * 1024;  // records read per step while replaying the index log

Result<uint64_t> fileSize(int fd, const std::string& name) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return SysError(name + ": stat");
  return static_cast<uint64_t>(st.st_size);
}

Result<HeaderTrailer> readHeader(int fd, const std::string& name) {
  std::vector<uint8_t> block(kHeaderSpace);
  auto size = fileSize(fd, name);
  if (!size.ok()) return size.status();
  if (size.value() < kHeaderSpace)
    return Corrupt(name + ": " + std::to_string(size.value()) + " bytes is too short for an LSMT header");
  OBD_RETURN_IF_ERROR(preadAll(fd, block.data(), block.size(), 0, name));
  auto ht = decodeHeader(block.data(), block.size());
  if (!ht.ok()) return ht.status().wrap(name + ": header");
  if (!ht.value().isHeader()) return Corrupt(name + ": header: HEADER flag is clear");
  return ht;
}

Status writeHeader(int fd, const HeaderTrailer& ht, const std::string& name) {
  std::vector<uint8_t> block(kHeaderSpace);
  encodeHeader(ht, block.data());
  return pwriteAll(fd, block.data(), block.size(), 0, name);
}

}  // namespace

Result<std::unique_ptr<WritableLayer>> WritableLayer::create(const std::string& dataPath, const std::string& indexPath,
                                                             const CreateOptions& opts) {
  if (opts.virtualSize % kSector || opts.virtualSize > kMaxVirtualSize)
    return InvalidArg("virtual size " + std::to_string(opts.virtualSize) + " must be a multiple of 512 and at most " +
                      std::to_string(kMaxVirtualSize));
  HeaderTrailer h;
  h.flags = kFlagHeader | kFlagData;
  h.virtualSize = opts.virtualSize;
  OBD_RETURN_IF_ERROR(setUuidField(h.uuid, opts.uuid.empty() ? randomUuid() : opts.uuid).wrap("--uuid"));
  OBD_RETURN_IF_ERROR(setUuidField(h.parentUuid, opts.parentUuid).wrap("--parent-uuid"));
  HeaderTrailer ih = h;
  ih.flags = kFlagHeader;
  ih.indexOffset = kHeaderSpace;

  UniqueFd data(::open(dataPath.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
  if (!data.valid()) return SysError(dataPath + ": create");
  UniqueFd index(::open(indexPath.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
  if (!index.valid()) {
    Status st = SysError(indexPath + ": create");
    ::unlink(dataPath.c_str());
    return st;
  }
  Status st = writeHeader(data.get(), h, dataPath);
  if (st.ok()) st = writeHeader(index.get(), ih, indexPath);
  if (st.ok() && (::fsync(data.get()) != 0 || ::fsync(index.get()) != 0)) st = SysError(dataPath + ": fsync");
  if (!st.ok()) {
    ::unlink(dataPath.c_str());
    ::unlink(indexPath.c_str());
    return st;
  }
  data.reset();
  index.reset();
  return open(dataPath, indexPath);
}

Result<std::unique_ptr<WritableLayer>> WritableLayer::open(const std::string& dataPath, const std::string& indexPath,
                                                           bool readOnly) {
  int mode = (readOnly ? O_RDONLY : O_RDWR) | O_CLOEXEC;
  std::unique_ptr<WritableLayer> l(new WritableLayer());
  l->dataPath_ = dataPath;
  l->indexPath_ = indexPath;
  l->readOnly_ = readOnly;
  l->data_.reset(::open(dataPath.c_str(), mode));
  if (!l->data_.valid()) return SysError(dataPath + ": open");
  l->index_.reset(::open(indexPath.c_str(), mode));
  if (!l->index_.valid()) return SysError(indexPath + ": open");

  auto h = readHeader(l->data_.get(), dataPath);
  if (!h.ok()) return h.status();
  if (!h.value().isDataFile()) return Corrupt(dataPath + ": header: not a data file (TYPE flag clear)");
  if (h.value().isSparseRw()) return Status(ENOTSUP, dataPath + ": sparse writable layers are not supported");
  if (h.value().isSealed()) return Corrupt(dataPath + ": header: sealed, not a writable data file");
  if (h.value().virtualSize > kMaxVirtualSize || h.value().virtualSize % kSector)
    return Corrupt(dataPath + ": header: invalid virtual_size " + std::to_string(h.value().virtualSize));
  auto ih = readHeader(l->index_.get(), indexPath);
  if (!ih.ok()) return ih.status();
  if (ih.value().isDataFile()) return Corrupt(indexPath + ": header: not an index file (TYPE flag set)");
  if (ih.value().isSealed()) return Corrupt(indexPath + ": header: SEALED flag set on a writable index");
  if (ih.value().indexOffset != kHeaderSpace)
    return Corrupt(indexPath + ": header: index_offset " + std::to_string(ih.value().indexOffset) + ", expected 4096");
  l->header_ = h.value();
  l->vsize_ = h.value().virtualSize;

  auto dsize = fileSize(l->data_.get(), dataPath);
  if (!dsize.ok()) return dsize.status();
  l->dataEnd_ = dsize.value() / kSector * kSector;  // a torn tail (not a whole sector) is overwritten by the next append
  OBD_RETURN_IF_ERROR(l->replayLog());
  return l;
}

// The index file is an append-only log: records are replayed in file order, later ones override
// the overlapped parts of earlier ones (crash recovery needs nothing more).
Status WritableLayer::replayLog() {
  auto isize = fileSize(index_.get(), indexPath_);
  if (!isize.ok()) return isize.status();
  uint64_t records = (isize.value() - kHeaderSpace) / kRecordSize;  // a torn last record is ignored
  indexEnd_ = kHeaderSpace + records * kRecordSize;  // the next append overwrites a torn tail
  if (records > kMaxRwIndexSize)
    return Corrupt(indexPath_ + ": " + std::to_string(records) + " records exceed the limit of " +
                   std::to_string(kMaxRwIndexSize));
  uint64_t dataSectors = dataEnd_ / kSector;
  std::vector<uint8_t> buf(std::min<uint64_t>(records, kReplayChunk) * kRecordSize);
  for (uint64_t done = 0; done < records;) {
    uint64_t n = std::min<uint64_t>(records - done, kReplayChunk);
    OBD_RETURN_IF_ERROR(preadAll(index_.get(), buf.data(), n * kRecordSize, kHeaderSpace + done * kRecordSize, indexPath_));
    for (uint64_t i = 0; i < n; ++i) {
      Segment s = decodeSegment(&buf[i * kRecordSize]);
      if (s.invalid()) continue;
      s.tag = 0;  // upstream writes the stack depth here; it means nothing on disk
      auto bad = [&](const std::string& what) {
        return Corrupt(indexPath_ + ": record " + std::to_string(done + i) + " (sector " + std::to_string(s.offset) +
                       "+" + std::to_string(s.length) + " -> " + std::to_string(s.moffset) + "): " + what);
      };
      if (s.length == 0) return bad("length 0");
      if (s.moffset < kHeaderSpace / kSector) return bad("data offset inside the header");
      if (s.zeroed ? s.moffset > dataSectors : s.moffset + s.length > dataSectors)
        return bad("data beyond the end of " + dataPath_ + " (" + std::to_string(dataSectors) + " sectors)");
      map_.insert(s);
    }
    done += n;
  }
  return Status::Ok();
}

Status WritableLayer::checkRange(uint64_t off, uint64_t n, const char* op) const {
  if (readOnly_ && std::strcmp(op, "read") != 0) return Status(EROFS, dataPath_ + ": opened read-only");
  if (off % kSector || n % kSector)
    return InvalidArg(dataPath_ + ": " + op + " at " + std::to_string(off) + " length " + std::to_string(n) +
                      " is not 512-byte aligned");
  if (off > kMaxVirtualSize || n > kMaxVirtualSize - off)
    return InvalidArg(dataPath_ + ": " + op + " at " + std::to_string(off) + " is beyond what LSMT can address");
  return Status::Ok();
}

// Caller holds mu_ exclusively. The log's end is kept in memory (no fstat per append); a failed,
// possibly torn append leaves it where it was, so the next append overwrites the torn bytes.
Status WritableLayer::appendRecords(const Segment* recs, size_t n) {
  uint8_t one[kRecordSize];
  std::vector<uint8_t> many;
  uint8_t* buf = one;
  if (n > 1) {
    many.resize(n * kRecordSize);
    buf = many.data();
  }
  for (size_t i = 0; i < n; ++i) encodeSegment(recs[i], &buf[i * kRecordSize]);
  OBD_RETURN_IF_ERROR(pwriteAll(index_.get(), buf, n * kRecordSize, indexEnd_, indexPath_));
  indexEnd_ += n * kRecordSize;
  for (size_t i = 0; i < n; ++i) map_.insert(recs[i]);
  return Status::Ok();
}

// The payload goes to space reserved under the lock and is written outside it, so concurrent writers
// copy in parallel; only the 32-byte index record is appended under the lock, after its payload is in
// the file (a record never points at bytes not yet written). A reservation whose payload write fails
// is left as a gap no record points to.
Status WritableLayer::write(const void* buf, size_t n, uint64_t off) {
  OBD_RETURN_IF_ERROR(checkRange(off, n, "write"));
  Status inPlace;
  if (overwriteInPlace(buf, n, off, &inPlace)) return inPlace;
  auto* p = static_cast<const char*>(buf);
  while (n > 0) {
    size_t piece = static_cast<size_t>(std::min<uint64_t>(n, kMaxIoSize));
    uint64_t at;
    {
      std::unique_lock lock(mu_);
      at = dataEnd_;
      dataEnd_ += piece;
    }
    OBD_RETURN_IF_ERROR(pwriteAll(data_.get(), p, piece, at, dataPath_));
    Segment s;
    s.offset = off / kSector;
    s.length = static_cast<uint32_t>(piece / kSector);
    s.moffset = at / kSector;
    {
      std::unique_lock lock(mu_);
      OBD_RETURN_IF_ERROR(appendRecords(&s, 1));
      vsize_ = std::max(vsize_, off + piece);
    }
    p += piece;
    off += piece;
    n -= piece;
  }
  return Status::Ok();
}

// A write over bytes this layer already holds as data goes where those bytes are: one pwrite into
// pages the host already has, and no record (the mapping does not change). That is what a disk does
// with an overwrite; the log only grows for ranges written the first time. Data space is never
// reused, so the extent written into belongs to this range alone until a later record remaps it.
bool WritableLayer::overwriteInPlace(const void* buf, size_t n, uint64_t off, Status* st) {
  constexpr size_t kMaxPieces = 8;  // a write spread over more extents is appended as usual
  Piece pieces[kMaxPieces];
  size_t count = 0;
  bool mapped = true;
  {
    std::shared_lock lock(mu_);
    map_.lookup(off / kSector, (off + n) / kSector, [&](const Piece& p) {
      if (p.kind != Piece::kData || count == kMaxPieces) mapped = false;
      else pieces[count++] = p;
    });
  }
  if (!mapped || count == 0) return false;
  auto* base = static_cast<const char*>(buf);
  for (size_t i = 0; i < count; i++) {
    const Piece& p = pieces[i];
    *st = pwriteAll(data_.get(), base + (p.offset * kSector - off), p.length * kSector, p.moffset * kSector, dataPath_);
    if (!st->ok()) break;
  }
  return true;
}

Status WritableLayer::discard(uint64_t off, uint64_t n) {
  OBD_RETURN_IF_ERROR(checkRange(off, n, "discard"));
  std::unique_lock lock(mu_);
  std::vector<Segment> recs;
  for (uint64_t sec = off / kSector, left = n / kSector; left > 0;) {
    Segment s;
    s.offset = sec;
    s.length = static_cast<uint32_t>(std::min<uint64_t>(left, kMaxLength));
    s.moffset = dataEnd_ / kSector;
    s.zeroed = true;
    recs.push_back(s);
    sec += s.length;
    left -= s.length;
  }
  return appendRecords(recs.data(), recs.size());
}

void WritableLayer::lookup(uint64_t start, uint64_t end, const PieceFn& fn) const {
  std::shared_lock lock(mu_);
  map_.lookup(start, end, fn);
}

std::vector<Segment> WritableLayer::segments() const {
  std::shared_lock lock(mu_);
  return map_.snapshot();
}

Status WritableLayer::readData(void* buf, size_t n, uint64_t byteOffset) const {
  return preadAll(data_.get(), buf, n, byteOffset, dataPath_);
}

Status WritableLayer::read(void* buf, size_t n, uint64_t off) const {
  OBD_RETURN_IF_ERROR(checkRange(off, n, "read"));
  std::vector<Piece> pieces;
  lookup(off / kSector, (off + n) / kSector, [&](const Piece& p) { pieces.push_back(p); });
  auto* base = static_cast<char*>(buf);
  for (const Piece& p : pieces) {
    char* dst = base + (p.offset * kSector - off);
    if (p.kind == Piece::kData)
      OBD_RETURN_IF_ERROR(readData(dst, p.length * kSector, p.moffset * kSector));
    else
      std::memset(dst, 0, p.length * kSector);
  }
  return Status::Ok();
}

// Group commit: a flush is satisfied by any fdatasync that started after it was asked for, so
// concurrent flushes (the loop device forwards every FLUSH/FUA) share one pair of syncs.
Status WritableLayer::fsync() {
  if (readOnly_) return Status::Ok();
  uint64_t ticket = flushAsked_.fetch_add(1, std::memory_order_acq_rel) + 1;
  std::lock_guard<std::mutex> lk(flushMu_);
  if (flushDone_ >= ticket) return Status::Ok();
  uint64_t covers = flushAsked_.load(std::memory_order_acquire);
  if (::fdatasync(data_.get()) != 0) return SysError(dataPath_ + ": fdatasync");
  if (::fdatasync(index_.get()) != 0) return SysError(indexPath_ + ": fdatasync");
  flushDone_ = covers;
  return Status::Ok();
}

uint64_t WritableLayer::virtualSize() const {
  std::shared_lock lock(mu_);
  return vsize_;
}

Status WritableLayer::setVirtualSize(uint64_t vsize) {
  if (readOnly_) return Status(EROFS, dataPath_ + ": opened read-only");
  std::unique_lock lock(mu_);
  HeaderTrailer h = header_;
  h.virtualSize = vsize;
  OBD_RETURN_IF_ERROR(writeHeader(data_.get(), h, dataPath_));
  std::vector<uint8_t> block(kHeaderSpace);
  OBD_RETURN_IF_ERROR(preadAll(index_.get(), block.data(), block.size(), 0, indexPath_));
  auto ih = decodeHeader(block.data(), block.size());
  if (!ih.ok()) return ih.status().wrap(indexPath_);
  ih.value().virtualSize = vsize;
  OBD_RETURN_IF_ERROR(writeHeader(index_.get(), ih.value(), indexPath_));
  header_ = h;
  vsize_ = std::max(vsize_, vsize);
  return Status::Ok();
}

}  // namespace obd::lsmt
