// -----------------------------------------------------------------------------
// File: server/drain.h
// -----------------------------------------------------------------------------
// DrainPlan: what the router does, step by step, after SIGTERM (or POST /admin/drain): wait for
// the requests in flight to finish for `drain_timeout_ms`; then, once, end every answer still
// open (streams get an SSE error event and a proper end of the body, answers not begun a 503);
// then give those endings `grace_ms` to be written; then stop with whatever is left. The plan
// decides from the clock and the in-flight count it is shown; the proxy polls it and does the
// cancelling, so the rule is unit-tested with a FakeClock (tests/admission_test.cc).
//
// Thread-safety: not thread-safe; one drain is driven by one coroutine.
#pragma once

#include <cstdint>

#include "eldr/clock.h"

namespace eldr::server {

class DrainPlan {
 public:
  enum class Step {
    kWait,         // requests are still finishing within drain_timeout_ms: poll again
    kEndStreams,   // drain_timeout_ms passed with requests open: end them now (returned once)
    kWaitEndings,  // the endings are being written: poll again
    kDone,         // nothing in flight: stop
    kAbandon,      // the grace passed with requests still open: stop anyway (logged)
  };

  // Starts the drain at clock.NowUs(). REQUIRES: drain_timeout_ms >= 0, grace_ms >= 0; `clock`
  // outlives the plan.
  DrainPlan(const Clock& clock, int64_t drain_timeout_ms, int64_t grace_ms);

  // The next step with `in_flight` requests open. After kDone or kAbandon it keeps answering the
  // same.
  Step Next(int64_t in_flight);

 private:
  const Clock& clock_;
  const int64_t grace_us_;
  int64_t deadline_us_;
  bool ending_ = false;
  Step last_ = Step::kWait;  // kDone or kAbandon once over; kWait before
};

}  // namespace eldr::server
