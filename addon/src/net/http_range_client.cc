#include "net/http_range_client.h"

#include <curl/curl.h>
#include <sys/ioctl.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <mutex>

#include "remote/fetch_buffer_pool.h"

namespace obd {

namespace {

constexpr uint64_t kMaxErrorBody = 64 << 10;  // an error answer's body is read this far, then dropped
// A stream that has delivered every part stays paused this long for the next one, then closes (what
// the network still holds for it is lost: a longer grace would keep less of a slow reader's stream
// from being cut, a shorter one holds a stopped reader's connection for less time).
constexpr auto kStreamGrace = std::chrono::milliseconds(20);

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

// One consumer of a transfer's bytes: a plain GET has one covering its range, a stream one per append().
struct HttpRangeClient::Part {
  uint64_t length = 0;
  std::vector<uint8_t> body;
  Done done;
  Progress progress;
  uint64_t step = 0;
  uint64_t reported = 0;  // progress steps reported so far

  bool complete() const { return body.size() == length; }
  // Takes up to the rest of this part from [p, p + n); returns how many bytes it took.
  size_t take(const char* p, size_t n) {
    size_t k = static_cast<size_t>(std::min<uint64_t>(n, length - body.size()));
    body.insert(body.end(), reinterpret_cast<const uint8_t*>(p), reinterpret_cast<const uint8_t*>(p) + k);
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

struct HttpRangeClient::Transfer {
  HttpRangeClient* client = nullptr;
  HttpRangeRequest req;       // the whole range of the GET
  bool stream = false;
  uint64_t streamId = 0;
  CURL* easy = nullptr;
  curl_slist* headers = nullptr;
  char errbuf[CURL_ERROR_SIZE] = {0};
  long httpStatus = 0;
  std::string contentRange;
  std::string contentLength;
  bool accepting = false;   // the answer's headers matched the request: its body is ours
  std::string refusal;      // why the headers did not match (the transfer is aborted)
  HttpFailure::Kind refusalKind = HttpFailure::Kind::kProtocol;
  uint64_t got = 0;         // body bytes taken (by parts or the surplus)
  uint64_t counted = 0;     // body bytes counted as received (a chunk refused while paused comes again)
  uint64_t errorBody = 0;
  bool overflow = false;

  std::mutex mu;            // parts, appended, surplus, closed, paused, drySince (append() runs on any thread)
  std::deque<std::unique_ptr<Part>> parts;
  uint64_t appended = 0;    // bytes of the range given to parts so far
  std::vector<uint8_t> surplus;  // bytes that came past the last part of a stream
  bool closed = false;      // no more parts: ended, failed, or an idle stream
  bool paused = false;
  std::chrono::steady_clock::time_point drySince{};

  HttpFailure failure(int curlCode, uint64_t appended) const;
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

  // Parts that the bytes of [p, p + n) complete, in order; the rest of a stream's bytes go to the
  // surplus. mu held. `progressed`: the part still in progress if it reached another step.
  std::vector<std::unique_ptr<Part>> deliver(const char* p, size_t n, Part** progressed) {
    std::vector<std::unique_ptr<Part>> done;
    *progressed = nullptr;
    got += n;
    while (n > 0 && !parts.empty()) {
      size_t k = parts.front()->take(p, n);
      p += k;
      n -= k;
      if (parts.front()->complete()) {
        done.push_back(std::move(parts.front()));
        parts.pop_front();
      }
    }
    if (n > 0) surplus.insert(surplus.end(), reinterpret_cast<const uint8_t*>(p), reinterpret_cast<const uint8_t*>(p) + n);
    if (!parts.empty() && parts.front()->progressDue()) *progressed = parts.front().get();
    return done;
  }
};

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
  auto t = std::make_shared<Transfer>();
  t->client = this;
  auto part = std::make_unique<Part>();
  part->length = req.length;
  part->body = FetchBufferPool::shared().take(req.length);  // filled by appends: no zeroing first
  part->done = std::move(done);
  part->progress = std::move(req.onProgress);
  part->step = req.progressStep;
  t->req = std::move(req);
  t->appended = part->length;
  t->parts.push_back(std::move(part));
  t->closed = true;  // nothing more to append
  submit(std::move(t));
}

uint64_t HttpRangeClient::openStream(HttpRangeRequest req) {
  auto t = std::make_shared<Transfer>();
  t->client = this;
  t->stream = true;
  req.onProgress = nullptr;
  t->req = std::move(req);
  {
    std::lock_guard<std::mutex> g(mu_);
    t->streamId = ++nextStream_;
    if (!closed_ && multi_) streams_[t->streamId] = t;
  }
  uint64_t id = t->streamId;
  submit(std::move(t));
  return id;
}

bool HttpRangeClient::append(uint64_t stream, uint64_t length, Done done, Progress progress, uint64_t progressStep) {
  std::shared_ptr<Transfer> t;
  {
    std::lock_guard<std::mutex> g(mu_);
    auto it = streams_.find(stream);
    if (it == streams_.end()) return false;
    t = it->second;
  }
  auto part = std::make_unique<Part>();
  part->length = length;
  part->body = FetchBufferPool::shared().take(length);
  part->done = std::move(done);
  part->progress = std::move(progress);
  part->step = progressStep;
  bool wake = false;
  {
    std::lock_guard<std::mutex> g(t->mu);
    if (t->closed || length == 0 || t->appended + length > t->req.length) return false;
    t->appended += length;
    // Bytes that came past the previous part are this part's first bytes (if they are all of it, the
    // client's thread answers it: no callback runs on the caller's thread, which may hold its locks).
    size_t k = part->take(reinterpret_cast<const char*>(t->surplus.data()), t->surplus.size());
    t->surplus.erase(t->surplus.begin(), t->surplus.begin() + static_cast<std::ptrdiff_t>(k));
    t->parts.push_back(std::move(part));
    wake = t->paused;
  }
  if (wake) {
    std::lock_guard<std::mutex> g(mu_);
    if (multi_) curl_multi_wakeup(multi_);
  }
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

void HttpRangeClient::answerPart(const Transfer& t, Part& part) {
  HttpRangeAnswer a;
  a.httpStatus = t.httpStatus;
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
  std::vector<std::unique_ptr<Part>> done;
  Part* progressed = nullptr;
  {
    std::lock_guard<std::mutex> g(t->mu);
    if (t->parts.empty() && t->stream) {
      // Every part appended so far is delivered: hold the sender until the next one (or close).
      if (!t->paused) t->drySince = std::chrono::steady_clock::now();
      t->paused = true;
      return CURL_WRITEFUNC_PAUSE;
    }
    t->paused = false;
    done = t->deliver(p, len, &progressed);
  }
  // Outside mu: these calls may append to this stream. Only this thread removes parts, so
  // `progressed` stays valid.
  if (progressed) progressed->progress(progressed->body.data(), progressed->body.size());
  for (auto& part : done) answerPart(*t, *part);
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
      release(t.get());
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

// Why a GET that ended with `curlCode` (after `appended` bytes were asked of it) failed; ok() when it did not.
HttpFailure HttpRangeClient::Transfer::failure(int curlCode, uint64_t appended) const {
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
    if (accepting) f.message += " (after " + std::to_string(got) + " of " + std::to_string(appended) + " bytes)";
  } else if (!accepting) {
    f.kind = HttpFailure::Kind::kProtocol;
    f.message = "HTTP " + std::to_string(httpStatus);
  } else if (got < req.length) {
    f.kind = HttpFailure::Kind::kReset;
    f.message = "truncated body (" + std::to_string(got) + " of " + std::to_string(appended) + " bytes)";
  } else {
    f.message.clear();  // a complete answer
  }
  return f;
}

// The transfer is over (or never started): every part not yet answered fails, with why. A failure
// of the GET itself (not a closed client's) is reported once to its onFailure first, so that it is
// counted before any fallback of its parts.
void HttpRangeClient::finish(Transfer* t, int curlCode) {
  std::deque<std::unique_ptr<Part>> parts;
  uint64_t appended;
  {
    std::lock_guard<std::mutex> g(t->mu);
    t->closed = true;
    parts.swap(t->parts);
    appended = t->appended;
  }
  bool closedClient;
  {
    std::lock_guard<std::mutex> g(mu_);
    closedClient = closed_ || !multi_;
  }
  HttpFailure f;
  if (closedClient && (!t->easy || curlCode == CURLE_ABORTED_BY_CALLBACK)) {
    f.message = "native HTTP client is closed";
  } else {
    f = t->failure(curlCode, appended);
    if (!f.message.empty()) {
      failures_.fetch_add(1, std::memory_order_relaxed);
      if (t->req.onFailure) t->req.onFailure(f);
    }
  }
  if (parts.empty()) return;
  if (f.message.empty()) f.message = "answer ended before its parts";  // cannot happen: a complete GET answered them
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
  if (t->stream) {
    std::lock_guard<std::mutex> g(mu_);
    streams_.erase(t->streamId);
  }
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
    finish(t.get(), code);
    release(t.get());
  }
}

// Paused streams: resumed when a part came, closed when none came within the grace.
void HttpRangeClient::resumeOrCloseStreams() {
  auto now = std::chrono::steady_clock::now();
  for (size_t i = 0; i < active_.size();) {
    std::shared_ptr<Transfer> t = active_[i];
    bool resume = false, idle = false;
    std::vector<std::unique_ptr<Part>> done;  // parts the surplus held entirely
    {
      std::lock_guard<std::mutex> g(t->mu);
      if (t->stream && t->paused) {
        while (!t->parts.empty() && t->parts.front()->complete()) {
          done.push_back(std::move(t->parts.front()));
          t->parts.pop_front();
        }
        resume = !t->parts.empty();
        idle = !resume && done.empty() && now - t->drySince >= kStreamGrace;
        if (idle) t->closed = true;
        if (resume) t->paused = false;
        if (!done.empty()) t->drySince = now;
      }
    }
    for (auto& part : done) answerPart(*t, *part);
    if (resume) curl_easy_pause(t->easy, CURLPAUSE_CONT);  // may deliver the held chunk right here
    if (idle) {
      // Bytes already in the socket reached this host: they count as received, as they would for
      // anyone counting at the wire.
      curl_socket_t fd = CURL_SOCKET_BAD;
      int queued = 0;
      if (curl_easy_getinfo(t->easy, CURLINFO_ACTIVESOCKET, &fd) == CURLE_OK && fd != CURL_SOCKET_BAD && ::ioctl(fd, FIONREAD, &queued) == 0 && queued > 0)
        received_.fetch_add(static_cast<uint64_t>(queued), std::memory_order_relaxed);
      active_.erase(active_.begin() + static_cast<std::ptrdiff_t>(i));
      release(t.get());
      continue;
    }
    i++;
  }
}

void HttpRangeClient::run() {
  if (!multi_) return;  // get() refuses everything
  for (;;) {
    {
      std::lock_guard<std::mutex> g(mu_);
      if (closed_) break;
    }
    startPending();
    int running = 0;
    curl_multi_perform(multi_, &running);
    finishDone();
    resumeOrCloseStreams();
    bool paused = std::any_of(active_.begin(), active_.end(), [](const std::shared_ptr<Transfer>& t) {
      std::lock_guard<std::mutex> g(t->mu);
      return t->paused;
    });
    curl_multi_poll(multi_, nullptr, 0, paused ? 10 : 1000, nullptr);
  }
  // Closed: everything queued or in flight fails.
  std::deque<std::shared_ptr<Transfer>> queued;
  {
    std::lock_guard<std::mutex> g(mu_);
    queued.swap(pending_);
  }
  for (auto& t : active_) {
    std::snprintf(t->errbuf, sizeof t->errbuf, "native HTTP client closed");
    finish(t.get(), CURLE_ABORTED_BY_CALLBACK);
    release(t.get());
  }
  active_.clear();
  {
    std::lock_guard<std::mutex> g(mu_);
    curl_multi_cleanup(multi_);  // closes the cached connections now, not when the last reference goes
    multi_ = nullptr;
    streams_.clear();
  }
  for (auto& t : queued) finish(t.get(), CURLE_OK);
}

}  // namespace obd
