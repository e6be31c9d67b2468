// Online refitting in the simulator (SimOptions::refit) and the drifting domain mix
// (WorkloadOptions::mix_drift): refits happen at their simulated times on the right window, swap
// the space, are deterministic, and cost nothing on a stationary workload; the drifting mix
// really drifts while calibration keeps the initial mix.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "eldr/fit.h"
#include "eldr/sim/simulator.h"

namespace eldr::sim {
namespace {

Workload MakeWorkload(int requests, double rate, double mix_drift, uint64_t seed = 3) {
  WorkloadOptions o;
  o.kind = "task";
  o.requests = requests;
  o.calibration = 400;
  o.rate_qps = rate;
  o.output_tokens = 48;
  o.token_patterns = 8;
  o.seed = seed;
  o.mix_drift = mix_drift;
  return *MakeSyntheticWorkload(*FindModel("gpt-oss-20b"), o);
}

std::shared_ptr<const SignatureSpace> FitSpace(const Workload& w, int k) {
  std::vector<CalibrationRequest> calib;
  for (const auto& r : w.calibration) calib.push_back({"", w.labels[r.label], r.prefill, r.decode});
  FitOptions fo;
  fo.k = k;
  fo.rho_pairs = 2000;
  return Fit(calib, w.geometry, fo)->space;
}

// 2P4D with round cost parameters; refits every 2 s on the last 4 s, at least 32 requests.
SimOptions Options(const Workload& w, const std::string& policy, bool refit) {
  SimOptions o;
  o.cluster.prefill_workers = 2;
  o.cluster.decode_workers = 4;
  o.cluster.max_batch = 32;
  o.cluster.kv_capacity_tokens = 40000;
  o.cost.t0_us = 2000;
  o.cost.layer_us = 40;
  o.cost.expert_us = 3;
  o.cost.token_us = 50;
  o.cost.prefill_fixed_us = 5000;
  o.cost.prefill_token_us = 5;
  o.cost.kv_fixed_us = 500;
  o.cost.kv_token_us = 1;
  o.policy.name = policy;
  o.policy.space = FitSpace(w, 4);
  o.refit.enabled = refit;
  o.refit.interval_us = 2'000'000;
  o.refit.window_us = 4'000'000;
  o.refit.fit.min_requests = 32;
  return o;
}

void ExpectSameRun(const SimResult& a, const SimResult& b) {
  ASSERT_EQ(a.requests.size(), b.requests.size());
  for (size_t i = 0; i < a.requests.size(); ++i) {
    ASSERT_EQ(a.requests[i].decoder, b.requests[i].decoder) << i;
    ASSERT_EQ(a.requests[i].finish_us, b.requests[i].finish_us) << i;
  }
  EXPECT_EQ(a.steps, b.steps);
  EXPECT_EQ(a.mean_distinct, b.mean_distinct);
}

TEST(SimRefitTest, SwapsAtItsSimulatedTimesOnTheRoutedWindowAndIsDeterministic) {
  const Workload w = MakeWorkload(600, 50, 0);  // ~12 s of arrivals
  for (const std::string policy : {"eldr", "eldr-plus"}) {
    SCOPED_TRACE(policy);
    SimOptions o = Options(w, policy, true);
    o.policy.tau = 0.3;  // eldr: a band wide enough that moved centroids change decisions
    auto r = Simulate(w, o);
    ASSERT_TRUE(r.has_value()) << r.error().ToString();
    // Refits at 2 s, 4 s, ... for as long as some request is still to be routed.
    int64_t last_routed = 0;
    for (const auto& q : r->requests) last_routed = std::max(last_routed, q.first_token_us);
    const int64_t expected = last_routed / o.refit.interval_us;
    ASSERT_EQ(static_cast<int64_t>(r->refits.size()), expected);
    EXPECT_GE(expected, 5);
    for (size_t i = 0; i < r->refits.size(); ++i) {
      const SimRefit& ev = r->refits[i];
      EXPECT_EQ(ev.time_us, static_cast<int64_t>(i + 1) * o.refit.interval_us);
      // The window: arrived in (t - window, t] and already routed (first token before t).
      int want = 0;
      for (const auto& q : r->requests) {
        want += q.arrival_us > ev.time_us - o.refit.window_us && q.arrival_us <= ev.time_us &&
                q.first_token_us < ev.time_us;
      }
      EXPECT_EQ(ev.window, std::min(want, o.refit.max_window)) << "refit at " << ev.time_us;
      EXPECT_TRUE(ev.swapped) << "refit at " << ev.time_us << ": " << ev.refused;
      EXPECT_GE(ev.new_score, ev.old_score - o.refit.fit.max_score_loss);
    }
    EXPECT_EQ(r->refits_swapped, expected);
    EXPECT_EQ(r->refits_failed, 0);
    EXPECT_EQ(r->refits_swapped + r->refits_failed, static_cast<int64_t>(r->refits.size()));

    // Up to the first refit the run is the static one; after it the new space routes.
    SimOptions static_options = o;
    static_options.refit.enabled = false;
    auto s = Simulate(w, static_options);
    ASSERT_TRUE(s.has_value());
    EXPECT_TRUE(s->refits.empty());
    int before = 0, after_differs = 0;
    for (size_t i = 0; i < r->requests.size(); ++i) {
      if (r->requests[i].first_token_us < o.refit.interval_us) {
        ++before;
        EXPECT_EQ(r->requests[i].decoder, s->requests[i].decoder) << i;
      } else {
        after_differs += r->requests[i].decoder != s->requests[i].decoder;
      }
    }
    EXPECT_GT(before, 50);
    EXPECT_GT(after_differs, 0) << "the refitted space never changed a decision";

    // Deterministic: the same run again, refit for refit.
    auto again = Simulate(w, o);
    ASSERT_TRUE(again.has_value());
    ExpectSameRun(*r, *again);
    ASSERT_EQ(again->refits.size(), r->refits.size());
    for (size_t i = 0; i < r->refits.size(); ++i) {
      EXPECT_EQ(again->refits[i].window, r->refits[i].window);
      EXPECT_EQ(again->refits[i].churn, r->refits[i].churn);
      EXPECT_EQ(again->refits[i].new_score, r->refits[i].new_score);
    }
  }
}

TEST(SimRefitTest, TooSmallAWindowKeepsTheSpaceAndOtherPoliciesAreUntouched) {
  const Workload w = MakeWorkload(300, 25, 0);
  // 2 s windows hold ~50 requests: below min_requests 200 every refit is refused, and the run is
  // the static one.
  SimOptions o = Options(w, "eldr", true);
  o.refit.fit.min_requests = 200;
  auto r = Simulate(w, o);
  auto s = Simulate(w, Options(w, "eldr", false));
  ASSERT_TRUE(r && s);
  EXPECT_GT(r->refits_failed, 0);
  EXPECT_EQ(r->refits_swapped, 0);
  for (const auto& ev : r->refits) EXPECT_FALSE(ev.swapped);
  ExpectSameRun(*r, *s);
  // A policy without a space ignores the option entirely.
  for (const std::string policy : {"jsq", "rr", "domain"}) {
    SimOptions lb = Options(w, policy, true);
    lb.policy.label_shares = {{"legal", 1}, {"code", 1}, {"math", 1}, {"medical", 1}};
    SimOptions lb_static = lb;
    lb_static.refit.enabled = false;
    auto a = Simulate(w, lb), b = Simulate(w, lb_static);
    ASSERT_TRUE(a && b) << policy;
    EXPECT_TRUE(a->refits.empty()) << policy;
    ExpectSameRun(*a, *b);
  }
}

// Few decoders and a mix drifting towards one domain: a balanced refit splits that domain over
// more decoders. Its mean best cosine on the window falls, but the balanced objective it
// optimises does not, so Refit's guard lets it through (refit.h) and the refitted router spreads
// the late traffic more evenly than the stale space.
TEST(SimRefitTest, UnderStrongDriftRefitsRebalanceInsteadOfBeingRefused) {
  const Workload w = MakeWorkload(600, 50, 0.6);
  auto r = Simulate(w, Options(w, "eldr", true));
  auto s = Simulate(w, Options(w, "eldr", false));
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  ASSERT_TRUE(s.has_value());
  EXPECT_GT(r->refits_swapped, 0);
  EXPECT_EQ(r->refits_failed, 0);
  bool split = false;
  for (const auto& ev : r->refits) {
    EXPECT_TRUE(ev.swapped) << ev.refused;
    split |= ev.new_score < ev.old_score;
  }
  EXPECT_TRUE(split) << "some refit lowered the mean best cosine to rebalance";
  // The busiest decoder's share of the last third of arrivals.
  auto busiest = [&](const SimResult& res) {
    std::vector<int> n(4);
    int total = 0;
    for (const auto& q : res.requests) {
      if (q.id < 400) continue;
      ++n[q.decoder];
      ++total;
    }
    return static_cast<double>(*std::max_element(n.begin(), n.end())) / total;
  };
  EXPECT_LT(busiest(*r), busiest(*s));
}

// Without drift the calibration already describes the traffic: refitting moves centroids only
// by sampling noise and routing quality stays that of the static fit.
TEST(SimRefitTest, OnAStationaryWorkloadStaysCloseToStatic) {
  const Workload w = MakeWorkload(1500, 50, 0, 11);
  for (const std::string policy : {"eldr", "eldr-plus"}) {
    SCOPED_TRACE(policy);
    auto r = Simulate(w, Options(w, policy, true));
    auto s = Simulate(w, Options(w, policy, false));
    ASSERT_TRUE(r && s);
    EXPECT_GT(r->refits_swapped, 10);
    const SimSummary a = Summarize(*r), b = Summarize(*s);
    EXPECT_NEAR(a.request_distinct / b.request_distinct, 1, 0.03);
    EXPECT_NEAR(a.tpot_p50 / b.tpot_p50, 1, 0.03);
    EXPECT_NEAR(a.tpot_p99 / b.tpot_p99, 1, 0.06);
  }
}

TEST(SimRefitTest, RejectsBadOptions) {
  const Workload w = MakeWorkload(20, 10, 0);
  SimOptions o = Options(w, "eldr", true);
  EXPECT_TRUE(o.refit.Validate().ok());
  o.refit.interval_us = 0;
  EXPECT_EQ(Simulate(w, o).error().code(), StatusCode::kInvalidArgument);
  o = Options(w, "eldr", true);
  o.refit.window_us = 0;
  EXPECT_EQ(Simulate(w, o).error().code(), StatusCode::kInvalidArgument);
  o = Options(w, "eldr", true);
  o.refit.max_window = 16;  // below min_requests 32: every refit would be refused
  EXPECT_EQ(Simulate(w, o).error().code(), StatusCode::kInvalidArgument);
  o = Options(w, "eldr", true);
  o.refit.fit.min_requests = 1;
  EXPECT_EQ(Simulate(w, o).error().code(), StatusCode::kInvalidArgument);
  o.refit.enabled = false;  // validated even when off: the options are wrong either way
  EXPECT_EQ(Simulate(w, o).error().code(), StatusCode::kInvalidArgument);
}

double FirstLabelShare(const std::vector<WorkloadRequest>& reqs, size_t from, size_t to) {
  int n = 0;
  for (size_t i = from; i < to; ++i) n += reqs[i].label == 0;
  return static_cast<double>(n) / static_cast<double>(to - from);
}

TEST(DriftingWorkloadTest, SharesMoveOverTheRunWhileCalibrationKeepsTheInitialMix) {
  WorkloadOptions o;
  o.kind = "task";
  o.requests = 5000;
  o.calibration = 2000;
  o.output_tokens = 2;
  o.token_patterns = 1;
  o.mix_drift = 0.8;
  auto w = MakeSyntheticWorkload(*FindModel("gpt-oss-20b"), o);
  ASSERT_TRUE(w.has_value());
  const double s0 = w->label_shares[0];
  EXPECT_NEAR(s0, 3600.0 / 11668, 1e-9);  // legal, the calibrated share
  // First and last tenth of the arrivals against the mix at their mid-points (binomial sd of a
  // share over 500 requests <= 0.022).
  const size_t tenth = w->requests.size() / 10;
  EXPECT_NEAR(FirstLabelShare(w->requests, 0, tenth), DriftedShares(w->label_shares, 0.8, 0.05)[0],
              0.07);
  const double end = FirstLabelShare(w->requests, w->requests.size() - tenth, w->requests.size());
  EXPECT_NEAR(end, DriftedShares(w->label_shares, 0.8, 0.95)[0], 0.07);
  EXPECT_GT(end, s0 + 0.4);
  EXPECT_NEAR(FirstLabelShare(w->calibration, 0, w->calibration.size()), s0, 0.035);
}

TEST(DriftingWorkloadTest, DriftedSharesInterpolateAndStayAMix) {
  const std::vector<double> s = {0.4, 0.3, 0.2, 0.1};
  EXPECT_EQ(DriftedShares(s, 0.7, 0), s);
  EXPECT_EQ(DriftedShares(s, 0, 1), s);
  const auto end = DriftedShares(s, 1, 1);
  EXPECT_DOUBLE_EQ(end[0], 1);
  for (size_t i = 1; i < end.size(); ++i) EXPECT_DOUBLE_EQ(end[i], 0);
  const auto mid = DriftedShares(s, 0.5, 0.5);  // first: 0.4 + 0.25 * 0.6 = 0.55
  EXPECT_DOUBLE_EQ(mid[0], 0.55);
  EXPECT_NEAR(std::accumulate(mid.begin(), mid.end(), 0.0), 1, 1e-12);
  EXPECT_NEAR(mid[1] / mid[2], 1.5, 1e-12);  // the others keep their ratios
}

TEST(DriftingWorkloadTest, CalibrationIsUnchangedAndBadValuesAreRejected) {
  WorkloadOptions o;
  o.requests = 200;
  o.calibration = 50;
  o.output_tokens = 4;
  o.token_patterns = 2;
  const ModelGeometry g = *FindModel("gpt-oss-20b");
  auto a = MakeSyntheticWorkload(g, o);
  ASSERT_TRUE(a.has_value());
  for (double bad : {-0.1, 1.5, std::nan("")}) {
    o.mix_drift = bad;
    EXPECT_EQ(MakeSyntheticWorkload(g, o).error().code(), StatusCode::kInvalidArgument) << bad;
  }
  // Drift changes only the evaluated requests' mix: the calibration set is the undrifted one.
  o.mix_drift = 1;
  auto d = MakeSyntheticWorkload(g, o);
  ASSERT_TRUE(d.has_value());
  ASSERT_EQ(d->calibration.size(), a->calibration.size());
  for (size_t i = 0; i < a->calibration.size(); ++i) {
    EXPECT_EQ(d->calibration[i].label, a->calibration[i].label);
    EXPECT_TRUE(
        std::ranges::equal(d->calibration[i].prefill.data(), a->calibration[i].prefill.data()));
  }
}

}  // namespace
}  // namespace eldr::sim
