// Random-access index of a gzip layer blob ("gzip.meta", TurboOCI; docs/formats.md): access points
// (uncompressed position, compressed position, bit offset, the 32 KiB of output before it) so that a
// byte range of the uncompressed tar can be produced by inflating from the nearest point instead of
// from the start of the blob.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "util/status.h"

struct z_stream_s;

namespace obd::gzindex {

constexpr size_t kHeaderSize = 333;
constexpr size_t kEntrySize = 29;
constexpr uint32_t kWindow = 32768;
constexpr uint64_t kMaxSpanBytes = 64ull << 20;  // uncompressed bytes between two points we accept
constexpr uint64_t kMaxEntries = 16ull << 20;

struct AccessPoint {
  uint64_t dePos;   // uncompressed offset
  uint64_t enPos;   // compressed offset in the blob (gzip header included)
  uint64_t winPos;  // offset of the stored window in the index file
  uint8_t bits;     // unused bits of the byte before enPos (0..7)
  uint32_t winLen;  // stored window length
};

// A parsed, validated index. Holds the whole file (windows are inflated on demand).
class Index {
 public:
  // `expectGzipSize` = size of the blob it indexes (0 = do not check). Every field is checked; a
  // damaged or truncated file is an error naming what is wrong, never a crash.
  static Result<Index> parse(std::vector<uint8_t> bytes, uint64_t expectGzipSize, const std::string& name);

  const std::vector<AccessPoint>& points() const { return points_; }
  uint64_t gzipSize() const { return gzipSize_; }
  uint64_t uncompressedSize() const { return uncompressedSize_; }
  // Index of the point with the greatest dePos <= off (off < uncompressedSize()).
  size_t pointFor(uint64_t off) const;
  // Uncompressed end of the span starting at point i.
  uint64_t spanEnd(size_t i) const { return i + 1 < points_.size() ? points_[i + 1].dePos : uncompressedSize_; }
  // Compressed end of the bytes needed to inflate span i.
  uint64_t compressedEnd(size_t i) const;
  // The 32 KiB dictionary of point i.
  Status window(size_t i, std::vector<uint8_t>* out) const;
  const std::string& name() const { return name_; }

 private:
  std::string name_;
  std::vector<uint8_t> bytes_;
  std::vector<AccessPoint> points_;
  uint64_t gzipSize_ = 0;
  uint64_t uncompressedSize_ = 0;
  uint8_t algo_ = 1;
};

struct BuildOptions {
  uint64_t span = 1 << 20;  // compressed input between access points (at the next deflate block boundary)
  int level = 6;            // zlib level of the stored windows / entry table
  bool sync = true;         // fsync the index file when finished (obdconv's work files do not need it)
};

struct BuildStats {
  uint64_t points = 0;
  uint64_t gzipSize = 0;
  uint64_t uncompressedSize = 0;
  uint64_t indexSize = 0;
};

// Index creation while the gzip stream is read for another purpose: compressed bytes in, the
// uncompressed stream out (obdconv's tar apply reads it), access points recorded on the way. The
// index is the same, byte for byte, whatever the sizes of the pieces fed in.
class IndexBuilder {
 public:
  static Result<std::unique_ptr<IndexBuilder>> create(const std::string& gzipName, const std::string& outPath,
                                                      const BuildOptions& opts);
  ~IndexBuilder();
  IndexBuilder(const IndexBuilder&) = delete;
  IndexBuilder& operator=(const IndexBuilder&) = delete;

  // Inflates from *in (advancing *in and *inLen) into out[0, cap); returns the bytes produced.
  // Stops early at the end of the gzip member (ended()); bytes after it go to trailing().
  Result<size_t> inflate(const uint8_t** in, size_t* inLen, uint8_t* out, size_t cap);
  bool ended() const { return ended_; }
  // Bytes that follow the member: only zero padding is accepted (one member is indexed).
  Status trailing(const uint8_t* p, size_t n);
  // After ended(): writes the entry table and the header. gzipSize = size of the whole blob.
  Result<BuildStats> finish(uint64_t gzipSize);
  uint64_t compressedIn() const { return totIn_ + trailingBytes_; }

 private:
  class Writer;
  IndexBuilder(std::string gzipName, const BuildOptions& opts);
  void remember(const uint8_t* p, size_t n);  // the last 32 KiB of output, for the next point's window

  std::string gzipName_;
  BuildOptions opts_;
  std::unique_ptr<Writer> writer_;
  std::unique_ptr<z_stream_s> z_;
  std::vector<uint8_t> ring_;
  size_t ringPos_ = 0;
  uint64_t totIn_ = 0, totOut_ = 0, lastPoint_ = 0, trailingBytes_ = 0;
  bool first_ = true, ended_ = false;
};

// Reads the gzip blob from fd (from offset 0, sequentially) and writes the index to outPath.
// Only the first gzip member is indexed; trailing bytes other than zero padding are an error.
Result<BuildStats> build(int gzipFd, const std::string& gzipName, const std::string& outPath, const BuildOptions& opts);

// True when the first bytes are a gzip header (1f 8b 08).
bool looksLikeGzip(const void* first, size_t n);

}  // namespace obd::gzindex
