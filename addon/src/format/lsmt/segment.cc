#include "format/lsmt/segment.h"

#include <cstring>

#include "util/little_endian.h"

namespace obd::lsmt {

Segment decodeSegment(const uint8_t* rec) {
  uint64_t w0 = loadLe(rec, 8), w1 = loadLe(rec + 8, 8);
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
  storeLe(rec, w0, 8);
  storeLe(rec + 8, w1, 8);
}

Segment invalidSegment() {
  Segment s;
  s.offset = kMaxOffset;
  return s;
}

}  // namespace obd::lsmt
