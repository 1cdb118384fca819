// ZFile writer (docs/formats.md, ZFile): header, blocks (+crc), jump table, trailer, optional header overwrite.
// Output is byte-identical to overlaybd's builder for the same compressor output.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "format/zfile/codec.h"
#include "format/zfile/header.h"
#include "format/zfile/zfile.h"
#include "util/crc32c.h"
#include "util/fd_io.h"
#include "util/unique_fd.h"

namespace obd::zfile {

namespace {

constexpr size_t kFlushBytes = 1 << 20;  // staged compressed bytes written per pwrite

Status validate(const CompressOptions& o) {
  if (o.algorithm != Algorithm::kLz4 && o.algorithm != Algorithm::kZstd)
    return InvalidArg("unsupported algorithm " + std::to_string(static_cast<int>(o.algorithm)));
  const uint32_t bs = o.blockSize;
  if (bs < kMinBlockSize || bs > kMaxBlockSize || (bs & (bs - 1)) != 0)
    return InvalidArg("block size " + std::to_string(bs) + " must be a power of two from 4096 to 65536");
  return Status::Ok();
}

class FileWriter : public Writer {
 public:
  FileWriter(std::string path, UniqueFd fd, const CompressOptions& o)
      : path_(std::move(path)), fd_(std::move(fd)), opts_(o), compressor_(static_cast<uint8_t>(o.algorithm)) {
    block_.resize(o.blockSize);
    bound_ = compressBound(static_cast<uint8_t>(o.algorithm), o.blockSize);
    staged_.reserve(kFlushBytes + bound_ + 4);
  }

  Status start() {
    HeaderTrailer h = base();
    h.flags = kFlagHeader | kFlagType | kFlagDigest;
    return writeStruct(h, 0);
  }

  Status append(const void* data, size_t n) override {
    if (state_ != State::kOpen) return InvalidArg(path_ + ": append after finish or failure");
    const auto* p = static_cast<const uint8_t*>(data);
    while (n > 0) {
      const size_t take = std::min(n, block_.size() - fill_);
      std::memcpy(block_.data() + fill_, p, take);
      fill_ += take;
      p += take;
      n -= take;
      if (fill_ == block_.size()) OBD_RETURN_IF_ERROR(fail(compressBlock()));
    }
    return Status::Ok();
  }

  Status finish() override {
    if (state_ != State::kOpen) return InvalidArg(path_ + ": finish called twice or after a failure");
    if (fill_ > 0) OBD_RETURN_IF_ERROR(fail(compressBlock()));
    OBD_RETURN_IF_ERROR(fail(flush()));

    std::vector<uint8_t> table(lengths_.size() * 4);
    for (size_t i = 0; i < lengths_.size(); i++) std::memcpy(&table[i * 4], &lengths_[i], 4);
    const uint64_t indexOffset = pos_;
    OBD_RETURN_IF_ERROR(fail(pwriteAll(fd_.get(), table.data(), table.size(), indexOffset, path_)));

    HeaderTrailer t = base();
    t.indexOffset = indexOffset;
    t.indexSize = lengths_.size();
    t.originalSize = original_;
    t.indexCrc = crc32cUpdate(0, table.data(), table.size());
    t.flags = kFlagType | kFlagSealed | kFlagDigest;
    OBD_RETURN_IF_ERROR(fail(writeStruct(t, indexOffset + table.size())));
    if (opts_.overwriteHeader) {
      t.flags = kFlagHeader | kFlagType | kFlagHeaderOverwrite | kFlagDigest;
      OBD_RETURN_IF_ERROR(fail(writeStruct(t, 0)));
    }
    struct stat st;
    if (::fstat(fd_.get(), &st) == 0 && S_ISREG(st.st_mode) && ::fsync(fd_.get()) != 0)
      return fail(SysError(path_ + ": fsync"));
    if (::close(fd_.release()) != 0) return fail(SysError(path_ + ": close"));
    state_ = State::kFinished;
    return Status::Ok();
  }

 private:
  enum class State { kOpen, kFinished, kFailed };

  HeaderTrailer base() const {
    HeaderTrailer h;
    h.blockSize = opts_.blockSize;
    h.algo = static_cast<uint8_t>(opts_.algorithm);
    h.verify = opts_.verify ? 1 : 0;
    return h;
  }

  Status writeStruct(const HeaderTrailer& ht, uint64_t off) {
    uint8_t b[kHeaderSpace];
    encode(ht, b);
    return pwriteAll(fd_.get(), b, sizeof b, off, path_);
  }

  Status compressBlock() {
    const size_t at = staged_.size();
    staged_.resize(at + bound_ + 4);
    auto r = compressor_.compress(block_.data(), fill_, staged_.data() + at, bound_);
    if (!r.ok()) return r.status().wrap(path_ + ": block " + std::to_string(lengths_.size()));
    size_t len = r.value();
    if (opts_.verify) {
      const uint32_t crc = crc32cUpdate(kBlockCrcSeed, staged_.data() + at, len);
      std::memcpy(staged_.data() + at + len, &crc, 4);
      len += 4;
    }
    staged_.resize(at + len);
    lengths_.push_back(static_cast<uint32_t>(len));
    original_ += fill_;
    fill_ = 0;
    return staged_.size() >= kFlushBytes ? flush() : Status::Ok();
  }

  Status flush() {
    OBD_RETURN_IF_ERROR(pwriteAll(fd_.get(), staged_.data(), staged_.size(), pos_, path_));
    pos_ += staged_.size();
    staged_.clear();
    return Status::Ok();
  }

  Status fail(Status st) {
    if (!st.ok()) state_ = State::kFailed;
    return st;
  }

  std::string path_;
  UniqueFd fd_;
  CompressOptions opts_;
  Compressor compressor_;
  size_t bound_ = 0;
  std::vector<uint8_t> block_;  // uncompressed bytes of the block being filled
  size_t fill_ = 0;
  std::vector<uint8_t> staged_;  // compressed blocks not yet written
  uint64_t pos_ = kHeaderSpace;  // file offset where staged_ goes
  uint64_t original_ = 0;
  std::vector<uint32_t> lengths_;
  State state_ = State::kOpen;
};

}  // namespace

Result<std::unique_ptr<Writer>> Writer::create(const std::string& path, const CompressOptions& opts) {
  OBD_RETURN_IF_ERROR(validate(opts).wrap(path));
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!fd.valid()) return SysError(path + ": create");
  auto w = std::make_unique<FileWriter>(path, std::move(fd), opts);
  OBD_RETURN_IF_ERROR(w->start());
  return std::unique_ptr<Writer>(std::move(w));
}

}  // namespace obd::zfile
