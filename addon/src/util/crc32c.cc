#include "util/crc32c.h"

#include <array>
#include <cstring>

namespace obd {

namespace {

constexpr uint32_t kPoly = 0x82F63B78u;

// Slicing-by-8 tables: kTables[0] is the classic byte table, kTables[k][b] advances a byte b
// followed by k zero bytes.
struct Tables {
  uint32_t t[8][256];
};

constexpr Tables makeTables() {
  Tables tb{};
  for (uint32_t b = 0; b < 256; b++) {
    uint32_t c = b;
    for (int i = 0; i < 8; i++) c = (c >> 1) ^ ((c & 1) ? kPoly : 0);
    tb.t[0][b] = c;
  }
  for (uint32_t b = 0; b < 256; b++) {
    for (int k = 1; k < 8; k++) tb.t[k][b] = (tb.t[k - 1][b] >> 8) ^ tb.t[0][tb.t[k - 1][b] & 0xFF];
  }
  return tb;
}

constexpr Tables kTables = makeTables();

inline uint64_t load64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;  // little-endian hosts only (x86_64, arm64), like the format itself
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) uint32_t crc32cSse42(uint32_t crc, const uint8_t* p, size_t n) {
  // One 8-byte step per instruction (~3 cycles latency): several GB/s, far above what the
  // decompressors need, so no lane interleaving.
  uint64_t c = crc;
  while (n >= 8) {
    c = __builtin_ia32_crc32di(c, load64(p));
    p += 8;
    n -= 8;
  }
  uint32_t c32 = static_cast<uint32_t>(c);
  while (n > 0) {
    c32 = __builtin_ia32_crc32qi(c32, *p++);
    n--;
  }
  return c32;
}

bool detectSse42() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("sse4.2");
}
#endif

}  // namespace

uint32_t crc32cUpdateTable(uint32_t crc, const void* data, size_t n) {
  const auto* p = static_cast<const uint8_t*>(data);
  const auto& t = kTables.t;
  while (n >= 8) {
    uint64_t v = load64(p) ^ crc;
    crc = t[7][v & 0xFF] ^ t[6][(v >> 8) & 0xFF] ^ t[5][(v >> 16) & 0xFF] ^ t[4][(v >> 24) & 0xFF] ^
          t[3][(v >> 32) & 0xFF] ^ t[2][(v >> 40) & 0xFF] ^ t[1][(v >> 48) & 0xFF] ^ t[0][v >> 56];
    p += 8;
    n -= 8;
  }
  while (n > 0) {
    crc = (crc >> 8) ^ t[0][(crc ^ *p++) & 0xFF];
    n--;
  }
  return crc;
}

bool crc32cHardware() {
#if defined(__x86_64__)
  static const bool has = detectSse42();  // computed once, never changes
  return has;
#else
  return false;
#endif
}

uint32_t crc32cUpdate(uint32_t crc, const void* data, size_t n) {
#if defined(__x86_64__)
  if (crc32cHardware()) return crc32cSse42(crc, static_cast<const uint8_t*>(data), n);
#endif
  return crc32cUpdateTable(crc, data, n);
}

}  // namespace obd
