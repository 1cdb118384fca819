// Random-access index of a gzip layer blob ("gzip.meta", TurboOCI; docs/formats.md): access points
// (uncompressed position, compressed position, bit offset, the 32 KiB of output before it) so that a
// byte range of the uncompressed tar can be produced by inflating from the nearest point instead of
// from the start of the blob.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "util/status.h"

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
};

struct BuildStats {
  uint64_t points = 0;
  uint64_t gzipSize = 0;
  uint64_t uncompressedSize = 0;
  uint64_t indexSize = 0;
};

// Reads the gzip blob from fd (from offset 0, sequentially) and writes the index to outPath.
// Only the first gzip member is indexed; trailing bytes other than zero padding are an error.
Result<BuildStats> build(int gzipFd, const std::string& gzipName, const std::string& outPath, const BuildOptions& opts);

// True when the first bytes are a gzip header (1f 8b 08).
bool looksLikeGzip(const void* first, size_t n);

}  // namespace obd::gzindex
