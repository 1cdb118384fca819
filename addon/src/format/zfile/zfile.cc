// ZFile reader: validation of header, trailer and jump table at open; asynchronous block reads.
#include "format/zfile/zfile.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <vector>

#include "format/zfile/codec.h"
#include "format/zfile/header.h"
#include "format/zfile/jump_table.h"
#include "util/crc32c.h"
#include "util/little_endian.h"

namespace obd::zfile {

namespace {

constexpr size_t kMaxBatchBytes = 1 << 20;   // compressed bytes fetched by one source read
constexpr int kMaxInflight = 4;              // source reads in flight per logical read
constexpr int kMaxAttempts = 3;              // a block whose crc mismatches is fetched again (remote hiccups)
constexpr size_t kJumpTableChunk = 1 << 20;  // jump table is read in pieces of this size

std::string hex32(uint32_t v) {
  char b[16];
  std::snprintf(b, sizeof b, "0x%08x", v);
  return b;
}

bool isPowerOfTwo(uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

// Everything open() learns about a file; immutable afterwards.
struct Layout {
  HeaderTrailer ht;  // the block that carries the index: trailer, or the overwritten header
  bool headerOverwritten = false;
  bool headerDigest = false;
  uint64_t dataStart = kHeaderSpace;
  JumpTable table;
};

Status readBlock(ReadableFile& f, uint64_t off, uint8_t (&block)[kHeaderSpace]) { return f.read(block, kHeaderSpace, off); }

Status checkDigest(const HeaderTrailer& ht, const uint8_t (&block)[kHeaderSpace], const char* which) {
  if (!ht.hasDigest()) return Status::Ok();
  uint32_t computed = computeDigest(block);
  if (computed != ht.digest)
    return Corrupt(std::string(which) + ": digest mismatch (stored " + hex32(ht.digest) + ", computed " + hex32(computed) +
                   ")");
  return Status::Ok();
}

Status checkOptions(const HeaderTrailer& ht) {
  if (ht.algo != 1 && ht.algo != 2)
    return Corrupt("unsupported compression algorithm " + std::to_string(ht.algo) + " (" + algorithmName(ht.algo) +
                   "); only lz4 (1) and zstd (2) exist in practice");
  if (!isPowerOfTwo(ht.blockSize) || ht.blockSize < 512 || ht.blockSize > kMaxBlockSize)
    return Corrupt("invalid block size " + std::to_string(ht.blockSize) + " (must be a power of two, 512..65536)");
  if (ht.useDict || ht.dictSize) return Corrupt("compression dictionaries are not supported");
  if (ht.indexCompressed()) return Corrupt("compressed jump tables are not supported");
  return Status::Ok();
}

// Header and trailer are written from the same options; a disagreement means one is damaged.
Status crossCheck(const HeaderTrailer& h, const HeaderTrailer& t) {
  auto differ = [](const char* what, uint64_t a, uint64_t b) {
    return Corrupt(std::string("header and trailer disagree on ") + what + " (" + std::to_string(a) + " vs " +
                   std::to_string(b) + ")");
  };
  if (h.algo != t.algo) return differ("algorithm", h.algo, t.algo);
  if (h.blockSize != t.blockSize) return differ("block size", h.blockSize, t.blockSize);
  if ((h.verify != 0) != (t.verify != 0)) return differ("verify", h.verify, t.verify);
  return Status::Ok();
}

Status readHeaders(ReadableFile& f, Layout* out) {
  const uint64_t size = f.size();
  if (size < kHeaderSpace) return Corrupt("too small to be a ZFile (" + std::to_string(size) + " bytes)");
  uint8_t hb[kHeaderSpace];
  OBD_RETURN_IF_ERROR(readBlock(f, 0, hb));
  auto header = decode(hb);
  if (!header.ok()) return header.status().wrap("header");
  const HeaderTrailer& h = header.value();
  if (!h.isHeader()) return Corrupt("header: HEADER flag not set");
  OBD_RETURN_IF_ERROR(checkDigest(h, hb, "header"));
  out->headerDigest = h.hasDigest();
  if (h.indexCompressed()) return Corrupt("header: compressed jump tables are not supported");
  if (size < 2 * kHeaderSpace) return Corrupt("truncated: " + std::to_string(size) + " bytes, no room for a trailer");

  if (h.headerOverwritten()) {
    out->headerOverwritten = true;
    out->ht = h;
  } else {
    if (!h.isDataFile()) return Corrupt("header: TYPE (data file) flag not set");
    uint8_t tb[kHeaderSpace];
    OBD_RETURN_IF_ERROR(readBlock(f, size - kHeaderSpace, tb));
    auto trailer = decode(tb);
    if (!trailer.ok()) return trailer.status().wrap("trailer (file truncated?)");
    const HeaderTrailer& t = trailer.value();
    if (t.isHeader()) return Corrupt("trailer: HEADER flag set");
    if (!t.isDataFile()) return Corrupt("trailer: TYPE (data file) flag not set");
    if (!t.isSealed()) return Corrupt("trailer: SEALED flag not set");
    OBD_RETURN_IF_ERROR(checkDigest(t, tb, "trailer"));
    OBD_RETURN_IF_ERROR(crossCheck(h, t));
    out->ht = t;
  }
  OBD_RETURN_IF_ERROR(checkOptions(out->ht));
  return Status::Ok();
}

Status readJumpTable(ReadableFile& f, Layout* out) {
  const HeaderTrailer& ht = out->ht;
  const uint64_t tableEnd = f.size() - kHeaderSpace;  // the trailer follows the table (also when overwritten)
  const uint64_t n = ht.indexSize;
  if (ht.indexOffset < out->dataStart || ht.indexOffset > tableEnd)
    return Corrupt("index offset " + std::to_string(ht.indexOffset) + " outside the file (data starts at " +
                   std::to_string(out->dataStart) + ", trailer at " + std::to_string(tableEnd) + ")");
  if (n > (tableEnd - ht.indexOffset) / 4)
    return Corrupt("index size " + std::to_string(n) + " blocks does not fit between offset " +
                   std::to_string(ht.indexOffset) + " and the trailer at " + std::to_string(tableEnd));
  const uint64_t expectedBlocks = ht.originalSize / ht.blockSize + (ht.originalSize % ht.blockSize ? 1 : 0);
  if (n != expectedBlocks)
    return Corrupt("index has " + std::to_string(n) + " blocks but original size " + std::to_string(ht.originalSize) +
                   " needs " + std::to_string(expectedBlocks) + " blocks of " + std::to_string(ht.blockSize));

  const uint32_t crcBytes = ht.verify ? 4 : 0;
  const uint64_t maxStored = compressBound(ht.algo, ht.blockSize) + crcBytes;
  std::vector<uint32_t> lengths(n);
  std::vector<uint8_t> chunk;
  uint32_t crc = 0;
  uint64_t sum = 0;
  for (uint64_t done = 0; done < n;) {
    const uint64_t count = std::min<uint64_t>(n - done, kJumpTableChunk / 4);
    chunk.resize(count * 4);
    OBD_RETURN_IF_ERROR(f.read(chunk.data(), chunk.size(), ht.indexOffset + done * 4).wrap("jump table"));
    crc = crc32cUpdate(crc, chunk.data(), chunk.size());
    for (uint64_t i = 0; i < count; i++) {
      const uint32_t len = static_cast<uint32_t>(loadLe(&chunk[i * 4], 4));
      if (len <= crcBytes || len > maxStored)
        return Corrupt("jump table: block " + std::to_string(done + i) + " has stored length " + std::to_string(len) +
                       " (must be " + std::to_string(crcBytes + 1) + ".." + std::to_string(maxStored) + ")");
      lengths[done + i] = len;
      sum += len;
    }
    done += count;
  }
  if (ht.hasDigest() && crc != ht.indexCrc)
    return Corrupt("jump table: crc mismatch (stored " + hex32(ht.indexCrc) + ", computed " + hex32(crc) + ")");
  if (out->dataStart + sum != ht.indexOffset)
    return Corrupt("jump table: block lengths add up to " + std::to_string(sum) + " bytes but the data section is " +
                   std::to_string(ht.indexOffset - out->dataStart));
  out->table = JumpTable(lengths, out->dataStart);
  return Status::Ok();
}

Result<Layout> loadLayout(ReadableFile& f) {
  Layout layout;
  Status st = readHeaders(f, &layout);
  if (st.ok()) st = readJumpTable(f, &layout);
  if (!st.ok()) return st.wrap(f.name());
  return layout;
}

Info toInfo(const Layout& l) {
  Info info;
  info.algorithm = static_cast<Algorithm>(l.ht.algo);
  info.blockSize = l.ht.blockSize;
  info.verify = l.ht.verify != 0;
  info.headerOverwritten = l.headerOverwritten;
  info.hasDigest = l.ht.hasDigest();
  info.blockCount = l.ht.indexSize;
  info.originalSize = l.ht.originalSize;
  info.indexOffset = l.ht.indexOffset;
  return info;
}

// State shared by a reader and its in-flight reads (a read may outlive the reader object).
struct Core {
  Core(std::shared_ptr<ReadableFile> src, Layout l, bool verify)
      : source(std::move(src)), layout(std::move(l)), verifyBlocks(verify && layout.ht.verify), codec(layout.ht.algo) {}
  std::shared_ptr<ReadableFile> source;
  Layout layout;
  bool verifyBlocks;
  Decompressor codec;

  uint64_t size() const { return layout.ht.originalSize; }
  uint32_t blockSize() const { return layout.ht.blockSize; }
  uint64_t blockLength(uint64_t i) const {  // uncompressed bytes of block i (the last one may be short)
    return std::min<uint64_t>(blockSize(), size() - i * blockSize());
  }
};

// One logical read: blocks [first, end) fetched in batches of <= kMaxBatchBytes, <= kMaxInflight at once.
class ReadOp : public std::enable_shared_from_this<ReadOp> {
 public:
  ReadOp(std::shared_ptr<Core> core, uint8_t* out, uint64_t off, size_t n, IoCallback cb)
      : core_(std::move(core)), out_(out), off_(off), n_(n), cb_(std::move(cb)) {
    next_ = off / core_->blockSize();
    end_ = (off + n - 1) / core_->blockSize() + 1;
  }

  void pump() {
    std::unique_lock<std::mutex> lock(mu_);
    if (pumping_) return;  // the active pump loop will see our changes
    pumping_ = true;
    const JumpTable& table = core_->layout.table;
    while (err_.ok() && next_ < end_ && inflight_ < kMaxInflight) {
      uint64_t b0 = next_, b1 = next_ + 1;
      while (b1 < end_ && table.start(b1 + 1) - table.start(b0) <= kMaxBatchBytes) b1++;
      next_ = b1;
      inflight_++;
      lock.unlock();
      issue(b0, b1, 1);
      lock.lock();
    }
    pumping_ = false;
    const bool fire = !fired_ && inflight_ == 0 && (!err_.ok() || next_ == end_);
    if (fire) fired_ = true;
    lock.unlock();
    if (fire) cb_(err_);
  }

 private:
  void issue(uint64_t b0, uint64_t b1, int attempt) {
    const JumpTable& table = core_->layout.table;
    const uint64_t start = table.start(b0);
    const size_t len = static_cast<size_t>(table.start(b1) - start);
    auto buf = std::shared_ptr<uint8_t[]>(new (std::nothrow) uint8_t[len]);
    if (!buf) {
      complete(Status(ENOMEM, core_->source->name() + ": cannot allocate " + std::to_string(len) + " bytes"));
      return;
    }
    auto self = shared_from_this();
    core_->source->readAsync(buf.get(), len, start, [self, buf, b0, b1, attempt](Status st) {
      if (st.ok()) {
        st = self->decodeBatch(buf.get(), b0, b1);
        if (st.code() == EILSEQ && attempt < kMaxAttempts) {  // checksum mismatch: fetch again
          self->issue(b0, b1, attempt + 1);
          return;
        }
        if (st.code() == EILSEQ) st = Corrupt(st.message());
      } else {
        st = st.wrap(self->core_->source->name() + ": reading blocks " + std::to_string(b0) + ".." +
                     std::to_string(b1 - 1));
      }
      self->complete(std::move(st));
    });
  }

  void complete(Status st) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      inflight_--;
      if (!st.ok() && err_.ok()) err_ = std::move(st);
    }
    pump();
  }

  // Checks and decompresses blocks [b0, b1) from their stored bytes, copying the requested slices.
  Status decodeBatch(const uint8_t* stored, uint64_t b0, uint64_t b1) {
    Core& c = *core_;
    const JumpTable& table = c.layout.table;
    const uint64_t base = table.start(b0);
    const size_t crcBytes = c.layout.ht.verify ? 4 : 0;
    std::unique_ptr<uint8_t[]> scratch;
    for (uint64_t i = b0; i < b1; i++) {
      const uint8_t* p = stored + (table.start(i) - base);
      const size_t clen = static_cast<size_t>(table.storedLength(i)) - crcBytes;
      if (c.verifyBlocks) {
        const uint32_t want = static_cast<uint32_t>(loadLe(p + clen, 4));
        const uint32_t got = crc32cUpdate(kBlockCrcSeed, p, clen);
        if (want != got)
          return Status(EILSEQ, blockWhere(i) + ": checksum mismatch (stored " + hex32(want) + ", computed " +
                                    hex32(got) + ")");
      }
      // Part of the logical range this block covers, relative to the block and to the request.
      const uint64_t blockOff = i * c.blockSize();
      const uint64_t blockLen = c.blockLength(i);
      const uint64_t from = std::max(off_, blockOff), to = std::min(off_ + n_, blockOff + blockLen);
      uint8_t* dst = out_ + (from - off_);
      Status st;
      if (from == blockOff && to == blockOff + blockLen) {
        st = c.codec.decompress(p, clen, dst, blockLen);
      } else {
        if (!scratch) scratch.reset(new (std::nothrow) uint8_t[c.blockSize()]);
        if (!scratch) return Status(ENOMEM, "cannot allocate a block buffer");
        st = c.codec.decompress(p, clen, scratch.get(), blockLen);
        if (st.ok()) std::memcpy(dst, scratch.get() + (from - blockOff), to - from);
      }
      if (!st.ok()) return st.wrap(blockWhere(i));
    }
    return Status::Ok();
  }

  std::string blockWhere(uint64_t i) const {
    const JumpTable& table = core_->layout.table;
    return core_->source->name() + ": block " + std::to_string(i) + " (stored at offset " +
           std::to_string(table.start(i)) + ", " + std::to_string(table.storedLength(i)) + " bytes)";
  }

  std::shared_ptr<Core> core_;
  uint8_t* out_;
  uint64_t off_;
  size_t n_;
  IoCallback cb_;
  uint64_t next_ = 0, end_ = 0;

  std::mutex mu_;
  int inflight_ = 0;
  bool pumping_ = false;
  bool fired_ = false;
  Status err_;
};

class ZFileReader : public ReadableFile {
 public:
  explicit ZFileReader(std::shared_ptr<Core> core) : core_(std::move(core)) {}
  uint64_t size() const override { return core_->size(); }
  const std::string& name() const override { return core_->source->name(); }

  void readAsync(void* buf, size_t n, uint64_t off, IoCallback cb) override {
    auto* out = static_cast<uint8_t*>(buf);
    const uint64_t size = core_->size();
    if (off >= size || n == 0) {
      std::memset(out, 0, n);
      cb(Status::Ok());
      return;
    }
    if (n > size - off) {  // beyond the end reads as zeros
      const size_t inside = static_cast<size_t>(size - off);
      std::memset(out + inside, 0, n - inside);
      n = inside;
    }
    std::make_shared<ReadOp>(core_, out, off, n, std::move(cb))->pump();
  }

 private:
  std::shared_ptr<Core> core_;
};

}  // namespace

bool looksLikeZFile(const void* first, size_t n) {
  if (n < kHeaderSpace) return false;
  const auto* b = static_cast<const uint8_t*>(first);
  if (!hasMagic(b, n)) return false;
  uint64_t flags;
  std::memcpy(&flags, b + 32, sizeof flags);
  return flags & kFlagHeader;
}

Result<std::shared_ptr<ReadableFile>> open(std::shared_ptr<ReadableFile> compressed, bool verifyBlocks) {
  if (!compressed) return InvalidArg("zfile::open: no source file");
  auto layout = loadLayout(*compressed);
  if (!layout.ok()) return layout.status();
  auto core = std::make_shared<Core>(std::move(compressed), layout.take(), verifyBlocks);
  return std::shared_ptr<ReadableFile>(std::make_shared<ZFileReader>(std::move(core)));
}

Result<Info> inspect(ReadableFile& compressed) {
  auto layout = loadLayout(compressed);
  if (!layout.ok()) return layout.status();
  return toInfo(layout.value());
}

}  // namespace obd::zfile
