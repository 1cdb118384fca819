#include "remote/read_ahead.h"

#include <algorithm>

namespace obd {

namespace {
// Requests of one reader can arrive slightly out of order (the kernel keeps several in flight):
// within this distance of the expected offset a read still counts as sequential.
constexpr uint64_t kReorderSlack = 256 << 10;
}  // namespace

ReadAheadPolicy::ReadAheadPolicy(uint32_t unitSize, uint64_t blobSize, uint64_t startBytes, unsigned maxStreams)
    : unit_(unitSize ? unitSize : 1), units_((blobSize + unit_ - 1) / unit_),
      startBytes_(std::max<uint64_t>(startBytes, 2 * unit_)), maxStreams_(maxStreams ? maxStreams : 1) {}

ReadAheadStream* ReadAheadPolicy::find(uint64_t off, uint64_t n, bool* sequential) {
  const uint64_t slack = std::max<uint64_t>(2 * n, kReorderSlack);
  for (auto& s : streams_) {
    if (off <= s.next + slack && off + slack >= s.next) {
      *sequential = true;
      return &s;
    }
  }
  // Not sequential, but inside what a stream has read or read ahead: that reader jumped.
  for (auto& s : streams_) {
    uint64_t areaEnd = std::max(s.next, s.end * unit_);
    if (off + s.run >= s.next && off < areaEnd) {
      *sequential = false;
      return &s;
    }
  }
  return nullptr;
}

ReadAheadWindow ReadAheadPolicy::issue(ReadAheadStream& s, uint64_t count) {
  s.end = std::max(s.end, (s.next + unit_ - 1) / unit_);  // never behind the reader
  count = std::min(count, units_ > s.end ? units_ - s.end : 0);
  ReadAheadWindow w{s.end, count};
  s.marker = s.end;
  s.end += count;
  s.window = count;
  return w;
}

ReadAheadWindow ReadAheadPolicy::onRead(uint64_t off, uint64_t n, uint64_t maxWindowUnits) {
  if (n == 0) return {};
  clock_++;
  bool sequential = false;
  ReadAheadStream* s = find(off, n, &sequential);
  if (s && !sequential) {
    *s = ReadAheadStream{off + n, n, 0, 0, 0, clock_};  // random read: start over without read-ahead
    return {};
  }
  if (!s) {
    if (streams_.size() < maxStreams_) {
      streams_.emplace_back();
      s = &streams_.back();
    } else {
      s = &*std::min_element(streams_.begin(), streams_.end(),
                             [](const ReadAheadStream& a, const ReadAheadStream& b) { return a.lastUse < b.lastUse; });
    }
    *s = ReadAheadStream{off + n, n, 0, 0, 0, clock_};
    return {};
  }
  s->lastUse = clock_;
  s->run += n;
  s->next = std::max(s->next, off + n);
  if (maxWindowUnits == 0) return {};
  const uint64_t lastUnit = (off + n - 1) / unit_;
  if (s->window == 0) {
    if (s->run < startBytes_) return {};
    // First window: as much again as the stream has proven, at least 2 units.
    return issue(*s, std::min(std::max<uint64_t>(2, s->run / unit_), maxWindowUnits));
  }
  if (lastUnit < s->marker) return {};
  return issue(*s, std::min(2 * s->window, maxWindowUnits));
}

}  // namespace obd
