// Model geometry: presets, the MoE-layer map for interleaved dense layers, the Hugging Face
// config.json reader (fixtures in tests/fixtures/models/, sources in its README.md), and the
// payload decoders taking MoE rows by the map from payloads over all hidden layers.
#include "eldr/geometry.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "eldr/payload.h"
#include "status_matchers.h"
#include "test_util.h"

namespace eldr {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using testing::AsBytes;
using ::testing::HasSubstr;
using testing::RandomPicks;

const std::string kModels = ELDR_MODEL_FIXTURE_DIR;

// Every field a config states; name, display_name and kv_block_size (not in a config.json) are
// left out.
void ExpectSameShape(const ModelGeometry& got, const ModelGeometry& want) {
  EXPECT_EQ(got.total_layers, want.total_layers) << want.name;
  EXPECT_EQ(got.first_moe_layer, want.first_moe_layer) << want.name;
  EXPECT_EQ(got.moe_layers, want.moe_layers) << want.name;
  EXPECT_EQ(got.moe_layer_ids, want.moe_layer_ids) << want.name;
  EXPECT_EQ(got.experts, want.experts) << want.name;
  EXPECT_EQ(got.top_k, want.top_k) << want.name;
  EXPECT_EQ(got.shared_experts, want.shared_experts) << want.name;
  EXPECT_EQ(got.hidden_size, want.hidden_size) << want.name;
  EXPECT_EQ(got.expert_intermediate, want.expert_intermediate) << want.name;
  EXPECT_DOUBLE_EQ(got.bytes_per_param, want.bytes_per_param) << want.name;
  EXPECT_EQ(got.ExpertWeightBytes(), want.ExpertWeightBytes()) << want.name;
}

// The error of a config that must be refused; its message must contain `needle`.
void ExpectRefused(std::string_view config, std::string_view needle) {
  auto g = ModelFromHfConfig(config, "x");
  EXPECT_THAT(g, StatusIs(StatusCode::kInvalidArgument, HasSubstr(std::string(needle)))) << config;
}

// A small MoE config with the given extra fields (a JSON fragment, leading comma included).
std::string Config(std::string_view extra = "") {
  return fmt::format(
      R"({{"num_hidden_layers": 12, "num_experts": 16, "num_experts_per_tok": 2,
          "moe_intermediate_size": 64, "hidden_size": 128{}}})",
      extra);
}

TEST(GeometryTest, PresetsAreValidAndContiguous) {
  for (const ModelGeometry& g : ModelPresets()) {
    EXPECT_TRUE(g.Validate().ok()) << g.name << ": " << g.Validate().ToString();
    EXPECT_TRUE(g.moe_layer_ids.empty()) << g.name;
    EXPECT_TRUE(g.MoeLayersContiguous()) << g.name;
  }
  const ModelGeometry d = *FindModel("deepseek-v3");
  for (int h : {-1, 0, 1, 2, 61, 99}) EXPECT_EQ(d.MoeIndex(h), -1) << h;
  EXPECT_EQ(d.MoeIndex(3), 0);
  EXPECT_EQ(d.MoeIndex(60), 57);
  EXPECT_EQ(d.MoeLayerId(0), 3);
  EXPECT_EQ(d.MoeLayerId(57), 60);
  EXPECT_FALSE(d.IsMoeLayer(2));
  EXPECT_TRUE(d.IsMoeLayer(3));
}

TEST(GeometryTest, LayerMapLooksUpBothWays) {
  ModelGeometry g = *FindModel("mixtral-8x7b");
  g.total_layers = 10;
  g.moe_layers = 5;
  g.first_moe_layer = 1;
  g.moe_layer_ids = {1, 2, 4, 7, 8};
  ASSERT_TRUE(g.Validate().ok()) << g.Validate().ToString();
  EXPECT_FALSE(g.MoeLayersContiguous());
  for (int h = -1; h <= 10; ++h) {
    const int want = h == 1 ? 0 : h == 2 ? 1 : h == 4 ? 2 : h == 7 ? 3 : h == 8 ? 4 : -1;
    EXPECT_EQ(g.MoeIndex(h), want) << h;
    EXPECT_EQ(g.IsMoeLayer(h), want >= 0) << h;
  }
  for (int l = 0; l < 5; ++l) EXPECT_EQ(g.MoeIndex(g.MoeLayerId(l)), l);
  // Ids that happen to be contiguous take the contiguous path.
  g.moe_layer_ids = {1, 2, 3, 4, 5};
  EXPECT_TRUE(g.MoeLayersContiguous());
}

TEST(GeometryTest, ValidateChecksTheLayerMap) {
  ModelGeometry g = *FindModel("mixtral-8x7b");
  g.total_layers = 10;
  g.moe_layers = 3;
  g.first_moe_layer = 1;
  auto refused = [&](std::vector<int> ids, std::string_view needle) {
    ModelGeometry b = g;
    b.moe_layer_ids = std::move(ids);
    EXPECT_THAT(b.Validate(),
                StatusIs(StatusCode::kInvalidArgument, HasSubstr(std::string(needle))));
  };
  refused({1, 3}, "2 MoE layer ids for 3 MoE layers");
  refused({2, 3, 5}, "is not first_moe_layer 1");
  refused({1, 5, 5}, "entry 2 is 5");
  refused({1, 5, 4}, "entry 2 is 4");
  refused({1, 5, 10}, "within [0, 10); entry 2 is 10");
  ModelGeometry ok = g;
  ok.moe_layer_ids = {1, 5, 9};
  EXPECT_TRUE(ok.Validate().ok()) << ok.Validate().ToString();
}

// ---- config.json ---------------------------------------------------------------------------

TEST(HfConfigTest, FixturesOfPresetModelsGiveThePresets) {
  const std::pair<const char*, const char*> cases[] = {{"Qwen3-30B-A3B", "qwen3-30b-a3b"},
                                                       {"DeepSeek-V3", "deepseek-v3"},
                                                       {"gpt-oss-120b", "gpt-oss-120b"},
                                                       {"Mixtral-8x7B", "mixtral-8x7b"}};
  for (const auto& [dir, preset] : cases) {
    const ModelGeometry want = *FindModel(preset);
    const std::string path = kModels + "/" + dir + "/config.json";
    auto by_path = FindModel(path);
    ASSERT_TRUE(by_path.has_value()) << by_path.error().ToString();
    ExpectSameShape(*by_path, want);
    EXPECT_EQ(by_path->name, want.name);  // from the directory's name
    EXPECT_EQ(by_path->display_name, dir);
    EXPECT_EQ(by_path->kv_block_size, 16);  // not in a config.json: the default
    auto by_dir = ModelFromHfConfigFile(kModels + "/" + dir);
    ASSERT_TRUE(by_dir.has_value()) << by_dir.error().ToString();
    ExpectSameShape(*by_dir, want);
  }
}

TEST(HfConfigTest, LlamaFourMaverickHasInterleavedDenseLayersUnderTextConfig) {
  auto g = FindModel(kModels + "/Llama-4-Maverick-17B-128E-Instruct/config.json");
  ASSERT_TRUE(g.has_value()) << g.error().ToString();
  EXPECT_EQ(g->name, "llama-4-maverick-17b-128e-instruct");
  EXPECT_EQ(g->display_name, "Llama-4-Maverick-17B-128E-Instruct");
  EXPECT_EQ(g->total_layers, 48);  // text_config's, not vision_config's 34
  EXPECT_EQ(g->moe_layers, 24);
  EXPECT_EQ(g->first_moe_layer, 1);
  std::vector<int> odd;
  for (int i = 1; i < 48; i += 2) odd.push_back(i);
  EXPECT_EQ(g->moe_layer_ids, odd);
  EXPECT_EQ(g->experts, 128);
  EXPECT_EQ(g->top_k, 1);
  EXPECT_EQ(g->shared_experts, 1);
  EXPECT_EQ(g->hidden_size, 5120);          // not vision_config's 1408
  EXPECT_EQ(g->expert_intermediate, 8192);  // not intermediate_size_mlp
  EXPECT_DOUBLE_EQ(g->bytes_per_param, 2.0);
  EXPECT_FALSE(g->IsMoeLayer(0));
  EXPECT_TRUE(g->IsMoeLayer(1));
  EXPECT_EQ(g->MoeIndex(47), 23);
  EXPECT_TRUE(g->Validate().ok());
}

TEST(HfConfigTest, DenseLayerRulesOfEachFamily) {
  // Qwen2-MoE: MoE iff i not in mlp_only_layers and (i + 1) % decoder_sparse_step == 0; a
  // shared expert of its own width counts as one.
  auto q = ModelFromHfConfig(Config(R"(, "decoder_sparse_step": 2, "mlp_only_layers": [5, 0],
                                         "shared_expert_intermediate_size": 5632)"),
                             "qwen2-moe");
  ASSERT_TRUE(q.has_value()) << q.error().ToString();
  EXPECT_EQ(q->moe_layer_ids, (std::vector<int>{1, 3, 7, 9, 11}));
  EXPECT_EQ(q->moe_layers, 5);
  EXPECT_EQ(q->first_moe_layer, 1);
  EXPECT_EQ(q->shared_experts, 1);
  // DeepSeek: MoE iff i >= first_k_dense_replace and i % moe_layer_freq == 0.
  auto d = ModelFromHfConfig(Config(R"(, "first_k_dense_replace": 1, "moe_layer_freq": 2,
                                         "n_shared_experts": 2)"),
                             "ds");
  ASSERT_TRUE(d.has_value()) << d.error().ToString();
  EXPECT_EQ(d->moe_layer_ids, (std::vector<int>{2, 4, 6, 8, 10}));
  EXPECT_EQ(d->shared_experts, 2);
  // Leading dense layers only: the contiguous form, as the presets have it.
  auto lead = ModelFromHfConfig(Config(R"(, "first_k_dense_replace": 3, "moe_layer_freq": 1)"));
  ASSERT_TRUE(lead.has_value()) << lead.error().ToString();
  EXPECT_TRUE(lead->moe_layer_ids.empty());
  EXPECT_EQ(lead->first_moe_layer, 3);
  EXPECT_EQ(lead->moe_layers, 9);
  // mlp_only_layers at the end only: contiguous from 0.
  auto tail = ModelFromHfConfig(Config(R"(, "mlp_only_layers": [10, 11])"));
  ASSERT_TRUE(tail.has_value()) << tail.error().ToString();
  EXPECT_TRUE(tail->moe_layer_ids.empty());
  EXPECT_EQ(tail->moe_layers, 10);
  EXPECT_EQ(tail->total_layers, 12);
  // Llama-4 at the top level, every 3rd layer.
  auto l4 = ModelFromHfConfig(
      Config(R"(, "interleave_moe_layer_step": 3, "model_type": "llama4_text")"), "l4");
  ASSERT_TRUE(l4.has_value()) << l4.error().ToString();
  EXPECT_EQ(l4->moe_layer_ids, (std::vector<int>{2, 5, 8, 11}));
  EXPECT_EQ(l4->shared_experts, 1);
  // JSON nulls are absent fields (Hugging Face writes None as null).
  auto nulls = ModelFromHfConfig(
      Config(R"(, "mlp_only_layers": null, "n_shared_experts": null, "torch_dtype": null)"));
  ASSERT_TRUE(nulls.has_value()) << nulls.error().ToString();
  EXPECT_EQ(nulls->moe_layers, 12);
  EXPECT_EQ(nulls->shared_experts, 0);
}

TEST(HfConfigTest, ExpertWidthAndCountSpellings) {
  // Mixtral: no moe_intermediate_size; intermediate_size is the expert's width.
  auto m = ModelFromHfConfig(
      R"({"num_hidden_layers": 4, "num_local_experts": 8, "num_experts_per_tok": 2,
          "intermediate_size": 14336, "hidden_size": 4096})");
  ASSERT_TRUE(m.has_value()) << m.error().ToString();
  EXPECT_EQ(m->experts, 8);
  EXPECT_EQ(m->expert_intermediate, 14336);
  // moe_intermediate_size wins over intermediate_size (the dense layers' width).
  auto q = ModelFromHfConfig(Config(R"(, "intermediate_size": 999)"));
  ASSERT_TRUE(q.has_value());
  EXPECT_EQ(q->expert_intermediate, 64);
  auto f = ModelFromHfConfig(Config(R"(, "first_k_dense_replace": 2.0)"));  // integral double
  ASSERT_TRUE(f.has_value()) << f.error().ToString();
  EXPECT_EQ(f->first_moe_layer, 2);
  // DeepSeek's n_routed_experts.
  auto d = ModelFromHfConfig(
      R"({"num_hidden_layers": 4, "n_routed_experts": 64, "num_experts_per_tok": 6,
          "moe_intermediate_size": 1408, "hidden_size": 2048})");
  ASSERT_TRUE(d.has_value()) << d.error().ToString();
  EXPECT_EQ(d->experts, 64);
  EXPECT_EQ(d->top_k, 6);
}

TEST(HfConfigTest, BytesPerParameterFromQuantizationOrDtype) {
  auto bytes = [](std::string_view extra) {
    auto g = ModelFromHfConfig(Config(extra));
    EXPECT_TRUE(g.has_value()) << extra << ": " << g.error().ToString();
    return g ? g->bytes_per_param : -1;
  };
  EXPECT_DOUBLE_EQ(bytes(""), 2.0);
  EXPECT_DOUBLE_EQ(bytes(R"(, "torch_dtype": "float16")"), 2.0);
  EXPECT_DOUBLE_EQ(bytes(R"(, "dtype": "bfloat16")"), 2.0);
  EXPECT_DOUBLE_EQ(bytes(R"(, "torch_dtype": "float32")"), 4.0);
  EXPECT_DOUBLE_EQ(bytes(R"(, "torch_dtype": "bfloat16",
                            "quantization_config": {"quant_method": "fp8"})"),
                   1.0);
  EXPECT_DOUBLE_EQ(bytes(R"(, "quantization_config": {"quant_method": "fbgemm_fp8"})"), 1.0);
  EXPECT_DOUBLE_EQ(bytes(R"(, "quantization_config": {"quant_method": "mxfp4"})"), 4.25 / 8);
  EXPECT_DOUBLE_EQ(bytes(R"(, "quantization_config": {"quant_method": "gptq", "bits": 4})"), 0.5);
  ExpectRefused(Config(R"(, "quantization_config": {"quant_method": "bitsandbytes"})"),
                "'quantization_config.quant_method' is 'bitsandbytes'");
  ExpectRefused(Config(R"(, "torch_dtype": "int3")"), "'torch_dtype' is 'int3'");
  ExpectRefused(Config(R"(, "torch_dtype": 16)"), "'torch_dtype' must be a string");
}

TEST(HfConfigTest, NamesFromTheHintTheConfigOrCustom) {
  auto hinted = ModelFromHfConfig(Config(R"(, "_name_or_path": "org/Other")"), "Org/My_Model");
  ASSERT_TRUE(hinted.has_value());
  EXPECT_EQ(hinted->name, "my-model");
  EXPECT_EQ(hinted->display_name, "My_Model");
  auto from_config = ModelFromHfConfig(Config(R"(, "_name_or_path": "/models/Org/Foo-MoE/")"));
  ASSERT_TRUE(from_config.has_value());
  EXPECT_EQ(from_config->name, "foo-moe");
  EXPECT_EQ(from_config->display_name, "Foo-MoE");
  auto custom = ModelFromHfConfig(Config());
  ASSERT_TRUE(custom.has_value());
  EXPECT_EQ(custom->name, "custom");
  EXPECT_EQ(ModelNameFromPath("/data/Foo-MoE/config.json"), "Foo-MoE");
  EXPECT_EQ(ModelNameFromPath("/data/Foo-MoE/./config.json"), "Foo-MoE");
  EXPECT_EQ(ModelNameFromPath("/data/mixtral.json"), "mixtral");
  EXPECT_EQ(ModelNameFromPath("/hf/hub/models--Qwen--Qwen3-30B-A3B/snapshots/"
                              "ad44e777bcd18fa416d9da3bd8f70d33ebb85d39/config.json"),
            "Qwen/Qwen3-30B-A3B");
}

TEST(HfConfigTest, RefusesUnknownOrInconsistentConfigsNamingTheField) {
  ExpectRefused("{\"num_hidden_layers\": 4,", "not valid JSON");
  ExpectRefused("[1, 2]", "must be a JSON object");
  ExpectRefused(R"({"num_hidden_layers": 4, "num_experts_per_tok": 2, "hidden_size": 8,
                    "intermediate_size": 8})",
                "no routed-expert count ('num_experts' or 'n_routed_experts' or "
                "'num_local_experts')");
  ExpectRefused(R"({"num_hidden_layers": 4, "num_experts": 0, "num_experts_per_tok": 2,
                    "hidden_size": 8, "intermediate_size": 8})",
                "0 routed experts: a dense model");
  ExpectRefused(R"({"num_experts": 8, "num_experts_per_tok": 2, "hidden_size": 8,
                    "intermediate_size": 8})",
                "no layer count ('num_hidden_layers')");
  ExpectRefused(R"({"num_hidden_layers": 4, "num_experts": 8, "hidden_size": 8,
                    "intermediate_size": 8})",
                "no top-k ('num_experts_per_tok' or 'experts_per_token')");
  ExpectRefused(R"({"num_hidden_layers": 4, "num_experts": 8, "num_experts_per_tok": 2,
                    "hidden_size": 8})",
                "no expert FFN width ('moe_intermediate_size' or 'intermediate_size')");
  ExpectRefused(R"({"num_hidden_layers": 4, "num_experts": 16, "num_experts_per_tok": 17,
                    "hidden_size": 8, "intermediate_size": 8})",
                "'num_experts_per_tok' is 17, more than the 16 routed experts");
  ExpectRefused(R"({"num_hidden_layers": "48", "num_experts": 8, "num_experts_per_tok": 2,
                    "hidden_size": 8, "intermediate_size": 8})",
                "'num_hidden_layers' must be an integer, got \"48\"");
  ExpectRefused(Config(R"(, "first_k_dense_replace": 1e300)"),
                "'first_k_dense_replace' must be an integer, got 1E300");
  ExpectRefused(Config(R"(, "first_k_dense_replace": 2.5)"),
                "'first_k_dense_replace' must be an integer, got 2.5");
  ExpectRefused(Config(R"(, "moe_layer_freq": 0)"), "'moe_layer_freq' is 0, outside [1, 2^30]");
  // Sizes no model has are refused before anything is allocated for them (the fuzzer's
  // num_hidden_layers 6e8 took 2.2 GB).
  ExpectRefused(R"({"num_hidden_layers": 6e8, "num_experts": 8, "num_experts_per_tok": 2,
                    "hidden_size": 8, "intermediate_size": 8})",
                "'num_hidden_layers' is 600000000; at most 4096 layers are supported");
  ExpectRefused(R"({"num_hidden_layers": 4096, "num_experts": 65535, "num_experts_per_tok": 2,
                    "hidden_size": 8, "intermediate_size": 8})",
                "4096 MoE layers x 65535 experts is more than the 4194304 count entries");
  EXPECT_TRUE(ModelFromHfConfig(R"({"num_hidden_layers": 4096, "num_experts": 1024,
                                    "num_experts_per_tok": 8, "hidden_size": 8,
                                    "intermediate_size": 8})",
                                "x")
                  .has_value());
  ExpectRefused(Config(R"(, "decoder_sparse_step": true)"), "'decoder_sparse_step' must be an");
  ExpectRefused(Config(R"(, "mlp_only_layers": [3, 12])"),
                "'mlp_only_layers' holds 12, not a layer index in [0, 12)");
  ExpectRefused(Config(R"(, "mlp_only_layers": [-1])"), "'mlp_only_layers' holds -1");
  ExpectRefused(Config(R"(, "mlp_only_layers": 3)"), "'mlp_only_layers' must be a list");
  ExpectRefused(Config(R"(, "first_k_dense_replace": 13)"),
                "'first_k_dense_replace' is 13 but the model has 12 layers");
  ExpectRefused(Config(R"(, "first_k_dense_replace": 12)"),
                "leaves none of its 12 layers with routed experts");
  ExpectRefused(Config(R"(, "interleave_moe_layer_step": 13)"), "leaves none of its 12 layers");
  ExpectRefused(Config(R"(, "mlp_only_layers": [0,1,2,3,4,5,6,7,8,9,10,11])"),
                "leaves none of its 12 layers");
  ExpectRefused(R"({"text_config": [1]})", "'text_config' must be an object");
  // Inside text_config, messages name the nested field.
  ExpectRefused(R"({"text_config": {"num_hidden_layers": 4, "num_local_experts": 4,
                    "num_experts_per_tok": 8, "hidden_size": 8, "intermediate_size": 8}})",
                "'text_config.num_experts_per_tok' is 8, more than the 4 routed experts");
}

TEST(HfConfigTest, FindModelReadsPathsAndKeepsPresetNames) {
  // A path ending in .json is always a file; a missing one names the path.
  auto missing = FindModel("no/such/dir/config.json");
  ASSERT_THAT(missing,
              StatusIs(StatusCode::kNotFound, HasSubstr("'no/such/dir/config.json' not found")));
  EXPECT_EQ(FindModel("missing.JSON").error().code(), StatusCode::kNotFound);
  // An org/name that is no file is still a preset name.
  auto preset = FindModel("Qwen/Qwen3-30B-A3B");
  ASSERT_TRUE(preset.has_value()) << preset.error().ToString();
  EXPECT_EQ(preset->name, "qwen3-30b-a3b");
  auto unknown = FindModel("no/such-model");
  ASSERT_THAT(unknown,
              StatusIs(StatusCode::kNotFound, AllOf(HasSubstr("unknown model 'no/such-model'"),
                                                    HasSubstr("Hugging Face config.json"))));
  // A directory with a config.json (a downloaded model), and one without.
  auto dir = FindModel(kModels + "/DeepSeek-V3");
  ASSERT_TRUE(dir.has_value()) << dir.error().ToString();
  EXPECT_EQ(dir->name, "deepseek-v3");
  auto empty = FindModel(kModels);
  ASSERT_THAT(empty, StatusIs(StatusCode::kNotFound, HasSubstr("directory without a config.json")));
  // A file not called config.json, and a broken one: the error names the file and the field.
  const fs::path tmp = fs::temp_directory_path() / fmt::format("eldr-geom-{}", ::getpid());
  fs::create_directories(tmp);
  std::ofstream(tmp / "My_MoE.json") << Config(R"(, "decoder_sparse_step": 2)");
  auto named = FindModel((tmp / "My_MoE.json").string());
  ASSERT_TRUE(named.has_value()) << named.error().ToString();
  EXPECT_EQ(named->name, "my-moe");
  EXPECT_EQ(named->moe_layers, 6);
  std::ofstream(tmp / "bad.json") << R"({"num_hidden_layers": 4})";
  auto bad = FindModel((tmp / "bad.json").string());
  ASSERT_THAT(bad, StatusIs(StatusCode::kInvalidArgument,
                            HasSubstr((tmp / "bad.json").string() + ": config has no routed")));
  fs::remove_all(tmp);
}

// ---- payloads over all hidden layers of a model with interleaved dense layers ---------------

ExpertCounts Reference(const ModelGeometry& g, const std::vector<int32_t>& picks) {
  ExpertCounts c(g.moe_layers, g.experts);
  const size_t row = static_cast<size_t>(g.moe_layers) * g.top_k;
  for (size_t t = 0; t < picks.size() / row; ++t) {
    EXPECT_TRUE(c.AddToken(std::span(picks.data() + t * row, row), g.top_k).ok());
  }
  return c;
}

// 10 hidden layers, MoE at 1, 2, 4, 7, 8: dense rows at 0, 3, 5, 6, 9.
ModelGeometry Interleaved() {
  ModelGeometry g;
  g.name = g.display_name = "interleaved";
  g.total_layers = 10;
  g.moe_layers = 5;
  g.first_moe_layer = 1;
  g.moe_layer_ids = {1, 2, 4, 7, 8};
  g.experts = 32;
  g.top_k = 4;
  g.hidden_size = 64;
  g.expert_intermediate = 32;
  return g;
}

// What dense rows hold: ids a decoder reading them would count (valid, distinct, but always
// experts 0-3 — unlike any MoE row's counts), or ids outside [0, E) it would refuse.
enum class Garbage { kCountable, kOutOfRange };

// MoE picks [tokens, moe_layers, k] spread over all hidden layers, dense rows of garbage.
std::vector<int32_t> AllLayers(const ModelGeometry& g, const std::vector<int32_t>& moe,
                               Garbage garbage) {
  const size_t k = g.top_k, row = static_cast<size_t>(g.moe_layers) * k;
  std::vector<int32_t> out;
  for (size_t t = 0; t < moe.size() / row; ++t) {
    for (int h = 0; h < g.total_layers; ++h) {
      const int l = g.MoeIndex(h);
      for (size_t j = 0; j < k; ++j) {
        if (l >= 0) {
          out.push_back(moe[t * row + l * k + j]);
        } else {
          out.push_back(garbage == Garbage::kCountable ? static_cast<int32_t>(j) : 200 + h);
        }
      }
    }
  }
  return out;
}

std::string Npy(const ModelGeometry& g, const std::vector<int32_t>& all, char kind, int size) {
  const int64_t tokens = static_cast<int64_t>(all.size()) / (g.total_layers * g.top_k);
  std::vector<uint8_t> data = size == 1   ? AsBytes<uint8_t>(all)
                              : size == 2 ? AsBytes<uint16_t>(all)
                                          : AsBytes<int32_t>(all);
  const std::vector<int64_t> shape = {tokens, g.total_layers, g.top_k};
  return Base64Encode(MakeNpy(kind, size, shape, data));
}

std::string JsonList(const ModelGeometry& g, const std::vector<int32_t>& all) {
  std::string s = "[";
  const size_t k = g.top_k, layers = g.total_layers;
  for (size_t t = 0; t < all.size() / (layers * k); ++t) {
    s += t ? ",[" : "[";
    for (size_t h = 0; h < layers; ++h) {
      s += h ? ",[" : "[";
      for (size_t j = 0; j < k; ++j) {
        s += (j ? "," : "") + std::to_string(all[(t * layers + h) * k + j]);
      }
      s += "]";
    }
    s += "]";
  }
  return s + "]";
}

class InterleavedPayloadTest : public ::testing::TestWithParam<Garbage> {};

TEST_P(InterleavedPayloadTest, DecodersCountTheMoeRowsOnly) {
  const ModelGeometry g = Interleaved();
  ASSERT_TRUE(g.Validate().ok());
  Rng rng(7);
  const std::vector<int32_t> moe = RandomPicks(g, 23, rng);
  const std::vector<int32_t> all = AllLayers(g, moe, GetParam());
  const ExpertCounts want = Reference(g, moe);
  auto check = [&](const Result<PickTable>& t, std::string_view what) {
    ASSERT_TRUE(t.has_value()) << what << ": " << t.error().ToString();
    EXPECT_EQ(t->tokens(), 23) << what;
    EXPECT_EQ(t->layers(), g.moe_layers) << what;
    EXPECT_EQ(t->Counts(), want) << what;
    for (int64_t tok : {0, 11, 22}) {
      for (int l = 0; l < g.moe_layers; ++l) {
        for (int j = 0; j < g.top_k; ++j) {
          ASSERT_EQ(t->Pick(tok, l, j), moe[(tok * g.moe_layers + l) * g.top_k + j])
              << what << " token " << tok << " layer " << l << " slot " << j;
        }
      }
    }
    ExpertCounts split(g.moe_layers, g.experts);
    ASSERT_TRUE(t->AccumulateRows(0, 9, &split).ok());
    ASSERT_TRUE(t->AccumulateRows(9, 23, &split).ok());
    EXPECT_EQ(split, want) << what;
  };
  check(DecodeVllmRoutedExperts(Npy(g, all, 'u', 1), g), "vLLM u1");
  check(DecodeVllmRoutedExperts(Npy(g, all, 'u', 2), g), "vLLM u2");
  check(DecodeVllmRoutedExperts(Npy(g, all, 'i', 4), g), "vLLM i4");
  PayloadOptions po;
  po.payload_layers = g.total_layers;
  check(DecodeSglangRoutedExperts(Base64Encode(AsBytes<int32_t>(all)), g, po), "SGLang");
  check(ParsePickListJson(JsonList(g, all), g), "pick list");
  auto prompt = ParsePromptPickListJson(JsonList(g, all), g);
  ASSERT_TRUE(prompt.has_value()) << prompt.error().ToString();
  EXPECT_EQ(prompt->rows, 23);
  EXPECT_EQ(prompt->leading_unknown, 0);
  check(prompt->picks, "prompt pick list");
}

TEST_P(InterleavedPayloadTest, PromptListsJudgeUnknownRowsByTheMoeEntriesOnly) {
  const ModelGeometry g = Interleaved();
  Rng rng(8);
  const std::vector<int32_t> moe = RandomPicks(g, 6, rng);
  std::vector<int32_t> all = AllLayers(g, moe, GetParam());
  const size_t row = static_cast<size_t>(g.total_layers) * g.top_k;
  // Tokens 0-1: a cached prefix, -1 in every MoE entry while the dense rows keep their garbage.
  for (size_t t = 0; t < 2; ++t) {
    for (int h = 0; h < g.total_layers; ++h) {
      if (!g.IsMoeLayer(h)) continue;
      for (int j = 0; j < g.top_k; ++j) all[t * row + h * g.top_k + j] = -1;
    }
  }
  // Token 4: -1 in a dense row only is still a known row.
  all[4 * row + 3 * g.top_k] = -1;
  auto l = ParsePromptPickListJson(JsonList(g, all), g);
  ASSERT_TRUE(l.has_value()) << l.error().ToString();
  EXPECT_EQ(l->rows, 6);
  EXPECT_EQ(l->leading_unknown, 2);
  EXPECT_EQ(l->other_unknown, 0);
  std::vector<int32_t> known(moe.begin() + 2 * g.moe_layers * g.top_k, moe.end());
  EXPECT_EQ(l->picks.Counts(), Reference(g, known));
  // -1 in one MoE entry of a known row is refused.
  all[5 * row + 7 * g.top_k + 1] = -1;
  auto mixed = ParsePromptPickListJson(JsonList(g, all), g);
  ASSERT_THAT(mixed, StatusIs(StatusCode::kInvalidArgument, HasSubstr("token 5 mixes -1")));
}

INSTANTIATE_TEST_SUITE_P(DenseRows, InterleavedPayloadTest,
                         ::testing::Values(Garbage::kCountable, Garbage::kOutOfRange),
                         [](const ::testing::TestParamInfo<Garbage>& i) {
                           return i.param == Garbage::kCountable ? "Countable" : "OutOfRange";
                         });

TEST(InterleavedPayloadTest, EldrSigOverAllHiddenLayersTakesTheMoeRows) {
  const ModelGeometry g = Interleaved();
  std::vector<int16_t> all(static_cast<size_t>(g.total_layers) * g.experts);
  ExpertCounts want(g.moe_layers, g.experts);
  for (int h = 0; h < g.total_layers; ++h) {
    for (int e = 0; e < g.experts; ++e) {
      const int l = g.MoeIndex(h);
      const int16_t v = static_cast<int16_t>(l >= 0 ? 10 * l + e % 7 : 1000 + h);  // dense: junk
      all[static_cast<size_t>(h) * g.experts + e] = v;
      if (l >= 0) want.at(l, e) = static_cast<uint32_t>(v);
    }
  }
  std::vector<uint8_t> bytes(all.size() * 2);
  std::memcpy(bytes.data(), all.data(), bytes.size());
  auto raw = DecodeEldrSig(Base64Encode(bytes), g);
  ASSERT_TRUE(raw.has_value()) << raw.error().ToString();
  EXPECT_EQ(*raw, want);
  const std::vector<int64_t> shape = {g.total_layers, g.experts};
  auto npy = DecodeEldrSig(Base64Encode(MakeNpy('i', 2, shape, bytes)), g);
  ASSERT_TRUE(npy.has_value()) << npy.error().ToString();
  EXPECT_EQ(*npy, want);
}

// The contiguous path is unchanged: leading dense layers only, given either way.
TEST(InterleavedPayloadTest, LeadingDenseLayersGivenAsIdsDecodeAlike) {
  ModelGeometry g = Interleaved();
  g.moe_layer_ids = {3, 4, 5, 6, 7};
  g.first_moe_layer = 3;
  ModelGeometry plain = g;
  plain.moe_layer_ids.clear();
  Rng rng(9);
  const std::vector<int32_t> moe = RandomPicks(g, 5, rng);
  const std::vector<int32_t> all = AllLayers(plain, moe, Garbage::kCountable);
  for (const ModelGeometry* m : {&g, &plain}) {
    auto t = DecodeVllmRoutedExperts(Npy(*m, all, 'u', 1), *m);
    ASSERT_TRUE(t.has_value()) << t.error().ToString();
    EXPECT_EQ(t->Counts(), Reference(g, moe));
  }
}

}  // namespace
}  // namespace eldr
