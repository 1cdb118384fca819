#include "util/status.h"

#include <cstring>

namespace obd {

Status SysError(const std::string& what, int err) {
  return Status(err ? err : EIO, what + ": " + std::strerror(err));
}

}  // namespace obd
