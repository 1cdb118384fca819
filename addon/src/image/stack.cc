#include "image/stack.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <mutex>

#include "format/lsmt/sealed.h"
#include "format/lsmt/writable.h"
#include "format/tar/tar_wrapper.h"
#include "format/zfile/zfile.h"
#include "util/fd_io.h"

namespace obd {

using lsmt::kSector;
using lsmt::Piece;

namespace {

// Completion of one device read fanned out over several lower reads: the callback runs once, when
// the last piece finishes, with the first error seen.
class FanOut {
 public:
  explicit FanOut(IoCallback cb) : cb_(std::move(cb)) {}
  void add() { pending_.fetch_add(1, std::memory_order_relaxed); }
  void done(const Status& st) {
    if (!st.ok()) {
      std::lock_guard<std::mutex> lock(mu_);
      if (first_.ok()) first_ = st;
    }
    if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      Status result;
      {
        std::lock_guard<std::mutex> lock(mu_);
        result = first_;
      }
      cb_(result);
    }
  }

 private:
  IoCallback cb_;
  std::atomic<int> pending_{1};  // the issuer holds one reference until all pieces are issued
  std::mutex mu_;
  Status first_;
};

}  // namespace

Result<std::shared_ptr<ReadableFile>> unwrapLayerBlob(std::shared_ptr<ReadableFile> raw, bool verifyZFileBlocks) {
  auto member = tar::detect(*raw);
  if (!member.ok()) return member.status();
  std::shared_ptr<ReadableFile> file = raw;
  if (member.value()) file = std::make_shared<tar::MemberFile>(raw, *member.value());
  uint8_t first[512] = {};
  if (file->size() >= sizeof first) {
    OBD_RETURN_IF_ERROR(file->read(first, sizeof first, 0).wrap(file->name()));
    if (zfile::looksLikeZFile(first, sizeof first)) {
      auto z = zfile::open(file, verifyZFileBlocks);
      if (!z.ok()) return z.status();
      file = z.take();
    }
  }
  return file;
}

Result<std::unique_ptr<BlockDevice>> openStack(const StackSpec& spec) {
  auto s = LayerStack::open(spec);
  if (!s.ok()) return s.status();
  return std::unique_ptr<BlockDevice>(s.take());
}

LayerStack::~LayerStack() = default;

Result<std::unique_ptr<LayerStack>> LayerStack::open(const StackSpec& spec) {
  if (spec.lowers.size() > lsmt::kMaxStackLayers)
    return InvalidArg("stack of " + std::to_string(spec.lowers.size()) + " lower layers exceeds the limit of " +
                      std::to_string(lsmt::kMaxStackLayers));
  if (spec.upperData.empty() != spec.upperIndex.empty())
    return InvalidArg("writable layer needs both a data and an index file");
  if (spec.lowers.empty() && spec.upperData.empty()) return InvalidArg("empty stack: no lower and no upper layer");
  std::unique_ptr<LayerStack> st(new LayerStack());
  if (!spec.targets.empty() && spec.targets.size() != spec.lowers.size())
    return InvalidArg("stack: " + std::to_string(spec.targets.size()) + " targets for " + std::to_string(spec.lowers.size()) + " lowers");
  std::vector<const lsmt::SegmentIndex*> indexes;
  for (size_t i = 0; i < spec.lowers.size(); ++i) {
    auto file = unwrapLayerBlob(spec.lowers[i], spec.verifyZFileBlocks);
    if (!file.ok()) return file.status();
    auto layer = lsmt::SealedLayer::open(file.take(), spec.targets.empty() ? nullptr : spec.targets[i]);
    if (!layer.ok()) return layer.status();
    st->lowers_.push_back(layer.take());
    indexes.push_back(&st->lowers_.back()->index());
  }
  auto merged = lsmt::mergeLayers(indexes);
  if (!merged.ok()) return merged.status();
  st->merged_ = lsmt::SegmentIndex(merged.take());
  for (auto& l : st->lowers_) l->dropIndex();
  for (auto it = st->lowers_.rbegin(); it != st->lowers_.rend() && st->size_ == 0; ++it)
    st->size_ = (*it)->trailer().virtualSize / kSector * kSector;  // a device is whole sectors
  if (!spec.upperData.empty()) {
    auto up = lsmt::WritableLayer::open(spec.upperData, spec.upperIndex);
    if (!up.ok()) return up.status();
    st->upper_ = up.take();
    if (st->upper_->virtualSize() == 0 && st->size_ > 0)
      OBD_RETURN_IF_ERROR(st->upper_->setVirtualSize(st->size_));
    if (st->upper_->virtualSize() > 0) st->size_ = st->upper_->virtualSize();
  }
  return st;
}

Status LayerStack::checkIo(uint64_t off, uint64_t n, const char* op) const {
  if (off % kSector || n % kSector)
    return InvalidArg(std::string(op) + " at " + std::to_string(off) + " length " + std::to_string(n) +
                      " is not 512-byte aligned");
  if (off > size_ || n > size_ - off)
    return InvalidArg(std::string(op) + " at " + std::to_string(off) + " length " + std::to_string(n) +
                      " is beyond the end of the device (" + std::to_string(size_) + " bytes)");
  return Status::Ok();
}

void LayerStack::readAsync(void* buf, size_t n, uint64_t off, IoCallback cb) {
  Status st = checkIo(off, n, "read");
  if (!st.ok()) {
    cb(st);
    return;
  }
  auto* base = static_cast<char*>(buf);
  auto fan = std::make_shared<FanOut>(std::move(cb));
  uint8_t upperTag = static_cast<uint8_t>(lowers_.size());
  std::vector<Piece> pieces;
  auto fromLowers = [&](const Piece& p) { pieces.push_back(p); };
  uint64_t start = off / kSector, end = (off + n) / kSector;
  if (upper_) {
    upper_->lookup(start, end, [&](const Piece& p) {
      if (p.kind == Piece::kHole) {
        merged_.lookup(p.offset, p.offset + p.length, fromLowers);
      } else {
        Piece q = p;
        q.tag = upperTag;
        pieces.push_back(q);
      }
    });
  } else {
    merged_.lookup(start, end, fromLowers);
  }
  for (const Piece& p : pieces) {
    char* dst = base + (p.offset * kSector - off);
    size_t len = static_cast<size_t>(p.length * kSector);
    if (p.kind != Piece::kData) {
      std::memset(dst, 0, len);
    } else if (p.tag == upperTag && upper_) {
      Status rs = upper_->readData(dst, len, p.moffset * kSector);
      if (!rs.ok()) {
        fan->add();
        fan->done(rs);
      }
    } else {
      fan->add();
      const auto& layer = *lowers_[p.tag];
      if ((p.moffset & lsmt::kTargetBit) && layer.target())
        layer.target()->readAsync(dst, len, (p.moffset & ~lsmt::kTargetBit) * kSector, [fan](Status s) { fan->done(s); });
      else
        layer.fileRef()->readAsync(dst, len, p.moffset * kSector, [fan](Status s) { fan->done(s); });
    }
  }
  fan->done(Status::Ok());
}

Status LayerStack::write(const void* buf, size_t n, uint64_t off) {
  if (!upper_) return Status(EROFS, "read-only stack: no writable layer");
  OBD_RETURN_IF_ERROR(checkIo(off, n, "write"));
  return upper_->write(buf, n, off);
}

Status LayerStack::discard(uint64_t off, uint64_t n) {
  if (!upper_) return Status(EROFS, "read-only stack: no writable layer");
  OBD_RETURN_IF_ERROR(checkIo(off, n, "discard"));
  return upper_->discard(off, n);
}

Status LayerStack::flush() { return upper_ ? upper_->fsync() : Status::Ok(); }

std::vector<StackExtent> LayerStack::extents() const {
  std::vector<StackExtent> out;
  int upperLayer = static_cast<int>(lowers_.size());
  auto add = [&](const Piece& p, int layer) {
    if (p.kind == Piece::kHole) return;
    out.push_back(StackExtent{p.offset * kSector, p.length * kSector, p.kind == Piece::kZero, layer});
  };
  auto lower = [&](const Piece& p) { add(p, p.tag); };
  uint64_t end = (size_ + kSector - 1) / kSector;
  if (upper_) {
    upper_->lookup(0, end, [&](const Piece& p) {
      if (p.kind == Piece::kHole)
        merged_.lookup(p.offset, p.offset + p.length, lower);
      else
        add(p, upperLayer);
    });
  } else {
    merged_.lookup(0, end, lower);
  }
  return out;
}

Result<uint64_t> exportRaw(LayerStack& stack, const std::string& outPath) {
  constexpr size_t kChunk = 1 << 20;
  UniqueFd fd(::open(outPath.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!fd.valid()) return SysError(outPath + ": create");
  auto fail = [&](Status st) {
    fd.reset();
    ::unlink(outPath.c_str());
    return st;
  };
  if (::ftruncate(fd.get(), static_cast<off_t>(stack.size())) != 0) return fail(SysError(outPath + ": truncate"));
  std::vector<char> buf(kChunk);
  std::vector<char> zero(kChunk, 0);
  uint64_t written = 0;
  for (const StackExtent& e : stack.extents()) {
    if (e.zeroed) continue;
    uint64_t end = std::min(e.offset + e.length, stack.size());
    for (uint64_t off = e.offset; off < end;) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(kChunk, end - off));
      Status st = stack.read(buf.data(), n, off);
      if (!st.ok()) return fail(st);
      if (std::memcmp(buf.data(), zero.data(), n) != 0) {  // all-zero data stays a hole
        Status ws = pwriteAll(fd.get(), buf.data(), n, off, outPath);
        if (!ws.ok()) return fail(ws);
        written += n;
      }
      off += n;
    }
  }
  if (::fsync(fd.get()) != 0) return fail(SysError(outPath + ": fsync"));
  return written;
}

}  // namespace obd
