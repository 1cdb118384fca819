// Whole-file compress / decompress, used by the CLI and the benchmark.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <memory>

#include "format/zfile/zfile.h"
#include "util/fd_io.h"
#include "util/unique_fd.h"

namespace obd::zfile {

namespace {

constexpr size_t kChunk = 4 << 20;

// Where the output is written: a temp file next to a regular (or new) output, renamed over it on
// success, so a failure leaves a previous file untouched and no partial file behind. A special file
// (e.g. /dev/null) is written directly.
class Output {
 public:
  explicit Output(std::string path) : path_(std::move(path)) {
    struct stat st;
    const bool special = ::stat(path_.c_str(), &st) == 0 && !S_ISREG(st.st_mode);
    writePath_ = special ? path_ : path_ + ".partial-" + std::to_string(::getpid());
  }
  ~Output() {
    if (!committed_ && writePath_ != path_) ::unlink(writePath_.c_str());
  }
  const std::string& writePath() const { return writePath_; }
  // Errors from the writer name the temp file; users know the output by its real name.
  Status named(const Status& st) const {
    std::string msg = st.message();
    for (size_t at; writePath_ != path_ && (at = msg.find(writePath_)) != std::string::npos;)
      msg.replace(at, writePath_.size(), path_);
    return st.ok() ? st : Status(st.code(), msg);
  }
  Status commit() {
    if (writePath_ != path_ && ::rename(writePath_.c_str(), path_.c_str()) != 0) return SysError(path_ + ": rename");
    committed_ = true;
    return Status::Ok();
  }

 private:
  std::string path_;
  std::string writePath_;
  bool committed_ = false;
};

}  // namespace

Status compressFile(ReadableFile& in, const std::string& outPath, const CompressOptions& opts) {
  Output output(outPath);
  auto writer = Writer::create(output.writePath(), opts);
  if (!writer.ok()) return output.named(writer.status());
  std::unique_ptr<uint8_t[]> buf(new (std::nothrow) uint8_t[kChunk]);
  if (!buf) return Status(ENOMEM, "cannot allocate a copy buffer");
  for (uint64_t off = 0; off < in.size();) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(kChunk, in.size() - off));
    OBD_RETURN_IF_ERROR(in.read(buf.get(), n, off));
    OBD_RETURN_IF_ERROR(output.named(writer.value()->append(buf.get(), n)));
    off += n;
  }
  OBD_RETURN_IF_ERROR(output.named(writer.value()->finish()));
  return output.commit();
}

Status decompressFile(ReadableFile& zfile, const std::string& outPath) {
  Output output(outPath);
  UniqueFd fd(::open(output.writePath().c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!fd.valid()) return SysError(outPath + ": create");
  std::unique_ptr<uint8_t[]> buf(new (std::nothrow) uint8_t[kChunk]);
  if (!buf) return Status(ENOMEM, "cannot allocate a copy buffer");
  for (uint64_t off = 0; off < zfile.size();) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(kChunk, zfile.size() - off));
    OBD_RETURN_IF_ERROR(zfile.read(buf.get(), n, off));
    OBD_RETURN_IF_ERROR(writeAll(fd.get(), buf.get(), n, outPath));
    off += n;
  }
  struct stat st;
  if (::fstat(fd.get(), &st) == 0 && S_ISREG(st.st_mode) && ::fsync(fd.get()) != 0) return SysError(outPath + ": fsync");
  if (::close(fd.release()) != 0) return SysError(outPath + ": close");
  return output.commit();
}

}  // namespace obd::zfile
