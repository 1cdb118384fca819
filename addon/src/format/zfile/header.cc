#include "format/zfile/header.h"

#include <lz4.h>
#include <zstd.h>

#include <cstring>

#include "util/crc32c.h"
#include "util/little_endian.h"

namespace obd::zfile {

namespace {

// "ZFile\0\1" + NUL, then the UUID bytes "tuji.yyf@Alibaba".
constexpr uint8_t kMagic0[8] = {0x5A, 0x46, 0x69, 0x6C, 0x65, 0x00, 0x01, 0x00};
constexpr uint8_t kMagic1[16] = {0x74, 0x75, 0x6A, 0x69, 0x2E, 0x79, 0x79, 0x66,
                                 0x40, 0x41, 0x6C, 0x69, 0x62, 0x61, 0x62, 0x61};

// Field offsets inside the block (natural alignment of the upstream struct).
constexpr size_t kOffSize = 24, kOffDigest = 28, kOffFlags = 32, kOffIndexOffset = 40, kOffIndexSize = 48,
                 kOffOriginalSize = 56, kOffIndexCrc = 64, kOffBlockSize = 72, kOffAlgo = 76, kOffLevel = 77,
                 kOffUseDict = 78, kOffDictSize = 84, kOffVerify = 88;

template <typename T>
T get(const uint8_t* b, size_t off) {
  return static_cast<T>(loadLe(b + off, sizeof(T)));
}

template <typename T>
void put(uint8_t* b, size_t off, T v) {
  storeLe(b + off, static_cast<uint64_t>(v), sizeof(T));
}

}  // namespace

bool hasMagic(const uint8_t* block, size_t n) {
  return n >= sizeof kMagic0 + sizeof kMagic1 && std::memcmp(block, kMagic0, sizeof kMagic0) == 0 &&
         std::memcmp(block + sizeof kMagic0, kMagic1, sizeof kMagic1) == 0;
}

Result<HeaderTrailer> decode(const uint8_t (&b)[kHeaderSpace]) {
  if (!hasMagic(b, kHeaderSpace)) return Corrupt("bad magic (not a ZFile)");
  HeaderTrailer ht;
  ht.size = get<uint32_t>(b, kOffSize);
  ht.digest = get<uint32_t>(b, kOffDigest);
  ht.flags = get<uint64_t>(b, kOffFlags);
  ht.indexOffset = get<uint64_t>(b, kOffIndexOffset);
  ht.indexSize = get<uint64_t>(b, kOffIndexSize);
  ht.originalSize = get<uint64_t>(b, kOffOriginalSize);
  ht.indexCrc = get<uint32_t>(b, kOffIndexCrc);
  ht.blockSize = get<uint32_t>(b, kOffBlockSize);
  ht.algo = b[kOffAlgo];
  ht.level = b[kOffLevel];
  ht.useDict = b[kOffUseDict];
  ht.dictSize = get<uint32_t>(b, kOffDictSize);
  ht.verify = b[kOffVerify];
  return ht;
}

uint32_t computeDigest(const uint8_t (&b)[kHeaderSpace]) {
  static constexpr uint8_t kZero[4] = {0, 0, 0, 0};
  uint32_t crc = crc32cUpdate(0, b, kOffDigest);
  crc = crc32cUpdate(crc, kZero, sizeof kZero);
  return crc32cUpdate(crc, b + kOffDigest + 4, kHeaderSpace - kOffDigest - 4);
}

void encode(const HeaderTrailer& ht, uint8_t (&b)[kHeaderSpace]) {
  std::memset(b, 0, kHeaderSpace);
  std::memcpy(b, kMagic0, sizeof kMagic0);
  std::memcpy(b + sizeof kMagic0, kMagic1, sizeof kMagic1);
  put<uint32_t>(b, kOffSize, ht.size);
  put<uint64_t>(b, kOffFlags, ht.flags);
  put<uint64_t>(b, kOffIndexOffset, ht.indexOffset);
  put<uint64_t>(b, kOffIndexSize, ht.indexSize);
  put<uint64_t>(b, kOffOriginalSize, ht.originalSize);
  put<uint32_t>(b, kOffIndexCrc, ht.indexCrc);
  put<uint32_t>(b, kOffBlockSize, ht.blockSize);
  b[kOffAlgo] = ht.algo;
  b[kOffLevel] = ht.level;
  b[kOffUseDict] = ht.useDict;
  put<uint32_t>(b, kOffDictSize, ht.dictSize);
  b[kOffVerify] = ht.verify;
  if (ht.flags & kFlagDigest) put<uint32_t>(b, kOffDigest, computeDigest(b));
}

size_t compressBound(uint8_t algo, uint32_t blockSize) {
  switch (algo) {
    case 1:
      return static_cast<size_t>(LZ4_compressBound(static_cast<int>(blockSize)));
    case 2:
      return ZSTD_compressBound(blockSize);
    default:
      return 0;
  }
}

const char* algorithmName(uint8_t algo) {
  switch (algo) {
    case 0:
      return "mini-lzo";
    case 1:
      return "lz4";
    case 2:
      return "zstd";
    default:
      return "unknown";
  }
}

}  // namespace obd::zfile
