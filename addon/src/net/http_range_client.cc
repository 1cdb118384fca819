#include "net/http_range_client.h"

#include <curl/curl.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <mutex>

#include "remote/fetch_buffer_pool.h"

namespace obd {

namespace {

constexpr uint64_t kMaxErrorBody = 64 << 10;  // an error answer's body is read this far, then dropped
// A stream whose GETs are done and that has answered every part waits this long for the next part
// (a slow reader's next window), then closes; it holds no connection meanwhile, only the bytes its
// last GET brought past its last part.
constexpr auto kStreamGrace = std::chrono::milliseconds(250);
// A stream that has delivered every part asked so far holds its GET paused (TCP holds the sender:
// bytes go straight to the parts that come, no copy in between) for this long; then it drains the
// GET to its end into the stream's surplus, so that nothing the registry sends is cut off.
constexpr auto kDrainGrace = std::chrono::milliseconds(20);
// A stream's next GET may cover what its GETs so far delivered in this long (and at most
// kStreamEarned times what its reader asked so far): on a fast link a long read takes a few large
// GETs (docker-registry spends ~5 ms of CPU per GET, as much as on 30 MB of body), while what a
// reader that stops leaves unread stays a short time of the link and a part of what it read.
constexpr double kStreamAheadSec = 0.25;
constexpr uint64_t kStreamEarned = 8;
constexpr double kRateSample = 256 << 10;  // bytes a stream's GETs must have delivered before their rate counts

void initCurlOnce() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

// The URL as it may appear in a message: without its query (presigned URLs carry signatures there).
std::string printableUrl(const std::string& url) { return url.substr(0, url.find('?')); }

bool headerIs(const char* line, size_t n, const char* name) {
  size_t k = std::strlen(name);
  return n > k && strncasecmp(line, name, k) == 0 && line[k] == ':';
}

std::string headerValue(const char* line, size_t n) {
  const char* c = static_cast<const char*>(std::memchr(line, ':', n));
  if (!c) return {};
  std::string v(c + 1, line + n);
  auto notSpace = [](char ch) { return ch != ' ' && ch != '\t' && ch != '\r' && ch != '\n'; };
  v.erase(v.begin(), std::find_if(v.begin(), v.end(), notSpace));
  v.erase(std::find_if(v.rbegin(), v.rend(), notSpace).base(), v.end());
  return v;
}

}  // namespace

const char* httpFailureKindName(HttpFailure::Kind k) {
  switch (k) {
    case HttpFailure::Kind::kStatus: return "status";
    case HttpFailure::Kind::kReset: return "reset";
    case HttpFailure::Kind::kTimeout: return "timeout";
    case HttpFailure::Kind::kNetwork: return "network";
    case HttpFailure::Kind::kProtocol: return "protocol";
    case HttpFailure::Kind::kSizeMismatch: return "size_mismatch";
    case HttpFailure::Kind::kOther: return "other";
  }
  return "other";
}


// One consumer of bytes: a plain GET has one covering its range, a stream one per append().
struct HttpRangeClient::Part {
  uint64_t length = 0;
  AlignedBytes body;
  Done done;
  Progress progress;
  uint64_t step = 0;
  uint64_t reported = 0;  // progress steps reported so far

  bool complete() const { return body.size() == length; }
  // Takes up to the rest of this part from [p, p + n); returns how many bytes it took.
  size_t take(const uint8_t* p, size_t n) {
    size_t k = static_cast<size_t>(std::min<uint64_t>(n, length - body.size()));
    body.insert(body.end(), p, p + k);
    return k;
  }
  // True when another progress step has arrived (and the part is not complete: `done` has the rest).
  bool progressDue() {
    if (!progress || complete()) return false;
    uint64_t steps = body.size() / std::max<uint64_t>(1, step);
    if (steps <= reported) return false;
    reported = steps;
    return true;
  }
};

// Where the bytes of GETs go, in order: the one part of a plain GET, or the parts of a stream, whose
// GETs deliver one after another (only the oldest one in flight delivers; the others wait paused).
struct HttpRangeClient::Sink {
  std::mutex mu;
  std::deque<std::unique_ptr<Part>> parts;  // not yet answered, in order
  uint64_t appended = 0;   // bytes given to parts so far
  bool closed = false;     // no more parts: a plain GET's, a failed or idle stream's
  // A stream's:
  bool stream = false;
  uint64_t id = 0;
  HttpRangeRequest req;    // its span (offset, length) and route
  uint64_t issued = 0;     // bytes of the span its GETs cover
  std::vector<uint8_t> surplus;  // bytes its GETs brought past its last part, from surplusAt on
  size_t surplusAt = 0;
  std::deque<std::shared_ptr<Transfer>> gets;  // sent and not ended, in order
  std::chrono::steady_clock::time_point lastActive{};
  bool draining = false;   // no part came within kDrainGrace: the GET in flight runs on into the surplus
  std::chrono::steady_clock::time_point drySince{};    // when its oldest GET paused for want of parts
  std::chrono::steady_clock::time_point frontSince{};  // when the oldest GET in flight became the oldest
  // By its GETs that ended well, over the time each spent delivering: from its first byte (or from
  // when it became the oldest, if later) to its end. Not from when it was sent: a registry takes
  // 5-30 ms to begin an answer, which would make a fast link look slow and keep its GETs small.
  double deliveredBytes = 0;
  double deliveringSec = 0;

  uint64_t lastPart = 0;      // length of the last part appended
  double latencySec = -1;     // from sending a GET to its first body byte (last measured)

  // The stream's next GET if it needs one now (mu held): when its parts reach past what its GETs
  // cover and the oldest GET in flight (if any) has shown the link's rate and is about to end: it
  // has no more than two first-byte latencies of the link left to deliver. Sent earlier, the two
  // would share the link and the bytes needed first would come slower; sent later, the link would
  // idle between them.
  std::shared_ptr<Transfer> nextGet(HttpRangeClient* client, const std::shared_ptr<Sink>& self);

  // Gives [p, p + n) to the parts in order; bytes past the last part are kept as surplus. Returns
  // the parts completed; `progressed`: the part still in progress if it reached another step.
  std::vector<std::unique_ptr<Part>> deliver(const uint8_t* p, size_t n, Part** progressed) {
    std::vector<std::unique_ptr<Part>> done;
    *progressed = nullptr;
    while (n > 0 && !parts.empty()) {
      size_t k = parts.front()->take(p, n);
      p += k;
      n -= k;
      if (parts.front()->complete()) {
        done.push_back(std::move(parts.front()));
        parts.pop_front();
      }
    }
    if (n > 0) surplus.insert(surplus.end(), p, p + n);
    if (!parts.empty() && parts.front()->progressDue()) *progressed = parts.front().get();
    return done;
  }
  // A new part takes what the surplus holds for it.
  void fromSurplus(Part& part) {
    size_t k = part.take(surplus.data() + surplusAt, surplus.size() - surplusAt);
    surplusAt += k;
    if (surplusAt == surplus.size()) {
      surplus.clear();
      surplusAt = 0;
    }
  }
  // Parts at the front that are complete (a part the surplus filled entirely).
  std::vector<std::unique_ptr<Part>> takeComplete() {
    std::vector<std::unique_ptr<Part>> done;
    while (!parts.empty() && parts.front()->complete()) {
      done.push_back(std::move(parts.front()));
      parts.pop_front();
    }
    return done;
  }
};

struct HttpRangeClient::Transfer {
  HttpRangeClient* client = nullptr;
  HttpRangeRequest req;       // the range of this GET
  std::shared_ptr<Sink> sink;
  CURL* easy = nullptr;
  curl_slist* headers = nullptr;
  char errbuf[CURL_ERROR_SIZE] = {0};
  long httpStatus = 0;
  std::string contentRange;
  std::string contentLength;
  bool accepting = false;   // the answer's headers matched the request: its body is ours
  std::string refusal;      // why the headers did not match (the transfer is aborted)
  HttpFailure::Kind refusalKind = HttpFailure::Kind::kProtocol;
  uint64_t got = 0;         // body bytes delivered
  uint64_t counted = 0;     // body bytes counted as received (a chunk refused while paused comes again)
  uint64_t errorBody = 0;
  bool overflow = false;
  bool paused = false;      // a stream's GET waiting for the older ones (client's thread only)
  bool cut = false;         // an older GET of its stream failed: it ends without being a failure (sink mu)
  bool firstByte = false;   // a body byte came (sink mu)
  std::chrono::steady_clock::time_point firstByteAt{};
  std::chrono::steady_clock::time_point sentAt = std::chrono::steady_clock::now();

  HttpFailure failure(int curlCode) const;
  std::string what() const {
    return "GET " + printableUrl(req.url) + " bytes " + std::to_string(req.offset) + "-" + std::to_string(req.offset + req.length - 1);
  }

  // At the end of the headers: decides whether the body is the requested bytes.
  void judgeHeaders() {
    long s = httpStatus;
    if (s == 206) {
      unsigned long long a = 0, b = 0;
      char total[32] = {0};
      if (std::sscanf(contentRange.c_str(), "bytes %llu-%llu/%31s", &a, &b, total) != 3 || a != req.offset ||
          b != req.offset + req.length - 1) {
        refusal = "wrong Content-Range \"" + contentRange + "\"";
        return;
      }
      if (req.blobSize && std::strcmp(total, "*") != 0 && std::strtoull(total, nullptr, 10) != req.blobSize) {
        refusal = "blob size is " + std::string(total) + ", expected " + std::to_string(req.blobSize);
        refusalKind = HttpFailure::Kind::kSizeMismatch;
        return;
      }
      accepting = true;
    } else if (s == 200) {
      // A whole blob is the requested range only when it starts at 0 and has exactly its length.
      if (req.offset == 0 && !contentLength.empty() && std::strtoull(contentLength.c_str(), nullptr, 10) == req.length) accepting = true;
      else refusal = "server ignored Range (200 with " + (contentLength.empty() ? std::string("?") : contentLength) + " bytes)";
    }
  }
};

// Why a GET that ended with `curlCode` failed; an empty message when it did not.
HttpFailure HttpRangeClient::Transfer::failure(int curlCode) const {
  HttpFailure f;
  const bool writeStop = curlCode == CURLE_WRITE_ERROR;  // our callbacks stopped it (refusal, error body, overflow)
  if (!refusal.empty()) {
    f.kind = refusalKind;
    f.message = refusal;
  } else if (overflow) {
    f.kind = HttpFailure::Kind::kProtocol;
    f.message = "more bytes than requested";
  } else if (!accepting && httpStatus >= 300 && (curlCode == CURLE_OK || writeStop)) {
    f.kind = HttpFailure::Kind::kStatus;
    f.httpStatus = httpStatus;
    f.message = "HTTP " + std::to_string(httpStatus);
  } else if (curlCode != CURLE_OK) {
    switch (curlCode) {
      case CURLE_OPERATION_TIMEDOUT: f.kind = HttpFailure::Kind::kTimeout; break;
      case CURLE_COULDNT_CONNECT: case CURLE_COULDNT_RESOLVE_HOST: case CURLE_COULDNT_RESOLVE_PROXY:
        f.kind = HttpFailure::Kind::kNetwork; break;
      case CURLE_RECV_ERROR: case CURLE_SEND_ERROR: case CURLE_GOT_NOTHING: case CURLE_PARTIAL_FILE:
        f.kind = HttpFailure::Kind::kReset; break;
      case CURLE_WEIRD_SERVER_REPLY: case CURLE_BAD_CONTENT_ENCODING: f.kind = HttpFailure::Kind::kProtocol; break;
      default: f.kind = HttpFailure::Kind::kOther;
    }
    f.message = errbuf[0] ? errbuf : curl_easy_strerror(static_cast<CURLcode>(curlCode));
    if (accepting) f.message += " (after " + std::to_string(got) + " of " + std::to_string(req.length) + " bytes)";
  } else if (!accepting) {
    f.kind = HttpFailure::Kind::kProtocol;
    f.message = "HTTP " + std::to_string(httpStatus);
  } else if (got < req.length) {
    f.kind = HttpFailure::Kind::kReset;
    f.message = "truncated body (" + std::to_string(got) + " of " + std::to_string(req.length) + " bytes)";
  }
  return f;
}

std::shared_ptr<HttpRangeClient::Transfer> HttpRangeClient::Sink::nextGet(HttpRangeClient* client, const std::shared_ptr<Sink>& self) {
  if (closed || appended <= issued || gets.size() > 1) return nullptr;
  // The rate so far, counting the GET delivering now: a stream's second GET is sized by what the
  // first showed of the link, not blind.
  double bytes = deliveredBytes, sec = deliveringSec;
  if (!gets.empty() && gets.front()->firstByte) {
    const Transfer& front = *gets.front();
    bytes += static_cast<double>(front.got);
    sec += std::chrono::duration<double>(std::chrono::steady_clock::now() - std::max(frontSince, front.firstByteAt)).count();
  }
  const double rate = sec > 0 && bytes >= kRateSample ? bytes / sec : 0;
  if (!gets.empty()) {
    if (rate == 0 || latencySec < 0) return nullptr;  // the link is not known yet: the GET in flight will show it
    const Transfer& front = *gets.front();
    if (static_cast<double>(front.req.length - front.got) > 2 * rate * latencySec) return nullptr;
  }
  // This part's missing bytes and one more part of its size; on a fast link up to kStreamAheadSec
  // of it, if the reader earned that much.
  uint64_t size = appended - issued + lastPart;
  size = std::max(size, std::min(kStreamEarned * appended, static_cast<uint64_t>(rate * kStreamAheadSec)));
  size = std::min(size, req.length - issued);
  auto t = std::make_shared<Transfer>();
  t->client = client;
  t->req = req;
  t->req.offset = req.offset + issued;
  t->req.length = size;
  t->sink = self;
  issued += size;
  if (gets.empty()) frontSince = t->sentAt;
  gets.push_back(t);
  return t;
}

std::shared_ptr<HttpRangeClient> HttpRangeClient::create(HttpRangeClientOptions opts) {
  initCurlOnce();
  std::shared_ptr<HttpRangeClient> c(new HttpRangeClient(opts));
  c->thread_ = std::thread([c] { c->run(); });
  return c;
}

HttpRangeClient::HttpRangeClient(HttpRangeClientOptions opts) : opts_(opts) {
  multi_ = curl_multi_init();
  if (multi_) curl_multi_setopt(multi_, CURLMOPT_MAXCONNECTS, opts_.maxConnections);
}

HttpRangeClient::~HttpRangeClient() {
  // The last reference can be dropped by the thread itself (its run() holds one).
  if (thread_.joinable()) {
    if (thread_.get_id() == std::this_thread::get_id()) thread_.detach();
    else thread_.join();
  }
  if (multi_) curl_multi_cleanup(multi_);
}

void HttpRangeClient::get(HttpRangeRequest req, Done done) {
  auto sink = std::make_shared<Sink>();
  auto part = std::make_unique<Part>();
  part->length = req.length;
  part->body = FetchBufferPool::shared().take(req.length);  // filled by appends: no zeroing first
  part->done = std::move(done);
  part->progress = std::move(req.onProgress);
  part->step = req.progressStep;
  sink->appended = part->length;
  sink->parts.push_back(std::move(part));
  sink->closed = true;  // nothing more to append
  auto t = std::make_shared<Transfer>();
  t->client = this;
  t->req = std::move(req);
  t->sink = std::move(sink);
  submit(std::move(t));
}

uint64_t HttpRangeClient::openStream(HttpRangeRequest req) {
  auto s = std::make_shared<Sink>();
  s->stream = true;
  req.onProgress = nullptr;
  s->req = std::move(req);
  s->lastActive = std::chrono::steady_clock::now();
  std::lock_guard<std::mutex> g(mu_);
  s->id = ++nextStream_;
  if (!closed_ && multi_) streams_[s->id] = s;
  return s->id;
}

bool HttpRangeClient::append(uint64_t stream, uint64_t length, Done done, Progress progress, uint64_t progressStep) {
  auto part = std::make_unique<Part>();
  part->length = length;
  part->done = std::move(done);
  part->progress = std::move(progress);
  part->step = progressStep;
  // mu_ then the stream's: a GET this append needs is queued before close() can fail the queue, so
  // no callback ever runs on the caller's thread (which may hold its own locks).
  std::lock_guard<std::mutex> g(mu_);
  auto it = streams_.find(stream);
  if (closed_ || !multi_ || it == streams_.end()) return false;
  Sink& s = *it->second;
  std::shared_ptr<Transfer> next;
  {
    std::lock_guard<std::mutex> gs(s.mu);
    if (s.closed || length == 0 || s.appended + length > s.req.length) return false;
    part->body = FetchBufferPool::shared().take(length);
    s.appended += length;
    s.fromSurplus(*part);  // bytes that came past the previous part are this part's first bytes
    s.parts.push_back(std::move(part));
    s.draining = false;
    s.lastActive = std::chrono::steady_clock::now();
    s.lastPart = length;
    next = s.nextGet(this, it->second);
  }
  if (next) pending_.push_back(std::move(next));
  curl_multi_wakeup(multi_);  // starts the GET, or answers a part the surplus filled
  return true;
}

void HttpRangeClient::submit(std::shared_ptr<Transfer> t) {
  {
    std::lock_guard<std::mutex> g(mu_);
    if (!closed_ && multi_) {
      pending_.push_back(std::move(t));
      curl_multi_wakeup(multi_);
      return;
    }
  }
  finish(t.get(), CURLE_OK);  // fails its parts: the client is closed
}

void HttpRangeClient::queue(std::shared_ptr<Transfer> t) {
  std::lock_guard<std::mutex> g(mu_);
  pending_.push_back(std::move(t));  // a closed client fails it with the rest of the queue
  if (multi_) curl_multi_wakeup(multi_);
}

void HttpRangeClient::close() {
  std::lock_guard<std::mutex> g(mu_);
  if (closed_) return;
  closed_ = true;
  if (multi_) curl_multi_wakeup(multi_);
}

size_t HttpRangeClient::onHeader(char* p, size_t size, size_t n, void* ud) {
  auto* t = static_cast<Transfer*>(ud);
  size_t len = size * n;
  if (len >= 5 && std::strncmp(p, "HTTP/", 5) == 0) {  // a status line: a new answer begins (e.g. after 100)
    t->contentRange.clear();
    t->contentLength.clear();
    long code = 0;
    const char* sp = static_cast<const char*>(std::memchr(p, ' ', len));
    if (sp) code = std::strtol(sp + 1, nullptr, 10);
    t->httpStatus = code;
  } else if (headerIs(p, len, "Content-Range")) {
    t->contentRange = headerValue(p, len);
  } else if (headerIs(p, len, "Content-Length")) {
    t->contentLength = headerValue(p, len);
  } else if ((len == 2 && p[0] == '\r' && p[1] == '\n') || (len == 1 && p[0] == '\n')) {
    if (t->httpStatus >= 100 && t->httpStatus < 200) return len;
    t->judgeHeaders();
    if (!t->refusal.empty()) return 0;  // stop a body we would throw away (a whole blob, say)
  }
  return len;
}

void HttpRangeClient::answerPart(long httpStatus, Part& part) {
  HttpRangeAnswer a;
  a.httpStatus = httpStatus;
  a.body = std::move(part.body);
  Done done = std::move(part.done);
  done(std::move(a));
}

size_t HttpRangeClient::onBody(char* p, size_t size, size_t n, void* ud) {
  auto* t = static_cast<Transfer*>(ud);
  size_t len = size * n;
  if (t->got + len > t->counted) {  // a chunk refused while paused comes again: count it once
    t->client->received_.fetch_add(t->got + len - t->counted, std::memory_order_relaxed);
    t->counted = t->got + len;
  }
  if (!t->accepting) {
    t->errorBody += len;
    return t->errorBody > kMaxErrorBody ? 0 : len;
  }
  if (t->got + len > t->req.length) {
    t->overflow = true;
    return 0;
  }
  Sink& s = *t->sink;
  std::vector<std::unique_ptr<Part>> done;
  Part* progressed = nullptr;
  std::shared_ptr<Transfer> next;
  {
    std::lock_guard<std::mutex> g(s.mu);
    if (t->cut) return 0;
    if (!t->firstByte) {
      t->firstByte = true;
      t->firstByteAt = std::chrono::steady_clock::now();
      s.latencySec = std::chrono::duration<double>(t->firstByteAt - t->sentAt).count();
    }
    if (s.stream && s.gets.front().get() != t) {
      t->paused = true;  // an older GET of the stream still delivers: resumed when it ends
      return CURL_WRITEFUNC_PAUSE;
    }
    if (s.stream && s.parts.empty() && !s.draining) {
      if (!t->paused) s.drySince = std::chrono::steady_clock::now();
      t->paused = true;  // every part is answered: resumed by the next part, or to drain
      return CURL_WRITEFUNC_PAUSE;
    }
    t->paused = false;
    t->got += len;
    done = s.deliver(reinterpret_cast<const uint8_t*>(p), len, &progressed);
    if (s.stream) {
      s.lastActive = std::chrono::steady_clock::now();
      next = s.nextGet(t->client, t->sink);
    }
  }
  if (next) t->client->queue(std::move(next));
  // Outside the sink's lock: these calls may append to this stream. Only this thread removes parts,
  // so `progressed` stays valid.
  if (progressed) progressed->progress(progressed->body.data(), progressed->body.size());
  for (auto& part : done) answerPart(t->httpStatus, *part);
  return len;
}

void HttpRangeClient::startPending() {
  std::deque<std::shared_ptr<Transfer>> take;
  {
    std::lock_guard<std::mutex> g(mu_);
    take.swap(pending_);
  }
  for (auto& t : take) {
    CURL* e = curl_easy_init();
    if (!e) {
      std::snprintf(t->errbuf, sizeof t->errbuf, "curl_easy_init failed");
      finish(t.get(), CURLE_FAILED_INIT);
      continue;
    }
    t->easy = e;
    std::string range = "Range: bytes=" + std::to_string(t->req.offset) + "-" + std::to_string(t->req.offset + t->req.length - 1);
    t->headers = curl_slist_append(t->headers, range.c_str());
    for (const auto& h : t->req.headers) t->headers = curl_slist_append(t->headers, h.c_str());
    curl_easy_setopt(e, CURLOPT_URL, t->req.url.c_str());
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, t->headers);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);  // redirects are resolved by the caller (credentials)
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, nullptr);  // bytes as stored: no transfer compression
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_BUFFERSIZE, 512L << 10);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, opts_.connectTimeoutMs);
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L);  // libcurl does not check a paused transfer
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, opts_.stallTimeoutSec);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, &HttpRangeClient::onHeader);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, t.get());
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, &HttpRangeClient::onBody);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, t.get());
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t->errbuf);
    curl_easy_setopt(e, CURLOPT_PRIVATE, t.get());
    if (curl_multi_add_handle(multi_, e) != CURLM_OK) {
      finish(t.get(), CURLE_FAILED_INIT);
      release(t.get());
      continue;
    }
    requests_.fetch_add(1, std::memory_order_relaxed);
    active_.push_back(std::move(t));
  }
}

// The transfer is over (or never started). A failure of the GET itself (not a closed client's, nor
// a GET cut because an older one of its stream failed) is reported once to its onFailure, before
// any part is answered, so that it is counted before the parts' fallbacks. Then the parts it leaves
// unanswered fail, with why: a plain GET's, or every part of a stream whose GET failed (the stream
// cannot go on past a hole, and its newer GETs are cut). A stream GET that ended well hands the
// delivery to the next one.
void HttpRangeClient::finish(Transfer* t, int curlCode) {
  bool closedClient;
  {
    std::lock_guard<std::mutex> g(mu_);
    closedClient = closed_ || !multi_;
  }
  HttpFailure f;
  if (closedClient && (!t->easy || curlCode == CURLE_ABORTED_BY_CALLBACK)) f.message = "native HTTP client is closed";
  else f = t->failure(curlCode);
  const bool failed = !f.message.empty();
  Sink& s = *t->sink;
  std::deque<std::unique_ptr<Part>> parts;
  std::vector<std::shared_ptr<Transfer>> resume;
  std::shared_ptr<Transfer> next;
  bool cut;
  {
    std::lock_guard<std::mutex> g(s.mu);
    cut = t->cut;
    if (s.stream) {
      auto it = std::find_if(s.gets.begin(), s.gets.end(), [t](const std::shared_ptr<Transfer>& x) { return x.get() == t; });
      const bool front = it == s.gets.begin();
      if (it != s.gets.end()) s.gets.erase(it);
      auto now = std::chrono::steady_clock::now();
      if (front && !failed) {
        s.deliveredBytes += static_cast<double>(t->got);
        s.deliveringSec += std::chrono::duration<double>(now - std::max(s.frontSince, t->firstByteAt)).count();
      }
      if (front) s.frontSince = now;
      if (failed && !cut) {
        for (auto& g2 : s.gets) g2->cut = true;
        resume.assign(s.gets.begin(), s.gets.end());  // they end at their next byte
      }
      // Otherwise the next GET, if paused, is resumed by answerOrCloseStreams once it has parts.
      s.drySince = now;
      if (!failed) next = s.nextGet(this, t->sink);
    }
    if (failed && !cut) {
      s.closed = true;
      parts.swap(s.parts);
    }
    if (s.stream) s.lastActive = std::chrono::steady_clock::now();
  }
  if (next) queue(std::move(next));
  if (failed && !cut && !closedClient) {
    failures_.fetch_add(1, std::memory_order_relaxed);
    if (t->req.onFailure) t->req.onFailure(f);
  }
  for (auto& r : resume)
    if (r->easy && r->paused) {
      r->paused = false;
      curl_easy_pause(r->easy, CURLPAUSE_CONT);  // may deliver its held chunk right here
    }
  for (auto& part : parts) {
    HttpRangeAnswer a;
    a.httpStatus = t->httpStatus;
    a.status = IoError(t->what() + ": " + f.message);
    part->done(std::move(a));
  }
}

void HttpRangeClient::release(Transfer* t) {
  if (t->easy) {
    curl_multi_remove_handle(multi_, t->easy);
    curl_easy_cleanup(t->easy);
    t->easy = nullptr;
  }
  curl_slist_free_all(t->headers);
  t->headers = nullptr;
}

void HttpRangeClient::finishDone() {
  CURLMsg* msg;
  int left = 0;
  while ((msg = curl_multi_info_read(multi_, &left))) {
    if (msg->msg != CURLMSG_DONE) continue;
    CURL* e = msg->easy_handle;
    int code = msg->data.result;
    auto it = std::find_if(active_.begin(), active_.end(), [e](const std::shared_ptr<Transfer>& t) { return t->easy == e; });
    if (it == active_.end()) {
      curl_multi_remove_handle(multi_, e);
      curl_easy_cleanup(e);
      continue;
    }
    std::shared_ptr<Transfer> t = std::move(*it);
    active_.erase(it);
    release(t.get());  // before finish: a paused GET resumed there must not be this one's connection
    finish(t.get(), code);
  }
}

// Streams: parts the surplus filled are answered; the oldest GET, paused for want of parts, resumes
// when parts came or drains when none came within kDrainGrace; a stream with nothing in flight and
// nothing asked for kStreamGrace is closed.
void HttpRangeClient::answerOrCloseStreams() {
  std::vector<std::shared_ptr<Sink>> streams;
  {
    std::lock_guard<std::mutex> g(mu_);
    for (auto& [id, s] : streams_) streams.push_back(s);
  }
  auto now = std::chrono::steady_clock::now();
  for (auto& s : streams) {
    std::vector<std::unique_ptr<Part>> done;
    std::shared_ptr<Transfer> resume;
    bool gone;
    {
      std::lock_guard<std::mutex> g(s->mu);
      done = s->takeComplete();
      if (!s->gets.empty() && s->gets.front()->paused && s->gets.front()->easy) {
        if (s->parts.empty() && now - s->drySince >= kDrainGrace) s->draining = true;
        if (!s->parts.empty() || s->draining) resume = s->gets.front();
      }
      if (s->parts.empty() && s->gets.empty() && done.empty() && now - s->lastActive >= kStreamGrace) s->closed = true;
      gone = s->closed && s->gets.empty();
    }
    for (auto& part : done) answerPart(206, *part);
    if (resume) {
      resume->paused = false;
      curl_easy_pause(resume->easy, CURLPAUSE_CONT);  // may deliver its held chunk right here
    }
    if (gone) {
      std::lock_guard<std::mutex> g(mu_);
      streams_.erase(s->id);
    }
  }
}

void HttpRangeClient::run() {
  if (!multi_) return;  // get() refuses everything
  for (;;) {
    bool streams;
    {
      std::lock_guard<std::mutex> g(mu_);
      if (closed_) break;
      streams = !streams_.empty();
    }
    startPending();
    int running = 0;
    curl_multi_perform(multi_, &running);
    finishDone();
    answerOrCloseStreams();
    curl_multi_poll(multi_, nullptr, 0, streams ? 10 : 1000, nullptr);
  }
  // Closed: everything queued or in flight fails.
  std::deque<std::shared_ptr<Transfer>> queued;
  std::map<uint64_t, std::shared_ptr<Sink>> streams;
  {
    std::lock_guard<std::mutex> g(mu_);
    queued.swap(pending_);
    streams.swap(streams_);
  }
  for (auto& t : active_) {
    std::snprintf(t->errbuf, sizeof t->errbuf, "native HTTP client closed");
    release(t.get());
    finish(t.get(), CURLE_ABORTED_BY_CALLBACK);
  }
  active_.clear();
  {
    std::lock_guard<std::mutex> g(mu_);
    curl_multi_cleanup(multi_);  // closes the cached connections now, not when the last reference goes
    multi_ = nullptr;
  }
  for (auto& t : queued) finish(t.get(), CURLE_OK);
  // Parts of streams that no GET answers any more (filled from the surplus, not yet answered).
  for (auto& [id, s] : streams) {
    std::deque<std::unique_ptr<Part>> parts;
    {
      std::lock_guard<std::mutex> g(s->mu);
      s->closed = true;
      parts.swap(s->parts);
    }
    for (auto& part : parts) {
      HttpRangeAnswer a;
      a.status = IoError(printableUrl(s->req.url) + ": native HTTP client is closed");
      part->done(std::move(a));
    }
  }
}

}  // namespace obd
