// Online refitting (refit.h): centroids follow a drifted window, decoders keep their identity,
// and a refit that cannot be trusted is refused so the caller keeps the old space.
#include "eldr/refit.h"

#include <gtest/gtest.h>

#include <cmath>
#include <numeric>

#include "eldr/rng.h"
#include "status_matchers.h"

namespace eldr {
namespace {

using ::testing::HasSubstr;

constexpr int kK = 4;

// A space over layer 0 of GPT-OSS-20B (32 experts): centroid j on experts 8j .. 8j+3.
std::shared_ptr<const SignatureSpace> Space(const ModelGeometry& g) {
  SignatureSpaceSpec s;
  s.model = g.name;
  s.layers = g.moe_layers;
  s.experts = g.experts;
  s.layer_mask = {0};
  s.transform = SignatureTransform::kCount;
  for (int j = 0; j < kK; ++j) {
    std::vector<float> c(g.experts, 0.0f);
    for (int e = 8 * j; e < 8 * j + 4; ++e) c[e] = 1;
    s.centroids.push_back(c);
  }
  return *SignatureSpace::Build(s);
}

// n requests of cluster j = i % kK using experts 8j + shift .. 8j + shift + 3, with noise.
std::vector<ExpertCounts> Window(const ModelGeometry& g, int n, int shift, uint64_t seed) {
  Rng rng(seed);
  std::vector<ExpertCounts> w;
  for (int i = 0; i < n; ++i) {
    ExpertCounts c(g.moe_layers, g.experts);
    const int j = i % kK;
    for (int e = 8 * j + shift; e < 8 * j + shift + 4; ++e) {
      c.at(0, e) = 5 + static_cast<uint32_t>(rng.Uniform(5));
    }
    c.at(0, rng.Uniform(g.experts)) += 1;
    w.push_back(std::move(c));
  }
  return w;
}

double Cos(std::span<const float> a, std::span<const float> b) {
  double dot = 0, na = 0, nb = 0;
  for (size_t t = 0; t < a.size(); ++t) {
    dot += a[t] * b[t];
    na += a[t] * a[t];
    nb += b[t] * b[t];
  }
  return dot / std::sqrt(na * nb);
}

TEST(RefitTest, CentroidsFollowTheDriftAndDecodersKeepTheirRegion) {
  const ModelGeometry g = *FindModel("gpt-oss-20b");
  auto space = Space(g);
  auto r = Refit(*space, Window(g, 200, 2, 7));
  ASSERT_THAT(r, IsOk());
  const RefitReport& rep = r->report;
  EXPECT_EQ(rep.n, 200);
  EXPECT_EQ(r->space->k(), kK);
  EXPECT_EQ(r->space->spec().layer_mask, space->spec().layer_mask);
  EXPECT_GT(rep.new_score, rep.old_score + 0.1) << "the drifted window fits the new space better";
  EXPECT_GT(rep.centroid_movement, 0.05);
  std::vector<int> perm = rep.decoder_of_cluster;
  std::sort(perm.begin(), perm.end());
  EXPECT_EQ(perm, (std::vector<int>{0, 1, 2, 3}));
  for (int i = 0; i < kK; ++i) {
    const auto& now = r->space->spec().centroids[i];
    // Decoder i now covers experts 8i+2 .. 8i+5, the drifted version of its old region.
    for (int e = 0; e < g.experts; ++e) {
      const bool in = e >= 8 * i + 2 && e < 8 * i + 6;
      if (in) {
        EXPECT_GT(now[e], 0.3f) << "decoder " << i << " expert " << e;
      } else {
        EXPECT_LT(now[e], 0.2f) << "decoder " << i << " expert " << e;
      }
    }
    for (int j = 0; j < kK; ++j) {
      if (j == i) continue;
      EXPECT_GT(Cos(space->spec().centroids[i], now), Cos(space->spec().centroids[j], now));
    }
  }
}

TEST(RefitTest, AStableWindowBarelyMovesAnything) {
  const ModelGeometry g = *FindModel("gpt-oss-20b");
  auto space = Space(g);
  auto r = Refit(*space, Window(g, 200, 0, 9));
  ASSERT_TRUE(r.has_value());
  EXPECT_LT(r->report.centroid_movement, 0.05);
  EXPECT_LT(r->report.churn, 0.05);
  for (int i = 0; i < kK; ++i) EXPECT_EQ(r->report.decoder_of_cluster[i], i);
}

TEST(RefitTest, TooFewSignaturesOrWrongShapesAreRefused) {
  const ModelGeometry g = *FindModel("gpt-oss-20b");
  auto space = Space(g);
  RefitOptions o;
  o.min_requests = 64;
  auto few = Refit(*space, Window(g, 40, 0, 1), o);
  EXPECT_THAT(few, StatusIs(StatusCode::kFailedPrecondition, HasSubstr("40 usable")));
  // Requests without a pick on the masked layer do not count.
  std::vector<ExpertCounts> w = Window(g, 60, 0, 1);
  for (int i = 0; i < 10; ++i) {
    ExpertCounts c(g.moe_layers, g.experts);
    c.at(5, 1) = 3;
    w.push_back(c);
  }
  o.min_requests = 61;
  auto skipped = Refit(*space, w, o);
  ASSERT_THAT(skipped, StatusIs(StatusCode::kFailedPrecondition, HasSubstr("60 usable")));
  std::vector<ExpertCounts> bad = {ExpertCounts(48, 128)};
  auto shape = Refit(*space, bad);
  ASSERT_THAT(shape, StatusIs(StatusCode::kInvalidArgument,
                              HasSubstr("counts shaped [48][128], the space is for [24][32]")));
}

TEST(RefitTest, ARebalanceIsNotMistakenForADegenerateFit) {
  const ModelGeometry g = *FindModel("gpt-oss-20b");
  auto space = Space(g);
  // 85% of the window in cluster 0: the balanced fit spreads it over more decoders. Its mean
  // best cosine falls (the grown domain is split), but the balanced objective it optimises
  // rises, and that is what the guard judges.
  std::vector<ExpertCounts> w;
  const auto all = Window(g, 800, 0, 3);
  for (size_t i = 0; i < all.size(); ++i) {
    if (i % kK == 0 || i % 20 < 3) w.push_back(all[i]);
  }
  RefitOptions o;
  o.max_score_loss = 0;
  auto r = Refit(*space, w, o);
  ASSERT_THAT(r, IsOk());
  EXPECT_GE(r->report.new_balanced, r->report.old_balanced);
  EXPECT_LT(r->report.new_score, r->report.old_score);
  o.max_score_loss = -1;
  EXPECT_EQ(Refit(*space, w, o).error().code(), StatusCode::kInvalidArgument);
}

TEST(RefitTest, AWindowDominatedByOneRepeatedPromptIsDegenerate) {
  const ModelGeometry g = *FindModel("gpt-oss-20b");
  auto space = Space(g);
  const ExpertCounts one = Window(g, 1, 0, 5)[0];
  // Only the repeated prompt: every decoder would get its centroid.
  EXPECT_THAT(Refit(*space, std::vector<ExpertCounts>(80, one)),
              StatusIs(StatusCode::kFailedPrecondition,
                       HasSubstr("the window's 80 signatures hold 1 distinct ones")));
  // With a single other request the warm start still deals the copies out alike.
  std::vector<ExpertCounts> w(79, one);
  w.push_back(Window(g, 1, 0, 6)[0]);
  EXPECT_THAT(Refit(*space, w),
              StatusIs(StatusCode::kFailedPrecondition, HasSubstr("would get the same centroid")));
  // Half of the window: the copies fill one cluster (a hot prompt given a decoder) and spill into
  // another beside other requests. No two centroids coincide, and the refit goes through.
  w = Window(g, 40, 0, 6);
  w.insert(w.end(), 40, one);
  EXPECT_THAT(Refit(*space, w), IsOk());
  // A few copies are just traffic.
  w = Window(g, 76, 0, 6);
  w.insert(w.end(), 4, one);
  EXPECT_THAT(Refit(*space, w), IsOk());
  RefitOptions o;
  o.max_centroid_cosine = 0;
  EXPECT_THAT(Refit(*space, w, o),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("max_centroid_cosine")));
}

// Warm-started balanced k-means never lowers its own objective: on random windows the guard
// (max_score_loss = 0) never fires.
TEST(RefitTest, TheBalancedObjectiveNeverFallsSoTheGuardStaysQuiet) {
  const ModelGeometry g = *FindModel("gpt-oss-20b");
  auto space = Space(g);
  Rng rng(5);
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<ExpertCounts> w;
    for (int i = 0; i < 120; ++i) {
      ExpertCounts c(g.moe_layers, g.experts);
      for (int e = 0; e < 6; ++e) c.at(0, rng.Uniform(g.experts)) += 1 + rng.Uniform(4);
      w.push_back(std::move(c));
    }
    RefitOptions o;
    o.max_score_loss = 0;
    auto r = Refit(*space, w, o);
    ASSERT_TRUE(r.has_value()) << "trial " << trial << ": " << r.error().message();
    EXPECT_GE(r->report.new_balanced, r->report.old_balanced - 1e-9);
  }
}

}  // namespace
}  // namespace eldr
