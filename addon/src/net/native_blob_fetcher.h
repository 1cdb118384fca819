// A BlobFetcher that gets bytes natively (HttpRangeClient) once it knows where a blob is, and asks
// its fallback (in deviced: the JS registry client) otherwise. JS keeps what it does well —
// resolving the blob URL, mirrors, authentication and token refresh, redirects to object stores,
// retries with backoff — and after a fetch it hands over a route: the final URL of the blob and
// the headers to send there. Later fetches of that blob go straight from the socket into the block
// cache. Any native failure (a 401 when the token expired, a redirect, a refusal from an expired
// storage URL, a wrong Content-Range, a reset) drops the route and passes that fetch to the
// fallback, which resolves, retries and hands over a fresh route; so errors, retries and their
// messages are those of the fallback, and nothing here retries on its own.
//
// Where a blob lives is resolved once: while a blob without a route has a fetch with the fallback,
// later fetches of it wait for that one instead of going to the fallback too (a sequential reader's
// first requests come together, and each through JS would cost a GET and a copy through JS); when it
// ends they go out natively with the route it handed over, or all to the fallback if it brought none.
//
// Read-ahead fetches of a blob that continue one another (a sequential reader's windows) are parts
// of one stream (HttpRangeClient::openStream): a chain of bounded GETs, one per two windows at
// plateau, each run to its end, not a GET per window.
#pragma once

#include <array>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "net/http_range_client.h"
#include "remote/fetch_scheduler.h"

namespace obd {

struct BlobRoute {
  std::string url;
  std::vector<std::string> headers;  // "Name: value"
  uint64_t size = 0;                 // the blob's size, checked against Content-Range (0: unchecked)
  std::chrono::steady_clock::time_point expires = std::chrono::steady_clock::time_point::max();
};

struct NativeFetchStats {
  uint64_t fetches = 0;     // fetches answered natively
  uint64_t bytes = 0;       // bytes those delivered
  std::array<uint64_t, kFetchPriorities> bytesByKind{};
  uint64_t fallbacks = 0;   // native attempts that failed and went to the fallback
  uint64_t receivedBytes = 0;  // every body byte the native client received
  uint64_t requests = 0;       // GETs the native client sent (a stream serves many fetches)
  uint64_t failedRequests = 0; // GETs that failed (each reported once to onFailed)
  uint64_t routes = 0;      // blobs with a route now
  std::vector<uint64_t> durationBuckets;  // native fetches per upper bound (seconds), cumulative
  double secondsSum = 0;
};

class NativeBlobFetcher : public BlobFetcher, public std::enable_shared_from_this<NativeBlobFetcher> {
 public:
  using OnFetched = std::function<void(const std::string& digest)>;
  using OnFailed = std::function<void(const std::string& digest, const HttpFailure& failure)>;
  // durationBoundsSec: upper bounds of the fetch-duration histogram in stats(); onFetched runs (on
  // the client's thread) after each fetch answered natively, so the owner still sees its blobs fill;
  // onFailed runs (there too) once for each native GET that failed, before its fetches go to the
  // fallback, so that the owner counts registry failures that the fallback then gets past.
  static std::shared_ptr<NativeBlobFetcher> create(std::shared_ptr<BlobFetcher> fallback, std::vector<double> durationBoundsSec = {},
                                                   OnFetched onFetched = nullptr, OnFailed onFailed = nullptr);
  ~NativeBlobFetcher() override;
  void fetch(const std::string& digest, uint64_t offset, uint64_t length, FetchPriority priority, Done done) override;
  // Native fetches report their bytes as they arrive (every 256 KiB, the default refill unit); fallback ones do not.
  void fetchStreaming(const std::string& digest, uint64_t offset, uint64_t length, FetchPriority priority, Done done,
                      Progress progress) override;
  void setRoute(const std::string& digest, BlobRoute route);
  void dropRoute(const std::string& digest);
  void close();
  NativeFetchStats stats() const;

 private:
  NativeBlobFetcher(std::shared_ptr<BlobFetcher> fallback, std::vector<double> bounds, OnFetched onFetched, OnFailed onFailed);
  void answered(const std::string& digest, uint64_t generation, uint64_t offset, uint64_t length, FetchPriority priority,
                std::chrono::steady_clock::time_point started, HttpRangeAnswer a, Done done);

  struct Waiting {  // a fetch of a blob whose route is being resolved
    uint64_t offset = 0;
    uint64_t length = 0;
    FetchPriority priority = FetchPriority::kDemand;
    Done done;
    Progress progress;
  };
  // The fallback fetch that resolves `digest` has ended: the fetches that waited for it go out.
  void resolved(const std::string& digest, bool ok);
  struct Entry {
    BlobRoute route;
    uint64_t generation = 0;
  };
  struct Stream {  // an open streaming GET of a blob
    uint64_t id = 0;
    uint64_t next = 0;  // where its next part starts
    uint64_t end = 0;   // where its range ends
  };
  // Appends a read-ahead fetch to the blob's stream that ends where it starts, or opens a new stream.
  bool appendToStream(const std::string& digest, const HttpRangeRequest& route, uint64_t offset, uint64_t length,
                      HttpRangeClient::Done done, Progress progress);
  const std::shared_ptr<BlobFetcher> fallback_;
  const std::shared_ptr<HttpRangeClient> client_;
  const std::vector<double> bounds_;
  const OnFetched onFetched_;
  const OnFailed onFailed_;
  mutable std::mutex mu_;
  std::map<std::string, Entry> routes_;
  std::map<std::string, std::vector<Waiting>> resolving_;  // blobs whose route a fallback fetch is resolving
  std::set<std::string> unrouted_;  // blobs whose resolving fetch brought no route: their fetches do not wait
  std::map<std::string, std::vector<Stream>> streams_;  // by digest; a few per blob (several readers)
  uint64_t generation_ = 0;
  NativeFetchStats stats_;
};

}  // namespace obd
