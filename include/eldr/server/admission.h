// -----------------------------------------------------------------------------
// File: server/admission.h
// -----------------------------------------------------------------------------
// AdmissionQueue: the router's admission control in front of `max_in_flight`, without I/O. A
// request takes a slot at once when one is free, otherwise waits in a bounded FIFO queue until a
// finishing request hands its slot over or its wait (admission_timeout_ms, clamped to the
// request's deadline) runs out. The proxy answers 429 when the queue is full and 503 when the
// wait expires or the router shuts down.
//
// The queue decides; the caller waits. Enter() gives a waiting request a ticket and keeps the
// `wake` callback the caller passes; Release() and Shutdown() return the callbacks of the
// waiters they resolved, for the caller to run *after* the call (never under the queue's lock).
// A woken or timed-out waiter asks Resolve() what happened to it. Time comes from the injected
// Clock, so the whole state machine is unit-tested with a FakeClock and no sleeping.
//
// Invariants (tests/admission_test.cc):
//   * InFlight() <= max_in_flight, and every slot taken is given back exactly once: after every
//     admitted request has called Release(), InFlight() == 0;
//   * waiters are admitted in arrival order; a slot is never handed to a waiter whose wait has
//     already run out (it is skipped and times out), so no slot is lost to a request that then
//     answers 503;
//   * Waiting() <= capacity.
//
// Example (the proxy's use, with an Asio timer as the waiting mechanism):
//   auto e = queue.Enter(timeout_ms, [timer] { post(cancel timer) });
//   if (e.outcome == kQueued) {
//     do { timer.expires_at(e.deadline_us); co_await timer.async_wait(); }
//     while ((r = queue.Resolve(e.ticket)) == Resolution::kWaiting);
//   }
//   ... serve ...; for (auto& w : queue.Release()) w();
//
// Thread-safety: every member is thread-safe (one internal mutex; callbacks run by the caller).
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <unordered_map>
#include <vector>

#include "eldr/clock.h"
#include "eldr/mutex.h"

namespace eldr::server {

class AdmissionQueue {
 public:
  using Ticket = uint64_t;
  using Wake = std::function<void()>;

  enum class Outcome {
    kAdmitted,   // a slot was free: the request holds it (call Release() when done)
    kQueued,     // waiting: wait until deadline_us or until `wake` runs, then Resolve(ticket)
    kQueueFull,  // `capacity` requests already wait: answer 429
    kShutdown,   // Shutdown() was called: answer 503
  };
  struct Entry {
    Outcome outcome;
    Ticket ticket = 0;        // kQueued only
    int64_t deadline_us = 0;  // kQueued only: Clock time at which the wait runs out
  };
  enum class Resolution {
    kAdmitted,  // a slot was handed over: the request holds it (call Release() when done)
    kTimedOut,  // the wait ran out: answer 503 (or 504 when the request's deadline ran out)
    kShutdown,  // Shutdown() came first: answer 503
    kWaiting,   // woken early (neither handed a slot nor expired): wait again until deadline_us
  };

  // REQUIRES: max_in_flight >= 1, capacity >= 0. `clock` must outlive the queue.
  AdmissionQueue(const Clock& clock, int max_in_flight, int capacity);

  // A slot now, or a place at the back of the queue for at most `timeout_ms` (<= 0: a wait that
  // has already run out, so Resolve() answers kTimedOut). `wake` is kept until the waiter is
  // resolved.
  Entry Enter(int64_t timeout_ms, Wake wake) ELDR_EXCLUDES(mu_);

  // A slot holder finished. Hands the slot to the oldest waiter still inside its wait and returns
  // that waiter's wake callback (run it); otherwise frees the slot and returns an empty one.
  // Waiters found expired on the way are dropped from the queue (they time out on Resolve()).
  Wake Release() ELDR_EXCLUDES(mu_);

  // What happened to a waiter. Once it answered kAdmitted, kTimedOut or kShutdown, the ticket is
  // forgotten (a second call answers kTimedOut). REQUIRES: `ticket` came from Enter().
  Resolution Resolve(Ticket ticket) ELDR_EXCLUDES(mu_);

  // No more admissions; every waiter will resolve to kShutdown. Returns their wake callbacks.
  // Slots already held stay held until released.
  std::vector<Wake> Shutdown() ELDR_EXCLUDES(mu_);

  int64_t InFlight() const ELDR_EXCLUDES(mu_);
  int64_t Waiting() const ELDR_EXCLUDES(mu_);

 private:
  struct Waiter {
    Ticket ticket;
    int64_t deadline_us;
    Wake wake;
  };

  const Clock& clock_;
  const int max_in_flight_;
  const int capacity_;
  mutable Mutex mu_;
  int64_t in_flight_ ELDR_GUARDED_BY(mu_) = 0;
  bool shutdown_ ELDR_GUARDED_BY(mu_) = false;
  Ticket next_ticket_ ELDR_GUARDED_BY(mu_) = 1;
  std::deque<Waiter> queue_ ELDR_GUARDED_BY(mu_);  // waiting, in arrival order
  // Tickets taken out of the queue with a slot (kAdmitted) or by Shutdown() (kShutdown), until
  // Resolve() reports it; a ticket in neither place has timed out.
  std::unordered_map<Ticket, Resolution> resolved_ ELDR_GUARDED_BY(mu_);
};

}  // namespace eldr::server
