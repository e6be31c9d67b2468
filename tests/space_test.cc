#include <gtest/gtest.h>

#include <cmath>

#include "eldr/rng.h"
#include "eldr/signature_space.h"

namespace eldr {
namespace {

SignatureSpaceSpec Spec(const ModelGeometry& g, int k, uint64_t seed) {
  Rng rng(seed);
  SignatureSpaceSpec s;
  s.model = g.name;
  s.layers = g.moe_layers;
  s.experts = g.experts;
  for (int l = 0; l < g.moe_layers; l += 2) s.layer_mask.push_back(l);
  const size_t d = s.layer_mask.size() * g.experts;
  for (size_t i = 0; i < d; ++i) s.idf.push_back(static_cast<float>(0.1 + rng.UniformDouble()));
  for (int j = 0; j < k; ++j) {
    std::vector<float> c(d);
    for (auto& v : c) v = static_cast<float>(rng.UniformDouble());
    s.centroids.push_back(std::move(c));
  }
  return s;
}

ExpertCounts RandomCounts(const ModelGeometry& g, uint64_t seed) {
  Rng rng(seed);
  ExpertCounts c(g.moe_layers, g.experts);
  for (auto& v : c.mutable_data())
    v = rng.Uniform(4) == 0 ? static_cast<uint32_t>(rng.Uniform(9)) : 0;
  return c;
}

TEST(SignatureSpaceTest, EmbedIsUnitAndFusedScoreMatchesExplicitEmbedding) {
  ModelGeometry g = *FindModel("qwen3-30b-a3b");
  for (auto t :
       {SignatureTransform::kCountIdf, SignatureTransform::kCount, SignatureTransform::kBinary}) {
    auto spec = Spec(g, 16, 1);
    spec.transform = t;
    if (t != SignatureTransform::kCountIdf) spec.idf.clear();
    auto s = SignatureSpace::Build(spec);
    ASSERT_TRUE(s.has_value()) << s.error().ToString();
    auto c = RandomCounts(g, 2);
    std::vector<float> sig((*s)->dims());
    ASSERT_TRUE((*s)->Embed(c, sig).ok());
    double n2 = 0;
    for (float v : sig) n2 += double{v} * v;
    EXPECT_NEAR(n2, 1.0, 1e-5);
    std::vector<float> fused(16), slow(16);
    ASSERT_TRUE((*s)->Score(c, fused).ok());
    (*s)->ScoreSignature(sig, slow);
    for (int j = 0; j < 16; ++j) {
      EXPECT_NEAR(fused[j], slow[j], 1e-5);
      EXPECT_GE(fused[j], 0.0f);
      EXPECT_LE(fused[j], 1.0f + 1e-5f);
    }
  }
}

TEST(SignatureSpaceTest, SignatureIgnoresUnmaskedLayersAndPromptLength) {
  ModelGeometry g = *FindModel("gpt-oss-20b");
  auto s = *SignatureSpace::Build(Spec(g, 4, 3));
  auto c = RandomCounts(g, 4);
  std::vector<float> a(4), b(4);
  ASSERT_TRUE(s->Score(c, a).ok());
  ExpertCounts doubled = c;
  ASSERT_TRUE(doubled.Add(c).ok());
  doubled.at(1, 0) += 50;  // layer 1 is not in the mask (even layers only)
  ASSERT_TRUE(s->Score(doubled, b).ok());
  for (int j = 0; j < 4; ++j) EXPECT_NEAR(a[j], b[j], 1e-5);
}

TEST(SignatureSpaceTest, NoPicksOnMaskedLayersIsFailedPrecondition) {
  ModelGeometry g = *FindModel("gpt-oss-20b");
  auto s = *SignatureSpace::Build(Spec(g, 4, 3));
  ExpertCounts c(g.moe_layers, g.experts);
  c.at(1, 3) = 7;  // only an unmasked layer
  std::vector<float> scores(4);
  EXPECT_EQ(s->Score(c, scores).code(), StatusCode::kFailedPrecondition);
  ExpertCounts wrong(3, 3);
  EXPECT_EQ(s->Score(wrong, scores).code(), StatusCode::kInvalidArgument);
}

TEST(SignatureSpaceTest, JsonRoundTripPreservesEverything) {
  ModelGeometry g = *FindModel("gpt-oss-20b");
  auto spec = Spec(g, 8, 5);
  spec.fit_peak_rho = 0.73;
  spec.n_fit = 1000;
  auto s = *SignatureSpace::Build(spec);
  const std::string text = s->ToJson();
  EXPECT_NE(text.find("\"format\":\"eldr.signature_space\""), std::string::npos);
  EXPECT_NE(text.find("\"sig_idf\""), std::string::npos);
  auto back = SignatureSpace::FromJson(text, &g);
  ASSERT_TRUE(back.has_value()) << back.error().ToString();
  EXPECT_EQ((*back)->spec().layer_mask, s->spec().layer_mask);
  EXPECT_EQ((*back)->k(), 8);
  EXPECT_NEAR((*back)->spec().fit_peak_rho, 0.73, 1e-12);
  auto c = RandomCounts(g, 6);
  std::vector<float> a(8), b(8);
  ASSERT_TRUE(s->Score(c, a).ok());
  ASSERT_TRUE((*back)->Score(c, b).ok());
  for (int j = 0; j < 8; ++j) EXPECT_NEAR(a[j], b[j], 1e-6);
}

TEST(SignatureSpaceTest, AcceptsArtifactStyleFileWithoutFormatField) {
  const std::string artifact = R"({"model": "openai/gpt-oss-20b", "algo": "kmbal", "k": 2,
    "L": 24, "e": 32, "n_fit": 10, "variant": "count_idf", "layer_select": "forward_greedy",
    "layer_mask": [3], "fit_peak_rho": 0.5, "seed": 1, "sig_dtype": "<i2",
    "centroids": [[1,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0],
                  [0,1,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0]],
    "sig_idf": [1,2,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1]})";
  ModelGeometry g = *FindModel("gpt-oss-20b");
  auto s = SignatureSpace::FromJson(artifact, &g);
  ASSERT_TRUE(s.has_value()) << s.error().ToString();
  EXPECT_EQ((*s)->dims(), 32);
}

TEST(SignatureSpaceTest, RejectsFilesForAnotherModelOrVersionOrShape) {
  ModelGeometry oss = *FindModel("gpt-oss-20b");
  ModelGeometry qwen = *FindModel("qwen3-30b-a3b");
  const std::string text = (*SignatureSpace::Build(Spec(oss, 4, 7)))->ToJson();
  auto wrong_model = SignatureSpace::FromJson(text, &qwen);
  ASSERT_FALSE(wrong_model.has_value());
  EXPECT_EQ(wrong_model.error().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(wrong_model.error().message().find("Qwen3-30B-A3B"), std::string::npos);

  auto replace = [&](std::string s, const std::string& from, const std::string& to) {
    s.replace(s.find(from), from.size(), to);
    return s;
  };
  auto newer = SignatureSpace::FromJson(replace(text, "\"version\":1", "\"version\":9"), &oss);
  ASSERT_FALSE(newer.has_value());
  EXPECT_NE(newer.error().message().find("version 9"), std::string::npos);
  EXPECT_FALSE(SignatureSpace::FromJson(replace(text, "\"k\":4", "\"k\":5")).has_value());
  EXPECT_FALSE(SignatureSpace::FromJson(replace(text, "\"layer_mask\":[0", "\"layer_mask\":[99"))
                   .has_value());
  EXPECT_FALSE(
      SignatureSpace::FromJson(replace(text, "eldr.signature_space", "other")).has_value());
  EXPECT_FALSE(SignatureSpace::FromJson(text.substr(0, text.size() / 2)).has_value());
  EXPECT_FALSE(SignatureSpace::FromJson("[]").has_value());
  // Fuzz smoke over truncations and byte flips: never a crash, always an error or a valid space.
  Rng rng(8);
  for (int i = 0; i < 400; ++i) {
    std::string m = text;
    for (int e = 0; e < 3; ++e) m[rng.Uniform(m.size())] = static_cast<char>(rng.Uniform(128));
    auto r = SignatureSpace::FromJson(m);
    if (r.has_value()) {
      EXPECT_GT((*r)->k(), 0);
    }
  }
}

TEST(SignatureSpaceTest, BuildRejectsBadSpecs) {
  ModelGeometry g = *FindModel("gpt-oss-20b");
  auto s = Spec(g, 2, 1);
  s.layer_mask = {3, 1};
  EXPECT_FALSE(SignatureSpace::Build(s).has_value());
  s = Spec(g, 2, 1);
  s.centroids[1].assign(s.centroids[1].size(), 0.0f);
  EXPECT_FALSE(SignatureSpace::Build(s).has_value());
  s = Spec(g, 2, 1);
  s.idf[0] = std::nanf("");
  EXPECT_FALSE(SignatureSpace::Build(s).has_value());
  s = Spec(g, 2, 1);
  s.centroids.clear();
  EXPECT_FALSE(SignatureSpace::Build(s).has_value());
}

}  // namespace
}  // namespace eldr
