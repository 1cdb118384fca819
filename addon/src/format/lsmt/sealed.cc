#include "format/lsmt/sealed.h"

#include <algorithm>
#include <vector>

namespace obd::lsmt {

namespace {

constexpr size_t kIndexChunk = 64 * 1024;  // records decoded per read while loading

Status checkEntry(const Segment& s, size_t i, uint64_t dataEndSector) {
  auto bad = [&](const std::string& what) {
    return Corrupt("index entry " + std::to_string(i) + " (sector " + std::to_string(s.offset) + "+" +
                   std::to_string(s.length) + " -> " + std::to_string(s.moffset) + "): " + what);
  };
  if (s.length == 0) return bad("length 0");
  if (s.moffset < kHeaderSpace / kSector) return bad("data offset inside the header");
  if (s.zeroed ? s.moffset > dataEndSector : s.moffset + s.length > dataEndSector)
    return bad("data offset beyond the index offset (" + std::to_string(dataEndSector) + " sectors)");
  return Status::Ok();
}

// Warp (TurboOCI meta) layers: the smallest tag present marks blocks stored in this blob, the next
// one blocks of the target stream, whose moffset is a sector of the target (any value).
Status resolveWarpTags(std::vector<Segment>& segs, uint64_t dataEnd) {
  uint8_t base = 255;
  for (const Segment& s : segs) base = std::min(base, s.tag);
  for (size_t i = 0; i < segs.size(); ++i) {
    Segment& s = segs[i];
    uint8_t kind = static_cast<uint8_t>(s.tag - base);
    s.tag = 0;
    if (kind == 0) {
      OBD_RETURN_IF_ERROR(checkEntry(s, i, dataEnd));
    } else if (kind == 1) {
      if (s.length == 0) return Corrupt("index entry " + std::to_string(i) + ": length 0");
      if (s.zeroed) continue;
      if (s.moffset + s.length >= kTargetBit)
        return Corrupt("index entry " + std::to_string(i) + ": target sector " + std::to_string(s.moffset) + " is beyond what can be addressed");
      s.moffset |= kTargetBit;
    } else {
      return Corrupt("index entry " + std::to_string(i) + ": tag " + std::to_string(kind + base) + " (a warp layer has two)");
    }
  }
  return Status::Ok();
}

Result<std::vector<Segment>> loadIndex(ReadableFile& f, const HeaderTrailer& t, bool warp) {
  std::vector<Segment> segs;
  // Every entry is checked before it is kept, so reserve only what the file really holds.
  segs.reserve(static_cast<size_t>(t.indexSize));
  std::vector<uint8_t> buf(std::min<uint64_t>(t.indexSize, kIndexChunk) * kRecordSize);
  uint64_t dataEnd = t.indexOffset / kSector;
  for (uint64_t done = 0; done < t.indexSize;) {
    uint64_t n = std::min<uint64_t>(t.indexSize - done, kIndexChunk);
    OBD_RETURN_IF_ERROR(f.read(buf.data(), n * kRecordSize, t.indexOffset + done * kRecordSize)
                            .wrap("reading index at byte " + std::to_string(t.indexOffset + done * kRecordSize)));
    for (uint64_t i = 0; i < n; ++i) {
      Segment s = decodeSegment(&buf[i * kRecordSize]);
      if (s.invalid()) continue;
      if (!warp) {
        s.tag = 0;  // runtime field; upstream-made blobs sometimes carry garbage here
        OBD_RETURN_IF_ERROR(checkEntry(s, done + i, dataEnd));
      }
      segs.push_back(s);
    }
    done += n;
  }
  if (warp) OBD_RETURN_IF_ERROR(resolveWarpTags(segs, dataEnd));
  OBD_RETURN_IF_ERROR(SegmentIndex::checkSorted(segs));
  segs.shrink_to_fit();
  return segs;
}

Result<HeaderTrailer> readBlock(ReadableFile& f, uint64_t off, const char* which) {
  std::vector<uint8_t> block(kHeaderSpace);
  OBD_RETURN_IF_ERROR(f.read(block.data(), block.size(), off).wrap(which));
  auto ht = decodeHeader(block.data(), block.size());
  if (!ht.ok()) return ht.status().wrap(which);
  return ht;
}

Status checkTrailer(const HeaderTrailer& t, uint64_t trailerOffset) {
  if (t.isHeader()) return Corrupt("trailer: HEADER flag is set (flags " + std::to_string(t.flags) + ")");
  if (!t.isDataFile()) return Corrupt("trailer: not a data file (TYPE flag clear)");
  if (!t.isSealed()) return Corrupt("trailer: not sealed (SEALED flag clear)");
  if (t.indexSize > kMaxRoIndexSize)
    return Corrupt("trailer: index_size " + std::to_string(t.indexSize) + " exceeds the limit of " +
                   std::to_string(kMaxRoIndexSize));
  if (t.indexOffset < kHeaderSpace || t.indexOffset > trailerOffset)
    return Corrupt("trailer: index_offset " + std::to_string(t.indexOffset) + " outside [4096, " +
                   std::to_string(trailerOffset) + "]");
  if (t.indexSize * kRecordSize > trailerOffset - t.indexOffset)
    return Corrupt("trailer: index of " + std::to_string(t.indexSize) + " entries at " + std::to_string(t.indexOffset) +
                   " runs past the trailer at " + std::to_string(trailerOffset));
  if (t.virtualSize > kMaxVirtualSize)
    return Corrupt("trailer: virtual_size " + std::to_string(t.virtualSize) + " is beyond what LSMT can address");
  return Status::Ok();
}

}  // namespace

bool looksLikeLsmt(const void* first, size_t n) { return hasMagic(static_cast<const uint8_t*>(first), n); }

Result<std::shared_ptr<SealedLayer>> SealedLayer::open(std::shared_ptr<ReadableFile> file, std::shared_ptr<ReadableFile> target) {
  const std::string& name = file->name();
  uint64_t size = file->size();
  if (size < 2 * kHeaderSpace)
    return Corrupt(name + ": " + std::to_string(size) + " bytes is too short for an LSMT layer (header + trailer)");
  std::shared_ptr<SealedLayer> layer(new SealedLayer());
  auto h = readBlock(*file, 0, "header");
  if (!h.ok()) return h.status().wrap(name);
  if (!h.value().isHeader()) return Corrupt(name + ": header: HEADER flag is clear");
  uint64_t trailerOffset = size - kHeaderSpace;
  auto t = readBlock(*file, trailerOffset, "trailer");
  if (!t.ok()) return t.status().wrap(name);
  OBD_RETURN_IF_ERROR(checkTrailer(t.value(), trailerOffset).wrap(name));
  auto segs = loadIndex(*file, t.value(), target != nullptr);
  if (!segs.ok()) return segs.status().wrap(name);
  layer->header_ = h.value();
  layer->trailer_ = t.value();
  layer->index_ = SegmentIndex(segs.take());
  layer->file_ = std::move(file);
  layer->target_ = std::move(target);
  return layer;
}

}  // namespace obd::lsmt
