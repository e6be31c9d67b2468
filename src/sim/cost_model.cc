#include "eldr/sim/cost_model.h"

#include <cmath>

namespace eldr::sim {

double CostParams::StepUs(int batch, int64_t ctx_tokens, std::span<const int> distinct) const {
  double moe = 0;
  for (int d : distinct) moe += layer_us + expert_us * d;
  return t0_us + moe + token_us * batch + ctx_us * static_cast<double>(ctx_tokens);
}

Status CostParams::Validate() const {
  for (double v : {t0_us, layer_us, expert_us, token_us, ctx_us, prefill_fixed_us, prefill_token_us,
                   kv_fixed_us, kv_token_us}) {
    if (!std::isfinite(v) || v < 0) {
      return InvalidArgument("cost parameters must be finite and >= 0").error();
    }
  }
  return Status::Ok();
}

Result<Baseline> PublishedBaseline(const ModelGeometry& g) {
  // RR TPOT P50 at 20/40/60 qps and RR TTFT P50 at 20 qps, task workload, 8P16D
  // (the ELDR paper (arXiv 2607.00466); the artifact's preview runs, the only published absolute
  // latencies).
  if (g.name == "qwen3-30b-a3b") return Baseline{{{20, 15.25}, {40, 18.82}, {60, 26.82}}, 59.8};
  if (g.name == "gpt-oss-120b") return Baseline{{{20, 24.10}, {40, 37.93}, {60, 45.77}}, 89.0};
  if (g.name == "gemma-4-26b-a4b") {
    return Baseline{{{20, 10.36}, {40, 16.50}, {60, 23.60}}, 54.9};
  }
  return NotFound(
      "no published baseline latencies for {}; the simulator needs cost parameters "
      "for it (docs/calibration.md)",
      g.display_name);
}

CostParams ScaleCost(const CostParams& donor, const ModelGeometry& dg,
                     const ModelGeometry& target) {
  CostParams c = donor;
  const double expert_ratio =
      static_cast<double>(target.ExpertWeightBytes()) / static_cast<double>(dg.ExpertWeightBytes());
  c.expert_us = donor.expert_us * expert_ratio;
  c.layer_us = donor.layer_us * expert_ratio;
  const double layers = static_cast<double>(target.total_layers) / dg.total_layers;
  c.t0_us = donor.t0_us * layers;
  c.token_us = donor.token_us * layers;
  c.prefill_fixed_us = donor.prefill_fixed_us * layers;
  c.prefill_token_us = donor.prefill_token_us * layers;
  return c;
}

Result<Calibration> CalibrateCost(const ModelGeometry& g, const Baseline& base,
                                  const std::function<double(int)>& mixed_distinct) {
  if (base.points.size() < 2) return InvalidArgument("calibration needs at least two points");
  constexpr double kLayerOverExpert = (128.0 - 4.7 * 16.0) / (4.7 - 1.0);  // a / b
  // Weight loads: one expert's bytes at an effective 3.2 TB/s, 60% of the MI300X's 5.3 TB/s
  // peak (an assumption: small-batch grouped GEMMs rarely stream at peak; docs/calibration.md).
  constexpr double kBytesPerUs = 3.2e6;
  const int L = g.moe_layers;
  const double b = static_cast<double>(g.ExpertWeightBytes()) / kBytesPerUs;
  Calibration cal;
  // Least squares for (t0, t_tok) in  TPOT - L (a + b D(B)) = t0 + t_tok B  over the points.
  double sx = 0, sy = 0, sxx = 0, sxy = 0;
  const double n = static_cast<double>(base.points.size());
  for (const auto& p : base.points) {
    const double batch = p.rate_qps / base.decoders * (base.output_tokens - 1) * p.rr_tpot_ms / 1e3;
    const double d = mixed_distinct(std::max(1, static_cast<int>(std::lround(batch))));
    cal.batch.push_back(batch);
    cal.distinct.push_back(d);
    const double rest = p.rr_tpot_ms * 1e3 - L * (kLayerOverExpert * b + b * d);
    sx += batch;
    sy += rest;
    sxx += batch * batch;
    sxy += batch * rest;
  }
  double tok = (n * sxy - sx * sy) / (n * sxx - sx * sx);
  double t0 = (sy - tok * sx) / n;
  if (tok < 0) {  // keep both terms physical: refit with the other one alone
    tok = 0;
    t0 = sy / n;
  }
  if (t0 < 0) {
    t0 = 0;
    tok = sxy / sxx;
  }
  if (tok < 0) {
    return FailedPrecondition(
        "calibration of {}: the weight loads alone exceed the published TPOT; no physical "
        "solution",
        g.display_name);
  }
  CostParams& c = cal.params;
  c.t0_us = t0;
  c.expert_us = b;
  c.layer_us = kLayerOverExpert * b;
  c.token_us = tok;
  c.ctx_us = 0;  // folded into t_tok: contexts are similar across policies
  c.prefill_token_us = 30;
  c.prefill_fixed_us = std::max(0.0, base.low_load_ttft_ms * 1e3 - 300 * c.prefill_token_us);
  c.kv_fixed_us = 1000;
  c.kv_token_us = 2;
  auto moe_share = [&](int i) {
    const double moe = L * (c.layer_us + b * cal.distinct[i]);
    return moe / (t0 + moe + tok * cal.batch[i]);
  };
  cal.moe_fraction_low = moe_share(0);
  cal.moe_fraction_high = moe_share(2);
  return cal;
}

}  // namespace eldr::sim
