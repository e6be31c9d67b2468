// Files that name a model describe it too: a capture of a model read from its config.json is
// found again by `eldr fit` / `eldr simulate --trace` without the config (ModelGeometryToJson,
// the calibration header's "geometry").
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <string>
#include <vector>

#include "eldr/calibration.h"
#include "eldr/geometry.h"
#include "eldr/sim/trace.h"
#include "status_matchers.h"

namespace eldr {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

const std::string kModels = ELDR_MODEL_FIXTURE_DIR;

void ExpectSameGeometry(const ModelGeometry& a, const ModelGeometry& b) {
  EXPECT_EQ(a.name, b.name);
  EXPECT_EQ(a.display_name, b.display_name);
  EXPECT_EQ(a.total_layers, b.total_layers);
  EXPECT_EQ(a.first_moe_layer, b.first_moe_layer);
  EXPECT_EQ(a.moe_layers, b.moe_layers);
  EXPECT_EQ(a.experts, b.experts);
  EXPECT_EQ(a.top_k, b.top_k);
  EXPECT_EQ(a.shared_experts, b.shared_experts);
  EXPECT_EQ(a.hidden_size, b.hidden_size);
  EXPECT_EQ(a.expert_intermediate, b.expert_intermediate);
  EXPECT_EQ(a.bytes_per_param, b.bytes_per_param);
  EXPECT_EQ(a.kv_block_size, b.kv_block_size);
  EXPECT_EQ(a.moe_layer_ids, b.moe_layer_ids);
}

// A model that is no preset: 4 hidden layers, MoE at 1 and 3, 16 experts, top-2.
ModelGeometry Custom() {
  ModelGeometry g;
  g.name = "my-moe";
  g.display_name = "My_MoE";
  g.total_layers = 4;
  g.first_moe_layer = 1;
  g.moe_layers = 2;
  g.experts = 16;
  g.top_k = 2;
  g.hidden_size = 256;
  g.expert_intermediate = 128;
  g.bytes_per_param = 1;
  g.moe_layer_ids = {1, 3};
  return g;
}

std::string Zeros(int layers, int experts, int hot) {
  std::string rows = "[";
  for (int l = 0; l < layers; ++l) {
    rows += l ? ",[" : "[";
    for (int e = 0; e < experts; ++e) rows += (e ? "," : "") + std::to_string(e == hot ? 3 : 0);
    rows += "]";
  }
  return rows + "]";
}

std::string Header(const std::string& model, const std::string& geometry_json) {
  std::string h = R"({"format":"eldr.calibration","version":1,"model":")" + model + "\"";
  if (!geometry_json.empty()) h += ",\"geometry\":" + geometry_json;
  return h + "}\n";
}

TEST(ModelGeometryJsonTest, EveryPresetAndConfigRoundTrips) {
  std::vector<ModelGeometry> all(ModelPresets().begin(), ModelPresets().end());
  all.push_back(Custom());
  auto llama = FindModel(kModels + "/Llama-4-Maverick-17B-128E-Instruct/config.json");
  ASSERT_THAT(llama, IsOk());
  ASSERT_FALSE(llama->moe_layer_ids.empty());
  all.push_back(*llama);
  for (const auto& g : all) {
    SCOPED_TRACE(g.name);
    auto back = ModelGeometryFromJson(ModelGeometryToJson(g));
    ASSERT_THAT(back, IsOk());
    ExpectSameGeometry(*back, g);
    EXPECT_EQ(RoutingShapeDifference(*back, g), "");
  }
}

TEST(ModelGeometryJsonTest, RefusesBadDescriptionsNamingTheField) {
  auto with = [](const char* key, boost::json::value v) {
    boost::json::object o = boost::json::parse(ModelGeometryToJson(Custom())).as_object();
    if (v.is_null()) {
      o.erase(key);
    } else {
      o[key] = std::move(v);
    }
    return ModelGeometryFromJson(boost::json::serialize(o));
  };
  EXPECT_THAT(ModelGeometryFromJson("[1]"),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("not a JSON object")));
  EXPECT_THAT(with("experts", nullptr),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("'experts' is missing")));
  EXPECT_THAT(with("top_k", "2"),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("'top_k' must be an integer")));
  EXPECT_THAT(with("top_k", 17),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("top_k 17 exceeds 16 experts")));
  EXPECT_THAT(with("moe_layer_ids", boost::json::array{3, 1}),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("MoE layer id")));
  EXPECT_THAT(with("bytes_per_param", -1),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("'bytes_per_param'")));
  EXPECT_THAT(with("hidden_size", 0),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("'hidden_size'")));
  EXPECT_THAT(with("name", ""), StatusIs(StatusCode::kInvalidArgument, HasSubstr("'name'")));
  // A header may not describe sizes no model has: layers past the bound, or count tables of
  // 16,777,216 x 16 entries.
  EXPECT_THAT(with("total_layers", 1 << 24),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("at most 4096 are supported")));
  EXPECT_THAT(with("moe_layers", 1 << 24),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("x 16 experts is more than")));
  boost::json::object huge = boost::json::parse(ModelGeometryToJson(Custom())).as_object();
  huge["total_layers"] = 4096;
  huge["moe_layers"] = 4096;
  huge["experts"] = 65535;
  EXPECT_THAT(ModelGeometryFromJson(boost::json::serialize(huge)),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("4194304 count entries")));
  EXPECT_THAT(with("display_name", nullptr),
              IsOkAndHolds(testing::Field(&ModelGeometry::display_name, "my-moe")));
}

TEST(CalibrationHeaderGeometryTest, ACaptureOfAModelThatIsNoPresetReadsWithoutTheConfig) {
  const ModelGeometry g = Custom();
  const std::string text = Header(g.name, ModelGeometryToJson(g)) + R"({"id":"a","prefill":)" +
                           Zeros(2, 16, 5) + "}\n" + Header(g.name, ModelGeometryToJson(g)) +
                           R"({"id":"b","prefill":)" + Zeros(2, 16, 7) + "}\n";
  auto set = ParseCalibrationJsonl(text);
  ASSERT_THAT(set, IsOk());
  ExpectSameGeometry(set->geometry, g);
  EXPECT_EQ(set->model, "my-moe");
  ASSERT_EQ(set->requests.size(), 2u);
  EXPECT_EQ(set->requests[1].prefill.at(1, 7), 3u);

  // Without the description the name alone cannot be found, and the error says what to do.
  const std::string bare = Header(g.name, "") + R"({"id":"a","prefill":)" + Zeros(2, 16, 5) + "}\n";
  EXPECT_THAT(ParseCalibrationJsonl(bare),
              StatusIs(StatusCode::kNotFound, HasSubstr("pass -m PATH/config.json")));
  // Given the geometry (-m), the bare header is accepted as before, and one naming another
  // model that is no preset is a file for another model.
  EXPECT_THAT(ParseCalibrationJsonl(bare, &g), IsOk());
  const std::string other =
      Header("your-moe", "") + R"({"id":"a","prefill":)" + Zeros(2, 16, 5) + "}\n";
  EXPECT_THAT(ParseCalibrationJsonl(other, &g),
              StatusIs(StatusCode::kFailedPrecondition,
                       HasSubstr("file is calibration data for your-moe, not My_MoE")));
}

TEST(CalibrationHeaderGeometryTest, ADescriptionThatContradictsTheModelIsRefused) {
  ModelGeometry other = Custom();
  other.experts = 32;
  const std::string rec = R"({"id":"a","prefill":)" + Zeros(2, 16, 5) + "}\n";
  // Against the geometry given with -m.
  const ModelGeometry given = Custom();
  EXPECT_THAT(ParseCalibrationJsonl(Header("my-moe", ModelGeometryToJson(other)) + rec, &given),
              StatusIs(StatusCode::kFailedPrecondition, HasSubstr("experts 32 vs 16")));
  // Against a preset of the same name.
  ModelGeometry fake = *FindModel("qwen3-30b-a3b");
  fake.experts = 64;
  EXPECT_THAT(ParseCalibrationJsonl(Header("qwen3-30b-a3b", ModelGeometryToJson(fake)) + rec),
              StatusIs(StatusCode::kFailedPrecondition, HasSubstr("experts 64 vs 128")));
  // A description naming another model than the header's.
  EXPECT_THAT(ParseCalibrationJsonl(Header("your-moe", ModelGeometryToJson(Custom())) + rec),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("for 'my-moe'")));
  // A preset's own description is accepted and changes nothing.
  const ModelGeometry q = *FindModel("qwen3-30b-a3b");
  const std::string qrec = R"({"id":"a","prefill":)" + Zeros(48, 128, 5) + "}\n";
  auto set = ParseCalibrationJsonl(Header(q.name, ModelGeometryToJson(q)) + qrec);
  ASSERT_THAT(set, IsOk());
  ExpectSameGeometry(set->geometry, q);
}

TEST(CalibrationHeaderGeometryTest, AHeaderNeverMakesEldrReadAFile) {
  // A real config.json on disk, named by a header: refused as a name, not read.
  const std::string path = kModels + "/Mixtral-8x7B/config.json";
  ASSERT_THAT(FindModel(path), IsOk());
  const std::string rec = R"({"id":"a","prefill":)" + Zeros(32, 8, 1) + "}\n";
  EXPECT_THAT(ParseCalibrationJsonl(Header(path, "") + rec),
              StatusIs(StatusCode::kNotFound, HasSubstr("is not a model name")));
}

TEST(TraceHeaderGeometryTest, ATraceOfAModelThatIsNoPresetReadsBack) {
  sim::Trace t;
  t.geometry = Custom();
  t.source = "test";
  t.prefix_tokens = 1;
  sim::TraceRequest r;
  r.label = "code";
  r.prompt_tokens = 5;
  r.tokens = 2;
  r.picks = {0, 1, 2, 3, 4, 5, 6, 7};  // [2 tokens][2 MoE layers][top-2]
  t.requests.push_back(r);
  const std::vector<uint8_t> bytes = sim::SerializeTrace(t);
  auto back = sim::ParseTrace(bytes);
  ASSERT_THAT(back, IsOk());
  ExpectSameGeometry(back->geometry, t.geometry);
  ASSERT_EQ(back->requests.size(), 1u);
  EXPECT_EQ(back->requests[0].picks, r.picks);
  // A preset keeps reading as the preset.
  t.geometry = *FindModel("gpt-oss-20b");
  t.requests[0].picks.assign(2 * 24 * 4, 0);
  for (size_t i = 0; i < t.requests[0].picks.size(); ++i) t.requests[0].picks[i] = i % 4;
  auto preset = sim::ParseTrace(sim::SerializeTrace(t));
  ASSERT_THAT(preset, IsOk());
  ExpectSameGeometry(preset->geometry, t.geometry);
}

TEST(ModelFromFileHeaderTest, PresetsDescriptionsAndPaths) {
  EXPECT_THAT(ModelFromFileHeader("qwen3-30b-a3b", ""),
              IsOkAndHolds(testing::Field(&ModelGeometry::experts, 128)));
  EXPECT_THAT(ModelFromFileHeader("my-moe", ModelGeometryToJson(Custom())),
              IsOkAndHolds(testing::Field(&ModelGeometry::moe_layer_ids, std::vector<int>{1, 3})));
  EXPECT_THAT(ModelFromFileHeader("my-moe", ""),
              StatusIs(StatusCode::kNotFound,
                       AllOf(HasSubstr("pass -m PATH/config.json"), HasSubstr("known models"))));
  EXPECT_THAT(ModelFromFileHeader(kModels + "/Mixtral-8x7B", ""),
              StatusIs(StatusCode::kNotFound, HasSubstr("is not a model name")));
  EXPECT_THAT(ModelFromFileHeader("", ""),
              StatusIs(StatusCode::kNotFound, HasSubstr("is not a model name")));
}

}  // namespace
}  // namespace eldr
