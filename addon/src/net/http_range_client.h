// Range GETs with libcurl on one native thread: bytes go from the socket into the answer's buffer
// without touching JS. One curl multi handle drives every transfer of the client; each transfer in
// flight has its own connection (HTTP/1.1), and finished connections stay open in the multi's
// cache for the next request to the same host, so a stream of large GETs keeps its connection
// warm while a demand miss issued meanwhile gets a connection of its own instead of queueing.
//
// The client only speaks HTTP: it does not authenticate, follow redirects or retry. Every answer
// other than exactly the requested bytes (206 with the right Content-Range, or 200 of a whole blob
// from offset 0) comes back as a failure with its HTTP status, for the caller to resolve elsewhere.
// Every body byte received is counted, also of answers that fail or are cut short.
//
// Streams: a sequential reader's read-ahead windows, appended over time as parts of one stream
// and answered in order, each as soon as its bytes are in. A stream reads through a chain of
// bounded range GETs: one is sent when the parts reach past what the earlier ones cover and the one
// in flight is about to end; it covers the part and one more of its size, or more on a fast link
// (see Sink::nextGet). A GET that has delivered every part pauses (TCP holds the sender, no copy in
// between) and, if no part comes within a short grace, runs on to its end into the stream's surplus,
// which later parts take first. Nothing is cut: every byte the registry sends is received and
// counted. A stream whose GETs are done and that gets no part for a while is closed (it holds no
// connection, only its surplus).
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "util/aligned_bytes.h"
#include "util/status.h"

namespace obd {

// Why a GET failed, in the registry client's terms (the kinds of obd_registry_errors_total, which
// the JS side derives from these): the HTTP status of a refused answer, or what went wrong on the
// way. A GET fails at most once; a client being closed is not a failure of the registry.
struct HttpFailure {
  enum class Kind { kStatus, kReset, kTimeout, kNetwork, kProtocol, kSizeMismatch, kOther };
  Kind kind = Kind::kOther;
  long httpStatus = 0;  // kStatus: the answer's status
  std::string message;
};
const char* httpFailureKindName(HttpFailure::Kind k);

struct HttpRangeRequest {
  std::string url;
  std::vector<std::string> headers;  // "Name: value" lines (Authorization, User-Agent, ...)
  uint64_t offset = 0;
  uint64_t length = 0;               // > 0
  uint64_t blobSize = 0;             // expected total size in Content-Range (0: not checked)
  // Called on the client's thread with the body received so far (from `offset`), each time another
  // `progressStep` bytes have arrived; the bytes stay valid only during the call.
  std::function<void(const uint8_t* data, uint64_t arrived)> onProgress;
  uint64_t progressStep = 256 << 10;
  // Called once, on the client's thread, if the GET fails (before its parts are answered).
  std::function<void(const HttpFailure&)> onFailure;
};

struct HttpRangeAnswer {
  Status status;                     // ok: `body` holds exactly the requested bytes
  long httpStatus = 0;               // 0 when no answer came (connect/transport failure)
  AlignedBytes body;
};

struct HttpRangeClientOptions {
  long connectTimeoutMs = 10000;
  long stallTimeoutSec = 30;         // a transfer that receives nothing for this long fails
  long maxConnections = 32;          // connections kept open in the cache
};

class HttpRangeClient {
 public:
  using Done = std::function<void(HttpRangeAnswer)>;
  using Progress = std::function<void(const uint8_t* data, uint64_t arrived)>;
  // The client's thread holds a reference until close(): whoever creates it must close it.
  static std::shared_ptr<HttpRangeClient> create(HttpRangeClientOptions opts = {});
  ~HttpRangeClient();
  HttpRangeClient(const HttpRangeClient&) = delete;
  HttpRangeClient& operator=(const HttpRangeClient&) = delete;

  // `done` runs exactly once: on the client's thread, or on the caller's when the client is closed.
  void get(HttpRangeRequest req, Done done);
  // A stream over [req.offset, req.offset + req.length) (the span its GETs may read) that delivers
  // to parts added with append(); returns its id. Its onProgress is not used (each part has its own).
  uint64_t openStream(HttpRangeRequest req);
  // The next `length` bytes of the stream go to `done` (and `progress` as they arrive, in steps of
  // `progressStep`). False when the stream is closed (failed, idle) or too short: then neither
  // callback runs.
  bool append(uint64_t stream, uint64_t length, Done done, Progress progress = nullptr, uint64_t progressStep = 256 << 10);
  // Fails what is queued or in flight and lets the thread end (safe from any thread, also the client's).
  void close();
  uint64_t receivedBytes() const { return received_.load(std::memory_order_relaxed); }
  uint64_t requests() const { return requests_.load(std::memory_order_relaxed); }  // GETs sent
  uint64_t failures() const { return failures_.load(std::memory_order_relaxed); }  // GETs that failed

 private:
  struct Part;
  struct Sink;
  struct Transfer;
  explicit HttpRangeClient(HttpRangeClientOptions opts);
  void submit(std::shared_ptr<Transfer> t);
  void queue(std::shared_ptr<Transfer> t);  // on the client's thread: started by the next loop
  void run();
  void startPending();
  void finishDone();
  void answerOrCloseStreams();
  void finish(Transfer* t, int curlCode);
  void release(Transfer* t);  // out of the multi handle
  static void answerPart(long httpStatus, Part& part);  // a part with all its bytes
  static size_t onHeader(char* p, size_t size, size_t n, void* ud);
  static size_t onBody(char* p, size_t size, size_t n, void* ud);

  const HttpRangeClientOptions opts_;
  void* multi_ = nullptr;  // CURLM*
  std::mutex mu_;
  bool closed_ = false;
  std::deque<std::shared_ptr<Transfer>> pending_;
  std::vector<std::shared_ptr<Transfer>> active_;  // only the client's thread touches it
  std::map<uint64_t, std::shared_ptr<Sink>> streams_;  // open streams by id (mu_)
  uint64_t nextStream_ = 0;
  std::atomic<uint64_t> received_{0};
  std::atomic<uint64_t> requests_{0};
  std::atomic<uint64_t> failures_{0};
  std::thread thread_;
};

}  // namespace obd
