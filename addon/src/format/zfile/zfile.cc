// Placeholder implementation so the addon links; the real reader/writer follows.
#include "format/zfile/zfile.h"

#include <cstring>

namespace obd::zfile {

bool looksLikeZFile(const void* first, size_t n) { return false; }

Result<std::shared_ptr<ReadableFile>> open(std::shared_ptr<ReadableFile> compressed, bool verifyBlocks) {
  return Status(ENOSYS, "zfile::open not implemented yet");
}

Result<Info> inspect(ReadableFile& compressed) { return Status(ENOSYS, "zfile::inspect not implemented yet"); }

Result<std::unique_ptr<Writer>> Writer::create(const std::string& path, const CompressOptions& opts) {
  return Status(ENOSYS, "zfile::Writer not implemented yet");
}

}  // namespace obd::zfile
