#include "convert/layer_input.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <utility>

#include "util/fd_io.h"

namespace obd::convert {

namespace {

constexpr size_t kChunk = 1 << 20;

bool isGzip(const uint8_t* p, size_t n) { return n >= 2 && p[0] == 0x1f && p[1] == 0x8b; }
bool isZstd(const uint8_t* p, size_t n) { return n >= 4 && p[0] == 0x28 && p[1] == 0xb5 && p[2] == 0x2f && p[3] == 0xfd; }

void sleepMs(int ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

}  // namespace

Result<std::unique_ptr<LayerInput>> LayerInput::open(const LayerInputOptions& opts) {
  std::unique_ptr<LayerInput> in(new LayerInput(opts));
  // The download renames its partial file to `path` when it is complete; both names lead to the
  // same file, so whichever is found is read. Neither yet: the download (which has received bytes)
  // is about to create it — unless it failed first, hence a short wait.
  constexpr int kOpenWaitMs = 10'000;
  for (int waitedMs = 0; !in->fd_.valid(); waitedMs += 2) {
    in->fd_.reset(::open(opts.path.c_str(), O_RDONLY | O_CLOEXEC));
    if (in->fd_.valid() || errno != ENOENT || opts.partialPath.empty()) break;
    in->fd_.reset(::open(opts.partialPath.c_str(), O_RDONLY | O_CLOEXEC));
    if (in->fd_.valid()) in->following_ = opts.size > 0;
    if (in->fd_.valid() || errno != ENOENT || waitedMs >= kOpenWaitMs) break;
    sleepMs(2);
  }
  if (!in->fd_.valid()) return SysError(opts.path + ": open");
  in->raw_.resize(kChunk);
  size_t have = 0;
  while (have < 4) {
    auto n = in->fill(in->raw_.data() + have, 4 - have);
    if (!n.ok()) return n.status();
    if (n.value() == 0) break;
    have += n.value();
  }
  in->rawPos_ = in->raw_.data();
  in->rawLeft_ = have;
  if (isZstd(in->raw_.data(), have)) return InvalidArg("zstd layers cannot be served as TurboOCI (gzip or plain tar only)");
  if (isGzip(in->raw_.data(), have)) {
    if (opts.gzipIndexOut.empty()) return InvalidArg(opts.path + ": a gzip layer needs a gzip index output");
    auto b = gzindex::IndexBuilder::create(opts.path, opts.gzipIndexOut, opts.index);
    if (!b.ok()) return b.status();
    in->index_ = b.take();
    in->out_.resize(kChunk);
  }
  return in;
}

Result<size_t> LayerInput::fill(uint8_t* buf, size_t cap) {
  if (following_) {
    if (off_ >= opts_.size) return size_t{0};
    cap = static_cast<size_t>(std::min<uint64_t>(cap, opts_.size - off_));
  }
  for (int waitedMs = 0;;) {
    const ssize_t n = ::pread(fd_.get(), buf, cap, static_cast<off_t>(off_));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return SysError(opts_.path + ": read at byte " + std::to_string(off_));
    if (n > 0) {
      off_ += static_cast<uint64_t>(n);
      return static_cast<size_t>(n);
    }
    if (!following_) return size_t{0};
    // The download has not written this far yet. A failed download removes its partial file.
    struct stat st;
    if (waitedMs % 100 == 0 && ::fstat(fd_.get(), &st) == 0 && st.st_nlink == 0) {
      return IoError(opts_.path + ": the download stopped at byte " + std::to_string(off_) + " of " + std::to_string(opts_.size) +
                     " (its partial file was removed)");
    }
    if (waitedMs >= opts_.stallSeconds * 1000) {
      return IoError(opts_.path + ": download wrote nothing past byte " + std::to_string(off_) + " of " +
                     std::to_string(opts_.size) + " for " + std::to_string(opts_.stallSeconds) + " s");
    }
    sleepMs(2);
    waitedMs += 2;
    waitedMs_ += 2;
  }
}

Status LayerInput::refill() {
  auto n = fill(raw_.data(), raw_.size());
  if (!n.ok()) return n.status();
  if (n.value() == 0) return Corrupt(opts_.path + ": gzip stream ends early at compressed byte " + std::to_string(off_));
  rawPos_ = raw_.data();
  rawLeft_ = n.value();
  return Status::Ok();
}

Result<size_t> LayerInput::read(const void** buf) {
  if (!index_) {  // a plain tar: the blob itself (the sniffed bytes first)
    if (rawLeft_ > 0) {
      *buf = rawPos_;
      return std::exchange(rawLeft_, 0);
    }
    auto n = fill(raw_.data(), raw_.size());
    *buf = raw_.data();
    return n;
  }
  while (!index_->ended()) {
    if (rawLeft_ == 0) OBD_RETURN_IF_ERROR(refill());
    auto made = index_->inflate(&rawPos_, &rawLeft_, out_.data(), out_.size());
    if (!made.ok()) return made.status();
    if (made.value() > 0) {
      *buf = out_.data();
      return made.value();
    }
  }
  return size_t{0};
}

Status LayerInput::finish() {
  if (!index_) return Status::Ok();
  while (!index_->ended()) {
    if (rawLeft_ == 0) OBD_RETURN_IF_ERROR(refill());
    auto made = index_->inflate(&rawPos_, &rawLeft_, out_.data(), out_.size());
    if (!made.ok()) return made.status();
  }
  OBD_RETURN_IF_ERROR(index_->trailing(rawPos_, rawLeft_));
  rawLeft_ = 0;
  while (true) {
    auto n = fill(raw_.data(), raw_.size());
    if (!n.ok()) return n.status();
    if (n.value() == 0) break;
    OBD_RETURN_IF_ERROR(index_->trailing(raw_.data(), n.value()));
  }
  auto st = index_->finish(off_);
  if (!st.ok()) return st.status();
  indexStats_ = st.value();
  return Status::Ok();
}

Result<ScanResult> scanLayer(const LayerInputOptions& opts, const std::string& tarOut) {
  auto opened = LayerInput::open(opts);
  if (!opened.ok()) return opened.status();
  LayerInput& in = *opened.value();
  UniqueFd out;
  if (in.gzip()) {
    out.reset(::open(tarOut.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (!out.valid()) return SysError(tarOut + ": create");
  }
  while (true) {
    const void* buf = nullptr;
    auto n = in.read(&buf);
    if (!n.ok()) return n.status();
    if (n.value() == 0) break;
    if (out.valid()) OBD_RETURN_IF_ERROR(writeAll(out.get(), buf, n.value(), tarOut));
  }
  OBD_RETURN_IF_ERROR(in.finish());
  ScanResult r;
  r.gzip = in.gzip();
  if (r.gzip) r.index = in.indexStats();
  r.waitedMs = in.waitedMs();
  return r;
}

}  // namespace obd::convert
