#include "format/lsmt/index.h"

#include <algorithm>

#include "format/lsmt/header.h"

namespace obd::lsmt {

namespace {

void emitSegment(const Segment& s, uint64_t start, uint64_t end, const PieceFn& fn) {
  uint64_t a = std::max(start, s.offset), b = std::min(end, s.end());
  Piece p{a, b - a, s.zeroed ? Piece::kZero : Piece::kData, s.zeroed ? s.moffset : s.moffset + (a - s.offset), s.tag};
  fn(p);
}

// Walks `begin..end` of sorted segments over [start, end) emitting holes between them.
template <typename It, typename Get>
void walk(It it, It last, Get get, uint64_t start, uint64_t end, const PieceFn& fn) {
  uint64_t pos = start;
  for (; it != last && pos < end; ++it) {
    const Segment& s = get(it);
    if (s.offset >= end) break;
    if (s.end() <= pos) continue;
    if (s.offset > pos) {
      fn(Piece{pos, s.offset - pos, Piece::kHole, 0, 0});
      pos = s.offset;
    }
    emitSegment(s, pos, end, fn);
    pos = std::min(end, s.end());
  }
  if (pos < end) fn(Piece{pos, end - pos, Piece::kHole, 0, 0});
}

}  // namespace

Status SegmentIndex::checkSorted(const std::vector<Segment>& segs) {
  for (size_t i = 0; i < segs.size(); ++i) {
    if (segs[i].length == 0) return Corrupt("index entry " + std::to_string(i) + " has length 0");
    if (i > 0 && segs[i - 1].end() > segs[i].offset)
      return Corrupt("index entries " + std::to_string(i - 1) + " and " + std::to_string(i) +
                     " are out of order or overlap (sector " + std::to_string(segs[i].offset) + ")");
  }
  return Status::Ok();
}

void SegmentIndex::lookup(uint64_t start, uint64_t end, const PieceFn& fn) const {
  auto it = std::upper_bound(segs_.begin(), segs_.end(), start,
                             [](uint64_t v, const Segment& s) { return v < s.end(); });
  walk(it, segs_.end(), [](auto i) -> const Segment& { return *i; }, start, end, fn);
}

// One descent of the tree: every change after it is placed with the position in hand (a writable
// layer's map holds one entry per random write, so each extra descent is a string of cache misses).
void MutableIndex::insert(const Segment& s) {
  uint64_t a = s.offset, b = s.end();
  auto it = map_.lower_bound(a);
  if (it != map_.begin()) {
    auto prev = std::prev(it);
    Segment p = prev->second;
    if (p.end() > a) {  // overlaps from the left: keep its head, maybe its tail
      prev->second.length = static_cast<uint32_t>(a - p.offset);
      if (p.end() > b) {  // s lies inside p: nothing else overlaps it
        Segment tail = p;
        tail.trimFront(b - p.offset);
        auto t = map_.emplace_hint(it, tail.offset, tail);
        map_.emplace_hint(t, a, s);
        return;
      }
    }
  }
  while (it != map_.end() && it->second.offset < b) {
    Segment cur = it->second;
    it = map_.erase(it);
    if (cur.end() > b) {
      cur.trimFront(b - cur.offset);
      it = map_.emplace_hint(it, cur.offset, cur);
      break;
    }
  }
  map_.emplace_hint(it, a, s);
}

void MutableIndex::lookup(uint64_t start, uint64_t end, const PieceFn& fn) const {
  auto it = map_.upper_bound(start);
  if (it != map_.begin()) --it;
  walk(it, map_.end(), [](auto i) -> const Segment& { return i->second; }, start, end, fn);
}

std::vector<Segment> MutableIndex::snapshot() const {
  std::vector<Segment> out;
  out.reserve(map_.size());
  for (auto& kv : map_) out.push_back(kv.second);
  return out;
}

namespace {

struct Merger {
  const std::vector<const SegmentIndex*>& layers;
  std::vector<Segment> out;
  bool overflow = false;

  // Fills [start, end) from layer `level` downwards (levels count from the top).
  void fill(size_t level, uint64_t start, uint64_t end) {
    if (overflow || level >= layers.size()) return;
    size_t pos = layers.size() - 1 - level;
    layers[pos]->lookup(start, end, [&](const Piece& p) {
      if (p.kind == Piece::kHole) {
        fill(level + 1, p.offset, p.offset + p.length);
        return;
      }
      if (out.size() >= kMaxRwIndexSize) {
        overflow = true;
        return;
      }
      Segment s;
      s.offset = p.offset;
      s.length = static_cast<uint32_t>(p.length);
      s.moffset = p.moffset;
      s.zeroed = p.kind == Piece::kZero;
      s.tag = static_cast<uint8_t>(pos);
      out.push_back(s);
    });
  }
};

}  // namespace

Result<std::vector<Segment>> mergeLayers(const std::vector<const SegmentIndex*>& layers) {
  if (layers.size() > kMaxStackLayers)
    return InvalidArg("stack of " + std::to_string(layers.size()) + " layers exceeds the limit of " +
                      std::to_string(kMaxStackLayers));
  Merger m{layers, {}, false};
  m.fill(0, 0, kMaxOffset);
  if (m.overflow) return Status(E2BIG, "merged index exceeds " + std::to_string(kMaxRwIndexSize) + " entries");
  return std::move(m.out);
}

std::vector<Segment> compress(const std::vector<Segment>& segs) {
  std::vector<Segment> out;
  out.reserve(segs.size());
  for (const Segment& s : segs) {
    if (!out.empty()) {
      Segment& a = out.back();
      if (a.end() == s.offset && a.mend() == s.moffset && a.zeroed == s.zeroed && a.tag == s.tag &&
          a.length + s.length < kMaxLength) {
        a.length += s.length;
        continue;
      }
    }
    out.push_back(s);
  }
  return out;
}

}  // namespace obd::lsmt
