// The uncompressed tar stream of a gzip layer blob as a ReadableFile: a read is served by inflating
// the access-point span(s) it touches (the compressed bytes of one span are read from the blob,
// which may be remote, through its own cache), keeping recently inflated spans in memory.
#pragma once

#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "format/gzindex/gz_index.h"
#include "io/file.h"

namespace obd::gzindex {

class GzFile : public ReadableFile, public std::enable_shared_from_this<GzFile> {
 public:
  // `cacheBytes`: memory for inflated spans (at least one span is always kept while in use).
  static Result<std::shared_ptr<GzFile>> open(std::shared_ptr<ReadableFile> blob, Index index, uint64_t cacheBytes);

  uint64_t size() const override { return index_.uncompressedSize(); }
  const std::string& name() const override { return name_; }
  void readAsync(void* buf, size_t n, uint64_t off, IoCallback cb) override;

  struct Stats {
    uint64_t spanFetches = 0;  // compressed spans read from the blob
    uint64_t cacheHits = 0;
  };
  Stats stats() const;

 private:
  using Span = std::shared_ptr<const std::vector<uint8_t>>;
  using SpanCallback = std::function<void(Status, Span)>;
  GzFile(std::shared_ptr<ReadableFile> blob, Index index, uint64_t cacheBytes);
  void getSpan(size_t i, SpanCallback cb);
  Result<Span> inflateSpan(size_t i, const std::vector<uint8_t>& compressed, uint64_t cstart);
  void finishSpan(size_t i, Status st, Span span);

  std::shared_ptr<ReadableFile> blob_;
  Index index_;
  std::string name_;
  uint64_t cacheBytes_;
  mutable std::mutex mu_;
  std::list<size_t> lru_;  // most recent first
  std::unordered_map<size_t, std::pair<Span, std::list<size_t>::iterator>> cache_;
  uint64_t cached_ = 0;
  std::unordered_map<size_t, std::vector<SpanCallback>> inflight_;
  Stats stats_;
};

}  // namespace obd::gzindex
