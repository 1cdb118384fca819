// Byte buffers whose storage starts on a page boundary. Fetched bytes live in them from the socket
// to the block cache: a direct (O_DIRECT) write wants memory aligned to the device's DMA alignment
// (512 bytes here), which plain vectors miss by 16 bytes, and copying each window through a bounce
// buffer cost as much CPU as receiving it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <vector>

namespace obd {

template <class T>
struct PageAlignedAllocator {
  using value_type = T;
  static constexpr size_t kAlign = 4096;
  PageAlignedAllocator() = default;
  template <class U>
  PageAlignedAllocator(const PageAlignedAllocator<U>&) {}
  T* allocate(size_t n) {
    size_t bytes = (n * sizeof(T) + kAlign - 1) / kAlign * kAlign;  // aligned_alloc wants a multiple
    void* p = std::aligned_alloc(kAlign, bytes ? bytes : kAlign);
    if (!p) throw std::bad_alloc();
    return static_cast<T*>(p);
  }
  void deallocate(T* p, size_t) { std::free(p); }
  template <class U>
  bool operator==(const PageAlignedAllocator<U>&) const { return true; }
  template <class U>
  bool operator!=(const PageAlignedAllocator<U>&) const { return false; }
};

using AlignedBytes = std::vector<uint8_t, PageAlignedAllocator<uint8_t>>;

}  // namespace obd
