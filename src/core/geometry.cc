#include "eldr/geometry.h"

#include <algorithm>
#include <cctype>
#include <string>

namespace eldr {

namespace {

// Sources for every figure: docs/models.md.
const ModelGeometry kPresets[] = {
    // name, display, total, first_moe, L, E, k, shared, hidden, expert_ffn, bytes/param, block
    {"qwen3-30b-a3b", "Qwen3-30B-A3B", 48, 0, 48, 128, 8, 0, 2048, 768, 2.0, 16},
    {"qwen3-235b-a22b", "Qwen3-235B-A22B", 94, 0, 94, 128, 8, 0, 4096, 1536, 2.0, 16},
    {"gpt-oss-120b", "GPT-OSS-120B", 36, 0, 36, 128, 4, 0, 2880, 2880, 4.25 / 8, 64},
    {"gpt-oss-20b", "GPT-OSS-20B", 24, 0, 24, 32, 4, 0, 2880, 2880, 4.25 / 8, 16},
    {"gemma-4-26b-a4b", "Gemma-4-26B-A4B", 30, 0, 30, 128, 8, 1, 2112, 704, 2.0, 16},
    {"deepseek-v3", "DeepSeek-V3", 61, 3, 58, 256, 8, 1, 7168, 2048, 1.0, 64},
    {"mixtral-8x7b", "Mixtral-8x7B", 32, 0, 32, 8, 2, 0, 4096, 14336, 2.0, 16},
    {"olmoe-1b-7b", "OLMoE-1B-7B", 16, 0, 16, 64, 8, 0, 2048, 1024, 2.0, 16},
};

std::string Canon(std::string_view s) {
  if (auto slash = s.rfind('/'); slash != std::string_view::npos) s.remove_prefix(slash + 1);
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return c == '_' ? '-' : std::tolower(c); });
  return out;
}

}  // namespace

int64_t ModelGeometry::ExpertWeightBytes() const {
  return static_cast<int64_t>(3.0 * hidden_size * expert_intermediate * bytes_per_param);
}

Status ModelGeometry::Validate() const {
  if (moe_layers <= 0 || experts <= 0 || top_k <= 0) {
    return InvalidArgument("model '{}': layers, experts and top_k must be positive", name).error();
  }
  if (top_k > experts) {
    return InvalidArgument("model '{}': top_k {} exceeds {} experts", name, top_k, experts).error();
  }
  if (experts > 65535) return InvalidArgument("model '{}': too many experts", name).error();
  if (first_moe_layer < 0 || total_layers < first_moe_layer + moe_layers) {
    return InvalidArgument("model '{}': {} total layers cannot hold {} dense + {} MoE layers", name,
                           total_layers, first_moe_layer, moe_layers)
        .error();
  }
  if (kv_block_size <= 0) return InvalidArgument("model '{}': bad KV block size", name).error();
  return Status::Ok();
}

std::span<const ModelGeometry> ModelPresets() { return kPresets; }

Result<ModelGeometry> FindModel(std::string_view name) {
  const std::string want = Canon(name);
  for (const auto& g : kPresets) {
    if (g.name == want || Canon(g.display_name) == want) return g;
  }
  std::string known;
  for (const auto& g : kPresets) known += (known.empty() ? "" : ", ") + g.name;
  return NotFound("unknown model '{}'; known models: {}", name, known);
}

}  // namespace eldr
