#include "eldr/geometry.h"

#include <algorithm>
#include <boost/json.hpp>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>

namespace eldr {

namespace fs = std::filesystem;
namespace json = boost::json;

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

std::string_view LastComponent(std::string_view s) {
  if (auto slash = s.rfind('/'); slash != std::string_view::npos) s.remove_prefix(slash + 1);
  return s;
}

std::string Canon(std::string_view s) {
  std::string out(LastComponent(s));
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return c == '_' ? '-' : std::tolower(c); });
  return out;
}

bool EndsWithJson(std::string_view s) {
  return s.size() >= 5 && Canon(s.substr(s.size() - 5)) == ".json";
}

// ---- config.json reading ---------------------------------------------------------------------

// The config object the model fields are read from: the top level, or text_config for a
// multimodal config whose top level lacks num_hidden_layers. `where` prefixes field names in
// messages ("text_config.").
struct ConfigView {
  const json::object* text = nullptr;
  const json::object* top = nullptr;
  std::string where;

  // The field, or null when absent or JSON null (Hugging Face writes None as null).
  const json::value* Find(std::string_view key) const {
    const json::value* v = text->if_contains(key);
    return v && !v->is_null() ? v : nullptr;
  }
  // From the text object, else the top level (dtype and quantization fields).
  const json::value* FindAnywhere(std::string_view key) const {
    if (const json::value* v = Find(key)) return v;
    const json::value* v = top->if_contains(key);
    return v && !v->is_null() ? v : nullptr;
  }
  std::string Name(std::string_view key) const { return where + std::string(key); }

  // The integer value of `key`: nullopt when absent; InvalidArgument when present but not an
  // integer in [lo, 2^30].
  Result<std::optional<int>> Int(std::string_view key, int lo) const {
    const json::value* v = Find(key);
    if (v == nullptr) return std::optional<int>();
    int64_t x = 0;
    if (v->is_int64()) {
      x = v->get_int64();
    } else if (v->is_uint64()) {
      x = v->get_uint64() > (uint64_t{1} << 40) ? int64_t{1} << 40
                                                : static_cast<int64_t>(v->get_uint64());
    } else if (v->is_double() && std::fabs(v->get_double()) < 1e12 &&
               v->get_double() == std::floor(v->get_double())) {
      x = static_cast<int64_t>(v->get_double());  // 2048.0
    } else {
      std::string text = json::serialize(*v);
      if (text.size() > 40) text = text.substr(0, 37) + "...";
      return InvalidArgument("config field '{}' must be an integer, got {}", Name(key), text);
    }
    if (x < lo || x > (int64_t{1} << 30)) {
      return InvalidArgument("config field '{}' is {}, outside [{}, 2^30]", Name(key), x, lo);
    }
    return std::optional<int>(static_cast<int>(x));
  }
  // The first of `keys` present; InvalidArgument naming them all when none is.
  Result<int> Required(std::initializer_list<std::string_view> keys, int lo,
                       std::string_view what) const {
    for (std::string_view k : keys) {
      ELDR_ASSIGN_OR_RETURN(std::optional<int> v, Int(k, lo));
      if (v) return *v;
    }
    std::string names;
    for (std::string_view k : keys) names += (names.empty() ? "'" : " or '") + Name(k) + "'";
    return InvalidArgument("config has no {} ({})", what, names);
  }
};

// Bytes per routed-expert parameter: quantization_config.quant_method first, else the dtype.
Result<double> BytesPerParam(const ConfigView& c) {
  if (const json::value* q = c.FindAnywhere("quantization_config")) {
    if (!q->is_object())
      return InvalidArgument("config field 'quantization_config' must be an object");
    const json::value* m = q->get_object().if_contains("quant_method");
    if (m == nullptr || !m->is_string()) {
      return InvalidArgument("config field 'quantization_config.quant_method' must be a string");
    }
    const std::string method = Canon(std::string_view(m->get_string()));
    if (method == "mxfp4") return 4.25 / 8;  // 4-bit values plus an 8-bit scale per 32
    if (method.find("fp8") != std::string::npos) return 1.0;  // fp8, fbgemm-fp8
    if (const json::value* b = q->get_object().if_contains("bits");
        b && b->is_int64() && b->get_int64() >= 1 && b->get_int64() <= 16) {
      return static_cast<double>(b->get_int64()) / 8;  // GPTQ, AWQ: scales not counted
    }
    return InvalidArgument(
        "config field 'quantization_config.quant_method' is '{}': not fp8 or mxfp4, and no "
        "integer 'bits' beside it",
        std::string_view(m->get_string()));
  }
  const json::value* d = c.FindAnywhere("torch_dtype");
  std::string_view key = "torch_dtype";
  if (d == nullptr) {
    d = c.FindAnywhere("dtype");  // the name newer transformers releases write
    key = "dtype";
  }
  if (d == nullptr) return 2.0;  // bf16, the usual release dtype
  if (!d->is_string()) return InvalidArgument("config field '{}' must be a string", key);
  const std::string t = Canon(std::string_view(d->get_string()));
  if (t == "bfloat16" || t == "float16" || t == "bf16" || t == "fp16" || t == "half") return 2.0;
  if (t == "float32" || t == "fp32" || t == "float") return 4.0;
  if (t.rfind("float8", 0) == 0 || t == "fp8") return 1.0;
  return InvalidArgument("config field '{}' is '{}': not a dtype this reader knows", key,
                         std::string_view(d->get_string()));
}

// Which hidden layers have routed experts, by each family's rule; the rules of other families
// are absent from a config and so change nothing.
Result<std::vector<int>> MoeLayerIds(const ConfigView& c, int layers) {
  std::vector<bool> moe(layers, true);
  // DeepSeek: layer i is MoE iff i >= first_k_dense_replace and i % moe_layer_freq == 0.
  ELDR_ASSIGN_OR_RETURN(std::optional<int> first_dense, c.Int("first_k_dense_replace", 0));
  if (first_dense) {
    if (*first_dense > layers) {
      return InvalidArgument("config field '{}' is {} but the model has {} layers",
                             c.Name("first_k_dense_replace"), *first_dense, layers);
    }
    for (int i = 0; i < *first_dense; ++i) moe[i] = false;
  }
  ELDR_ASSIGN_OR_RETURN(std::optional<int> freq, c.Int("moe_layer_freq", 1));
  if (freq) {
    for (int i = 0; i < layers; ++i) moe[i] = moe[i] && i % *freq == 0;
  }
  // Qwen2-MoE / Qwen3-MoE: MoE iff i not in mlp_only_layers and (i + 1) % decoder_sparse_step
  // == 0. Llama-4's interleave_moe_layer_step follows the same (i + 1) rule.
  for (std::string_view key : {"decoder_sparse_step", "interleave_moe_layer_step"}) {
    ELDR_ASSIGN_OR_RETURN(std::optional<int> step, c.Int(key, 1));
    if (step) {
      for (int i = 0; i < layers; ++i) moe[i] = moe[i] && (i + 1) % *step == 0;
    }
  }
  if (const json::value* only = c.Find("mlp_only_layers")) {
    if (!only->is_array()) {
      return InvalidArgument("config field '{}' must be a list of layer indices",
                             c.Name("mlp_only_layers"));
    }
    for (const json::value& x : only->get_array()) {
      if (!x.is_int64() || x.get_int64() < 0 || x.get_int64() >= layers) {
        return InvalidArgument("config field '{}' holds {}, not a layer index in [0, {})",
                               c.Name("mlp_only_layers"), json::serialize(x), layers);
      }
      moe[static_cast<size_t>(x.get_int64())] = false;
    }
  }
  std::vector<int> ids;
  for (int i = 0; i < layers; ++i) {
    if (moe[i]) ids.push_back(i);
  }
  if (ids.empty()) {
    return InvalidArgument(
        "config leaves none of its {} layers with routed experts (first_k_dense_replace, "
        "moe_layer_freq, decoder_sparse_step, mlp_only_layers, interleave_moe_layer_step)",
        layers);
  }
  return ids;
}

bool IsHex40(std::string_view s) {
  return s.size() == 40 && std::all_of(s.begin(), s.end(), [](unsigned char c) {
           return std::isdigit(c) || (c >= 'a' && c <= 'f');
         });
}

}  // namespace

int64_t ModelGeometry::ExpertWeightBytes() const {
  return static_cast<int64_t>(3.0 * hidden_size * expert_intermediate * bytes_per_param);
}

int ModelGeometry::MoeIndex(int hidden_layer) const {
  if (moe_layer_ids.empty()) {
    const int l = hidden_layer - first_moe_layer;
    return l >= 0 && l < moe_layers ? l : -1;
  }
  auto it = std::lower_bound(moe_layer_ids.begin(), moe_layer_ids.end(), hidden_layer);
  return it != moe_layer_ids.end() && *it == hidden_layer
             ? static_cast<int>(it - moe_layer_ids.begin())
             : -1;
}

Status ModelGeometry::Validate() const {
  if (moe_layers <= 0 || experts <= 0 || top_k <= 0) {
    return InvalidArgument("model '{}': layers, experts and top_k must be positive", name).error();
  }
  if (top_k > experts) {
    return InvalidArgument("model '{}': top_k {} exceeds {} experts", name, top_k, experts).error();
  }
  if (experts > 65535) return InvalidArgument("model '{}': too many experts", name).error();
  if (total_layers > kMaxModelLayers) {
    return InvalidArgument("model '{}': {} layers; at most {} are supported", name, total_layers,
                           kMaxModelLayers)
        .error();
  }
  if (int64_t{moe_layers} * experts > kMaxCountEntries) {
    return InvalidArgument(
               "model '{}': {} MoE layers x {} experts is more than the {} count entries "
               "supported",
               name, moe_layers, experts, kMaxCountEntries)
        .error();
  }
  if (first_moe_layer < 0 || total_layers < first_moe_layer + moe_layers) {
    return InvalidArgument("model '{}': {} total layers cannot hold {} dense + {} MoE layers", name,
                           total_layers, first_moe_layer, moe_layers)
        .error();
  }
  if (!moe_layer_ids.empty()) {
    if (moe_layer_ids.size() != static_cast<size_t>(moe_layers)) {
      return InvalidArgument("model '{}': {} MoE layer ids for {} MoE layers", name,
                             moe_layer_ids.size(), moe_layers)
          .error();
    }
    if (moe_layer_ids.front() != first_moe_layer) {
      return InvalidArgument("model '{}': the first MoE layer id {} is not first_moe_layer {}",
                             name, moe_layer_ids.front(), first_moe_layer)
          .error();
    }
    for (size_t i = 0; i < moe_layer_ids.size(); ++i) {
      const int id = moe_layer_ids[i];
      if (id < 0 || id >= total_layers || (i > 0 && id <= moe_layer_ids[i - 1])) {
        return InvalidArgument(
                   "model '{}': MoE layer ids must ascend strictly within [0, {}); entry {} is {}",
                   name, total_layers, i, id)
            .error();
      }
    }
  }
  if (kv_block_size <= 0) return InvalidArgument("model '{}': bad KV block size", name).error();
  return Status::Ok();
}

std::span<const ModelGeometry> ModelPresets() { return kPresets; }

Result<ModelGeometry> FindModel(std::string_view name) {
  if (EndsWithJson(name)) return ModelFromHfConfigFile(name);
  if (name.find('/') != std::string_view::npos) {
    std::error_code ec;
    const fs::path p{std::string(name)};
    if (fs::is_regular_file(p, ec)) return ModelFromHfConfigFile(name);
    if (fs::is_directory(p, ec)) {
      if (fs::is_regular_file(p / "config.json", ec)) return ModelFromHfConfigFile(name);
      return NotFound("'{}' is a directory without a config.json", name);
    }
  }
  const std::string want = Canon(name);
  for (const auto& g : kPresets) {
    if (g.name == want || Canon(g.display_name) == want) return g;
  }
  std::string known;
  for (const auto& g : kPresets) known += (known.empty() ? "" : ", ") + g.name;
  return NotFound(
      "unknown model '{}'; known models: {} (or give the path of a Hugging Face config.json)", name,
      known);
}

Result<ModelGeometry> ModelFromHfConfig(std::string_view text, std::string_view name_hint) {
  boost::system::error_code ec;
  json::value v = json::parse(json::string_view(text.data(), text.size()), ec);
  if (ec) return InvalidArgument("config is not valid JSON ({})", ec.message());
  if (!v.is_object()) return InvalidArgument("config must be a JSON object");
  ConfigView c;
  c.top = &v.get_object();
  c.text = c.top;
  if (const json::value* t = c.top->if_contains("text_config");
      t != nullptr && !t->is_null() && !c.top->contains("num_hidden_layers")) {
    if (!t->is_object()) return InvalidArgument("config field 'text_config' must be an object");
    c.text = &t->get_object();
    c.where = "text_config.";
  }
  ModelGeometry g;
  ELDR_ASSIGN_OR_RETURN(g.total_layers, c.Required({"num_hidden_layers"}, 1, "layer count"));
  if (g.total_layers > kMaxModelLayers) {  // before the per-layer map is built
    return InvalidArgument("config field '{}' is {}; at most {} layers are supported",
                           c.Name("num_hidden_layers"), g.total_layers, kMaxModelLayers);
  }
  ELDR_ASSIGN_OR_RETURN(g.experts,
                        c.Required({"num_experts", "n_routed_experts", "num_local_experts"}, 0,
                                   "routed-expert count"));
  if (g.experts == 0) {
    return InvalidArgument("config has 0 routed experts: a dense model, not a mixture of experts");
  }
  if (g.experts > 65535) {
    return InvalidArgument("config has {} routed experts; at most 65535 are supported", g.experts);
  }
  ELDR_ASSIGN_OR_RETURN(g.top_k,
                        c.Required({"num_experts_per_tok", "experts_per_token"}, 1, "top-k"));
  if (g.top_k > g.experts) {
    return InvalidArgument("config field '{}' is {}, more than the {} routed experts",
                           c.Name("num_experts_per_tok"), g.top_k, g.experts);
  }
  ELDR_ASSIGN_OR_RETURN(g.hidden_size, c.Required({"hidden_size"}, 1, "hidden size"));
  ELDR_ASSIGN_OR_RETURN(
      g.expert_intermediate,
      c.Required({"moe_intermediate_size", "intermediate_size"}, 1, "expert FFN width"));
  ELDR_ASSIGN_OR_RETURN(std::optional<int> shared, c.Int("n_shared_experts", 0));
  ELDR_ASSIGN_OR_RETURN(std::optional<int> shared_width,
                        c.Int("shared_expert_intermediate_size", 0));
  const json::value* type = c.Find("model_type");
  const bool llama4 = type != nullptr && type->is_string() &&
                      std::string_view(type->get_string()).substr(0, 6) == "llama4";
  if (shared) {
    g.shared_experts = *shared;
  } else if (shared_width) {
    g.shared_experts = *shared_width > 0 ? 1 : 0;
  } else {
    g.shared_experts = llama4 ? 1 : 0;  // every Llama-4 MoE layer has one shared expert
  }
  ELDR_ASSIGN_OR_RETURN(g.bytes_per_param, BytesPerParam(c));
  ELDR_ASSIGN_OR_RETURN(std::vector<int> ids, MoeLayerIds(c, g.total_layers));
  g.moe_layers = static_cast<int>(ids.size());
  g.first_moe_layer = ids.front();
  if (ids.back() - ids.front() + 1 != g.moe_layers) g.moe_layer_ids = std::move(ids);

  std::string_view display = LastComponent(name_hint);
  if (display.size() > 5 && EndsWithJson(display)) display.remove_suffix(5);
  std::string from_config;
  if (display.empty()) {
    if (const json::value* n = c.top->if_contains("_name_or_path"); n && n->is_string()) {
      std::string_view s(n->get_string());
      while (!s.empty() && s.back() == '/') s.remove_suffix(1);
      from_config = std::string(LastComponent(s));
      display = from_config;
    }
  }
  if (display.empty()) display = "custom";
  g.display_name = std::string(display);
  g.name = Canon(display);
  ELDR_RETURN_IF_ERROR(g.Validate());
  return g;
}

Result<ModelGeometry> ModelFromHfConfigFile(std::string_view path) {
  std::error_code ec;
  fs::path p{std::string(path)};
  if (fs::is_directory(p, ec)) p /= "config.json";
  if (!fs::exists(p, ec)) {
    return NotFound(
        "model config '{}' not found (a --model ending in .json or naming a file is "
        "read as a Hugging Face config.json)",
        p.string());
  }
  std::ifstream in(p, std::ios::binary);
  if (!in) return NotFound("cannot open model config '{}'", p.string());
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return DataLoss("error reading model config '{}'", p.string());
  auto g = ModelFromHfConfig(text.str(), ModelNameFromPath(p.string()));
  if (!g) return Error{g.error().WithContext(p.string())};
  return g;
}

std::string ModelNameFromPath(std::string_view path) {
  fs::path p = fs::path(std::string(path)).lexically_normal();
  if (!p.has_filename()) p = p.parent_path();  // a trailing '/'
  const std::string file = p.filename().string();
  if (file != "config.json") {
    return EndsWithJson(file) ? file.substr(0, file.size() - 5) : file;
  }
  fs::path dir = p.parent_path();
  if (dir.empty() || !dir.has_filename() || dir.filename() == "." || dir.filename() == "..") {
    std::error_code ec;
    dir = fs::absolute(p, ec).lexically_normal().parent_path();
  }
  const std::string name = dir.filename().string();
  // A Hugging Face cache snapshot: models--ORG--NAME/snapshots/<commit>/config.json.
  const fs::path up = dir.parent_path();
  const std::string repo = up.parent_path().filename().string();
  if (IsHex40(name) && up.filename() == "snapshots" && repo.rfind("models--", 0) == 0) {
    std::string id = repo.substr(8);
    if (const size_t sep = id.find("--"); sep != std::string::npos) id.replace(sep, 2, "/");
    return id;
  }
  return name;
}

std::string ModelGeometryToJson(const ModelGeometry& g) {
  json::object o{{"name", g.name},
                 {"display_name", g.display_name},
                 {"total_layers", g.total_layers},
                 {"first_moe_layer", g.first_moe_layer},
                 {"moe_layers", g.moe_layers},
                 {"experts", g.experts},
                 {"top_k", g.top_k},
                 {"shared_experts", g.shared_experts},
                 {"hidden_size", g.hidden_size},
                 {"expert_intermediate", g.expert_intermediate},
                 {"bytes_per_param", g.bytes_per_param},
                 {"kv_block_size", g.kv_block_size}};
  if (!g.moe_layer_ids.empty()) {
    json::array ids;
    for (int id : g.moe_layer_ids) ids.push_back(id);
    o["moe_layer_ids"] = std::move(ids);
  }
  return json::serialize(o);
}

Result<ModelGeometry> ModelGeometryFromJson(std::string_view text) {
  boost::system::error_code ec;
  const json::value v = json::parse(json::string_view(text.data(), text.size()), ec);
  if (ec || !v.is_object()) return InvalidArgument("model geometry: not a JSON object");
  const json::object& o = v.get_object();
  ModelGeometry g;
  const auto* name = o.if_contains("name");
  if (name == nullptr || !name->is_string() || name->get_string().empty()) {
    return InvalidArgument("model geometry: 'name' must be a non-empty string");
  }
  g.name = std::string(name->get_string());
  g.display_name = g.name;
  if (const auto* d = o.if_contains("display_name"); d != nullptr) {
    if (!d->is_string()) return InvalidArgument("model geometry: 'display_name' must be a string");
    g.display_name = std::string(d->get_string());
  }
  const std::pair<const char*, int*> ints[] = {{"total_layers", &g.total_layers},
                                               {"first_moe_layer", &g.first_moe_layer},
                                               {"moe_layers", &g.moe_layers},
                                               {"experts", &g.experts},
                                               {"top_k", &g.top_k},
                                               {"shared_experts", &g.shared_experts},
                                               {"hidden_size", &g.hidden_size},
                                               {"expert_intermediate", &g.expert_intermediate},
                                               {"kv_block_size", &g.kv_block_size}};
  for (const auto& [key, field] : ints) {
    const auto* f = o.if_contains(key);
    if (f == nullptr) return InvalidArgument("model geometry: '{}' is missing", key);
    if (!f->is_int64() || f->get_int64() < 0 || f->get_int64() > (1 << 24)) {
      return InvalidArgument("model geometry: '{}' must be an integer in [0, 2^24]", key);
    }
    *field = static_cast<int>(f->get_int64());
  }
  const auto* bpp = o.if_contains("bytes_per_param");
  if (bpp == nullptr) return InvalidArgument("model geometry: 'bytes_per_param' is missing");
  if (!bpp->is_number())
    return InvalidArgument("model geometry: 'bytes_per_param' must be a number");
  g.bytes_per_param = bpp->to_number<double>();
  if (!std::isfinite(g.bytes_per_param) || g.bytes_per_param <= 0 || g.bytes_per_param > 8) {
    return InvalidArgument("model geometry: 'bytes_per_param' must be in (0, 8]");
  }
  if (g.hidden_size <= 0 || g.expert_intermediate <= 0) {
    return InvalidArgument("model geometry: 'hidden_size' and 'expert_intermediate' must be > 0");
  }
  if (const auto* ids = o.if_contains("moe_layer_ids"); ids != nullptr) {
    if (!ids->is_array()) return InvalidArgument("model geometry: 'moe_layer_ids' must be a list");
    for (const auto& id : ids->get_array()) {
      if (!id.is_int64() || id.get_int64() < 0 || id.get_int64() > (1 << 24)) {
        return InvalidArgument("model geometry: 'moe_layer_ids' must hold layer indices");
      }
      g.moe_layer_ids.push_back(static_cast<int>(id.get_int64()));
    }
  }
  if (Status s = g.Validate(); !s.ok()) return Error{s.WithContext("model geometry")};
  return g;
}

Result<ModelGeometry> ModelFromFileHeader(std::string_view name, std::string_view geometry_json,
                                          const ModelGeometry* given) {
  std::optional<ModelGeometry> described;
  if (!geometry_json.empty()) {
    ELDR_ASSIGN_OR_RETURN(ModelGeometry d, ModelGeometryFromJson(geometry_json));
    if (d.name != name) {
      return InvalidArgument("the header's geometry is for '{}', its model '{}'", d.name, name);
    }
    described = std::move(d);
  }
  auto checked = [&](const ModelGeometry& known) -> Result<ModelGeometry> {
    if (described) {
      if (const std::string diff = RoutingShapeDifference(*described, known); !diff.empty()) {
        return FailedPrecondition(
            "the header describes {} with another shape than the model's ({}, file vs model)", name,
            diff);
      }
    }
    return known;
  };
  // The caller's model (-m, perhaps read from its config.json) needs no preset.
  if (given != nullptr && name == given->name) return checked(*given);
  // A header names a model; it never makes eldr read a file.
  if (name.find('/') != std::string_view::npos || EndsWithJson(name) || name.empty()) {
    return NotFound("'{}' in a file's header is not a model name", name);
  }
  Result<ModelGeometry> preset = FindModel(name);
  if (preset) return checked(*preset);
  if (described) return *described;
  return Error{preset.error().WithContext(
      "the file's header names no preset and does not describe its model; pass -m "
      "PATH/config.json")};
}

std::string RoutingShapeDifference(const ModelGeometry& a, const ModelGeometry& b) {
  const std::pair<const char*, std::pair<int, int>> ints[] = {
      {"moe_layers", {a.moe_layers, b.moe_layers}},
      {"experts", {a.experts, b.experts}},
      {"top_k", {a.top_k, b.top_k}}};
  for (const auto& [key, v] : ints) {
    if (v.first != v.second) return fmt::format("{} {} vs {}", key, v.first, v.second);
  }
  return {};
}

}  // namespace eldr
