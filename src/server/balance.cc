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

bool CircuitBreaker::Available(int64_t now_us) const {
  return State(now_us) != CircuitState::kOpen;
}

CircuitState CircuitBreaker::State(int64_t now_us) const {
  std::lock_guard lock(mu_);
  if (!open_) return CircuitState::kClosed;
  return now_us < open_until_ ? CircuitState::kOpen : CircuitState::kHalfOpen;
}

void CircuitBreaker::OnSuccess() {
  std::lock_guard lock(mu_);
  failures_ = 0;
  open_ = false;
}

void CircuitBreaker::OnFailure(int64_t now_us) {
  std::lock_guard lock(mu_);
  ++failures_;
  const bool half_open = open_ && now_us >= open_until_;
  if (half_open || (!open_ && failures_ >= threshold_)) {
    open_ = true;
    open_until_ = now_us + open_us_;
    ++opened_;
  }
}

int CircuitBreaker::consecutive_failures() const {
  std::lock_guard lock(mu_);
  return failures_;
}

uint64_t CircuitBreaker::opened_count() const {
  std::lock_guard lock(mu_);
  return opened_;
}

}  // namespace eldr::server
