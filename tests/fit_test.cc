#include "eldr/fit.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "eldr/calibration.h"
#include "eldr/rng.h"
#include "eldr/sha256.h"
#include "reference/hungarian.h"
#include "status_matchers.h"

namespace eldr {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

double Objective(const std::vector<double>& cost, const std::vector<int>& a, int k) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += cost[i * k + a[i]];
  return s;
}

TEST(CapacitatedAssignTest, MatchesHungarianReferenceOnRandomInstances) {
  Rng rng(7);
  for (int trial = 0; trial < 300; ++trial) {
    const int n = 1 + static_cast<int>(rng.Uniform(24));
    const int k = 1 + static_cast<int>(rng.Uniform(6));
    const int min_cap = (n + k - 1) / k;
    const int cap = min_cap + static_cast<int>(rng.Uniform(3));
    std::vector<double> cost(static_cast<size_t>(n) * k);
    // Mix continuous costs with coarse integer ones to exercise ties.
    const bool coarse = trial % 3 == 0;
    for (double& c : cost)
      c = coarse ? static_cast<double>(rng.Uniform(4)) : rng.UniformDouble() * 2 - 1;
    auto got = CapacitatedAssign(cost, n, k, cap);
    ASSERT_THAT(got, IsOk());
    std::vector<int> size(k, 0);
    for (int a : *got) {
      ASSERT_GE(a, 0);
      ASSERT_LT(a, k);
      ++size[a];
    }
    for (int s : size) EXPECT_LE(s, cap);
    std::vector<std::vector<double>> slots(n, std::vector<double>(static_cast<size_t>(k) * cap));
    for (int i = 0; i < n; ++i)
      for (int s = 0; s < k * cap; ++s) slots[i][s] = cost[static_cast<size_t>(i) * k + s / cap];
    auto ref = reference::Hungarian(slots);
    std::vector<int> ref_assign(n);
    for (int i = 0; i < n; ++i) ref_assign[i] = ref[i] / cap;
    EXPECT_NEAR(Objective(cost, *got, k), Objective(cost, ref_assign, k), 1e-9)
        << "n=" << n << " k=" << k << " cap=" << cap << " trial=" << trial;
  }
}

TEST(CapacitatedAssignTest, RejectsInfeasibleCapacityAndBadShapes) {
  std::vector<double> cost(10 * 3, 0.0);
  EXPECT_THAT(
      CapacitatedAssign(cost, 10, 3, 3),
      StatusIs(
          StatusCode::kInvalidArgument,
          HasSubstr("3 clusters of capacity 3 cannot hold 10 points")));  // 9 slots for 10 points
  EXPECT_THAT(CapacitatedAssign(cost, 9, 3, 4),
              StatusIs(StatusCode::kInvalidArgument,
                       HasSubstr("cost has 30 entries, n*k = 27")));  // wrong cost size
  EXPECT_TRUE(CapacitatedAssign(cost, 10, 3, 4).has_value());
}

TEST(CapacitatedAssignTest, EveryoneWantsOneClusterStillBalanced) {
  const int n = 100, k = 4, cap = 25;
  std::vector<double> cost(n * k, 1.0);
  for (int i = 0; i < n; ++i) cost[i * k] = 0.0;  // cluster 0 is everybody's favourite
  auto a = CapacitatedAssign(cost, n, k, cap);
  ASSERT_TRUE(a.has_value());
  std::vector<int> size(k, 0);
  for (int x : *a) ++size[x];
  EXPECT_EQ(size, (std::vector<int>{25, 25, 25, 25}));
}

TEST(SpearmanTest, KnownValues) {
  std::vector<double> a = {1, 2, 3, 4, 5};
  std::vector<double> up = {2, 4, 6, 8, 100}, down = {5, 4, 3, 2, 1};
  EXPECT_NEAR(Spearman(a, up), 1.0, 1e-12);
  EXPECT_NEAR(Spearman(a, down), -1.0, 1e-12);
  // Ties use average ranks: ranks of b are {1.5, 1.5, 3, 4, 5}.
  std::vector<double> b = {7, 7, 8, 9, 10};
  EXPECT_NEAR(Spearman(a, b), 0.9746794344808963, 1e-12);
  std::vector<double> flat = {3, 3, 3, 3, 3};
  EXPECT_TRUE(std::isnan(Spearman(a, flat)));
}

// Points drawn around `k` planted unit directions in d dimensions.
std::vector<float> Planted(int n, int d, int k, uint64_t seed, std::vector<int>* truth) {
  Rng rng(seed);
  std::vector<float> centers(static_cast<size_t>(k) * d, 0.0f);
  for (int j = 0; j < k; ++j)
    for (int t = 0; t < d; ++t) centers[j * d + t] = (t % k == j) ? 1.0f : 0.05f;
  std::vector<float> x(static_cast<size_t>(n) * d);
  truth->resize(n);
  for (int i = 0; i < n; ++i) {
    const int j = i % k;
    (*truth)[i] = j;
    double n2 = 0;
    for (int t = 0; t < d; ++t) {
      float v = centers[j * d + t] + 0.3f * static_cast<float>(rng.UniformDouble());
      x[static_cast<size_t>(i) * d + t] = v;
      n2 += double{v} * v;
    }
    for (int t = 0; t < d; ++t)
      x[static_cast<size_t>(i) * d + t] /= static_cast<float>(std::sqrt(n2));
  }
  return x;
}

TEST(SphericalKMeansTest, BalancedRecoversPlantedClustersWithCapacity) {
  std::vector<int> truth;
  const int n = 400, d = 32, k = 4;
  auto x = Planted(n, d, k, 3, &truth);
  auto c = SphericalKMeans(x, n, d, k, ClusterAlgo::kBalanced, 1, 50);
  ASSERT_TRUE(c.has_value());
  EXPECT_TRUE(c->converged);
  // Each found cluster maps to exactly one planted cluster.
  std::vector<std::vector<int>> m(k, std::vector<int>(k, 0));
  for (int i = 0; i < n; ++i) ++m[c->assignment[i]][truth[i]];
  for (int j = 0; j < k; ++j) EXPECT_EQ(*std::max_element(m[j].begin(), m[j].end()), n / k);
}

TEST(SphericalKMeansTest, BalancedNeverExceedsCeilNOverKEvenOnSkewedData) {
  std::vector<int> truth;
  const int n = 301, d = 16, k = 7;
  auto x = Planted(n, d, 2, 5, &truth);  // two real modes, seven clusters
  for (uint64_t seed : {1, 2, 3}) {
    auto c = SphericalKMeans(x, n, d, k, ClusterAlgo::kBalanced, seed, 30);
    ASSERT_TRUE(c.has_value());
    std::vector<int> size(k, 0);
    for (int a : c->assignment) ++size[a];
    for (int s : size) EXPECT_LE(s, (n + k - 1) / k);
    auto plain = SphericalKMeans(x, n, d, k, ClusterAlgo::kPlain, seed, 30);
    ASSERT_TRUE(plain.has_value());
    std::vector<int> psize(k, 0);
    for (int a : plain->assignment) ++psize[a];
    // Plain k-means follows the two modes and is far from balanced.
    EXPECT_GT(*std::max_element(psize.begin(), psize.end()), (n + k - 1) / k);
  }
}

TEST(SphericalKMeansTest, DeterministicForASeed) {
  std::vector<int> truth;
  auto x = Planted(200, 24, 3, 9, &truth);
  auto a = SphericalKMeans(x, 200, 24, 5, ClusterAlgo::kBalanced, 42, 50);
  auto b = SphericalKMeans(x, 200, 24, 5, ClusterAlgo::kBalanced, 42, 50);
  ASSERT_TRUE(a && b);
  EXPECT_EQ(a->assignment, b->assignment);
  EXPECT_EQ(a->centroids, b->centroids);
}

TEST(SphericalKMeansTest, RejectsBadShapes) {
  std::vector<float> x(10, 1.0f);
  EXPECT_THAT(SphericalKMeans(x, 5, 2, 6, ClusterAlgo::kBalanced, 1, 5),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("need 1 <= k <= n (k = 6, n = 5)")));
  EXPECT_THAT(SphericalKMeans(x, 5, 3, 2, ClusterAlgo::kBalanced, 1, 5),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("data has 10 values, n*d = 15")));
}

// Synthetic calibration set: layers 0..informative-1 carry the request's domain in both prefill
// and decode; the other layers are the same noise for every domain in prefill and unrelated
// noise in decode. Greedy selection should keep informative layers and peak before all layers.
std::vector<CalibrationRequest> SyntheticCalibration(const ModelGeometry& g, int n, int informative,
                                                     uint64_t seed) {
  Rng rng(seed);
  std::vector<CalibrationRequest> out;
  for (int i = 0; i < n; ++i) {
    CalibrationRequest r;
    const int dom = i % 4;
    r.label = "d" + std::to_string(dom);
    r.prefill = ExpertCounts(g.moe_layers, g.experts);
    r.decode = ExpertCounts(g.moe_layers, g.experts);
    for (int l = 0; l < g.moe_layers; ++l) {
      for (int t = 0; t < 20; ++t) {
        int e;
        if (l < informative) {
          e = static_cast<int>((dom * g.experts / 4 + rng.Uniform(g.experts / 4)) % g.experts);
          r.prefill.at(l, e) += 1;
          r.decode.at(l, (e + static_cast<int>(rng.Uniform(2))) % g.experts) += 2;
        } else {
          r.prefill.at(l, static_cast<int>(rng.Uniform(g.experts))) += 1;
          r.decode.at(l, static_cast<int>(rng.Uniform(g.experts))) += 1;
        }
      }
    }
    out.push_back(std::move(r));
  }
  return out;
}

TEST(FitTest, GreedyMaskKeepsInformativeLayersAndPeaksBeforeAll) {
  ModelGeometry g = *FindModel("olmoe-1b-7b");  // 16 layers x 64 experts
  auto reqs = SyntheticCalibration(g, 200, 4, 11);
  FitOptions o;
  o.k = 4;
  o.rho_pairs = 4000;
  auto r = Fit(reqs, g, o);
  ASSERT_THAT(r, IsOk());
  const auto& rep = r->report;
  ASSERT_EQ(rep.rho_path.size(), 16u);
  EXPECT_GT(rep.peak_rho, rep.all_layers_rho);
  for (int l = 0; l < 4; ++l) {
    EXPECT_TRUE(std::find(rep.layer_mask.begin(), rep.layer_mask.end(), l) != rep.layer_mask.end())
        << "informative layer " << l << " missing from the mask";
  }
  EXPECT_LT(rep.layer_mask.size(), 16u);
  // Balanced clusters: each <= ceil(200/4) and the four domains separate.
  for (int s : rep.cluster_sizes) EXPECT_LE(s, 50);
  EXPECT_EQ(r->space->k(), 4);
  EXPECT_EQ(r->space->spec().n_fit, 200);
}

TEST(FitTest, WithoutDecodeCountsUsesAllLayers) {
  ModelGeometry g = *FindModel("olmoe-1b-7b");
  auto reqs = SyntheticCalibration(g, 40, 4, 2);
  for (auto& r : reqs) r.decode = ExpertCounts();
  FitOptions o;
  o.k = 4;
  auto r = Fit(reqs, g, o);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->report.layer_mask.size(), 16u);
  EXPECT_TRUE(std::isnan(r->report.peak_rho));
}

TEST(FitTest, AFixedMaskIsKeptAndAnInvalidOneRefused) {
  ModelGeometry g = *FindModel("olmoe-1b-7b");
  auto reqs = SyntheticCalibration(g, 40, 4, 2);
  for (auto& r : reqs) r.decode = ExpertCounts();  // a capture: no decode counts
  FitOptions o;
  o.k = 4;
  o.fixed_mask = {1, 5, 9};
  auto r = Fit(reqs, g, o);
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->report.layer_mask, o.fixed_mask);
  EXPECT_EQ(r->space->spec().layer_mask, o.fixed_mask);
  EXPECT_EQ(r->space->dims(), 3 * g.experts);
  for (std::vector<int> bad : {std::vector<int>{3, 2}, {0, 16}, {-1}, {4, 4}}) {
    o.fixed_mask = bad;
    auto b = Fit(reqs, g, o);
    EXPECT_THAT(b, StatusIs(StatusCode::kInvalidArgument, HasSubstr("fixed layer mask")));
  }
}

TEST(FitTest, RejectsWrongShapesAndTooFewRequests) {
  ModelGeometry g = *FindModel("olmoe-1b-7b");
  auto reqs = SyntheticCalibration(g, 10, 4, 2);
  FitOptions o;
  o.k = 16;
  EXPECT_THAT(Fit(reqs, g, o),
              StatusIs(StatusCode::kInvalidArgument,
                       HasSubstr("10 calibration requests cannot fill k = 16 clusters")));
  o.k = 2;
  reqs[3].prefill = ExpertCounts(3, 3);
  auto bad = Fit(reqs, g, o);
  ASSERT_THAT(bad, StatusIs(StatusCode::kInvalidArgument,
                            AllOf(HasSubstr("request 3"), HasSubstr("prefill counts are 3x3"))));
}

// One prompt repeated: every expert it picks is picked by every request, so every IDF weight is
// 0 and no signature is left; the error says why and what to do, and --transform count works.
TEST(FitTest, IdenticalPromptsExplainTheZeroIdf) {
  ModelGeometry g = *FindModel("olmoe-1b-7b");
  auto reqs = SyntheticCalibration(g, 12, 4, 2);
  for (auto& r : reqs) r = reqs[0];
  FitOptions o;
  o.k = 2;
  EXPECT_THAT(Fit(reqs, g, o),
              StatusIs(StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("12 requests picked only experts that every request picks"),
                             HasSubstr("--transform count"))));
  o.transform = SignatureTransform::kCount;
  EXPECT_THAT(Fit(reqs, g, o), IsOk());
}

TEST(FitTest, IdfMatchesDefinition) {
  ModelGeometry g = *FindModel("mixtral-8x7b");
  std::vector<CalibrationRequest> reqs(3);
  for (auto& r : reqs) r.prefill = ExpertCounts(g.moe_layers, g.experts);
  reqs[0].prefill.at(0, 0) = 5;
  reqs[1].prefill.at(0, 0) = 1;
  reqs[2].prefill.at(0, 1) = 2;
  auto idf = ComputeIdf(reqs);
  EXPECT_NEAR(idf[0], std::log(4.0 / 3.0), 1e-6);
  EXPECT_NEAR(idf[1], std::log(4.0 / 2.0), 1e-6);
  EXPECT_NEAR(idf[2], std::log(4.0 / 1.0), 1e-6);
}

// ---- provenance: training_sha256 ------------------------------------------------------------

TEST(FitProvenanceTest, Sha256MatchesFips180Vectors) {
  // FIPS 180-2, appendix B, and the empty string.
  EXPECT_EQ(Sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(Sha256Hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(Sha256Hex(std::string(1000000, 'a')),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  // Lengths around the padding boundaries (55/56 bytes: one or two final blocks), bytes
  // (7i + 3) mod 256; expected digests from sha256sum.
  const std::pair<int, const char*> lengths[] = {
      {55, "e7313d333c272e639f790978283f9eb392e843d0f29b7016828bb1daa4aac70b"},
      {56, "4324d65f3c103567f5589c710bc08f8523f929a9272e3af36fc968e52abc6c27"},
      {63, "81c80242132f230c3bd41b3e63bbcff16107339549214a99614ff26664625055"},
      {64, "39e3d7b6b5d075d37d053ad89b24b41bef4f3c29760c84447cab3f3be1882241"},
      {65, "aacca6ff74fdbb296d165a45cecfa04e5127bc008770fbbdd48006f2d2fae95e"},
      {119, "9ce7368e4daf32341631b492e80359dc9f594b48453cd0dd5bf0b19279cc177e"},
      {120, "7836b787757e95e58b3ca5aec90b1b004e8deba1e50e9675af9cabf1a13a04b5"},
  };
  for (const auto& [n, hex] : lengths) {
    std::string bytes(n, '\0');
    for (int i = 0; i < n; ++i) bytes[i] = static_cast<char>((i * 7 + 3) % 256);
    EXPECT_EQ(Sha256Hex(bytes), hex) << n << " bytes";
  }
  EXPECT_TRUE(IsSha256Hex(Sha256Hex("x")));
  EXPECT_FALSE(IsSha256Hex(std::string(64, 'A')));
  EXPECT_FALSE(IsSha256Hex(std::string(63, 'a')));
}

// A small calibration file for mixtral-8x7b (32 x 8), six requests, no decode counts.
std::string KnownCalibrationText() {
  std::string text = "{\"format\":\"eldr.calibration\",\"version\":1,\"model\":\"mixtral-8x7b\"}\n";
  for (int i = 0; i < 6; ++i) {
    text += "{\"id\":\"r" + std::to_string(i) + "\",\"prefill\":[";
    for (int l = 0; l < 32; ++l) {
      text += l ? ",[" : "[";
      for (int e = 0; e < 8; ++e) {
        text += (e ? "," : "") + std::to_string((i * 5 + l * 3 + e * 7 * (i + 1)) % 4);
      }
      text += "]";
    }
    text += "]}\n";
  }
  return text;
}

TEST(FitProvenanceTest, WrittenFileCarriesTheCalibrationSha256AndLoadsBack) {
  const std::string text = KnownCalibrationText();
  // sha256sum of the same bytes.
  const std::string known = "2e86e8d51d43f878249235c7acb80c8defd4d620381f43088e47ba22cae1b5ee";
  ASSERT_EQ(Sha256Hex(text), known);
  auto set = ParseCalibrationJsonl(text);
  ASSERT_THAT(set, IsOk());
  ModelGeometry g = *FindModel("mixtral-8x7b");
  for (auto t :
       {SignatureTransform::kCountIdf, SignatureTransform::kCount, SignatureTransform::kBinary}) {
    FitOptions o;
    o.k = 2;
    o.transform = t;
    o.greedy_mask = false;                // eldr fit --all-layers
    o.training_sha256 = Sha256Hex(text);  // what eldr fit passes
    auto fit = Fit(set->requests, g, o);
    ASSERT_THAT(fit, IsOk());
    const std::string json = fit->space->ToJson();
    EXPECT_NE(json.find("\"training_sha256\":\"" + known + "\""), std::string::npos) << json;
    EXPECT_NE(json.find("\"layer_select\":\"all\""), std::string::npos);
    EXPECT_EQ(json.find("\"sig_idf\"") != std::string::npos, t == SignatureTransform::kCountIdf)
        << TransformName(t);
    auto back = SignatureSpace::FromJson(json, &g);
    ASSERT_TRUE(back.has_value()) << TransformName(t) << ": " << back.error().ToString();
    EXPECT_EQ((*back)->spec().training_sha256, known);
    EXPECT_EQ((*back)->spec().layer_mask.size(), 32u);
  }
  FitOptions bad;
  bad.training_sha256 = "0xdeadbeef";
  EXPECT_THAT(bad.Validate(), StatusIs(StatusCode::kInvalidArgument, HasSubstr("training_sha256")));
}

}  // namespace
}  // namespace eldr
