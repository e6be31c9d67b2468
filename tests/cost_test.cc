// Cost parameters for models without published latencies: hardware profiles and DeriveCost
// (docs/calibration.md, "Models without published latencies").
#include <gtest/gtest.h>

#include <limits>
#include <string>

#include "eldr/fit.h"
#include "eldr/sim/simulator.h"
#include "status_matchers.h"

namespace eldr::sim {
namespace {

using ::testing::HasSubstr;

const std::string kModels = ELDR_MODEL_FIXTURE_DIR;
constexpr double kNan = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

// A preset's calibration on its published baseline, D(B) from a small task workload.
CostParams Calibrated(const ModelGeometry& g) {
  WorkloadOptions wo;
  wo.requests = 1;
  wo.calibration = 300;
  auto w = MakeSyntheticWorkload(g, wo);
  EXPECT_TRUE(w.has_value());
  auto cal = CalibrateCost(g, *PublishedBaseline(g),
                           [&](int b) { return MeanMixedDistinct(*w, b, 1, 50); });
  EXPECT_TRUE(cal.has_value()) << cal.error().ToString();
  return cal->params;
}

const ModelGeometry& Donor() {
  static const ModelGeometry g = *FindModel(kDerivationDonor);
  return g;
}
const CostParams& DonorCost() {
  static const CostParams c = Calibrated(Donor());
  return c;
}

HardwareProfile Profile(std::string_view name) { return *FindHardwareProfile(name); }

TEST(HardwareProfileTest, NamedProfilesValidateAndMi300xIsTheCalibrations3_2TBs) {
  ASSERT_EQ(HardwareProfiles().size(), 4u);
  for (const auto& p : HardwareProfiles()) {
    EXPECT_TRUE(p.Validate().ok()) << p.name;
    EXPECT_EQ(p.hbm_efficiency, kDefaultHbmEfficiency) << p.name;
  }
  EXPECT_EQ(CalibrationHardware().name, "mi300x");
  // Exactly the constant the calibration used before profiles existed: presets' b is unchanged.
  EXPECT_EQ(CalibrationHardware().EffectiveBytesPerUs(), 3.2e6);
  EXPECT_EQ(Profile("h100-sxm").peak_hbm_tb_per_s, 3.35);
  EXPECT_EQ(Profile("h200").peak_hbm_tb_per_s, 4.8);
  EXPECT_EQ(Profile("b200").peak_hbm_tb_per_s, 8.0);
  EXPECT_EQ(Profile("H200").name, "h200");  // case-insensitive
  auto nope = FindHardwareProfile("nope");
  EXPECT_THAT(nope, StatusIs(StatusCode::kNotFound,
                             HasSubstr("'nope'; known profiles: mi300x, h100-sxm, h200, b200")));
}

TEST(HardwareProfileTest, BadValuesAreInvalidArgumentNamingTheField) {
  auto expect_bad = [](HardwareProfile p, std::string_view field) {
    const Status s = p.Validate();
    const auto names_field = StatusIs(StatusCode::kInvalidArgument, HasSubstr(std::string(field)));
    EXPECT_THAT(s, names_field);
    auto d = DeriveCost(Donor(), p, DonorCost(), Donor());
    ASSERT_THAT(d, names_field);
    EXPECT_EQ(d.error(), s);
    auto r = RescaleForHardware(DonorCost(), "x", p);
    ASSERT_THAT(r, names_field);
    EXPECT_EQ(r.error(), s);
  };
  const HardwareProfile good = Profile("h200");
  for (double v : {0.0, -4.8, kNan, kInf}) {
    HardwareProfile p = good;
    p.peak_hbm_tb_per_s = v;
    expect_bad(p, "peak_hbm_tb_per_s");
  }
  for (double v : {0.0, -0.5, 1.01, kNan}) {
    HardwareProfile p = good;
    p.hbm_efficiency = v;
    expect_bad(p, "hbm_efficiency");
  }
  HardwareProfile unnamed = good;
  unnamed.name.clear();
  expect_bad(unnamed, "name");
  HardwareProfile full = good;
  full.hbm_efficiency = 1;
  EXPECT_TRUE(full.Validate().ok());
}

// The mi300x profile is the calibration's hardware: b (and a) of every preset with published
// figures come out as CalibrateCost's, and the donor derived for itself is the donor.
TEST(DeriveCostTest, Mi300xReproducesTheCalibratedExpertCost) {
  for (const char* model : {"qwen3-30b-a3b", "gpt-oss-120b", "gemma-4-26b-a4b"}) {
    const ModelGeometry g = *FindModel(model);
    const CostParams cal = Calibrated(g);
    auto d = DeriveCost(g, CalibrationHardware(), DonorCost(), Donor());
    ASSERT_THAT(d, IsOk());
    EXPECT_EQ(d->params.expert_us, cal.expert_us) << model;
    EXPECT_EQ(d->params.layer_us, cal.layer_us) << model;
  }
  auto self = DeriveCost(Donor(), CalibrationHardware(), DonorCost(), Donor());
  ASSERT_TRUE(self.has_value());
  const CostParams& a = self->params;
  const CostParams& b = DonorCost();
  EXPECT_EQ(a.t0_us, b.t0_us);
  EXPECT_EQ(a.layer_us, b.layer_us);
  EXPECT_EQ(a.expert_us, b.expert_us);
  EXPECT_EQ(a.token_us, b.token_us);
  EXPECT_EQ(a.ctx_us, b.ctx_us);
  EXPECT_EQ(a.prefill_fixed_us, b.prefill_fixed_us);
  EXPECT_EQ(a.prefill_token_us, b.prefill_token_us);
  EXPECT_EQ(a.kv_fixed_us, b.kv_fixed_us);
  EXPECT_EQ(a.kv_token_us, b.kv_token_us);
  // And moving a calibration to its own hardware changes nothing.
  auto same = RescaleForHardware(b, "Qwen3-30B-A3B", CalibrationHardware());
  ASSERT_TRUE(same.has_value());
  EXPECT_EQ(same->params.t0_us, b.t0_us);
  EXPECT_EQ(same->params.expert_us, b.expert_us);
  EXPECT_EQ(same->params.token_us, b.token_us);
}

TEST(DeriveCostTest, ExpertCostScalesInverselyWithBandwidthAndLinearlyWithExpertBytes) {
  const ModelGeometry g = *FindModel("mixtral-8x7b");
  const HardwareProfile mi = CalibrationHardware();
  auto base = DeriveCost(g, mi, DonorCost(), Donor());
  ASSERT_TRUE(base.has_value());
  const CostParams& c0 = base->params;
  EXPECT_DOUBLE_EQ(c0.expert_us, static_cast<double>(g.ExpertWeightBytes()) / 3.2e6);
  // Twice the peak: every decode-step term halves; prefill and KV transfer (compute- and
  // network-bound) stay.
  HardwareProfile fast = mi;
  fast.peak_hbm_tb_per_s *= 2;
  auto d = DeriveCost(g, fast, DonorCost(), Donor());
  ASSERT_TRUE(d.has_value());
  EXPECT_DOUBLE_EQ(d->params.expert_us, c0.expert_us / 2);
  EXPECT_DOUBLE_EQ(d->params.layer_us, c0.layer_us / 2);
  EXPECT_DOUBLE_EQ(d->params.t0_us, c0.t0_us / 2);
  EXPECT_DOUBLE_EQ(d->params.token_us, c0.token_us / 2);
  EXPECT_EQ(d->params.prefill_fixed_us, c0.prefill_fixed_us);
  EXPECT_EQ(d->params.prefill_token_us, c0.prefill_token_us);
  EXPECT_EQ(d->params.kv_fixed_us, c0.kv_fixed_us);
  EXPECT_EQ(d->params.kv_token_us, c0.kv_token_us);
  // Half the efficiency: twice the time.
  HardwareProfile half_eff = mi;
  half_eff.hbm_efficiency /= 2;
  auto slow = DeriveCost(g, half_eff, DonorCost(), Donor());
  ASSERT_TRUE(slow.has_value());
  EXPECT_DOUBLE_EQ(slow->params.expert_us, 2 * c0.expert_us);
  EXPECT_DOUBLE_EQ(slow->params.t0_us, 2 * c0.t0_us);
  // The named profiles by their datasheet peaks.
  auto h200 = DeriveCost(g, Profile("h200"), DonorCost(), Donor());
  ASSERT_TRUE(h200.has_value());
  EXPECT_DOUBLE_EQ(h200->params.expert_us, c0.expert_us * 5.3 / 4.8);
  // Expert bytes: twice the width or twice the bytes per parameter, twice b and a.
  ModelGeometry wide = g;
  wide.expert_intermediate *= 2;
  ModelGeometry fat = g;
  fat.bytes_per_param *= 2;
  for (const ModelGeometry& big : {wide, fat}) {
    auto db = DeriveCost(big, mi, DonorCost(), Donor());
    ASSERT_TRUE(db.has_value());
    EXPECT_DOUBLE_EQ(db->params.expert_us, 2 * c0.expert_us);
    EXPECT_DOUBLE_EQ(db->params.layer_us, 2 * c0.layer_us);
    EXPECT_EQ(db->params.t0_us, c0.t0_us);  // no shared experts: t0 is the donor's x layers
  }
  // The calibrated presets moved to a faster chip by the same rule.
  auto moved = RescaleForHardware(DonorCost(), "Qwen3-30B-A3B", Profile("b200"));
  ASSERT_TRUE(moved.has_value());
  EXPECT_DOUBLE_EQ(moved->params.expert_us, DonorCost().expert_us * 5.3 / 8.0);
  EXPECT_DOUBLE_EQ(moved->params.t0_us, DonorCost().t0_us * 5.3 / 8.0);
  EXPECT_EQ(moved->params.prefill_fixed_us, DonorCost().prefill_fixed_us);
  EXPECT_NE(moved->note.find("b200"), std::string::npos) << moved->note;
}

TEST(DeriveCostTest, LayersScaleTheNonMoeTermsAndSharedExpertsLoadEveryStep) {
  const ModelGeometry ds = *FindModel("deepseek-v3");  // 61 layers, 58 MoE, 1 shared expert
  auto d = DeriveCost(ds, CalibrationHardware(), DonorCost(), Donor());
  ASSERT_TRUE(d.has_value());
  const double layers = 61.0 / 48.0;
  EXPECT_DOUBLE_EQ(d->params.t0_us, DonorCost().t0_us * layers + 58 * d->params.expert_us);
  EXPECT_DOUBLE_EQ(d->params.token_us, DonorCost().token_us * layers);
  EXPECT_DOUBLE_EQ(d->params.prefill_fixed_us, DonorCost().prefill_fixed_us * layers);
  EXPECT_NE(d->note.find("58 x 1 shared expert"), std::string::npos) << d->note;
}

// Every preset and every config.json fixture, on every profile: valid parameters and a note that
// names the model, the profile and the donor, one "cost model: " line per group of assumptions.
TEST(DeriveCostTest, DerivedParametersValidateForEveryModelAndProfile) {
  std::vector<ModelGeometry> models(ModelPresets().begin(), ModelPresets().end());
  for (const char* dir : {"DeepSeek-V3", "Llama-4-Maverick-17B-128E-Instruct", "Mixtral-8x7B"}) {
    auto g = ModelFromHfConfigFile(kModels + "/" + dir + "/config.json");
    ASSERT_THAT(g, IsOk());
    models.push_back(*g);
  }
  for (const auto& g : models) {
    for (const auto& hw : HardwareProfiles()) {
      auto d = DeriveCost(g, hw, DonorCost(), Donor());
      ASSERT_TRUE(d.has_value()) << g.name << " on " << hw.name << ": " << d.error().ToString();
      EXPECT_TRUE(d->params.Validate().ok()) << g.name << " on " << hw.name;
      EXPECT_GT(d->params.expert_us, 0);
      EXPECT_GT(d->params.t0_us, 0);
      const std::string& n = d->note;
      EXPECT_NE(n.find("derived for " + g.display_name + " on " + hw.name), std::string::npos) << n;
      EXPECT_NE(n.find(Donor().display_name), std::string::npos) << n;
      EXPECT_EQ(n.rfind("cost model: ", 0), 0u) << n;
      for (size_t nl = n.find('\n'); nl != std::string::npos; nl = n.find('\n', nl + 1))
        EXPECT_EQ(n.compare(nl + 1, 12, "cost model: "), 0) << n;
    }
  }
  ModelGeometry broken = Donor();
  broken.top_k = 0;
  EXPECT_EQ(DeriveCost(broken, CalibrationHardware(), DonorCost(), Donor()).error().code(),
            StatusCode::kInvalidArgument);
  CostParams negative = DonorCost();
  negative.t0_us = -1;
  EXPECT_EQ(DeriveCost(Donor(), CalibrationHardware(), negative, Donor()).error().code(),
            StatusCode::kInvalidArgument);
}

// A model that is no preset (interleaved dense layers, read from its config.json) simulates end
// to end on derived parameters: every request completes, with a TPOT in the range the
// parameters imply.
TEST(DeriveCostTest, NonPresetConfigModelSimulatesEndToEnd) {
  auto g = ModelFromHfConfigFile(kModels + "/Llama-4-Maverick-17B-128E-Instruct/config.json");
  ASSERT_THAT(g, IsOk());
  ASSERT_THAT(
      PublishedBaseline(*g),
      StatusIs(
          StatusCode::kNotFound,
          HasSubstr("no published baseline latencies for Llama-4-Maverick-17B-128E-Instruct")));
  const HardwareProfile hw = Profile("h200");
  auto d = DeriveCost(*g, hw, DonorCost(), Donor());
  ASSERT_THAT(d, IsOk());
  EXPECT_NE(d->note.find("on h200 (NVIDIA H200 SXM: 4.8 TB/s peak HBM"), std::string::npos)
      << d->note;
  WorkloadOptions wo;
  wo.requests = 120;
  wo.calibration = 200;
  wo.rate_qps = 20;
  wo.output_tokens = 64;
  auto w = MakeSyntheticWorkload(*g, wo);
  ASSERT_THAT(w, IsOk());
  std::vector<CalibrationRequest> calib;
  for (const auto& r : w->calibration)
    calib.push_back({"", w->labels[r.label], r.prefill, r.decode});
  FitOptions fo;
  fo.k = 4;
  fo.rho_pairs = 2000;
  auto fit = Fit(calib, *g, fo);
  ASSERT_THAT(fit, IsOk());
  for (const char* policy : {"rr", "eldr"}) {
    SimOptions o;
    o.cluster.prefill_workers = 2;
    o.cluster.decode_workers = 4;
    o.cost = d->params;
    o.policy.name = policy;
    o.policy.space = fit->space;
    auto r = Simulate(*w, o);
    ASSERT_TRUE(r.has_value()) << policy << ": " << r.error().ToString();
    ASSERT_EQ(r->requests.size(), 120u) << policy;
    const SimSummary s = Summarize(*r);
    // At least one request's step: t0 + L (a + b top_k) + t_tok.
    const CostParams& c = d->params;
    const double floor_ms =
        (c.t0_us + g->moe_layers * (c.layer_us + c.expert_us * g->top_k) + c.token_us) / 1e3;
    EXPECT_GE(s.tpot_p50, floor_ms * 0.999) << policy;
    EXPECT_LT(s.tpot_p50, 10 * floor_ms) << policy;
  }
}

}  // namespace
}  // namespace eldr::sim
