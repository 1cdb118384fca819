// The only file that includes napi.h: it adapts the plain C++ classes of addon/src to JS.
// Errors become JS Errors with `code` (errno name) set; no C++ exception crosses this boundary.
#include <napi.h>

namespace {

Napi::Value Version(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), "0.1.0"); }

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("version", Napi::Function::New(env, Version));
  return exports;
}

}  // namespace

NODE_API_MODULE(obd_addon, Init)
