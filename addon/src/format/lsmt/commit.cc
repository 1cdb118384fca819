#include "format/lsmt/commit.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "util/fd_io.h"

namespace obd::lsmt {

namespace {

constexpr size_t kIndexAlignEntries = 4096 / kRecordSize;  // index padded to whole 4 KiB blocks
constexpr size_t kCopyChunk = 1 << 20;

// Where the committed blob goes: a plain file or a ZFile writer.
class Sink {
 public:
  virtual ~Sink() = default;
  virtual Status append(const void* p, size_t n) = 0;
  virtual Status finish() = 0;
};

class FileSink : public Sink {
 public:
  static Result<std::unique_ptr<Sink>> create(const std::string& path) {
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (!fd.valid()) return SysError(path + ": create");
    return std::unique_ptr<Sink>(new FileSink(path, std::move(fd)));
  }
  Status append(const void* p, size_t n) override { return writeAll(fd_.get(), p, n, path_); }
  Status finish() override {
    if (::fsync(fd_.get()) != 0) return SysError(path_ + ": fsync");
    fd_.reset();
    return Status::Ok();
  }

 private:
  FileSink(std::string path, UniqueFd fd) : path_(std::move(path)), fd_(std::move(fd)) {}
  std::string path_;
  UniqueFd fd_;
};

class ZFileSink : public Sink {
 public:
  explicit ZFileSink(std::unique_ptr<zfile::Writer> w) : w_(std::move(w)) {}
  Status append(const void* p, size_t n) override { return w_->append(p, n); }
  Status finish() override { return w_->finish(); }

 private:
  std::unique_ptr<zfile::Writer> w_;
};

// Validated before the output is touched, so bad options never clobber an existing file.
Result<HeaderTrailer> buildHeader(const WritableLayer& src, const CommitOptions& opts) {
  HeaderTrailer h;
  h.flags = kFlagHeader | kFlagData | kFlagSealed;
  h.virtualSize = src.virtualSize();
  OBD_RETURN_IF_ERROR(setUuidField(h.uuid, opts.uuid).wrap("uuid"));
  if (opts.parentUuid)
    OBD_RETURN_IF_ERROR(setUuidField(h.parentUuid, *opts.parentUuid).wrap("parent uuid"));
  else
    std::memcpy(h.parentUuid, src.header().parentUuid, kUuidField);
  OBD_RETURN_IF_ERROR(setUserTag(h, opts.userTag));
  return h;
}

Status writeBlob(const WritableLayer& src, Sink& out, const HeaderTrailer& h, const std::vector<Segment>& targetRuns,
                 CommitStats& stats) {
  std::vector<uint8_t> block(kHeaderSpace);
  encodeHeader(h, block.data());
  OBD_RETURN_IF_ERROR(out.append(block.data(), block.size()));

  std::vector<Segment> segs = src.segments();
  if (!targetRuns.empty()) {
    MutableIndex mi;
    for (Segment s : segs) {
      s.tag = 0;
      mi.insert(s);
    }
    for (Segment s : targetRuns) {
      s.tag = 1;
      s.zeroed = false;
      mi.insert(s);
    }
    segs = mi.snapshot();
  }
  std::vector<char> buf(kCopyChunk);
  uint64_t cur = kHeaderSpace / kSector;
  for (Segment& s : segs) {
    if (s.tag == 1) continue;  // lives in the target stream
    uint64_t from = s.moffset * kSector;
    s.moffset = cur;
    s.tag = 0;
    if (s.zeroed) continue;
    for (uint64_t left = uint64_t(s.length) * kSector; left > 0;) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(left, buf.size()));
      OBD_RETURN_IF_ERROR(src.readData(buf.data(), n, from));
      OBD_RETURN_IF_ERROR(out.append(buf.data(), n));
      from += n;
      left -= n;
    }
    cur += s.length;
  }
  std::vector<Segment> index = compress(segs);
  stats.extents = index.size();
  size_t padded = (index.size() + kIndexAlignEntries - 1) / kIndexAlignEntries * kIndexAlignEntries;
  std::vector<uint8_t> rec(padded * kRecordSize);
  Segment pad = invalidSegment();
  for (size_t i = 0; i < padded; ++i) encodeSegment(i < index.size() ? index[i] : pad, &rec[i * kRecordSize]);
  OBD_RETURN_IF_ERROR(out.append(rec.data(), rec.size()));

  HeaderTrailer t = h;
  t.flags = kFlagData | kFlagSealed;
  t.indexOffset = cur * kSector;
  t.indexSize = padded;
  encodeHeader(t, block.data());
  OBD_RETURN_IF_ERROR(out.append(block.data(), block.size()));
  stats.indexEntries = padded;
  stats.bytes = t.indexOffset + rec.size() + kHeaderSpace;
  return out.finish();
}

}  // namespace

Result<CommitStats> commit(const WritableLayer& src, const std::string& outPath, const CommitOptions& opts) {
  auto header = buildHeader(src, opts);
  if (!header.ok()) return header.status();
  std::unique_ptr<Sink> sink;
  if (opts.zfile) {
    auto w = zfile::Writer::create(outPath, *opts.zfile);
    if (!w.ok()) return w.status();
    sink.reset(new ZFileSink(w.take()));
  } else {
    auto f = FileSink::create(outPath);
    if (!f.ok()) return f.status();
    sink = f.take();
  }
  CommitStats stats;
  for (const Segment& r : opts.targetRuns) {
    if (r.length == 0 || r.length > kMaxLength || r.offset + r.length > kMaxOffset || r.moffset + r.length >= kTargetBit)
      return InvalidArg("commit: target run " + std::to_string(r.offset) + "+" + std::to_string(r.length) + " -> " +
                        std::to_string(r.moffset) + " is out of range");
  }
  Status st = writeBlob(src, *sink, header.value(), opts.targetRuns, stats);
  sink.reset();
  if (!st.ok()) {
    ::unlink(outPath.c_str());
    return st.wrap("commit " + src.dataPath() + " -> " + outPath);
  }
  return stats;
}

}  // namespace obd::lsmt
