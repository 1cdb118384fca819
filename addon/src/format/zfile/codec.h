// Per-block compression for ZFile: LZ4 raw block format (LZ4_compress_default / LZ4_decompress_safe)
// and ZSTD (one complete frame per block, level 3) (docs/formats.md, ZFile).
#pragma once

#include <zstd.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "util/status.h"

namespace obd::zfile {

// Single-threaded: the writer owns one.
class Compressor {
 public:
  explicit Compressor(uint8_t algo);
  ~Compressor();
  Compressor(const Compressor&) = delete;
  Compressor& operator=(const Compressor&) = delete;
  // Compresses n bytes into dst (capacity must be >= compressBound(algo, n)); returns the length.
  Result<size_t> compress(const uint8_t* src, size_t n, uint8_t* dst, size_t cap);

 private:
  uint8_t algo_;
  ZSTD_CCtx* zstd_ = nullptr;
};

// Thread-safe: reads of one ZFile may complete on several threads at once. ZSTD contexts are kept
// in a small free list so a block does not pay for a context allocation.
class Decompressor {
 public:
  explicit Decompressor(uint8_t algo) : algo_(algo) {}
  ~Decompressor();
  Decompressor(const Decompressor&) = delete;
  Decompressor& operator=(const Decompressor&) = delete;
  // Decompresses src into dst, which must come out as exactly `expected` bytes. The message says
  // what went wrong without context; callers add file and block.
  Status decompress(const uint8_t* src, size_t n, uint8_t* dst, size_t expected);

 private:
  ZSTD_DCtx* acquire();
  void release(ZSTD_DCtx* ctx);

  static constexpr size_t kMaxPooled = 8;
  uint8_t algo_;
  std::mutex mu_;
  std::vector<ZSTD_DCtx*> free_;
};

}  // namespace obd::zfile
