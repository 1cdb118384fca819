// What a layer file is (`obd layer info`): the wrappers found by magic bytes, outermost first, and
// the decoded LSMT / ZFile fields.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "format/lsmt/header.h"
#include "format/zfile/zfile.h"

namespace obd {

struct LayerDescription {
  uint64_t fileSize = 0;
  // e.g. {"tar-wrapped", "zfile", "lsmt-sealed"}; the last one is what the payload is:
  // lsmt-sealed, lsmt-rw-data, lsmt-rw-index or unknown.
  std::vector<std::string> formats;
  std::optional<zfile::Info> zfile;
  std::optional<lsmt::HeaderTrailer> header;
  std::optional<lsmt::HeaderTrailer> trailer;  // sealed layers only
  uint64_t extentCount = 0;                    // live index entries (sealed) / live records (rw index)
  uint64_t zeroedCount = 0;
  uint64_t dataBytes = 0;                      // bytes of mapped, non-zeroed data
};

// Fails when a recognised format is damaged (the message names the file and the problem).
Result<LayerDescription> describeLayer(const std::string& path);

}  // namespace obd
