#include "eldr/policy.h"

#include <gtest/gtest.h>

#include <cmath>
#include <thread>

#include "eldr/load_tracker.h"
#include "status_matchers.h"
#include "test_util.h"

namespace eldr {
namespace {

using ::testing::HasSubstr;

std::unique_ptr<RoutingPolicy> Make(const std::string& name, int n) {
  PolicyOptions o;
  o.name = name;
  o.decoders = n;
  auto p = MakePolicy(o);
  EXPECT_TRUE(p.has_value()) << p.error().ToString();
  return std::move(*p);
}

int RouteOnce(RoutingPolicy& p, const std::vector<int64_t>& load, Rng& rng,
              const RouteRequest& req = {}, std::vector<uint8_t> avail = {}) {
  ClusterView v{load, avail};
  auto d = p.Route(req, v, rng);
  EXPECT_TRUE(d.has_value()) << d.error().ToString();
  return d ? d->decoder : -1;
}

TEST(PolicyTest, RoundRobinCyclesAndSkipsUnavailable) {
  auto p = Make("rr", 3);
  Rng rng(1);
  std::vector<int64_t> load(3, 0);
  std::vector<int> seq;
  for (int i = 0; i < 6; ++i) seq.push_back(RouteOnce(*p, load, rng));
  EXPECT_EQ(seq, (std::vector<int>{0, 1, 2, 0, 1, 2}));
  EXPECT_EQ(RouteOnce(*p, load, rng, {}, {1, 0, 1}), 0);
  EXPECT_EQ(RouteOnce(*p, load, rng, {}, {1, 0, 1}), 2);
}

TEST(PolicyTest, RandomIsUniform) {
  auto p = Make("random", 8);
  Rng rng(2);
  std::vector<int64_t> load(8, 0);
  std::vector<int> hits(8, 0);
  const int kN = 80000;
  for (int i = 0; i < kN; ++i) ++hits[RouteOnce(*p, load, rng)];
  for (int h : hits) EXPECT_NEAR(h / double(kN), 1.0 / 8, 0.01);  // ~6 sigma
}

TEST(PolicyTest, JsqPicksTheMinimumAndBreaksTiesUniformly) {
  auto p = Make("jsq", 5);
  Rng rng(3);
  std::vector<int64_t> load = {4, 1, 3, 1, 1};
  std::vector<int> hits(5, 0);
  const int kN = 60000;
  for (int i = 0; i < kN; ++i) ++hits[RouteOnce(*p, load, rng)];
  EXPECT_EQ(hits[0] + hits[2], 0);
  for (int i : {1, 3, 4}) EXPECT_NEAR(hits[i] / double(kN), 1.0 / 3, 0.012);
}

TEST(PolicyTest, P2cMatchesItsClosedFormSelectionProbabilities) {
  // Distinct loads 0 < 1 < 2 < 3: decoder of rank r (0 = least loaded) wins when it is sampled
  // and the other sample is more loaded: P = 2 (n-1-r) / (n (n-1)).
  auto p = Make("p2c", 4);
  Rng rng(4);
  std::vector<int64_t> load = {3, 0, 2, 1};
  const int rank[4] = {3, 0, 2, 1};
  std::vector<int> hits(4, 0);
  const int kN = 120000;
  for (int i = 0; i < kN; ++i) ++hits[RouteOnce(*p, load, rng)];
  for (int i = 0; i < 4; ++i)
    EXPECT_NEAR(hits[i] / double(kN), 2.0 * (3 - rank[i]) / 12.0, 0.01) << "decoder " << i;
  // Equal loads: the first sample wins, so it is uniform.
  std::vector<int64_t> flat(4, 2);
  std::vector<int> fh(4, 0);
  for (int i = 0; i < kN; ++i) ++fh[RouteOnce(*p, flat, rng)];
  for (int h : fh) EXPECT_NEAR(h / double(kN), 0.25, 0.01);
}

std::unique_ptr<RoutingPolicy> MakeEldr(int k, double tau) {
  PolicyOptions o;
  o.decoders = k;
  o.tau = tau;
  o.space = testing::OneHotSpace(k);
  return std::move(*MakePolicy(o));
}

TEST(EldrPolicyTest, TauZeroIsPureLocalityAndLargeTauIsJsqWithLowestIndexTies) {
  Rng rng(5);
  ExpertCounts c(1, 4);
  c.at(0, 2) = 10;  // closest to centroid 2
  c.at(0, 1) = 6;   // then centroid 1
  RouteRequest req{.counts = &c};
  std::vector<int64_t> load = {0, 0, 9, 5};
  auto local = MakeEldr(4, 0.0);
  auto d = local->Route(req, {load}, rng);
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->decoder, 2);  // best centroid, however loaded
  EXPECT_EQ(d->band_size, 1);
  EXPECT_FALSE(d->fallback);
  auto jsq = MakeEldr(4, 1.0);
  d = jsq->Route(req, {load}, rng);
  EXPECT_EQ(d->decoder, 0);  // everyone in the band; 0 and 1 tie at load 0 -> lowest index
  EXPECT_EQ(d->band_size, 4);
}

TEST(EldrPolicyTest, BandContainsExactlyTheCentroidsWithinTau) {
  Rng rng(6);
  auto space = testing::OneHotSpace(4);
  ExpertCounts c(1, 4);
  c.at(0, 2) = 10;
  c.at(0, 1) = 6;
  std::vector<float> scores(4);
  ASSERT_TRUE(space->Score(c, scores).ok());
  const float best = *std::max_element(scores.begin(), scores.end());
  for (double tau : {0.0, 0.05, 0.1, 0.2, 0.3, 0.6}) {
    int expected_band = 0;
    int best_pick = -1;
    std::vector<int64_t> load = {3, 2, 7, 1};
    for (int j = 0; j < 4; ++j) {
      if (scores[j] >= best - static_cast<float>(tau)) {
        ++expected_band;
        if (best_pick < 0 || load[j] < load[best_pick]) best_pick = j;
      }
    }
    auto p = MakeEldr(4, tau);
    RouteRequest req{.counts = &c};
    auto d = p->Route(req, {load}, rng);
    ASSERT_TRUE(d.has_value());
    EXPECT_EQ(d->band_size, expected_band) << "tau " << tau;
    EXPECT_EQ(d->decoder, best_pick) << "tau " << tau;
  }
}

TEST(EldrPolicyTest, BandMinWidensANarrowBandToTheBestAvailableScores) {
  Rng rng(7);
  ExpertCounts c(1, 4);
  c.at(0, 2) = 10;  // best: centroid 2, then 1
  c.at(0, 1) = 6;
  RouteRequest req{.counts = &c};
  PolicyOptions o;
  o.decoders = 4;
  o.tau = 0.0;
  o.band_min = 2;
  o.space = testing::OneHotSpace(4);
  auto p = std::move(*MakePolicy(o));
  std::vector<int64_t> load = {0, 1, 9, 0};
  auto d = p->Route(req, {load}, rng);
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->band_size, 2);
  EXPECT_EQ(d->decoder, 1);  // the less loaded of the two best, not the idle decoders 0 and 3
  // Widening counts only available decoders: with 1 down, the band is {2, next best of 0, 3}.
  std::vector<uint8_t> avail = {1, 0, 1, 1};
  d = p->Route(req, {load, avail}, rng);
  ASSERT_TRUE(d.has_value());
  EXPECT_NE(d->decoder, 1);
  EXPECT_GE(d->band_size, 2);
  // A band already wider than band_min is left alone.
  o.tau = 1.0;
  auto wide = std::move(*MakePolicy(o));
  EXPECT_EQ(wide->Route(req, {load}, rng)->band_size, 4);
  o.band_min = 0;
  EXPECT_THAT(MakePolicy(o),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("band_min must be >= 1")));
}

TEST(EldrPolicyTest, FallsBackToJsqWithoutASignatureAndSkipsUnavailable) {
  Rng rng(7);
  auto p = MakeEldr(4, 0.1);
  std::vector<int64_t> load = {2, 1, 3, 4};
  auto d = p->Route({}, {load}, rng);
  ASSERT_TRUE(d.has_value());
  EXPECT_TRUE(d->fallback);
  EXPECT_EQ(d->decoder, 1);
  ExpertCounts zero(1, 4);
  RouteRequest req{.counts = &zero};
  d = p->Route(req, {load}, rng);
  EXPECT_TRUE(d->fallback);
  ExpertCounts c(1, 4);
  c.at(0, 2) = 10;
  req.counts = &c;
  std::vector<uint8_t> avail = {1, 1, 0, 1};
  d = p->Route(req, {load, avail}, rng);
  ASSERT_TRUE(d.has_value());
  EXPECT_NE(d->decoder, 2);
  EXPECT_FALSE(d->fallback);
  std::vector<uint8_t> none(4, 0);
  EXPECT_EQ(p->Route(req, {load, none}, rng).error().code(), StatusCode::kUnavailable);
}

TEST(PolicyOptionsTest, ValidatesNameTauSpaceAndDecoderCount) {
  PolicyOptions o;
  o.decoders = 4;
  o.space = testing::OneHotSpace(4);
  EXPECT_TRUE(o.Validate().ok());
  for (double bad : {-0.1, std::nan(""), double{INFINITY}, 2.5}) {
    o.tau = bad;
    EXPECT_THAT(o.Validate(),
                StatusIs(StatusCode::kInvalidArgument, HasSubstr("tau must be in [0, 2]")))
        << bad;
  }
  o.tau = 0.1;
  o.decoders = 5;
  EXPECT_THAT(o.Validate(), StatusIs(StatusCode::kFailedPrecondition,
                                     HasSubstr("4 centroids but there are 5 decoders")));
  o.name = "least-loaded";
  EXPECT_THAT(o.Validate(),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("unknown policy 'least-loaded'")));
  o.name = "domain";
  EXPECT_THAT(
      o.Validate(),
      StatusIs(StatusCode::kInvalidArgument,
               HasSubstr("policy 'domain' needs the calibration label mix")));  // no label mix
  auto rr = Make("rr", 2);
  Rng rng(1);
  std::vector<int64_t> three(3, 0);
  EXPECT_EQ(rr->Route({}, {three}, rng).error().code(), StatusCode::kInvalidArgument);
}

TEST(DomainPolicyTest, PoolsFollowTheLabelMixAsSpecified) {
  // Shares of the paper's task mix: legal 3600, code 2779, math 2744, medical 2545 (K = 16).
  std::vector<LabelShare> mix = {
      {"legal", 3600}, {"code", 2779}, {"math", 2744}, {"medical", 2545}};
  auto pools = ComputeDomainPools(mix, 16);
  ASSERT_TRUE(pools.has_value());
  ASSERT_EQ(pools->labels, (std::vector<std::string>{"legal", "code", "math", "medical"}));
  // floor(16*share) = 4, 3, 3, 3 (sum 13); fractions .93, .81, .76, .49 take the three left.
  std::vector<int> sizes;
  for (auto [b, e] : pools->ranges) sizes.push_back(e - b);
  EXPECT_EQ(sizes, (std::vector<int>{5, 4, 4, 3}));
  // Rare labels share a misc pool.
  std::vector<LabelShare> skew = {{"en", 60}, {"zh", 15}, {"ru", 4}, {"fr", 3}, {"de", 2}};
  auto p2 = ComputeDomainPools(skew, 8);
  ASSERT_TRUE(p2.has_value());
  EXPECT_EQ(p2->labels.back(), "");
  int total = 0;
  for (auto [b, e] : p2->ranges) {
    EXPECT_GT(e, b);
    total += e - b;
  }
  EXPECT_EQ(total, 8);
}

TEST(DomainPolicyTest, RoutesInsideThePoolAndFallsBackWithoutALabel) {
  PolicyOptions o;
  o.name = "domain";
  o.decoders = 4;
  o.label_shares = {{"a", 0.5}, {"b", 0.5}};
  auto p = std::move(*MakePolicy(o));
  Rng rng(9);
  std::vector<int64_t> load = {5, 0, 0, 9};
  for (int i = 0; i < 50; ++i) {
    auto d = p->Route({.label = "a"}, {load}, rng);
    ASSERT_TRUE(d.has_value());
    EXPECT_EQ(d->decoder, 1);  // pool a = {0, 1}
    d = p->Route({.label = "b"}, {load}, rng);
    EXPECT_EQ(d->decoder, 2);  // pool b = {2, 3}
  }
  auto d = p->Route({}, {load}, rng);
  EXPECT_TRUE(d->fallback);
}

TEST(LoadTrackerTest, TicketsCountOutExactlyOnce) {
  LoadTracker t(3);
  {
    auto a = t.Acquire(1);
    auto b = t.Acquire(1);
    EXPECT_EQ(t.InFlight(1), 2);
    a.Release();
    a.Release();  // idempotent
    EXPECT_EQ(t.InFlight(1), 1);
    LoadTracker::Ticket moved = std::move(b);
    EXPECT_FALSE(b.active());
    EXPECT_EQ(t.InFlight(1), 1);
  }
  EXPECT_EQ(t.InFlight(1), 0);
  EXPECT_EQ(t.Total(), 0);
}

TEST(LoadTrackerTest, ConcurrentAcquireReleaseReturnsToZero) {
  LoadTracker t(4);
  std::vector<std::thread> th;
  for (int w = 0; w < 4; ++w) {
    th.emplace_back([&, w] {
      std::vector<LoadTracker::Ticket> held;
      for (int i = 0; i < 20000; ++i) {
        held.push_back(t.Acquire((w + i) % 4));
        if (held.size() > 8) held.erase(held.begin());
      }
    });
  }
  for (auto& x : th) x.join();
  EXPECT_EQ(t.Total(), 0);
}

}  // namespace
}  // namespace eldr
