#include "eldr/server/balance.h"

#include <xxhash.h>

#include <algorithm>
#include <cmath>

namespace eldr::server {

PrefillRing::PrefillRing(std::span<const std::string> names, int replicas)
    : workers_(static_cast<int>(names.size())) {
  ring_.reserve(names.size() * replicas);
  for (int w = 0; w < workers_; ++w) {
    for (int r = 0; r < replicas; ++r) {
      ring_.emplace_back(XXH3_64bits_withSeed(names[w].data(), names[w].size(), r), w);
    }
  }
  std::sort(ring_.begin(), ring_.end());
}

int PrefillRing::Pick(uint64_t key_hash, std::span<const int64_t> loads,
                      std::span<const uint8_t> available, std::span<const uint8_t> excluded,
                      double factor) const {
  if (ring_.empty()) return -1;
  auto ok = [&](int w) {
    return (available.empty() || available[w]) && (excluded.empty() || !excluded[w]);
  };
  int64_t total = 0;
  int n = 0;
  for (int w = 0; w < workers_; ++w) {
    if (!ok(w)) continue;
    total += loads[w];
    ++n;
  }
  if (n == 0) return -1;
  const auto bound = static_cast<int64_t>(std::ceil(factor * static_cast<double>(total + 1) / n));
  auto it = std::lower_bound(ring_.begin(), ring_.end(), std::make_pair(key_hash, -1));
  // Within the bound some eligible worker always exists (the least loaded is below the mean), so
  // one turn of the ring suffices.
  for (size_t step = 0; step < ring_.size(); ++step, ++it) {
    if (it == ring_.end()) it = ring_.begin();
    const int w = it->second;
    if (ok(w) && loads[w] + 1 <= bound) return w;
  }
  return -1;
}

uint64_t PrefixHash(std::string_view text, size_t max_bytes) {
  const size_t n = std::min(text.size(), max_bytes);
  return XXH3_64bits(text.data(), n);
}

std::string_view CircuitStateName(CircuitState s) {
  switch (s) {
    case CircuitState::kClosed:
      return "closed";
    case CircuitState::kOpen:
      return "open";
    default:
      return "half_open";
  }
}

Status CircuitBreakerOptions::Validate() const {
  if (failure_threshold < 1) return InvalidArgument("failure_threshold must be >= 1");
  if (window_us < 1000) return InvalidArgument("breaker_window_ms must be >= 1");
  if (open_us < 1000) return InvalidArgument("open_ms must be >= 1");
  if (success_threshold < 1) return InvalidArgument("breaker_success_threshold must be >= 1");
  if (!(failure_rate > 0 && failure_rate <= 1)) {
    return InvalidArgument("breaker_failure_rate must be in (0, 1]");
  }
  if (half_open_max_in_flight < 1) {
    return InvalidArgument("the half-open trial must admit at least one request");
  }
  return Status::Ok();
}

CircuitState CircuitBreaker::StateLocked(int64_t now_us) const {
  if (!open_) return CircuitState::kClosed;
  return now_us < open_until_ ? CircuitState::kOpen : CircuitState::kHalfOpen;
}

CircuitState CircuitBreaker::State(int64_t now_us) const {
  MutexLock lock(&mu_);
  return StateLocked(now_us);
}

bool CircuitBreaker::Admits(int64_t now_us, int64_t in_flight) const {
  MutexLock lock(&mu_);
  switch (StateLocked(now_us)) {
    case CircuitState::kClosed:
      return true;
    case CircuitState::kOpen:
      return false;
    default:
      return in_flight < o_.half_open_max_in_flight;
  }
}

void CircuitBreaker::OpenLocked(int64_t now_us) {
  open_ = true;
  open_until_ = now_us + o_.open_us;
  successes_ = 0;
  failures_.clear();
  ok_ = {};
  ++opened_;
}

void CircuitBreaker::CountSuccessLocked(int64_t now_us) {
  const int64_t width = std::max<int64_t>(1, o_.window_us / static_cast<int64_t>(ok_.size()));
  const int64_t start = now_us - now_us % width;
  Bucket& b = ok_[static_cast<size_t>((now_us / width) % static_cast<int64_t>(ok_.size()))];
  if (b.start != start) b = {start, 0};
  ++b.ok;
}

int CircuitBreaker::SuccessesLocked(int64_t now_us) const {
  const int64_t width = std::max<int64_t>(1, o_.window_us / static_cast<int64_t>(ok_.size()));
  int n = 0;
  for (const Bucket& b : ok_)
    n += b.start >= 0 && b.start + width > now_us - o_.window_us ? b.ok : 0;
  return n;
}

void CircuitBreaker::OnSuccess(int64_t now_us) {
  MutexLock lock(&mu_);
  const CircuitState st = StateLocked(now_us);
  if (st == CircuitState::kClosed) CountSuccessLocked(now_us);
  if (st != CircuitState::kHalfOpen) return;
  if (++successes_ >= o_.success_threshold) {
    open_ = false;
    successes_ = 0;
    failures_.clear();
    ok_ = {};
  }
}

void CircuitBreaker::OnFailure(int64_t now_us) {
  MutexLock lock(&mu_);
  switch (StateLocked(now_us)) {
    case CircuitState::kOpen:
      return;  // an outcome of a request that started before the circuit opened
    case CircuitState::kHalfOpen:
      OpenLocked(now_us);  // the trial failed
      return;
    default:
      break;
  }
  while (!failures_.empty() && failures_.front() <= now_us - o_.window_us) failures_.pop_front();
  failures_.push_back(now_us);
  const int failures = static_cast<int>(failures_.size());
  if (failures >= o_.failure_threshold &&
      failures >= o_.failure_rate * (failures + SuccessesLocked(now_us))) {
    OpenLocked(now_us);
  }
}

int CircuitBreaker::failures_in_window(int64_t now_us) const {
  MutexLock lock(&mu_);
  if (open_) return 0;
  int n = 0;
  for (int64_t t : failures_) n += t > now_us - o_.window_us;
  return n;
}

int CircuitBreaker::half_open_successes() const {
  MutexLock lock(&mu_);
  return successes_;
}

uint64_t CircuitBreaker::opened_count() const {
  MutexLock lock(&mu_);
  return opened_;
}

ProbeEvent ApplyProbe(CircuitBreaker& b, bool ok, int64_t now_us) {
  const CircuitState before = b.State(now_us);
  if (ok) {
    if (before != CircuitState::kHalfOpen) return ProbeEvent::kNone;
    b.OnSuccess(now_us);
    return b.State(now_us) == CircuitState::kClosed ? ProbeEvent::kUp : ProbeEvent::kNone;
  }
  if (before == CircuitState::kOpen) return ProbeEvent::kNone;
  b.OnFailure(now_us);
  return b.State(now_us) == CircuitState::kOpen ? ProbeEvent::kDown : ProbeEvent::kNone;
}

}  // namespace eldr::server
