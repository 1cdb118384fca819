// A layer stack as one virtual disk (spec: overlaybd-format.md §1.8, §3): read-only lowers, bottom
// first, each a raw blob that may be tar-wrapped and/or ZFile-compressed around a sealed LSMT layer,
// plus an optional writable LSMT upper (data + index files). Top wins; zeroed extents read as zeros.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "io/file.h"

namespace obd {

struct StackSpec {
  std::vector<std::shared_ptr<ReadableFile>> lowers;  // bottom-most first, as config.v1.json lists them
  std::string upperData;                              // both empty → read-only device
  std::string upperIndex;
  bool verifyZFileBlocks = true;                      // per-block crc32c for ZFile lowers
};

Result<std::unique_ptr<BlockDevice>> openStack(const StackSpec& spec);

// Unwraps one raw lower blob by magic bytes, in overlaybd's order: tar → ZFile → as is.
Result<std::shared_ptr<ReadableFile>> unwrapLayerBlob(std::shared_ptr<ReadableFile> raw, bool verifyZFileBlocks);

}  // namespace obd
