// obd-fetch-floor: the least work a lazy block cache must do with a cold sequential read, as a
// reference for `npm run bench -- registry`. One libcurl GET of the whole range; each body chunk is
// copied once into page-aligned buffers (allocated and faulted in before the clock starts), each
// filled buffer is copied once more to a reader's buffer (what a waiting read gets) and written to
// a cache file with O_DIRECT by a second thread. No read-ahead policy, no scheduling, no JS.
//
// Usage: obd-fetch-floor <url> <bytes> <cache file>
// Prints {"receivedMs": time until the reader had every byte, "persistedMs": until all were written}.
#include <curl/curl.h>
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

constexpr size_t kBuffer = 4 << 20;
constexpr size_t kRead = 1 << 20;  // the reader's request size (as the kernel's FUSE reads)

struct Free {
  void operator()(uint8_t* p) const { std::free(p); }
};

struct Pipeline {
  std::vector<std::unique_ptr<uint8_t, Free>> buffers;
  size_t next = 0;     // the buffer being filled
  size_t filled = 0;   // bytes in it
  uint64_t received = 0;
  uint64_t expected = 0;
  std::unique_ptr<uint8_t, Free> reader;
  std::mutex mu;
  std::condition_variable cv;
  std::deque<size_t> toWrite;  // buffer indexes, in order
  bool ended = false;
  int fd = -1;
  std::string writeError;

  void handOver() {
    const uint8_t* b = buffers[next].get();
    for (size_t k = 0; k < filled; k += kRead) std::memcpy(reader.get(), b + k, std::min(kRead, filled - k));
    std::lock_guard<std::mutex> g(mu);
    toWrite.push_back(next++);
    filled = 0;
    cv.notify_one();
  }

  void writeAll() {
    for (;;) {
      size_t i;
      {
        std::unique_lock<std::mutex> g(mu);
        cv.wait(g, [&] { return ended || !toWrite.empty(); });
        if (toWrite.empty()) return;
        i = toWrite.front();
        toWrite.pop_front();
      }
      uint64_t off = static_cast<uint64_t>(i) * kBuffer;
      size_t n = static_cast<size_t>(std::min<uint64_t>(kBuffer, expected - off));
      size_t whole = (n + 4095) / 4096 * 4096;  // O_DIRECT: whole blocks (the tail is zero-padded)
      if (::pwrite(fd, buffers[i].get(), whole, static_cast<off_t>(off)) != static_cast<ssize_t>(whole)) {
        std::lock_guard<std::mutex> g(mu);
        writeError = std::string("cache file write: ") + std::strerror(errno);
      }
    }
  }
};

size_t onBody(char* p, size_t size, size_t n, void* ud) {
  auto* pl = static_cast<Pipeline*>(ud);
  size_t len = size * n;
  if (pl->received + len > pl->expected) return 0;  // more than asked: fail the transfer
  for (size_t k = 0; k < len;) {
    size_t m = std::min(len - k, kBuffer - pl->filled);
    std::memcpy(pl->buffers[pl->next].get() + pl->filled, p + k, m);
    pl->filled += m;
    k += m;
    if (pl->filled == kBuffer) pl->handOver();
  }
  pl->received += len;
  return len;
}

double msSince(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t).count();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: obd-fetch-floor <url> <bytes> <cache file>\n");
    return 2;
  }
  Pipeline pl;
  pl.expected = std::strtoull(argv[2], nullptr, 10);
  if (pl.expected == 0) {
    std::fprintf(stderr, "obd-fetch-floor: bytes must be a positive number, got \"%s\"\n", argv[2]);
    return 2;
  }
  pl.fd = ::open(argv[3], O_WRONLY | O_CREAT | O_TRUNC | O_DIRECT | O_CLOEXEC, 0600);
  if (pl.fd < 0) {
    std::fprintf(stderr, "obd-fetch-floor: %s: %s\n", argv[3], std::strerror(errno));
    return 1;
  }
  for (uint64_t off = 0; off < pl.expected; off += kBuffer) {
    pl.buffers.emplace_back(static_cast<uint8_t*>(std::aligned_alloc(4096, kBuffer)));
    std::memset(pl.buffers.back().get(), 0, kBuffer);  // faulted in now, not on the clock
  }
  pl.reader.reset(static_cast<uint8_t*>(std::aligned_alloc(4096, kRead)));
  std::memset(pl.reader.get(), 0, kRead);

  curl_global_init(CURL_GLOBAL_DEFAULT);
  CURL* e = curl_easy_init();
  std::string range = "0-" + std::to_string(pl.expected - 1);
  curl_easy_setopt(e, CURLOPT_URL, argv[1]);
  curl_easy_setopt(e, CURLOPT_RANGE, range.c_str());
  curl_easy_setopt(e, CURLOPT_BUFFERSIZE, 512L << 10);  // as the native client's
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, onBody);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, &pl);
  std::thread writer([&pl] { pl.writeAll(); });
  auto t0 = std::chrono::steady_clock::now();
  CURLcode rc = curl_easy_perform(e);
  if (pl.filled > 0) pl.handOver();
  double receivedMs = msSince(t0);
  {
    std::lock_guard<std::mutex> g(pl.mu);
    pl.ended = true;
    pl.cv.notify_one();
  }
  writer.join();
  double persistedMs = msSince(t0);
  long status = 0;
  curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
  curl_easy_cleanup(e);
  ::close(pl.fd);
  if (rc != CURLE_OK || (status != 206 && status != 200) || pl.received != pl.expected || !pl.writeError.empty()) {
    std::fprintf(stderr, "obd-fetch-floor: GET %s: %s, HTTP %ld, %llu of %llu bytes%s%s\n", argv[1], curl_easy_strerror(rc), status,
                 static_cast<unsigned long long>(pl.received), static_cast<unsigned long long>(pl.expected),
                 pl.writeError.empty() ? "" : "; ", pl.writeError.c_str());
    return 1;
  }
  std::printf("{\"receivedMs\":%.1f,\"persistedMs\":%.1f}\n", receivedMs, persistedMs);
  return 0;
}
