// In-memory LSMT indexes: a sorted immutable one (sealed layers, merged stacks) and a mutable one
// where a newer mapping overrides the overlapped parts of older ones (writable layers).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <vector>

#include "format/lsmt/segment.h"
#include "util/status.h"

namespace obd::lsmt {

// One run of a lookup: a hole (no layer maps it), a zeroed extent, or data at moffset of layer `tag`.
struct Piece {
  enum Kind { kHole, kZero, kData };
  uint64_t offset;  // sectors
  uint64_t length;  // sectors
  Kind kind;
  uint64_t moffset;
  uint8_t tag;
};
using PieceFn = std::function<void(const Piece&)>;

// Sorted, non-overlapping segments.
class SegmentIndex {
 public:
  SegmentIndex() = default;
  explicit SegmentIndex(std::vector<Segment> segs) : segs_(std::move(segs)) {}
  // Checks the ordering rule of LSMT indexes (ascending, non-overlapping, non-empty).
  static Status checkSorted(const std::vector<Segment>& segs);
  // Emits pieces covering exactly [start, end) in order, holes included.
  void lookup(uint64_t start, uint64_t end, const PieceFn& fn) const;
  const std::vector<Segment>& segments() const { return segs_; }
  size_t size() const { return segs_.size(); }

 private:
  std::vector<Segment> segs_;
};

class MutableIndex {
 public:
  // Newer wins over the overlapped parts of what is there.
  void insert(const Segment& s);
  void lookup(uint64_t start, uint64_t end, const PieceFn& fn) const;
  std::vector<Segment> snapshot() const;
  size_t size() const { return map_.size(); }

 private:
  std::map<uint64_t, Segment> map_;  // keyed by offset
};

// Merges layer indexes (bottom-most first) into one: top wins, zeroed extents mask lower data.
// Each output segment's tag is the position of its layer in `layers`. Fails beyond kMaxRwIndexSize.
Result<std::vector<Segment>> mergeLayers(const std::vector<const SegmentIndex*>& layers);

// Commit-time compaction: merges neighbours whose data is contiguous.
std::vector<Segment> compress(const std::vector<Segment>& segs);

}  // namespace obd::lsmt
