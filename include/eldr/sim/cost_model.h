// -----------------------------------------------------------------------------
// File: sim/cost_model.h
// -----------------------------------------------------------------------------
// Time of one decode step of a continuous batch:
//   t_step = t0 + sum_l (a + b * D_l) + t_tok * B + t_ctx * sum(ctx)
// with D_l the distinct experts the batch's tokens select at MoE layer l, B the batch size and
// ctx each request's context length; plus prefill and KV-transfer times. Parameters per model are
// derived in docs/calibration.md from published geometry and *baseline* (round-robin) figures
// only, so the ELDR-vs-baseline gap the simulator shows is a prediction. A model without published
// figures gets parameters derived from its geometry, a calibrated donor and a HardwareProfile
// (DeriveCost), with the assumptions stated in a note to print beside any result.
//
// Thread-safety: plain values.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "eldr/geometry.h"
#include "eldr/status.h"

namespace eldr::sim {

struct CostParams {
  double t0_us = 0;             // per step
  double layer_us = 0;          // a: per MoE layer per step
  double expert_us = 0;         // b: per distinct expert per MoE layer (weight load)
  double token_us = 0;          // per request in the batch
  double ctx_us = 0;            // per context token of the batch (KV read)
  double prefill_fixed_us = 0;  // per prefill
  double prefill_token_us = 0;  // per prompt token
  double kv_fixed_us = 0;       // KV transfer, per request
  double kv_token_us = 0;       // KV transfer, per prompt token

  // Step time in microseconds. `distinct` holds D_l for each MoE layer.
  double StepUs(int batch, int64_t ctx_tokens, std::span<const int> distinct) const;
  double PrefillUs(int prompt_tokens) const {
    return prefill_fixed_us + prefill_token_us * prompt_tokens;
  }
  double KvUs(int prompt_tokens) const { return kv_fixed_us + kv_token_us * prompt_tokens; }
  Status Validate() const;
};

// Default share of the peak HBM bandwidth that decode weight loads sustain: 3.2 / 5.3 = 60.4%,
// the effective 3.2 TB/s the calibration assumes on the MI300X's 5.3 TB/s peak (docs/calibration.md
// calls it 60%). An assumption: small-batch grouped GEMMs rarely stream weights at peak.
inline constexpr double kDefaultHbmEfficiency = 3.2 / 5.3;

// A decode accelerator as the step cost sees it: weight loads stream from HBM at
// peak x efficiency. Sources of the named profiles' peaks: docs/calibration.md.
struct HardwareProfile {
  std::string name;                               // lower-case id, e.g. "mi300x"
  std::string display_name;                       // e.g. "AMD Instinct MI300X"
  double peak_hbm_tb_per_s = 0;                   // datasheet peak, 10^12 bytes/s
  double hbm_efficiency = kDefaultHbmEfficiency;  // sustained / peak, in (0, 1]

  // Sustained bytes per microsecond: peak_hbm_tb_per_s * hbm_efficiency * 1e6.
  double EffectiveBytesPerUs() const { return peak_hbm_tb_per_s * hbm_efficiency * 1e6; }
  // OK iff name is non-empty, the peak finite and > 0 and the efficiency in (0, 1];
  // InvalidArgument naming the field otherwise.
  Status Validate() const;
};

// The named profiles, in a fixed order: mi300x, h100-sxm, h200, b200, each at
// kDefaultHbmEfficiency.
std::span<const HardwareProfile> HardwareProfiles();
// The profile the published baseline figures are taken to be measured on (mi300x): the hardware
// of every calibrated CostParams.
const HardwareProfile& CalibrationHardware();
// A named profile, matched case-insensitively on its name; NotFound listing the known names.
Result<HardwareProfile> FindHardwareProfile(std::string_view name);

// Published round-robin operating points of a model (baseline figures only; the ELDR paper (arXiv
// 2607.00466), task workload, 8P16D, 512 output tokens).
struct BaselinePoint {
  double rate_qps;
  double rr_tpot_ms;
};
struct Baseline {
  std::vector<BaselinePoint> points;  // rates below saturation (at least two)
  double low_load_ttft_ms = 0;        // RR TTFT P50 at the lowest rate
  int decoders = 16;
  int output_tokens = 512;
};
// The baseline figures for a preset; NotFound for presets without published figures.
Result<Baseline> PublishedBaseline(const ModelGeometry& g);

// Derives the cost parameters (docs/calibration.md):
//   b  = one expert's weight bytes / CalibrationHardware().EffectiveBytesPerUs() (3.2 TB/s:
//        the MI300X's 5.3 TB/s peak x kDefaultHbmEfficiency);
//   a  = 14.27 b, from the 4.7x MoE-layer latency between 128 and 16 distinct experts;
//   for each baseline point, Little's law gives the batch B = rate/decoders * (out-1) * TPOT,
//   the workload gives D(B), the distinct experts of a mixed batch of B, and (t0, t_tok) are
//   the least-squares fit of TPOT - L (a + b D(B)) = t0 + t_tok B over the points.
//   Prefill time is set so that an idle prefill matches the low-load TTFT.
// `mixed_distinct(B)` supplies D(B). FailedPrecondition if no physical solution exists.
struct Calibration {
  CostParams params;
  std::vector<double> batch, distinct;                 // per baseline point
  double moe_fraction_low = 0, moe_fraction_high = 0;  // MoE share of the step at the points
};
// Parameters for a model without published latencies from a calibrated `donor`: a and b from
// the target's expert bytes (the same derivation), t0, t_tok and the prefill time scaled by the
// ratio of transformer layers (non-MoE work per layer assumed equal). An assumption, to be
// reported with any result that uses it.
CostParams ScaleCost(const CostParams& donor, const ModelGeometry& donor_g,
                     const ModelGeometry& target);

Result<Calibration> CalibrateCost(const ModelGeometry& g, const Baseline& baseline,
                                  const std::function<double(int)>& mixed_distinct);

// Cost parameters that rest on assumptions, with those assumptions in words: one per line,
// starting "cost model: ", to print with every result that uses the parameters.
struct DerivedCost {
  CostParams params;
  std::string note;
};

// The preset whose calibration DeriveCost starts from: Qwen3-30B-A3B (published figures, plain
// bf16 routed experts, no shared experts).
inline constexpr std::string_view kDerivationDonor = "qwen3-30b-a3b";

// Parameters for a model without published latencies on `hw` (docs/calibration.md, "Models
// without published latencies"), from `donor`, the CalibrateCost parameters of `donor_g`
// (measured on CalibrationHardware()):
//   b  = g's expert weight bytes / hw.EffectiveBytesPerUs();  a = 14.27 b (as CalibrateCost);
//   t0, t_tok, t_ctx = the donor's x total_layers ratio x the bandwidth ratio
//        CalibrationHardware().EffectiveBytesPerUs() / hw.EffectiveBytesPerUs();
//   t0 += moe_layers x shared_experts x b (always-active experts, weight loads like routed ones);
//   prefill = the donor's x total_layers ratio (compute-bound: no bandwidth ratio);
//   KV transfer = the donor's (network-bound).
// One device per decoder (no tensor parallelism). The note names g, hw and every assumption
// above with its numbers. With g = donor_g (no shared experts) on CalibrationHardware() the result
// equals `donor`.
// InvalidArgument when g, hw or donor fails its Validate().
Result<DerivedCost> DeriveCost(const ModelGeometry& g, const HardwareProfile& hw,
                               const CostParams& donor, const ModelGeometry& donor_g);

// Calibrated parameters (measured on CalibrationHardware()) moved to `hw` by DeriveCost's rule:
// the decode-step terms (t0, a, b, t_tok, t_ctx) x the bandwidth ratio; prefill and KV transfer
// unchanged. `model` names the model in the note. InvalidArgument when hw fails Validate().
Result<DerivedCost> RescaleForHardware(const CostParams& calibrated, std::string_view model,
                                       const HardwareProfile& hw);

}  // namespace eldr::sim
