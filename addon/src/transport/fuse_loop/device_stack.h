// Builds the BlockDevice a transport serves from what config.v1.json describes: either a layer stack
// (lowers + optional writable upper, via image/stack.h) or, for benchmarks and transport tests, a raw
// disk image file.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "image/stack.h"
#include "io/file.h"

namespace obd {

struct DeviceSource {
  StackSpec stack;          // used when rawFile is empty
  std::string rawFile;      // obd extension: serve this raw image as is
  bool rawWritable = false;
};

Result<std::unique_ptr<BlockDevice>> openDeviceSource(const DeviceSource& src);

}  // namespace obd
