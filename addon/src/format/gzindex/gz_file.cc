#include "format/gzindex/gz_file.h"

#include <zlib.h>

#include <atomic>
#include <cstring>

namespace obd::gzindex {

GzFile::GzFile(std::shared_ptr<ReadableFile> blob, Index index, uint64_t cacheBytes)
    : blob_(std::move(blob)), index_(std::move(index)), name_(blob_->name() + " (gzip)"), cacheBytes_(cacheBytes) {}

Result<std::shared_ptr<GzFile>> GzFile::open(std::shared_ptr<ReadableFile> blob, Index index, uint64_t cacheBytes) {
  if (index.gzipSize() != blob->size())
    return Corrupt(index.name() + ": gzip index is for a blob of " + std::to_string(index.gzipSize()) + " bytes, " +
                   blob->name() + " has " + std::to_string(blob->size()));
  return std::shared_ptr<GzFile>(new GzFile(std::move(blob), std::move(index), cacheBytes));
}

GzFile::Stats GzFile::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

Result<GzFile::Span> GzFile::inflateSpan(size_t i, const std::vector<uint8_t>& compressed, uint64_t cstart) {
  const AccessPoint& p = index_.points()[i];
  const uint64_t want = index_.spanEnd(i) - p.dePos;
  auto bad = [&](const std::string& what) {
    return Corrupt(name_ + ": span " + std::to_string(i) + " (uncompressed offset " + std::to_string(p.dePos) + "): " + what);
  };
  std::vector<uint8_t> dict;
  OBD_RETURN_IF_ERROR(index_.window(i, &dict));
  auto out = std::make_shared<std::vector<uint8_t>>(want);
  z_stream z{};
  if (inflateInit2(&z, -15) != Z_OK) return Status(ENOMEM, name_ + ": inflateInit failed");
  size_t skip = static_cast<size_t>(p.enPos - cstart);  // 1 when the point starts inside a byte
  z.next_in = const_cast<uint8_t*>(compressed.data()) + skip;
  z.avail_in = static_cast<uInt>(compressed.size() - skip);
  int r = Z_OK;
  if (p.bits) r = inflatePrime(&z, p.bits, compressed[0] >> (8 - p.bits));
  if (r == Z_OK) r = inflateSetDictionary(&z, dict.data(), kWindow);
  if (r != Z_OK) {
    inflateEnd(&z);
    return bad("cannot start inflating (zlib " + std::to_string(r) + ")");
  }
  z.next_out = out->data();
  z.avail_out = static_cast<uInt>(want);
  while (z.avail_out > 0) {
    r = inflate(&z, Z_NO_FLUSH);
    if (r == Z_STREAM_END) break;
    if (r == Z_BUF_ERROR) break;  // input exhausted
    if (r != Z_OK) break;
  }
  const char* msg = z.msg;
  size_t got = want - z.avail_out;
  // The last span must end the deflate stream exactly where the index says the tar ends.
  bool overrun = false;
  if (got == want && r != Z_STREAM_END && i + 1 == index_.points().size()) {
    uint8_t extra[512];
    z.next_out = extra;
    z.avail_out = sizeof extra;
    r = inflate(&z, Z_NO_FLUSH);
    overrun = z.avail_out != sizeof extra;
    if (!overrun && r != Z_STREAM_END) r = Z_DATA_ERROR;
  }
  inflateEnd(&z);
  if (overrun) return bad("the stream goes on past the uncompressed size the index records");
  if (got != want || r == Z_DATA_ERROR) {
    if (r == Z_DATA_ERROR || r == Z_NEED_DICT || r == Z_MEM_ERROR || r == Z_STREAM_ERROR)
      return bad(std::string("compressed data is damaged (") + (msg ? msg : "zlib error") + ")");
    return bad("inflates to " + std::to_string(got) + " bytes, the index promises " + std::to_string(want));
  }
  return Span(out);
}

void GzFile::finishSpan(size_t i, Status st, Span span) {
  std::vector<SpanCallback> waiters;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = inflight_.find(i);
    if (it != inflight_.end()) {
      waiters = std::move(it->second);
      inflight_.erase(it);
    }
    if (st.ok() && !cache_.count(i)) {
      lru_.push_front(i);
      cache_[i] = {span, lru_.begin()};
      cached_ += span->size();
      while (cached_ > cacheBytes_ && lru_.size() > 1) {
        size_t victim = lru_.back();
        lru_.pop_back();
        cached_ -= cache_[victim].first->size();
        cache_.erase(victim);
      }
    }
  }
  for (auto& w : waiters) w(st, span);
}

void GzFile::getSpan(size_t i, SpanCallback cb) {
  Span hit;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = cache_.find(i);
    if (it != cache_.end()) {
      lru_.splice(lru_.begin(), lru_, it->second.second);
      stats_.cacheHits++;
      hit = it->second.first;
    } else {
      auto& w = inflight_[i];
      w.push_back(std::move(cb));
      if (w.size() > 1) return;  // someone is already fetching this span
      stats_.spanFetches++;
    }
  }
  if (hit) return cb(Status::Ok(), hit);
  const AccessPoint& p = index_.points()[i];
  uint64_t cstart = p.enPos - (p.bits ? 1 : 0);
  uint64_t cend = index_.compressedEnd(i);
  auto buf = std::make_shared<std::vector<uint8_t>>(cend - cstart);
  auto self = shared_from_this();
  blob_->readAsync(buf->data(), buf->size(), cstart, [self, i, buf, cstart](Status st) {
    if (!st.ok()) return self->finishSpan(i, st.wrap(self->name_ + ": reading compressed span " + std::to_string(i)), nullptr);
    auto span = self->inflateSpan(i, *buf, cstart);
    if (!span.ok()) return self->finishSpan(i, span.status(), nullptr);
    self->finishSpan(i, Status::Ok(), span.take());
  });
}

namespace {
// One read completes when all its spans are copied; the first error wins.
struct Gather {
  explicit Gather(IoCallback c) : cb(std::move(c)) {}
  IoCallback cb;
  std::atomic<int> pending{1};
  std::mutex mu;
  Status first;
  void done(const Status& st) {
    if (!st.ok()) {
      std::lock_guard<std::mutex> lock(mu);
      if (first.ok()) first = st;
    }
    if (pending.fetch_sub(1) == 1) cb(first);
  }
};
}  // namespace

void GzFile::readAsync(void* buf, size_t n, uint64_t off, IoCallback cb) {
  auto* dst = static_cast<uint8_t*>(buf);
  const uint64_t size = index_.uncompressedSize();
  auto g = std::make_shared<Gather>(std::move(cb));
  uint64_t end = off + n;
  if (end > size) {
    uint64_t from = std::max(off, size);
    std::memset(dst + (from - off), 0, static_cast<size_t>(end - from));
    end = from;
  }
  for (uint64_t pos = off; pos < end;) {
    size_t i = index_.pointFor(pos);
    uint64_t spanStart = index_.points()[i].dePos, spanEnd = index_.spanEnd(i);
    uint64_t upto = std::min(end, spanEnd);
    uint8_t* to = dst + (pos - off);
    size_t len = static_cast<size_t>(upto - pos);
    size_t from = static_cast<size_t>(pos - spanStart);
    g->pending.fetch_add(1);
    getSpan(i, [g, to, len, from](Status st, Span s) {
      if (st.ok()) std::memcpy(to, s->data() + from, len);
      g->done(st);
    });
    pos = upto;
  }
  g->done(Status::Ok());
}

}  // namespace obd::gzindex
