#include "eldr/server/drain.h"

namespace eldr::server {

DrainPlan::DrainPlan(const Clock& clock, int64_t drain_timeout_ms, int64_t grace_ms)
    : clock_(clock),
      grace_us_(grace_ms * 1000),
      deadline_us_(clock.NowUs() + drain_timeout_ms * 1000) {}

DrainPlan::Step DrainPlan::Next(int64_t in_flight) {
  if (last_ != Step::kWait) return last_;  // over: kDone or kAbandon
  const int64_t now = clock_.NowUs();
  if (in_flight <= 0) return last_ = Step::kDone;
  if (now < deadline_us_) return ending_ ? Step::kWaitEndings : Step::kWait;
  if (!ending_) {
    // The grace runs from the moment the endings are ordered, not from the drain's start.
    ending_ = true;
    deadline_us_ = now + grace_us_;
    return Step::kEndStreams;
  }
  return last_ = Step::kAbandon;
}

}  // namespace eldr::server
