#include "format/lsmt/segment.h"

#include <cstring>

namespace obd::lsmt {

namespace {
uint64_t le64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
void putLe64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
}  // namespace

Segment decodeSegment(const uint8_t* rec) {
  uint64_t w0 = le64(rec), w1 = le64(rec + 8);
  Segment s;
  s.offset = w0 & kMaxOffset;
  s.length = static_cast<uint32_t>(w0 >> 50);
  s.moffset = w1 & kMaxMOffset;
  s.zeroed = (w1 >> 55) & 1;
  s.tag = static_cast<uint8_t>(w1 >> 56);
  return s;
}

void encodeSegment(const Segment& s, uint8_t* rec) {
  uint64_t w0 = (s.offset & kMaxOffset) | (uint64_t(s.length & kMaxLength) << 50);
  uint64_t w1 = (s.moffset & kMaxMOffset) | (uint64_t(s.zeroed ? 1 : 0) << 55) | (uint64_t(s.tag) << 56);
  putLe64(rec, w0);
  putLe64(rec + 8, w1);
}

Segment invalidSegment() {
  Segment s;
  s.offset = kMaxOffset;
  return s;
}

}  // namespace obd::lsmt
