#include "net/http_range_client.h"

#include <curl/curl.h>

#include <algorithm>
#include <cstring>
#include <mutex>

#include "remote/fetch_buffer_pool.h"

namespace obd {

namespace {

constexpr uint64_t kMaxErrorBody = 64 << 10;  // an error answer's body is read this far, then dropped

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

struct HttpRangeClient::Transfer {
  HttpRangeClient* client = nullptr;
  HttpRangeRequest req;
  Done done;
  CURL* easy = nullptr;
  curl_slist* headers = nullptr;
  char errbuf[CURL_ERROR_SIZE] = {0};
  HttpRangeAnswer answer;
  std::string contentRange;
  std::string contentLength;
  bool accepting = false;   // the answer's headers matched the request: its body is ours
  std::string refusal;      // why the headers did not match (the transfer is aborted)
  uint64_t got = 0;
  uint64_t reported = 0;    // progress steps reported so far
  uint64_t errorBody = 0;
  bool overflow = false;

  std::string what() const {
    return "GET " + printableUrl(req.url) + " bytes " + std::to_string(req.offset) + "-" + std::to_string(req.offset + req.length - 1);
  }

  // At the end of the headers: decides whether the body is the requested bytes.
  void judgeHeaders() {
    long s = answer.httpStatus;
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
  auto t = std::make_unique<Transfer>();
  t->client = this;
  t->req = std::move(req);
  t->done = std::move(done);
  {
    std::lock_guard<std::mutex> g(mu_);
    if (!closed_ && multi_) {
      pending_.push_back(std::move(t));
      curl_multi_wakeup(multi_);
      return;
    }
  }
  HttpRangeAnswer a;
  a.status = IoError(t->what() + ": native HTTP client is closed");
  t->done(std::move(a));
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
    t->answer.httpStatus = code;
  } else if (headerIs(p, len, "Content-Range")) {
    t->contentRange = headerValue(p, len);
  } else if (headerIs(p, len, "Content-Length")) {
    t->contentLength = headerValue(p, len);
  } else if ((len == 2 && p[0] == '\r' && p[1] == '\n') || (len == 1 && p[0] == '\n')) {
    if (t->answer.httpStatus >= 100 && t->answer.httpStatus < 200) return len;
    t->judgeHeaders();
    if (!t->refusal.empty()) return 0;  // stop a body we would throw away (a whole blob, say)
    if (t->accepting) t->answer.body = FetchBufferPool::shared().take(t->req.length);  // filled by appends: no zeroing first
  }
  return len;
}

size_t HttpRangeClient::onBody(char* p, size_t size, size_t n, void* ud) {
  auto* t = static_cast<Transfer*>(ud);
  size_t len = size * n;
  t->answer.received += len;
  t->client->received_.fetch_add(len, std::memory_order_relaxed);
  if (!t->accepting) {
    t->errorBody += len;
    return t->errorBody > kMaxErrorBody ? 0 : len;
  }
  if (t->got + len > t->req.length) {
    t->overflow = true;
    return 0;
  }
  t->answer.body.insert(t->answer.body.end(), reinterpret_cast<uint8_t*>(p), reinterpret_cast<uint8_t*>(p) + len);
  t->got += len;
  if (t->req.onProgress && t->got < t->req.length) {  // the whole body goes to `done` instead
    uint64_t steps = t->got / std::max<uint64_t>(1, t->req.progressStep);
    if (steps > t->reported) {
      t->reported = steps;
      t->req.onProgress(t->answer.body.data(), t->got);
    }
  }
  return len;
}

void HttpRangeClient::startPending() {
  std::deque<std::unique_ptr<Transfer>> take;
  {
    std::lock_guard<std::mutex> g(mu_);
    take.swap(pending_);
  }
  for (auto& t : take) {
    CURL* e = curl_easy_init();
    if (!e) {
      HttpRangeAnswer a;
      a.status = IoError(t->what() + ": curl_easy_init failed");
      t->done(std::move(a));
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
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, opts_.stallTimeoutSec);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, &HttpRangeClient::onHeader);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, t.get());
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, &HttpRangeClient::onBody);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, t.get());
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t->errbuf);
    curl_easy_setopt(e, CURLOPT_PRIVATE, t.get());
    if (curl_multi_add_handle(multi_, e) != CURLM_OK) {
      finish(t.get(), CURLE_FAILED_INIT);
      continue;
    }
    active_.push_back(std::move(t));
  }
}

void HttpRangeClient::finish(Transfer* t, int curlCode) {
  HttpRangeAnswer a = std::move(t->answer);
  if (!t->refusal.empty()) {
    a.status = IoError(t->what() + ": " + t->refusal);
  } else if (t->overflow) {
    a.status = IoError(t->what() + ": more bytes than requested");
  } else if (curlCode != CURLE_OK && !(curlCode == CURLE_WRITE_ERROR && !t->accepting && a.httpStatus >= 300)) {
    std::string why = t->errbuf[0] ? t->errbuf : curl_easy_strerror(static_cast<CURLcode>(curlCode));
    a.status = IoError(t->what() + ": " + why + (t->accepting ? " (after " + std::to_string(t->got) + " of " + std::to_string(t->req.length) + " bytes)" : ""));
  } else if (!t->accepting) {
    a.status = IoError(t->what() + ": HTTP " + std::to_string(a.httpStatus));
  } else if (t->got != t->req.length) {
    a.status = IoError(t->what() + ": truncated body (" + std::to_string(t->got) + " of " + std::to_string(t->req.length) + " bytes)");
  }
  if (!a.status.ok()) a.body.clear();
  Done done = std::move(t->done);
  done(std::move(a));
}

void HttpRangeClient::finishDone() {
  CURLMsg* msg;
  int left = 0;
  while ((msg = curl_multi_info_read(multi_, &left))) {
    if (msg->msg != CURLMSG_DONE) continue;
    CURL* e = msg->easy_handle;
    int code = msg->data.result;
    auto it = std::find_if(active_.begin(), active_.end(), [e](const std::unique_ptr<Transfer>& t) { return t->easy == e; });
    curl_multi_remove_handle(multi_, e);
    if (it == active_.end()) {
      curl_easy_cleanup(e);
      continue;
    }
    std::unique_ptr<Transfer> t = std::move(*it);
    active_.erase(it);
    finish(t.get(), code);
    curl_slist_free_all(t->headers);
    curl_easy_cleanup(e);
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
    curl_multi_poll(multi_, nullptr, 0, 1000, nullptr);
  }
  // Closed: everything queued or in flight fails.
  std::deque<std::unique_ptr<Transfer>> queued;
  {
    std::lock_guard<std::mutex> g(mu_);
    queued.swap(pending_);
  }
  for (auto& t : active_) {
    curl_multi_remove_handle(multi_, t->easy);
    t->answer.status = IoError(t->what() + ": native HTTP client closed");
    HttpRangeAnswer a = std::move(t->answer);
    a.body.clear();
    Done done = std::move(t->done);
    curl_slist_free_all(t->headers);
    curl_easy_cleanup(t->easy);
    done(std::move(a));
  }
  active_.clear();
  {
    std::lock_guard<std::mutex> g(mu_);
    curl_multi_cleanup(multi_);  // closes the cached connections now, not when the last reference goes
    multi_ = nullptr;
  }
  for (auto& t : queued) {
    HttpRangeAnswer a;
    a.status = IoError(t->what() + ": native HTTP client closed");
    t->done(std::move(a));
  }
}

}  // namespace obd
