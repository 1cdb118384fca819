// Memory for fetched bytes, kept for reuse. A fetch of a sequential stream fills a buffer of up to
// a window (16 MiB) that lives until its units are written to the block cache; allocating each anew
// faults in thousands of fresh pages, and on a VM whose free memory goes back to the host (balloon
// free-page reporting) a fresh page costs several microseconds: the faults cost more than receiving
// the bytes. Buffers given back stay mapped and are handed out again.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "util/aligned_bytes.h"

namespace obd {

class FetchBufferPool {
 public:
  static FetchBufferPool& shared();
  explicit FetchBufferPool(size_t keepBytes) : keepBytes_(keepBytes) {}
  // An empty buffer with room for at least `bytes` (a kept one when there is one large enough).
  AlignedBytes take(size_t bytes);
  // Keeps `buf` for reuse while the pool holds less than its limit; small buffers are not kept.
  void give(AlignedBytes buf);
  // `buf` as shared read-only bytes that go back to this pool when the last reference drops.
  std::shared_ptr<const AlignedBytes> share(AlignedBytes buf);
  size_t keptBytes() const;

 private:
  const size_t keepBytes_;
  mutable std::mutex mu_;
  std::vector<AlignedBytes> kept_;
  size_t keptBytes_ = 0;
};

}  // namespace obd
