// Index creation: one pass of inflate with Z_BLOCK over the blob; at a deflate block boundary (not
// inside the final block) where at least `span` compressed bytes were consumed since the last point,
// an access point is recorded with the last 32 KiB of output as its window.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

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

class Writer {
 public:
  Writer(int fd, std::string path, int level) : fd_(fd), path_(std::move(path)), level_(level) {}
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
    OBD_RETURN_IF_ERROR(pwriteAll(fd_, z.value().data(), z.value().size(), pos_, path_));
    pos_ += z.value().size();
    points_++;
    return Status::Ok();
  }
  Result<uint64_t> finish(uint64_t span, uint64_t gzSize, uint64_t usize) {
    auto z = zlibCompress(table_.data(), table_.size(), level_);
    if (!z.ok()) return z.status();
    uint64_t start = pos_;
    OBD_RETURN_IF_ERROR(pwriteAll(fd_, z.value().data(), z.value().size(), start, path_));
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
    OBD_RETURN_IF_ERROR(pwriteAll(fd_, h, kHeaderSize, 0, path_));
    return total;
  }
  uint64_t points() const { return points_; }

 private:
  int fd_;
  std::string path_;
  int level_;
  uint64_t pos_ = kHeaderSize;
  uint64_t points_ = 0;
  std::vector<uint8_t> table_;
};

}  // namespace

Result<BuildStats> build(int gzipFd, const std::string& gzipName, const std::string& outPath, const BuildOptions& opts) {
  if (opts.span < 65536 || opts.span > (1u << 30)) return InvalidArg("gzip index span " + std::to_string(opts.span) + " outside [64 KiB, 1 GiB]");
  if (opts.level < -1 || opts.level > 9) return InvalidArg("gzip index level " + std::to_string(opts.level));
  UniqueFd out(::open(outPath.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!out.valid()) return SysError(outPath + ": create");
  Writer w(out.get(), outPath, opts.level);
  z_stream z{};
  if (inflateInit2(&z, 15 + 16) != Z_OK) return Status(ENOMEM, "inflateInit failed");
  struct End {
    z_stream* z;
    ~End() { inflateEnd(z); }
  } end{&z};
  std::vector<uint8_t> in(1 << 20);
  std::vector<uint8_t> ring(kWindow, 0);
  size_t ringPos = 0;
  uint64_t inPos = 0, totIn = 0, totOut = 0, lastPoint = 0;
  bool first = true, done = false;
  auto bad = [&](const std::string& what) { return Corrupt(gzipName + ": " + what + " at compressed byte " + std::to_string(totIn)); };
  while (!done) {
    ssize_t n = ::pread(gzipFd, in.data(), in.size(), static_cast<off_t>(inPos));
    if (n < 0) return SysError(gzipName + ": read");
    if (n == 0) return bad("gzip stream ends early");
    inPos += static_cast<uint64_t>(n);
    z.next_in = in.data();
    z.avail_in = static_cast<uInt>(n);
    while (z.avail_in > 0 && !done) {
      if (ringPos == kWindow) ringPos = 0;
      z.next_out = ring.data() + ringPos;
      z.avail_out = static_cast<uInt>(kWindow - ringPos);
      uInt inBefore = z.avail_in, outBefore = z.avail_out;
      int r = inflate(&z, Z_BLOCK);
      totIn += inBefore - z.avail_in;
      totOut += outBefore - z.avail_out;
      ringPos += outBefore - z.avail_out;
      if (r == Z_STREAM_END) {
        done = true;
        break;
      }
      if (r != Z_OK && r != Z_BUF_ERROR) return bad(std::string("gzip data is damaged (") + (z.msg ? z.msg : "zlib error") + ")");
      bool boundary = (z.data_type & 128) && !(z.data_type & 64);
      if (boundary && (first || totIn - lastPoint >= opts.span)) {
        OBD_RETURN_IF_ERROR(w.addPoint(totOut, totIn, static_cast<uint8_t>(z.data_type & 7), ring.data(), ringPos == kWindow ? 0 : ringPos));
        lastPoint = totIn;
        first = false;
      }
    }
  }
  if (first) return bad("gzip stream has no deflate data");
  // Only one member is indexed: anything after it must be zero padding.
  uint64_t memberEnd = totIn;
  for (uint64_t off = memberEnd;;) {
    ssize_t n = ::pread(gzipFd, in.data(), in.size(), static_cast<off_t>(off));
    if (n < 0) return SysError(gzipName + ": read");
    if (n == 0) break;
    for (ssize_t i = 0; i < n; ++i)
      if (in[static_cast<size_t>(i)] != 0)
        return Corrupt(gzipName + ": more than one gzip member (byte " + std::to_string(off + static_cast<uint64_t>(i)) +
                       "); only single-member gzip layers can be indexed");
    off += static_cast<uint64_t>(n);
  }
  struct stat st;
  if (::fstat(gzipFd, &st) != 0) return SysError(gzipName + ": stat");
  auto total = w.finish(opts.span, static_cast<uint64_t>(st.st_size), totOut);
  if (!total.ok()) return total.status();
  if (::fsync(out.get()) != 0) return SysError(outPath + ": fsync");
  BuildStats s;
  s.points = w.points();
  s.gzipSize = static_cast<uint64_t>(st.st_size);
  s.uncompressedSize = totOut;
  s.indexSize = total.value();
  return s;
}

}  // namespace obd::gzindex
