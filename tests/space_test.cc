#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <cmath>
#include <limits>
#include <numeric>

#include "eldr/rng.h"
#include "eldr/sha256.h"
#include "eldr/signature_space.h"
#include "status_matchers.h"

namespace eldr {
namespace {

using ::testing::HasSubstr;

// Random weights and centroids (not unit: Build renormalises) on the even layers, or on every
// layer with `all_layers`.
SignatureSpaceSpec Spec(const ModelGeometry& g, int k, uint64_t seed, bool all_layers = false) {
  Rng rng(seed);
  SignatureSpaceSpec s;
  s.model = g.name;
  s.layers = g.moe_layers;
  s.experts = g.experts;
  for (int l = 0; l < g.moe_layers; l += all_layers ? 1 : 2) s.layer_mask.push_back(l);
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
  EXPECT_THAT(wrong_model, StatusIs(StatusCode::kFailedPrecondition, HasSubstr("Qwen3-30B-A3B")));

  auto replace = [&](std::string s, const std::string& from, const std::string& to) {
    s.replace(s.find(from), from.size(), to);
    return s;
  };
  auto newer = SignatureSpace::FromJson(replace(text, "\"version\":1", "\"version\":9"), &oss);
  EXPECT_THAT(newer, StatusIs(StatusCode::kFailedPrecondition, HasSubstr("version 9")));
  EXPECT_THAT(
      SignatureSpace::FromJson(replace(text, "\"k\":4", "\"k\":5")),
      StatusIs(StatusCode::kInvalidArgument, HasSubstr("k = 5 but 4 centroids are present")));
  EXPECT_THAT(SignatureSpace::FromJson(replace(text, "\"layer_mask\":[0", "\"layer_mask\":[99")),
              StatusIs(StatusCode::kOutOfRange, HasSubstr("layer_mask entry 99 outside [0, 24)")));
  EXPECT_THAT(
      SignatureSpace::FromJson(replace(text, "eldr.signature_space", "other")),
      StatusIs(StatusCode::kFailedPrecondition, HasSubstr("format is not 'eldr.signature_space'")));
  EXPECT_THAT(SignatureSpace::FromJson(text.substr(0, text.size() / 2)),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("not valid JSON")));
  EXPECT_THAT(SignatureSpace::FromJson("[]"),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("top level must be an object")));
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
  EXPECT_THAT(
      SignatureSpace::Build(s),
      StatusIs(StatusCode::kInvalidArgument, HasSubstr("layer_mask must be sorted and unique")));
  s = Spec(g, 2, 1);
  s.centroids[1].assign(s.centroids[1].size(), 0.0f);
  EXPECT_THAT(SignatureSpace::Build(s),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("centroid 1 is all zero")));
  s = Spec(g, 2, 1);
  s.idf[0] = std::nanf("");
  EXPECT_THAT(
      SignatureSpace::Build(s),
      StatusIs(StatusCode::kInvalidArgument, HasSubstr("sig_idf weights must be finite and >= 0")));
  s = Spec(g, 2, 1);
  s.centroids.clear();
  EXPECT_THAT(SignatureSpace::Build(s),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("no centroids (k = 0)")));
}

// ---- files that travel both ways (the ELDR artifact's fields) ---------------------------------

namespace json = boost::json;

// A valid artifact-style count_idf file for gpt-oss-20b (24 x 32): mask {3}, two unit centroids.
json::object ArtifactFile() {
  json::object o;
  o["model"] = "openai/gpt-oss-20b";
  o["algo"] = "kmbal";
  o["k"] = 2;
  o["L"] = 24;
  o["e"] = 32;
  o["n_fit"] = 10;
  o["variant"] = "count_idf";
  o["layer_select"] = "forward_greedy";
  o["layer_mask"] = json::array{3};
  o["seed"] = 1;
  o["sig_dtype"] = "<i2";
  json::array c0, c1, idf;
  for (int i = 0; i < 32; ++i) {
    c0.push_back(i == 0 ? 1.0 : 0.0);
    c1.push_back(i == 1 ? 1.0 : 0.0);
    idf.push_back(1.0 + i % 3);
  }
  o["centroids"] = json::array{c0, c1};
  o["sig_idf"] = idf;
  return o;
}

// Unit rows of `dims` values: row j has a 1 at j.
json::array UnitRows(int k, int dims) {
  json::array rows;
  for (int j = 0; j < k; ++j) {
    json::array r;
    for (int d = 0; d < dims; ++d) r.push_back(d == j ? 1.0 : 0.0);
    rows.push_back(std::move(r));
  }
  return rows;
}

Result<std::shared_ptr<const SignatureSpace>> Load(const json::object& o) {
  static const ModelGeometry g = *FindModel("gpt-oss-20b");
  return SignatureSpace::FromJson(json::serialize(o), &g);
}

TEST(SpaceFileTest, BaseArtifactFileLoads) {
  auto s = Load(ArtifactFile());
  ASSERT_TRUE(s.has_value()) << s.error().ToString();
  EXPECT_EQ((*s)->spec().transform, SignatureTransform::kCountIdf);
}

TEST(SpaceFileTest, RefusesTransformsEldrDoesNotImplementNamingTheField) {
  struct Case {
    const char* key;
    std::string value;  // JSON text
    const char* named;  // must appear in the message
  };
  std::string zeros = "[0";
  for (int i = 1; i < 32; ++i) zeros += ",0";
  zeros += "]";
  const std::string upper = "\"" + std::string(64, 'A') + "\"";
  const std::vector<Case> cases = {
      {"sig_mean", zeros, "'sig_mean' (mean-centring"},
      {"sig_mean", "[]", "'sig_mean'"},
      {"_mean", zeros, "'_mean'"},
      {"sig_per_layer_norm", "true", "'sig_per_layer_norm' (per-layer normalisation)"},
      {"sig_per_layer_norm", "1", "'sig_per_layer_norm'"},
      {"_per_layer_norm", "true", "'_per_layer_norm'"},
      {"sig_whitening", "true", "'sig_whitening' is not understood"},
      {"sig_dtype", R"("<f4")", R"(sig_dtype "<f4" is not supported)"},
      {"sig_dtype", R"("<i4")", "sig_dtype"},
      {"sig_dtype", "2", "sig_dtype"},
      {"variant", R"("gate_prob_all")", "variant 'gate_prob_all' (gate-probability signatures)"},
      {"variant", R"("full")", "field 'variant': unknown signature transform 'full'"},
      {"variant", "3", "field 'variant' must be a string"},
      {"m", "4", "m = 4"},
      {"training_sha256", R"("abc")", "'training_sha256' must be 64 lowercase hex"},
      {"training_sha256", upper, "'training_sha256'"},
      {"sig_idf", zeros, "sig_idf is all zero"},
      {"layer_select", R"("all")", "layer_select is 'all' but layer_mask"},
      {"layer_select", "5", "'layer_select' must be a string"},
  };
  for (const auto& c : cases) {
    json::object o = ArtifactFile();
    o[c.key] = json::parse(c.value);
    auto s = Load(o);
    EXPECT_THAT(s, StatusIs(StatusCode::kInvalidArgument, HasSubstr(std::string(c.named))))
        << c.key << " = " << c.value;
  }
}

TEST(SpaceFileTest, AcceptsTheHarmlessFormsOfThoseFields) {
  const std::pair<const char*, std::string> cases[] = {
      {"sig_mean", "null"},
      {"sig_per_layer_norm", "false"},
      {"_per_layer_norm", "null"},
      {"m", "2"},
      {"calibration_format", R"("eldr-calibration-v1")"},  // provenance: ignored
      {"transform_sha256", R"("whatever")"},
      {"training_sha256", "\"" + std::string(64, 'a') + "\""},
  };
  for (const auto& [key, value] : cases) {
    json::object o = ArtifactFile();
    o[key] = json::parse(value);
    auto s = Load(o);
    EXPECT_TRUE(s.has_value()) << key << ": " << s.error().ToString();
  }
  json::object o = ArtifactFile();
  o.erase("sig_dtype");  // the artifact's default is "<i2"
  EXPECT_TRUE(Load(o).has_value());
}

TEST(SpaceFileTest, CountVariantTakesNoIdfButAcceptsTheEmptyArrayEldrWroteBefore) {
  for (const char* variant : {"count", "binary"}) {
    json::object o = ArtifactFile();
    o["variant"] = variant;
    auto s = Load(o);  // still carries the count_idf sig_idf
    EXPECT_THAT(s, StatusIs(StatusCode::kInvalidArgument, HasSubstr("takes no 'sig_idf'")))
        << variant;
    o["sig_idf"] = json::array{};
    EXPECT_TRUE(Load(o).has_value()) << variant;
    o["sig_idf"] = nullptr;
    EXPECT_TRUE(Load(o).has_value()) << variant;
    o.erase("sig_idf");
    EXPECT_TRUE(Load(o).has_value()) << variant;
  }
  json::object o = ArtifactFile();
  o.erase("sig_idf");
  auto s = Load(o);
  ASSERT_THAT(s, StatusIs(StatusCode::kInvalidArgument, HasSubstr("needs 'sig_idf'")));
}

TEST(SpaceFileTest, NonUnitCentroidInAFileIsRefusedNotRenormalised) {
  json::object o = ArtifactFile();
  o["centroids"].as_array()[1].as_array()[1] = 2.0;
  auto s = Load(o);
  ASSERT_THAT(s,
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("centroid 1 has L2 norm 2, not 1")));
  // 1e-3 of slack for rounding in other writers: accepted, and unit once loaded.
  o["centroids"].as_array()[1].as_array()[1] = 1.0009;
  auto near = Load(o);
  ASSERT_TRUE(near.has_value()) << near.error().ToString();
  EXPECT_NEAR((*near)->spec().centroids[1][1], 1.0f, 1e-6);
  o["centroids"].as_array()[1].as_array()[1] = 0.998;
  EXPECT_THAT(Load(o), StatusIs(StatusCode::kInvalidArgument,
                                HasSubstr("centroid 1 has L2 norm 0.998, not 1")));
  // Build() from a spec in memory still renormalises (fit relies on it).
  ModelGeometry g = *FindModel("gpt-oss-20b");
  auto spec = Spec(g, 2, 3);
  spec.centroids[0][0] += 5.0f;
  EXPECT_TRUE(SignatureSpace::Build(spec).has_value());
}

TEST(SpaceFileTest, AcceptsTheArtifactsMasklessCountFile) {
  // What the artifact's count fit writes: every layer, no sig_idf; with and without the mask.
  json::object o;
  o["model"] = "openai/gpt-oss-20b";
  o["algo"] = "kmbal";
  o["k"] = 3;
  o["m"] = 3;
  o["L"] = 24;
  o["e"] = 32;
  o["n_fit"] = 100;
  o["variant"] = "count";
  o["layer_select"] = "all";
  o["sig_dtype"] = "<i2";
  o["seed"] = 0;
  o["centroids"] = UnitRows(3, 24 * 32);
  o["training_sha256"] = std::string(64, 'f');
  for (int form = 0; form < 3; ++form) {
    json::object f = o;
    if (form == 1) f.erase("layer_select");  // mask-less count: every layer
    if (form == 2) {
      f.erase("variant");  // the artifact's default variant is count
      json::array mask;
      for (int l = 0; l < 24; ++l) mask.push_back(l);
      f["layer_mask"] = mask;
    }
    auto s = Load(f);
    ASSERT_TRUE(s.has_value()) << form << ": " << s.error().ToString();
    EXPECT_EQ((*s)->spec().transform, SignatureTransform::kCount);
    EXPECT_EQ((*s)->dims(), 24 * 32);
    std::vector<int> every(24);
    std::iota(every.begin(), every.end(), 0);
    EXPECT_EQ((*s)->spec().layer_mask, every);
    EXPECT_EQ((*s)->spec().training_sha256, std::string(64, 'f'));
  }
  // A mask-less count_idf file is refused, as in the artifact, unless layer_select says "all".
  json::object idf = ArtifactFile();
  idf.erase("layer_mask");
  auto s = Load(idf);
  ASSERT_THAT(s, StatusIs(StatusCode::kInvalidArgument, HasSubstr("missing 'layer_mask'")));
}

TEST(SpaceFileTest, MicroCentroidsIsAnAliasAndAConflictIsRefused) {
  json::object o = ArtifactFile();
  json::value rows = o["centroids"];
  o.erase("centroids");
  o["micro_centroids"] = rows;
  auto alias = Load(o);
  ASSERT_TRUE(alias.has_value()) << alias.error().ToString();
  EXPECT_EQ((*alias)->k(), 2);
  EXPECT_EQ((*alias)->spec().centroids[1][1], 1.0f);
  o["centroids"] = rows;  // both, equal
  EXPECT_TRUE(Load(o).has_value());
  std::swap(o["micro_centroids"].as_array()[0], o["micro_centroids"].as_array()[1]);
  auto conflict = Load(o);
  ASSERT_THAT(conflict,
              StatusIs(StatusCode::kInvalidArgument,
                       HasSubstr("'centroids' and 'micro_centroids' are both present and differ")));
}

TEST(SpaceFileTest, OwnFilesRoundTripForEveryTransformAndForAllLayers) {
  ModelGeometry g = *FindModel("gpt-oss-20b");
  const std::string sha = Sha256Hex("calibration bytes");
  for (auto t :
       {SignatureTransform::kCountIdf, SignatureTransform::kCount, SignatureTransform::kBinary}) {
    for (bool all : {false, true}) {
      auto spec = Spec(g, 4, 21, all);
      spec.transform = t;
      if (t != SignatureTransform::kCountIdf) spec.idf.clear();
      spec.training_sha256 = sha;
      spec.seed = std::numeric_limits<uint64_t>::max();
      auto s = SignatureSpace::Build(spec);
      ASSERT_TRUE(s.has_value()) << s.error().ToString();
      const std::string text = (*s)->ToJson();
      const std::string what = std::string(TransformName(t)) + (all ? " all layers" : " masked");
      EXPECT_EQ(text.find("\"sig_idf\"") != std::string::npos, t == SignatureTransform::kCountIdf)
          << what;
      EXPECT_NE(text.find(all ? "\"layer_select\":\"all\"" : "\"layer_select\":\"forward_greedy\""),
                std::string::npos)
          << what;
      EXPECT_NE(text.find("\"training_sha256\":\"" + sha + "\""), std::string::npos) << what;
      auto back = SignatureSpace::FromJson(text, &g);
      ASSERT_TRUE(back.has_value()) << what << ": " << back.error().ToString();
      EXPECT_EQ((*back)->spec().transform, t);
      EXPECT_EQ((*back)->spec().layer_mask, spec.layer_mask);
      EXPECT_EQ((*back)->spec().training_sha256, sha);
      EXPECT_EQ((*back)->spec().seed, std::numeric_limits<uint64_t>::max());
      EXPECT_EQ((*back)->ToJson(), text) << what;
      auto c = RandomCounts(g, 23);
      std::vector<float> a(4), b(4);
      ASSERT_TRUE((*s)->Score(c, a).ok());
      ASSERT_TRUE((*back)->Score(c, b).ok());
      for (int j = 0; j < 4; ++j) EXPECT_NEAR(a[j], b[j], 1e-6) << what;
    }
  }
}

TEST(SpaceFileTest, BuildRejectsAMalformedTrainingSha) {
  ModelGeometry g = *FindModel("gpt-oss-20b");
  auto spec = Spec(g, 2, 1);
  spec.training_sha256 = "not a digest";
  auto s = SignatureSpace::Build(spec);
  ASSERT_THAT(s, StatusIs(StatusCode::kInvalidArgument, HasSubstr("training_sha256")));
}

}  // namespace
}  // namespace eldr
