// The kernel's per-filesystem writeback and readahead settings of one FUSE connection: its bdi
// (backing_dev_info), /sys/class/bdi/<major>:<minor> of the mount's st_dev.
//
// The kernel protects itself from untrusted FUSE servers: a FUSE bdi may hold at most 1% of the dirty
// threshold, enforced strictly (strict_limit), so a writer is throttled to the server's FUSE_WRITE
// round trips almost at once. deviced is root and trusted, and a page-cached device's dirty pages are
// the container's disk writes: its bdi gets the limits of an ordinary disk (strict_limit off, a
// larger share). The machine-wide limits (vm.dirty_ratio, vm.dirty_background_ratio) still bound all
// dirty memory together. The readahead window is raised to the largest request the connection takes.
#pragma once

#include <sys/types.h>

#include <string>

#include "util/status.h"

namespace obd {

struct FuseBdiSettings {
  int maxRatio = 100;      // percent of the dirty threshold this bdi may hold
  bool strictLimit = false;
  int readAheadKb = 1024;  // = max_pages (256) x 4 KiB: one readahead is one FUSE_READ
};

// "/sys/class/bdi/<major>:<minor>" of the filesystem `fsDev` (st_dev of a file on it).
std::string bdiDirOf(dev_t fsDev);

// Writes the settings; the error names the sysfs file that refused.
Status applyBdiSettings(dev_t fsDev, const FuseBdiSettings& s);

}  // namespace obd
