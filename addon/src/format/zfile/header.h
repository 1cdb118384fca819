// The 512-byte ZFile header/trailer block (docs/formats.md, ZFile) and its encoding. Both the header at offset 0
// and the trailer at size-512 use this layout; only the flag bits and which fields are filled differ.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "util/status.h"

namespace obd::zfile {

constexpr size_t kHeaderSpace = 512;   // bytes the header/trailer block occupies on disk
constexpr uint32_t kStructSize = 96;   // value of the `size` field
constexpr uint32_t kBlockCrcSeed = 100007;
constexpr uint32_t kMinBlockSize = 4096;
constexpr uint32_t kMaxBlockSize = 65536;

// Flag bits. Old writers left garbage in the upper bits, so readers test single bits only.
constexpr uint64_t kFlagHeader = 1u << 0;
constexpr uint64_t kFlagType = 1u << 1;  // data file
constexpr uint64_t kFlagSealed = 1u << 2;
constexpr uint64_t kFlagHeaderOverwrite = 1u << 3;
constexpr uint64_t kFlagDigest = 1u << 4;
constexpr uint64_t kFlagIndexCompressed = 1u << 5;

struct HeaderTrailer {
  uint32_t size = kStructSize;
  uint32_t digest = 0;
  uint64_t flags = 0;
  uint64_t indexOffset = 0;
  uint64_t indexSize = 0;  // number of blocks (u32 jump-table entries)
  uint64_t originalSize = 0;
  uint32_t indexCrc = 0;
  uint32_t blockSize = 0;
  uint8_t algo = 0;
  uint8_t level = 0;
  uint8_t useDict = 0;
  uint32_t dictSize = 0;
  uint8_t verify = 0;

  bool isHeader() const { return flags & kFlagHeader; }
  bool isDataFile() const { return flags & kFlagType; }
  bool isSealed() const { return flags & kFlagSealed; }
  bool headerOverwritten() const { return flags & kFlagHeaderOverwrite; }
  bool hasDigest() const { return flags & kFlagDigest; }
  bool indexCompressed() const { return flags & kFlagIndexCompressed; }
};

// True when both magics are present (does not look at flags).
bool hasMagic(const uint8_t* block, size_t n);

// Decodes a 512-byte block. Fails only on bad magic; field validation is the reader's job.
Result<HeaderTrailer> decode(const uint8_t (&block)[kHeaderSpace]);

// Raw crc32c (seed 0) of the 512-byte block with the digest field taken as zero.
uint32_t computeDigest(const uint8_t (&block)[kHeaderSpace]);

// Encodes into a zero-filled 512-byte block; the digest field is computed when kFlagDigest is set.
void encode(const HeaderTrailer& ht, uint8_t (&block)[kHeaderSpace]);

// Upper bound of one compressed block of `blockSize` input bytes for the algorithm (0 if unknown).
size_t compressBound(uint8_t algo, uint32_t blockSize);

const char* algorithmName(uint8_t algo);

}  // namespace obd::zfile
