// Orders the fetches of every remote file of one fetcher (one deviced) so that demand comes first:
// a demand miss starts at once; read-ahead, trace prefetch and background download wait in their
// own queues with a bounded number in flight each, background only while nothing else is fetched.
// A queued fetch that a demand read comes to wait on is promoted and starts at once.
//
// It also measures the link: bytes delivered per second of time with at least one fetch in flight,
// over the last few seconds of such time, which bounds the read-ahead window.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "util/aligned_bytes.h"
#include "util/status.h"

namespace obd {

enum class FetchPriority : uint8_t { kDemand = 0, kReadAhead = 1, kPrefetch = 2, kBackground = 3 };
constexpr size_t kFetchPriorities = 4;
const char* fetchPriorityName(FetchPriority p);

// Gets bytes of remote blobs. `done` runs exactly once, on any thread, with exactly `length` bytes
// or an error. `priority` is passed on so that the bytes can be accounted per kind.
class BlobFetcher {
 public:
  using Done = std::function<void(Status, AlignedBytes)>;
  // The bytes received so far: `arrived` bytes from the requested offset at `data`, valid only
  // during the call (a large GET hands its first units to readers long before it ends).
  using Progress = std::function<void(const uint8_t* data, uint64_t arrived)>;
  virtual ~BlobFetcher() = default;
  virtual void fetch(const std::string& digest, uint64_t offset, uint64_t length, FetchPriority priority, Done done) = 0;
  // fetch(), reporting the bytes as they arrive, in order, to `progress` (on any thread, never after
  // `done`) when the fetcher can; the default cannot, and only calls `done`.
  virtual void fetchStreaming(const std::string& digest, uint64_t offset, uint64_t length, FetchPriority priority, Done done,
                              Progress progress) {
    (void)progress;
    fetch(digest, offset, length, priority, std::move(done));
  }
};

struct FetchSchedulerLimits {
  uint32_t readAhead = 4;   // read-ahead GETs in flight
  uint32_t prefetch = 2;    // trace prefetch GETs in flight
  uint32_t background = 1;  // background download GETs in flight (only while nothing else is)
};

struct FetchSchedulerStats {
  std::array<uint64_t, kFetchPriorities> started{};
  std::array<uint64_t, kFetchPriorities> bytes{};  // delivered, by the priority they were started with
  std::array<uint64_t, kFetchPriorities> inFlight{};
  std::array<uint64_t, kFetchPriorities> queued{};
  uint64_t promoted = 0;
  uint64_t failed = 0;
  double linkBytesPerSec = 0;
};

class FetchScheduler : public std::enable_shared_from_this<FetchScheduler> {
 public:
  struct Ticket;
  static std::shared_ptr<FetchScheduler> create(std::shared_ptr<BlobFetcher> fetcher, FetchSchedulerLimits limits = {});
  std::shared_ptr<Ticket> submit(const std::string& digest, uint64_t offset, uint64_t length, FetchPriority priority,
                                 BlobFetcher::Done done, BlobFetcher::Progress progress = nullptr);
  // Makes a queued fetch a demand fetch and starts it (no-op once started).
  void promote(const std::shared_ptr<Ticket>& t);
  double linkBytesPerSec() const;
  FetchSchedulerStats stats() const;

 private:
  FetchScheduler(std::shared_ptr<BlobFetcher> fetcher, FetchSchedulerLimits limits) : fetcher_(std::move(fetcher)), limits_(limits) {}
  bool mayStart(FetchPriority p) const;                   // mu_ held
  void takeStartable(std::vector<std::shared_ptr<Ticket>>* out);  // mu_ held
  void markStarted(const std::shared_ptr<Ticket>& t);     // mu_ held
  void start(const std::vector<std::shared_ptr<Ticket>>& ts);
  void finished(const std::shared_ptr<Ticket>& t, bool ok, uint64_t bytes);
  double rateLocked(std::chrono::steady_clock::time_point now) const;  // mu_ held

  const std::shared_ptr<BlobFetcher> fetcher_;
  const FetchSchedulerLimits limits_;
  mutable std::mutex mu_;
  std::array<std::deque<std::shared_ptr<Ticket>>, kFetchPriorities> queues_;
  FetchSchedulerStats stats_;
  uint64_t inFlightTotal_ = 0;
  // Link meter: bytes over busy time, both halved whenever busy time passes kMeterWindow.
  std::chrono::steady_clock::time_point busySince_{};
  double meterBytes_ = 0;
  double meterBusySec_ = 0;
};

}  // namespace obd
