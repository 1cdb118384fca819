// What every transport (fuse-loop, tcmu) gives deviced: a served block device with a kernel path,
// counters, and an orderly shutdown. Kept small on purpose so both transports can implement it.
// transport/serve.h (serveBlockDevice) is the one place a transport is picked.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <string>

#include "util/status.h"

namespace obd {

// Live counters of one served device. Updated by the transport's I/O threads, read by anyone.
struct DeviceCounters {
  std::atomic<uint64_t> readOps{0}, readBytes{0};        // what the kernel asked for
  std::atomic<uint64_t> writeOps{0}, writeBytes{0};
  std::atomic<uint64_t> discardOps{0}, discardBytes{0};
  std::atomic<uint64_t> flushOps{0};
  std::atomic<uint64_t> coalescedReads{0};               // reads answered from another in-flight read
  std::atomic<int64_t> inFlight{0};
  std::atomic<uint64_t> errors{0};                       // requests answered with an error
};

struct DeviceStats {
  uint64_t readOps = 0, readBytes = 0, writeOps = 0, writeBytes = 0, discardOps = 0, discardBytes = 0;
  uint64_t flushOps = 0, coalescedReads = 0, errors = 0;
  int64_t inFlight = 0;
  // tcmu only (0 for fuse-loop): command ring entries fetched, PADs skipped, entries rejected, doorbell writes.
  uint64_t ringCommands = 0, ringPads = 0, ringBadEntries = 0, ringNotifications = 0;
};

inline DeviceStats snapshotCounters(const DeviceCounters& c) {
  DeviceStats s;
  s.readOps = c.readOps.load();
  s.readBytes = c.readBytes.load();
  s.writeOps = c.writeOps.load();
  s.writeBytes = c.writeBytes.load();
  s.discardOps = c.discardOps.load();
  s.discardBytes = c.discardBytes.load();
  s.flushOps = c.flushOps.load();
  s.coalescedReads = c.coalescedReads.load();
  s.errors = c.errors.load();
  s.inFlight = c.inFlight.load();
  return s;
}

class ServedDevice {
 public:
  virtual ~ServedDevice() = default;
  virtual const std::string& path() const = 0;  // /dev/loopN, /dev/sdX
  virtual dev_t rdev() const = 0;
  virtual uint64_t size() const = 0;
  virtual bool readOnly() const = 0;
  virtual DeviceStats stats() const = 0;
  // Stops serving. Without force, refuses (EBUSY) while something holds the device exclusively
  // (a mounted filesystem, mkfs). With force, the kernel side is torn down anyway: later I/O fails.
  virtual Status close(bool force) = 0;
  // Process exit: stops serving. A transport whose kernel side a later process can adopt leaves it in
  // place, so mounts survive a deviced restart: tcmu always (the kernel holds it), fuse-loop when
  // `handOver` says its descriptors are kept for a successor (the fd store). Otherwise as close(true).
  virtual void release(bool handOver) { (void)close(true); }
};

}  // namespace obd
