// Whole-file compress / decompress, used by the CLI and the benchmark.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <memory>

#include "format/zfile/zfile.h"
#include "util/unique_fd.h"

namespace obd::zfile {

namespace {

constexpr size_t kChunk = 4 << 20;

// Removes the output unless dismissed; the output is not a regular file (e.g. /dev/null) → left alone.
class RemoveOnFailure {
 public:
  explicit RemoveOnFailure(std::string path) : path_(std::move(path)) {}
  ~RemoveOnFailure() {
    struct stat st;
    if (armed_ && ::stat(path_.c_str(), &st) == 0 && S_ISREG(st.st_mode)) ::unlink(path_.c_str());
  }
  void dismiss() { armed_ = false; }

 private:
  std::string path_;
  bool armed_ = true;
};

}  // namespace

Status compressFile(ReadableFile& in, const std::string& outPath, const CompressOptions& opts) {
  RemoveOnFailure guard(outPath);
  auto writer = Writer::create(outPath, opts);
  if (!writer.ok()) return writer.status();
  std::unique_ptr<uint8_t[]> buf(new (std::nothrow) uint8_t[kChunk]);
  if (!buf) return Status(ENOMEM, "cannot allocate a copy buffer");
  for (uint64_t off = 0; off < in.size();) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(kChunk, in.size() - off));
    OBD_RETURN_IF_ERROR(in.read(buf.get(), n, off));
    OBD_RETURN_IF_ERROR(writer.value()->append(buf.get(), n));
    off += n;
  }
  OBD_RETURN_IF_ERROR(writer.value()->finish());
  guard.dismiss();
  return Status::Ok();
}

Status decompressFile(ReadableFile& zfile, const std::string& outPath) {
  RemoveOnFailure guard(outPath);
  UniqueFd fd(::open(outPath.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!fd.valid()) return SysError(outPath + ": create");
  std::unique_ptr<uint8_t[]> buf(new (std::nothrow) uint8_t[kChunk]);
  if (!buf) return Status(ENOMEM, "cannot allocate a copy buffer");
  for (uint64_t off = 0; off < zfile.size();) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(kChunk, zfile.size() - off));
    OBD_RETURN_IF_ERROR(zfile.read(buf.get(), n, off));
    for (size_t done = 0; done < n;) {
      ssize_t r = ::write(fd.get(), buf.get() + done, n - done);
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) return SysError(outPath + ": write");
      done += static_cast<size_t>(r);
    }
    off += n;
  }
  struct stat st;
  if (::fstat(fd.get(), &st) == 0 && S_ISREG(st.st_mode) && ::fsync(fd.get()) != 0) return SysError(outPath + ": fsync");
  if (::close(fd.release()) != 0) return SysError(outPath + ": close");
  guard.dismiss();
  return Status::Ok();
}

}  // namespace obd::zfile
