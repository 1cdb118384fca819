// Read-ahead for one remote blob, modelled on the kernel's on-demand readahead: read-ahead has to be
// earned. Each sequential reader of the blob is a stream (several can be active at once). A stream
// starts without read-ahead; once it has read `startBytes` contiguously it gets a first window, and
// every time the reader reaches the window's async marker (its first unit) the next window, twice
// as large, is issued behind it, up to the caller's maximum (tied to the link's throughput). A read
// that jumps inside a stream's area collapses that stream to nothing. One small file read (a few
// contiguous requests of < startBytes) therefore never causes read-ahead.
#pragma once

#include <cstdint>
#include <vector>

namespace obd {

struct ReadAheadWindow {
  uint64_t firstUnit = 0;
  uint64_t count = 0;  // 0: nothing to read ahead
};

struct ReadAheadStream {
  uint64_t next = 0;      // byte offset where the next sequential read starts
  uint64_t run = 0;       // contiguous bytes read so far
  uint64_t window = 0;    // units of the last window issued (0: not reading ahead)
  uint64_t marker = 0;    // reaching this unit issues the next window
  uint64_t end = 0;       // first unit after the read-ahead issued so far
  uint64_t lastUse = 0;   // for replacing the least recently used stream
};

class ReadAheadPolicy {
 public:
  // startBytes: contiguous bytes a stream must read before any read-ahead (rounded up to 2 units).
  ReadAheadPolicy(uint32_t unitSize, uint64_t blobSize, uint64_t startBytes = 1 << 20, unsigned maxStreams = 8);
  // A demand read of [off, off + n); maxWindowUnits bounds one window (0: no read-ahead at all).
  ReadAheadWindow onRead(uint64_t off, uint64_t n, uint64_t maxWindowUnits);
  const std::vector<ReadAheadStream>& streams() const { return streams_; }

 private:
  ReadAheadStream* find(uint64_t off, uint64_t n, bool* sequential);
  ReadAheadWindow issue(ReadAheadStream& s, uint64_t count);

  const uint64_t unit_;
  const uint64_t units_;
  const uint64_t startBytes_;
  const unsigned maxStreams_;
  uint64_t clock_ = 0;
  std::vector<ReadAheadStream> streams_;
};

}  // namespace obd
