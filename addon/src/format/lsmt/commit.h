// Commit (compact) a writable layer into a sealed layer blob, byte-identical to overlaybd-commit
// (docs/formats.md, LSMT), optionally streamed through a ZFile writer (`overlaybd-commit -z`).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "format/lsmt/writable.h"
#include "format/zfile/zfile.h"

namespace obd::lsmt {

struct CommitOptions {
  std::string uuid;                       // "" → null uuid (as upstream without --uuid)
  std::optional<std::string> parentUuid;  // unset → copied from the writable layer's header
  std::string userTag;
  std::optional<zfile::CompressOptions> zfile;
  // Warp (TurboOCI meta) commit: these runs of the virtual disk are not copied but map to the
  // target stream (moffset = target sector); they override what the writable layer holds there and
  // are written with tag 1, the copied blocks with tag 0 (turbo-oci spec §4).
  std::vector<Segment> targetRuns;
};

struct CommitStats {
  uint64_t bytes = 0;         // size of the LSMT blob (before ZFile)
  uint64_t extents = 0;       // live index entries
  uint64_t indexEntries = 0;  // incl. padding
};

// Writes `outPath` (replacing it); a partial output is removed on failure.
Result<CommitStats> commit(const WritableLayer& src, const std::string& outPath, const CommitOptions& opts);

}  // namespace obd::lsmt
