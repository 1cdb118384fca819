// Error values for the data path. Nothing in addon/ throws across module boundaries: every fallible
// operation returns a Status (or Result<T>) carrying an errno-style code and a message with context
// (file name, offset, what was wrong). binding.cc turns these into JS Errors with `code` set.
#pragma once

#include <cerrno>
#include <string>
#include <utility>

namespace obd {

class Status {
 public:
  Status() = default;  // ok
  Status(int code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }
  bool ok() const { return code_ == 0; }
  int code() const { return code_; }              // errno value (EIO, EINVAL, ENOENT, ...)
  const std::string& message() const { return message_; }

  // Prefix the message with more context, e.g. the file name: "b.lsmt: trailer: bad magic".
  Status wrap(const std::string& context) const {
    return ok() ? *this : Status(code_, context + ": " + message_);
  }

 private:
  int code_ = 0;
  std::string message_;
};

inline Status Corrupt(const std::string& what) { return Status(EBADMSG, what); }
inline Status InvalidArg(const std::string& what) { return Status(EINVAL, what); }
inline Status IoError(const std::string& what) { return Status(EIO, what); }
// From a failed syscall: keeps errno and appends strerror.
Status SysError(const std::string& what, int err = errno);

template <typename T>
class Result {
 public:
  Result(T value) : value_(std::move(value)) {}        // NOLINT: implicit by design
  Result(Status status) : status_(std::move(status)) {}  // NOLINT
  bool ok() const { return status_.ok(); }
  const Status& status() const { return status_; }
  T& value() { return value_; }
  const T& value() const { return value_; }
  T&& take() { return std::move(value_); }

 private:
  Status status_;
  T value_{};
};

}  // namespace obd

#define OBD_RETURN_IF_ERROR(expr)          \
  do {                                     \
    ::obd::Status _st = (expr);            \
    if (!_st.ok()) return _st;             \
  } while (0)
