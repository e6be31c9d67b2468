// The emulated engine's model: deterministic in the prompt, prefix-consistent, valid picks, and a
// step time equal to the cost model applied to the exact distinct experts of the batch.
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <set>

#include "eldr/emu/emulator.h"
#include "eldr/emu/model.h"
#include "eldr/payload.h"
#include "status_matchers.h"

namespace eldr::emu {
namespace {

using ::testing::HasSubstr;

std::shared_ptr<const EngineModel> MakeModel(std::string_view preset) {
  {
    const ModelGeometry g = *FindModel(preset);
    sim::WorkloadOptions wo;
    wo.requests = 32;
    wo.calibration = 0;
    wo.output_tokens = 64;
    sim::CostParams c;
    c.t0_us = 1000;
    c.layer_us = 10;
    c.expert_us = 3;
    c.token_us = 7;
    c.ctx_us = 0.01;
    c.prefill_fixed_us = 100;
    c.prefill_token_us = 2;
    return *EngineModel::Create(*sim::MakeSyntheticWorkload(g, wo), c, {});
  }
}

std::shared_ptr<const EngineModel> Model() {
  static std::shared_ptr<const EngineModel> m = MakeModel("gpt-oss-20b");
  return m;
}

TEST(EngineModelTest, TokenizerAndArchetypesAreDeterministic) {
  auto m = Model();
  const auto t1 = m->Tokenize("the quick  brown\nfox");
  EXPECT_EQ(t1.size(), 4u);
  EXPECT_EQ(t1, m->Tokenize("the quick brown fox"));
  EXPECT_EQ(m->Archetype(t1), m->Archetype(m->Tokenize("the quick brown fox")));
  std::set<int> seen;
  for (int i = 0; i < 400; ++i) seen.insert(m->Archetype(m->Tokenize(fmt::format("p{} x", i))));
  EXPECT_GT(seen.size(), 25u);  // prompts spread over the 32 archetypes
}

TEST(EngineModelTest, IdenticalPrefixesGiveIdenticalPicks) {
  auto m = Model();
  const ModelGeometry& g = m->geometry();
  const size_t row = static_cast<size_t>(g.moe_layers) * g.top_k;
  std::vector<int32_t> a = m->Tokenize(
      "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
      "sixteen seventeen eighteen");
  std::vector<int32_t> b = a;
  b.push_back(12345);
  b.push_back(99);
  const auto pa = m->PromptPicks(a), pb = m->PromptPicks(b);
  ASSERT_EQ(pa.size(), a.size() * row);
  ASSERT_EQ(pb.size(), b.size() * row);
  EXPECT_TRUE(std::equal(pa.begin(), pa.end(), pb.begin()));
  // Rows from an offset are the suffix of the full table.
  const auto tail = m->PromptPicks(b, 5);
  EXPECT_TRUE(std::equal(tail.begin(), tail.end(), pb.begin() + 5 * row));
  // A different first token changes the picks.
  std::vector<int32_t> c = a;
  c[0] ^= 1;
  EXPECT_NE(m->PromptPicks(c), pa);
  // Picks are valid: in range and distinct within a layer.
  auto table = MakePickTable(pb, g);
  ASSERT_TRUE(table) << table.error().ToString();
}

TEST(EngineModelTest, StepTimeIsTheCostModelOfTheExactDistinctExperts) {
  auto m = Model();
  const auto& w = m->workload();
  const int L = m->geometry().moe_layers, E = m->geometry().experts;
  std::vector<DecodeSeq> batch;
  for (int i = 0; i < 9; ++i) batch.push_back({i % m->archetypes(), i * 3, 100 + i});
  // Reference: a set of expert ids per layer.
  std::vector<int> distinct(L);
  for (int l = 0; l < L; ++l) {
    std::set<int> ids;
    for (const auto& s : batch) {
      const uint64_t* b =
          w.Bits(w.requests[s.archetype], static_cast<int>(s.generated % w.token_patterns), l);
      for (int e = 0; e < E; ++e) {
        if (b[e >> 6] >> (e & 63) & 1) ids.insert(e);
      }
    }
    distinct[l] = static_cast<int>(ids.size());
  }
  int64_t ctx = 0;
  for (const auto& s : batch) ctx += s.context;
  EXPECT_DOUBLE_EQ(m->StepUs(batch), m->cost().StepUs(9, ctx, distinct));
  EXPECT_EQ(m->StepUs({}), 0);
  // One sequence alone selects exactly top_k experts per layer.
  std::vector<int> one(L);
  m->StepDistinct(std::span<const DecodeSeq>(batch.data(), 1), one);
  for (int d : one) EXPECT_EQ(d, m->geometry().top_k);
}

// ---- the emulated engines' prefill answers ------------------------------------------------------

namespace json = boost::json;

std::vector<uint32_t> CountsOf(const EngineModel& m, std::span<const int32_t> tokens,
                               int64_t start = 0) {
  auto t = MakePickTable(m.PromptPicks(tokens, start), m.geometry());
  EXPECT_TRUE(t) << t.error().ToString();
  const ExpertCounts c = t->Counts();
  return {c.data().begin(), c.data().end()};
}

std::vector<uint32_t> Data(const ExpertCounts& c) { return {c.data().begin(), c.data().end()}; }

std::string PromptText(int words, std::string_view salt = "w") {
  std::string s;
  for (int i = 0; i < words; ++i) s += fmt::format("{}{} ", salt, i);
  return s;
}

EmuRequest Request(const EngineModel& m, std::string_view body, bool chat = false) {
  auto r = ParseEmuRequest(chat, body, m, 16);
  EXPECT_TRUE(r) << r.error().ToString();
  return *r;
}

struct Answer {
  int status = 0;
  json::object body;
};

Answer Prefill(const EmulatorOptions& o, const EngineModel& m, const EmuRequest& r,
               int64_t cached = 0) {
  PrefillContext c{.id = "cmpl-rid-1",
                   .created = 1700000000,
                   .model_name = m.geometry().name,
                   .engine_id = "emu-prefill-1",
                   .host = "127.0.0.1",
                   .port = 1,
                   .cached_tokens = cached};
  EXPECT_TRUE(o.Validate().ok());
  HttpAnswer a = BuildPrefillAnswer(o, m, r, c);
  json::value v = json::parse(a.body);
  return {a.status, v.as_object()};
}

EmulatorOptions Engine(std::string_view engine, std::string_view backend = "vllm") {
  EmulatorOptions o;
  o.role = "prefill";
  o.backend = std::string(backend);
  o.engine = std::string(engine);
  return o;
}

const std::string kPrefillLeg =
    R"("max_tokens":1,"return_token_ids":true,"kv_transfer_params":{"do_remote_decode":true})";

class EmuEngineTest : public ::testing::TestWithParam<const char*> {
 protected:
  std::shared_ptr<const EngineModel> model_ = MakeModel(GetParam());
};

TEST_P(EmuEngineTest, Vllm022NpyCoversAllLayersWithZeroDenseRows) {
  const EngineModel& m = *model_;
  const ModelGeometry& g = m.geometry();
  const EmuRequest r = Request(m, R"({"prompt":")" + PromptText(37) + R"(",)" + kPrefillLeg + "}");
  const auto T = static_cast<int64_t>(r.tokens.size());
  ASSERT_EQ(T, 37);
  Answer a = Prefill(Engine("vllm-0.22"), m, r);
  ASSERT_EQ(a.status, 200);
  const json::object& choice = a.body.at("choices").as_array()[0].as_object();
  const std::string_view field = choice.at("routed_experts").as_string();
  auto t = DecodeVllmRoutedExperts(field, g);
  ASSERT_TRUE(t) << t.error().ToString();
  EXPECT_EQ(t->tokens(), T);  // max_tokens=1: num_tokens - 1 = the prompt
  EXPECT_EQ(Data(t->Counts()), CountsOf(m, r.tokens));
  std::vector<uint8_t> bytes;
  ASSERT_TRUE(Base64Decode(field, &bytes).ok());
  auto npy = ParseNpy(bytes);
  ASSERT_TRUE(npy);
  EXPECT_EQ(npy->kind, 'u');
  EXPECT_EQ(npy->item_size, g.experts <= 256 ? 1 : 2);
  EXPECT_EQ(npy->shape, (std::vector<int64_t>{T, g.total_layers, g.top_k}));
  for (int64_t tok = 0; tok < T; ++tok) {
    for (int l = 0; l < g.total_layers; ++l) {
      if (g.IsMoeLayer(l)) continue;  // dense: leading, or interleaved (Llama-4-Maverick)
      for (int j = 0; j < g.top_k; ++j) {
        EXPECT_EQ(npy->data[(tok * g.total_layers + l) * g.top_k + j], 0);
      }
    }
  }
  ASSERT_EQ(choice.at("prompt_token_ids").as_array().size(), static_cast<size_t>(T));
  const json::object& kv = a.body.at("kv_transfer_params").as_object();
  EXPECT_EQ(kv.at("do_remote_prefill"), true);
  EXPECT_EQ(kv.at("remote_request_id"), "cmpl-rid-1");
  EXPECT_FALSE(kv.contains("eldr_sig"));
  EXPECT_EQ(a.body.at("usage").at("prompt_tokens"), T);
  EXPECT_EQ(a.body.at("created"), 1700000000);
}

TEST_P(EmuEngineTest, Vllm022PromptStartOnlyWhenHonoured) {
  const EngineModel& m = *model_;
  const EmuRequest r = Request(m, R"({"prompt":")" + PromptText(40) +
                                      R"(","routed_experts_prompt_start":16,)" + kPrefillLeg + "}");
  for (bool honour : {false, true}) {
    EmulatorOptions o = Engine("vllm-0.22");
    o.honour_prompt_start = honour;
    Answer a = Prefill(o, m, r);
    auto t = DecodeVllmRoutedExperts(
        a.body.at("choices").as_array()[0].at("routed_experts").as_string(), m.geometry());
    ASSERT_TRUE(t) << t.error().ToString();
    EXPECT_EQ(t->tokens(), honour ? 24 : 40);
    EXPECT_EQ(Data(t->Counts()), CountsOf(m, r.tokens, honour ? 16 : 0));
  }
}

TEST_P(EmuEngineTest, SglangExtIsResponseLevelFromStartLen) {
  const EngineModel& m = *model_;
  const ModelGeometry& g = m.geometry();
  const std::string text = PromptText(30);
  PayloadOptions po;
  po.payload_layers = g.total_layers;
  // Without return_routed_experts: no sglext at all.
  Answer none = Prefill(Engine("sglang", "sglang"), m,
                        Request(m, R"({"prompt":")" + text + R"(","bootstrap_room":7})"));
  EXPECT_FALSE(none.body.contains("sglext"));
  EXPECT_FALSE(none.body.contains("kv_transfer_params"));
  for (int64_t start : {0, 12, 30}) {
    const EmuRequest r = Request(m, R"({"prompt":")" + text +
                                        R"(","bootstrap_room":7,"return_routed_experts":true,)" +
                                        fmt::format(R"("routed_experts_start_len":{}}})", start));
    Answer a = Prefill(Engine("sglang", "sglang"), m, r);
    ASSERT_EQ(a.status, 200);
    const std::string_view field = a.body.at("sglext").at("routed_experts").as_string();
    EXPECT_FALSE(a.body.at("choices").as_array()[0].as_object().contains("sgl_ext"));
    std::vector<uint8_t> bytes;
    ASSERT_TRUE(Base64Decode(field, &bytes).ok());
    EXPECT_EQ(bytes.size(), static_cast<size_t>(30 - start) * g.total_layers * g.top_k * 4);
    if (start == 30) continue;  // no rows: nothing to decode
    auto t = DecodeSglangRoutedExperts(field, g, po);
    ASSERT_TRUE(t) << t.error().ToString();
    EXPECT_EQ(t->tokens(), 30 - start);
    EXPECT_EQ(Data(t->Counts()), CountsOf(m, r.tokens, start));
  }
  Answer too_far =
      Prefill(Engine("sglang", "sglang"), m,
              Request(m, R"({"prompt":")" + text +
                             R"(","return_routed_experts":true,"routed_experts_start_len":31})"));
  EXPECT_EQ(too_far.status, 400);
}

TEST_P(EmuEngineTest, EldrHooksCountsRideKvTransferParams) {
  const EngineModel& m = *model_;
  const EmuRequest r = Request(m, R"({"prompt":")" + PromptText(50) + R"(",)" + kPrefillLeg + "}");
  Answer a = Prefill(Engine("eldr-hooks"), m, r);
  const json::object& choice = a.body.at("choices").as_array()[0].as_object();
  EXPECT_FALSE(choice.contains("routed_experts"));
  EXPECT_FALSE(a.body.contains("prompt_routed_experts"));
  auto c = DecodeEldrSig(a.body.at("kv_transfer_params").at("eldr_sig").as_string(), m.geometry());
  ASSERT_TRUE(c) << c.error().ToString();
  EXPECT_EQ(Data(*c), CountsOf(m, r.tokens));
}

TEST_P(EmuEngineTest, Vllm021ListsMarkPrefixCachedRows) {
  const EngineModel& m = *model_;
  const ModelGeometry& g = m.geometry();
  PrefixCache cache(1024);
  const EmuRequest r = Request(m, R"({"prompt":")" + PromptText(40) + R"(",)" + kPrefillLeg + "}");
  for (int64_t want_cached : {0, 32}) {
    const int64_t cached = cache.LookupAndInsert(r.tokens);
    EXPECT_EQ(cached, want_cached);
    Answer a = Prefill(Engine("vllm-0.21"), m, r, cached);
    ASSERT_EQ(a.status, 200);
    EXPECT_TRUE(a.body.at("choices").as_array()[0].at("routed_experts").as_array().empty());
    const std::string list = json::serialize(a.body.at("prompt_routed_experts"));
    auto l = ParsePromptPickListJson(list, g);
    ASSERT_TRUE(l) << l.error().ToString();
    EXPECT_EQ(l->rows, 40);
    EXPECT_EQ(l->leading_unknown, cached);
    EXPECT_EQ(l->other_unknown, 0);
    EXPECT_EQ(Data(l->picks.Counts()), CountsOf(m, r.tokens, cached));
    EXPECT_EQ(a.body.at("prompt_routed_experts").as_array()[0].as_array().size(),
              static_cast<size_t>(g.total_layers));
  }
}

INSTANTIATE_TEST_SUITE_P(Emu, EmuEngineTest, ::testing::Values("gpt-oss-20b", "deepseek-v3"));
// Dense layers interleaved with the MoE ones (layers 1, 3, ..., 47 MoE), read from its config.json.
INSTANTIATE_TEST_SUITE_P(EmuInterleaved, EmuEngineTest,
                         ::testing::Values(ELDR_MODEL_FIXTURE_DIR
                                           "/Llama-4-Maverick-17B-128E-Instruct/config.json"));

TEST(EmuPrefixCacheTest, WholeBlocksOnlyAndNeverTheLastToken) {
  PrefixCache cache(1024);
  std::vector<int32_t> a(32);
  for (int i = 0; i < 32; ++i) a[i] = i;
  EXPECT_EQ(cache.LookupAndInsert(a), 0);
  EXPECT_EQ(cache.LookupAndInsert(a), 16);  // the last token is recomputed: one block less
  std::vector<int32_t> b = a;
  b.push_back(99);
  EXPECT_EQ(cache.LookupAndInsert(b), 32);
  b[3] = 7;  // the first block differs, so nothing chained after it hits
  EXPECT_EQ(cache.LookupAndInsert(b), 0);
  PrefixCache tiny(2);
  std::vector<int32_t> c(48, 5);
  EXPECT_EQ(tiny.LookupAndInsert(c), 0);
  EXPECT_EQ(tiny.LookupAndInsert(c), 0);  // 3 blocks never fit a 2-block cache
}

TEST(EmuFaultTest, Error400AndMalformedPayloads) {
  auto mp = Model();
  const EngineModel& m = *mp;
  const EmuRequest r = Request(m, R"({"prompt":"a b c",)" + kPrefillLeg + "}");
  EmulatorOptions o = Engine("vllm-0.22");
  o.fault = "error400";
  Answer a = Prefill(o, m, r);
  EXPECT_EQ(a.status, 400);
  const json::object& e = a.body.at("error").as_object();
  EXPECT_EQ(e.at("type"), "BadRequestError");
  EXPECT_EQ(e.at("code"), 400);
  EXPECT_NE(std::string(e.at("message").as_string()).find("maximum context length"),
            std::string::npos);
  o.fault = "malformed";
  for (const char* engine : {"vllm-0.22", "eldr-hooks", "vllm-0.21"}) {
    o.engine = engine;
    a = Prefill(o, m, r);
    ASSERT_EQ(a.status, 200);
    const json::object& c = a.body.at("choices").as_array()[0].as_object();
    if (o.engine == "vllm-0.22") {
      EXPECT_THAT(
          DecodeVllmRoutedExperts(c.at("routed_experts").as_string(), m.geometry()),
          StatusIs(StatusCode::kInvalidArgument, HasSubstr("is not a multiple of 4 (truncated?)")));
    } else if (o.engine == "eldr-hooks") {
      EXPECT_THAT(
          DecodeEldrSig(a.body.at("kv_transfer_params").at("eldr_sig").as_string(), m.geometry()),
          StatusIs(StatusCode::kInvalidArgument, HasSubstr("is not a multiple of 4 (truncated?)")));
    } else {
      EXPECT_THAT(
          ParsePromptPickListJson(json::serialize(a.body.at("prompt_routed_experts")),
                                  m.geometry()),
          StatusIs(StatusCode::kInvalidArgument, HasSubstr("expected an integer expert id")));
    }
  }
}

TEST(EmuRequestTest, ParsesItsOwnWay) {
  auto mp = Model();
  const EngineModel& m = *mp;
  auto chat = ParseEmuRequest(
      true,
      R"({"model":"x","messages":[{"role":"user","content":"hello there"},)"
      R"({"role":"user","content":[{"type":"text","text":"general kenobi"}]}],"stream":true,)"
      R"("stream_options":{"include_usage":true},"max_completion_tokens":5,)"
      R"("kv_transfer_params":{"do_remote_prefill":true,"remote_request_id":"cmpl-9",)"
      R"("eldr_sig":"AA=="}})",
      m, 16);
  ASSERT_TRUE(chat) << chat.error().ToString();
  EXPECT_TRUE(chat->chat && chat->stream && chat->include_usage);
  EXPECT_EQ(chat->model, "x");
  EXPECT_EQ(chat->tokens, m.Tokenize("hello there general kenobi"));
  EXPECT_EQ(chat->max_tokens, 5);
  EXPECT_TRUE(chat->do_remote_prefill && chat->kv_has_eldr_sig);
  EXPECT_FALSE(chat->do_remote_decode);
  EXPECT_EQ(chat->remote_request_id, "cmpl-9");
  auto ids = ParseEmuRequest(false, R"({"prompt":[5,6,7],"max_tokens":2})", m, 16);
  ASSERT_TRUE(ids);
  EXPECT_EQ(ids->tokens, (std::vector<int32_t>{5, 6, 7}));
  EXPECT_EQ(ids->max_tokens, 2);
  auto nested = ParseEmuRequest(false, R"({"prompt":[[8,9]]})", m, 16);
  ASSERT_TRUE(nested);
  EXPECT_EQ(nested->tokens, (std::vector<int32_t>{8, 9}));
  EXPECT_EQ(nested->max_tokens, 16);
  const std::pair<const char*, const char*> refused[] = {
      {"[1]", "request body must be a JSON object"},
      {"{", "request body is not valid JSON"},
      {R"({"prompt":3})", "'prompt' must be a string or a non-empty list"},
      {R"({"prompt":"a","stream":"yes"})", "'stream' must be a boolean"},
      {R"({"prompt":"a","max_tokens":0})", "'max_tokens' must be at least 1"},
      {R"({"prompt":[-1]})", "'prompt' must be a list of token ids"},
  };
  for (const auto& [bad, why] : refused) {
    EXPECT_THAT(ParseEmuRequest(false, bad, m, 16),
                StatusIs(StatusCode::kInvalidArgument, HasSubstr(why)))
        << bad;
  }
  EXPECT_THAT(
      ParseEmuRequest(true, R"({"messages":[]})", m, 16),
      StatusIs(StatusCode::kInvalidArgument, HasSubstr("'messages' must be a non-empty list")));
}

// Both engines echo a request's own model; without one, vLLM names its first served model and
// SGLang its request models' default, "default" (sglang/srt/entrypoints/openai/protocol.py). vLLM
// takes `"model": null` as no model (`model: str | None`); SGLang would refuse it (`model: str`).
TEST(EmuRequestTest, ResponsesNameTheModelAsEachEngineDoes) {
  auto mp = Model();
  const EngineModel& m = *mp;
  auto named = ParseEmuRequest(false, R"({"model":"my-moe","prompt":"a"})", m, 16);
  auto unnamed = ParseEmuRequest(false, R"({"prompt":"a"})", m, 16);
  auto null_named = ParseEmuRequest(true,
                                    R"({"model":null,"messages":[{"role":"user",)"
                                    R"("content":"a"}]})",
                                    m, 16);
  ASSERT_TRUE(named && unnamed && null_named);
  for (const char* backend : {"vllm", "sglang"}) {
    EXPECT_EQ(ResponseModelName(backend, *named, "served"), "my-moe") << backend;
  }
  EXPECT_EQ(ResponseModelName("vllm", *unnamed, "served"), "served");
  EXPECT_EQ(ResponseModelName("sglang", *unnamed, "served"), "default");
  EXPECT_EQ(ResponseModelName("vllm", *null_named, "served"), "served");
}

TEST(EmuFaultTest, RequestNamesItsOwnPrefillFault) {
  auto mp = Model();
  const EngineModel& m = *mp;
  const EmulatorOptions o = Engine("vllm-0.22");
  const PrefillContext c{.id = "cmpl-1", .created = 1, .model_name = m.geometry().name};
  auto with = [&](std::string_view fault) {
    return Request(
        m, R"({"prompt":"a b c","emu_fault":")" + std::string(fault) + R"(",)" + kPrefillLeg + "}");
  };
  HttpAnswer a = BuildPrefillAnswer(o, m, with("error500"), c);
  EXPECT_EQ(a.status, 500);
  EXPECT_NE(a.body.find("InternalServerError"), std::string::npos);
  a = BuildPrefillAnswer(o, m, with("error400"), c);
  EXPECT_EQ(a.status, 400);
  EXPECT_NE(a.body.find("maximum context length"), std::string::npos);
  a = BuildPrefillAnswer(o, m, with("garbage"), c);
  EXPECT_EQ(a.status, 200);
  boost::system::error_code ec;
  json::parse(a.body, ec);
  EXPECT_TRUE(ec) << "a garbage answer must not be JSON: " << a.body;
  Answer p = Prefill(o, m, with("malformed"));
  ASSERT_EQ(p.status, 200);
  EXPECT_THAT(
      DecodeVllmRoutedExperts(
          p.body.at("choices").as_array()[0].as_object().at("routed_experts").as_string(),
          m.geometry()),
      StatusIs(StatusCode::kInvalidArgument, HasSubstr("is not a multiple of 4 (truncated?)")));
  // Without emu_fault the same engine answers normally; the request's fault beats the engine's.
  p = Prefill(o, m, Request(m, R"({"prompt":"a b c",)" + kPrefillLeg + "}"));
  EXPECT_EQ(p.status, 200);
  EXPECT_TRUE(DecodeVllmRoutedExperts(
      p.body.at("choices").as_array()[0].as_object().at("routed_experts").as_string(),
      m.geometry()));
  EmulatorOptions bad = o;
  bad.fault = "malformed";
  EXPECT_EQ(BuildPrefillAnswer(bad, m, with("error500"), c).status, 500);
  // Unknown names and non-strings are the client's error, as vLLM rejects bad fields.
  EXPECT_THAT(ParseEmuRequest(false, R"({"prompt":"a","emu_fault":"boom"})", m, 16),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("emu_fault")));
  EXPECT_THAT(ParseEmuRequest(false, R"({"prompt":"a","emu_fault":5})", m, 16),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("emu_fault")));
}

TEST(EmuOptionsTest, EngineDefaultsFromBackend) {
  EmulatorOptions o;
  EXPECT_EQ(o.ResolvedEngine(), "vllm-0.22");
  o.backend = "sglang";
  EXPECT_EQ(o.ResolvedEngine(), "sglang");
  o.engine = "eldr-hooks";
  EXPECT_THAT(
      o.Validate(),
      StatusIs(StatusCode::kInvalidArgument,
               HasSubstr("engine eldr-hooks needs backend vllm")));  // its counts need the NIXL
                                                                     // kv_transfer_params
  o.backend = "vllm";
  EXPECT_TRUE(o.Validate().ok());
  o.engine = "vllm-0.20";
  EXPECT_THAT(o.Validate(),
              StatusIs(StatusCode::kInvalidArgument,
                       HasSubstr("engine must be vllm-0.22, vllm-0.21, sglang or eldr-hooks")));
  o.engine = "";
  o.fault = "error400";
  EXPECT_TRUE(o.Validate().ok());
}

}  // namespace
}  // namespace eldr::emu
