// Index creation: one pass of inflate with Z_BLOCK over the blob; at a deflate block boundary (not
// inside the final block) where at least `span` compressed bytes were consumed since the last point,
// an access point is recorded with the last 32 KiB of output as its window. Z_BLOCK makes inflate
// return at every block boundary whatever the input and output sizes, so the points do not depend
// on how the stream is cut into pieces.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cstring>

#include "format/gzindex/gz_index.h"
#include "util/crc32c.h"
#include "util/fd_io.h"
#include "util/unique_fd.h"

namespace obd::gzindex {

namespace {

void put64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
void put32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}

Result<std::vector<uint8_t>> zlibCompress(const uint8_t* p, size_t n, int level) {
  uLongf cap = compressBound(static_cast<uLong>(n));
  std::vector<uint8_t> out(cap);
  if (compress2(out.data(), &cap, p, static_cast<uLong>(n), level) != Z_OK) return Status(ENOMEM, "zlib compress failed");
  out.resize(cap);
  return out;
}

}  // namespace

class IndexBuilder::Writer {
 public:
  Writer(UniqueFd fd, std::string path, int level) : fd_(std::move(fd)), path_(std::move(path)), level_(level) {}
  Status addPoint(uint64_t de, uint64_t en, uint8_t bits, const uint8_t* ring, size_t ringPos) {
    std::vector<uint8_t> win(kWindow);
    std::memcpy(win.data(), ring + ringPos, kWindow - ringPos);  // oldest byte first
    std::memcpy(win.data() + (kWindow - ringPos), ring, ringPos);
    auto z = zlibCompress(win.data(), win.size(), level_);
    if (!z.ok()) return z.status();
    uint8_t e[kEntrySize];
    put64(e, de);
    put64(e + 8, en);
    put64(e + 16, pos_);
    e[24] = bits;
    put32(e + 25, static_cast<uint32_t>(z.value().size()));
    table_.insert(table_.end(), e, e + kEntrySize);
    OBD_RETURN_IF_ERROR(pwriteAll(fd_.get(), z.value().data(), z.value().size(), pos_, path_));
    pos_ += z.value().size();
    points_++;
    return Status::Ok();
  }
  Result<uint64_t> finish(uint64_t span, uint64_t gzSize, uint64_t usize, bool sync) {
    auto z = zlibCompress(table_.data(), table_.size(), level_);
    if (!z.ok()) return z.status();
    uint64_t start = pos_;
    OBD_RETURN_IF_ERROR(pwriteAll(fd_.get(), z.value().data(), z.value().size(), start, path_));
    uint64_t total = start + z.value().size();
    uint8_t h[kHeaderSize] = {};
    std::memcpy(h, "ddgzidx", 8);
    h[8] = 1;
    h[9] = 0;
    h[10] = 1;  // zlib-compressed windows and table
    h[11] = static_cast<uint8_t>(level_);
    put32(h + 13, static_cast<uint32_t>(span));
    put32(h + 17, kWindow);
    put32(h + 21, kEntrySize);
    put64(h + 25, points_);
    put64(h + 33, gzSize);
    put64(h + 41, total);
    put64(h + 49, usize);
    put64(h + 313, start);
    put64(h + 321, z.value().size());
    put32(h + 329, crc32cUpdate(0, h, 329));
    OBD_RETURN_IF_ERROR(pwriteAll(fd_.get(), h, kHeaderSize, 0, path_));
    if (sync && ::fsync(fd_.get()) != 0) return SysError(path_ + ": fsync");
    return total;
  }
  uint64_t points() const { return points_; }

 private:
  UniqueFd fd_;
  std::string path_;
  int level_;
  uint64_t pos_ = kHeaderSize;
  uint64_t points_ = 0;
  std::vector<uint8_t> table_;
};

IndexBuilder::IndexBuilder(std::string gzipName, const BuildOptions& opts)
    : gzipName_(std::move(gzipName)), opts_(opts), z_(new z_stream_s{}), ring_(kWindow, 0) {}

IndexBuilder::~IndexBuilder() {
  if (z_) inflateEnd(z_.get());
}

Result<std::unique_ptr<IndexBuilder>> IndexBuilder::create(const std::string& gzipName, const std::string& outPath,
                                                           const BuildOptions& opts) {
  if (opts.span < 65536 || opts.span > (1u << 30)) return InvalidArg("gzip index span " + std::to_string(opts.span) + " outside [64 KiB, 1 GiB]");
  if (opts.level < -1 || opts.level > 9) return InvalidArg("gzip index level " + std::to_string(opts.level));
  std::unique_ptr<IndexBuilder> b(new IndexBuilder(gzipName, opts));
  if (inflateInit2(b->z_.get(), 15 + 16) != Z_OK) {
    b->z_.reset();
    return Status(ENOMEM, "inflateInit failed");
  }
  UniqueFd out(::open(outPath.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!out.valid()) return SysError(outPath + ": create");
  b->writer_.reset(new Writer(std::move(out), outPath, opts.level));
  return b;
}

void IndexBuilder::remember(const uint8_t* p, size_t n) {
  if (n >= kWindow) {
    std::memcpy(ring_.data(), p + (n - kWindow), kWindow);
    ringPos_ = 0;
    return;
  }
  const size_t head = std::min(n, kWindow - ringPos_);
  std::memcpy(ring_.data() + ringPos_, p, head);
  std::memcpy(ring_.data(), p + head, n - head);
  ringPos_ = (ringPos_ + n) % kWindow;
}

Result<size_t> IndexBuilder::inflate(const uint8_t** in, size_t* inLen, uint8_t* out, size_t cap) {
  z_stream& z = *z_;
  size_t produced = 0;
  while (*inLen > 0 && produced < cap && !ended_) {
    z.next_in = const_cast<uint8_t*>(*in);
    z.avail_in = static_cast<uInt>(std::min<size_t>(*inLen, 1u << 30));
    z.next_out = out + produced;
    z.avail_out = static_cast<uInt>(std::min<size_t>(cap - produced, 1u << 30));
    const uInt inBefore = z.avail_in, outBefore = z.avail_out;
    const int r = ::inflate(&z, Z_BLOCK);
    const size_t used = inBefore - z.avail_in, made = outBefore - z.avail_out;
    *in += used;
    *inLen -= used;
    totIn_ += used;
    totOut_ += made;
    remember(out + produced, made);
    produced += made;
    if (r == Z_STREAM_END) {
      ended_ = true;
      break;
    }
    if ((r != Z_OK && r != Z_BUF_ERROR) || (used == 0 && made == 0)) {
      return Corrupt(gzipName_ + ": gzip data is damaged (" + (z.msg ? z.msg : "zlib error") + ") at compressed byte " +
                     std::to_string(totIn_));
    }
    const bool boundary = (z.data_type & 128) && !(z.data_type & 64);
    if (boundary && (first_ || totIn_ - lastPoint_ >= opts_.span)) {
      OBD_RETURN_IF_ERROR(writer_->addPoint(totOut_, totIn_, static_cast<uint8_t>(z.data_type & 7), ring_.data(), ringPos_));
      lastPoint_ = totIn_;
      first_ = false;
    }
  }
  return produced;
}

Status IndexBuilder::trailing(const uint8_t* p, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    if (p[i] != 0) {
      return Corrupt(gzipName_ + ": more than one gzip member (byte " + std::to_string(totIn_ + trailingBytes_ + i) +
                     "); only single-member gzip layers can be indexed");
    }
  }
  trailingBytes_ += n;
  return Status::Ok();
}

Result<BuildStats> IndexBuilder::finish(uint64_t gzipSize) {
  if (!ended_) return Corrupt(gzipName_ + ": gzip stream ends early at compressed byte " + std::to_string(totIn_));
  if (first_) return Corrupt(gzipName_ + ": gzip stream has no deflate data at compressed byte " + std::to_string(totIn_));
  auto total = writer_->finish(opts_.span, gzipSize, totOut_, opts_.sync);
  if (!total.ok()) return total.status();
  BuildStats s;
  s.points = writer_->points();
  s.gzipSize = gzipSize;
  s.uncompressedSize = totOut_;
  s.indexSize = total.value();
  return s;
}

Result<BuildStats> build(int gzipFd, const std::string& gzipName, const std::string& outPath, const BuildOptions& opts) {
  auto made = IndexBuilder::create(gzipName, outPath, opts);
  if (!made.ok()) return made.status();
  IndexBuilder& b = *made.value();
  std::vector<uint8_t> in(1 << 20);
  std::vector<uint8_t> scratch(1 << 18);  // the uncompressed stream, not needed here
  for (uint64_t off = 0;;) {
    ssize_t n = ::pread(gzipFd, in.data(), in.size(), static_cast<off_t>(off));
    if (n < 0) return SysError(gzipName + ": read");
    if (n == 0) break;
    off += static_cast<uint64_t>(n);
    const uint8_t* p = in.data();
    size_t left = static_cast<size_t>(n);
    while (left > 0 && !b.ended()) {
      auto r = b.inflate(&p, &left, scratch.data(), scratch.size());
      if (!r.ok()) return r.status();
    }
    OBD_RETURN_IF_ERROR(b.trailing(p, left));
  }
  struct stat st;
  if (::fstat(gzipFd, &st) != 0) return SysError(gzipName + ": stat");
  return b.finish(static_cast<uint64_t>(st.st_size));
}

}  // namespace obd::gzindex
