#include "net/native_blob_fetcher.h"

namespace obd {

std::shared_ptr<NativeBlobFetcher> NativeBlobFetcher::create(std::shared_ptr<BlobFetcher> fallback, std::vector<double> durationBoundsSec,
                                                             OnFetched onFetched) {
  return std::shared_ptr<NativeBlobFetcher>(new NativeBlobFetcher(std::move(fallback), std::move(durationBoundsSec), std::move(onFetched)));
}

NativeBlobFetcher::NativeBlobFetcher(std::shared_ptr<BlobFetcher> fallback, std::vector<double> bounds, OnFetched onFetched)
    : fallback_(std::move(fallback)), client_(HttpRangeClient::create()), bounds_(std::move(bounds)), onFetched_(std::move(onFetched)) {
  stats_.durationBuckets.assign(bounds_.size(), 0);
}

NativeBlobFetcher::~NativeBlobFetcher() { client_->close(); }

void NativeBlobFetcher::close() {
  {
    std::lock_guard<std::mutex> g(mu_);
    routes_.clear();
  }
  client_->close();
}

void NativeBlobFetcher::setRoute(const std::string& digest, BlobRoute route) {
  std::lock_guard<std::mutex> g(mu_);
  routes_[digest] = Entry{std::move(route), ++generation_};
}

void NativeBlobFetcher::dropRoute(const std::string& digest) {
  std::lock_guard<std::mutex> g(mu_);
  routes_.erase(digest);
}

NativeFetchStats NativeBlobFetcher::stats() const {
  std::lock_guard<std::mutex> g(mu_);
  NativeFetchStats s = stats_;
  s.receivedBytes = client_->receivedBytes();
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
    }
  }
  if (req.url.empty() || length == 0) {
    fallback_->fetch(digest, offset, length, priority, std::move(done));
    return;
  }
  req.offset = offset;
  req.length = length;
  req.onProgress = std::move(progress);
  auto self = shared_from_this();
  auto started = std::chrono::steady_clock::now();
  client_->get(std::move(req), [self, digest, generation, offset, length, priority, started, done = std::move(done)](HttpRangeAnswer a) mutable {
    self->answered(digest, generation, offset, length, priority, started, std::move(a), std::move(done));
  });
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
