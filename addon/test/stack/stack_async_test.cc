// The layer stack with lowers whose reads complete later, on other threads, in any order — as
// remote lowers do. Checks that every device read completes exactly once, with the same bytes a
// synchronous stack returns, that a failing lower fails exactly the reads that touch it, and that
// concurrent writers and readers on the writable upper see consistent data.
// Usage: stack_async_test <fixture dir> <scratch dir>; prints one line per case, exits 1 on failure.
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <functional>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "format/lsmt/writable.h"
#include "image/stack.h"
#include "check.h"
#include "io/local_file.h"

using namespace obd;

namespace {

// A few worker threads that run queued jobs in random order after a short random delay.
class Shuffler {
 public:
  explicit Shuffler(int threads) {
    for (int i = 0; i < threads; ++i) workers_.emplace_back([this, i] { run(i); });
  }
  ~Shuffler() {
    {
      std::lock_guard<std::mutex> l(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }
  void post(std::function<void()> job) {
    {
      std::lock_guard<std::mutex> l(mu_);
      jobs_.push_back(std::move(job));
    }
    cv_.notify_one();
  }

 private:
  void run(int seed) {
    std::mt19937 rng(seed);
    for (;;) {
      std::function<void()> job;
      {
        std::unique_lock<std::mutex> l(mu_);
        cv_.wait(l, [this] { return stop_ || !jobs_.empty(); });
        if (jobs_.empty()) return;
        size_t pick = rng() % jobs_.size();  // out of order on purpose
        job = std::move(jobs_[pick]);
        jobs_.erase(jobs_.begin() + static_cast<long>(pick));
      }
      std::this_thread::sleep_for(std::chrono::microseconds(rng() % 300));
      job();
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  std::vector<std::thread> workers_;
  bool stop_ = false;
};

// Completes reads of another file later, on a Shuffler thread; optionally fails every read.
class AsyncFile : public ReadableFile {
 public:
  AsyncFile(std::shared_ptr<ReadableFile> inner, Shuffler& pool, bool fail)
      : inner_(std::move(inner)), pool_(pool), fail_(fail) {}
  uint64_t size() const override { return inner_->size(); }
  const std::string& name() const override { return inner_->name(); }
  void readAsync(void* buf, size_t n, uint64_t off, IoCallback cb) override {
    reads++;
    auto inner = inner_;
    bool fail = fail_;
    pool_.post([inner, buf, n, off, cb = std::move(cb), fail] {
      if (fail) return cb(Status(EIO, inner->name() + ": injected failure"));
      cb(inner->read(buf, n, off));
    });
  }
  std::atomic<int> reads{0};

 private:
  std::shared_ptr<ReadableFile> inner_;
  Shuffler& pool_;
  bool fail_;
};

std::shared_ptr<ReadableFile> local(const std::string& path) {
  auto f = LocalFile::open(path);
  if (!f.ok()) {
    std::printf("FAIL open %s: %s\n", path.c_str(), f.status().message().c_str());
    std::exit(1);
  }
  return f.take();
}

std::unique_ptr<LayerStack> open(const StackSpec& spec) {
  auto s = LayerStack::open(spec);
  if (!s.ok()) {
    std::printf("FAIL stack: %s\n", s.status().message().c_str());
    std::exit(1);
  }
  return s.take();
}

struct Pending {
  std::vector<char> buf;
  std::atomic<int> calls{0};
  Status st;
};

// Issues all reads at once, then waits until every callback ran.
void readAll(LayerStack& s, std::vector<std::unique_ptr<Pending>>& reads, const std::vector<std::pair<uint64_t, size_t>>& ranges) {
  std::mutex mu;
  std::condition_variable cv;
  size_t done = 0;
  for (size_t i = 0; i < ranges.size(); ++i) {
    reads.emplace_back(new Pending());
    Pending* p = reads.back().get();
    p->buf.resize(ranges[i].second);
    s.readAsync(p->buf.data(), p->buf.size(), ranges[i].first, [&, p](Status st) {
      p->st = st;
      p->calls++;
      std::lock_guard<std::mutex> l(mu);
      ++done;
      cv.notify_all();
    });
  }
  std::unique_lock<std::mutex> l(mu);
  cv.wait_for(l, std::chrono::seconds(60), [&] { return done >= ranges.size(); });
  CHECK(done == ranges.size(), "only %zu of %zu reads completed", done, ranges.size());
}

std::vector<std::pair<uint64_t, size_t>> randomRanges(std::mt19937_64& rng, uint64_t size, int n) {
  std::vector<std::pair<uint64_t, size_t>> r;
  for (int i = 0; i < n; ++i) {
    size_t len = 512 * (1 + rng() % 2048);
    uint64_t off = 512 * (rng() % ((size - len) / 512));
    r.emplace_back(off, len);
  }
  return r;
}

void concurrentReadsMatchSync(const std::string& fx, Shuffler& pool) {
  for (const char* lowerName : {"b_patterns/b.commit.lsmt", "c_zfile/c.lz4_bs4k.zfile.tar"}) {
    StackSpec sync, async;
    sync.lowers = {local(fx + lowerName), local(fx + "d_stack/d.commit.lsmt")};
    auto a0 = std::make_shared<AsyncFile>(local(fx + lowerName), pool, false);
    auto a1 = std::make_shared<AsyncFile>(local(fx + "d_stack/d.commit.lsmt"), pool, false);
    async.lowers = {a0, a1};
    auto s = open(sync), a = open(async);
    std::mt19937_64 rng(42);
    auto ranges = randomRanges(rng, s->size(), 400);
    // hot spots: the mapped areas of b and d, so most reads fan out over several pieces
    for (uint64_t off : {0ull, 8388608ull - 4096, 8392704ull, 8912896ull - 512, 62913536ull - 8192, 33554432ull})
      ranges.emplace_back(off, 1 << 20);
    std::vector<std::unique_ptr<Pending>> reads;
    readAll(*a, reads, ranges);
    std::vector<char> want;
    for (size_t i = 0; i < ranges.size(); ++i) {
      want.resize(ranges[i].second);
      Status st = s->read(want.data(), want.size(), ranges[i].first);
      CHECK(st.ok(), "sync read failed: %s", st.message().c_str());
      CHECK(reads[i]->calls == 1, "read %zu completed %d times", i, reads[i]->calls.load());
      CHECK(reads[i]->st.ok(), "async read %zu failed: %s", i, reads[i]->st.message().c_str());
      CHECK(std::memcmp(want.data(), reads[i]->buf.data(), want.size()) == 0, "read %zu at %llu+%zu differs", i,
            (unsigned long long)ranges[i].first, ranges[i].second);
    }
    CHECK(a0->reads > 10 && a1->reads > 5, "lowers were read asynchronously (%d, %d)", a0->reads.load(), a1->reads.load());
    std::printf("ok concurrent async reads over %s + d match the synchronous stack (%zu reads, %d+%d lower reads)\n",
                lowerName, ranges.size(), a0->reads.load(), a1->reads.load());
  }
}

void failingLowerFailsOnlyItsReads(const std::string& fx, Shuffler& pool) {
  StackSpec spec;
  spec.lowers = {std::make_shared<AsyncFile>(local(fx + "b_patterns/b.commit.lsmt"), pool, true),
                 local(fx + "d_stack/d.commit.lsmt")};
  // a stack whose lower fails at open time reports that, naming the file
  auto broken = LayerStack::open(spec);
  CHECK(!broken.ok() && broken.status().code() == EIO &&
            broken.status().message().find("b.commit.lsmt") != std::string::npos,
        "open over a failing lower: %s", broken.status().message().c_str());
  // a lower that starts failing after the stack is open (a registry outage)
  struct FailAfterOpen : public ReadableFile {
    std::shared_ptr<ReadableFile> inner;
    Shuffler* pool;
    std::atomic<bool> failing{false};
    uint64_t size() const override { return inner->size(); }
    const std::string& name() const override { return inner->name(); }
    void readAsync(void* buf, size_t n, uint64_t off, IoCallback cb) override {
      bool f = failing;
      auto in = inner;
      pool->post([in, buf, n, off, cb = std::move(cb), f] { cb(f ? Status(EIO, in->name() + ": injected") : in->read(buf, n, off)); });
    }
  };
  auto fao = std::make_shared<FailAfterOpen>();
  fao->inner = local(fx + "b_patterns/b.commit.lsmt");
  fao->pool = &pool;
  StackSpec spec2;
  spec2.lowers = {fao, local(fx + "d_stack/d.commit.lsmt")};
  auto s2 = open(spec2);
  fao->failing = true;
  std::vector<std::pair<uint64_t, size_t>> ranges = {
      {0, 4096},            // b data (0xAA block) partly masked by d: must fail
      {8388608, 1 << 20},   // b's 1 MiB extent: must fail
      {20 << 20, 1 << 20},  // hole everywhere: must succeed (zeros)
      {33554432, 8192},     // d data only: must succeed
      {8912896, 65536},     // d zeroed over b data: must succeed (zeros)
  };
  std::vector<std::unique_ptr<Pending>> reads;
  readAll(*s2, reads, ranges);
  bool expectFail[] = {true, true, false, false, false};
  for (size_t i = 0; i < ranges.size(); ++i) {
    CHECK(reads[i]->calls == 1, "read %zu completed %d times", i, reads[i]->calls.load());
    CHECK(reads[i]->st.ok() == !expectFail[i], "read %zu: %s", i, reads[i]->st.ok() ? "ok" : reads[i]->st.message().c_str());
    if (expectFail[i]) CHECK(reads[i]->st.code() == EIO, "read %zu code %d", i, reads[i]->st.code());
  }
  std::vector<char> zero(65536, 0);
  CHECK(std::memcmp(reads[4]->buf.data(), zero.data(), 65536) == 0, "zeroed extent over a failing lower reads zeros");
  std::printf("ok a failing lower fails exactly the reads that need it, each callback once\n");
}

void concurrentWritersAndReaders(const std::string& fx, const std::string& scratch, Shuffler& pool) {
  std::string data = scratch + "/conc.data", index = scratch + "/conc.index";
  ::unlink(data.c_str());
  ::unlink(index.c_str());
  lsmt::CreateOptions co;
  auto created = lsmt::WritableLayer::create(data, index, co);
  CHECK(created.ok(), "create: %s", created.status().message().c_str());
  if (created.ok()) created.value().reset();  // close it; the stack opens it again
  StackSpec spec;
  spec.lowers = {std::make_shared<AsyncFile>(local(fx + "b_patterns/b.commit.lsmt"), pool, false)};
  spec.upperData = data;
  spec.upperIndex = index;
  auto s = open(spec);
  CHECK(s->size() == 64 << 20, "upper took the lower's size: %llu", (unsigned long long)s->size());
  constexpr int kThreads = 4;
  constexpr uint64_t kRegion = 8 << 20;  // thread t owns [t*16 MiB, t*16 MiB + 8 MiB)
  std::vector<std::thread> threads;
  std::atomic<int> bad{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(t + 1);
      std::vector<char> ref(kRegion), got;
      uint64_t base = uint64_t(t) * (16 << 20);
      if (s->read(ref.data(), ref.size(), base).ok() == false) bad++;
      for (int op = 0; op < 300; ++op) {
        size_t len = 512 * (1 + rng() % 256);
        uint64_t off = 512 * (rng() % ((kRegion - len) / 512));
        if (rng() % 5 == 0) {
          if (!s->discard(base + off, len).ok()) bad++;
          std::memset(ref.data() + off, 0, len);
        } else {
          std::vector<char> w(len, static_cast<char>(rng()));
          if (!s->write(w.data(), len, base + off).ok()) bad++;
          std::memcpy(ref.data() + off, w.data(), len);
        }
        got.resize(len);
        if (!s->read(got.data(), len, base + off).ok() || std::memcmp(got.data(), ref.data() + off, len) != 0) bad++;
      }
      got.resize(kRegion);
      if (!s->read(got.data(), kRegion, base).ok() || got != ref) bad++;
    });
  }
  for (auto& th : threads) th.join();
  CHECK(bad == 0, "%d inconsistent operations under concurrency", bad.load());
  CHECK(s->flush().ok(), "flush");
  std::printf("ok %d threads writing, discarding and reading through the upper stay consistent\n", kThreads);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::printf("usage: stack_async_test <fixture dir> <scratch dir>\n");
    return 2;
  }
  std::string fx = std::string(argv[1]) + "/";
  Shuffler pool(4);
  concurrentReadsMatchSync(fx, pool);
  failingLowerFailsOnlyItsReads(fx, pool);
  concurrentWritersAndReaders(fx, argv[2], pool);
  if (check_failures) std::printf("%d check(s) failed\n", check_failures);
  return check_failures ? 1 : 0;
}
