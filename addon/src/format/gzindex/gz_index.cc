#include "format/gzindex/gz_index.h"

#include <zlib.h>

#include <algorithm>
#include <cstring>

#include "util/crc32c.h"

namespace obd::gzindex {

namespace {

uint64_t le64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
uint32_t le32(const uint8_t* p) { return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24; }

// Inflates a whole zlib stream into exactly `want` bytes; anything else is corruption.
Status inflateExact(const uint8_t* in, size_t n, size_t want, std::vector<uint8_t>* out, const std::string& what) {
  out->assign(want, 0);
  z_stream z{};
  if (inflateInit(&z) != Z_OK) return Status(ENOMEM, what + ": inflateInit failed");
  z.next_in = const_cast<uint8_t*>(in);
  z.avail_in = static_cast<uInt>(n);
  z.next_out = out->data();
  z.avail_out = static_cast<uInt>(want);
  int r = inflate(&z, Z_FINISH);
  size_t got = want - z.avail_out;
  inflateEnd(&z);
  if (r != Z_STREAM_END) return Corrupt(what + ": compressed data is damaged (zlib " + std::to_string(r) + ")");
  if (got != want) return Corrupt(what + ": inflates to " + std::to_string(got) + " bytes, expected " + std::to_string(want));
  return Status::Ok();
}

}  // namespace

bool looksLikeGzip(const void* first, size_t n) {
  auto* p = static_cast<const uint8_t*>(first);
  return n >= 3 && p[0] == 0x1f && p[1] == 0x8b && p[2] == 8;
}

Result<Index> Index::parse(std::vector<uint8_t> bytes, uint64_t expectGzipSize, const std::string& name) {
  auto bad = [&](const std::string& what) { return Corrupt(name + ": gzip index: " + what); };
  const uint64_t fileSize = bytes.size();
  if (fileSize < kHeaderSize) return bad("file of " + std::to_string(fileSize) + " bytes is shorter than its header");
  const uint8_t* h = bytes.data();
  if (std::memcmp(h, "ddgzidx", 7) != 0) return bad("bad magic");
  if (h[8] != 1) return bad("major version " + std::to_string(h[8]) + " (only 1 is known)");
  uint8_t algo = h[10];
  if (algo > 1) return bad("window compression " + std::to_string(algo) + " (0 raw, 1 zlib)");
  uint32_t crc = le32(h + 329);
  // Header checksum: CRC-32C of bytes 0..328 as a raw register from 0; the standard CRC-32C form
  // is accepted too (which one upstream writes is not confirmed, docs/formats.md).
  if (crc != crc32cUpdate(0, h, 329) && crc != ~crc32cUpdate(~0u, h, 329)) return bad("header checksum mismatch");
  int32_t window = static_cast<int32_t>(le32(h + 17));
  int32_t entrySize = static_cast<int32_t>(le32(h + 21));
  if (window != static_cast<int32_t>(kWindow)) return bad("window size " + std::to_string(window) + " (expected 32768)");
  if (entrySize != static_cast<int32_t>(kEntrySize)) return bad("entry size " + std::to_string(entrySize) + " (expected 29)");
  uint64_t num = le64(h + 25), gzSize = le64(h + 33), idxSize = le64(h + 41), usize = le64(h + 49);
  uint64_t start = le64(h + 313), areaLen = le64(h + 321);
  if (idxSize != fileSize) return bad("records a file size of " + std::to_string(idxSize) + ", file has " + std::to_string(fileSize));
  if (expectGzipSize && gzSize != expectGzipSize)
    return bad("indexes a blob of " + std::to_string(gzSize) + " bytes, the blob has " + std::to_string(expectGzipSize));
  if (num == 0 || num > kMaxEntries) return bad(std::to_string(num) + " access points");
  if (usize > (uint64_t(1) << 50)) return bad("uncompressed size " + std::to_string(usize) + " is absurd");
  if (start < kHeaderSize || start > fileSize || areaLen != fileSize - start)
    return bad("entry area [" + std::to_string(start) + ", +" + std::to_string(areaLen) + ") does not end the file");
  std::vector<uint8_t> table;
  if (algo == 0) {
    if (areaLen != num * kEntrySize) return bad("entry area of " + std::to_string(areaLen) + " bytes for " + std::to_string(num) + " entries");
    table.assign(bytes.begin() + static_cast<long>(start), bytes.end());
  } else {
    OBD_RETURN_IF_ERROR(inflateExact(h + start, areaLen, num * kEntrySize, &table, name + ": gzip index: entry table"));
  }
  Index ix;
  ix.points_.reserve(num);
  for (uint64_t i = 0; i < num; ++i) {
    const uint8_t* e = &table[i * kEntrySize];
    AccessPoint p{le64(e), le64(e + 8), le64(e + 16), e[24], le32(e + 25)};
    std::string at = "access point " + std::to_string(i) + ": ";
    if (i == 0 && p.dePos != 0) return bad(at + "first point is not at uncompressed offset 0");
    if (i > 0 && (p.dePos <= ix.points_.back().dePos || p.enPos <= ix.points_.back().enPos)) return bad(at + "positions not ascending");
    if (p.dePos > usize || (p.dePos == usize && usize > 0)) return bad(at + "beyond the uncompressed size");
    if (p.enPos == 0 || p.enPos >= gzSize) return bad(at + "compressed offset " + std::to_string(p.enPos) + " outside the blob");
    if (p.bits > 7) return bad(at + "bit offset " + std::to_string(p.bits));
    if (p.winPos < kHeaderSize || p.winPos > start || p.winLen > start - p.winPos) return bad(at + "window outside the window area");
    if (p.winLen == 0 || (algo == 0 && p.winLen != kWindow)) return bad(at + "window of " + std::to_string(p.winLen) + " bytes");
    if (i > 0 && p.dePos - ix.points_.back().dePos > kMaxSpanBytes) return bad(at + "span longer than 64 MiB");
    ix.points_.push_back(p);
  }
  if (usize - ix.points_.back().dePos > kMaxSpanBytes) return bad("last span longer than 64 MiB");
  ix.name_ = name;
  ix.gzipSize_ = gzSize;
  ix.uncompressedSize_ = usize;
  ix.algo_ = algo;
  ix.bytes_ = std::move(bytes);
  return ix;
}

size_t Index::pointFor(uint64_t off) const {
  auto it = std::upper_bound(points_.begin(), points_.end(), off, [](uint64_t o, const AccessPoint& p) { return o < p.dePos; });
  return it == points_.begin() ? 0 : static_cast<size_t>(it - points_.begin() - 1);
}

uint64_t Index::compressedEnd(size_t i) const {
  // The next point's byte before enPos holds its first bits; one extra byte covers it.
  return i + 1 < points_.size() ? std::min(points_[i + 1].enPos + 1, gzipSize_) : gzipSize_;
}

Status Index::window(size_t i, std::vector<uint8_t>* out) const {
  const AccessPoint& p = points_[i];
  const uint8_t* w = bytes_.data() + p.winPos;
  if (algo_ == 0) {
    out->assign(w, w + kWindow);
    return Status::Ok();
  }
  return inflateExact(w, p.winLen, kWindow, out, name_ + ": gzip index: window of access point " + std::to_string(i));
}

}  // namespace obd::gzindex
