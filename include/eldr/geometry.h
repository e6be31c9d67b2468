// -----------------------------------------------------------------------------
// File: geometry.h
// -----------------------------------------------------------------------------
// ModelGeometry: the shape of a mixture-of-experts model as far as routing and decode cost care:
// how many MoE layers, how many routed experts per layer, the top-k, shared experts, and the
// bytes one expert's weights occupy. Presets for the models of the ELDR evaluation and a few
// more; sources for every number are in docs/models.md.
//
// Thread-safety: presets are immutable statics; lookups are safe from any thread.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "eldr/status.h"

namespace eldr {

struct ModelGeometry {
  std::string name;          // canonical lower-case id, e.g. "qwen3-30b-a3b"
  std::string display_name;  // e.g. "Qwen3-30B-A3B"
  int total_layers = 0;      // all transformer layers
  int first_moe_layer = 0;   // leading dense layers (DeepSeek-V3: 3)
  int moe_layers = 0;        // L: layers with routed experts
  int experts = 0;           // E: routed experts per MoE layer
  int top_k = 0;             // routed experts each token selects per layer
  int shared_experts = 0;    // always-active experts (never part of a signature)
  int hidden_size = 0;
  int expert_intermediate = 0;  // one routed expert's FFN width
  double bytes_per_param = 2;   // bf16 = 2, fp8 = 1, mxfp4 ~ 4.25 bits
  int kv_block_size = 16;       // engine KV block size used by the ELDR evaluation

  // Bytes of one routed expert's weights (gate, up and down projections).
  int64_t ExpertWeightBytes() const;
  // L*E: entries of a count table.
  int CountEntries() const { return moe_layers * experts; }
  // OK iff every field is in range (positive sizes, top_k <= experts, layers consistent).
  Status Validate() const;
};

// All presets, in a fixed order.
std::span<const ModelGeometry> ModelPresets();

// Finds a preset by name, case-insensitively, accepting the display name, the canonical id and an
// optional "org/" prefix ("Qwen/Qwen3-30B-A3B"). NotFound lists the known names.
Result<ModelGeometry> FindModel(std::string_view name);

}  // namespace eldr
