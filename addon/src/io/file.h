// The two abstractions every layer of the data path is written against.
//
// ReadableFile: a random-access byte source (a local file, a ZFile's decompressed view, a tar-wrapped
// payload, a remote blob through the block cache). Reads are asynchronous so that a remote miss never
// parks a thread: the callback may run inline (local files) or later on another thread (remote).
//
// BlockDevice: the virtual disk a transport (fuse-loop, TCMU) serves: a layer stack.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "util/status.h"

namespace obd {

using IoCallback = std::function<void(Status)>;

class ReadableFile {
 public:
  virtual ~ReadableFile() = default;
  // Logical size in bytes.
  virtual uint64_t size() const = 0;
  // Name used in error messages (path, or "sha256:…" for a remote blob).
  virtual const std::string& name() const = 0;
  // Fill buf with n bytes at off. Bytes at or beyond size() read as zero. cb runs exactly once.
  virtual void readAsync(void* buf, size_t n, uint64_t off, IoCallback cb) = 0;
  // Blocking convenience for tools, open paths and tests. Never call on the JS thread for a file
  // whose misses are served by JS (it would deadlock).
  Status read(void* buf, size_t n, uint64_t off);
};

class BlockDevice {
 public:
  virtual ~BlockDevice() = default;
  virtual uint64_t size() const = 0;
  virtual bool readOnly() const = 0;
  // All offsets/lengths are multiples of 512. cb runs exactly once, inline or on another thread.
  virtual void readAsync(void* buf, size_t n, uint64_t off, IoCallback cb) = 0;
  virtual Status write(const void* buf, size_t n, uint64_t off) = 0;
  virtual Status discard(uint64_t off, uint64_t n) = 0;  // later reads return zeros
  virtual Status flush() = 0;                            // data and index durable
  Status read(void* buf, size_t n, uint64_t off);        // blocking, as ReadableFile::read
};

}  // namespace obd
