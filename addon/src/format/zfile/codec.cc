#include "format/zfile/codec.h"

#include <lz4.h>

#include <climits>
#include <string>

namespace obd::zfile {

namespace {
constexpr int kZstdLevel = 3;  // what overlaybd uses, whatever the header's level byte says
}

Compressor::Compressor(uint8_t algo) : algo_(algo) {}

Compressor::~Compressor() {
  if (zstd_) ZSTD_freeCCtx(zstd_);
}

Result<size_t> Compressor::compress(const uint8_t* src, size_t n, uint8_t* dst, size_t cap) {
  if (n > INT_MAX || cap > INT_MAX) return InvalidArg("block too large");
  if (algo_ == 1) {
    int r = LZ4_compress_default(reinterpret_cast<const char*>(src), reinterpret_cast<char*>(dst), static_cast<int>(n),
                                 static_cast<int>(cap));
    if (r <= 0) return IoError("lz4 compression failed");
    return static_cast<size_t>(r);
  }
  if (algo_ == 2) {
    if (!zstd_) {
      zstd_ = ZSTD_createCCtx();
      if (!zstd_) return Status(ENOMEM, "zstd: cannot allocate a compression context");
    }
    size_t r = ZSTD_compressCCtx(zstd_, dst, cap, src, n, kZstdLevel);
    if (ZSTD_isError(r)) return IoError(std::string("zstd compression failed: ") + ZSTD_getErrorName(r));
    return r;
  }
  return InvalidArg("unsupported compression algorithm " + std::to_string(algo_));
}

Decompressor::~Decompressor() {
  for (auto* ctx : free_) ZSTD_freeDCtx(ctx);
}

ZSTD_DCtx* Decompressor::acquire() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!free_.empty()) {
      ZSTD_DCtx* ctx = free_.back();
      free_.pop_back();
      return ctx;
    }
  }
  return ZSTD_createDCtx();
}

void Decompressor::release(ZSTD_DCtx* ctx) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (free_.size() < kMaxPooled) {
      free_.push_back(ctx);
      return;
    }
  }
  ZSTD_freeDCtx(ctx);
}

Status Decompressor::decompress(const uint8_t* src, size_t n, uint8_t* dst, size_t expected) {
  if (n > INT_MAX || expected > INT_MAX) return Corrupt("block too large");
  if (algo_ == 1) {
    int r = LZ4_decompress_safe(reinterpret_cast<const char*>(src), reinterpret_cast<char*>(dst), static_cast<int>(n),
                                static_cast<int>(expected));
    if (r < 0) return Corrupt("lz4 data is corrupt");
    if (static_cast<size_t>(r) != expected)
      return Corrupt("lz4 data decompressed to " + std::to_string(r) + " bytes, expected " + std::to_string(expected));
    return Status::Ok();
  }
  if (algo_ == 2) {
    ZSTD_DCtx* ctx = acquire();
    if (!ctx) return Status(ENOMEM, "zstd: cannot allocate a decompression context");
    size_t r = ZSTD_decompressDCtx(ctx, dst, expected, src, n);
    release(ctx);
    if (ZSTD_isError(r)) return Corrupt(std::string("zstd data is corrupt: ") + ZSTD_getErrorName(r));
    if (r != expected)
      return Corrupt("zstd data decompressed to " + std::to_string(r) + " bytes, expected " + std::to_string(expected));
    return Status::Ok();
  }
  return Corrupt("unsupported compression algorithm " + std::to_string(algo_));
}

}  // namespace obd::zfile
