// -----------------------------------------------------------------------------
// File: fuzz/fuzz_util.h
// -----------------------------------------------------------------------------
// Shared pieces of the libFuzzer targets: an invariant check that names what failed, small model
// geometries (so that random bytes reach valid payloads often), and slow reference decoders that
// the production parsers are compared against. The references are written for obviousness, not
// speed, and share no code with src/.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <set>
#include <span>
#include <string_view>
#include <vector>

#include "eldr/expert_counts.h"
#include "eldr/geometry.h"

// Aborts with the failed condition (libFuzzer then saves the input as a crash).
#define ELDR_FUZZ_CHECK(cond)                                                                 \
  do {                                                                                        \
    if (!(cond)) {                                                                            \
      std::fprintf(stderr, "fuzz invariant failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__); \
      std::abort();                                                                           \
    }                                                                                         \
  } while (0)

namespace eldr::fuzz {

// Geometries the payload targets pick from: MoE layers only, leading dense layers, interleaved
// dense layers, more than 256 experts (the decoder's stamp-table path) and a real preset.
inline ModelGeometry MakeGeometry(int which) {
  ModelGeometry g;
  g.hidden_size = 64;
  g.expert_intermediate = 64;
  switch (which % 5) {
    case 0:
      g.name = g.display_name = "tiny-moe";
      g.total_layers = g.moe_layers = 3;
      g.experts = 8;
      g.top_k = 2;
      break;
    case 1:
      g.name = g.display_name = "tiny-dense-lead";
      g.total_layers = 4;
      g.first_moe_layer = 1;
      g.moe_layers = 3;
      g.experts = 8;
      g.top_k = 2;
      break;
    case 2:
      g.name = g.display_name = "tiny-interleaved";
      g.total_layers = 5;
      g.first_moe_layer = 1;
      g.moe_layers = 2;
      g.moe_layer_ids = {1, 3};
      g.experts = 6;
      g.top_k = 3;
      break;
    case 3:
      g.name = g.display_name = "tiny-wide";
      g.total_layers = g.moe_layers = 2;
      g.experts = 300;
      g.top_k = 2;
      break;
    default:
      g = *FindModel("gpt-oss-20b");
      break;
  }
  return g;
}

// Little-endian integer of `size` bytes at p, widened; signed or not.
inline int64_t RefLoad(const uint8_t* p, int size, bool is_signed) {
  uint64_t u = 0;
  for (int i = size - 1; i >= 0; --i) u = (u << 8) | p[i];
  if (is_signed && size < 8 && (u >> (8 * size - 1)) & 1) u |= ~uint64_t{0} << (8 * size);
  return static_cast<int64_t>(u);  // an unsigned 8-byte value >= 2^63 reads negative: invalid
}

inline std::vector<int64_t> RefItems(std::span<const uint8_t> data, int size, bool is_signed) {
  std::vector<int64_t> v;
  for (size_t i = 0; i + size <= data.size(); i += size) {
    v.push_back(RefLoad(data.data() + i, size, is_signed));
  }
  return v;
}

// The hidden-layer row of MoE layer l in a payload of `payload_layers` rows, or -1 when the
// payload's layer count fits neither the MoE layers nor all hidden layers.
inline int64_t RefLayerRow(const ModelGeometry& g, int64_t payload_layers, int l) {
  if (payload_layers == g.moe_layers) return l;
  if (payload_layers == g.total_layers && g.total_layers > g.moe_layers) {
    return g.moe_layer_ids.empty() ? g.first_moe_layer + l : g.moe_layer_ids[l];
  }
  return -1;
}

// Counts of picks [tokens][payload_layers][top_k]; nullopt when the layer count fits neither
// shape, an MoE-layer id is outside [0, E) or repeats within its token's layer. Dense rows are
// ignored whatever they hold.
inline std::optional<ExpertCounts> RefCounts(const std::vector<int64_t>& items, int64_t tokens,
                                             int64_t payload_layers, const ModelGeometry& g) {
  if (RefLayerRow(g, payload_layers, 0) < 0) return std::nullopt;
  if (static_cast<int64_t>(items.size()) != tokens * payload_layers * g.top_k) return std::nullopt;
  ExpertCounts c(g.moe_layers, g.experts);
  for (int64_t t = 0; t < tokens; ++t) {
    for (int l = 0; l < g.moe_layers; ++l) {
      std::set<int64_t> seen;
      for (int j = 0; j < g.top_k; ++j) {
        const int64_t id =
            items[(t * payload_layers + RefLayerRow(g, payload_layers, l)) * g.top_k + j];
        if (id < 0 || id >= g.experts || !seen.insert(id).second) return std::nullopt;
        c.at(l, static_cast<int>(id)) += 1;
      }
    }
  }
  return c;
}

// The shape a trace request's picks must have (sim/trace.h): tokens x L x top_k ids, each in
// [0, E) and none repeated within a token's layer.
inline void CheckTracePicks(int tokens, int prompt_tokens, const std::vector<uint16_t>& picks,
                            const ModelGeometry& g) {
  ELDR_FUZZ_CHECK(tokens >= 0 && prompt_tokens >= 0);
  ELDR_FUZZ_CHECK(picks.size() == static_cast<size_t>(tokens) * g.moe_layers * g.top_k);
  for (size_t at = 0; at < picks.size(); at += g.top_k) {
    std::set<uint16_t> seen;
    for (int j = 0; j < g.top_k; ++j) {
      ELDR_FUZZ_CHECK(picks[at + j] < g.experts);
      ELDR_FUZZ_CHECK(seen.insert(picks[at + j]).second);
    }
  }
}

}  // namespace eldr::fuzz
