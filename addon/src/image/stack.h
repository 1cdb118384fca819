// A layer stack as one virtual disk (docs/formats.md): read-only lowers, bottom
// first, each a raw blob that may be tar-wrapped and/or ZFile-compressed around a sealed LSMT layer,
// plus an optional writable LSMT upper (data + index files). Top wins; zeroed extents read as zeros.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "format/lsmt/index.h"
#include "io/file.h"

namespace obd {

struct StackSpec {
  std::vector<std::shared_ptr<ReadableFile>> lowers;  // bottom-most first, as config.v1.json lists them
  // Empty, or one per lower: non-null makes that lower a warp (TurboOCI meta) layer whose target
  // stream (the uncompressed tar) serves its file data.
  std::vector<std::shared_ptr<ReadableFile>> targets;
  std::string upperData;                              // both empty → read-only device
  std::string upperIndex;
  bool verifyZFileBlocks = true;                      // per-block crc32c for ZFile lowers
};

Result<std::unique_ptr<BlockDevice>> openStack(const StackSpec& spec);

// Unwraps one raw lower blob by magic bytes, in overlaybd's order: tar → ZFile → as is.
Result<std::shared_ptr<ReadableFile>> unwrapLayerBlob(std::shared_ptr<ReadableFile> raw, bool verifyZFileBlocks);

}  // namespace obd

namespace obd {

namespace lsmt {
class SealedLayer;
class WritableLayer;
}  // namespace lsmt

// A run of the virtual disk for tools (export, info): data, or zeroed; holes are not listed.
struct StackExtent {
  uint64_t offset;  // bytes
  uint64_t length;  // bytes
  bool zeroed;
  int layer;        // index into lowers (bottom first); lowers.size() for the upper
};

// The concrete stack behind openStack(), for callers that need more than BlockDevice.
class LayerStack : public BlockDevice {
 public:
  static Result<std::unique_ptr<LayerStack>> open(const StackSpec& spec);
  ~LayerStack() override;

  uint64_t size() const override { return size_; }
  bool readOnly() const override { return !upper_; }
  void readAsync(void* buf, size_t n, uint64_t off, IoCallback cb) override;
  Status write(const void* buf, size_t n, uint64_t off) override;
  Status discard(uint64_t off, uint64_t n) override;
  Status flush() override;

  // Mapped runs in ascending order (adjacent runs of one layer are not coalesced).
  std::vector<StackExtent> extents() const;
  size_t lowerCount() const { return lowers_.size(); }

 private:
  LayerStack() = default;
  Status checkIo(uint64_t off, uint64_t n, const char* op) const;

  std::vector<std::shared_ptr<lsmt::SealedLayer>> lowers_;
  lsmt::SegmentIndex merged_;
  std::unique_ptr<lsmt::WritableLayer> upper_;
  uint64_t size_ = 0;
};

// Writes the stack's virtual disk to a sparse raw file: only mapped data is written, the rest is
// left as holes (ftruncate to the full size). Returns bytes of data written.
Result<uint64_t> exportRaw(LayerStack& stack, const std::string& outPath);

}  // namespace obd
