// Fetched bytes from the socket to the cache file: AlignedBytes keep their storage page-aligned (so
// a direct write takes them as they are), the FetchBufferPool keeps large buffers over small ones,
// and DirectIo writes the same bytes whether they come aligned (straight) or not (bounce buffer).
// Usage: fetch_buffers_test <scratch dir>; prints "ok <case>" per case, exits non-zero on a failure.
#include <fcntl.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "cache/direct_io.h"
#include "check.h"
#include "remote/fetch_buffer_pool.h"
#include "util/aligned_bytes.h"
#include "util/unique_fd.h"

namespace {

constexpr size_t MiB = 1 << 20;
bool aligned(const void* p) { return reinterpret_cast<uintptr_t>(p) % 4096 == 0; }

void alignedBytes() {
  for (size_t n : {size_t{1}, size_t{4095}, size_t{4096}, MiB + 17, 16 * MiB}) {
    obd::AlignedBytes b;
    b.reserve(n);
    CHECK(aligned(b.data()), "reserve(%zu) gave storage at %p", n, static_cast<void*>(b.data()));
    const uint8_t byte = 7;
    for (size_t i = 0; i < 3 * n / 2 + 1; i++) b.push_back(byte);  // grows past its reservation
    CHECK(aligned(b.data()), "after growing to %zu bytes", b.size());
  }
  std::printf("ok aligned bytes\n");
}

void poolKeepsLargeOverSmall() {
  obd::FetchBufferPool pool(8 * MiB);
  for (int i = 0; i < 8; i++) pool.give(pool.take(MiB));  // one buffer, given back each time
  std::vector<obd::AlignedBytes> small;
  for (int i = 0; i < 8; i++) small.push_back(pool.take(MiB));
  for (auto& b : small) pool.give(std::move(b));
  CHECK(pool.keptBytes() >= 7 * MiB, "kept %zu bytes of small buffers", pool.keptBytes());
  obd::AlignedBytes big = pool.take(4 * MiB);
  const uint8_t* where = big.data();
  pool.give(std::move(big));
  CHECK(pool.keptBytes() <= 8 * MiB, "kept %zu bytes, over the limit", pool.keptBytes());
  obd::AlignedBytes again = pool.take(4 * MiB);
  CHECK(again.data() == where, "the 4 MiB buffer was not kept: small ones should have made room");
  CHECK(again.empty() && again.capacity() >= 4 * MiB, "a kept buffer comes back empty with its room");
  pool.give(obd::AlignedBytes());  // nothing to keep
  obd::AlignedBytes huge = pool.take(16 * MiB);
  pool.give(std::move(huge));      // larger than the whole pool: not kept
  CHECK(pool.keptBytes() <= 8 * MiB, "kept %zu bytes after a buffer larger than the pool", pool.keptBytes());
  std::printf("ok pool keeps large buffers over small ones\n");
}

void directWrites(const std::string& dir) {
  const size_t n = 3 * MiB + 1000;  // whole blocks and a tail
  obd::AlignedBytes src;
  for (size_t i = 0; i < n + 1; i++) src.push_back(static_cast<uint8_t>(i * 31 + 7));
  obd::DirectIo io;
  for (int shifted = 0; shifted < 2; shifted++) {  // straight from aligned bytes, then through the bounce buffer
    std::string path = dir + "/direct-" + std::to_string(shifted);
    obd::UniqueFd buffered(::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    obd::UniqueFd direct = obd::DirectIo::open(path, O_WRONLY);
    CHECK(buffered.valid(), "open %s", path.c_str());
    const uint8_t* data = src.data() + shifted;
    obd::Status st = io.write(direct.valid() ? direct.get() : buffered.get(), buffered.get(), data, n, 8192, path);
    CHECK(st.ok(), "write: %s", st.message().c_str());
    std::vector<uint8_t> back(n);
    CHECK(::pread(buffered.get(), back.data(), n, 8192) == static_cast<ssize_t>(n), "read back %s", path.c_str());
    CHECK(std::memcmp(back.data(), data, n) == 0, "bytes written %s differ", shifted ? "through the bounce buffer" : "straight");
  }
  std::printf("ok direct writes, aligned and not\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: fetch_buffers_test <scratch dir>\n");
    return 2;
  }
  alignedBytes();
  poolKeepsLargeOverSmall();
  directWrites(argv[1]);
  return check_failures == 0 ? 0 : 1;
}
