// The only file that includes napi.h: it adapts the plain C++ classes of addon/src to JS.
// Errors become JS Errors with `code` (errno name) set; no C++ exception crosses this boundary.
#include <napi.h>

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <functional>
#include <map>
#include <thread>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "format/lsmt/commit.h"
#include "format/lsmt/writable.h"
#include "format/zfile/zfile.h"
#include "transport/fuse_loop/device_stack.h"
#include "transport/fuse_loop/fuse_loop_device.h"
#include "transport/serve.h"
#include "image/layer_info.h"
#include "image/stack.h"
#include "io/local_file.h"
#include "cache/block_cache.h"
#include "net/native_blob_fetcher.h"
#include "remote/remote_file.h"
#include "util/crc32c.h"
#include "transport/tcmu/kernel.h"
#include "util/fd_passing.h"
#include "convert/layer_input.h"
#include "convert/tar_apply.h"
#include "convert/ext4_unwritten.h"
#include "format/gzindex/gz_file.h"
#include "format/gzindex/gz_index.h"
#include "util/fd_io.h"
#include "util/unique_fd.h"

namespace {

// ---- common (shared by every section) ----
namespace common {

// A Status as a JS Error: message, `code` = errno name, `errno` = number.
Napi::Error toError(Napi::Env env, const obd::Status& st) {
  Napi::Error err = Napi::Error::New(env, st.message());
  const char* name = strerrorname_np(st.code());
  err.Set("code", Napi::String::New(env, name ? name : "EIO"));
  err.Set("errno", Napi::Number::New(env, st.code()));
  return err;
}

// Throws and returns undefined, for `return fail(env, st);` in synchronous functions.
Napi::Value fail(Napi::Env env, const obd::Status& st) {
  toError(env, st).ThrowAsJavaScriptException();
  return env.Undefined();
}

// An already-rejected promise, for argument errors in functions that return a promise.
Napi::Value rejected(Napi::Env env, const obd::Status& st) {
  auto d = Napi::Promise::Deferred::New(env);
  d.Reject(toError(env, st).Value());
  return d.Promise();
}

// Argument helpers, the one set every section uses.
// A non-negative safe-integer number or a BigInt that fits (what a byte count or offset can be).
bool safeU64(const Napi::Value& v, uint64_t* out) {
  if (v.IsBigInt()) {
    bool lossless = false;
    *out = v.As<Napi::BigInt>().Uint64Value(&lossless);
    return lossless;
  }
  if (!v.IsNumber()) return false;
  double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= 0) || d > 9007199254740991.0 || d != static_cast<double>(static_cast<uint64_t>(d))) return false;
  *out = static_cast<uint64_t>(d);
  return true;
}

// A byte-count field of an options object; a missing optional one leaves *out as it is. On failure
// *bad names the field.
bool numberArg(const Napi::Object& o, const char* key, uint64_t* out, bool required, std::string* bad) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() || v.IsNull()) {
    if (required) *bad = std::string(key) + " is required";
    return !required;
  }
  if (!safeU64(v, out)) {
    *bad = std::string(key) + " must be a non-negative integer";
    return false;
  }
  return true;
}

// A string field of an options object; "" when it is missing or not a string.
std::string getString(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  return v.IsString() ? v.As<Napi::String>().Utf8Value() : std::string();
}

// Runs `work` on the libuv pool and settles a promise with its Status; resolves with a copy of
// `result` when one is given, else with undefined. Queues itself: `return PromiseWorker::run(...)`.
class PromiseWorker : public Napi::AsyncWorker {
 public:
  static Napi::Value run(Napi::Env env, std::function<obd::Status()> work,
                         std::shared_ptr<std::vector<uint8_t>> result = nullptr) {
    auto* w = new PromiseWorker(env, std::move(work), std::move(result));
    Napi::Promise p = w->deferred_.Promise();
    w->Queue();
    return p;
  }
  void Execute() override { status_ = work_(); }
  void OnOK() override {
    if (!status_.ok()) return deferred_.Reject(toError(Env(), status_).Value());
    if (!result_) return deferred_.Resolve(Env().Undefined());
    deferred_.Resolve(Napi::Buffer<uint8_t>::Copy(Env(), result_->data(), result_->size()));
  }

 private:
  PromiseWorker(Napi::Env env, std::function<obd::Status()> work, std::shared_ptr<std::vector<uint8_t>> result)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), work_(std::move(work)),
        result_(std::move(result)) {}

  Napi::Promise::Deferred deferred_;
  std::function<obd::Status()> work_;
  std::shared_ptr<std::vector<uint8_t>> result_;
  obd::Status status_;
};

}  // namespace common
// ---- end common ----

// ---- remote ----
// Remote blobs read through the block cache (addon/src/cache, addon/src/remote).
//
// JS API (typed wrappers in src/addon.ts, section "remote"):
//   new BlockCache({dir, capacityBytes, unitSize?, sync?, minFreeBytes?})   .stats()  .drain(): Promise<void>
//                           .release(digest, scope?): one user less (the last one closes the entry's files)
//                           .drop(digest, scope?): removes an entry without users  .setCapacity(bytes)
//   new RemoteFetcher(fn, limits?)  fn(digest, offset, length, done, kind) runs on the JS thread for
//                           every fetch the scheduler starts (kind: demand|readahead|prefetch|background);
//                           JS calls done(null, bytes) or done(err) exactly once.  .close()  .stats()
//   new RemoteFetcher(fn, limits, {native: {durationBoundsSec, onFetched?(digest)}})  the same, and blobs given a route
//                           with .setRoute(digest, {url, headers, size, expiresInMs?}) are fetched with
//                           libcurl (addon/src/net); a native failure drops the route and asks fn.
//   new RemoteFile({digest, size, cache, fetcher, readAheadUnits?, maxFetchUnits?, readAheadStartBytes?,
//                   readAheadWindowMs?, cacheScope?})  (a user of the cache entry until cache.release)
//                           .read(offset, length, kind?): Promise<Buffer>   .stats()   .nextMissing(offset)
//
// For other sections (stack/device): build a lower from a JS description with
//   obd::Result<std::shared_ptr<obd::ReadableFile>> remote_binding::remoteLowerFromJs(Napi::Env, const Napi::Object& spec)
// where spec is a RemoteFile object, or {remote: RemoteFile}, or
// {digest: "sha256:…", size, cache: BlockCache, fetcher: RemoteFetcher, readAheadUnits?, maxFetchUnits?}.
// Misses are answered by JS on the main thread: never read such a lower synchronously on it.
namespace remote_binding {

using common::toError;
using obd::Status;

constexpr napi_type_tag kCacheTag = {0x6f62645f63616368ull, 0x655f746167000001ull};
constexpr napi_type_tag kFetcherTag = {0x6f62645f66657463ull, 0x685f746167000002ull};
constexpr napi_type_tag kFileTag = {0x6f62645f72656d6full, 0x74655f6669000003ull};

using common::numberArg;

// The fetcher: a ThreadSafeFunction that calls the JS fetch function on the main thread.
class JsFetcher : public obd::BlobFetcher {
 public:
  struct Request {
    std::string digest;
    uint64_t offset;
    uint64_t length;
    obd::FetchPriority priority;
    obd::BlobFetcher::Done done;
  };
  struct Shared {
    std::mutex mu;
    bool closed = false;
    Napi::ThreadSafeFunction tsfn;
  };

  explicit JsFetcher(std::shared_ptr<Shared> s) : s_(std::move(s)) {}
  ~JsFetcher() override { close(); }

  void close() {
    std::lock_guard<std::mutex> g(s_->mu);
    if (s_->closed) return;
    s_->closed = true;
    s_->tsfn.Release();
  }

  void fetch(const std::string& digest, uint64_t offset, uint64_t length, obd::FetchPriority priority, Done done) override {
    auto* req = new Request{digest, offset, length, priority, std::move(done)};
    napi_status st = napi_closing;
    {
      std::lock_guard<std::mutex> g(s_->mu);
      if (!s_->closed) st = s_->tsfn.NonBlockingCall(req, callJs);
    }
    if (st != napi_ok) {
      Done d = std::move(req->done);
      delete req;
      d(obd::IoError(digest + ": remote fetcher is closed"), {});
    }
  }

 private:
  static void callJs(Napi::Env env, Napi::Function fn, Request* raw) {
    std::shared_ptr<Request> req(raw);
    if (env == nullptr || fn.IsEmpty()) {
      if (req->done) req->done(obd::IoError(req->digest + ": remote fetcher went away"), {});
      return;
    }
    auto finish = [req](Status st, obd::AlignedBytes data) {
      if (!req->done) return;  // a second call of done() is ignored
      obd::BlobFetcher::Done d = std::move(req->done);
      req->done = nullptr;
      d(std::move(st), std::move(data));
    };
    Napi::Function done = Napi::Function::New(env, [finish](const Napi::CallbackInfo& info) -> Napi::Value {
      Napi::Env e = info.Env();
      Napi::Value err = info.Length() > 0 ? info[0] : e.Undefined();
      if (!err.IsUndefined() && !err.IsNull()) {
        std::string msg = "fetch failed";
        if (err.IsObject()) {
          Napi::Value m = err.As<Napi::Object>().Get("message");
          if (m.IsString()) msg = m.As<Napi::String>().Utf8Value();
        } else if (err.IsString()) {
          msg = err.As<Napi::String>().Utf8Value();
        }
        finish(obd::IoError(msg), {});
        return e.Undefined();
      }
      Napi::Value v = info.Length() > 1 ? info[1] : e.Undefined();
      if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
        finish(obd::IoError("fetcher answered without a Uint8Array"), {});
        return e.Undefined();
      }
      auto a = v.As<Napi::Uint8Array>();
      finish(Status::Ok(), obd::AlignedBytes(a.Data(), a.Data() + a.ByteLength()));
      return e.Undefined();
    });
    fn.Call({Napi::String::New(env, req->digest), Napi::Number::New(env, static_cast<double>(req->offset)),
             Napi::Number::New(env, static_cast<double>(req->length)), done,
             Napi::String::New(env, obd::fetchPriorityName(req->priority))});
    if (env.IsExceptionPending()) {
      Napi::Error e = env.GetAndClearPendingException();
      finish(obd::IoError(req->digest + ": fetch function threw: " + e.Message()), {});
    }
  }

  std::shared_ptr<Shared> s_;
};

class CacheWrap : public Napi::ObjectWrap<CacheWrap> {
 public:
  static Napi::Function define(Napi::Env env) {
    return DefineClass(env, "BlockCache", {InstanceMethod("stats", &CacheWrap::Stats), InstanceMethod("drain", &CacheWrap::Drain),
                                           InstanceMethod("release", &CacheWrap::Release), InstanceMethod("drop", &CacheWrap::Drop),
                                           InstanceMethod("setCapacity", &CacheWrap::SetCapacity)});
  }
  explicit CacheWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<CacheWrap>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsObject()) {
      common::fail(env, obd::InvalidArg("BlockCache({dir, capacityBytes, unitSize?})"));
      return;
    }
    Napi::Object o = info[0].As<Napi::Object>();
    obd::BlockCacheOptions opts;
    std::string bad;
    uint64_t unit = opts.unitSize;
    if (!o.Get("dir").IsString()) bad = "dir must be a string";
    else opts.dir = o.Get("dir").As<Napi::String>().Utf8Value();
    if (bad.empty()) numberArg(o, "capacityBytes", &opts.capacityBytes, true, &bad);
    if (bad.empty()) numberArg(o, "unitSize", &unit, false, &bad);
    if (bad.empty()) numberArg(o, "minFreeBytes", &opts.minFreeBytes, false, &bad);
    if (!bad.empty()) {
      common::fail(env, obd::InvalidArg("BlockCache: " + bad));
      return;
    }
    opts.unitSize = static_cast<uint32_t>(std::min<uint64_t>(unit, UINT32_MAX));
    if (o.Has("sync") && !o.Get("sync").IsUndefined()) opts.sync = o.Get("sync").ToBoolean();
    auto c = obd::BlockCache::open(opts);
    if (!c.ok()) {
      common::fail(env, c.status());
      return;
    }
    cache = c.take();
    info.This().As<Napi::Object>().TypeTag(&kCacheTag);
  }
  std::shared_ptr<obd::BlockCache> cache;

 private:
  Napi::Value Stats(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    obd::BlockCacheStats s = cache->stats();
    Napi::Object o = Napi::Object::New(env);
    o.Set("capacityBytes", static_cast<double>(s.capacityBytes));
    o.Set("usedBytes", static_cast<double>(s.usedBytes));
    o.Set("unitSize", static_cast<double>(cache->unitSize()));
    o.Set("blobs", static_cast<double>(s.blobs));
    o.Set("openBlobs", static_cast<double>(s.openBlobs));
    o.Set("writtenUnits", static_cast<double>(s.writtenUnits));
    o.Set("evictedUnits", static_cast<double>(s.evictedUnits));
    o.Set("verifiedBlobs", static_cast<double>(s.verifiedBlobs));
    o.Set("verifyFailures", static_cast<double>(s.verifyFailures));
    o.Set("writeErrors", static_cast<double>(s.writeErrors));
    o.Set("skippedForSpace", static_cast<double>(s.skippedForSpace));
    o.Set("lastError", s.lastError);
    return o;
  }
  // release(digest, scope?): one user of the entry less (each RemoteFile opened on it is one user).
  Napi::Value Release(const Napi::CallbackInfo& info) { return OnEntry(info, "BlockCache.release(digest, scope?)", &obd::BlockCache::release); }
  // drop(digest, scope?): removes an entry without users and its files.
  Napi::Value Drop(const Napi::CallbackInfo& info) { return OnEntry(info, "BlockCache.drop(digest, scope?)", &obd::BlockCache::drop); }
  // The (digest, scope?) calls share their argument rules.
  Napi::Value OnEntry(const Napi::CallbackInfo& info, const char* usage,
                      void (obd::BlockCache::*op)(const std::string&, const std::string&)) {
    if (info.Length() < 1 || !info[0].IsString()) {
      common::fail(info.Env(), obd::InvalidArg(usage));
      return info.Env().Undefined();
    }
    std::string scope = info.Length() > 1 && info[1].IsString() ? info[1].As<Napi::String>().Utf8Value() : "";
    ((*cache).*op)(info[0].As<Napi::String>().Utf8Value(), scope);
    return info.Env().Undefined();
  }
  // setCapacity(bytes): a new size limit; eviction runs on the cache's writer thread.
  Napi::Value SetCapacity(const Napi::CallbackInfo& info) {
    if (info.Length() < 1 || !info[0].IsNumber() || info[0].As<Napi::Number>().DoubleValue() < 0) {
      common::fail(info.Env(), obd::InvalidArg("BlockCache.setCapacity(bytes ≥ 0)"));
      return info.Env().Undefined();
    }
    cache->setCapacity(static_cast<uint64_t>(info[0].As<Napi::Number>().DoubleValue()));
    return info.Env().Undefined();
  }
  // Resolves once every queued cache write and verification is done (waits on the libuv pool).
  Napi::Value Drain(const Napi::CallbackInfo& info) {
    auto c = cache;
    return common::PromiseWorker::run(info.Env(), [c]() {
      c->drain();
      return Status::Ok();
    });
  }
};

// A thread-safe call of `fn` with the fetcher's close-once guard; it does not keep the process alive.
std::shared_ptr<JsFetcher::Shared> notifierOf(Napi::Env env, Napi::Function fn, const char* name) {
  auto notify = std::make_shared<JsFetcher::Shared>();
  auto* keep = new std::shared_ptr<JsFetcher::Shared>(notify);
  notify->tsfn = Napi::ThreadSafeFunction::New(env, fn, name, 0, 1, keep, [](Napi::Env, std::shared_ptr<JsFetcher::Shared>* s) {
    {
      std::lock_guard<std::mutex> g((*s)->mu);
      (*s)->closed = true;  // finalized: never Release again
    }
    delete s;
  });
  notify->tsfn.Unref(env);
  return notify;
}

class FetcherWrap : public Napi::ObjectWrap<FetcherWrap> {
 public:
  static Napi::Function define(Napi::Env env) {
    return DefineClass(env, "RemoteFetcher", {InstanceMethod("close", &FetcherWrap::Close), InstanceMethod("stats", &FetcherWrap::Stats),
                                              InstanceMethod("setRoute", &FetcherWrap::SetRoute), InstanceMethod("dropRoute", &FetcherWrap::DropRoute)});
  }
  explicit FetcherWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<FetcherWrap>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsFunction()) {
      common::fail(env, obd::InvalidArg("RemoteFetcher(fn(digest, offset, length, done))"));
      return;
    }
    auto shared = notifierOf(env, info[0].As<Napi::Function>(), "obd-remote-fetch");
    fetcher = std::make_shared<JsFetcher>(shared);
    obd::FetchSchedulerLimits limits;
    if (info.Length() > 1 && info[1].IsObject()) {
      Napi::Object o = info[1].As<Napi::Object>();
      uint64_t v = 0;
      std::string bad;
      if (numberArg(o, "readAhead", &v, false, &bad) && !o.Get("readAhead").IsUndefined()) limits.readAhead = static_cast<uint32_t>(std::max<uint64_t>(v, 1));
      if (numberArg(o, "prefetch", &v, false, &bad) && !o.Get("prefetch").IsUndefined()) limits.prefetch = static_cast<uint32_t>(std::max<uint64_t>(v, 1));
      if (numberArg(o, "background", &v, false, &bad) && !o.Get("background").IsUndefined()) limits.background = static_cast<uint32_t>(std::max<uint64_t>(v, 1));
    }
    // {native: {durationBoundsSec}}: fetches of blobs with a route go through libcurl (addon/src/net).
    if (info.Length() > 2 && info[2].IsObject() && info[2].As<Napi::Object>().Get("native").IsObject()) {
      Napi::Object n = info[2].As<Napi::Object>().Get("native").As<Napi::Object>();
      std::vector<double> bounds;
      if (n.Get("durationBoundsSec").IsArray()) {
        Napi::Array a = n.Get("durationBoundsSec").As<Napi::Array>();
        for (uint32_t i = 0; i < a.Length(); i++)
          if (a.Get(i).IsNumber()) bounds.push_back(a.Get(i).As<Napi::Number>().DoubleValue());
      }
      obd::NativeBlobFetcher::OnFetched onFetched;
      if (n.Get("onFetched").IsFunction()) {
        auto notify = notifierOf(env, n.Get("onFetched").As<Napi::Function>(), "obd-native-fetched");
        notifiers.push_back(notify);
        onFetched = [notify](const std::string& digest) {
          std::lock_guard<std::mutex> g(notify->mu);
          if (notify->closed) return;
          notify->tsfn.NonBlockingCall(new std::string(digest), [](Napi::Env e, Napi::Function fn, std::string* d) {
            std::unique_ptr<std::string> owned(d);
            if (e != nullptr && !fn.IsEmpty()) fn.Call({Napi::String::New(e, *owned)});
            if (e != nullptr && e.IsExceptionPending()) e.GetAndClearPendingException();
          });
        };
      }
      // onFailed({digest, kind, status, message}) for each native GET that failed (registry error metrics).
      obd::NativeBlobFetcher::OnFailed onFailed;
      if (n.Get("onFailed").IsFunction()) {
        auto notify = notifierOf(env, n.Get("onFailed").As<Napi::Function>(), "obd-native-failed");
        notifiers.push_back(notify);
        struct Failed {
          std::string digest;
          obd::HttpFailure failure;
        };
        onFailed = [notify](const std::string& digest, const obd::HttpFailure& f) {
          std::lock_guard<std::mutex> g(notify->mu);
          if (notify->closed) return;
          notify->tsfn.NonBlockingCall(new Failed{digest, f}, [](Napi::Env e, Napi::Function fn, Failed* raw) {
            std::unique_ptr<Failed> owned(raw);
            if (e == nullptr || fn.IsEmpty()) return;
            Napi::Object o = Napi::Object::New(e);
            o.Set("digest", owned->digest);
            o.Set("kind", obd::httpFailureKindName(owned->failure.kind));
            o.Set("status", static_cast<double>(owned->failure.httpStatus));
            o.Set("message", owned->failure.message);
            fn.Call({o});
            if (e.IsExceptionPending()) e.GetAndClearPendingException();
          });
        };
      }
      native = obd::NativeBlobFetcher::create(fetcher, bounds, onFetched, onFailed);
    }
    scheduler = native ? obd::FetchScheduler::create(native, limits) : obd::FetchScheduler::create(fetcher, limits);
    info.This().As<Napi::Object>().TypeTag(&kFetcherTag);
  }
  std::shared_ptr<JsFetcher> fetcher;
  std::shared_ptr<obd::NativeBlobFetcher> native;
  std::vector<std::shared_ptr<JsFetcher::Shared>> notifiers;  // native.onFetched, native.onFailed
  std::shared_ptr<obd::FetchScheduler> scheduler;

 private:
  Napi::Value Close(const Napi::CallbackInfo& info) {
    if (native) native->close();
    if (fetcher) fetcher->close();
    for (auto& notifier : notifiers) {
      std::lock_guard<std::mutex> g(notifier->mu);
      if (!notifier->closed) {
        notifier->closed = true;
        notifier->tsfn.Release();
      }
    }
    return info.Env().Undefined();
  }
  // setRoute(digest, {url, headers: string[], size, expiresInMs?}): later fetches of digest go natively.
  Napi::Value SetRoute(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!native) return env.Undefined();
    if (info.Length() < 2 || !info[0].IsString() || !info[1].IsObject()) {
      common::fail(env, obd::InvalidArg("RemoteFetcher.setRoute(digest, {url, headers, size, expiresInMs?})"));
      return env.Undefined();
    }
    Napi::Object o = info[1].As<Napi::Object>();
    obd::BlobRoute r;
    std::string bad;
    uint64_t expiresInMs = 0;
    if (!o.Get("url").IsString()) bad = "url must be a string";
    else r.url = o.Get("url").As<Napi::String>().Utf8Value();
    if (bad.empty()) numberArg(o, "size", &r.size, false, &bad);
    if (bad.empty()) numberArg(o, "expiresInMs", &expiresInMs, false, &bad);
    if (bad.empty() && o.Get("headers").IsArray()) {
      Napi::Array a = o.Get("headers").As<Napi::Array>();
      for (uint32_t i = 0; i < a.Length(); i++) {
        if (!a.Get(i).IsString()) {
          bad = "headers must be strings";
          break;
        }
        std::string h = a.Get(i).As<Napi::String>().Utf8Value();
        if (h.find_first_of("\r\n") != std::string::npos) {
          bad = "a header holds a line break";
          break;
        }
        r.headers.push_back(std::move(h));
      }
    }
    if (!bad.empty()) {
      common::fail(env, obd::InvalidArg("RemoteFetcher.setRoute: " + bad));
      return env.Undefined();
    }
    if (expiresInMs > 0) r.expires = std::chrono::steady_clock::now() + std::chrono::milliseconds(expiresInMs);
    native->setRoute(info[0].As<Napi::String>().Utf8Value(), std::move(r));
    return env.Undefined();
  }
  Napi::Value DropRoute(const Napi::CallbackInfo& info) {
    if (native && info.Length() > 0 && info[0].IsString()) native->dropRoute(info[0].As<Napi::String>().Utf8Value());
    return info.Env().Undefined();
  }
  Napi::Value Stats(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Object o = Napi::Object::New(env);
    if (!scheduler) return o;
    obd::FetchSchedulerStats s = scheduler->stats();
    auto perKind = [&](const std::array<uint64_t, obd::kFetchPriorities>& a) {
      Napi::Object k = Napi::Object::New(env);
      for (size_t p = 0; p < obd::kFetchPriorities; p++)
        k.Set(obd::fetchPriorityName(static_cast<obd::FetchPriority>(p)), static_cast<double>(a[p]));
      return k;
    };
    o.Set("started", perKind(s.started));
    o.Set("bytes", perKind(s.bytes));
    o.Set("inFlight", perKind(s.inFlight));
    o.Set("queued", perKind(s.queued));
    o.Set("promoted", static_cast<double>(s.promoted));
    o.Set("failed", static_cast<double>(s.failed));
    o.Set("linkBytesPerSec", s.linkBytesPerSec);
    if (native) {
      obd::NativeFetchStats n = native->stats();
      Napi::Object no = Napi::Object::New(env);
      no.Set("fetches", static_cast<double>(n.fetches));
      no.Set("bytes", perKind(n.bytesByKind));
      no.Set("fallbacks", static_cast<double>(n.fallbacks));
      no.Set("receivedBytes", static_cast<double>(n.receivedBytes));
      no.Set("requests", static_cast<double>(n.requests));
      no.Set("failedRequests", static_cast<double>(n.failedRequests));
      no.Set("routes", static_cast<double>(n.routes));
      Napi::Array b = Napi::Array::New(env, n.durationBuckets.size());
      for (size_t i = 0; i < n.durationBuckets.size(); i++) b.Set(static_cast<uint32_t>(i), static_cast<double>(n.durationBuckets[i]));
      no.Set("durationBuckets", b);
      no.Set("secondsSum", n.secondsSum);
      o.Set("native", no);
    }
    return o;
  }
};

template <typename W>
W* unwrapTagged(const Napi::Value& v, const napi_type_tag& tag) {
  if (!v.IsObject()) return nullptr;
  Napi::Object o = v.As<Napi::Object>();
  if (!o.CheckTypeTag(&tag)) return nullptr;
  return W::Unwrap(o);
}

obd::Result<std::shared_ptr<obd::RemoteFile>> openFromSpec(const Napi::Object& spec) {
  std::string bad;
  if (!spec.Get("digest").IsString()) return obd::InvalidArg("remote lower: digest must be a string");
  std::string digest = spec.Get("digest").As<Napi::String>().Utf8Value();
  obd::RemoteFileOptions defaults;
  uint64_t size = 0, readAhead = defaults.readAheadUnits, maxFetch = defaults.maxFetchUnits,
           startBytes = defaults.readAheadStartBytes, windowMs = static_cast<uint64_t>(defaults.readAheadSeconds * 1000);
  if (!numberArg(spec, "size", &size, true, &bad) || !numberArg(spec, "readAheadUnits", &readAhead, false, &bad) ||
      !numberArg(spec, "maxFetchUnits", &maxFetch, false, &bad) || !numberArg(spec, "readAheadStartBytes", &startBytes, false, &bad) ||
      !numberArg(spec, "readAheadWindowMs", &windowMs, false, &bad))
    return obd::InvalidArg(digest + ": remote lower: " + bad);
  auto* c = unwrapTagged<CacheWrap>(spec.Get("cache"), kCacheTag);
  auto* f = unwrapTagged<FetcherWrap>(spec.Get("fetcher"), kFetcherTag);
  if (!c || !c->cache) return obd::InvalidArg(digest + ": remote lower: cache must be a BlockCache");
  if (!f || !f->scheduler) return obd::InvalidArg(digest + ": remote lower: fetcher must be a RemoteFetcher");
  obd::RemoteFileOptions opts;
  opts.readAheadUnits = static_cast<uint32_t>(std::min<uint64_t>(readAhead, 1u << 16));
  opts.maxFetchUnits = static_cast<uint32_t>(std::min<uint64_t>(std::max<uint64_t>(maxFetch, 1), 1u << 16));
  opts.readAheadStartBytes = startBytes;
  opts.readAheadSeconds = static_cast<double>(std::min<uint64_t>(windowMs, 60'000)) / 1000;
  if (spec.Get("cacheScope").IsString()) opts.cacheScope = spec.Get("cacheScope").As<Napi::String>().Utf8Value();
  return obd::RemoteFile::open(c->cache, f->scheduler, digest, size, opts);
}

class FileWrap : public Napi::ObjectWrap<FileWrap> {
 public:
  static Napi::Function define(Napi::Env env) {
    return DefineClass(env, "RemoteFile", {InstanceMethod("read", &FileWrap::Read), InstanceMethod("stats", &FileWrap::Stats),
                                           InstanceMethod("nextMissing", &FileWrap::NextMissing),
                                           InstanceAccessor("size", &FileWrap::Size, nullptr)});
  }
  explicit FileWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<FileWrap>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsObject()) {
      common::fail(env, obd::InvalidArg("RemoteFile({digest, size, cache, fetcher})"));
      return;
    }
    auto r = openFromSpec(info[0].As<Napi::Object>());
    if (!r.ok()) {
      common::fail(env, r.status());
      return;
    }
    file = r.take();
    info.This().As<Napi::Object>().TypeTag(&kFileTag);
  }
  std::shared_ptr<obd::RemoteFile> file;

 private:
  // The result Buffer is allocated up front and filled in place (no copy); the reference keeps it
  // alive, unseen by JS, until the read completes.
  struct ReadCtx {
    Napi::Reference<Napi::Buffer<uint8_t>> out;
    Status st;
    Napi::Promise::Deferred deferred;
  };
  Napi::Value Size(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), static_cast<double>(file->size())); }
  // read(offset, length) → Promise<Buffer>; completes from whatever thread the read finishes on.
  Napi::Value Read(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    uint64_t off = 0, len = 0;
    std::string bad;
    Napi::Object args = Napi::Object::New(env);
    args.Set("offset", info.Length() > 0 ? info[0] : env.Undefined());
    args.Set("length", info.Length() > 1 ? info[1] : env.Undefined());
    if (!numberArg(args, "offset", &off, true, &bad) || !numberArg(args, "length", &len, true, &bad) || len > (1u << 30)) {
      return common::rejected(env, obd::InvalidArg("RemoteFile.read(offset, length): " + (bad.empty() ? "length too large" : bad)));
    }
    obd::FetchPriority priority = obd::FetchPriority::kDemand;
    if (info.Length() > 2 && !info[2].IsUndefined()) {
      std::string kind = info[2].IsString() ? info[2].As<Napi::String>().Utf8Value() : "";
      if (kind == "prefetch") priority = obd::FetchPriority::kPrefetch;
      else if (kind == "background") priority = obd::FetchPriority::kBackground;
      else if (kind != "demand")
        return common::rejected(env, obd::InvalidArg("RemoteFile.read(offset, length, kind): kind must be demand, prefetch or background"));
    }
    // read(offset, length, kind, into): fills the caller's buffer (a reader that reuses its buffers
    // allocates no memory per read) and resolves to it.
    Napi::Buffer<uint8_t> out;
    if (info.Length() > 3 && !info[3].IsUndefined()) {
      if (!info[3].IsBuffer() || info[3].As<Napi::Buffer<uint8_t>>().Length() != len)
        return common::rejected(env, obd::InvalidArg("RemoteFile.read(offset, length, kind, into): into must be a Buffer of exactly length bytes"));
      out = info[3].As<Napi::Buffer<uint8_t>>();
    } else {
      out = Napi::Buffer<uint8_t>::New(env, len);
    }
    auto deferred = Napi::Promise::Deferred::New(env);
    uint8_t* data = out.Data();
    auto* ctx = new ReadCtx{Napi::Persistent(out), Status::Ok(), deferred};
    auto tsfn = Napi::ThreadSafeFunction::New(env, Napi::Function(), "obd-remote-read", 0, 1);
    file->readAsync(data, len, off, priority, [ctx, tsfn](Status st) mutable {
      ctx->st = std::move(st);
      napi_status s = tsfn.NonBlockingCall(ctx, [](Napi::Env e, Napi::Function, ReadCtx* c) {
        if (e == nullptr) {  // environment going away: the reference cannot be released any more
          c->out.SuppressDestruct();
          delete c;
          return;
        }
        if (c->st.ok()) c->deferred.Resolve(c->out.Value());
        else c->deferred.Reject(toError(e, c->st).Value());
        c->out.Reset();
        delete c;
      });
      if (s != napi_ok) {
        ctx->out.SuppressDestruct();
        delete ctx;
      }
      tsfn.Release();
    });
    return deferred.Promise();
  }
  Napi::Value NextMissing(const Napi::CallbackInfo& info) {
    uint64_t off = 0;
    if (info.Length() > 0 && !common::safeU64(info[0], &off)) {
      common::fail(info.Env(), obd::InvalidArg("RemoteFile.nextMissing(offset): offset must be a non-negative integer"));
      return info.Env().Undefined();
    }
    return Napi::Number::New(info.Env(), static_cast<double>(file->nextMissing(off)));
  }
  Napi::Value Stats(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    obd::RemoteFileStats s = file->stats();
    Napi::Object o = Napi::Object::New(env);
    o.Set("reads", static_cast<double>(s.reads));
    o.Set("hits", static_cast<double>(s.hits));
    o.Set("fetches", static_cast<double>(s.fetches));
    o.Set("fetchedBytes", static_cast<double>(s.fetchedBytes));
    o.Set("readAheadFetches", static_cast<double>(s.readAheadFetches));
    o.Set("readAheadBytes", static_cast<double>(s.readAheadBytes));
    o.Set("prefetchBytes", static_cast<double>(s.prefetchBytes));
    o.Set("backgroundBytes", static_cast<double>(s.backgroundBytes));
    o.Set("promotedFetches", static_cast<double>(s.promotedFetches));
    o.Set("failedFetches", static_cast<double>(s.failedFetches));
    o.Set("presentUnits", static_cast<double>(file->cachedBlob()->presentCount()));
    o.Set("units", static_cast<double>(file->cachedBlob()->unitCount()));
    return o;
  }
};

// The read-ahead policy alone, for its unit tests: new ReadAheadPolicy({unitSize, size, startBytes?})
// .onRead(offset, length, maxWindowUnits) → {firstUnit, count}   .streams() → [{next, run, window, marker, end}]
class PolicyWrap : public Napi::ObjectWrap<PolicyWrap> {
 public:
  static Napi::Function define(Napi::Env env) {
    return DefineClass(env, "ReadAheadPolicy", {InstanceMethod("onRead", &PolicyWrap::OnRead), InstanceMethod("streams", &PolicyWrap::Streams)});
  }
  explicit PolicyWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<PolicyWrap>(info) {
    Napi::Env env = info.Env();
    uint64_t unit = 0, size = 0, start = obd::RemoteFileOptions().readAheadStartBytes;
    std::string bad;
    if (info.Length() < 1 || !info[0].IsObject()) bad = "an options object is required";
    else {
      Napi::Object o = info[0].As<Napi::Object>();
      if (numberArg(o, "unitSize", &unit, true, &bad) && numberArg(o, "size", &size, true, &bad)) numberArg(o, "startBytes", &start, false, &bad);
      if (bad.empty() && (unit == 0 || unit > (1u << 30))) bad = "unitSize must be between 1 and 1 GiB";
    }
    if (!bad.empty()) {
      common::fail(env, obd::InvalidArg("ReadAheadPolicy({unitSize, size, startBytes?}): " + bad));
      return;
    }
    policy_ = std::make_unique<obd::ReadAheadPolicy>(static_cast<uint32_t>(unit), size, start);
  }

 private:
  Napi::Value OnRead(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    uint64_t v[3] = {0, 0, 0};
    for (int i = 0; i < 3; i++) {
      if (info.Length() <= static_cast<size_t>(i) || !common::safeU64(info[i], &v[i])) {
        common::fail(env, obd::InvalidArg("ReadAheadPolicy.onRead(offset, length, maxWindowUnits): non-negative integers"));
        return env.Undefined();
      }
    }
    obd::ReadAheadWindow w = policy_->onRead(v[0], v[1], v[2]);
    Napi::Object o = Napi::Object::New(env);
    o.Set("firstUnit", static_cast<double>(w.firstUnit));
    o.Set("count", static_cast<double>(w.count));
    return o;
  }
  Napi::Value Streams(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const auto& ss = policy_->streams();
    Napi::Array a = Napi::Array::New(env, ss.size());
    for (size_t i = 0; i < ss.size(); i++) {
      Napi::Object o = Napi::Object::New(env);
      o.Set("next", static_cast<double>(ss[i].next));
      o.Set("run", static_cast<double>(ss[i].run));
      o.Set("window", static_cast<double>(ss[i].window));
      o.Set("marker", static_cast<double>(ss[i].marker));
      o.Set("end", static_cast<double>(ss[i].end));
      a.Set(i, o);
    }
    return a;
  }
  std::unique_ptr<obd::ReadAheadPolicy> policy_;
};

obd::Result<std::shared_ptr<obd::ReadableFile>> remoteLowerFromJs(Napi::Env env, const Napi::Object& spec) {
  if (auto* w = unwrapTagged<FileWrap>(spec, kFileTag)) return std::shared_ptr<obd::ReadableFile>(w->file);
  if (auto* w = unwrapTagged<FileWrap>(spec.Get("remote"), kFileTag)) return std::shared_ptr<obd::ReadableFile>(w->file);
  auto r = openFromSpec(spec);
  if (!r.ok()) return r.status();
  return std::shared_ptr<obd::ReadableFile>(r.take());
}

void registerAll(Napi::Env env, Napi::Object exports) {
  exports.Set("BlockCache", CacheWrap::define(env));
  exports.Set("RemoteFetcher", FetcherWrap::define(env));
  exports.Set("RemoteFile", FileWrap::define(env));
  exports.Set("ReadAheadPolicy", PolicyWrap::define(env));
}

}  // namespace remote_binding
// ---- end remote ----

// ---- turbo ----
// TurboOCI pieces (docs/formats.md): gzip index creation, the indexed gzip reader, warp lowers.
//   gzipIndexBuild(gzPath, outPath, {span?}) → {points, gzipSize, uncompressedSize, indexSize}
//   new GzipFile({blob: path | RemoteFile, index: path, cacheBytes?})  .read(offset, length): Promise<Buffer>  .stats()
//   readTargetRuns / a lower {meta: path, target: path | RemoteFile spec, gzipIndex?: path, gzipCacheBytes?}
namespace turbo_binding {

using obd::Status;

// gzipIndexBuild's arguments; false (with a pending JS error) when they are wrong.
bool indexBuildArgs(const Napi::CallbackInfo& info, std::string* gz, std::string* out, obd::gzindex::BuildOptions* opts) {
  if (info.Length() < 2 || !info[0].IsString() || !info[1].IsString()) {
    common::fail(info.Env(), obd::InvalidArg("gzipIndexBuild(gzPath, outPath, options)"));
    return false;
  }
  *gz = info[0].As<Napi::String>().Utf8Value();
  *out = info[1].As<Napi::String>().Utf8Value();
  if (info.Length() > 2 && info[2].IsObject()) {
    Napi::Value span = info[2].As<Napi::Object>().Get("span");
    if (span.IsNumber()) opts->span = static_cast<uint64_t>(span.ToNumber().Int64Value());
  }
  return true;
}

obd::Result<obd::gzindex::BuildStats> runIndexBuild(const std::string& gz, const std::string& out,
                                                    const obd::gzindex::BuildOptions& opts) {
  obd::UniqueFd fd(::open(gz.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return obd::SysError(gz + ": open");
  auto r = obd::gzindex::build(fd.get(), gz, out, opts);
  if (!r.ok()) ::unlink(out.c_str());
  return r;
}

Napi::Value IndexBuild(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string gz, out;
  obd::gzindex::BuildOptions opts;
  if (!indexBuildArgs(info, &gz, &out, &opts)) return env.Undefined();
  auto r = runIndexBuild(gz, out, opts);
  if (!r.ok()) return common::fail(env, r.status());
  Napi::Object o = Napi::Object::New(env);
  o.Set("points", static_cast<double>(r.value().points));
  o.Set("gzipSize", static_cast<double>(r.value().gzipSize));
  o.Set("uncompressedSize", static_cast<double>(r.value().uncompressedSize));
  o.Set("indexSize", static_cast<double>(r.value().indexSize));
  return o;
}

obd::Result<obd::gzindex::Index> loadIndex(const std::string& path, uint64_t gzipSize) {
  obd::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return obd::SysError(path + ": open");
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return obd::SysError(path + ": stat");
  if (st.st_size > (1 << 30)) return obd::Corrupt(path + ": gzip index of " + std::to_string(st.st_size) + " bytes is too large");
  std::vector<uint8_t> bytes(static_cast<size_t>(st.st_size));
  OBD_RETURN_IF_ERROR(obd::preadAll(fd.get(), bytes.data(), bytes.size(), 0, path));
  return obd::gzindex::Index::parse(std::move(bytes), gzipSize, path);
}

// Target stream of a warp lower: the blob itself, or its inflated view through the gzip index.
obd::Result<std::shared_ptr<obd::ReadableFile>> openTarget(std::shared_ptr<obd::ReadableFile> blob, const std::string& gzipIndex,
                                                           uint64_t cacheBytes) {
  if (gzipIndex.empty()) return blob;
  auto ix = loadIndex(gzipIndex, blob->size());
  if (!ix.ok()) return ix.status();
  auto gz = obd::gzindex::GzFile::open(std::move(blob), ix.take(), cacheBytes);
  if (!gz.ok()) return gz.status();
  return std::shared_ptr<obd::ReadableFile>(gz.take());
}

// A warp lower described in JS, resolved on the JS thread; opened later on another thread.
struct WarpLower {
  std::string meta;
  std::string targetPath;
  std::shared_ptr<obd::ReadableFile> targetRemote;
  std::string gzipIndex;
  uint64_t cacheBytes = 64ull << 20;
};

bool isWarpLower(const Napi::Value& v) { return v.IsObject() && v.As<Napi::Object>().Get("meta").IsString(); }

obd::Result<WarpLower> warpFromJs(Napi::Env env, const Napi::Object& o) {
  WarpLower w;
  w.meta = o.Get("meta").As<Napi::String>();
  Napi::Value t = o.Get("target");
  if (t.IsString()) {
    w.targetPath = t.As<Napi::String>();
  } else if (t.IsObject()) {
    auto r = remote_binding::remoteLowerFromJs(env, t.As<Napi::Object>());
    if (!r.ok()) return r.status().wrap("target");
    w.targetRemote = r.take();
  } else {
    return obd::InvalidArg("warp lower " + w.meta + ": target (path or remote blob) is required");
  }
  if (o.Get("gzipIndex").IsString()) w.gzipIndex = o.Get("gzipIndex").As<Napi::String>();
  Napi::Value c = o.Get("gzipCacheBytes");
  if (c.IsNumber()) w.cacheBytes = static_cast<uint64_t>(std::max<int64_t>(0, c.ToNumber().Int64Value()));
  return w;
}

// Opens meta + target: blocking (index file read, local opens); never on the JS thread for remote targets' reads.
obd::Status openWarp(const WarpLower& w, obd::StackSpec* spec) {
  auto meta = obd::LocalFile::open(w.meta);
  if (!meta.ok()) return meta.status();
  std::shared_ptr<obd::ReadableFile> blob = w.targetRemote;
  if (!blob) {
    auto f = obd::LocalFile::open(w.targetPath);
    if (!f.ok()) return f.status();
    blob = f.take();
  }
  auto target = openTarget(blob, w.gzipIndex, w.cacheBytes);
  if (!target.ok()) return target.status();
  spec->targets.resize(spec->lowers.size());
  spec->lowers.push_back(meta.take());
  spec->targets.push_back(target.take());
  return Status::Ok();
}

// The runs file written by convertApplyTar's targetRunsOut, as LSMT segments (≤ 16383 sectors each).
obd::Result<std::vector<obd::lsmt::Segment>> readTargetRuns(const std::string& path) {
  obd::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return obd::SysError(path + ": open");
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return obd::SysError(path + ": stat");
  if (st.st_size % 24) return obd::Corrupt(path + ": not a whole number of runs");
  std::vector<uint8_t> bytes(static_cast<size_t>(st.st_size));
  OBD_RETURN_IF_ERROR(obd::preadAll(fd.get(), bytes.data(), bytes.size(), 0, path));
  std::vector<obd::lsmt::Segment> segs;
  for (size_t i = 0; i < bytes.size(); i += 24) {
    uint64_t v[3];
    std::memcpy(v, &bytes[i], 24);
    if (v[0] % 512 || v[1] % 512 || v[2] % 512) return obd::Corrupt(path + ": run " + std::to_string(i / 24) + " is not sector aligned");
    uint64_t dev = v[0] / 512, left = v[1] / 512, tar = v[2] / 512;
    while (left > 0) {
      uint32_t n = static_cast<uint32_t>(std::min<uint64_t>(left, obd::lsmt::kMaxLength));
      obd::lsmt::Segment sg;
      sg.offset = dev;
      sg.length = n;
      sg.moffset = tar;
      segs.push_back(sg);
      dev += n;
      tar += n;
      left -= n;
    }
  }
  return segs;
}

class GzWrap : public Napi::ObjectWrap<GzWrap> {
 public:
  static Napi::Function define(Napi::Env env) {
    return DefineClass(env, "GzipFile", {InstanceMethod("read", &GzWrap::Read), InstanceMethod("stats", &GzWrap::Stats),
                                         InstanceMethod("size", &GzWrap::Size)});
  }
  explicit GzWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<GzWrap>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsObject() || !info[0].As<Napi::Object>().Get("index").IsString()) {
      common::fail(env, obd::InvalidArg("new GzipFile({blob, index, cacheBytes?})"));
      return;
    }
    Napi::Object o = info[0].As<Napi::Object>();
    std::shared_ptr<obd::ReadableFile> blob;
    Napi::Value b = o.Get("blob");
    if (b.IsString()) {
      auto f = obd::LocalFile::open(b.As<Napi::String>());
      if (!f.ok()) {
        common::fail(env, f.status());
        return;
      }
      blob = f.take();
    } else if (b.IsObject()) {
      auto r = remote_binding::remoteLowerFromJs(env, b.As<Napi::Object>());
      if (!r.ok()) {
        common::fail(env, r.status());
        return;
      }
      blob = r.take();
    } else {
      common::fail(env, obd::InvalidArg("GzipFile: blob (path or RemoteFile) is required"));
      return;
    }
    uint64_t cache = 64ull << 20;
    if (o.Get("cacheBytes").IsNumber()) cache = static_cast<uint64_t>(std::max<int64_t>(0, o.Get("cacheBytes").ToNumber().Int64Value()));
    auto t = openTarget(blob, o.Get("index").As<Napi::String>(), cache);
    if (!t.ok()) {
      common::fail(env, t.status());
      return;
    }
    file_ = std::static_pointer_cast<obd::gzindex::GzFile>(t.take());
  }

 private:
  struct Ctx {
    Napi::Reference<Napi::Buffer<uint8_t>> out;
    Status st;
    Napi::Promise::Deferred deferred;
  };
  Napi::Value Size(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), static_cast<double>(file_->size())); }
  Napi::Value Stats(const Napi::CallbackInfo& info) {
    auto s = file_->stats();
    Napi::Object o = Napi::Object::New(info.Env());
    o.Set("spanFetches", static_cast<double>(s.spanFetches));
    o.Set("cacheHits", static_cast<double>(s.cacheHits));
    return o;
  }
  Napi::Value Read(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    uint64_t off = 0, len = 0;
    if (info.Length() < 2 || !common::safeU64(info[0], &off) || !common::safeU64(info[1], &len) || len > (1u << 30))
      return common::rejected(env, obd::InvalidArg("GzipFile.read(offset, length)"));
    auto deferred = Napi::Promise::Deferred::New(env);
    Napi::Buffer<uint8_t> out = Napi::Buffer<uint8_t>::New(env, len);
    uint8_t* data = out.Data();
    auto* ctx = new Ctx{Napi::Persistent(out), Status::Ok(), deferred};
    auto tsfn = Napi::ThreadSafeFunction::New(env, Napi::Function(), "obd-gzip-read", 0, 1);
    file_->readAsync(data, len, off, [ctx, tsfn](Status st) mutable {
      ctx->st = std::move(st);
      napi_status s = tsfn.NonBlockingCall(ctx, [](Napi::Env e, Napi::Function, Ctx* c) {
        if (e == nullptr) {
          c->out.SuppressDestruct();
          delete c;
          return;
        }
        if (c->st.ok()) c->deferred.Resolve(c->out.Value());
        else c->deferred.Reject(common::toError(e, c->st).Value());
        c->out.Reset();
        delete c;
      });
      if (s != napi_ok) {
        ctx->out.SuppressDestruct();
        delete ctx;
      }
      tsfn.Release();
    });
    return deferred.Promise();
  }
  std::shared_ptr<obd::gzindex::GzFile> file_;
};

void registerAll(Napi::Env env, Napi::Object exports) {
  exports.Set("gzipIndexBuild", Napi::Function::New(env, IndexBuild));
  exports.Set("GzipFile", GzWrap::define(env));
}

}  // namespace turbo_binding
// ---- end turbo ----


// ---- zfile ----
namespace zfile_binding {

using obd::Status;

bool parseOptions(const Napi::Value& v, obd::zfile::CompressOptions* o, std::string* bad) {
  if (v.IsUndefined() || v.IsNull()) return true;
  if (!v.IsObject()) return *bad = "options must be an object", false;
  Napi::Object obj = v.As<Napi::Object>();
  if (obj.Has("algorithm") && !obj.Get("algorithm").IsUndefined()) {
    std::string a = common::getString(obj, "algorithm");
    if (a == "lz4") o->algorithm = obd::zfile::Algorithm::kLz4;
    else if (a == "zstd") o->algorithm = obd::zfile::Algorithm::kZstd;
    else return *bad = "algorithm must be lz4 or zstd, got " + obj.Get("algorithm").ToString().Utf8Value(), false;
  }
  uint64_t blockSize = o->blockSize;
  if (!common::numberArg(obj, "blockSize", &blockSize, false, bad)) return false;
  if (blockSize > UINT32_MAX) return *bad = "blockSize must be a byte count", false;
  o->blockSize = static_cast<uint32_t>(blockSize);
  if (obj.Has("verify") && !obj.Get("verify").IsUndefined()) o->verify = obj.Get("verify").ToBoolean();
  if (obj.Has("overwriteHeader") && !obj.Get("overwriteHeader").IsUndefined())
    o->overwriteHeader = obj.Get("overwriteHeader").ToBoolean();
  return true;
}

using common::PromiseWorker;
using common::rejected;

Napi::Value Compress(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsString() || !info[1].IsString())
    return rejected(env, obd::InvalidArg("zfileCompress(input, output, options)"));
  std::string in = info[0].As<Napi::String>(), out = info[1].As<Napi::String>();
  obd::zfile::CompressOptions opts;
  std::string bad;
  if (!parseOptions(info[2], &opts, &bad)) return rejected(env, obd::InvalidArg(bad));
  return PromiseWorker::run(env, [in, out, opts]() -> Status {
    auto src = obd::LocalFile::open(in);
    if (!src.ok()) return src.status();
    return obd::zfile::compressFile(*src.value(), out, opts);
  });
}

Napi::Value Decompress(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsString() || !info[1].IsString())
    return rejected(env, obd::InvalidArg("zfileDecompress(input, output, verify)"));
  std::string in = info[0].As<Napi::String>(), out = info[1].As<Napi::String>();
  bool verify = info.Length() > 2 && info[2].ToBoolean();
  return PromiseWorker::run(env, [in, out, verify]() -> Status {
    auto src = obd::LocalFile::open(in);
    if (!src.ok()) return src.status();
    auto z = obd::zfile::open(src.take(), verify);
    if (!z.ok()) return z.status();
    return obd::zfile::decompressFile(*z.value(), out);
  });
}

Napi::Value Inspect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) return common::fail(env, obd::InvalidArg("zfileInspect(path)"));
  std::string path = info[0].As<Napi::String>();
  auto src = obd::LocalFile::open(path);
  if (!src.ok()) return common::fail(env, src.status());
  auto r = obd::zfile::inspect(*src.value());
  if (!r.ok()) return common::fail(env, r.status());
  const obd::zfile::Info& i = r.value();
  Napi::Object o = Napi::Object::New(env);
  o.Set("algorithm", i.algorithm == obd::zfile::Algorithm::kLz4 ? "lz4" : "zstd");
  o.Set("blockSize", i.blockSize);
  o.Set("verify", i.verify);
  o.Set("headerOverwritten", i.headerOverwritten);
  o.Set("hasDigest", i.hasDigest);
  o.Set("blockCount", static_cast<double>(i.blockCount));
  o.Set("originalSize", static_cast<double>(i.originalSize));
  o.Set("indexOffset", static_cast<double>(i.indexOffset));
  return o;
}

Napi::Value LooksLike(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsBuffer()) return Napi::Boolean::New(info.Env(), false);
  auto b = info[0].As<Napi::Buffer<uint8_t>>();
  return Napi::Boolean::New(info.Env(), obd::zfile::looksLikeZFile(b.Data(), b.Length()));
}

// A decompressed view of a local ZFile, read in ranges.
class Reader : public Napi::ObjectWrap<Reader> {
 public:
  static Napi::Function define(Napi::Env env) {
    return DefineClass(env, "ZFileReader",
                       {InstanceMethod("read", &Reader::Read), InstanceMethod("close", &Reader::Close),
                        InstanceAccessor("size", &Reader::Size, nullptr)});
  }
  // new ZFileReader(path, verifyBlocks). (The reader over asynchronous and corrupting sources is
  // exercised by addon/test/zfile, where the test-only FaultySource lives.)
  explicit Reader(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Reader>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsString()) {
      common::fail(env, obd::InvalidArg("new ZFileReader(path, verify)"));
      return;
    }
    auto src = obd::LocalFile::open(info[0].As<Napi::String>());
    if (!src.ok()) {
      common::fail(env, src.status());
      return;
    }
    auto z = obd::zfile::open(src.take(), info.Length() > 1 && info[1].ToBoolean());
    if (!z.ok()) {
      common::fail(env, z.status());
      return;
    }
    file_ = z.take();
  }

 private:
  Napi::Value Size(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), file_ ? static_cast<double>(file_->size()) : 0);
  }
  // close(): drops the file (reads in flight keep it alive until they finish).
  Napi::Value Close(const Napi::CallbackInfo& info) {
    file_.reset();
    return info.Env().Undefined();
  }
  // read(offset, length) → Promise<Buffer>; runs on the libuv pool.
  Napi::Value Read(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!file_) return rejected(env, obd::InvalidArg("ZFileReader: read after close"));
    double off = info[0].ToNumber().DoubleValue(), len = info[1].ToNumber().DoubleValue();
    if (!(off >= 0) || !(len >= 0) || len > (1 << 30) || off > 9007199254740991.0)
      return rejected(env, obd::InvalidArg("read: bad offset/length"));
    auto buf = std::make_shared<std::vector<uint8_t>>(static_cast<size_t>(len));
    auto file = file_;
    uint64_t o = static_cast<uint64_t>(off);
      return PromiseWorker::run(env, [file, buf, o]() { return file->read(buf->data(), buf->size(), o); }, buf);
  }

  std::shared_ptr<obd::ReadableFile> file_;
};

// crc32c(buf, seed, portable) → raw register update (no inversion), as ZFile checksums use it.
Napi::Value Crc32c(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsBuffer()) {
    return common::fail(env, obd::InvalidArg("crc32c(buffer, seed, portable)"));
  }
  auto b = info[0].As<Napi::Buffer<uint8_t>>();
  uint32_t seed = info.Length() > 1 ? info[1].ToNumber().Uint32Value() : 0;
  bool portable = info.Length() > 2 && info[2].ToBoolean();
  uint32_t crc = portable ? obd::crc32cUpdateTable(seed, b.Data(), b.Length()) : obd::crc32cUpdate(seed, b.Data(), b.Length());
  return Napi::Number::New(env, crc);
}

void registerAll(Napi::Env env, Napi::Object exports) {
  exports.Set("crc32c", Napi::Function::New(env, Crc32c));
  exports.Set("zfileCompress", Napi::Function::New(env, Compress));
  exports.Set("zfileDecompress", Napi::Function::New(env, Decompress));
  exports.Set("zfileInspect", Napi::Function::New(env, Inspect));
  exports.Set("zfileLooksLike", Napi::Function::New(env, LooksLike));
  exports.Set("ZFileReader", Reader::define(env));
}

}  // namespace zfile_binding
// ---- end zfile ----

// ---- layer (lsmt, stack) ----
namespace layer_binding {

using common::fail;
using obd::Status;

using common::getString;
using common::safeU64;

Napi::Object headerObject(Napi::Env env, const obd::lsmt::HeaderTrailer& h) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("flags", h.flags);
  o.Set("indexOffset", static_cast<double>(h.indexOffset));
  o.Set("indexSize", static_cast<double>(h.indexSize));
  o.Set("virtualSize", static_cast<double>(h.virtualSize));
  o.Set("uuid", h.uuidText());
  o.Set("parentUuid", h.parentUuidText());
  o.Set("userTag", h.userTagText());
  o.Set("version", h.version);
  o.Set("subVersion", h.subVersion);
  return o;
}

// layerInfo(path) → what the file is and what its headers say.
Napi::Value LayerInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) return fail(env, obd::InvalidArg("layerInfo(path)"));
  auto r = obd::describeLayer(info[0].As<Napi::String>());
  if (!r.ok()) return fail(env, r.status());
  const obd::LayerDescription& d = r.value();
  Napi::Object o = Napi::Object::New(env);
  Napi::Array formats = Napi::Array::New(env, d.formats.size());
  for (size_t i = 0; i < d.formats.size(); ++i) formats.Set(i, d.formats[i]);
  o.Set("formats", formats);
  o.Set("fileSize", static_cast<double>(d.fileSize));
  if (d.zfile) {
    Napi::Object z = Napi::Object::New(env);
    z.Set("algorithm", d.zfile->algorithm == obd::zfile::Algorithm::kLz4 ? "lz4" : "zstd");
    z.Set("blockSize", d.zfile->blockSize);
    z.Set("verify", d.zfile->verify);
    z.Set("headerOverwritten", d.zfile->headerOverwritten);
    z.Set("blockCount", static_cast<double>(d.zfile->blockCount));
    z.Set("originalSize", static_cast<double>(d.zfile->originalSize));
    o.Set("zfile", z);
  }
  if (d.header) o.Set("header", headerObject(env, *d.header));
  if (d.trailer) o.Set("trailer", headerObject(env, *d.trailer));
  o.Set("extentCount", static_cast<double>(d.extentCount));
  o.Set("zeroedCount", static_cast<double>(d.zeroedCount));
  o.Set("dataBytes", static_cast<double>(d.dataBytes));
  return o;
}

// createWritableLayer(data, index, {vsize, uuid?, parentUuid?})
Napi::Value CreateWritableLayer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsString() || !info[1].IsString() || !info[2].IsObject())
    return fail(env, obd::InvalidArg("createWritableLayer(data, index, {vsize, uuid, parentUuid})"));
  Napi::Object opts = info[2].As<Napi::Object>();
  obd::lsmt::CreateOptions co;
  if (!safeU64(opts.Get("vsize"), &co.virtualSize)) return fail(env, obd::InvalidArg("vsize must be a byte count"));
  co.uuid = getString(opts, "uuid");
  co.parentUuid = getString(opts, "parentUuid");
  auto r = obd::lsmt::WritableLayer::create(info[0].As<Napi::String>(), info[1].As<Napi::String>(), co);
  if (!r.ok()) return fail(env, r.status());
  return Napi::String::New(env, r.value()->header().uuidText());
}

// commitLayer(data, index, out, {uuid?, parentUuid?, userTag?, zfile?: {algorithm, blockSize}})
Napi::Value CommitLayer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsString() || !info[1].IsString() || !info[2].IsString())
    return fail(env, obd::InvalidArg("commitLayer(data, index, out, options)"));
  obd::lsmt::CommitOptions co;
  if (info.Length() > 3 && info[3].IsObject()) {
    Napi::Object o = info[3].As<Napi::Object>();
    co.uuid = getString(o, "uuid");
    if (o.Get("parentUuid").IsString()) co.parentUuid = getString(o, "parentUuid");
    co.userTag = getString(o, "userTag");
    Napi::Value z = o.Get("zfile");
    if (z.IsObject()) {
      obd::zfile::CompressOptions zo;
      zo.overwriteHeader = true;  // what `overlaybd-commit -z` writes
      std::string bad;
      if (!zfile_binding::parseOptions(z, &zo, &bad)) return fail(env, obd::InvalidArg("zfile " + bad));
      co.zfile = zo;
    }
  }
  if (info.Length() > 3 && info[3].IsObject() && info[3].As<Napi::Object>().Get("targetRuns").IsString()) {
    auto runs = turbo_binding::readTargetRuns(info[3].As<Napi::Object>().Get("targetRuns").As<Napi::String>());
    if (!runs.ok()) return fail(env, runs.status());
    co.targetRuns = runs.take();
  }
  auto src = obd::lsmt::WritableLayer::open(info[0].As<Napi::String>(), info[1].As<Napi::String>(), true);
  if (!src.ok()) return fail(env, src.status());
  auto r = obd::lsmt::commit(*src.value(), info[2].As<Napi::String>(), co);
  if (!r.ok()) return fail(env, r.status());
  Napi::Object o = Napi::Object::New(env);
  o.Set("bytes", static_cast<double>(r.value().bytes));
  o.Set("extents", static_cast<double>(r.value().extents));
  o.Set("indexEntries", static_cast<double>(r.value().indexEntries));
  return o;
}

// A layer stack over local files, for tools and tests: every call blocks (local files only).
class Stack : public Napi::ObjectWrap<Stack> {
 public:
  static Napi::Function define(Napi::Env env) {
    return DefineClass(env, "LayerStack",
                       {InstanceMethod("read", &Stack::Read), InstanceMethod("readInto", &Stack::ReadInto),
                        InstanceMethod("write", &Stack::Write),
                        InstanceMethod("discard", &Stack::Discard), InstanceMethod("flush", &Stack::Flush),
                        InstanceMethod("size", &Stack::Size), InstanceMethod("readOnly", &Stack::ReadOnly),
                        InstanceMethod("extents", &Stack::Extents), InstanceMethod("exportRaw", &Stack::ExportRaw),
                        InstanceMethod("close", &Stack::Close)});
  }

  // new LayerStack({lowers: string[], upper?: {data, index}, verify?: boolean})
  explicit Stack(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Stack>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsObject()) {
      fail(env, obd::InvalidArg("new LayerStack({lowers, upper})"));
      return;
    }
    Napi::Object spec = info[0].As<Napi::Object>();
    obd::StackSpec ss;
    Napi::Value lowers = spec.Get("lowers");
    if (lowers.IsArray()) {
      Napi::Array arr = lowers.As<Napi::Array>();
      for (uint32_t i = 0; i < arr.Length(); ++i) {
        if (turbo_binding::isWarpLower(arr.Get(i))) {
          auto w = turbo_binding::warpFromJs(env, arr.Get(i).As<Napi::Object>());
          obd::Status ws = w.ok() ? turbo_binding::openWarp(w.value(), &ss) : w.status();
          if (!ws.ok()) {
            fail(env, ws.wrap("lower " + std::to_string(i)));
            return;
          }
          continue;
        }
        if (!ss.targets.empty()) ss.targets.resize(ss.lowers.size() + 1);
        auto f = obd::LocalFile::open(arr.Get(i).ToString().Utf8Value());
        if (!f.ok()) {
          fail(env, f.status());
          return;
        }
        ss.lowers.push_back(f.take());
      }
    }
    Napi::Value upper = spec.Get("upper");
    if (upper.IsObject()) {
      ss.upperData = getString(upper.As<Napi::Object>(), "data");
      ss.upperIndex = getString(upper.As<Napi::Object>(), "index");
    }
    Napi::Value verify = spec.Get("verify");
    if (verify.IsBoolean()) ss.verifyZFileBlocks = verify.As<Napi::Boolean>();
    auto st = obd::LayerStack::open(ss);
    if (!st.ok()) {
      fail(env, st.status());
      return;
    }
    stack_ = st.take();
  }

 private:
  bool open(Napi::Env env) {
    if (stack_) return true;
    fail(env, Status(EBADF, "layer stack is closed"));
    return false;
  }
  bool range(const Napi::CallbackInfo& info, uint64_t* off, uint64_t* len) {
    if (info.Length() < 2 || !safeU64(info[0], off) || !safeU64(info[1], len)) {
      fail(info.Env(), obd::InvalidArg("expected (offset, length) byte counts"));
      return false;
    }
    return true;
  }
  Napi::Value Read(const Napi::CallbackInfo& info) {
    uint64_t off, len;
    if (!open(info.Env()) || !range(info, &off, &len)) return info.Env().Undefined();
    if (len > (uint64_t(1) << 30)) return fail(info.Env(), obd::InvalidArg("read of more than 1 GiB"));
    Napi::Buffer<uint8_t> buf = Napi::Buffer<uint8_t>::New(info.Env(), static_cast<size_t>(len));
    Status st = stack_->read(buf.Data(), buf.Length(), off);
    if (!st.ok()) return fail(info.Env(), st);
    return buf;
  }
  // readInto(offset, buffer): fills the whole buffer (length a multiple of 512) without allocating.
  Napi::Value ReadInto(const Napi::CallbackInfo& info) {
    uint64_t off;
    if (!open(info.Env())) return info.Env().Undefined();
    if (info.Length() < 2 || !safeU64(info[0], &off) || !info[1].IsBuffer())
      return fail(info.Env(), obd::InvalidArg("readInto(offset, buffer)"));
    auto b = info[1].As<Napi::Buffer<uint8_t>>();
    Status st = stack_->read(b.Data(), b.Length(), off);
    if (!st.ok()) return fail(info.Env(), st);
    return info.Env().Undefined();
  }
  // write(offset, buffer)
  Napi::Value Write(const Napi::CallbackInfo& info) {
    uint64_t off;
    if (!open(info.Env())) return info.Env().Undefined();
    if (info.Length() < 2 || !safeU64(info[0], &off) || !info[1].IsBuffer())
      return fail(info.Env(), obd::InvalidArg("write(offset, buffer)"));
    auto b = info[1].As<Napi::Buffer<uint8_t>>();
    Status st = stack_->write(b.Data(), b.Length(), off);
    if (!st.ok()) return fail(info.Env(), st);
    return info.Env().Undefined();
  }
  Napi::Value Discard(const Napi::CallbackInfo& info) {
    uint64_t off, len;
    if (!open(info.Env()) || !range(info, &off, &len)) return info.Env().Undefined();
    Status st = stack_->discard(off, len);
    if (!st.ok()) return fail(info.Env(), st);
    return info.Env().Undefined();
  }
  Napi::Value Flush(const Napi::CallbackInfo& info) {
    if (!open(info.Env())) return info.Env().Undefined();
    Status st = stack_->flush();
    if (!st.ok()) return fail(info.Env(), st);
    return info.Env().Undefined();
  }
  Napi::Value Size(const Napi::CallbackInfo& info) {
    if (!open(info.Env())) return info.Env().Undefined();
    return Napi::Number::New(info.Env(), static_cast<double>(stack_->size()));
  }
  Napi::Value ReadOnly(const Napi::CallbackInfo& info) {
    if (!open(info.Env())) return info.Env().Undefined();
    return Napi::Boolean::New(info.Env(), stack_->readOnly());
  }
  // extents() → [{offset, length, zeroed, layer}] of mapped runs, ascending.
  Napi::Value Extents(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!open(env)) return env.Undefined();
    auto ext = stack_->extents();
    Napi::Array arr = Napi::Array::New(env, ext.size());
    for (size_t i = 0; i < ext.size(); ++i) {
      Napi::Object e = Napi::Object::New(env);
      e.Set("offset", static_cast<double>(ext[i].offset));
      e.Set("length", static_cast<double>(ext[i].length));
      e.Set("zeroed", ext[i].zeroed);
      e.Set("layer", ext[i].layer);
      arr.Set(i, e);
    }
    return arr;
  }
  // exportRaw(path) → data bytes written (the file is sparse, full virtual size).
  Napi::Value ExportRaw(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!open(env)) return env.Undefined();
    if (info.Length() < 1 || !info[0].IsString()) return fail(env, obd::InvalidArg("exportRaw(path)"));
    auto r = obd::exportRaw(*stack_, info[0].As<Napi::String>());
    if (!r.ok()) return fail(env, r.status());
    return Napi::Number::New(env, static_cast<double>(r.value()));
  }
  Napi::Value Close(const Napi::CallbackInfo& info) {
    stack_.reset();
    return info.Env().Undefined();
  }

  std::unique_ptr<obd::LayerStack> stack_;
};

void registerAll(Napi::Env env, Napi::Object exports) {
  exports.Set("layerInfo", Napi::Function::New(env, LayerInfo));
  exports.Set("createWritableLayer", Napi::Function::New(env, CreateWritableLayer));
  exports.Set("commitLayer", Napi::Function::New(env, CommitLayer));
  exports.Set("LayerStack", Stack::define(env));
}

}  // namespace layer_binding
// ---- end layer ----

// ---- device ----
namespace device_binding {

using common::toError;
using obd::Status;

// Attach and detach wait on the kernel, which waits on our FUSE threads (and, for remote layers, on
// JS). They run on a thread of their own — not the JS thread, and not the libuv pool that DNS and
// undici need — and settle their promise through a thread-safe function.
template <typename T>
Napi::Value runOnOwnThread(Napi::Env env, const char* name, std::function<obd::Result<T>()> work,
                           std::function<Napi::Value(Napi::Env, T&)> toJs) {
  auto deferred = std::make_shared<Napi::Promise::Deferred>(Napi::Promise::Deferred::New(env));
  Napi::Promise promise = deferred->Promise();
  auto tsfn = Napi::ThreadSafeFunction::New(env, Napi::Function(), name, 0, 1);
  std::thread([tsfn, deferred, work = std::move(work), toJs = std::move(toJs)]() mutable {
    auto result = std::make_shared<obd::Result<T>>(work());
    tsfn.BlockingCall([deferred, result, toJs](Napi::Env env, Napi::Function) {
      if (!result->ok()) return deferred->Reject(toError(env, result->status()).Value());
      deferred->Resolve(toJs(env, result->value()));
    });
    tsfn.Release();
  }).detach();
  return promise;
}

struct Handle {
  std::shared_ptr<obd::ServedDevice> dev;
};

using common::getString;

// deviceAttach({id, mountDir, lowers: [path | RemoteFile…], upperData, upperIndex, rawFile, rawWritable,
//               pageCache, threads, fuseIoUring, transport: "fuse-loop" | "tcmu",
//               tcmu: {hba, name, cfgString, loopbackId, adoptExisting}})
//   → Promise<{handle, path, major, minor, size, readOnly, directIo; fuse-loop: loopIndex, backingFile,
//              pageCache, bdiError}>
Napi::Value Attach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto reject = [env](const Status& st) { return common::rejected(env, st); };
  if (info.Length() < 1 || !info[0].IsObject()) return reject(obd::InvalidArg("deviceAttach(options)"));
  Napi::Object o = info[0].As<Napi::Object>();
  obd::ServeOptions serve;
  obd::FuseLoopOptions& opts = serve.fuseLoop;
  opts.id = getString(o, "id");
  opts.mountDir = getString(o, "mountDir");
  const std::string transport = getString(o, "transport");
  if (transport == "tcmu") {
    if (!o.Get("tcmu").IsObject()) return reject(obd::InvalidArg("deviceAttach: transport tcmu needs tcmu options"));
    Napi::Object t = o.Get("tcmu").As<Napi::Object>();
    obd::tcmu::BackstoreSpec& spec = serve.tcmu.backstore;
    serve.kind = obd::TransportKind::Tcmu;
    if (t.Get("hba").IsNumber()) spec.hba = t.Get("hba").ToNumber().Uint32Value();
    spec.name = getString(t, "name");
    spec.cfgString = getString(t, "cfgString");
    const uint64_t wwnId = t.Get("loopbackId").IsNumber() ? static_cast<uint64_t>(t.Get("loopbackId").ToNumber().Int64Value()) : 0;
    spec.loopbackWwn = obd::tcmu::aciLoopbackWwn(wwnId, spec.hba);
    serve.tcmu.adoptExisting = t.Get("adoptExisting").ToBoolean();
    if (spec.name.empty()) return reject(obd::InvalidArg("deviceAttach: tcmu.name is required"));
  } else if (!transport.empty() && transport != "fuse-loop") {
    return reject(obd::InvalidArg("deviceAttach: unknown transport " + transport));
  } else if (opts.id.empty() || opts.mountDir.empty()) {
    return reject(obd::InvalidArg("deviceAttach: id and mountDir are required"));
  }
  if (o.Get("pageCache").IsBoolean()) opts.pageCache = o.Get("pageCache").ToBoolean();
  if (o.Get("cacheableFile").IsBoolean()) opts.cacheableFile = o.Get("cacheableFile").ToBoolean();
  if (o.Get("threads").IsNumber()) opts.threads = o.Get("threads").ToNumber().Int32Value();
  if (o.Get("fuseIoUring").IsBoolean()) opts.fuseIoUring = o.Get("fuseIoUring").ToBoolean();
  if (o.Get("takeover").IsObject()) {
    Napi::Object t = o.Get("takeover").As<Napi::Object>();
    obd::FuseTakeover tk;
    tk.fuseFd = t.Get("fuseFd").IsNumber() ? t.Get("fuseFd").ToNumber().Int32Value() : -1;
    tk.loopFd = t.Get("loopFd").IsNumber() ? t.Get("loopFd").ToNumber().Int32Value() : -1;
    if (!t.Get("init").IsBuffer()) return reject(obd::InvalidArg("deviceAttach: takeover.init must be a Buffer"));
    auto init = t.Get("init").As<Napi::Buffer<char>>();
    tk.initRequest.assign(init.Data(), init.Length());
    if (tk.fuseFd < 0 || tk.loopFd < 0) return reject(obd::InvalidArg("deviceAttach: takeover needs fuseFd and loopFd"));
    opts.takeover = std::move(tk);
  }
  auto src = std::make_shared<obd::DeviceSource>();
  src->rawFile = getString(o, "rawFile");
  src->rawWritable = o.Get("rawWritable").ToBoolean();
  src->stack.upperData = getString(o, "upperData");
  src->stack.upperIndex = getString(o, "upperIndex");
  // Each lower is a local path (opened on the attach thread) or a remote file object, resolved here
  // on the JS thread (construction only; its reads happen on the attach thread and the FUSE threads).
  std::vector<std::pair<std::string, std::shared_ptr<obd::ReadableFile>>> lowerFiles;
  std::map<size_t, turbo_binding::WarpLower> warps;  // TurboOCI lowers by position
  if (o.Get("lowers").IsArray()) {
    Napi::Array a = o.Get("lowers").As<Napi::Array>();
    for (uint32_t i = 0; i < a.Length(); i++) {
      Napi::Value v = a.Get(i);
      if (v.IsString()) {
        lowerFiles.emplace_back(v.As<Napi::String>().Utf8Value(), nullptr);
        continue;
      }
      if (turbo_binding::isWarpLower(v)) {
        auto w = turbo_binding::warpFromJs(env, v.As<Napi::Object>());
        if (!w.ok()) return reject(w.status().wrap("lower " + std::to_string(i)));
        warps[i] = w.take();
        lowerFiles.emplace_back(std::string(), nullptr);
        continue;
      }
      if (!v.IsObject()) return reject(obd::InvalidArg("lower " + std::to_string(i) + ": a path or a remote file"));
      auto remote = remote_binding::remoteLowerFromJs(env, v.As<Napi::Object>());
      if (!remote.ok()) return reject(remote.status().wrap("lower " + std::to_string(i)));
      lowerFiles.emplace_back(std::string(), remote.take());
    }
  }
  return runOnOwnThread<std::shared_ptr<obd::ServedDevice>>(
      env, "obd.deviceAttach",
      [src, lowerFiles, warps, serve]() -> obd::Result<std::shared_ptr<obd::ServedDevice>> {
        for (size_t i = 0; i < lowerFiles.size(); i++) {
          auto w = warps.find(i);
          if (w != warps.end()) {
            OBD_RETURN_IF_ERROR(turbo_binding::openWarp(w->second, &src->stack).wrap("lower " + std::to_string(i)));
            continue;
          }
          if (!src->stack.targets.empty()) src->stack.targets.resize(src->stack.lowers.size() + 1);
          if (lowerFiles[i].second) {
            src->stack.lowers.push_back(lowerFiles[i].second);
            continue;
          }
          auto f = obd::LocalFile::open(lowerFiles[i].first);
          if (!f.ok()) return f.status().wrap("lower " + std::to_string(i));
          src->stack.lowers.push_back(f.take());
        }
        auto bd = obd::openDeviceSource(*src);
        if (!bd.ok()) return bd.status();
        auto dev = obd::serveBlockDevice(std::shared_ptr<obd::BlockDevice>(bd.take()), serve);
        if (!dev.ok()) return dev.status();
        return std::shared_ptr<obd::ServedDevice>(dev.take());
      },
      [](Napi::Env env, std::shared_ptr<obd::ServedDevice>& dev) -> Napi::Value {
        Napi::Object r = Napi::Object::New(env);
        auto* holder = new Handle{dev};
        // GC of a handle that was never detached: close off the JS thread (it may wait on I/O).
        r.Set("handle", Napi::External<Handle>::New(env, holder, [](Napi::Env, Handle* h) {
                auto d = std::move(h->dev);
                delete h;
                if (d) std::thread([d]() { (void)d->close(true); }).detach();
              }));
        r.Set("path", dev->path());
        r.Set("major", static_cast<double>(major(dev->rdev())));
        r.Set("minor", static_cast<double>(minor(dev->rdev())));
        r.Set("size", static_cast<double>(dev->size()));
        r.Set("readOnly", dev->readOnly());
        r.Set("directIo", false);
        if (auto* fl = dynamic_cast<obd::FuseLoopDevice*>(dev.get())) {
          r.Set("loopIndex", fl->loopIndex());
          r.Set("directIo", fl->directIo());
          r.Set("backingFile", fl->backingFile());
          r.Set("fusePath", fl->fusePath());
          r.Set("pageCache", fl->pageCache());
          if (!fl->bdiError().empty()) r.Set("bdiError", fl->bdiError());
          // For the fd store: the descriptors (ours, valid while attached) and the INIT a successor replays.
          Napi::Object h = Napi::Object::New(env);
          h.Set("fuseFd", fl->fuseFd());
          h.Set("loopFd", fl->loopFd());
          std::string init = fl->initRequest();
          h.Set("init", Napi::Buffer<char>::Copy(env, init.data(), init.size()));
          r.Set("handover", h);
          r.Set("tookOver", fl->tookOver());
          if (fl->tookOver()) {
            Status rs = fl->resendStatus();
            r.Set("resendError", rs.ok() ? env.Null() : Napi::Value(Napi::String::New(env, rs.message())));
          }
        }
        return r;
      });
}

Handle* handleOf(const Napi::Value& v) { return v.IsExternal() ? v.As<Napi::External<Handle>>().Data() : nullptr; }

// deviceDetach(handle, force) → Promise<void>
Napi::Value Detach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Handle* h = info.Length() > 0 ? handleOf(info[0]) : nullptr;
  auto dev = h ? h->dev : nullptr;
  bool force = info.Length() > 1 && info[1].ToBoolean();
  return runOnOwnThread<bool>(
      env, "obd.deviceDetach",
      [dev, force]() -> obd::Result<bool> {
        if (!dev) return obd::InvalidArg("deviceDetach: not a device handle");
        Status st = dev->close(force);
        if (!st.ok()) return st;
        return true;
      },
      [](Napi::Env env, bool&) -> Napi::Value { return env.Undefined(); });
}

// deviceUsePageCache(handle) → Promise<void>: a direct fuse-loop device attached with cacheableFile
// becomes page-cached (its loop device's queue drains first: off the JS thread, which remote misses need).
Napi::Value UsePageCache(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Handle* h = info.Length() > 0 ? handleOf(info[0]) : nullptr;
  auto dev = h ? h->dev : nullptr;
  return runOnOwnThread<bool>(
      env, "obd.deviceUsePageCache",
      [dev]() -> obd::Result<bool> {
        auto* fl = dynamic_cast<obd::FuseLoopDevice*>(dev.get());
        if (!fl) return obd::InvalidArg("deviceUsePageCache: not a fuse-loop device handle");
        Status st = fl->usePageCache();
        if (!st.ok()) return st;
        return true;
      },
      [](Napi::Env env, bool&) -> Napi::Value { return env.Undefined(); });
}

// deviceRelease(handle, handOver) → Promise<void>: process exit; a tcmu device stays in the kernel for
// the next deviced to adopt, a fuse-loop device too when handOver (its descriptors are in the fd store),
// else it is torn down as by a forced detach.
Napi::Value Release(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Handle* h = info.Length() > 0 ? handleOf(info[0]) : nullptr;
  auto dev = h ? h->dev : nullptr;
  bool handOver = info.Length() > 1 && info[1].ToBoolean();
  return runOnOwnThread<bool>(
      env, "obd.deviceRelease",
      [dev, handOver]() -> obd::Result<bool> {
        if (!dev) return obd::InvalidArg("deviceRelease: not a device handle");
        dev->release(handOver);
        return true;
      },
      [](Napi::Env env, bool&) -> Napi::Value { return env.Undefined(); });
}

Napi::Value Stats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Handle* h = info.Length() > 0 ? handleOf(info[0]) : nullptr;
  if (!h || !h->dev) return common::fail(env, obd::InvalidArg("deviceStats: not a device handle"));
  obd::DeviceStats s = h->dev->stats();
  Napi::Object r = Napi::Object::New(env);
  r.Set("readOps", static_cast<double>(s.readOps));
  r.Set("readBytes", static_cast<double>(s.readBytes));
  r.Set("writeOps", static_cast<double>(s.writeOps));
  r.Set("writeBytes", static_cast<double>(s.writeBytes));
  r.Set("discardOps", static_cast<double>(s.discardOps));
  r.Set("discardBytes", static_cast<double>(s.discardBytes));
  r.Set("flushOps", static_cast<double>(s.flushOps));
  r.Set("coalescedReads", static_cast<double>(s.coalescedReads));
  r.Set("inFlight", static_cast<double>(s.inFlight));
  r.Set("errors", static_cast<double>(s.errors));
  r.Set("ringCommands", static_cast<double>(s.ringCommands));
  r.Set("ringPads", static_cast<double>(s.ringPads));
  r.Set("ringBadEntries", static_cast<double>(s.ringBadEntries));
  r.Set("ringNotifications", static_cast<double>(s.ringNotifications));
  return r;
}

// loopClear(path): unbinds a loop device a previous deviced left behind. Throws (EBUSY) while mounted.
Napi::Value LoopClear(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) return common::fail(env, obd::InvalidArg("loopClear(path)"));
  Status st = obd::clearLoopDevice(info[0].As<Napi::String>().Utf8Value());
  if (!st.ok()) return common::fail(env, st);
  return env.Undefined();
}

// unmountLazy(dir): detaches a (stale) mount; its connection dies with its last user.
Napi::Value UnmountLazy(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) return common::fail(env, obd::InvalidArg("unmountLazy(dir)"));
  std::string dir = info[0].As<Napi::String>().Utf8Value();
  if (::umount2(dir.c_str(), MNT_DETACH) != 0) return common::fail(env, obd::SysError(dir + ": umount"));
  return env.Undefined();
}

void registerAll(Napi::Env env, Napi::Object exports) {
  exports.Set("deviceAttach", Napi::Function::New(env, Attach));
  exports.Set("deviceDetach", Napi::Function::New(env, Detach));
  exports.Set("deviceRelease", Napi::Function::New(env, Release));
  exports.Set("deviceUsePageCache", Napi::Function::New(env, UsePageCache));
  exports.Set("deviceStats", Napi::Function::New(env, Stats));
  exports.Set("loopClear", Napi::Function::New(env, LoopClear));
  exports.Set("unmountLazy", Napi::Function::New(env, UnmountLazy));
}

}  // namespace device_binding
// ---- end device ----

// ---- fdstore ----
// Descriptor passing for the fd store that keeps device descriptors across deviced restarts: our
// holder process (SOCK_SEQPACKET) and systemd's notify socket. All calls are short local socket I/O.
namespace fdstore_binding {

using obd::Status;

std::vector<int> fdsFrom(const Napi::Value& v) {
  std::vector<int> out;
  if (!v.IsArray()) return out;
  Napi::Array a = v.As<Napi::Array>();
  for (uint32_t i = 0; i < a.Length(); i++) out.push_back(a.Get(i).ToNumber().Int32Value());
  return out;
}

Napi::Value messageToJs(Napi::Env env, obd::FdMessage& m) {
  Napi::Object r = Napi::Object::New(env);
  r.Set("text", m.text);
  Napi::Array fds = Napi::Array::New(env, m.fds.size());
  for (size_t i = 0; i < m.fds.size(); i++) fds.Set(static_cast<uint32_t>(i), m.fds[i].release());
  r.Set("fds", fds);
  return r;
}

// seqpacketConnect(path) → socket fd (close-on-exec). Throws ENOENT/ECONNREFUSED when nobody listens.
Napi::Value SeqpacketConnect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) return common::fail(env, obd::InvalidArg("seqpacketConnect(path)"));
  auto s = obd::connectSeqpacket(info[0].As<Napi::String>().Utf8Value());
  if (!s.ok()) return common::fail(env, s.status());
  return Napi::Number::New(env, s.value().release());
}

// sendFds(sock, text, fds[]): one message; the descriptors stay open here.
Napi::Value SendFds(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsString()) return common::fail(env, obd::InvalidArg("sendFds(sock, text, fds)"));
  Status st = obd::sendWithFds(info[0].ToNumber().Int32Value(), info[1].As<Napi::String>().Utf8Value(), fdsFrom(info[2]));
  if (!st.ok()) return common::fail(env, st);
  return env.Undefined();
}

// recvFds(sock, timeoutMs) → {text, fds[]}: one message; the caller owns the descriptors.
Napi::Value RecvFds(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsNumber()) return common::fail(env, obd::InvalidArg("recvFds(sock, timeoutMs)"));
  auto m = obd::recvWithFds(info[0].ToNumber().Int32Value(), info[1].ToNumber().Int32Value());
  if (!m.ok()) return common::fail(env, m.status());
  return messageToJs(env, m.value());
}

// sdNotify(socketPath, text, fds[]): one datagram to systemd's notify socket.
Napi::Value SdNotify(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsString() || !info[1].IsString()) return common::fail(env, obd::InvalidArg("sdNotify(socket, text, fds)"));
  Status st = obd::notifyDatagram(info[0].As<Napi::String>().Utf8Value(), info[1].As<Napi::String>().Utf8Value(), fdsFrom(info[2]));
  if (!st.ok()) return common::fail(env, st);
  return env.Undefined();
}

// datagramBind(path) → fd: a notify socket, for running deviced the way systemd does (tests).
Napi::Value DatagramBind(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) return common::fail(env, obd::InvalidArg("datagramBind(path)"));
  auto s = obd::bindDatagram(info[0].As<Napi::String>().Utf8Value());
  if (!s.ok()) return common::fail(env, s.status());
  return Napi::Number::New(env, s.value().release());
}

// streamListen(path) → fd: a listening unix stream socket, as a systemd .socket unit passes it (tests).
Napi::Value StreamListen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) return common::fail(env, obd::InvalidArg("streamListen(path)"));
  auto s = obd::listenStream(info[0].As<Napi::String>().Utf8Value());
  if (!s.ok()) return common::fail(env, s.status());
  return Napi::Number::New(env, s.value().release());
}

// closeFd(fd), setCloexec(fd): for descriptors received from a store or inherited through LISTEN_FDS.
Napi::Value CloseFd(const Napi::CallbackInfo& info) {
  if (info.Length() > 0 && info[0].IsNumber()) ::close(info[0].ToNumber().Int32Value());
  return info.Env().Undefined();
}

Napi::Value SetCloexec(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) return common::fail(env, obd::InvalidArg("setCloexec(fd)"));
  int fd = info[0].ToNumber().Int32Value();
  int flags = ::fcntl(fd, F_GETFD);
  if (flags < 0 || ::fcntl(fd, F_SETFD, flags | FD_CLOEXEC) != 0) return common::fail(env, obd::SysError("fd " + std::to_string(fd)));
  return env.Undefined();
}

void registerAll(Napi::Env env, Napi::Object exports) {
  exports.Set("seqpacketConnect", Napi::Function::New(env, SeqpacketConnect));
  exports.Set("sendFds", Napi::Function::New(env, SendFds));
  exports.Set("recvFds", Napi::Function::New(env, RecvFds));
  exports.Set("sdNotify", Napi::Function::New(env, SdNotify));
  exports.Set("datagramBind", Napi::Function::New(env, DatagramBind));
  exports.Set("streamListen", Napi::Function::New(env, StreamListen));
  exports.Set("closeFd", Napi::Function::New(env, CloseFd));
  exports.Set("setCloexec", Napi::Function::New(env, SetCloexec));
}

}  // namespace fdstore_binding
// ---- end fdstore ----

// ---- tcmu ----
namespace tcmu_binding {

// tcmuSupported(loadModules = false) → {ok, reason}: whether this kernel can serve TCMU devices
// (configfs, target_core_mod, target_core_user, tcm_loop, uio, sd); reason names what is missing.
Napi::Value Supported(const Napi::CallbackInfo& info) {
  const bool load = info.Length() > 0 && info[0].ToBoolean();
  obd::tcmu::TcmuSupport s = obd::tcmu::checkTcmuSupport(load);
  Napi::Object out = Napi::Object::New(info.Env());
  out.Set("ok", Napi::Boolean::New(info.Env(), s.ok));
  out.Set("reason", Napi::String::New(info.Env(), s.reason));
  return out;
}

// tcmuListBackstores(hba) → names of the backstores under core/user_<hba> (what an earlier deviced left).
Napi::Value ListBackstores(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) return common::fail(env, obd::InvalidArg("tcmuListBackstores(hba)"));
  std::vector<std::string> names = obd::tcmu::listBackstores({}, info[0].ToNumber().Uint32Value());
  Napi::Array out = Napi::Array::New(env, names.size());
  for (uint32_t i = 0; i < names.size(); i++) out.Set(i, Napi::String::New(env, names[i]));
  return out;
}

// tcmuRemoveStale(hba, name): removes a backstore nobody serves (its tcm_loop LUN first). Throws on failure.
Napi::Value RemoveStale(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsString())
    return common::fail(env, obd::InvalidArg("tcmuRemoveStale(hba, name)"));
  obd::tcmu::BackstoreSpec spec;
  spec.hba = info[0].ToNumber().Uint32Value();
  spec.name = info[1].As<Napi::String>().Utf8Value();
  obd::Status st = obd::tcmu::removeStaleDevice({}, spec);
  if (!st.ok()) return common::fail(env, st);
  return env.Undefined();
}

void registerAll(Napi::Env env, Napi::Object exports) {
  exports.Set("tcmuSupported", Napi::Function::New(env, Supported));
  exports.Set("tcmuDefaultHba", Napi::Number::New(env, obd::tcmu::kAciDefaultHba));
  exports.Set("tcmuListBackstores", Napi::Function::New(env, ListBackstores));
  exports.Set("tcmuRemoveStale", Napi::Function::New(env, RemoveStale));
}

}  // namespace tcmu_binding
// ---- end tcmu ----

// ---- convert ----
// applyTar for obdconv: runs synchronously on purpose — it is called only by the dedicated apply
// child process (src/convert/apply-child.ts), which chroot()s into the mounted layer filesystem.
namespace convert_binding {

// convertApplyTar({inputFd, root, chroot?, plainTar?, limits?: {maxEntries, maxEntrySize, maxTotalBytes},
//   targetRunsOut?}) → stats
Napi::Value ApplyTar(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) return common::fail(env, obd::InvalidArg("convertApplyTar(options)"));
  Napi::Object o = info[0].As<Napi::Object>();
  if (!o.Get("inputFd").IsNumber() || !o.Get("root").IsString()) {
    return common::fail(env, obd::InvalidArg("convertApplyTar: inputFd and root are required"));
  }
  const int fd = o.Get("inputFd").ToNumber().Int32Value();
  const bool plainTar = o.Get("plainTar").IsBoolean() && o.Get("plainTar").ToBoolean();
  const std::string root = o.Get("root").ToString().Utf8Value();
  const bool useChroot = !o.Get("chroot").IsBoolean() || o.Get("chroot").ToBoolean();
  obd::convert::ApplyLimits limits;
  if (o.Get("limits").IsObject()) {
    Napi::Object l = o.Get("limits").As<Napi::Object>();
    auto num = [&](const char* k, uint64_t& into) {
      if (l.Get(k).IsNumber()) into = static_cast<uint64_t>(l.Get(k).ToNumber().Int64Value());
    };
    num("maxEntries", limits.maxEntries);
    num("maxEntrySize", limits.maxEntrySize);
    num("maxTotalBytes", limits.maxTotalBytes);
  }
  obd::convert::ApplyStats st;
  const std::string runsOut = o.Get("targetRunsOut").IsString() ? o.Get("targetRunsOut").ToString().Utf8Value() : std::string();
  obd::convert::TarMapping mapping;
  obd::Status s = obd::convert::applyTar(fd, root, limits, useChroot, &st, runsOut.empty() ? nullptr : &mapping, plainTar);
  if (!s.ok()) return common::fail(env, s);
  const std::vector<obd::convert::TarDataRun>& runs = mapping.runs;
  if (!runsOut.empty()) {
    // u64 LE triples (device offset, length, tar offset), read back by commitLayer's targetRuns.
    std::vector<uint8_t> bytes(runs.size() * 24);
    for (size_t i = 0; i < runs.size(); ++i) {
      uint64_t v[3] = {runs[i].deviceOffset, runs[i].length, runs[i].tarOffset};
      std::memcpy(&bytes[i * 24], v, 24);
    }
    obd::UniqueFd out(::open(runsOut.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (!out.valid()) return common::fail(env, obd::SysError(runsOut + ": create"));
    obd::Status ws = obd::writeAll(out.get(), bytes.data(), bytes.size(), runsOut);
    if (!ws.ok()) return common::fail(env, ws);
  }
  Napi::Object r = Napi::Object::New(env);
  auto set = [&](const char* k, uint64_t v) { r.Set(k, Napi::Number::New(env, static_cast<double>(v))); };
  set("entries", st.entries);
  set("files", st.files);
  set("dirs", st.dirs);
  set("symlinks", st.symlinks);
  set("hardlinks", st.hardlinks);
  set("specials", st.specials);
  set("whiteouts", st.whiteouts);
  set("opaques", st.opaques);
  set("removed", st.removed);
  set("bytes", st.bytes);
  set("preallocatedBytes", st.preallocatedBytes);
  set("inputBytes", st.inputBytes);
  set("warnings", st.warnings);
  r.Set("firstWarning", Napi::String::New(env, st.firstWarning));
  Napi::Array inodes = Napi::Array::New(env, mapping.preallocatedInodes.size());
  for (size_t i = 0; i < mapping.preallocatedInodes.size(); ++i) {
    inodes.Set(static_cast<uint32_t>(i), Napi::Number::New(env, static_cast<double>(mapping.preallocatedInodes[i])));
  }
  r.Set("preallocatedInodes", inodes);
  return r;
}

// ext4MarkExtentsWritten(device, inodes) → number of extents changed.
Napi::Value MarkExtentsWritten(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsString() || !info[1].IsArray()) {
    Napi::TypeError::New(env, "ext4MarkExtentsWritten(device, inodes)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Array a = info[1].As<Napi::Array>();
  std::vector<uint64_t> inodes(a.Length());
  for (uint32_t i = 0; i < a.Length(); ++i) inodes[i] = static_cast<uint64_t>(a.Get(i).ToNumber().Int64Value());
  auto r = obd::convert::markExtentsWritten(info[0].ToString().Utf8Value(), inodes);
  if (!r.ok()) return common::fail(env, r.status());
  return Napi::Number::New(env, static_cast<double>(r.value()));
}

// turboScanLayer({path, partialPath?, size?, gzipIndexOut, tarOut}): Promise<Buffer> on the libuv pool;
// the buffer holds u64 LE: gzip (0/1), index points, gzip size, uncompressed size, index size, waited ms.
Napi::Value ScanLayer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) return common::fail(env, obd::InvalidArg("turboScanLayer(options)"));
  Napi::Object o = info[0].As<Napi::Object>();
  if (!o.Get("path").IsString() || !o.Get("gzipIndexOut").IsString() || !o.Get("tarOut").IsString()) {
    return common::fail(env, obd::InvalidArg("turboScanLayer: path, gzipIndexOut and tarOut are required"));
  }
  obd::convert::LayerInputOptions lo;
  lo.path = o.Get("path").ToString().Utf8Value();
  if (o.Get("partialPath").IsString()) lo.partialPath = o.Get("partialPath").ToString().Utf8Value();
  if (o.Get("size").IsNumber()) lo.size = static_cast<uint64_t>(o.Get("size").ToNumber().Int64Value());
  lo.gzipIndexOut = o.Get("gzipIndexOut").ToString().Utf8Value();
  lo.index.sync = false;  // a work file of obdconv: the meta blob made from it is what is kept
  const std::string tarOut = o.Get("tarOut").ToString().Utf8Value();
  auto result = std::make_shared<std::vector<uint8_t>>(6 * 8);
  return common::PromiseWorker::run(env, [lo, tarOut, result]() -> obd::Status {
    auto r = obd::convert::scanLayer(lo, tarOut);
    if (!r.ok()) return r.status();
    const auto& v = r.value();
    const uint64_t fields[6] = {v.gzip ? 1u : 0u, v.index.points, v.index.gzipSize, v.index.uncompressedSize, v.index.indexSize, v.waitedMs};
    std::memcpy(result->data(), fields, sizeof fields);
    return obd::Status::Ok();
  }, result);
}

void registerAll(Napi::Env env, Napi::Object exports) {
  exports.Set("convertApplyTar", Napi::Function::New(env, ApplyTar));
  exports.Set("turboScanLayer", Napi::Function::New(env, ScanLayer));
  exports.Set("ext4MarkExtentsWritten", Napi::Function::New(env, MarkExtentsWritten));
}

}  // namespace convert_binding
// ---- end convert ----



Napi::Object Init(Napi::Env env, Napi::Object exports) {
  zfile_binding::registerAll(env, exports);
  layer_binding::registerAll(env, exports);
  device_binding::registerAll(env, exports);
  tcmu_binding::registerAll(env, exports);
  fdstore_binding::registerAll(env, exports);
  remote_binding::registerAll(env, exports);
  convert_binding::registerAll(env, exports);
  turbo_binding::registerAll(env, exports);
  return exports;
}

}  // namespace

NODE_API_MODULE(obd_addon, Init)
