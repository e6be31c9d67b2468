// -----------------------------------------------------------------------------
// File: server/balance.h
// -----------------------------------------------------------------------------
// Worker selection helpers of the proxy that are not decode policies:
//   * PrefillRing: consistent hashing with bounded loads (Mirrokni et al.) for prefill workers,
//     so that prompts sharing a prefix reach the same prefill engine (its prefix cache) unless
//     that engine already holds more than `factor` times the mean load;
//   * CircuitBreaker: per-worker failure state fed by request outcomes and health checks.
//
// Thread-safety: PrefillRing is immutable after construction (share it). CircuitBreaker methods
// are thread-safe. Time is passed in (microseconds on any monotonic clock), never read here.
#pragma once

#include <cstdint>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

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

// Closed: requests flow. `threshold` consecutive failures open the circuit for `open_us`; after
// that the worker is half-open: it may be chosen again, one success closes the circuit and one
// failure reopens it.
class CircuitBreaker {
 public:
  CircuitBreaker(int threshold, int64_t open_us) : threshold_(threshold), open_us_(open_us) {}
  bool Available(int64_t now_us) const;
  CircuitState State(int64_t now_us) const;
  void OnSuccess();
  void OnFailure(int64_t now_us);
  int consecutive_failures() const;
  uint64_t opened_count() const;  // times the circuit opened

 private:
  mutable std::mutex mu_;
  int threshold_;
  int64_t open_us_;
  int failures_ = 0;
  bool open_ = false;
  int64_t open_until_ = 0;
  uint64_t opened_ = 0;
};

}  // namespace eldr::server
