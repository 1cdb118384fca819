#include "net/native_blob_fetcher.h"

namespace obd {

std::shared_ptr<NativeBlobFetcher> NativeBlobFetcher::create(std::shared_ptr<BlobFetcher> fallback, std::vector<double> durationBoundsSec,
                                                             OnFetched onFetched, OnFailed onFailed) {
  return std::shared_ptr<NativeBlobFetcher>(
      new NativeBlobFetcher(std::move(fallback), std::move(durationBoundsSec), std::move(onFetched), std::move(onFailed)));
}

NativeBlobFetcher::NativeBlobFetcher(std::shared_ptr<BlobFetcher> fallback, std::vector<double> bounds, OnFetched onFetched, OnFailed onFailed)
    : fallback_(std::move(fallback)), client_(HttpRangeClient::create()), bounds_(std::move(bounds)), onFetched_(std::move(onFetched)),
      onFailed_(std::move(onFailed)) {
  stats_.durationBuckets.assign(bounds_.size(), 0);
}

NativeBlobFetcher::~NativeBlobFetcher() { client_->close(); }

void NativeBlobFetcher::close() {
  {
    std::lock_guard<std::mutex> g(mu_);
    routes_.clear();
    streams_.clear();
  }
  client_->close();
}

void NativeBlobFetcher::setRoute(const std::string& digest, BlobRoute route) {
  std::lock_guard<std::mutex> g(mu_);
  routes_[digest] = Entry{std::move(route), ++generation_};
  unrouted_.erase(digest);
}

void NativeBlobFetcher::dropRoute(const std::string& digest) {
  std::lock_guard<std::mutex> g(mu_);
  routes_.erase(digest);
}

NativeFetchStats NativeBlobFetcher::stats() const {
  std::lock_guard<std::mutex> g(mu_);
  NativeFetchStats s = stats_;
  s.receivedBytes = client_->receivedBytes();
  s.requests = client_->requests();
  s.failedRequests = client_->failures();
  s.routes = routes_.size();
  return s;
}

void NativeBlobFetcher::fetch(const std::string& digest, uint64_t offset, uint64_t length, FetchPriority priority, Done done) {
  fetchStreaming(digest, offset, length, priority, std::move(done), nullptr);
}

void NativeBlobFetcher::fetchStreaming(const std::string& digest, uint64_t offset, uint64_t length, FetchPriority priority, Done done,
                                       Progress progress) {
  HttpRangeRequest req;
  uint64_t generation = 0;
  bool resolver = false;
  {
    std::lock_guard<std::mutex> g(mu_);
    auto it = routes_.find(digest);
    if (it != routes_.end() && it->second.route.expires <= std::chrono::steady_clock::now()) {
      routes_.erase(it);
      it = routes_.end();
    }
    if (it != routes_.end()) {
      req.url = it->second.route.url;
      req.headers = it->second.route.headers;
      req.blobSize = it->second.route.size;
      generation = it->second.generation;
    } else if (length > 0 && !unrouted_.count(digest)) {
      auto [r, first] = resolving_.try_emplace(digest);
      if (!first) {
        r->second.push_back(Waiting{offset, length, priority, std::move(done), std::move(progress)});
        return;
      }
      resolver = true;
    }
  }
  if (resolver) {
    auto self = shared_from_this();
    fallback_->fetch(digest, offset, length, priority, [self, digest, done = std::move(done)](Status st, AlignedBytes data) {
      self->resolved(digest, st.ok());
      done(std::move(st), std::move(data));
    });
    return;
  }
  if (onFailed_) req.onFailure = [onFailed = onFailed_, digest](const HttpFailure& f) { onFailed(digest, f); };
  if (req.url.empty() || length == 0) {
    fallback_->fetch(digest, offset, length, priority, std::move(done));
    return;
  }
  auto self = shared_from_this();
  auto started = std::chrono::steady_clock::now();
  HttpRangeClient::Done answer = [self, digest, generation, offset, length, priority, started, done = std::move(done)](HttpRangeAnswer a) mutable {
    self->answered(digest, generation, offset, length, priority, started, std::move(a), std::move(done));
  };
  if (priority == FetchPriority::kReadAhead && req.blobSize > 0 && appendToStream(digest, req, offset, length, answer, progress)) return;
  req.offset = offset;
  req.length = length;
  req.onProgress = std::move(progress);
  client_->get(std::move(req), std::move(answer));
}

void NativeBlobFetcher::resolved(const std::string& digest, bool ok) {
  std::vector<Waiting> waiting;
  bool routed;
  {
    std::lock_guard<std::mutex> g(mu_);
    auto it = resolving_.find(digest);
    if (it == resolving_.end()) return;
    waiting = std::move(it->second);
    resolving_.erase(it);
    routed = routes_.count(digest) > 0;
    // A fallback that answers without handing over a route will not hand one over for the next
    // fetch either; one that failed may (the registry was away for a moment): resolve again then.
    if (ok && !routed) unrouted_.insert(digest);
  }
  for (auto& w : waiting) {
    if (routed) fetchStreaming(digest, w.offset, w.length, w.priority, std::move(w.done), std::move(w.progress));
    else fallback_->fetch(digest, w.offset, w.length, w.priority, std::move(w.done));  // each retried there
  }
}

bool NativeBlobFetcher::appendToStream(const std::string& digest, const HttpRangeRequest& route, uint64_t offset, uint64_t length,
                                       HttpRangeClient::Done done, Progress progress) {
  // A window may skip units a demand fetch already has in flight: the stream reads past them (the
  // bytes count as received) rather than ending, up to this many bytes.
  constexpr uint64_t kMaxSkip = 4 << 20;
  std::lock_guard<std::mutex> g(mu_);
  auto& streams = streams_[digest];
  for (auto it = streams.begin(); it != streams.end(); ++it) {
    if (offset < it->next || offset - it->next > kMaxSkip || offset + length > it->end) continue;
    uint64_t skip = offset - it->next;
    bool ok = skip == 0 || client_->append(it->id, skip, [](HttpRangeAnswer) {});
    if (ok && client_->append(it->id, length, done, progress)) {
      it->next = offset + length;
      return true;
    }
    streams.erase(it);  // closed (idle, ended or failed): open a new one below
    break;
  }
  HttpRangeRequest req = route;
  req.offset = offset;
  req.length = route.blobSize - offset;  // the span: the stream's GETs cover only what its parts ask (and one part more)
  if (req.length < length) return false;
  uint64_t id = client_->openStream(req);
  if (!client_->append(id, length, std::move(done), std::move(progress))) return false;
  if (streams.size() >= 4) streams.erase(streams.begin());  // the oldest reader's stream idles out on its own
  streams.push_back(Stream{id, offset + length, offset + req.length});
  return true;
}

void NativeBlobFetcher::answered(const std::string& digest, uint64_t generation, uint64_t offset, uint64_t length, FetchPriority priority,
                                 std::chrono::steady_clock::time_point started, HttpRangeAnswer a, Done done) {
  if (a.status.ok()) {
    double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    {
      std::lock_guard<std::mutex> g(mu_);
      stats_.fetches++;
      stats_.bytes += a.body.size();
      stats_.bytesByKind[static_cast<size_t>(priority)] += a.body.size();
      stats_.secondsSum += sec;
      for (size_t i = 0; i < bounds_.size(); i++)
        if (sec <= bounds_[i]) stats_.durationBuckets[i]++;
    }
    done(Status::Ok(), std::move(a.body));
    if (onFetched_) onFetched_(digest);
    return;
  }
  {
    // The route failed: the fallback resolves the blob again (and hands over a new route), unless
    // someone handed over a newer one meanwhile.
    std::lock_guard<std::mutex> g(mu_);
    stats_.fallbacks++;
    auto it = routes_.find(digest);
    if (it != routes_.end() && it->second.generation == generation) routes_.erase(it);
  }
  fallback_->fetch(digest, offset, length, priority, std::move(done));
}

}  // namespace obd
