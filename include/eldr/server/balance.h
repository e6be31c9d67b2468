// -----------------------------------------------------------------------------
// File: server/balance.h
// -----------------------------------------------------------------------------
// Worker selection helpers of the proxy that are not decode policies:
//   * PrefillRing: consistent hashing with bounded loads (Mirrokni et al.) for prefill workers,
//     so that prompts sharing a prefix reach the same prefill engine (its prefix cache) unless
//     that engine already holds more than `factor` times the mean load;
//   * CircuitBreaker: per-worker failure state fed by request outcomes and health checks: a
//     sliding failure window, a timed open state and a half-open trial with a success threshold.
//
// Thread-safety: PrefillRing is immutable after construction (share it). CircuitBreaker methods
// are thread-safe (below). Time is passed in (microseconds on a Clock, eldr/clock.h), never read
// here.
#pragma once

#include <array>
#include <cstdint>
#include <deque>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "eldr/mutex.h"
#include "eldr/status.h"

namespace eldr::server {

class PrefillRing {
 public:
  // One ring position per (worker, replica); `names` identify workers (their URLs), so a worker
  // keeps its arcs when others are added or removed.
  explicit PrefillRing(std::span<const std::string> names, int replicas = 64);

  // The first worker clockwise of `key_hash` that is available, not excluded, and whose load + 1
  // stays within ceil(factor * (total load + 1) / available workers). -1 if every worker is
  // unavailable or excluded. REQUIRES: loads.size() == workers; available/excluded empty or the
  // same size (non-zero = available / excluded).
  int Pick(uint64_t key_hash, std::span<const int64_t> loads, std::span<const uint8_t> available,
           std::span<const uint8_t> excluded, double factor) const;

  int workers() const { return workers_; }

 private:
  int workers_;
  std::vector<std::pair<uint64_t, int>> ring_;  // sorted by hash
};

// 64-bit hash of a prompt prefix (the first `max_bytes` bytes of `text`).
uint64_t PrefixHash(std::string_view text, size_t max_bytes);

enum class CircuitState { kClosed, kOpen, kHalfOpen };
std::string_view CircuitStateName(CircuitState s);

// CircuitBreakerOptions: plain values (config keys failure_threshold, breaker_window_ms, open_ms,
// breaker_success_threshold; docs/serve.md).
struct CircuitBreakerOptions {
  int failure_threshold = 5;            // failures within `window_us` that open the circuit (>= 1)
  int64_t window_us = 10'000'000;       // the sliding window failures are counted in (> 0)
  int64_t open_us = 5'000'000;          // time open before the worker is half-open (> 0)
  int success_threshold = 2;            // consecutive half-open successes that close it (>= 1)
  int64_t half_open_max_in_flight = 1;  // trial requests at once while half-open (>= 1)
  // ...and only while failures are at least this share of the outcomes in the window, (0, 1]:
  // a busy worker failing a few per cent of its requests stays closed (1: failures alone, as a
  // threshold without successes).
  double failure_rate = 0.5;
  Status Validate() const;
};

// CircuitBreaker: one worker's failure state, fed by request outcomes on both legs (5xx answers,
// malformed payloads, resets, timeouts) and by active health probes.
//
//   closed     requests flow. A failure is remembered for `window_us`; `failure_threshold`
//              failures inside any window of that length open the circuit (a sliding window,
//              not a consecutive count: successes in between do not forgive them, failures
//              older than the window are forgotten).
//   open       the worker is not chosen for `open_us`. Outcomes reported meanwhile (requests
//              that started before it opened) change nothing.
//   half-open  after `open_us`: the worker is chosen again for a limited trial, at most
//              `half_open_max_in_flight` requests at once (Admits). `success_threshold`
//              consecutive successes close the circuit (its failure window starts empty); one
//              failure reopens it for another `open_us`.
//
// Time is passed in (microseconds on the Clock the caller reads, eldr/clock.h), never read here,
// so tests drive it with a FakeClock.
//
// Thread-safety: every method is thread-safe (one mutex; each call is O(failure_threshold) at
// most). The trial limit is checked against the caller's in-flight count, so two threads
// choosing the worker at the same instant may both start a trial: the limit is approximate by
// that race, never exceeded by more than the number of I/O threads.
class CircuitBreaker {
 public:
  explicit CircuitBreaker(const CircuitBreakerOptions& o) : o_(o) {}

  CircuitState State(int64_t now_us) const ELDR_EXCLUDES(mu_);
  // Closed or half-open: the worker may be tried.
  bool Available(int64_t now_us) const { return State(now_us) != CircuitState::kOpen; }
  // Available, and in half-open only while the worker holds fewer than
  // half_open_max_in_flight requests (`in_flight`, the caller's count, the trial under way).
  bool Admits(int64_t now_us, int64_t in_flight) const ELDR_EXCLUDES(mu_);

  void OnSuccess(int64_t now_us) ELDR_EXCLUDES(mu_);
  void OnFailure(int64_t now_us) ELDR_EXCLUDES(mu_);

  // Failures inside the window ending at `now_us` while closed (0 while open or half-open).
  int failures_in_window(int64_t now_us) const ELDR_EXCLUDES(mu_);
  // Consecutive successes since the circuit turned half-open.
  int half_open_successes() const ELDR_EXCLUDES(mu_);
  uint64_t opened_count() const ELDR_EXCLUDES(mu_);  // times the circuit opened

  const CircuitBreakerOptions& options() const { return o_; }

 private:
  CircuitState StateLocked(int64_t now_us) const ELDR_REQUIRES(mu_);
  void OpenLocked(int64_t now_us) ELDR_REQUIRES(mu_);

  mutable Mutex mu_;
  const CircuitBreakerOptions o_;
  std::deque<int64_t> failures_ ELDR_GUARDED_BY(mu_);  // closed: the failures inside the window
  // Closed: successes in 10 buckets of window_us / 10 (a bucket counts while any of it is
  // inside the window), for the failure rate.
  struct Bucket {
    int64_t start = -1;
    int ok = 0;
  };
  std::array<Bucket, 10> ok_ ELDR_GUARDED_BY(mu_){};
  void CountSuccessLocked(int64_t now_us) ELDR_REQUIRES(mu_);
  int SuccessesLocked(int64_t now_us) const ELDR_REQUIRES(mu_);
  bool open_ ELDR_GUARDED_BY(mu_) = false;  // open or half-open (which: now_us vs open_until_)
  int64_t open_until_ ELDR_GUARDED_BY(mu_) = 0;
  int successes_ ELDR_GUARDED_BY(mu_) = 0;  // half-open: consecutive successes
  uint64_t opened_ ELDR_GUARDED_BY(mu_) = 0;
};

// What an active health probe's result does to a worker's circuit (the health loop's rule):
// a probe that fails counts as a failure like a request's; one that succeeds counts as a success
// only while half-open (so probes alone can close a half-open circuit after success_threshold of
// them), and never cuts an open circuit short, so a worker that answers /health while failing
// requests stays out of rotation.
enum class ProbeEvent { kNone, kUp, kDown };  // kUp: now closed; kDown: opened by this probe
ProbeEvent ApplyProbe(CircuitBreaker& b, bool ok, int64_t now_us);

}  // namespace eldr::server
