// -----------------------------------------------------------------------------
// File: sim/cost_model.h
// -----------------------------------------------------------------------------
// Time of one decode step of a continuous batch:
//   t_step = t0 + sum_l (a + b * D_l) + t_tok * B + t_ctx * sum(ctx)
// with D_l the distinct experts the batch's tokens select at MoE layer l, B the batch size and
// ctx each request's context length; plus prefill and KV-transfer times. Parameters per model are
// derived in docs/calibration.md from published geometry and *baseline* (round-robin) figures
// only, so the ELDR-vs-baseline gap the simulator shows is a prediction.
//
// Thread-safety: plain values.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
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
//   b  = one expert's weight bytes / 3.2 TB/s effective HBM bandwidth (MI300X: 5.3 TB/s peak);
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

}  // namespace eldr::sim
