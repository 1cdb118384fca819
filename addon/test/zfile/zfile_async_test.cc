// The ZFile reader over a source whose reads complete later on other threads (as a remote blob's
// do) or come back corrupted (as a bad network or cache read would): ranges read concurrently come
// back right, a block whose checksum fails is fetched again up to 3 times, and without
// verification a corrupted fetch is not retried (and never crashes).
// Usage: zfile_async_test <scratch dir>; prints one line per case, exits 1 on failure.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "faulty_source.h"
#include "format/zfile/zfile.h"
#include "check.h"
#include "io/local_file.h"

using namespace obd;

namespace {

// Runs of words, zeros and random bytes: some blocks compress well, some not at all.
std::vector<uint8_t> mixedData(size_t size, uint32_t seed) {
  std::minstd_rand rnd(seed);
  const char* words[] = {"overlaybd ", "layer ", "block ", "zfile ", "containerd ", "snapshot ", "ext4 ", "\n"};
  std::vector<uint8_t> out(size, 0);
  for (size_t off = 0; off < size;) {
    const size_t len = std::min<size_t>(size - off, 1 + rnd() % 20000);
    const unsigned kind = rnd() % 3;
    for (size_t i = 0; i < len;) {
      if (kind == 0) {
        const char* w = words[rnd() % 8];
        for (size_t k = 0; w[k] && i < len; ++k, ++i) out[off + i] = static_cast<uint8_t>(w[k]);
      } else if (kind == 1) {
        i = len;  // zeros
      } else {
        out[off + i++] = static_cast<uint8_t>(rnd());
      }
    }
    off += len;
  }
  return out;
}

std::shared_ptr<ReadableFile> openLocal(const std::string& path) {
  auto f = LocalFile::open(path);
  if (!f.ok()) {
    std::printf("FAIL open %s: %s\n", path.c_str(), f.status().message().c_str());
    std::exit(1);
  }
  return f.take();
}

std::string compressed(const std::string& dir, const std::string& input, zfile::Algorithm algorithm, uint32_t blockSize) {
  const std::string out = dir + "/" + (algorithm == zfile::Algorithm::kLz4 ? "lz4" : "zstd") + "-" + std::to_string(blockSize) + ".zfile";
  zfile::CompressOptions o;
  o.algorithm = algorithm;
  o.blockSize = blockSize;
  auto in = openLocal(input);
  Status st = zfile::compressFile(*in, out, o);
  if (!st.ok()) {
    std::printf("FAIL compress %s: %s\n", out.c_str(), st.message().c_str());
    std::exit(1);
  }
  return out;
}

struct Opened {
  std::shared_ptr<zfile::FaultySource> source;
  std::shared_ptr<ReadableFile> file;
};

Opened openFaulty(const std::string& path, bool verify, bool otherThread) {
  Opened o;
  o.source = std::make_shared<zfile::FaultySource>(openLocal(path), otherThread);
  auto z = zfile::open(o.source, verify);
  if (!z.ok()) {
    std::printf("FAIL zfile open %s: %s\n", path.c_str(), z.status().message().c_str());
    std::exit(1);
  }
  o.file = z.take();
  return o;
}

bool sameAs(const std::vector<uint8_t>& data, const std::vector<uint8_t>& got, uint64_t off) {
  for (size_t i = 0; i < got.size(); ++i) {
    const uint8_t want = off + i < data.size() ? data[off + i] : 0;
    if (got[i] != want) return false;
  }
  return true;
}

void concurrentRanges(const std::string& dir, const std::string& input, const std::vector<uint8_t>& data) {
  const int before = check_failures;
  for (auto algorithm : {zfile::Algorithm::kLz4, zfile::Algorithm::kZstd}) {
    const std::string z = compressed(dir, input, algorithm, 16384);
    Opened r = openFaulty(z, true, true);
    std::minstd_rand rnd(5);
    std::vector<std::pair<uint64_t, size_t>> ranges;
    for (int i = 0; i < 64; ++i) ranges.emplace_back(rnd() % data.size(), rnd() % (2 << 20));
    std::vector<std::thread> readers;
    std::vector<int> bad(ranges.size(), 0);
    for (int t = 0; t < 4; ++t) {
      readers.emplace_back([&, t] {
        for (size_t i = t; i < ranges.size(); i += 4) {
          std::vector<uint8_t> buf(ranges[i].second);
          Status st = r.file->read(buf.data(), buf.size(), ranges[i].first);
          bad[i] = !st.ok() || !sameAs(data, buf, ranges[i].first);
        }
      });
    }
    for (auto& t : readers) t.join();
    for (size_t i = 0; i < ranges.size(); ++i) CHECK(!bad[i], "%s range %llu+%zu", z.c_str(), (unsigned long long)ranges[i].first, ranges[i].second);
    std::vector<uint8_t> all(data.size());
    CHECK(r.file->read(all.data(), all.size(), 0).ok() && all == data, "%s: whole file", z.c_str());
  }
  std::printf("%s concurrent ranges through a source completing on other threads\n", check_failures == before ? "ok" : "not ok");
}

void checksumRetries(const std::string& dir, const std::string& input, const std::vector<uint8_t>& data) {
  const int before = check_failures;
  const std::string z = compressed(dir, input, zfile::Algorithm::kLz4, 4096);
  const std::vector<uint8_t> want(data.begin() + 8192, data.begin() + 12288);
  for (bool otherThread : {false, true}) {
    Opened twice = openFaulty(z, true, otherThread);
    twice.source->corruptNext(2);
    const uint64_t reads = twice.source->readCount();
    std::vector<uint8_t> buf(4096);
    CHECK(twice.file->read(buf.data(), buf.size(), 8192).ok() && buf == want, "third attempt succeeds (otherThread=%d)", otherThread);
    CHECK(twice.source->readCount() - reads == 3, "3 source reads, got %llu", (unsigned long long)(twice.source->readCount() - reads));

    Opened thrice = openFaulty(z, true, otherThread);
    thrice.source->corruptNext(3);
    Status st = thrice.file->read(buf.data(), buf.size(), 8192);
    CHECK(!st.ok() && st.message().find("block 2") != std::string::npos && st.message().find("checksum mismatch") != std::string::npos,
          "fourth corrupt fetch fails naming the block: %s", st.message().c_str());
    CHECK(thrice.file->read(buf.data(), buf.size(), 8192).ok() && buf == want, "later reads are fine (otherThread=%d)", otherThread);
  }
  std::printf("%s a block whose checksum fails is fetched again up to 3 times\n", check_failures == before ? "ok" : "not ok");
}

void noRetryWithoutVerify(const std::string& dir, const std::string& input) {
  const int before = check_failures;
  const std::string z = compressed(dir, input, zfile::Algorithm::kLz4, 4096);
  Opened r = openFaulty(z, false, false);
  r.source->corruptNext(1);
  const uint64_t reads = r.source->readCount();
  std::vector<uint8_t> buf(4096);
  (void)r.file->read(buf.data(), buf.size(), 0);  // wrong bytes or an lz4 error, never a crash
  CHECK(r.source->readCount() - reads == 1, "one source read, got %llu", (unsigned long long)(r.source->readCount() - reads));
  std::printf("%s without verification a corrupted fetch is not retried\n", check_failures == before ? "ok" : "not ok");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: zfile_async_test <scratch dir>\n");
    return 2;
  }
  const std::string dir = argv[1];
  const std::vector<uint8_t> data = mixedData(3 << 20, 4242);
  const std::string input = dir + "/async-in";
  FILE* f = std::fopen(input.c_str(), "wb");
  if (!f || std::fwrite(data.data(), 1, data.size(), f) != data.size() || std::fclose(f) != 0) {
    std::printf("FAIL writing %s\n", input.c_str());
    return 1;
  }
  concurrentRanges(dir, input, data);
  checksumRetries(dir, input, data);
  noRetryWithoutVerify(dir, input);
  return check_failures == 0 ? 0 : 1;
}
