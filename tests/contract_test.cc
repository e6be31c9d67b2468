// Contract tests: prefill response bodies shaped exactly as vLLM, SGLang and the ELDR engine hooks
// build them (tests/fixtures/engines/make_fixtures.py, which cites each engine's source and PR
// and serialises with numpy as the engines do) decode to the prompt's true expert counts.
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <fstream>
#include <sstream>

#include "eldr/geometry.h"
#include "eldr/server/pd.h"
#include "engine_fixtures.h"
#include "status_matchers.h"

namespace eldr::server {
namespace {

namespace json = boost::json;
using ::testing::HasSubstr;

using ::eldr::testing::ReadEngineFixture;

std::string ReadFixture(const std::string& name) { return ReadEngineFixture(name); }
ExpertCounts CountsFrom(const json::value& v) { return testing::CountsFromJson(v); }

struct Expected {
  int64_t prompt_tokens, cached, start;
  ExpertCounts all, after_cached, after_start;
};

Expected Load(const std::string& model) {
  const json::value e = json::parse(ReadFixture("expected.json")).at(model);
  return {e.at("prompt_tokens").as_int64(),
          e.at("cached").as_int64(),
          e.at("start").as_int64(),
          CountsFrom(e.at("counts")),
          CountsFrom(e.at("counts_after_cached")),
          CountsFrom(e.at("counts_after_start"))};
}

// The counts a result stands for: the eldr_sig table or the picks' rows.
ExpertCounts Of(const PrefillResult& r) { return r.counts ? *r.counts : r.picks->Counts(); }

class EngineShapes : public ::testing::TestWithParam<std::string> {};

TEST_P(EngineShapes, EveryShapeDecodesToThePromptCounts) {
  const std::string model = GetParam();
  const ModelGeometry g = *FindModel(model);
  const Expected want = Load(model);
  struct Case {
    const char* fixture;
    SignatureSource source;
  };
  for (const Case& c :
       {Case{"vllm-0.22-completion", SignatureSource::kVllm},
        Case{"vllm-0.22-chat", SignatureSource::kVllm}, Case{"vllm-int32", SignatureSource::kVllm},
        Case{"vllm-0.21", SignatureSource::kVllm021}, Case{"sglang", SignatureSource::kSglang},
        Case{"eldr-hooks", SignatureSource::kEldrHooks}}) {
    SCOPED_TRACE(c.fixture);
    const std::string body = ReadFixture(model + "." + c.fixture + ".json");
    ASSERT_FALSE(body.empty());
    auto r = ParsePrefillResponse(body, g, {});
    ASSERT_TRUE(r) << r.error().ToString();
    EXPECT_EQ(r->source, c.source);
    EXPECT_EQ(r->rejected, "");
    EXPECT_FALSE(r->partial);
    EXPECT_EQ(r->picks_first_token, 0);
    EXPECT_EQ(r->prompt_tokens, want.prompt_tokens);
    EXPECT_EQ(Of(*r), want.all);
    // The decode leg must never receive the hooks' counts.
    if (!r->kv_transfer_params.empty()) {
      const json::object kv = json::parse(r->kv_transfer_params).as_object();
      EXPECT_FALSE(kv.contains("eldr_sig"));
      EXPECT_EQ(kv.at("remote_block_ids").as_array().size(), 3u);
    }
    // Pinned to its own source it decodes the same; pinned elsewhere it finds nothing.
    PrefillRequestInfo pinned;
    pinned.pin = c.source;
    auto p = ParsePrefillResponse(body, g, {}, pinned);
    ASSERT_TRUE(p);
    EXPECT_EQ(p->source, c.source);
    pinned.pin = c.source == SignatureSource::kSglang ? SignatureSource::kEldrHooks
                                                      : SignatureSource::kSglang;
    p = ParsePrefillResponse(body, g, {}, pinned);
    ASSERT_TRUE(p);
    EXPECT_EQ(p->source, SignatureSource::kNone);
  }
}

TEST_P(EngineShapes, RowsAskedFromAStartAreLabelledByWhatTheEngineDid) {
  const std::string model = GetParam();
  const ModelGeometry g = *FindModel(model);
  const Expected want = Load(model);
  PrefillRequestInfo info;
  info.prompt_tokens = want.prompt_tokens;
  info.routed_experts_start = want.start;
  // vLLM with PR #51906 trims the rows: they start at the asked token.
  auto r = ParsePrefillResponse(ReadFixture(model + ".vllm-0.22-start-honoured.json"), g, {}, info);
  ASSERT_TRUE(r) << r.error().ToString();
  EXPECT_EQ(r->picks_first_token, want.start);
  EXPECT_EQ(r->picks->Counts(), want.after_start);
  // vLLM without it ignores the field: every row comes back, starting at 0, not at `start`.
  r = ParsePrefillResponse(ReadFixture(model + ".vllm-0.22-completion.json"), g, {}, info);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->picks_first_token, 0);
  EXPECT_EQ(r->picks->Counts(), want.all);
  // SGLang's routed_experts_start_len rows.
  r = ParsePrefillResponse(ReadFixture(model + ".sglang-start.json"), g, {}, info);
  ASSERT_TRUE(r) << r.error().ToString();
  EXPECT_EQ(r->source, SignatureSource::kSglang);
  EXPECT_EQ(r->picks_first_token, want.start);
  EXPECT_EQ(r->picks->Counts(), want.after_start);
  // Rows that fit neither the request nor the whole prompt are never trusted.
  info.prompt_tokens = want.prompt_tokens + 5;
  r = ParsePrefillResponse(ReadFixture(model + ".vllm-0.22-start-honoured.json"), g, {}, info);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->source, SignatureSource::kNone);
  EXPECT_FALSE(r->picks);
  EXPECT_NE(r->rejected.find("rows for a prompt of"), std::string::npos) << r->rejected;
  // So are rows one short or one too many (an off-by-one check would shift every later count),
  // trimmed from the start or whole.
  for (const int64_t start : {want.start, int64_t{0}}) {
    info.routed_experts_start = start;
    const std::string fixture =
        model + (start > 0 ? ".vllm-0.22-start-honoured.json" : ".vllm-0.22-completion.json");
    for (const int64_t off : {-1, 1}) {
      info.prompt_tokens = want.prompt_tokens + off;
      r = ParsePrefillResponse(ReadFixture(fixture), g, {}, info);
      ASSERT_TRUE(r) << r.error().ToString();
      EXPECT_FALSE(r->picks) << fixture << " for a prompt of " << info.prompt_tokens;
      EXPECT_EQ(r->source, SignatureSource::kNone);
    }
  }
}

TEST_P(EngineShapes, Vllm021PrefixCachedRowsStartThePicksLater) {
  const std::string model = GetParam();
  const ModelGeometry g = *FindModel(model);
  const Expected want = Load(model);
  auto r = ParsePrefillResponse(ReadFixture(model + ".vllm-0.21-cached-prefix.json"), g, {});
  ASSERT_TRUE(r) << r.error().ToString();
  EXPECT_EQ(r->source, SignatureSource::kVllm021);
  EXPECT_EQ(r->picks_first_token, want.cached);
  EXPECT_FALSE(r->partial);
  EXPECT_EQ(r->picks->tokens(), want.prompt_tokens - want.cached);
  EXPECT_EQ(r->picks->Counts(), want.after_cached);
}

INSTANTIATE_TEST_SUITE_P(Models, EngineShapes, ::testing::Values("deepseek-v3", "qwen3-30b-a3b"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (char& ch : n) ch = std::isalnum(ch) ? ch : '_';
                           return n;
                         });

TEST(EngineShapesTest, Vllm021UnknownRowsInsideThePromptArePartial) {
  const ModelGeometry g = *FindModel("gpt-oss-20b");  // 24 layers, top-4
  auto row = [&](int base) {
    std::string r = "[";
    for (int l = 0; l < g.moe_layers; ++l) {
      r += fmt::format("{}[{},{},{},{}]", l ? "," : "", base, base + 1, base + 2, base + 3);
    }
    return r + "]";
  };
  std::string unknown = "[";
  for (int l = 0; l < g.moe_layers; ++l) unknown += fmt::format("{}[-1,-1,-1,-1]", l ? "," : "");
  unknown += "]";
  const std::string body = R"({"choices":[{"index":0,"routed_experts":[]}],)"
                           R"("usage":{"prompt_tokens":3},"prompt_routed_experts":[)" +
                           row(0) + "," + unknown + "," + row(4) + "]}";
  auto r = ParsePrefillResponse(body, g, {});
  ASSERT_TRUE(r) << r.error().ToString();
  EXPECT_TRUE(r->partial);
  EXPECT_EQ(r->picks->tokens(), 2);
  EXPECT_EQ(r->picks->Counts().Total(), static_cast<uint64_t>(2 * g.moe_layers * g.top_k));
  // A row that mixes -1 with ids is malformed, and so is -2.
  for (const char* first : {"[-1,1,2,3]", "[-2,1,2,3]"}) {
    std::string bad = std::string("[") + first;
    for (int l = 1; l < g.moe_layers; ++l) bad += ",[0,1,2,3]";
    bad += "]";
    const std::string b = R"({"choices":[{"index":0}],"prompt_routed_experts":[)" + bad + "]}";
    auto e = ParsePrefillResponse(b, g, {});
    const bool mixed = first[2] == '1';
    EXPECT_THAT(e, StatusIs(mixed ? StatusCode::kInvalidArgument : StatusCode::kOutOfRange,
                            HasSubstr(mixed ? "mixes -1" : "expert id -2 out of range")))
        << first;
  }
}

}  // namespace
}  // namespace eldr::server
