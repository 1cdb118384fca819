// A writable LSMT layer (docs/formats.md, LSMT): a data file that payloads are appended to, and an index file
// that is an append-only log of mappings, replayed in order on open (later records win). A write over
// a range the layer already maps to data overwrites that data in place instead (no record).
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>

#include "format/lsmt/header.h"
#include "format/lsmt/index.h"
#include "util/unique_fd.h"

namespace obd::lsmt {

struct CreateOptions {
  uint64_t virtualSize = 0;
  std::string uuid;        // "" → random v4
  std::string parentUuid;  // "" → null uuid
};

class WritableLayer {
 public:
  // Creates both files; fails if either exists.
  static Result<std::unique_ptr<WritableLayer>> create(const std::string& dataPath, const std::string& indexPath,
                                                       const CreateOptions& opts);
  static Result<std::unique_ptr<WritableLayer>> open(const std::string& dataPath, const std::string& indexPath,
                                                     bool readOnly = false);

  // Offsets and lengths are multiples of 512. Thread-safe.
  Status write(const void* buf, size_t n, uint64_t off);
  Status discard(uint64_t off, uint64_t n);
  Status read(void* buf, size_t n, uint64_t off) const;  // holes and zeroed extents read as zero
  Status fsync();

  // Pieces over [start, end) sectors; data pieces address the data file (see readData).
  void lookup(uint64_t start, uint64_t end, const PieceFn& fn) const;
  Status readData(void* buf, size_t n, uint64_t byteOffset) const;
  std::vector<Segment> segments() const;

  const HeaderTrailer& header() const { return header_; }
  uint64_t virtualSize() const;
  // Sets the size when the layer was created without one (it then takes the lower stack's size).
  Status setVirtualSize(uint64_t vsize);
  const std::string& dataPath() const { return dataPath_; }

 private:
  WritableLayer() = default;
  Status replayLog();
  Status appendRecords(const Segment* recs, size_t n);
  bool overwriteInPlace(const void* buf, size_t n, uint64_t off, Status* st);
  Status checkRange(uint64_t off, uint64_t n, const char* op) const;

  std::string dataPath_, indexPath_;
  UniqueFd data_, index_;
  HeaderTrailer header_;
  bool readOnly_ = false;
  mutable std::shared_mutex mu_;  // guards index_ contents, map_, dataEnd_, indexEnd_, vsize_
  MutableIndex map_;
  uint64_t dataEnd_ = 0;   // bytes; next payload goes here (reserved before it is written)
  uint64_t indexEnd_ = 0;  // bytes; next index record goes here
  std::atomic<uint64_t> flushAsked_{0};  // fsync() calls so far
  std::mutex flushMu_;
  uint64_t flushDone_ = 0;  // every fsync() call up to this one is durable
  uint64_t vsize_ = 0;
};

}  // namespace obd::lsmt
