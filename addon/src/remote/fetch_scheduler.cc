#include "remote/fetch_scheduler.h"

#include <algorithm>

namespace obd {

namespace {
constexpr double kMeterWindowSec = 2.0;
size_t idx(FetchPriority p) { return static_cast<size_t>(p); }
}  // namespace

const char* fetchPriorityName(FetchPriority p) {
  switch (p) {
    case FetchPriority::kDemand: return "demand";
    case FetchPriority::kReadAhead: return "readahead";
    case FetchPriority::kPrefetch: return "prefetch";
    case FetchPriority::kBackground: return "background";
  }
  return "demand";
}

struct FetchScheduler::Ticket {
  std::string digest;
  uint64_t offset = 0;
  uint64_t length = 0;
  FetchPriority priority = FetchPriority::kDemand;
  bool started = false;
  BlobFetcher::Done done;
  BlobFetcher::Progress progress;
};

std::shared_ptr<FetchScheduler> FetchScheduler::create(std::shared_ptr<BlobFetcher> fetcher, FetchSchedulerLimits limits) {
  return std::shared_ptr<FetchScheduler>(new FetchScheduler(std::move(fetcher), limits));
}

bool FetchScheduler::mayStart(FetchPriority p) const {
  const auto& in = stats_.inFlight;
  switch (p) {
    case FetchPriority::kDemand: return true;
    case FetchPriority::kReadAhead: return in[idx(p)] < limits_.readAhead;
    case FetchPriority::kPrefetch: return in[idx(p)] < limits_.prefetch;
    case FetchPriority::kBackground:
      // Lowest priority: only on an otherwise idle link, so it never stands in front of a demand miss.
      return in[idx(p)] < limits_.background && inFlightTotal_ == in[idx(p)] && queues_[idx(FetchPriority::kReadAhead)].empty() &&
             queues_[idx(FetchPriority::kPrefetch)].empty();
  }
  return false;
}

void FetchScheduler::markStarted(const std::shared_ptr<Ticket>& t) {
  if (inFlightTotal_ == 0) busySince_ = std::chrono::steady_clock::now();
  t->started = true;
  inFlightTotal_++;
  stats_.inFlight[idx(t->priority)]++;
  stats_.started[idx(t->priority)]++;
}

void FetchScheduler::takeStartable(std::vector<std::shared_ptr<Ticket>>* out) {
  for (size_t p = 1; p < kFetchPriorities; p++) {
    auto& q = queues_[p];
    while (!q.empty() && mayStart(static_cast<FetchPriority>(p))) {
      auto t = std::move(q.front());
      q.pop_front();
      markStarted(t);
      out->push_back(std::move(t));
    }
  }
}

std::shared_ptr<FetchScheduler::Ticket> FetchScheduler::submit(const std::string& digest, uint64_t offset, uint64_t length,
                                                               FetchPriority priority, BlobFetcher::Done done,
                                                               BlobFetcher::Progress progress) {
  auto t = std::make_shared<Ticket>();
  t->digest = digest;
  t->offset = offset;
  t->length = length;
  t->priority = priority;
  t->done = std::move(done);
  t->progress = std::move(progress);
  std::vector<std::shared_ptr<Ticket>> go;
  {
    std::lock_guard<std::mutex> g(mu_);
    if (priority == FetchPriority::kDemand) {
      markStarted(t);
      go.push_back(t);
    } else {
      queues_[idx(priority)].push_back(t);
      takeStartable(&go);
    }
  }
  start(go);
  return t;
}

void FetchScheduler::promote(const std::shared_ptr<Ticket>& t) {
  if (!t) return;
  {
    std::lock_guard<std::mutex> g(mu_);
    if (t->started) return;
    auto& q = queues_[idx(t->priority)];
    auto it = std::find(q.begin(), q.end(), t);
    if (it == q.end()) return;
    q.erase(it);
    t->priority = FetchPriority::kDemand;
    stats_.promoted++;
    markStarted(t);
  }
  start({t});
}

void FetchScheduler::start(const std::vector<std::shared_ptr<Ticket>>& ts) {
  auto self = shared_from_this();
  for (const auto& t : ts) {
    auto done = [self, t](Status st, AlignedBytes data) {
      self->finished(t, st.ok(), st.ok() ? data.size() : 0);
      BlobFetcher::Done d = std::move(t->done);
      t->progress = nullptr;
      d(std::move(st), std::move(data));
    };
    if (t->progress) fetcher_->fetchStreaming(t->digest, t->offset, t->length, t->priority, std::move(done), t->progress);
    else fetcher_->fetch(t->digest, t->offset, t->length, t->priority, std::move(done));
  }
}

void FetchScheduler::finished(const std::shared_ptr<Ticket>& t, bool ok, uint64_t bytes) {
  std::vector<std::shared_ptr<Ticket>> go;
  {
    std::lock_guard<std::mutex> g(mu_);
    auto now = std::chrono::steady_clock::now();
    stats_.inFlight[idx(t->priority)]--;
    inFlightTotal_--;
    if (ok) stats_.bytes[idx(t->priority)] += bytes;
    else stats_.failed++;
    meterBytes_ += static_cast<double>(bytes);
    meterBusySec_ += std::chrono::duration<double>(now - busySince_).count();
    busySince_ = now;  // the rest of a busy period is counted from here
    while (meterBusySec_ > kMeterWindowSec) {
      meterBusySec_ /= 2;
      meterBytes_ /= 2;
    }
    takeStartable(&go);
  }
  start(go);
}

double FetchScheduler::rateLocked(std::chrono::steady_clock::time_point now) const {
  double busy = meterBusySec_;
  if (inFlightTotal_ > 0) busy += std::chrono::duration<double>(now - busySince_).count();
  return busy > 0.001 ? meterBytes_ / busy : 0;
}

double FetchScheduler::linkBytesPerSec() const {
  std::lock_guard<std::mutex> g(mu_);
  return rateLocked(std::chrono::steady_clock::now());
}

FetchSchedulerStats FetchScheduler::stats() const {
  std::lock_guard<std::mutex> g(mu_);
  FetchSchedulerStats s = stats_;
  for (size_t p = 0; p < kFetchPriorities; p++) s.queued[p] = queues_[p].size();
  s.linkBytesPerSec = rateLocked(std::chrono::steady_clock::now());
  return s;
}

}  // namespace obd
