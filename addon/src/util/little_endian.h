// Little-endian integers of the on-disk formats (LSMT headers and index records, ZFile headers and
// jump tables), independent of the host's byte order.
#pragma once

#include <cstddef>
#include <cstdint>

namespace obd {

inline uint64_t loadLe(const uint8_t* p, size_t bytes) {
  uint64_t v = 0;
  for (size_t i = bytes; i-- > 0;) v = (v << 8) | p[i];
  return v;
}

inline void storeLe(uint8_t* p, uint64_t v, size_t bytes) {
  for (size_t i = 0; i < bytes; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}

}  // namespace obd
