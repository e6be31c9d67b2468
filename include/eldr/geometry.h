// -----------------------------------------------------------------------------
// File: geometry.h
// -----------------------------------------------------------------------------
// ModelGeometry: the shape of a mixture-of-experts model as far as routing and decode cost care:
// how many MoE layers, how many routed experts per layer, the top-k, shared experts, and the
// bytes one expert's weights occupy. Presets for the models of the ELDR evaluation and a few
// more; sources for every number are in docs/models.md. Any other model is read from its Hugging
// Face config.json (ModelFromHfConfig; docs/models.md §"Your own model").
//
// Thread-safety: presets are immutable statics; lookups are safe from any thread.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "eldr/status.h"

namespace eldr {

// Bounds on a model eldr accepts, far above any published MoE (DeepSeek-V3: 61 layers x 256
// experts; Qwen3-235B-A22B: 94 x 128): a hostile or mistyped config or file header must not make
// eldr allocate gigabytes (num_hidden_layers 6e8 did, found by fuzzing).
inline constexpr int kMaxModelLayers = 4096;                   // hidden layers
inline constexpr int64_t kMaxCountEntries = int64_t{1} << 22;  // L*E of one count table

struct ModelGeometry {
  std::string name;          // canonical lower-case id, e.g. "qwen3-30b-a3b"
  std::string display_name;  // e.g. "Qwen3-30B-A3B"
  int total_layers = 0;      // all transformer layers
  int first_moe_layer = 0;   // leading dense layers (DeepSeek-V3: 3): the first MoE layer's index
  int moe_layers = 0;        // L: layers with routed experts
  int experts = 0;           // E: routed experts per MoE layer
  int top_k = 0;             // routed experts each token selects per layer
  int shared_experts = 0;    // always-active experts (never part of a signature)
  int hidden_size = 0;
  int expert_intermediate = 0;  // one routed expert's FFN width
  double bytes_per_param = 2;   // bf16 = 2, fp8 = 1, mxfp4 ~ 4.25 bits
  int kv_block_size = 16;       // engine KV block size used by the ELDR evaluation
  // Hidden-layer index of every MoE layer, strictly ascending, moe_layers entries, for models
  // whose dense layers are interleaved with the MoE ones (Llama-4-Maverick: 1, 3, 5, ...). Empty
  // means the MoE layers are contiguous, first_moe_layer .. first_moe_layer + moe_layers - 1 (every
  // preset). When set, its first entry equals first_moe_layer.
  std::vector<int> moe_layer_ids;

  // Hidden-layer index of MoE layer `moe_index`. REQUIRES: 0 <= moe_index < moe_layers
  // (unchecked).
  int MoeLayerId(int moe_index) const {
    return moe_layer_ids.empty() ? first_moe_layer + moe_index : moe_layer_ids[moe_index];
  }
  // MoE index of hidden layer `hidden_layer`: -1 for a dense layer or one outside
  // [0, total_layers). Cost: O(log moe_layers).
  int MoeIndex(int hidden_layer) const;
  bool IsMoeLayer(int hidden_layer) const { return MoeIndex(hidden_layer) >= 0; }
  // True when the MoE layers form one run of consecutive hidden layers (only leading dense
  // layers, if any): a payload over all hidden layers then holds them at one offset.
  bool MoeLayersContiguous() const {
    return moe_layer_ids.empty() || moe_layer_ids.back() - moe_layer_ids.front() + 1 == moe_layers;
  }

  // Bytes of one routed expert's weights (gate, up and down projections).
  int64_t ExpertWeightBytes() const;
  // L*E: entries of a count table.
  int CountEntries() const { return moe_layers * experts; }
  // OK iff every field is in range (positive sizes, top_k <= experts, at most kMaxModelLayers
  // hidden layers and kMaxCountEntries count entries, layers consistent, and moe_layer_ids, when
  // set, moe_layers ascending ids in [0, total_layers) starting at first_moe_layer).
  Status Validate() const;
};

// All presets, in a fixed order.
std::span<const ModelGeometry> ModelPresets();

// Resolves what a user gives as --model: a preset name or a Hugging Face config.json.
//
// `name` is read as a file when it ends in ".json" (NotFound naming the path when there is no such
// file), or when it contains '/' and names an existing file, or an existing directory holding a
// config.json (a downloaded model). Anything else is a preset name, matched case-insensitively,
// accepting the display name, the canonical id and an optional "org/" prefix
// ("Qwen/Qwen3-30B-A3B"); NotFound lists the known names. A file is read with
// ModelFromHfConfig, its name hint taken from the path (ModelNameFromPath).
Result<ModelGeometry> FindModel(std::string_view name);

// The geometry of a Hugging Face config.json's text: the fields docs/models.md §"Your own model"
// lists, read from the top level or, when it lacks num_hidden_layers, from a nested text_config
// (multimodal configs). The geometry's name is `name_hint` (canonicalised like a preset id: lower
// case, '_' -> '-', any "org/" prefix dropped), else the config's _name_or_path, else "custom";
// the display name is the same text before lower-casing. kv_block_size is not in a config and
// keeps its default. The result passes Validate(); every error (not JSON, a missing or
// non-numeric field, an inconsistent layer map) is InvalidArgument naming the field.
Result<ModelGeometry> ModelFromHfConfig(std::string_view json, std::string_view name_hint = {});

// Reads a config.json file (or a directory's config.json) with ModelFromHfConfig. NotFound names
// a missing path; errors are prefixed with the path.
Result<ModelGeometry> ModelFromHfConfigFile(std::string_view path);

// The name hint for a config file: the directory's name for ".../NAME/config.json" (the org/name
// of a Hugging Face cache snapshot, ".../models--ORG--NAME/snapshots/HASH/config.json"), else the
// file name without ".json" ("mixtral.json" -> "mixtral").
std::string ModelNameFromPath(std::string_view path);

// A geometry as the text of one JSON object holding every field above ("name", "display_name",
// "total_layers", "first_moe_layer", "moe_layers", "experts", "top_k", "shared_experts",
// "hidden_size", "expert_intermediate", "bytes_per_param", "kv_block_size" and, when set,
// "moe_layer_ids"). Files that name a model write it beside the name (a capture's header,
// docs/formats.md), so a model read from its config.json is found again without the config.
std::string ModelGeometryToJson(const ModelGeometry& g);

// Reads ModelGeometryToJson's object. Every field is required but moe_layer_ids and
// display_name (defaulting to name); an unknown field is ignored. The result passes Validate(),
// and hidden_size, expert_intermediate and bytes_per_param must be positive. Every error is
// InvalidArgument naming the field.
Result<ModelGeometry> ModelGeometryFromJson(std::string_view json);

// The model a file's header names (a capture, a calibration file, a trace): `name`, a preset id
// that is never read as a path, and `geometry_json`, the text of the header's "geometry" object
// (ModelGeometryToJson), empty when it has none. A header naming `given` (the model the caller
// already has, -m) gives it, and a preset name the preset; a description must agree with either
// on the routing shape (FailedPrecondition naming the field). Any other name needs the
// description, which must carry the same name (InvalidArgument), else NotFound says to pass
// -m PATH/config.json.
Result<ModelGeometry> ModelFromFileHeader(std::string_view name, std::string_view geometry_json,
                                          const ModelGeometry* given = nullptr);

// The first of moe_layers, experts and top_k on which two geometries differ ("experts 128 vs
// 64"), or "" when a count table and a pick of one fits the other. Names are not compared.
std::string RoutingShapeDifference(const ModelGeometry& a, const ModelGeometry& b);

}  // namespace eldr
