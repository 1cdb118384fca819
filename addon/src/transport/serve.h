// The one place a transport is chosen: a BlockDevice (from device_stack.h) served as a kernel block
// device behind the ServedDevice interface, by fuse-loop (/dev/loopN) or tcmu (/dev/sdX).
// Blocks for up to the transport's timeout: call it off the JS thread.
#pragma once

#include <memory>

#include "io/file.h"
#include "transport/fuse_loop/fuse_loop_device.h"
#include "transport/tcmu/tcmu_device.h"
#include "transport/transport.h"
#include "util/status.h"

namespace obd {

enum class TransportKind { FuseLoop, Tcmu };

struct ServeOptions {
  TransportKind kind = TransportKind::FuseLoop;
  FuseLoopOptions fuseLoop;         // kind == FuseLoop
  tcmu::TcmuDeviceOptions tcmu;     // kind == Tcmu
};

Result<std::unique_ptr<ServedDevice>> serveBlockDevice(std::shared_ptr<BlockDevice> dev, const ServeOptions& opts);

}  // namespace obd
