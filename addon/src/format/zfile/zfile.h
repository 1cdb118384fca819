// ZFile: overlaybd's seekable block-compressed container (docs/formats.md).
// Public API used by the LSMT/stack code and the binding. Implementation in this folder.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "io/file.h"

namespace obd::zfile {

enum class Algorithm : uint8_t { kLz4 = 1, kZstd = 2 };

struct CompressOptions {
  Algorithm algorithm = Algorithm::kLz4;
  uint32_t blockSize = 4096;     // 4 KiB .. 64 KiB, power of two
  bool verify = true;            // per-block crc32c (tools always set it)
  bool overwriteHeader = false;  // `overlaybd-commit -z` style header (flags 0x1B)
};

struct Info {
  Algorithm algorithm;
  uint32_t blockSize;
  bool verify;
  bool headerOverwritten;
  bool hasDigest;
  uint64_t blockCount;
  uint64_t originalSize;
  uint64_t indexOffset;
};

// True when the first bytes (>= 512 needed) carry both ZFile magics and the HEADER bit.
bool looksLikeZFile(const void* first, size_t n);

// Validates header, trailer (or overwritten header), jump table and its crc; the returned file
// presents the decompressed bytes. With verifyBlocks, every block's crc32c is checked on read and a
// mismatching fetch is retried twice before the read fails (EBADMSG).
// open() itself uses the source's blocking read() (header, trailer, jump table: never on a thread
// that serves the source). Reads afterwards only use readAsync: compressed ranges are fetched in
// batches of <= 1 MiB, at most 4 in flight per read, and decompressed in the source's completion
// callback on whatever thread that runs. Errors name the source file and, for data, the block.
Result<std::shared_ptr<ReadableFile>> open(std::shared_ptr<ReadableFile> compressed, bool verifyBlocks);
// The same validation as open(), returning what the header/trailer say.
Result<Info> inspect(ReadableFile& compressed);

// Streaming writer: append uncompressed bytes in any chunk sizes, then finish(). Output matches
// overlaybd's builder byte for byte for the same compressor (header 0x13, trailer 0x16, or header
// 0x1B with overwriteHeader). The file is created/truncated by create(); after a failed call the
// writer refuses further calls and the partial file is left for the caller to remove.
class Writer {
 public:
  virtual ~Writer() = default;
  static Result<std::unique_ptr<Writer>> create(const std::string& path, const CompressOptions& opts);
  virtual Status append(const void* data, size_t n) = 0;
  virtual Status finish() = 0;  // writes last block, jump table, trailer (and header overwrite), fsyncs
};

// Whole-file conversions behind `obd layer zfile|unzfile` (blocking; run them off the JS thread).
// The output is written to a temp file beside it and renamed into place on success, so a failure
// leaves no partial file and an existing output untouched (special files such as /dev/null are
// written directly).
Status compressFile(ReadableFile& in, const std::string& outPath, const CompressOptions& opts);
// `zfile` is what open() returned (or any ReadableFile): its bytes are copied to outPath.
Status decompressFile(ReadableFile& zfile, const std::string& outPath);

}  // namespace obd::zfile
