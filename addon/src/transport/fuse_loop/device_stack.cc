#include "transport/fuse_loop/device_stack.h"

#include "transport/fuse_loop/raw_file_device.h"

namespace obd {

Result<std::unique_ptr<BlockDevice>> openDeviceSource(const DeviceSource& src) {
  if (!src.rawFile.empty()) return RawFileDevice::open(src.rawFile, src.rawWritable);
  if (src.stack.lowers.empty() && src.stack.upperData.empty()) return InvalidArg("no lowers and no upper: nothing to serve");
  if (src.stack.upperData.empty() != src.stack.upperIndex.empty())
    return InvalidArg("upper needs both data and index files");
  return openStack(src.stack);
}

}  // namespace obd
