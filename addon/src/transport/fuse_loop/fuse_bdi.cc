#include "transport/fuse_loop/fuse_bdi.h"

#include <sys/sysmacros.h>

#include <fstream>

namespace obd {

std::string bdiDirOf(dev_t fsDev) {
  return "/sys/class/bdi/" + std::to_string(major(fsDev)) + ":" + std::to_string(minor(fsDev));
}

Status applyBdiSettings(dev_t fsDev, const FuseBdiSettings& s) {
  const std::string dir = bdiDirOf(fsDev);
  // strict_limit first: max_ratio above 1 is only meaningful once the strict per-bdi limit is off.
  const std::pair<const char*, int> values[] = {
      {"strict_limit", s.strictLimit ? 1 : 0}, {"max_ratio", s.maxRatio}, {"read_ahead_kb", s.readAheadKb}};
  for (const auto& [name, value] : values) {
    std::ofstream out(dir + "/" + name);
    out << value;
    out.flush();
    if (!out) return IoError(dir + "/" + name + ": cannot write " + std::to_string(value));
  }
  return Status::Ok();
}

}  // namespace obd
