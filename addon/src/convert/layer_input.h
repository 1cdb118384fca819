// A TurboOCI source layer read as it arrives (a file that a download is still writing is followed up
// to its known size), and for a gzip blob inflated exactly once, its gzip index (gzip.meta) built
// from that same pass: the uncompressed stream is the one the meta layer's data offsets refer to.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "format/gzindex/gz_index.h"
#include "util/status.h"
#include "util/unique_fd.h"

namespace obd::convert {

struct LayerInputOptions {
  std::string path;          // the blob file
  std::string partialPath;   // where the download writes it until it is complete ("" = path is complete)
  uint64_t size = 0;         // the blob's size (descriptor); with partialPath: read until this many bytes
  std::string gzipIndexOut;  // gzip.meta for a gzip blob ("" = a gzip blob is refused)
  gzindex::BuildOptions index;
  int stallSeconds = 300;    // a followed file that does not grow for this long is an error
};

class LayerInput {
 public:
  // Opens the blob (before any chroot: the paths are outside the layer filesystem) and sniffs it:
  // gzip or plain tar; zstd and other compressions are refused by name.
  static Result<std::unique_ptr<LayerInput>> open(const LayerInputOptions& opts);

  // The next piece of the tar stream; an empty piece is its end.
  Result<size_t> read(const void** buf);
  // After the tar's end-of-archive: reads the rest of the blob (the index covers the whole stream,
  // and only zero padding may follow the gzip member) and writes the gzip index.
  Status finish();

  bool gzip() const { return index_ != nullptr; }
  uint64_t compressedBytes() const { return off_; }
  uint64_t waitedMs() const { return waitedMs_; }  // time spent waiting for the download to write more
  const gzindex::BuildStats& indexStats() const { return indexStats_; }
  const std::string& name() const { return opts_.path; }

 private:
  explicit LayerInput(const LayerInputOptions& opts) : opts_(opts) {}
  Result<size_t> fill(uint8_t* buf, size_t cap);  // raw blob bytes; 0 = end of blob
  Status refill();  // the next raw piece for inflate; the blob ending here is an error

  LayerInputOptions opts_;
  UniqueFd fd_;
  bool following_ = false;  // reading the partial file of a running download
  uint64_t off_ = 0;  // raw bytes consumed from the blob
  uint64_t waitedMs_ = 0;
  std::vector<uint8_t> raw_;
  const uint8_t* rawPos_ = nullptr;
  size_t rawLeft_ = 0;
  std::vector<uint8_t> out_;
  std::unique_ptr<gzindex::IndexBuilder> index_;
  gzindex::BuildStats indexStats_;
};

// TurboOCI scan of one source blob, as it arrives: a gzip blob is inflated once into `tarOut` (the
// uncompressed tar, which the apply then reads skipping file data) with its gzip index written on
// the way; a plain tar is only read through (it is its own tar). Runs off the critical path, while
// the previous layer is built.
struct ScanResult {
  bool gzip = false;
  gzindex::BuildStats index;
  uint64_t waitedMs = 0;  // waiting for the download to write more
};
Result<ScanResult> scanLayer(const LayerInputOptions& opts, const std::string& tarOut);

}  // namespace obd::convert
