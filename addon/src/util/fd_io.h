// Whole-buffer pread/pwrite on a file descriptor: loops over short transfers and EINTR, and
// turns failures into a Status naming the file and offset.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "util/status.h"

namespace obd {

Status pwriteAll(int fd, const void* buf, size_t n, uint64_t off, const std::string& name);
// A read that hits end of file before n bytes is an error (EBADMSG: the file is shorter than its
// metadata says).
Status preadAll(int fd, void* buf, size_t n, uint64_t off, const std::string& name);
// As preadAll, but bytes past end of file read as zero (sparse tails, files that shrank).
Status preadOrZero(int fd, void* buf, size_t n, uint64_t off, const std::string& name);
// Sequential write at the current file position.
Status writeAll(int fd, const void* buf, size_t n, const std::string& name);

}  // namespace obd
