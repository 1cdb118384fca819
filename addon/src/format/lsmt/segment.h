// LSMT index records (docs/formats.md, LSMT): a 16-byte SegmentMapping maps a run of 512-byte sectors of the
// virtual disk to a run of sectors inside a layer file, or marks it as zeroed.
#pragma once

#include <cstddef>
#include <cstdint>

namespace obd::lsmt {

constexpr uint64_t kSector = 512;
constexpr uint64_t kMaxOffset = (uint64_t(1) << 50) - 1;  // also the INVALID marker of padding entries
constexpr uint32_t kMaxLength = (1u << 14) - 1;           // 16383 sectors per mapping
constexpr uint64_t kMaxMOffset = (uint64_t(1) << 55) - 1;
constexpr size_t kRecordSize = 16;
// In memory only: marks a warp layer's mapping into its target stream (moffset is a target sector).
constexpr uint64_t kTargetBit = uint64_t(1) << 54;
constexpr uint64_t kMaxIoSize = 4 << 20;  // writes are split into pieces of at most this many bytes

struct Segment {
  uint64_t offset = 0;   // virtual address, sectors
  uint32_t length = 0;   // sectors
  uint64_t moffset = 0;  // address inside the layer file, sectors
  bool zeroed = false;
  uint8_t tag = 0;       // which layer of a stack the data lives in (runtime only)

  uint64_t end() const { return offset + length; }
  uint64_t mend() const { return zeroed ? moffset : moffset + length; }
  bool invalid() const { return offset == kMaxOffset; }
  // Drops the first n sectors (n < length); data moves along, zeroed extents keep their moffset.
  void trimFront(uint64_t n) {
    offset += n;
    length -= static_cast<uint32_t>(n);
    if (!zeroed) moffset += n;
  }
};

Segment decodeSegment(const uint8_t* rec);
void encodeSegment(const Segment& s, uint8_t* rec);  // tag is written as given
Segment invalidSegment();

}  // namespace obd::lsmt
