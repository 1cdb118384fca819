#include "io/file.h"

#include <future>

namespace obd {

namespace {
template <typename Source>
Status blockingRead(Source& src, void* buf, size_t n, uint64_t off) {
  auto done = std::make_shared<std::promise<Status>>();
  auto result = done->get_future();
  src.readAsync(buf, n, off, [done](Status st) { done->set_value(std::move(st)); });
  return result.get();
}
}  // namespace

Status ReadableFile::read(void* buf, size_t n, uint64_t off) { return blockingRead(*this, buf, n, off); }
Status BlockDevice::read(void* buf, size_t n, uint64_t off) { return blockingRead(*this, buf, n, off); }

}  // namespace obd
