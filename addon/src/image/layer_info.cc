#include "image/layer_info.h"

#include <vector>

#include "format/lsmt/sealed.h"
#include "format/tar/tar_wrapper.h"
#include "io/local_file.h"

namespace obd {

namespace {

void countExtents(const std::vector<lsmt::Segment>& segs, LayerDescription& d) {
  for (const auto& s : segs) {
    ++d.extentCount;
    if (s.zeroed)
      ++d.zeroedCount;
    else
      d.dataBytes += uint64_t(s.length) * lsmt::kSector;
  }
}

Status describeRwIndex(ReadableFile& f, LayerDescription& d) {
  constexpr uint64_t kChunk = 4096;
  uint64_t records = (f.size() - lsmt::kHeaderSpace) / lsmt::kRecordSize;
  if (records > lsmt::kMaxRwIndexSize) return Corrupt(f.name() + ": too many index records");
  std::vector<uint8_t> buf(kChunk * lsmt::kRecordSize);
  lsmt::MutableIndex map;
  for (uint64_t done = 0; done < records;) {
    uint64_t n = std::min(records - done, kChunk);
    OBD_RETURN_IF_ERROR(f.read(buf.data(), n * lsmt::kRecordSize, lsmt::kHeaderSpace + done * lsmt::kRecordSize)
                            .wrap(f.name()));
    for (uint64_t i = 0; i < n; ++i) {
      lsmt::Segment s = lsmt::decodeSegment(&buf[i * lsmt::kRecordSize]);
      if (!s.invalid() && s.length > 0) map.insert(s);
    }
    done += n;
  }
  countExtents(map.snapshot(), d);
  return Status::Ok();
}

}  // namespace

Result<LayerDescription> describeLayer(const std::string& path) {
  auto local = LocalFile::open(path);
  if (!local.ok()) return local.status();
  LayerDescription d;
  std::shared_ptr<ReadableFile> file = local.take();
  d.fileSize = file->size();
  auto member = tar::detect(*file);
  if (!member.ok()) return member.status();
  if (member.value()) {
    d.formats.push_back("tar-wrapped");
    file = std::make_shared<tar::MemberFile>(file, *member.value());
  }
  uint8_t first[lsmt::kHeaderSpace] = {};
  size_t have = static_cast<size_t>(std::min<uint64_t>(file->size(), sizeof first));
  OBD_RETURN_IF_ERROR(file->read(first, have, 0).wrap(path));
  if (have >= 512 && zfile::looksLikeZFile(first, have)) {
    d.formats.push_back("zfile");
    auto info = zfile::inspect(*file);
    if (!info.ok()) return info.status();
    d.zfile = info.value();
    auto view = zfile::open(file, true);
    if (!view.ok()) return view.status();
    file = view.take();
    have = static_cast<size_t>(std::min<uint64_t>(file->size(), sizeof first));
    OBD_RETURN_IF_ERROR(file->read(first, have, 0).wrap(path));
  }
  if (have < lsmt::kHeaderSpace || !lsmt::looksLikeLsmt(first, have)) {
    d.formats.push_back("unknown");
    return d;
  }
  auto h = lsmt::decodeHeader(first, have);
  if (!h.ok()) return h.status().wrap(path);
  if (!h.value().isHeader()) return Corrupt(path + ": header: HEADER flag is clear");
  d.header = h.value();
  if (!h.value().isDataFile()) {
    d.formats.push_back("lsmt-rw-index");
    OBD_RETURN_IF_ERROR(describeRwIndex(*file, d));
    return d;
  }
  // A data file is sealed when its trailer says so (close_seal leaves the header unsealed).
  bool sealed = h.value().isSealed();
  if (!sealed && file->size() >= 2 * lsmt::kHeaderSpace) {
    std::vector<uint8_t> tb(lsmt::kHeaderSpace);
    OBD_RETURN_IF_ERROR(file->read(tb.data(), tb.size(), file->size() - lsmt::kHeaderSpace).wrap(path));
    auto t = lsmt::decodeHeader(tb.data(), tb.size());
    sealed = t.ok() && !t.value().isHeader() && t.value().isSealed();
  }
  if (!sealed) {
    d.formats.push_back(h.value().isSparseRw() ? "lsmt-rw-data-sparse" : "lsmt-rw-data");
    return d;
  }
  auto layer = lsmt::SealedLayer::open(file);
  if (!layer.ok()) return layer.status();
  d.formats.push_back("lsmt-sealed");
  d.trailer = layer.value()->trailer();
  countExtents(layer.value()->index().segments(), d);
  return d;
}

}  // namespace obd
