// The RoutingPolicy contract, checked once for every name in PolicyNames(), and eldr-plus's load
// bound.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "eldr/policy.h"
#include "status_matchers.h"
#include "test_util.h"

namespace eldr {
namespace {

constexpr int kDecoders = 6;

using ::eldr::testing::OneHotSpace;
using ::testing::HasSubstr;

PolicyOptions OptionsFor(std::string_view name, int decoders) {
  PolicyOptions o;
  o.name = std::string(name);
  o.decoders = decoders;
  o.space = OneHotSpace(decoders);
  o.label_shares = {{"a", 0.5}, {"b", 0.3}, {"c", 0.2}};
  return o;
}

// A random view and request: loads 0-9, an availability mask that is sometimes absent,
// sometimes all zero; counts, a label, both or neither.
struct Case {
  std::vector<int64_t> load;
  std::vector<uint8_t> avail;
  ExpertCounts counts{1, kDecoders};
  RouteRequest req;
  bool any_available = true;
};

void Draw(Rng& rng, Case& c) {
  c.load.assign(kDecoders, 0);
  for (auto& l : c.load) l = static_cast<int64_t>(rng.Uniform(10));
  c.avail.clear();
  const uint64_t mask_kind = rng.Uniform(4);
  if (mask_kind > 0) {
    c.avail.resize(kDecoders);
    for (auto& a : c.avail) a = mask_kind == 3 ? 0 : static_cast<uint8_t>(rng.Uniform(2));
  }
  c.any_available = c.avail.empty() || std::count(c.avail.begin(), c.avail.end(), 0) < kDecoders;
  c.counts = ExpertCounts(1, kDecoders);
  for (int e = 0; e < kDecoders; ++e) c.counts.at(0, e) = static_cast<int32_t>(rng.Uniform(5));
  c.req = {};
  if (rng.Uniform(4) != 0) c.req.counts = &c.counts;
  static constexpr std::string_view kLabels[] = {"a", "b", "c", "unknown"};
  if (rng.Uniform(3) != 0) c.req.label = kLabels[rng.Uniform(4)];
}

class PolicyContractTest : public ::testing::TestWithParam<std::string_view> {};

TEST_P(PolicyContractTest, NeverChoosesAnUnavailableOrOutOfRangeDecoder) {
  auto p = MakePolicy(OptionsFor(GetParam(), kDecoders));
  ASSERT_TRUE(p.has_value()) << p.error().ToString();
  EXPECT_EQ((*p)->Name(), GetParam());
  EXPECT_EQ((*p)->decoders(), kDecoders);
  Rng rng(11), draw(12);
  Case c;
  int routed = 0, refused = 0;
  for (int i = 0; i < 5000; ++i) {
    Draw(draw, c);
    auto d = (*p)->Route(c.req, {c.load, c.avail}, rng);
    if (!c.any_available) {
      ASSERT_THAT(d, StatusIs(StatusCode::kUnavailable, HasSubstr("no decoder is available")))
          << "case " << i;
      ++refused;
      continue;
    }
    ASSERT_TRUE(d.has_value()) << "case " << i << ": " << d.error().ToString();
    ASSERT_GE(d->decoder, 0);
    ASSERT_LT(d->decoder, kDecoders);
    if (!c.avail.empty()) {
      ASSERT_NE(c.avail[d->decoder], 0) << "case " << i;
    }
    ++routed;
  }
  EXPECT_GT(routed, 3000);
  EXPECT_GT(refused, 500);
}

TEST_P(PolicyContractTest, TheSameSeedGivesTheSameDecisions) {
  auto a = MakePolicy(OptionsFor(GetParam(), kDecoders));
  auto b = MakePolicy(OptionsFor(GetParam(), kDecoders));
  ASSERT_TRUE(a && b);
  Rng ra(21), rb(21), draw(22);
  Case c;
  for (int i = 0; i < 2000; ++i) {
    Draw(draw, c);
    auto da = (*a)->Route(c.req, {c.load, c.avail}, ra);
    auto db = (*b)->Route(c.req, {c.load, c.avail}, rb);
    ASSERT_EQ(da.has_value(), db.has_value()) << "case " << i;
    if (!da) continue;
    ASSERT_EQ(da->decoder, db->decoder) << "case " << i;
    ASSERT_EQ(da->fallback, db->fallback) << "case " << i;
    ASSERT_EQ(da->band_size, db->band_size) << "case " << i;
  }
}

TEST_P(PolicyContractTest, RejectsAViewOfTheWrongShape) {
  auto p = MakePolicy(OptionsFor(GetParam(), kDecoders));
  ASSERT_TRUE(p.has_value());
  Rng rng(1);
  std::vector<int64_t> short_load(kDecoders - 1, 0), load(kDecoders, 0);
  std::vector<uint8_t> short_mask(kDecoders - 1, 1);
  EXPECT_EQ((*p)->Route({}, {short_load}, rng).error().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*p)->Route({}, {load, short_mask}, rng).error().code(), StatusCode::kInvalidArgument);
}

INSTANTIATE_TEST_SUITE_P(EveryPolicy, PolicyContractTest, ::testing::ValuesIn(PolicyNames()),
                         [](const auto& info) {
                           std::string n(info.param);
                           std::replace(n.begin(), n.end(), '-', '_');
                           return n;
                         });

// A policy that breaks the contract: Route turns its pick into an error instead of passing it on.
class Broken final : public RoutingPolicy {
 public:
  explicit Broken(int pick) : RoutingPolicy(3), pick_(pick) {}
  std::string_view Name() const override { return "broken"; }

 private:
  Result<RouteDecision> Choose(const RouteRequest&, const ClusterView&, Rng&) override {
    RouteDecision d;
    d.decoder = pick_;
    return d;
  }
  int pick_;
};

TEST(RoutingPolicyTest, RouteTurnsAnImpossiblePickIntoAnInternalError) {
  Rng rng(1);
  std::vector<int64_t> load(3, 0);
  std::vector<uint8_t> avail = {1, 0, 1};
  for (int pick : {-1, 3, 99}) {
    Broken p(pick);
    auto d = p.Route({}, {load}, rng);
    EXPECT_THAT(d, StatusIs(StatusCode::kInternal, HasSubstr("broken"))) << pick;
  }
  Broken to_unavailable(1);
  auto d = to_unavailable.Route({}, {load, avail}, rng);
  EXPECT_THAT(d, StatusIs(StatusCode::kInternal, HasSubstr("unavailable")));
  EXPECT_TRUE(to_unavailable.Route({}, {load}, rng).has_value());
}

TEST(EldrPlusPolicyTest, GoesToTheBestCentroidWhileItHasRoomAndNeverPastTheBound) {
  PolicyOptions o = OptionsFor("eldr-plus", 4);
  o.plus.tau = 0;
  o.plus.slack = 0.5;
  auto p = MakePolicy(o);
  ASSERT_TRUE(p.has_value()) << p.error().ToString();
  ExpertCounts c(1, 4);
  c.at(0, 2) = 10;  // best centroid 2, then 1
  c.at(0, 1) = 6;
  RouteRequest req{.counts = &c};
  Rng rng(3);
  // Loads {4, 4, 5, 3}: capacity ceil(1.5 * 17 / 4) = 7, decoder 2 has room.
  std::vector<int64_t> load = {4, 4, 5, 3};
  auto d = (*p)->Route(req, {load}, rng);
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->decoder, 2);
  EXPECT_EQ(d->band_size, 1);
  EXPECT_FALSE(d->fallback);
  // Decoder 2 at the capacity: the best eligible centroid (1) takes it.
  load = {4, 4, 7, 3};  // capacity ceil(1.5 * 19 / 4) = 8: 7 + 1 fits
  EXPECT_EQ((*p)->Route(req, {load}, rng)->decoder, 2);
  load = {2, 2, 7, 1};  // capacity ceil(1.5 * 13 / 4) = 5: decoder 2 is full
  EXPECT_EQ((*p)->Route(req, {load}, rng)->decoder, 1);
  // Requests that never finish, all preferring decoder 2: no decoder ever passes the bound, with
  // the absolute or the relative band.
  for (bool relative : {false, true}) {
    for (double slack : {0.0, 0.1, 0.5}) {
      o.plus.relative_band = relative;
      o.plus.slack = slack;
      auto q = MakePolicy(o);
      ASSERT_TRUE(q.has_value());
      std::vector<int64_t> l(4, 0);
      for (int i = 1; i <= 400; ++i) {
        auto r = (*q)->Route(req, {l}, rng);
        ASSERT_TRUE(r.has_value());
        ++l[r->decoder];
        const int64_t most = *std::max_element(l.begin(), l.end());
        ASSERT_LE(most, static_cast<int64_t>(std::ceil((1 + slack) * i / 4.0)))
            << "slack " << slack << " relative " << relative << " after " << i;
      }
      if (slack > 0) {
        EXPECT_GT(l[2], l[0]) << "locality kept under slack " << slack;
      }
    }
  }
}

TEST(EldrPlusPolicyTest, TheSquareRootSlackGrowsLikeTheSpreadOfBalancedCounts) {
  PolicyOptions o = OptionsFor("eldr-plus", 4);
  o.plus.tau = 0;
  o.plus.slack = 0.1;  // the cap on the relative room
  o.plus.sqrt_slack = 1;
  auto p = MakePolicy(o);
  ASSERT_TRUE(p.has_value()) << p.error().ToString();
  ExpertCounts c(1, 4);
  c.at(0, 2) = 10;
  RouteRequest req{.counts = &c};
  Rng rng(5);
  // Requests that never finish, all preferring decoder 2: the busiest decoder holds at most
  // ceil(m + min(0.1 m, sqrt(m))) with m the mean after placing: 10% above the mean while m is
  // under 100, then an excess growing like sqrt(m) (a relative room shrinking as 1 / sqrt(m)).
  std::vector<int64_t> l(4, 0);
  for (int i = 1; i <= 1600; ++i) {
    auto r = (*p)->Route(req, {l}, rng);
    ASSERT_TRUE(r.has_value());
    ++l[r->decoder];
    const double m = i / 4.0;
    ASSERT_LE(l[2], static_cast<int64_t>(std::ceil(m + std::min(0.1 * m, std::sqrt(m)))))
        << "after " << i;
    if (i == 200) {
      EXPECT_EQ(l[2], 55);  // m = 50: the 10% cap binds (sqrt would allow 57)
    }
  }
  // The bound is reached: at m = 400, 20 above the mean (5%), where the cap alone allows 40.
  EXPECT_EQ(l[2], 420);
  o.plus.sqrt_slack = -1;
  EXPECT_THAT(o.Validate(), StatusIs(StatusCode::kInvalidArgument, HasSubstr("sqrt_slack")));
  o.plus.sqrt_slack = std::nan("");
  EXPECT_THAT(o.Validate(), StatusIs(StatusCode::kInvalidArgument, HasSubstr("sqrt_slack")));
}

TEST(EldrPlusPolicyTest, ValidatesItsOptions) {
  PolicyOptions o = OptionsFor("eldr-plus", 4);
  EXPECT_TRUE(o.Validate().ok());
  o.plus.tau = 2.5;  // wider than any cosine spread
  EXPECT_EQ(o.Validate().code(), StatusCode::kInvalidArgument);
  o.plus.tau = 2;
  EXPECT_TRUE(o.Validate().ok());
  o.plus.tau = 0.1;
  for (double bad : {-0.1, std::nan(""), double{INFINITY}}) {
    o.plus.slack = bad;
    EXPECT_EQ(o.Validate().code(), StatusCode::kInvalidArgument) << bad;
    o.plus.slack = 0.1;
    o.plus.tau = bad;
    EXPECT_EQ(o.Validate().code(), StatusCode::kInvalidArgument) << bad;
    o.plus.tau = 0.1;
  }
  o.space = nullptr;
  EXPECT_EQ(o.Validate().code(), StatusCode::kInvalidArgument);
  o.space = OneHotSpace(3);
  EXPECT_EQ(o.Validate().code(), StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace eldr
