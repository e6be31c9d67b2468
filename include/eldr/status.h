// -----------------------------------------------------------------------------
// File: status.h
// -----------------------------------------------------------------------------
// Status and Result<T>: how every fallible eldr call reports failure. No exception ever crosses
// the request path; untrusted input (HTTP bodies, engine payloads, files) always yields a Status
// with a message that says what was wrong and where.
//
// Thread-safety: Status and Result are values; const methods may be called concurrently.
//
// Example:
//   Result<int> ParsePort(std::string_view s);
//   ELDR_ASSIGN_OR_RETURN(int port, ParsePort(text));
#pragma once

#include <fmt/format.h>

#include <string>
#include <string_view>
#include <tl/expected.hpp>
#include <utility>

namespace eldr {

// Canonical codes (absl / gRPC names, a subset).
enum class StatusCode : int {
  kOk = 0,
  kCancelled = 1,
  kInvalidArgument = 3,
  kDeadlineExceeded = 4,
  kNotFound = 5,
  kResourceExhausted = 8,
  kFailedPrecondition = 9,
  kOutOfRange = 11,
  kInternal = 13,
  kUnavailable = 14,
  kDataLoss = 15,
};

std::string_view StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;  // OK
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "INVALID_ARGUMENT: message", or "OK".
  std::string ToString() const;

  // Returns a copy whose message is "context: message" (no-op on OK).
  Status WithContext(std::string_view context) const;

  friend bool operator==(const Status& a, const Status& b) {
    return a.code_ == b.code_ && a.message_ == b.message_;
  }

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

template <class T>
using Result = tl::expected<T, Status>;

// An error on its way out of a function: converts to Result<T> for any T, and to Status.
// Returned by the constructors below, so that `return InvalidArgument("bad {}", x);` works in a
// function returning either.
struct [[nodiscard]] Error {
  Status status;
  template <class T>
  operator Result<T>() && {  // NOLINT(google-explicit-constructor)
    return tl::unexpected<Status>(std::move(status));
  }
  operator Status() && { return std::move(status); }  // NOLINT(google-explicit-constructor)
  Status error() && { return std::move(status); }
};

#define ELDR_DEFINE_ERROR(Name, Code)                                                    \
  template <class... Args>                                                               \
  Error Name(fmt::format_string<Args...> f, Args&&... args) {                            \
    return Error{Status(StatusCode::Code, fmt::format(f, std::forward<Args>(args)...))}; \
  }
ELDR_DEFINE_ERROR(InvalidArgument, kInvalidArgument)
ELDR_DEFINE_ERROR(FailedPrecondition, kFailedPrecondition)
ELDR_DEFINE_ERROR(OutOfRange, kOutOfRange)
ELDR_DEFINE_ERROR(NotFound, kNotFound)
ELDR_DEFINE_ERROR(Unavailable, kUnavailable)
ELDR_DEFINE_ERROR(ResourceExhausted, kResourceExhausted)
ELDR_DEFINE_ERROR(DataLoss, kDataLoss)
ELDR_DEFINE_ERROR(Internal, kInternal)
ELDR_DEFINE_ERROR(Cancelled, kCancelled)
ELDR_DEFINE_ERROR(DeadlineExceeded, kDeadlineExceeded)
#undef ELDR_DEFINE_ERROR

// Converts a Status-returning call into Result<void>-style flow.
inline Result<void> ToResult(Status s) {
  if (s.ok()) return {};
  return tl::unexpected<Status>(std::move(s));
}

namespace internal {
inline bool IsError(const Status& s) { return !s.ok(); }
template <class T>
bool IsError(const Result<T>& r) {
  return !r.has_value();
}
inline Status ErrorOf(const Status& s) { return s; }
template <class T>
Status ErrorOf(const Result<T>& r) {
  return r.error();
}
}  // namespace internal

}  // namespace eldr

#define ELDR_CONCAT_INNER_(a, b) a##b
#define ELDR_CONCAT_(a, b) ELDR_CONCAT_INNER_(a, b)

// Returns the error of `expr` (a Status or a Result<T>) from the enclosing function, which may
// return either.
#define ELDR_RETURN_IF_ERROR(expr)                              \
  do {                                                          \
    auto&& eldr_r_ = (expr);                                    \
    if (::eldr::internal::IsError(eldr_r_)) {                   \
      return ::eldr::Error{::eldr::internal::ErrorOf(eldr_r_)}; \
    }                                                           \
  } while (0)

// `ELDR_ASSIGN_OR_RETURN(auto x, Foo());` declares x from Foo()'s value or returns its error.
#define ELDR_ASSIGN_OR_RETURN(lhs, expr) \
  ELDR_ASSIGN_OR_RETURN_IMPL_(ELDR_CONCAT_(eldr_tmp_, __LINE__), lhs, expr)
#define ELDR_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr)       \
  auto tmp = (expr);                                      \
  if (!tmp) return ::eldr::Error{std::move(tmp).error()}; \
  lhs = std::move(*tmp)
