#include "eldr/server/retry.h"

#include <algorithm>
#include <cmath>

namespace eldr::server {

Status RetryOptions::Validate() const {
  if (max_retries < 0 || max_retries > 100)
    return InvalidArgument("max_retries must be in [0, 100]");
  if (initial_backoff_us < 0) return InvalidArgument("retry_initial_backoff_ms must be >= 0");
  if (max_backoff_us < initial_backoff_us) {
    return InvalidArgument("retry_max_backoff_ms must be >= retry_initial_backoff_ms");
  }
  if (!(backoff_multiplier >= 1) || !std::isfinite(backoff_multiplier)) {
    return InvalidArgument("retry_backoff_multiplier must be >= 1");
  }
  if (!(jitter_factor >= 0 && jitter_factor <= 1)) {
    return InvalidArgument("retry_jitter_factor must be in [0, 1]");
  }
  return Status::Ok();
}

int64_t BackoffUs(const RetryOptions& o, int retry, Rng& rng) {
  const double cap = static_cast<double>(o.max_backoff_us);
  // pow overflows to inf for large `retry`; min() turns that into the cap.
  double d = std::min(cap, static_cast<double>(o.initial_backoff_us) *
                               std::pow(o.backoff_multiplier, std::max(0, retry)));
  if (o.jitter_factor > 0) d *= 1.0 + o.jitter_factor * (2.0 * rng.UniformDouble() - 1.0);
  return static_cast<int64_t>(std::clamp(d, 0.0, cap));
}

bool IsRetryable(Leg leg, FailureKind kind, int status) {
  switch (kind) {
    case FailureKind::kConnect:
    case FailureKind::kReset:
      return true;
    case FailureKind::kTimeout:
      return leg == Leg::kPrefill;
    case FailureKind::kStatus:
      return status == 502 || status == 503 || status == 504 ||
             (leg == Leg::kPrefill && status == 500);
    default:
      return false;
  }
}

Deadline::Deadline(const Clock& clock, int64_t budget_us) {
  if (budget_us <= 0) return;
  clock_ = &clock;
  at_us_ = clock.NowUs() + budget_us;
}

Deadline Deadline::At(const Clock& clock, int64_t at_us) {
  Deadline d;
  d.clock_ = &clock;
  d.at_us_ = at_us;
  return d;
}

int64_t Deadline::RemainingUs() const {
  if (clock_ == nullptr) return std::numeric_limits<int64_t>::max();
  return at_us_ - clock_->NowUs();
}

int64_t Deadline::ClampMs(int64_t timeout_ms) const {
  if (clock_ == nullptr) return timeout_ms;
  const int64_t left = RemainingUs();
  if (left <= 0) return 0;
  return std::min(timeout_ms, (left + 999) / 1000);
}

RetryVerdict DecideRetry(const RetryOptions& o, bool retryable, int retries_done,
                         bool first_byte_sent, int64_t backoff_us, const Deadline& deadline) {
  if (!retryable || first_byte_sent || retries_done >= o.max_retries) return RetryVerdict::kGiveUp;
  if (deadline.has_deadline() && deadline.RemainingUs() <= backoff_us) {
    return RetryVerdict::kDeadline;
  }
  return RetryVerdict::kRetry;
}

Result<int64_t> ParseDeadlineMs(std::string_view value) {
  constexpr int64_t kMax = (int64_t{1} << 31) - 1;
  if (value.empty() || value.size() > 10) {
    return InvalidArgument("X-Eldr-Deadline-Ms must be an integer of milliseconds in [1, {}]",
                           kMax);
  }
  int64_t v = 0;
  for (char c : value) {
    if (c < '0' || c > '9') {
      return InvalidArgument("X-Eldr-Deadline-Ms must be an integer of milliseconds in [1, {}]",
                             kMax);
    }
    v = v * 10 + (c - '0');
  }
  if (v < 1 || v > kMax) {
    return InvalidArgument("X-Eldr-Deadline-Ms must be an integer of milliseconds in [1, {}]",
                           kMax);
  }
  return v;
}

int64_t RequestBudgetMs(int64_t request_timeout_ms, int64_t header_ms) {
  if (request_timeout_ms <= 0) return std::max<int64_t>(0, header_ms);
  if (header_ms <= 0) return request_timeout_ms;
  return std::min(request_timeout_ms, header_ms);
}

}  // namespace eldr::server
