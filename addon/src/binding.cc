// The only file that includes napi.h: it adapts the plain C++ classes of addon/src to JS.
// Errors become JS Errors with `code` (errno name) set; no C++ exception crosses this boundary.
#include <napi.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "format/zfile/zfile.h"
#include "io/local_file.h"
#include "util/crc32c.h"

namespace {

Napi::Value Version(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), "0.1.0"); }

// ---- zfile ----
namespace zfile_binding {

using obd::Status;

Napi::Error toError(Napi::Env env, const Status& st) {
  Napi::Error err = Napi::Error::New(env, st.message());
  const char* name = strerrorname_np(st.code());
  err.Set("code", Napi::String::New(env, name ? name : "EIO"));
  err.Set("errno", Napi::Number::New(env, st.code()));
  return err;
}

bool parseOptions(const Napi::Value& v, obd::zfile::CompressOptions* o, std::string* bad) {
  if (v.IsUndefined() || v.IsNull()) return true;
  if (!v.IsObject()) return *bad = "options must be an object", false;
  Napi::Object obj = v.As<Napi::Object>();
  if (obj.Has("algorithm") && !obj.Get("algorithm").IsUndefined()) {
    std::string a = obj.Get("algorithm").ToString().Utf8Value();
    if (a == "lz4") o->algorithm = obd::zfile::Algorithm::kLz4;
    else if (a == "zstd") o->algorithm = obd::zfile::Algorithm::kZstd;
    else return *bad = "algorithm must be lz4 or zstd, got " + a, false;
  }
  if (obj.Has("blockSize") && !obj.Get("blockSize").IsUndefined())
    o->blockSize = obj.Get("blockSize").ToNumber().Uint32Value();
  if (obj.Has("verify") && !obj.Get("verify").IsUndefined()) o->verify = obj.Get("verify").ToBoolean();
  if (obj.Has("overwriteHeader") && !obj.Get("overwriteHeader").IsUndefined())
    o->overwriteHeader = obj.Get("overwriteHeader").ToBoolean();
  return true;
}

// Runs `work` on the libuv pool and settles a promise with its Status; resolves with a copy of
// `result` when one is given, else with undefined.
class StatusWorker : public Napi::AsyncWorker {
 public:
  StatusWorker(Napi::Env env, std::function<Status()> work, std::shared_ptr<std::vector<uint8_t>> result = nullptr)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), work_(std::move(work)),
        result_(std::move(result)) {}
  Napi::Promise promise() { return deferred_.Promise(); }
  void Execute() override { status_ = work_(); }
  void OnOK() override {
    if (!status_.ok()) return deferred_.Reject(toError(Env(), status_).Value());
    if (!result_) return deferred_.Resolve(Env().Undefined());
    deferred_.Resolve(Napi::Buffer<uint8_t>::Copy(Env(), result_->data(), result_->size()));
  }

 private:
  Napi::Promise::Deferred deferred_;
  std::function<Status()> work_;
  std::shared_ptr<std::vector<uint8_t>> result_;
  Status status_;
};

Napi::Value rejectWith(Napi::Env env, const Status& st) {
  auto d = Napi::Promise::Deferred::New(env);
  d.Reject(toError(env, st).Value());
  return d.Promise();
}

Napi::Value Compress(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsString() || !info[1].IsString())
    return rejectWith(env, obd::InvalidArg("zfileCompress(input, output, options)"));
  std::string in = info[0].As<Napi::String>(), out = info[1].As<Napi::String>();
  obd::zfile::CompressOptions opts;
  std::string bad;
  if (!parseOptions(info[2], &opts, &bad)) return rejectWith(env, obd::InvalidArg(bad));
  auto* w = new StatusWorker(env, [in, out, opts]() -> Status {
    auto src = obd::LocalFile::open(in);
    if (!src.ok()) return src.status();
    return obd::zfile::compressFile(*src.value(), out, opts);
  });
  auto p = w->promise();
  w->Queue();
  return p;
}

Napi::Value Decompress(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsString() || !info[1].IsString())
    return rejectWith(env, obd::InvalidArg("zfileDecompress(input, output, verify)"));
  std::string in = info[0].As<Napi::String>(), out = info[1].As<Napi::String>();
  bool verify = info.Length() > 2 && info[2].ToBoolean();
  auto* w = new StatusWorker(env, [in, out, verify]() -> Status {
    auto src = obd::LocalFile::open(in);
    if (!src.ok()) return src.status();
    auto z = obd::zfile::open(src.take(), verify);
    if (!z.ok()) return z.status();
    return obd::zfile::decompressFile(*z.value(), out);
  });
  auto p = w->promise();
  w->Queue();
  return p;
}

Napi::Value Inspect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) {
    toError(env, obd::InvalidArg("zfileInspect(path)")).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  std::string path = info[0].As<Napi::String>();
  auto src = obd::LocalFile::open(path);
  if (!src.ok()) {
    toError(env, src.status()).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  auto r = obd::zfile::inspect(*src.value());
  if (!r.ok()) {
    toError(env, r.status()).ThrowAsJavaScriptException();
    return env.Undefined();
  }
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
                       {InstanceMethod("read", &Reader::Read), InstanceAccessor("size", &Reader::Size, nullptr)});
  }
  // new ZFileReader(path, verifyBlocks)
  explicit Reader(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Reader>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsString()) {
      toError(env, obd::InvalidArg("new ZFileReader(path, verify)")).ThrowAsJavaScriptException();
      return;
    }
    auto src = obd::LocalFile::open(info[0].As<Napi::String>());
    if (!src.ok()) {
      toError(env, src.status()).ThrowAsJavaScriptException();
      return;
    }
    auto z = obd::zfile::open(src.take(), info.Length() > 1 && info[1].ToBoolean());
    if (!z.ok()) {
      toError(env, z.status()).ThrowAsJavaScriptException();
      return;
    }
    file_ = z.take();
  }

 private:
  Napi::Value Size(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), file_ ? static_cast<double>(file_->size()) : 0);
  }
  // read(offset, length) → Promise<Buffer>; runs on the libuv pool.
  Napi::Value Read(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!file_) return rejectWith(env, obd::InvalidArg("reader is not open"));
    double off = info[0].ToNumber().DoubleValue(), len = info[1].ToNumber().DoubleValue();
    if (!(off >= 0) || !(len >= 0) || len > (1 << 30) || off > 9007199254740991.0)
      return rejectWith(env, obd::InvalidArg("read: bad offset/length"));
    auto buf = std::make_shared<std::vector<uint8_t>>(static_cast<size_t>(len));
    auto file = file_;
    uint64_t o = static_cast<uint64_t>(off);
    auto* w = new StatusWorker(env, [file, buf, o]() { return file->read(buf->data(), buf->size(), o); }, buf);
    auto p = w->promise();
    w->Queue();
    return p;
  }

  std::shared_ptr<obd::ReadableFile> file_;
};

// crc32c(buf, seed, portable) → raw register update (no inversion), as ZFile checksums use it.
Napi::Value Crc32c(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsBuffer()) {
    toError(env, obd::InvalidArg("crc32c(buffer, seed, portable)")).ThrowAsJavaScriptException();
    return env.Undefined();
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

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("version", Napi::Function::New(env, Version));
  zfile_binding::registerAll(env, exports);
  return exports;
}

}  // namespace

NODE_API_MODULE(obd_addon, Init)
