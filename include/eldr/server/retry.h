// -----------------------------------------------------------------------------
// File: server/retry.h
// -----------------------------------------------------------------------------
// The proxy's retry and deadline decisions, free of I/O so that they are unit-tested with a
// FakeClock (eldr/clock.h) and a seeded Rng (eldr/rng.h):
//
//   BackoffUs()       exponential backoff with jitter before a retry
//   IsRetryable()     which failures of which leg are worth another worker
//   DecideRetry()     retry now, give up, or stop because the request deadline is too close
//   Deadline          a request's (or the drain's) absolute deadline on a Clock
//   ParseDeadlineMs() the X-Eldr-Deadline-Ms request header
//
// Example (one leg's retry loop):
//   for (int retries = 0;; ++retries) {
//     ... one attempt; on success break ...
//     const int64_t wait = BackoffUs(opts, retries, rng);
//     switch (DecideRetry(opts, IsRetryable(Leg::kPrefill, kind, status), retries,
//                         /*first_byte_sent=*/false, wait, deadline)) { ... }
//   }
//
// Thread-safety: plain values and pure functions; a Deadline reads its Clock (thread-safe).
#pragma once

#include <cstdint>
#include <limits>
#include <string_view>

#include "eldr/clock.h"
#include "eldr/rng.h"
#include "eldr/status.h"

namespace eldr::server {

// RetryOptions: config keys max_retries, retry_initial_backoff_ms, retry_max_backoff_ms,
// retry_backoff_multiplier, retry_jitter_factor (docs/serve.md lists them next to SMG's).
struct RetryOptions {
  int max_retries = 2;                  // retries per leg after its first try (>= 0)
  int64_t initial_backoff_us = 50'000;  // wait before the first retry (>= 0)
  int64_t max_backoff_us = 2'000'000;   // cap of every wait, jitter included (>= initial)
  double backoff_multiplier = 1.5;      // growth per retry (>= 1)
  double jitter_factor = 0.2;           // each wait scaled by U[1 - j, 1 + j], j in [0, 1]
  Status Validate() const;
};

// The wait before retry number `retry` (0: the first retry):
//   min(max_backoff, initial_backoff * multiplier^retry) * U[1 - jitter, 1 + jitter],
// then capped at max_backoff again, so a wait never exceeds it. One draw from `rng`
// (UniformDouble) when jitter_factor > 0, none otherwise. REQUIRES: o.Validate() ok, retry >= 0.
int64_t BackoffUs(const RetryOptions& o, int retry, Rng& rng);

enum class Leg { kPrefill, kDecode };

// How a failed attempt on an upstream leg ended.
enum class FailureKind {
  kConnect,    // no connection (refused, unreachable, connect_timeout_ms)
  kReset,      // the connection closed or reset before a whole response (prefill) or before
               // any response byte (decode)
  kTimeout,    // the leg's own timeout (prefill_timeout_ms, first_byte_timeout_ms)
  kStatus,     // the engine answered an HTTP status (`status`)
  kMalformed,  // an unusable prefill payload
  kBodyLimit,  // a prefill response beyond max_payload_bytes
};

// Whether another worker may succeed where this attempt failed:
//   prefill  connect failures, resets, timeouts, and 500, 502, 503, 504: the prefill leg holds
//            no state the client sees, and a NIXL prefill that failed leaves nothing to pull.
//   decode   connect failures, resets before any response byte, and 502, 503, 504 (the engine,
//            or a gateway in front of it, refused before decoding). Not timeouts nor 500: the
//            engine may be decoding or have pulled the prefill's KV, so a second decoder could
//            not take the request over.
//   never    any other status (4xx: the request itself is at fault, and is relayed as is),
//            malformed payloads and the payload limit (another worker would answer the same).
bool IsRetryable(Leg leg, FailureKind kind, int status = 0);

// A request's deadline: an absolute time on a Clock, or none.
class Deadline {
 public:
  Deadline() = default;  // none: never expires
  // `budget_us` from now on `clock`; budget_us <= 0 means none. `clock` must outlive this.
  Deadline(const Clock& clock, int64_t budget_us);
  // At absolute time `at_us` on `clock` (the request's arrival plus its budget).
  static Deadline At(const Clock& clock, int64_t at_us);

  bool has_deadline() const { return clock_ != nullptr; }
  int64_t at_us() const { return at_us_; }
  // Time left (may be <= 0); INT64_MAX without a deadline.
  int64_t RemainingUs() const;
  bool Expired() const { return has_deadline() && RemainingUs() <= 0; }
  // `timeout_ms` shortened to the time left, rounded up to whole milliseconds so that a timer
  // set to it fires at or after the deadline (0 once it passed).
  int64_t ClampMs(int64_t timeout_ms) const;

 private:
  const Clock* clock_ = nullptr;
  int64_t at_us_ = std::numeric_limits<int64_t>::max();
};

enum class RetryVerdict {
  kRetry,     // wait the backoff, then try another worker
  kGiveUp,    // not retryable, retries used up, or the client already has bytes of the answer
  kDeadline,  // retryable, but the deadline passes before the backoff ends: answer 504
};

// The retry rule of both legs. `retries_done`: retries already made on this leg.
// `first_byte_sent`: the client received any byte of the answer (then nothing is ever retried).
RetryVerdict DecideRetry(const RetryOptions& o, bool retryable, int retries_done,
                         bool first_byte_sent, int64_t backoff_us, const Deadline& deadline);

// The X-Eldr-Deadline-Ms header: a decimal integer of milliseconds in [1, 2^31 - 1], nothing
// else (no sign, spaces or units). InvalidArgument otherwise (the proxy answers 400).
Result<int64_t> ParseDeadlineMs(std::string_view value);

// The budget a request gets: the smaller of `request_timeout_ms` (0: none) and the header's
// value (0: absent); 0 when neither is set. A header cannot extend the operator's limit.
int64_t RequestBudgetMs(int64_t request_timeout_ms, int64_t header_ms);

}  // namespace eldr::server
