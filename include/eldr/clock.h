// -----------------------------------------------------------------------------
// File: clock.h
// -----------------------------------------------------------------------------
// Clock: the one way eldr's time-dependent state machines learn the time (circuit breakers,
// health-probe transitions, retry and request deadlines, the drain deadline), so that tests
// drive them with a FakeClock and never sleep (leveldb's Env::NowMicros, envoy's TimeSource).
//
//   SteadyClock::Get()   the process's monotonic clock (std::chrono::steady_clock), the one the
//                        proxy's Asio timers run on
//   FakeClock            time that moves only when a test says so
//
// Times are microseconds on an arbitrary monotonic origin: only differences mean anything.
//
// Example:
//   FakeClock clock(1'000'000);
//   Deadline d(clock, 500'000);      // eldr/server/retry.h
//   clock.Advance(600'000);
//   EXPECT_TRUE(d.Expired());
//
// Thread-safety: NowUs() is thread-safe on both implementations; FakeClock's Set/Advance may be
// called from any thread (the value is atomic).
#pragma once

#include <atomic>
#include <cstdint>

namespace eldr {

class Clock {
 public:
  virtual ~Clock() = default;
  // Microseconds since an arbitrary fixed origin; never decreases.
  virtual int64_t NowUs() const = 0;
};

// std::chrono::steady_clock in microseconds.
class SteadyClock final : public Clock {
 public:
  int64_t NowUs() const override;
  // A process-wide instance (stateless, so sharing it is free).
  static const SteadyClock& Get();
};

// A clock for tests: starts at `start_us` and moves only by Set/Advance.
class FakeClock final : public Clock {
 public:
  explicit FakeClock(int64_t start_us = 0) : now_(start_us) {}
  int64_t NowUs() const override { return now_.load(std::memory_order_relaxed); }
  // REQUIRES: us >= NowUs() (a clock never goes back).
  void Set(int64_t us) { now_.store(us, std::memory_order_relaxed); }
  // REQUIRES: us >= 0.
  void Advance(int64_t us) { now_.fetch_add(us, std::memory_order_relaxed); }

 private:
  std::atomic<int64_t> now_;
};

}  // namespace eldr
