// A local file as a ReadableFile (reads complete inline).
#pragma once

#include <memory>
#include <string>

#include "io/file.h"
#include "util/unique_fd.h"

namespace obd {

class LocalFile : public ReadableFile {
 public:
  static Result<std::shared_ptr<LocalFile>> open(const std::string& path);
  uint64_t size() const override { return size_; }
  const std::string& name() const override { return path_; }
  void readAsync(void* buf, size_t n, uint64_t off, IoCallback cb) override { cb(readSync(buf, n, off)); }
  Status readSync(void* buf, size_t n, uint64_t off);
  int fd() const { return fd_.get(); }

 private:
  LocalFile(std::string path, UniqueFd fd, uint64_t size) : path_(std::move(path)), fd_(std::move(fd)), size_(size) {}
  std::string path_;
  UniqueFd fd_;
  uint64_t size_;
};

}  // namespace obd
