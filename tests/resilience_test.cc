// The proxy's time-dependent state machines on a FakeClock (never a sleep): the circuit breaker,
// the health-probe rule, retry backoff and the retry rule, request deadlines and the
// X-Eldr-Deadline-Ms header, and the config keys behind them.
#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "eldr/clock.h"
#include "eldr/rng.h"
#include "eldr/server/balance.h"
#include "eldr/server/config.h"
#include "eldr/server/retry.h"
#include "status_matchers.h"

namespace eldr::server {
namespace {

using ::testing::HasSubstr;

// ---- clock ------------------------------------------------------------------------------------

TEST(ClockTest, FakeClockMovesOnlyWhenTold) {
  FakeClock c(5);
  EXPECT_EQ(c.NowUs(), 5);
  EXPECT_EQ(c.NowUs(), 5);
  c.Advance(10);
  EXPECT_EQ(c.NowUs(), 15);
  c.Set(100);
  EXPECT_EQ(c.NowUs(), 100);
}

TEST(ClockTest, SteadyClockNeverGoesBack) {
  const Clock& c = SteadyClock::Get();
  int64_t last = c.NowUs();
  for (int i = 0; i < 1000; ++i) {
    const int64_t now = c.NowUs();
    EXPECT_GE(now, last);
    last = now;
  }
}

// ---- circuit breaker ----------------------------------------------------------------------------

CircuitBreakerOptions Breaker(int failures, int64_t window_us, int64_t open_us, int successes) {
  CircuitBreakerOptions o;
  o.failure_threshold = failures;
  o.window_us = window_us;
  o.open_us = open_us;
  o.success_threshold = successes;
  return o;
}

class CircuitBreakerTest : public ::testing::Test {
 protected:
  FakeClock clock_{1'000'000};
  void Fail(CircuitBreaker& b) { b.OnFailure(clock_.NowUs()); }
  void Succeed(CircuitBreaker& b) { b.OnSuccess(clock_.NowUs()); }
  CircuitState State(const CircuitBreaker& b) const { return b.State(clock_.NowUs()); }
};

TEST_F(CircuitBreakerTest, OpensOnThresholdFailuresInsideTheWindowOnly) {
  CircuitBreaker b(Breaker(3, 1000, 5000, 1));
  Fail(b);
  clock_.Advance(600);
  Fail(b);
  clock_.Advance(600);  // the first failure is now 1200 us old: outside the window
  Fail(b);
  EXPECT_EQ(State(b), CircuitState::kClosed);
  EXPECT_EQ(b.failures_in_window(clock_.NowUs()), 2);
  clock_.Advance(100);  // three failures within 1000 us: 600, 1200, 1300
  Fail(b);
  EXPECT_EQ(State(b), CircuitState::kOpen);
  EXPECT_FALSE(b.Available(clock_.NowUs()));
  EXPECT_EQ(b.opened_count(), 1u);
}

TEST_F(CircuitBreakerTest, FailuresFarApartNeverOpenIt) {
  CircuitBreaker b(Breaker(2, 1000, 5000, 1));
  for (int i = 0; i < 100; ++i) {
    Fail(b);
    clock_.Advance(1000);
  }
  EXPECT_EQ(State(b), CircuitState::kClosed);
  EXPECT_EQ(b.opened_count(), 0u);
}

TEST_F(CircuitBreakerTest, SuccessesBetweenFailuresDoNotForgiveThem) {
  CircuitBreaker b(Breaker(3, 10'000, 5000, 1));
  for (int i = 0; i < 3; ++i) {
    Fail(b);
    clock_.Advance(10);
    Succeed(b);
    clock_.Advance(10);
  }
  EXPECT_EQ(State(b), CircuitState::kOpen);
}

TEST_F(CircuitBreakerTest, ABusyWorkerFailingAFewPerCentStaysClosed) {
  // 20 requests per second, 1 in 4 failing: 5 failures in 10 s would open a count-only breaker
  // (and, spread over every worker, take them all out at once). Under the failure rate (0.5) it
  // stays closed, and opens once failures are half of what the window saw.
  CircuitBreaker b(Breaker(5, 10'000'000, 5'000'000, 1));
  for (int i = 0; i < 400; ++i) {
    (i % 4 == 0) ? Fail(b) : Succeed(b);
    clock_.Advance(50'000);
    ASSERT_EQ(State(b), CircuitState::kClosed) << "after " << i;
  }
  for (int i = 0; i < 400 && State(b) == CircuitState::kClosed; ++i) {
    (i % 4 != 0) ? Fail(b) : Succeed(b);  // now 3 in 4 fail
    clock_.Advance(50'000);
  }
  EXPECT_EQ(State(b), CircuitState::kOpen);
  // Rate 1: the failures alone decide, successes in between or not.
  CircuitBreakerOptions o = Breaker(5, 10'000'000, 5'000'000, 1);
  o.failure_rate = 1;
  CircuitBreaker strict(o);
  for (int i = 0; i < 5; ++i) {
    Fail(strict);
    Succeed(strict);
  }
  EXPECT_EQ(State(strict), CircuitState::kClosed);  // 5 of 10 outcomes: under a rate of 1
  o.failure_rate = 0;
  EXPECT_THAT(o.Validate(), StatusIs(StatusCode::kInvalidArgument, HasSubstr("failure_rate")));
}

TEST_F(CircuitBreakerTest, HalfOpenAfterOpenUsAdmitsALimitedTrial) {
  CircuitBreaker b(Breaker(1, 1000, 5000, 2));
  Fail(b);
  clock_.Advance(4999);
  EXPECT_EQ(State(b), CircuitState::kOpen);
  EXPECT_FALSE(b.Admits(clock_.NowUs(), 0));
  clock_.Advance(1);
  EXPECT_EQ(State(b), CircuitState::kHalfOpen);
  EXPECT_TRUE(b.Admits(clock_.NowUs(), 0));
  EXPECT_FALSE(b.Admits(clock_.NowUs(), 1));  // one trial at a time
  EXPECT_TRUE(b.Available(clock_.NowUs()));
}

TEST_F(CircuitBreakerTest, ClosesAfterSuccessThresholdConsecutiveSuccesses) {
  CircuitBreaker b(Breaker(2, 1000, 5000, 3));
  Fail(b);
  Fail(b);
  clock_.Advance(5000);
  Succeed(b);
  Succeed(b);
  EXPECT_EQ(State(b), CircuitState::kHalfOpen);
  EXPECT_EQ(b.half_open_successes(), 2);
  Succeed(b);
  EXPECT_EQ(State(b), CircuitState::kClosed);
  EXPECT_TRUE(b.Admits(clock_.NowUs(), 1000));  // closed: no trial limit
  // Closing starts an empty window: one failure does not reopen it.
  Fail(b);
  EXPECT_EQ(State(b), CircuitState::kClosed);
  EXPECT_EQ(b.failures_in_window(clock_.NowUs()), 1);
}

TEST_F(CircuitBreakerTest, AFailureInHalfOpenReopensForAnotherOpenPeriod) {
  CircuitBreaker b(Breaker(1, 1000, 5000, 2));
  Fail(b);
  clock_.Advance(5000);
  Succeed(b);  // one of the two successes needed
  Fail(b);     // the trial fails
  EXPECT_EQ(State(b), CircuitState::kOpen);
  EXPECT_EQ(b.opened_count(), 2u);
  EXPECT_EQ(b.half_open_successes(), 0);
  clock_.Advance(4999);
  EXPECT_EQ(State(b), CircuitState::kOpen);
  clock_.Advance(1);
  EXPECT_EQ(State(b), CircuitState::kHalfOpen);
  Succeed(b);  // the success before the reopening does not count
  EXPECT_EQ(State(b), CircuitState::kHalfOpen);
  Succeed(b);
  EXPECT_EQ(State(b), CircuitState::kClosed);
}

TEST_F(CircuitBreakerTest, OutcomesWhileOpenChangeNothing) {
  CircuitBreaker b(Breaker(1, 1000, 5000, 1));
  Fail(b);
  clock_.Advance(100);
  Succeed(b);  // a request that started before the circuit opened
  Fail(b);
  EXPECT_EQ(State(b), CircuitState::kOpen);
  EXPECT_EQ(b.opened_count(), 1u);
  clock_.Advance(4900);  // still 5000 us after the opening, not extended by the late failure
  EXPECT_EQ(State(b), CircuitState::kHalfOpen);
}

TEST(CircuitBreakerOptionsTest, ValidateNamesTheKey) {
  CircuitBreakerOptions o;
  EXPECT_THAT(o.Validate(), IsOk());
  o.success_threshold = 0;
  EXPECT_THAT(o.Validate(),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("breaker_success_threshold")));
  o = CircuitBreakerOptions{};
  o.failure_threshold = 0;
  EXPECT_THAT(o.Validate(), StatusIs(StatusCode::kInvalidArgument, HasSubstr("failure_threshold")));
  o = CircuitBreakerOptions{};
  o.window_us = 0;
  EXPECT_THAT(o.Validate(), StatusIs(StatusCode::kInvalidArgument, HasSubstr("breaker_window_ms")));
}

// ---- health probes ------------------------------------------------------------------------------

TEST(ApplyProbeTest, ProbesCloseAHalfOpenCircuitButNeverCutAnOpenOneShort) {
  FakeClock clock(0);
  CircuitBreaker b(Breaker(2, 1000, 5000, 2));
  EXPECT_EQ(ApplyProbe(b, true, clock.NowUs()), ProbeEvent::kNone);  // closed: nothing to do
  EXPECT_EQ(ApplyProbe(b, false, clock.NowUs()), ProbeEvent::kNone);
  EXPECT_EQ(ApplyProbe(b, false, clock.NowUs()), ProbeEvent::kDown);  // the second opens it
  clock.Advance(100);
  EXPECT_EQ(ApplyProbe(b, true, clock.NowUs()), ProbeEvent::kNone);
  EXPECT_EQ(b.State(clock.NowUs()), CircuitState::kOpen);  // a good probe cannot reopen traffic
  EXPECT_EQ(ApplyProbe(b, false, clock.NowUs()), ProbeEvent::kNone);  // already down
  clock.Advance(4900);
  EXPECT_EQ(ApplyProbe(b, true, clock.NowUs()), ProbeEvent::kNone);  // 1 of 2 successes
  EXPECT_EQ(ApplyProbe(b, true, clock.NowUs()), ProbeEvent::kUp);
  EXPECT_EQ(b.State(clock.NowUs()), CircuitState::kClosed);
}

TEST(ApplyProbeTest, AFailedProbeInHalfOpenTakesTheWorkerDownAgain) {
  FakeClock clock(0);
  CircuitBreaker b(Breaker(1, 1000, 5000, 2));
  EXPECT_EQ(ApplyProbe(b, false, clock.NowUs()), ProbeEvent::kDown);
  clock.Advance(5000);
  EXPECT_EQ(ApplyProbe(b, false, clock.NowUs()), ProbeEvent::kDown);
  EXPECT_EQ(b.opened_count(), 2u);
}

// ---- backoff -----------------------------------------------------------------------------------

RetryOptions Retry(int64_t initial_us, int64_t max_us, double multiplier, double jitter) {
  RetryOptions o;
  o.max_retries = 5;
  o.initial_backoff_us = initial_us;
  o.max_backoff_us = max_us;
  o.backoff_multiplier = multiplier;
  o.jitter_factor = jitter;
  return o;
}

TEST(BackoffTest, GrowsExponentiallyUpToTheCapWithoutJitter) {
  const RetryOptions o = Retry(50'000, 200'000, 1.5, 0);
  Rng rng(7);
  EXPECT_EQ(BackoffUs(o, 0, rng), 50'000);
  EXPECT_EQ(BackoffUs(o, 1, rng), 75'000);
  EXPECT_EQ(BackoffUs(o, 2, rng), 112'500);
  EXPECT_EQ(BackoffUs(o, 3, rng), 168'750);
  EXPECT_EQ(BackoffUs(o, 4, rng), 200'000);     // 253'125 capped
  EXPECT_EQ(BackoffUs(o, 1000, rng), 200'000);  // pow overflows: still the cap
  Rng fresh(7);
  EXPECT_EQ(rng.Next(), fresh.Next()) << "no jitter draws nothing";
}

TEST(BackoffTest, JitterIsOneDrawScaledIntoItsBandAndNeverAboveTheCap) {
  const RetryOptions o = Retry(100'000, 1'000'000, 2.0, 0.2);
  Rng rng(11), twin(11);
  for (int i = 0; i < 2000; ++i) {
    const int retry = i % 6;
    const double base = std::min(1e6, 1e5 * std::pow(2.0, retry));
    const double u = twin.UniformDouble();
    const int64_t want = static_cast<int64_t>(std::min(1e6, base * (1.0 + 0.2 * (2.0 * u - 1.0))));
    const int64_t got = BackoffUs(o, retry, rng);
    EXPECT_EQ(got, want) << "retry " << retry;
    EXPECT_GE(got, static_cast<int64_t>(base * 0.8) - 1);
    EXPECT_LE(got, 1'000'000);
  }
}

TEST(BackoffTest, JitterSpreadsWaitsOverTheWholeBand) {
  const RetryOptions o = Retry(100'000, 10'000'000, 2.0, 0.5);
  Rng rng(3);
  int64_t lo = INT64_MAX, hi = 0;
  std::set<int64_t> distinct;
  for (int i = 0; i < 1000; ++i) {
    const int64_t w = BackoffUs(o, 1, rng);  // base 200 ms, band [100, 300] ms
    lo = std::min(lo, w);
    hi = std::max(hi, w);
    distinct.insert(w);
  }
  EXPECT_LT(lo, 110'000);
  EXPECT_GT(hi, 290'000);
  EXPECT_GT(distinct.size(), 900u);
}

TEST(RetryOptionsTest, ValidateNamesTheKey) {
  EXPECT_THAT(RetryOptions{}.Validate(), IsOk());
  RetryOptions o;
  o.max_backoff_us = o.initial_backoff_us - 1;
  EXPECT_THAT(o.Validate(), StatusIs(StatusCode::kInvalidArgument, HasSubstr("retry_max_backoff")));
  o = RetryOptions{};
  o.backoff_multiplier = 0.5;
  EXPECT_THAT(o.Validate(), StatusIs(StatusCode::kInvalidArgument, HasSubstr("multiplier")));
  o = RetryOptions{};
  o.jitter_factor = 1.5;
  EXPECT_THAT(o.Validate(), StatusIs(StatusCode::kInvalidArgument, HasSubstr("jitter")));
  o = RetryOptions{};
  o.max_retries = -1;
  EXPECT_THAT(o.Validate(), StatusIs(StatusCode::kInvalidArgument, HasSubstr("max_retries")));
}

// ---- which failures are retried --------------------------------------------------------------

TEST(IsRetryableTest, ByLegAndStatusClass) {
  for (Leg leg : {Leg::kPrefill, Leg::kDecode}) {
    EXPECT_TRUE(IsRetryable(leg, FailureKind::kConnect));
    EXPECT_TRUE(IsRetryable(leg, FailureKind::kReset));
    for (int st : {502, 503, 504}) EXPECT_TRUE(IsRetryable(leg, FailureKind::kStatus, st)) << st;
    for (int st : {400, 401, 404, 408, 413, 422, 429, 501}) {
      EXPECT_FALSE(IsRetryable(leg, FailureKind::kStatus, st)) << st;
    }
    EXPECT_FALSE(IsRetryable(leg, FailureKind::kMalformed));
    EXPECT_FALSE(IsRetryable(leg, FailureKind::kBodyLimit));
  }
  // A prefill leg holds nothing the client saw; a decode leg that timed out or answered 500 may
  // have pulled the prefill's KV.
  EXPECT_TRUE(IsRetryable(Leg::kPrefill, FailureKind::kTimeout));
  EXPECT_TRUE(IsRetryable(Leg::kPrefill, FailureKind::kStatus, 500));
  EXPECT_FALSE(IsRetryable(Leg::kDecode, FailureKind::kTimeout));
  EXPECT_FALSE(IsRetryable(Leg::kDecode, FailureKind::kStatus, 500));
}

TEST(DecideRetryTest, NeverAfterTheFirstByteNorBeyondTheCountNorPastTheDeadline) {
  FakeClock clock(0);
  RetryOptions o;
  o.max_retries = 2;
  const Deadline none;
  EXPECT_EQ(DecideRetry(o, true, 0, false, 50'000, none), RetryVerdict::kRetry);
  EXPECT_EQ(DecideRetry(o, true, 1, false, 50'000, none), RetryVerdict::kRetry);
  EXPECT_EQ(DecideRetry(o, true, 2, false, 50'000, none), RetryVerdict::kGiveUp);
  EXPECT_EQ(DecideRetry(o, false, 0, false, 50'000, none), RetryVerdict::kGiveUp);
  EXPECT_EQ(DecideRetry(o, true, 0, true, 0, none), RetryVerdict::kGiveUp);
  const Deadline d(clock, 100'000);
  EXPECT_EQ(DecideRetry(o, true, 0, false, 50'000, d), RetryVerdict::kRetry);
  clock.Advance(50'000);  // 50 ms left: a 50 ms backoff would end at the deadline
  EXPECT_EQ(DecideRetry(o, true, 0, false, 50'000, d), RetryVerdict::kDeadline);
  EXPECT_EQ(DecideRetry(o, true, 0, false, 49'999, d), RetryVerdict::kRetry);
  // Not retryable or out of retries: giving up wins over the deadline.
  EXPECT_EQ(DecideRetry(o, false, 0, false, 50'000, d), RetryVerdict::kGiveUp);
}

// ---- deadlines
// ------------------------------------------------------------------------------------

TEST(DeadlineTest, ExpiresAtItsTimeAndClampsTimeoutsRoundingUp) {
  FakeClock clock(1'000'000);
  const Deadline d(clock, 2'500);  // 2.5 ms
  EXPECT_TRUE(d.has_deadline());
  EXPECT_EQ(d.at_us(), 1'002'500);
  EXPECT_FALSE(d.Expired());
  EXPECT_EQ(d.ClampMs(120'000), 3);  // 2.5 ms rounds up: the timer fires at or after it
  EXPECT_EQ(d.ClampMs(1), 1);
  clock.Advance(2'499);
  EXPECT_FALSE(d.Expired());
  EXPECT_EQ(d.RemainingUs(), 1);
  EXPECT_EQ(d.ClampMs(50), 1);
  clock.Advance(1);
  EXPECT_TRUE(d.Expired());
  EXPECT_EQ(d.ClampMs(50), 0);
  EXPECT_EQ(Deadline::At(clock, 0).RemainingUs(), -1'002'500);
}

TEST(DeadlineTest, NoneNeverExpiresAndLeavesTimeoutsAlone) {
  FakeClock clock(0);
  for (const Deadline& d : {Deadline(), Deadline(clock, 0), Deadline(clock, -5)}) {
    EXPECT_FALSE(d.has_deadline());
    clock.Advance(1'000'000'000);
    EXPECT_FALSE(d.Expired());
    EXPECT_EQ(d.ClampMs(120'000), 120'000);
    EXPECT_EQ(d.RemainingUs(), INT64_MAX);
  }
}

TEST(DeadlineHeaderTest, AcceptsPositiveMillisecondsOnly) {
  EXPECT_THAT(ParseDeadlineMs("1"), IsOkAndHolds(1));
  EXPECT_THAT(ParseDeadlineMs("2500"), IsOkAndHolds(2500));
  EXPECT_THAT(ParseDeadlineMs("2147483647"), IsOkAndHolds(2147483647));
  for (const char* bad : {"", "0", "-5", "+5", " 5", "5 ", "5ms", "1.5", "2147483648",
                          "99999999999", "0x10", "abc"}) {
    EXPECT_THAT(ParseDeadlineMs(bad),
                StatusIs(StatusCode::kInvalidArgument, HasSubstr("X-Eldr-Deadline-Ms")))
        << "'" << bad << "'";
  }
}

TEST(DeadlineHeaderTest, TheHeaderShortensTheConfiguredBudgetButNeverExtendsIt) {
  EXPECT_EQ(RequestBudgetMs(0, 0), 0);
  EXPECT_EQ(RequestBudgetMs(5000, 0), 5000);
  EXPECT_EQ(RequestBudgetMs(0, 300), 300);
  EXPECT_EQ(RequestBudgetMs(5000, 300), 300);
  EXPECT_EQ(RequestBudgetMs(5000, 90000), 5000);
}

// ---- config keys ------------------------------------------------------------------------------

TEST(ResilienceConfigTest, KeysParseAndValidate) {
  auto o = ParseServeConfig(
      "request_timeout_ms: 9000\nmax_retries: 4\nretry_initial_backoff_ms: 10\n"
      "retry_max_backoff_ms: 500\nretry_backoff_multiplier: 2\nretry_jitter_factor: 0.5\n"
      "failure_threshold: 7\nbreaker_window_ms: 30000\nbreaker_success_threshold: 3\n"
      "open_ms: 1000\nmetrics_port: 9100\n");
  ASSERT_THAT(o, IsOk());
  EXPECT_EQ(o->request_timeout_ms, 9000);
  const RetryOptions r = RetryOptionsOf(*o);
  EXPECT_EQ(r.max_retries, 4);
  EXPECT_EQ(r.initial_backoff_us, 10'000);
  EXPECT_EQ(r.max_backoff_us, 500'000);
  EXPECT_DOUBLE_EQ(r.backoff_multiplier, 2);
  EXPECT_DOUBLE_EQ(r.jitter_factor, 0.5);
  const CircuitBreakerOptions b = BreakerOptions(*o);
  EXPECT_EQ(b.failure_threshold, 7);
  EXPECT_EQ(b.window_us, 30'000'000);
  EXPECT_EQ(b.success_threshold, 3);
  EXPECT_EQ(b.open_us, 1'000'000);
  EXPECT_EQ(o->metrics_port, 9100);
  // The old key: attempts on distinct workers.
  auto old = ParseServeConfig("prefill_attempts: 3\n");
  ASSERT_THAT(old, IsOk());
  EXPECT_EQ(old->max_retries, 2);
  EXPECT_THAT(ParseServeConfig("prefill_attempts: 0\n"),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("prefill_attempts")));
}

TEST(ResilienceConfigTest, ValidateRefusesBadValuesWithTheKeyNamed) {
  ServeOptions o;
  o.policy = "jsq";
  o.prefill = {*ParseWorkerUrl("http://a:1")};
  o.decode = {*ParseWorkerUrl("http://b:2")};
  ASSERT_THAT(o.Validate(), IsOk());
  auto refused = [&](auto field, auto value, const char* key) {
    ServeOptions bad = o;
    bad.*field = value;
    EXPECT_THAT(bad.Validate(), StatusIs(StatusCode::kInvalidArgument, HasSubstr(key))) << key;
  };
  refused(&ServeOptions::request_timeout_ms, -1, "request_timeout_ms");
  refused(&ServeOptions::max_retries, -1, "max_retries");
  refused(&ServeOptions::retry_max_backoff_ms, 10, "retry_max_backoff_ms");
  refused(&ServeOptions::retry_backoff_multiplier, 0.9, "retry_backoff_multiplier");
  refused(&ServeOptions::retry_jitter_factor, -0.1, "retry_jitter_factor");
  refused(&ServeOptions::breaker_success_threshold, 0, "breaker_success_threshold");
  refused(&ServeOptions::failure_threshold, 0, "failure_threshold");
  refused(&ServeOptions::breaker_window_ms, 0, "timeouts");
  refused(&ServeOptions::metrics_port, 70000, "metrics_port");
  refused(&ServeOptions::metrics_port, 8000, "metrics_port");  // the main port
}

}  // namespace
}  // namespace eldr::server
