// A raw disk image file as a BlockDevice: the transport's baseline (benchmarks compare the FUSE
// path against a plain loop device on the same bytes) and a stand-in stack for transport tests.
#pragma once

#include <memory>
#include <string>

#include "io/file.h"
#include "util/unique_fd.h"

namespace obd {

class RawFileDevice : public BlockDevice {
 public:
  static Result<std::unique_ptr<BlockDevice>> open(const std::string& path, bool writable);
  uint64_t size() const override { return size_; }
  bool readOnly() const override { return !writable_; }
  void readAsync(void* buf, size_t n, uint64_t off, IoCallback cb) override;
  Status write(const void* buf, size_t n, uint64_t off) override;
  Status discard(uint64_t off, uint64_t n) override;
  Status flush() override;

 private:
  RawFileDevice(std::string path, UniqueFd fd, uint64_t size, bool writable)
      : path_(std::move(path)), fd_(std::move(fd)), size_(size), writable_(writable) {}
  std::string path_;
  UniqueFd fd_;
  uint64_t size_;
  bool writable_;
};

}  // namespace obd
