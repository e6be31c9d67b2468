// gMock matchers for Status and Result<T>, so a test states the code and the message it expects
// and a failure prints both:
//   EXPECT_THAT(ParsePort("x"), StatusIs(StatusCode::kInvalidArgument, HasSubstr("port")));
//   EXPECT_THAT(ParsePort("80"), IsOkAndHolds(80));
//   EXPECT_THAT(space.Embed(c, out), IsOk());
#pragma once

#include <gmock/gmock.h>

#include <ostream>
#include <type_traits>

#include "eldr/status.h"

namespace eldr {

inline void PrintTo(const Status& s, std::ostream* os) { *os << s.ToString(); }

namespace testing_internal {

inline const Status& StatusOf(const Status& s) { return s; }
inline const Status& StatusOf(const Error& e) { return e.status; }
template <class T>
Status StatusOf(const Result<T>& r) {
  return r.has_value() ? Status::Ok() : r.error();
}

}  // namespace testing_internal

MATCHER(IsOk, "is OK") {
  const Status s = testing_internal::StatusOf(arg);
  if (!s.ok()) *result_listener << "which is " << s.ToString();
  return s.ok();
}

MATCHER_P2(StatusIs, code, message_matcher,
           "has code " + std::string(StatusCodeName(code)) + " and a message that " +
               ::testing::DescribeMatcher<std::string>(message_matcher)) {
  const Status s = testing_internal::StatusOf(arg);
  *result_listener << "which is " << s.ToString();
  return s.code() == code &&
         ::testing::ExplainMatchResult(message_matcher, s.message(), result_listener);
}

MATCHER_P(IsOkAndHolds, value_matcher, "is OK and holds a value matching the given matcher") {
  if (!arg.has_value()) {
    *result_listener << "which is " << arg.error().ToString();
    return false;
  }
  return ::testing::ExplainMatchResult(value_matcher, *arg, result_listener);
}

}  // namespace eldr

namespace tl {

// Prints a Result<T> as its status (or its value) instead of gtest's byte dump.
template <class T>
void PrintTo(const expected<T, ::eldr::Status>& r, std::ostream* os) {
  if (!r.has_value()) {
    *os << r.error().ToString();
  } else if constexpr (std::is_void_v<T>) {
    *os << "OK";
  } else {
    *os << "OK holding " << ::testing::PrintToString(*r);
  }
}

}  // namespace tl
