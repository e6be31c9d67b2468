// The admission queue in front of max_in_flight (eldr/server/admission.h) on a FakeClock: slots,
// FIFO hand-over, the queue bound, waits that run out, shutdown, and a random-walk property
// against a model (slots conserved, arrival order kept, no slot handed to an expired waiter).
// Then the drain's plan (eldr/server/drain.h), the other end of a request's life at shutdown.
#include "eldr/server/admission.h"

#include <gtest/gtest.h>
#include <rapidcheck/gtest.h>

#include <deque>
#include <map>
#include <memory>
#include <vector>

#include "eldr/clock.h"
#include "eldr/server/drain.h"

namespace eldr::server {
namespace {

using Outcome = AdmissionQueue::Outcome;
using Resolution = AdmissionQueue::Resolution;

TEST(AdmissionTest, AdmitsUpToMaxThenQueuesThenRefuses) {
  FakeClock clock(1'000'000);
  AdmissionQueue q(clock, 2, 1);
  EXPECT_EQ(q.Enter(100, nullptr).outcome, Outcome::kAdmitted);
  EXPECT_EQ(q.Enter(100, nullptr).outcome, Outcome::kAdmitted);
  const auto e = q.Enter(100, nullptr);
  EXPECT_EQ(e.outcome, Outcome::kQueued);
  EXPECT_EQ(e.deadline_us, 1'100'000);
  EXPECT_EQ(q.Enter(100, nullptr).outcome, Outcome::kQueueFull);
  EXPECT_EQ(q.InFlight(), 2);
  EXPECT_EQ(q.Waiting(), 1);
}

TEST(AdmissionTest, ReleaseHandsTheSlotToTheOldestWaiterAndWakesIt) {
  FakeClock clock;
  AdmissionQueue q(clock, 1, 8);
  ASSERT_EQ(q.Enter(100, nullptr).outcome, Outcome::kAdmitted);
  std::vector<int> woken;
  const auto a = q.Enter(100, [&] { woken.push_back(1); });
  const auto b = q.Enter(100, [&] { woken.push_back(2); });
  ASSERT_EQ(a.outcome, Outcome::kQueued);
  ASSERT_EQ(b.outcome, Outcome::kQueued);
  EXPECT_EQ(q.Resolve(a.ticket), Resolution::kWaiting);  // an early wake: wait on
  auto wake = q.Release();
  ASSERT_TRUE(wake);
  EXPECT_TRUE(woken.empty());  // the caller runs it, outside the queue's lock
  wake();
  EXPECT_EQ(woken, std::vector<int>{1});
  EXPECT_EQ(q.InFlight(), 1);  // the slot passed on, it was not freed
  EXPECT_EQ(q.Resolve(a.ticket), Resolution::kAdmitted);
  EXPECT_EQ(q.Resolve(b.ticket), Resolution::kWaiting);
  q.Release()();
  EXPECT_EQ(woken, (std::vector<int>{1, 2}));
  EXPECT_EQ(q.Resolve(b.ticket), Resolution::kAdmitted);
  EXPECT_FALSE(q.Release());
  EXPECT_EQ(q.InFlight(), 0);
  EXPECT_EQ(q.Waiting(), 0);
}

TEST(AdmissionTest, ANewcomerDoesNotOvertakeWaiters) {
  FakeClock clock;
  AdmissionQueue q(clock, 1, 8);
  ASSERT_EQ(q.Enter(100, nullptr).outcome, Outcome::kAdmitted);
  const auto a = q.Enter(100, nullptr);
  ASSERT_EQ(a.outcome, Outcome::kQueued);
  q.Release();
  // The slot belongs to `a` until it resolves: a newcomer queues behind.
  EXPECT_EQ(q.Enter(100, nullptr).outcome, Outcome::kQueued);
  EXPECT_EQ(q.Resolve(a.ticket), Resolution::kAdmitted);
}

TEST(AdmissionTest, AWaitThatRunsOutTimesOutAndIsNeverHandedASlot) {
  FakeClock clock;
  AdmissionQueue q(clock, 1, 8);
  ASSERT_EQ(q.Enter(1000, nullptr).outcome, Outcome::kAdmitted);
  int woken_a = 0, woken_b = 0;
  const auto a = q.Enter(10, [&] { ++woken_a; });  // runs out at 10 ms
  const auto b = q.Enter(50, [&] { ++woken_b; });  // runs out at 50 ms
  clock.Advance(9'999);
  EXPECT_EQ(q.Resolve(a.ticket), Resolution::kWaiting);
  clock.Advance(1);
  // The slot frees after a's wait ran out but before a's timer resolved it: b gets it.
  auto wake = q.Release();
  ASSERT_TRUE(wake);
  wake();
  EXPECT_EQ(woken_a, 0);
  EXPECT_EQ(woken_b, 1);
  EXPECT_EQ(q.Resolve(a.ticket), Resolution::kTimedOut);
  EXPECT_EQ(q.Resolve(b.ticket), Resolution::kAdmitted);
  EXPECT_EQ(q.InFlight(), 1);
  // A waiter whose timer fires first leaves the queue and frees its place.
  const auto c = q.Enter(5, nullptr);
  clock.Advance(5'000);
  EXPECT_EQ(q.Resolve(c.ticket), Resolution::kTimedOut);
  EXPECT_EQ(q.Resolve(c.ticket), Resolution::kTimedOut);  // a second call changes nothing
  EXPECT_EQ(q.Waiting(), 0);
  EXPECT_FALSE(q.Release());
  EXPECT_EQ(q.InFlight(), 0);
}

TEST(AdmissionTest, AZeroWaitHasAlreadyRunOut) {
  FakeClock clock;
  AdmissionQueue q(clock, 1, 8);
  ASSERT_EQ(q.Enter(100, nullptr).outcome, Outcome::kAdmitted);
  const auto e = q.Enter(0, nullptr);
  ASSERT_EQ(e.outcome, Outcome::kQueued);
  EXPECT_EQ(q.Resolve(e.ticket), Resolution::kTimedOut);
}

TEST(AdmissionTest, ZeroCapacityRefusesInsteadOfQueueing) {
  FakeClock clock;
  AdmissionQueue q(clock, 1, 0);
  ASSERT_EQ(q.Enter(100, nullptr).outcome, Outcome::kAdmitted);
  EXPECT_EQ(q.Enter(100, nullptr).outcome, Outcome::kQueueFull);
}

TEST(AdmissionTest, ShutdownWakesEveryWaiterAndAdmitsNoOne) {
  FakeClock clock;
  AdmissionQueue q(clock, 1, 8);
  ASSERT_EQ(q.Enter(100, nullptr).outcome, Outcome::kAdmitted);
  int woken = 0;
  const auto a = q.Enter(100, [&] { ++woken; });
  const auto b = q.Enter(100, [&] { ++woken; });
  auto wakes = q.Shutdown();
  EXPECT_EQ(wakes.size(), 2u);
  for (auto& w : wakes) w();
  EXPECT_EQ(woken, 2);
  EXPECT_EQ(q.Resolve(a.ticket), Resolution::kShutdown);
  EXPECT_EQ(q.Resolve(b.ticket), Resolution::kShutdown);
  EXPECT_EQ(q.Enter(100, nullptr).outcome, Outcome::kShutdown);
  EXPECT_EQ(q.InFlight(), 1);  // the request being served keeps its slot until it ends
  EXPECT_FALSE(q.Release());
  EXPECT_EQ(q.InFlight(), 0);
}

// A random walk of arrivals, releases, clock steps and timer firings, checked against a model:
// slots are conserved, never exceed max_in_flight, go to waiters in arrival order among those
// still inside their wait, and never to one whose wait ran out.
RC_GTEST_PROP(AdmissionProperty, SlotsConservedAndOrderKept, ()) {
  FakeClock clock(1);
  const int max_in_flight = *rc::gen::inRange(1, 4);
  const int capacity = *rc::gen::inRange(0, 5);
  AdmissionQueue q(clock, max_in_flight, capacity);
  struct Waiting {
    AdmissionQueue::Ticket ticket;
    int64_t deadline_us;
    int64_t arrival;
  };
  int64_t holders = 0;                          // requests holding a slot, per the model
  std::deque<Waiting> waiting;                  // the model's queue, arrival order
  std::map<AdmissionQueue::Ticket, int> woken;  // wake callbacks run per ticket
  std::vector<int64_t> admitted_arrivals;       // arrival numbers of waiters admitted, in order
  int64_t arrivals = 0;
  const int steps = *rc::gen::inRange(1, 80);
  for (int i = 0; i < steps; ++i) {
    const int op = *rc::gen::inRange(0, 4);
    if (op == 0) {  // arrival
      const int64_t timeout_ms = *rc::gen::inRange<int64_t>(0, 20);
      const int64_t n = arrivals++;
      auto slot = std::make_shared<AdmissionQueue::Ticket>(0);
      const auto e = q.Enter(timeout_ms, [&woken, slot] { ++woken[*slot]; });
      *slot = e.ticket;  // the callback runs later, after Release/Shutdown returned it
      if (holders < max_in_flight && waiting.empty()) {
        RC_ASSERT(e.outcome == Outcome::kAdmitted);
        ++holders;
      } else if (static_cast<int>(waiting.size()) >= capacity) {
        RC_ASSERT(e.outcome == Outcome::kQueueFull);
      } else {
        RC_ASSERT(e.outcome == Outcome::kQueued);
        RC_ASSERT(e.deadline_us == clock.NowUs() + timeout_ms * 1000);
        waiting.push_back({e.ticket, e.deadline_us, n});
      }
    } else if (op == 1 && holders > 0) {  // a holder finishes
      auto wake = q.Release();
      while (!waiting.empty() && clock.NowUs() >= waiting.front().deadline_us) {
        RC_ASSERT(q.Resolve(waiting.front().ticket) == Resolution::kTimedOut);
        waiting.pop_front();
      }
      if (waiting.empty()) {
        RC_ASSERT(!wake);
        --holders;
      } else {
        RC_ASSERT(static_cast<bool>(wake));
        const Waiting w = waiting.front();
        waiting.pop_front();
        wake();
        RC_ASSERT(woken[w.ticket] == 1);
        RC_ASSERT(q.Resolve(w.ticket) == Resolution::kAdmitted);
        admitted_arrivals.push_back(w.arrival);
      }
    } else if (op == 2) {  // time passes
      clock.Advance(*rc::gen::inRange<int64_t>(0, 8000));
    } else if (!waiting.empty()) {  // some waiter's timer fires
      const size_t k = *rc::gen::inRange<size_t>(0, waiting.size());
      const Resolution r = q.Resolve(waiting[k].ticket);
      if (clock.NowUs() >= waiting[k].deadline_us) {
        RC_ASSERT(r == Resolution::kTimedOut);
        waiting.erase(waiting.begin() + static_cast<std::ptrdiff_t>(k));
      } else {
        RC_ASSERT(r == Resolution::kWaiting);
      }
    }
    RC_ASSERT(q.InFlight() == holders);
    RC_ASSERT(q.InFlight() <= max_in_flight);
    RC_ASSERT(q.Waiting() == static_cast<int64_t>(waiting.size()));
  }
  for (size_t i = 1; i < admitted_arrivals.size(); ++i) {
    RC_ASSERT(admitted_arrivals[i - 1] < admitted_arrivals[i]);
  }
  // Everyone still waiting is released by shutdown; every holder gives its slot back.
  RC_ASSERT(q.Shutdown().size() == waiting.size());
  for (const auto& w : waiting) RC_ASSERT(q.Resolve(w.ticket) == Resolution::kShutdown);
  for (; holders > 0; --holders) RC_ASSERT(!q.Release());
  RC_ASSERT(q.InFlight() == 0);
}

// ---- drain ------------------------------------------------------------------------------------

using Step = DrainPlan::Step;

TEST(DrainPlanTest, StopsAsSoonAsNothingIsInFlight) {
  FakeClock clock(1'000'000);
  DrainPlan plan(clock, 30'000, 2'000);
  EXPECT_EQ(plan.Next(3), Step::kWait);
  clock.Advance(29'999'000);
  EXPECT_EQ(plan.Next(1), Step::kWait);
  EXPECT_EQ(plan.Next(0), Step::kDone);
  EXPECT_EQ(plan.Next(5), Step::kDone);  // over is over
}

TEST(DrainPlanTest, EndsOpenAnswersOnceAtTheTimeoutThenGivesThemTheGrace) {
  FakeClock clock;
  DrainPlan plan(clock, 1'000, 2'000);
  EXPECT_EQ(plan.Next(2), Step::kWait);
  clock.Advance(1'000'000);
  EXPECT_EQ(plan.Next(2), Step::kEndStreams);
  EXPECT_EQ(plan.Next(2), Step::kWaitEndings);  // once only
  clock.Advance(1'999'999);                     // the grace runs from the order
  EXPECT_EQ(plan.Next(1), Step::kWaitEndings);
  EXPECT_EQ(plan.Next(0), Step::kDone);
}

TEST(DrainPlanTest, AbandonsWhatTheGraceDidNotEnd) {
  FakeClock clock;
  DrainPlan plan(clock, 0, 2'000);
  EXPECT_EQ(plan.Next(1), Step::kEndStreams);  // no wait at all with drain_timeout_ms 0
  clock.Advance(2'000'000);
  EXPECT_EQ(plan.Next(1), Step::kAbandon);
  EXPECT_EQ(plan.Next(0), Step::kAbandon);
}

TEST(DrainPlanTest, NothingInFlightStopsAtOnceEvenPastTheTimeout) {
  FakeClock clock;
  DrainPlan plan(clock, 0, 0);
  EXPECT_EQ(plan.Next(0), Step::kDone);
}

}  // namespace
}  // namespace eldr::server
