// The I/O-free parts of `eldr serve`: configuration, the JSON scanner (against boost::json as
// the reference), the PD request/response transforms, the prefill ring, the circuit breaker,
// metrics and the prefix memo.
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <cmath>
#include <map>
#include <set>

#include "eldr/net/wire.h"
#include "eldr/payload.h"
#include "eldr/rng.h"
#include "eldr/server/balance.h"
#include "eldr/server/config.h"
#include "eldr/server/json_scan.h"
#include "eldr/server/metrics.h"
#include "eldr/server/pd.h"
#include "eldr/server/prefix_memo.h"
#include "status_matchers.h"
#include "test_util.h"

namespace eldr::server {
namespace {

namespace json = boost::json;
using ::testing::HasSubstr;

// ---- config ---------------------------------------------------------------------------------

TEST(ConfigTest, ParsesYamlAndTheSameJson) {
  const char* yaml = R"(
listen: 0.0.0.0:9000
backend: sglang
model: gpt-oss-20b
prefill: [http://10.0.0.1:8100, {url: "http://10.0.0.2:8100", bootstrap_port: 9001}]
decode:
  - http://10.0.0.3:8200
  - {url: http://10.0.0.4:8200, dp_rank: 1}
policy: p2c
tau: 0.25
cache: {block_size: 32, chunk_blocks: 4, memory_mb: 64}
max_in_flight: 10
admin_token: t
busy_poll_us: 50
plus_tau: 0.05
plus_slack: 0.2
)";
  auto y = ParseServeConfig(yaml);
  ASSERT_TRUE(y) << y.error().ToString();
  EXPECT_EQ(y->host, "0.0.0.0");
  EXPECT_EQ(y->port, 9000);
  EXPECT_EQ(y->backend, Backend::kSglang);
  EXPECT_EQ(y->model, "gpt-oss-20b");
  ASSERT_EQ(y->prefill.size(), 2u);
  EXPECT_EQ(y->prefill[1].bootstrap_port, 9001);
  ASSERT_EQ(y->decode.size(), 2u);
  EXPECT_EQ(y->decode[1].dp_rank, 1);
  EXPECT_EQ(y->decode[1].port, 8200);
  EXPECT_EQ(y->cache.block_size, 32);
  EXPECT_EQ(y->cache.memory_budget_bytes, size_t{64} << 20);
  EXPECT_DOUBLE_EQ(y->tau, 0.25);
  EXPECT_EQ(y->busy_poll_us, 50);
  EXPECT_DOUBLE_EQ(y->plus_tau, 0.05);
  EXPECT_DOUBLE_EQ(y->plus_slack, 0.2);
  EXPECT_TRUE(y->Validate().ok()) << y->Validate().ToString();

  const char* js = R"({"listen":"0.0.0.0:9000","backend":"sglang","model":"gpt-oss-20b",
    "prefill":["http://10.0.0.1:8100",{"url":"http://10.0.0.2:8100","bootstrap_port":9001}],
    "decode":["http://10.0.0.3:8200",{"url":"http://10.0.0.4:8200","dp_rank":1}],
    "policy":"p2c","tau":0.25,"cache":{"block_size":32,"chunk_blocks":4,"memory_mb":64},
    "max_in_flight":10,"admin_token":"t"})";
  auto j = ParseServeConfig(js);
  ASSERT_TRUE(j) << j.error().ToString();
  EXPECT_EQ(j->decode[1].dp_rank, 1);
  EXPECT_EQ(j->prefill[1].bootstrap_port, 9001);
  EXPECT_EQ(j->max_in_flight, 10);
}

TEST(ConfigTest, ErrorsNameTheKey) {
  auto e = ParseServeConfig("polcy: eldr\n");
  EXPECT_THAT(e, StatusIs(StatusCode::kInvalidArgument, HasSubstr("polcy")));
  e = ParseServeConfig("tau: lots\n");
  EXPECT_THAT(e, StatusIs(StatusCode::kInvalidArgument, HasSubstr("tau")));
  e = ParseServeConfig("backend: trt\n");
  EXPECT_THAT(e, StatusIs(StatusCode::kInvalidArgument, HasSubstr("trt")));
  e = ParseServeConfig("decode: [{url: http://a:1, weight: 2}]\n");
  EXPECT_THAT(e, StatusIs(StatusCode::kInvalidArgument, HasSubstr("weight")));
  EXPECT_THAT(
      ParseServeConfig("[1, 2]"),
      StatusIs(StatusCode::kInvalidArgument, HasSubstr("expected a map of keys at the top level")));
  EXPECT_THAT(ParseServeConfig("a: [unclosed"),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("config: yaml-cpp: error")));
  EXPECT_THAT(ParseServeConfig("cache: {memory_mb: -1}"),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("'cache.memory_mb' must be > 0")));
}

TEST(ConfigTest, ValidateCatchesUnservableSetups) {
  ServeOptions o;
  EXPECT_THAT(o.Validate(), StatusIs(StatusCode::kInvalidArgument,
                                     HasSubstr("no prefill workers configured")));  // no workers
  o.prefill = {*ParseWorkerUrl("http://a:1")};
  o.decode = {*ParseWorkerUrl("http://b:2")};
  o.policy = "eldr";
  EXPECT_THAT(o.Validate(), StatusIs(StatusCode::kInvalidArgument, HasSubstr("signature space")));
  o.space = "s.json";
  EXPECT_TRUE(o.Validate().ok()) << o.Validate().ToString();
  o.policy = "domain";  // needs labels the proxy never has
  EXPECT_THAT(o.Validate(), StatusIs(StatusCode::kInvalidArgument,
                                     HasSubstr("policy domain needs label_shares")));
  o.policy = "jsq";
  o.decode.push_back(o.decode[0]);
  EXPECT_THAT(o.Validate(), StatusIs(StatusCode::kInvalidArgument, HasSubstr("twice")));
  o.decode.pop_back();
  o.busy_poll_us = -1;
  EXPECT_THAT(o.Validate(), StatusIs(StatusCode::kInvalidArgument, HasSubstr("busy_poll_us")));
  o.busy_poll_us = 200;
  EXPECT_TRUE(o.Validate().ok()) << o.Validate().ToString();
  o.policy = "eldr-plus";
  EXPECT_TRUE(o.Validate().ok()) << o.Validate().ToString();
  o.space.clear();
  EXPECT_THAT(o.Validate(), StatusIs(StatusCode::kInvalidArgument,
                                     HasSubstr("eldr-plus needs a signature space")));
  o.space = "s.json";
  o.plus_slack = -1;
  EXPECT_THAT(o.Validate(), StatusIs(StatusCode::kInvalidArgument, HasSubstr("plus_slack")));
  o.plus_slack = 0.1;
  o.plus_tau = std::nan("");
  EXPECT_THAT(o.Validate(), StatusIs(StatusCode::kInvalidArgument, HasSubstr("plus_tau")));
  o.plus_tau = 0.1;
  o.policy = "jsq";
  o.prefill_load_factor = 0.5;
  EXPECT_THAT(o.Validate(), StatusIs(StatusCode::kInvalidArgument,
                                     HasSubstr("prefill_load_factor must be >= 1")));
}

TEST(ConfigTest, WorkerUrls) {
  auto w = ParseWorkerUrl("http://host.example:8100/");
  ASSERT_TRUE(w);
  EXPECT_EQ(w->host, "host.example");
  EXPECT_EQ(w->port, 8100);
  w = ParseWorkerUrl("[::1]:80");
  ASSERT_TRUE(w);
  EXPECT_EQ(w->host, "::1");
  EXPECT_THAT(
      ParseWorkerUrl("https://a:1"),
      StatusIs(StatusCode::kInvalidArgument, HasSubstr("https upstreams are not supported")));
  EXPECT_THAT(ParseWorkerUrl("http://a:1/v1"),
              StatusIs(StatusCode::kInvalidArgument,
                       HasSubstr("expected http://host:port without a path")));
  EXPECT_THAT(
      ParseWorkerUrl("http://a"),
      StatusIs(StatusCode::kInvalidArgument, HasSubstr("'http://a': expected http://host:port")));
  EXPECT_THAT(ParseWorkerUrl("http://a:99999"),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("port 99999 out of range")));
  EXPECT_THAT(ParseWorkerUrl("http://a:0"),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("port 0 out of range")));
  EXPECT_TRUE(ParseWorkerUrl("127.0.0.1:0", /*listen=*/true));
}

// ---- JSON scanner ---------------------------------------------------------------------------

json::value RandomValue(Rng& rng, int depth) {
  const int kind = static_cast<int>(rng.Uniform(depth > 3 ? 5 : 7));
  switch (kind) {
    case 0:
      return nullptr;
    case 1:
      return rng.Uniform(2) == 1;
    case 2:
      return static_cast<int64_t>(rng.Next() >> rng.Uniform(64)) * (rng.Uniform(2) ? 1 : -1);
    // Dyadic values: boost::json 1.81 does not round-trip every double exactly.
    case 3:
      return static_cast<double>(rng.Uniform(1 << 20)) / 4 - 1000.5;
    case 4: {
      static const char* kPieces[] = {"a",    "\"", "\\", "/", "\n",         "\t",
                                      "\x01", "é",  "€",  "😀", "plain text", "base64+/="};
      std::string s;
      const int n = static_cast<int>(rng.Uniform(6));
      for (int i = 0; i < n; ++i) s += kPieces[rng.Uniform(std::size(kPieces))];
      return json::string(s);
    }
    case 5: {
      json::array a;
      const int n = static_cast<int>(rng.Uniform(4));
      for (int i = 0; i < n; ++i) a.push_back(RandomValue(rng, depth + 1));
      return a;
    }
    default: {
      json::object o;
      const int n = static_cast<int>(rng.Uniform(5));
      for (int i = 0; i < n; ++i) {
        o[fmt::format("k{}{}", rng.Uniform(6), rng.Uniform(2) ? "\\\"" : "")] =
            RandomValue(rng, depth + 1);
      }
      return o;
    }
  }
}

TEST(JsonScanTest, AgreesWithBoostJsonOnRandomDocuments) {
  Rng rng(11);
  for (int iter = 0; iter < 2000; ++iter) {
    json::object doc;
    const int n = 1 + static_cast<int>(rng.Uniform(6));
    for (int i = 0; i < n; ++i) doc[fmt::format("key{}", i)] = RandomValue(rng, 0);
    doc["we\"ird/é"] = RandomValue(rng, 1);
    const std::string text = json::serialize(doc);
    for (const auto& kv : doc) {
      auto raw = JsonMember(text, kv.key());
      ASSERT_TRUE(raw) << text;
      ASSERT_FALSE(raw->empty());
      EXPECT_EQ(json::parse(*raw), kv.value()) << kv.key() << " in " << text;
      if (kv.value().is_string()) {
        auto sv = JsonStringValue(*raw);
        ASSERT_TRUE(sv);
        EXPECT_EQ(*sv, std::string(kv.value().get_string()));
      }
      if (kv.value().is_array()) {
        const auto& arr = kv.value().get_array();
        for (size_t i = 0; i <= arr.size(); ++i) {
          auto el = JsonElement(*raw, i);
          ASSERT_TRUE(el);
          if (i < arr.size()) {
            EXPECT_EQ(json::parse(*el), arr[i]);
          } else {
            EXPECT_TRUE(el->empty());
          }
        }
      }
    }
    auto absent = JsonMember(text, "absent");
    ASSERT_TRUE(absent);
    EXPECT_TRUE(absent->empty());
    auto len = JsonValueLength(text + "  trailing");
    ASSERT_TRUE(len);
    EXPECT_EQ(*len, text.size());
    // Every strict prefix of a document is malformed.
    const size_t cut = rng.Uniform(text.size());
    EXPECT_THAT(JsonValueLength(text.substr(0, cut)),
                StatusIs(StatusCode::kInvalidArgument, HasSubstr("malformed JSON at offset")))
        << text.substr(0, cut);
  }
}

TEST(JsonScanTest, RejectsMalformedInput) {
  const std::pair<const char*, const char*> refused[] = {
      {"{", "offset 1: expected a key"},
      {"{\"a\"}", "offset 4: expected ':'"},
      {"{\"a\":}", "offset 5: bad number"},
      {"{\"a\":1,}", "offset 7: expected a key"},
      {"{\"a\":tru}", "offset 5: bad literal"},
      {"{a:1}", "offset 1: expected a key"},
      {"{\"a\":\"\x01\"}", "offset 6: control character in string"},
      {"{\"a\":\"\\x\"}", "offset 7: bad escape"},
      {"{\"a\":01}", "offset 6: expected ',' or '}'"},
      {"{\"a\":-}", "offset 6: bad number"},
      {"{\"a\":[1 2]}", "offset 8: expected ',' or ']'"},
      {"{\"a\":\"\\u12\"}", "offset 7: bad \\u escape"},
      {"[1,2", "expected an object"},
  };
  for (const auto& [bad, why] : refused) {
    EXPECT_THAT(JsonMember(bad, "a"), StatusIs(StatusCode::kInvalidArgument, HasSubstr(why)))
        << bad;
  }
  std::string deep(2000, '[');
  EXPECT_THAT(JsonValueLength(deep),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("nesting too deep")));
}

// ---- PD transforms --------------------------------------------------------------------------

TEST(PdTest, ParsesClientRequests) {
  auto r = ParseClientRequest(Endpoint::kCompletions,
                              R"({"model":"m","prompt":"hello","stream":true,"max_tokens":4})");
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->stream);
  EXPECT_EQ(r->prompt_text, "hello");
  r = ParseClientRequest(Endpoint::kCompletions, R"({"prompt":[1,2,3]})");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->prompt_tokens, (std::vector<int32_t>{1, 2, 3}));
  r = ParseClientRequest(Endpoint::kCompletions, R"({"prompt":[[4,5]]})");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->prompt_tokens, (std::vector<int32_t>{4, 5}));
  r = ParseClientRequest(Endpoint::kChat,
                         R"({"messages":[{"role":"system","content":"be brief"},
                             {"role":"user","content":[{"type":"text","text":"hi"}]}]})");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->prompt_text, "be brief\nhi\n");
  const std::pair<const char*, const char*> refused[] = {
      {"", "not valid JSON"},
      {"[]", "must be a JSON object"},
      {"{\"prompt\":5}", "'prompt' must be a string or a list of token ids"},
      {"{}", "missing 'prompt'"},
      {"{\"prompt\":[\"a\",\"b\"]}", "batched prompts are not supported"},
      {"{\"prompt\":[-1]}", "token ids must be non-negative 32-bit integers"},
      {"{\"prompt\":\"x\",\"stream\":\"yes\"}", "'stream' must be a boolean"},
      {"{\"prompt\":\"x\",\"n\":0}", "'n' must be a positive integer"},
      {"{\"prompt\":\"x\",\"max_tokens\":-3}", "'max_tokens' must be a positive integer"},
      {"{\"prompt\":[]}", "'prompt' is an empty list"},
  };
  for (const auto& [bad, why] : refused) {
    EXPECT_THAT(ParseClientRequest(Endpoint::kCompletions, bad),
                StatusIs(StatusCode::kInvalidArgument, HasSubstr(why)))
        << bad;
  }
  EXPECT_THAT(
      ParseClientRequest(Endpoint::kChat, R"({"messages":[]})"),
      StatusIs(StatusCode::kInvalidArgument, HasSubstr("'messages' must be a non-empty list")));
}

// boost::json reads these as inf/NaN and writes them back as `Infinity`/`NaN`, which no engine
// parses as JSON: the request is refused with a reason instead of producing such leg bodies
// (found by fuzz/client_fuzz.cc).
TEST(PdTest, RefusesNumbersPastADoublesRange) {
  for (const char* bad :
       {R"({"prompt":"x","temperature":1e400})", R"({"prompt":"x","logit_bias":{"5":[-2e999]}})",
        R"({"prompt":"x","top_p":0e400})"}) {
    auto r = ParseClientRequest(Endpoint::kCompletions, bad);
    EXPECT_THAT(r, StatusIs(StatusCode::kInvalidArgument, ::testing::HasSubstr("beyond a double")))
        << bad;
  }
  auto ok = ParseClientRequest(Endpoint::kCompletions, R"({"prompt":"x","temperature":1e300})");
  ASSERT_TRUE(ok);
  const std::string leg = VllmPrefillBody(*ok, 8);
  EXPECT_EQ(leg.find("Infinity"), std::string::npos) << leg;
  EXPECT_EQ(json::parse(leg).as_object().at("temperature").as_double(), 1e300);
}

TEST(PdTest, VllmLegBodies) {
  auto r = ParseClientRequest(
      Endpoint::kCompletions,
      R"({"model":"m","prompt":"p","stream":true,"stream_options":{"include_usage":true},
          "max_tokens":50,"min_tokens":10,"temperature":0.5})");
  ASSERT_TRUE(r);
  json::object p = json::parse(VllmPrefillBody(*r, 32)).as_object();
  EXPECT_EQ(p.at("stream"), false);
  EXPECT_EQ(p.at("max_tokens"), 1);
  EXPECT_FALSE(p.contains("stream_options"));
  EXPECT_FALSE(p.contains("min_tokens"));
  EXPECT_EQ(p.at("return_token_ids"), true);
  EXPECT_EQ(p.at("routed_experts_prompt_start"), 32);
  EXPECT_EQ(p.at("temperature"), 0.5);
  const auto& kv = p.at("kv_transfer_params").as_object();
  EXPECT_EQ(kv.at("do_remote_decode"), true);
  EXPECT_EQ(kv.at("do_remote_prefill"), false);
  EXPECT_TRUE(kv.at("remote_engine_id").is_null());
  json::object d =
      json::parse(VllmDecodeBody(*r, R"({"do_remote_prefill":true,"x":[1]})")).as_object();
  EXPECT_EQ(d.at("stream"), true);
  EXPECT_EQ(d.at("max_tokens"), 50);
  EXPECT_EQ(d.at("min_tokens"), 10);
  EXPECT_EQ(d.at("kv_transfer_params").at("x").as_array().size(), 1u);
  EXPECT_EQ(d.at("prompt"), "p");
  const int32_t ids[] = {7, 8, 9};
  json::object d2 = json::parse(VllmDecodeBody(*r, "", ids)).as_object();
  EXPECT_EQ(d2.at("prompt").as_array().size(), 3u);
  EXPECT_EQ(d2.at("prompt").as_array()[2], 9);
  EXPECT_FALSE(d2.contains("kv_transfer_params"));
  json::object sp = json::parse(SglangPrefillBody(*r, {"h", 9000, ~uint64_t{0}})).as_object();
  EXPECT_EQ(sp.at("bootstrap_room").as_int64(), INT64_MAX);  // masked into [0, 2^63-1]
  EXPECT_EQ(sp.at("return_routed_experts"), true);
  json::object sd = json::parse(SglangDecodeBody(*r, {"h", 9000, 7})).as_object();
  EXPECT_EQ(sd.at("bootstrap_host"), "h");
  EXPECT_EQ(sd.at("stream"), true);
}

std::string PrefillBody(const std::string& field_json, const std::string& extra = "") {
  return R"({"id":"x","choices":[{"index":0,"text":"t","finish_reason":"length",)" + field_json +
         R"(,"prompt_token_ids":[5,6,7,8,9,10,11]}],"kv_transfer_params":{"do_remote_prefill":true,)"
         R"("remote_block_ids":[1,2]})" +
         extra + "}";
}

TEST(PdTest, PrefillResponsesInEveryEncodingGiveTheSameCounts) {
  const ModelGeometry g = *FindModel("gpt-oss-20b");
  Rng rng(3);
  const int64_t T = 7;
  const std::vector<int32_t> picks = testing::RandomPicks(g, T, rng);
  const ExpertCounts want = MakePickTable(picks, g)->Counts();
  const size_t n = picks.size();
  // vLLM .npy uint8
  std::vector<uint8_t> u8(picks.begin(), picks.end());
  const int64_t shape[3] = {T, g.moe_layers, g.top_k};
  const std::string npy = Base64Encode(MakeNpy('u', 1, shape, u8));
  auto r = ParsePrefillResponse(PrefillBody("\"routed_experts\":\"" + npy + "\""), g, {});
  ASSERT_TRUE(r) << r.error().ToString();
  EXPECT_EQ(r->source, SignatureSource::kVllm);
  EXPECT_EQ(r->picks->Counts(), want);
  EXPECT_EQ(r->prompt_token_ids, (std::vector<int32_t>{5, 6, 7, 8, 9, 10, 11}));
  EXPECT_EQ(json::parse(r->kv_transfer_params).at("remote_block_ids").as_array().size(), 2u);
  // An encoder that escapes '/' still decodes.
  std::string escaped;
  for (char c : npy) escaped += c == '/' ? std::string("\\/") : std::string(1, c);
  r = ParsePrefillResponse(PrefillBody("\"routed_experts\":\"" + escaped + "\""), g, {});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->picks->Counts(), want);
  // vLLM nested lists
  std::string list = "[";
  for (int64_t t = 0; t < T; ++t) {
    list += t ? ",[" : "[";
    for (int l = 0; l < g.moe_layers; ++l) {
      list += l ? ",[" : "[";
      for (int j = 0; j < g.top_k; ++j) {
        list += (j ? "," : "") + std::to_string(picks[(t * g.moe_layers + l) * g.top_k + j]);
      }
      list += "]";
    }
    list += "]";
  }
  list += "]";
  r = ParsePrefillResponse(PrefillBody("\"routed_experts\":" + list), g, {});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->source, SignatureSource::kVllmList);
  EXPECT_EQ(r->picks->Counts(), want);
  // SGLang int32
  std::vector<uint8_t> i32(n * 4);
  std::memcpy(i32.data(), picks.data(), i32.size());
  r = ParsePrefillResponse(
      PrefillBody("\"sgl_ext\":{\"routed_experts\":\"" + Base64Encode(i32) + "\"}"), g, {});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->source, SignatureSource::kSglang);
  EXPECT_EQ(r->picks->Counts(), want);
  // eldr_sig int16 counts
  std::vector<int16_t> c16(want.data().begin(), want.data().end());
  std::vector<uint8_t> b16(c16.size() * 2);
  std::memcpy(b16.data(), c16.data(), b16.size());
  r = ParsePrefillResponse(PrefillBody("\"eldr_sig\":\"" + Base64Encode(b16) + "\""), g, {});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->source, SignatureSource::kEldrHooks);
  EXPECT_EQ(*r->counts, want);
  // No payload: not an error, no signal.
  r = ParsePrefillResponse(PrefillBody("\"routed_experts\":null"), g, {});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->source, SignatureSource::kNone);
}

TEST(PdTest, BadPrefillResponsesAreClearErrors) {
  const ModelGeometry g = *FindModel("gpt-oss-20b");
  // One token whose 24 layers are well formed but for an expert id 99 >= 32.
  std::string id99 = "[[[99,1,2,3]";
  for (int l = 1; l < g.moe_layers; ++l) id99 += ",[0,1,2,3]";
  id99 += "]]";
  struct Case {
    std::string body;
    StatusCode code;
    std::string why;
  };
  const Case cases[] = {
      {"not json", StatusCode::kInvalidArgument, "expected an object"},
      {"{\"choices\":5}", StatusCode::kInvalidArgument, "no 'choices' list"},
      {"{}", StatusCode::kInvalidArgument, "no 'choices' list"},
      {PrefillBody("\"routed_experts\":\"!!!\""), StatusCode::kInvalidArgument,
       "base64: length 3 is not a multiple of 4"},
      {PrefillBody("\"routed_experts\":17"), StatusCode::kInvalidArgument,
       "neither a base64 string nor a list"},
      // Refused for its shape (1 layer of 24) before the id is looked at.
      {PrefillBody("\"routed_experts\":[[[99,1,2,3]]]"), StatusCode::kInvalidArgument,
       "payload has 1 layers but GPT-OSS-20B has 24 MoE layers"},
      {PrefillBody("\"routed_experts\":" + id99), StatusCode::kOutOfRange,
       "expert id 99 at token 0, layer 0, slot 0 is outside [0, 32)"},
      {PrefillBody("\"sgl_ext\":{\"routed_experts\":\"AAAA\"}"), StatusCode::kInvalidArgument,
       "3 bytes is not a whole number of int32 rows"},
      {PrefillBody("\"eldr_sig\":\"AAAA\""), StatusCode::kInvalidArgument,
       "3 bytes, but GPT-OSS-20B needs int16 [24, 32]"},
      {R"({"error":{"message":"engine overloaded","code":503}})", StatusCode::kUnavailable,
       "prefill returned an error: engine overloaded"},
  };
  for (const auto& c : cases) {
    EXPECT_THAT(ParsePrefillResponse(c.body, g, {}), StatusIs(c.code, HasSubstr(c.why))) << c.body;
  }
  auto r = ParsePrefillResponse(R"({"error":{"message":"engine overloaded"}})", g, {});
  EXPECT_THAT(r, StatusIs(StatusCode::kUnavailable, HasSubstr("engine overloaded")));
  // Payloads larger than the decode limit fail before decoding.
  Rng rng(1);
  const auto picks = testing::RandomPicks(g, 64, rng);
  std::vector<uint8_t> u8(picks.begin(), picks.end());
  const int64_t shape[3] = {64, g.moe_layers, g.top_k};
  PayloadOptions small;
  small.max_decoded_bytes = 1000;
  r = ParsePrefillResponse(
      PrefillBody("\"routed_experts\":\"" + Base64Encode(MakeNpy('u', 1, shape, u8)) + "\""), g,
      small);
  EXPECT_THAT(r,
              StatusIs(StatusCode::kResourceExhausted, HasSubstr("exceeds the 1000 byte limit")));
}

TEST(PdTest, ErrorBodiesAreOpenAiShaped) {
  json::object e =
      json::parse(net::OpenAiErrorBody(429, "slow \"down\"", net::ErrorTypeFor(429))).as_object();
  EXPECT_EQ(e.at("error").at("message"), "slow \"down\"");
  EXPECT_EQ(e.at("error").at("type"), "rate_limit_error");
  EXPECT_EQ(e.at("error").at("code"), 429);
  const std::string ev = net::SseErrorEvent(502, "gone", "upstream_error");
  ASSERT_TRUE(ev.starts_with("data: ") && ev.ends_with("\n\n"));
  EXPECT_EQ(json::parse(ev.substr(6)).at("error").at("code"), 502);
}

// Splits an HTTP/1.1 head into its start line and header fields; fails the test on bad framing.
std::pair<std::string, std::map<std::string, std::string>> SplitHead(const std::string& head) {
  std::map<std::string, std::string> fields;
  EXPECT_TRUE(head.ends_with("\r\n\r\n")) << head;
  size_t at = head.find("\r\n");
  const std::string start = head.substr(0, at);
  at += 2;
  while (at < head.size()) {
    const size_t end = head.find("\r\n", at);
    if (end == at) break;
    const std::string line = head.substr(at, end - at);
    const size_t colon = line.find(": ");
    EXPECT_NE(colon, std::string::npos) << line;
    EXPECT_TRUE(fields.emplace(line.substr(0, colon), line.substr(colon + 2)).second) << line;
    at = end + 2;
  }
  EXPECT_EQ(at + 2, head.size()) << "bytes after the blank line";
  return {start, fields};
}

TEST(PdTest, MessageHeadsAreWellFramed) {
  auto [start, f] = SplitHead(UpstreamPostHead("/v1/completions", "10.0.0.7", 8100, "r-1", -1, 42));
  EXPECT_EQ(start, "POST /v1/completions HTTP/1.1");
  EXPECT_EQ(f.at("Host"), "10.0.0.7:8100");
  EXPECT_EQ(f.at("Content-Length"), "42");
  EXPECT_EQ(f.at("Content-Type"), "application/json");
  EXPECT_EQ(f.at("X-Request-Id"), "r-1");
  EXPECT_FALSE(f.contains("X-data-parallel-rank"));
  EXPECT_FALSE(f.contains("Connection"));  // HTTP/1.1 keeps the connection by default
  auto [start2, f2] = SplitHead(UpstreamPostHead("/v1/chat/completions", "h", 1, "x", 3, 0));
  EXPECT_EQ(start2, "POST /v1/chat/completions HTTP/1.1");
  EXPECT_EQ(f2.at("X-data-parallel-rank"), "3");
  EXPECT_EQ(f2.at("Content-Length"), "0");
  EXPECT_EQ(SplitHead(UpstreamPostHead("/", "::1", 8000, "x", -1, 0)).second.at("Host"),
            "[::1]:8000");

  auto [rs, rf] = SplitHead(net::ResponseHead(502, "application/json", 17, true));
  EXPECT_EQ(rs, "HTTP/1.1 502 Bad Gateway");
  EXPECT_EQ(rf.at("Content-Length"), "17");
  EXPECT_EQ(rf.at("Content-Type"), "application/json");
  EXPECT_FALSE(rf.contains("Connection"));
  auto [rs2, rf2] = SplitHead(net::ResponseHead(422, "text/plain", 0, false));
  EXPECT_EQ(rs2, "HTTP/1.1 422 Unprocessable Entity");
  EXPECT_EQ(rf2.at("Connection"), "close");
  auto [rs3, rf3] =
      SplitHead(net::ResponseHead(405, "application/json", 5, true, "eldr", "Allow: GET\r\n"));
  EXPECT_EQ(rs3, "HTTP/1.1 405 Method Not Allowed");
  EXPECT_EQ(rf3.at("Allow"), "GET");
  EXPECT_EQ(rf3.at("Content-Length"), "5");
  EXPECT_EQ(net::ReasonPhrase(299), "Unknown");
  for (int s : {200, 400, 401, 403, 404, 405, 409, 413, 429, 500, 502, 503, 504}) {
    EXPECT_NE(net::ReasonPhrase(s), "Unknown") << s;
  }
}

// ---- prefill ring, breaker ------------------------------------------------------------------

std::vector<std::string> Names(int n) {
  std::vector<std::string> v;
  for (int i = 0; i < n; ++i) v.push_back(fmt::format("http://10.0.0.{}:8100", i));
  return v;
}

TEST(PrefillRingTest, ConsistentAndMovesFewKeysWhenAWorkerJoins) {
  const auto names = Names(8);
  PrefillRing ring(names), ring9(Names(9));
  std::vector<int64_t> zero(8, 0), zero9(9, 0);
  Rng rng(5);
  int moved = 0, to_new = 0;
  std::vector<int> per(8, 0);
  const int kKeys = 20000;
  for (int i = 0; i < kKeys; ++i) {
    const uint64_t key = rng.Next();
    const int a = ring.Pick(key, zero, {}, {}, 1e9);
    EXPECT_EQ(a, ring.Pick(key, zero, {}, {}, 1e9));
    ++per[a];
    const int b = ring9.Pick(key, zero9, {}, {}, 1e9);
    if (a != b) {
      ++moved;
      to_new += b == 8;
    }
  }
  EXPECT_EQ(moved, to_new);  // keys move only to the new worker
  EXPECT_NEAR(static_cast<double>(moved) / kKeys, 1.0 / 9, 0.04);
  for (int c : per) EXPECT_NEAR(static_cast<double>(c) / kKeys, 1.0 / 8, 0.05);
}

TEST(PrefillRingTest, RespectsTheLoadBoundAvailabilityAndExclusions) {
  PrefillRing ring(Names(5));
  Rng rng(9);
  for (int iter = 0; iter < 5000; ++iter) {
    std::vector<int64_t> loads(5);
    std::vector<uint8_t> avail(5), excl(5);
    for (int w = 0; w < 5; ++w) {
      loads[w] = static_cast<int64_t>(rng.Uniform(20));
      avail[w] = rng.Uniform(5) != 0;
      excl[w] = rng.Uniform(6) == 0;
    }
    const double factor = 1.0 + rng.UniformDouble();
    const int p = ring.Pick(rng.Next(), loads, avail, excl, factor);
    int64_t total = 0;
    int n = 0;
    for (int w = 0; w < 5; ++w) {
      if (avail[w] && !excl[w]) {
        total += loads[w];
        ++n;
      }
    }
    if (n == 0) {
      EXPECT_EQ(p, -1);
      continue;
    }
    ASSERT_GE(p, 0);
    EXPECT_TRUE(avail[p] && !excl[p]);
    EXPECT_LE(loads[p] + 1, std::ceil(factor * (total + 1) / n));
  }
}

// The circuit breaker, health-probe rule, retries and deadlines: tests/resilience_test.cc.

// ---- metrics, memo --------------------------------------------------------------------------

TEST(MetricsTest, HistogramRendersCumulativeBuckets) {
  Histogram h({1, 2, 5});
  for (double v : {0.5, 1.0, 1.5, 3.0, 7.0, 9.0}) h.Observe(v);
  std::string out;
  h.Render(&out, "x", "a=\"b\"");
  EXPECT_NE(out.find("x_bucket{a=\"b\",le=\"1\"} 2\n"), std::string::npos) << out;
  EXPECT_NE(out.find("x_bucket{a=\"b\",le=\"2\"} 3\n"), std::string::npos);
  EXPECT_NE(out.find("x_bucket{a=\"b\",le=\"5\"} 4\n"), std::string::npos);
  EXPECT_NE(out.find("x_bucket{a=\"b\",le=\"+Inf\"} 6\n"), std::string::npos);
  EXPECT_NE(out.find("x_sum{a=\"b\"} 22\n"), std::string::npos);
  EXPECT_NE(out.find("x_count{a=\"b\"} 6\n"), std::string::npos);
  EXPECT_NEAR(h.Quantile(0.5), 2 + 3.0 * (3 - 3) / 1, 1e-9);
  EXPECT_EQ(LabelValue("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
}

TEST(PrefixMemoTest, PredictsFromTheLongestSharedPrefixWithinBudget) {
  ExpertCounts a(2, 4), b(2, 4);
  a.at(0, 1) = 5;
  b.at(1, 3) = 7;
  const std::string sys(300, 's');
  PrefixMemo memo(size_t{1} << 20);
  EXPECT_FALSE(memo.Predict(sys + "question one"));
  memo.Observe(sys + "question one", a);
  auto p = memo.Predict(sys + "another question");  // shares the 256-byte prefix
  ASSERT_TRUE(p);
  EXPECT_EQ(*p, a);
  EXPECT_FALSE(memo.Predict("short and new"));
  memo.Observe(sys + "question two", b);
  EXPECT_EQ(*memo.Predict(sys + "question one"), a);  // exact repeat beats the shared prefix
  EXPECT_EQ(*memo.Predict(sys + "question three"), b);
  PrefixMemo tiny(200);
  for (int i = 0; i < 10; ++i) tiny.Observe(std::string(70, static_cast<char>('a' + i)), a);
  EXPECT_LE(tiny.bytes(), 200u);
}

TEST(BearerMatchesTest, SchemeAnyCaseTokenExact) {
  using net::BearerMatches;
  EXPECT_TRUE(BearerMatches("Bearer s3cret", "s3cret"));
  EXPECT_TRUE(BearerMatches("bearer s3cret", "s3cret"));
  EXPECT_TRUE(BearerMatches("BEARER   s3cret", "s3cret"));
  EXPECT_FALSE(BearerMatches("Bearer s3cre", "s3cret"));    // a prefix
  EXPECT_FALSE(BearerMatches("Bearer s3crets", "s3cret"));  // longer
  EXPECT_FALSE(BearerMatches("Bearer S3CRET", "s3cret"));   // the token is case-sensitive
  EXPECT_FALSE(BearerMatches("Basic s3cret", "s3cret"));
  EXPECT_FALSE(BearerMatches("s3cret", "s3cret"));
  EXPECT_FALSE(BearerMatches("Bearer ", ""));  // an empty token never matches
  EXPECT_FALSE(BearerMatches("", "s3cret"));
}

// Regression (fuzz/prefill_fuzz.cc): kv_transfer_params goes to the decode leg as it came, so a
// value that is not JSON (bytes that are not UTF-8 inside a string, which the tree-free scanner
// lets through) is refused (a 502). It used to be accepted, and VllmDecodeBody then silently sent
// the decode leg without its transfer parameters.
TEST(PdTest, KvTransferParamsThatAreNotJsonAreRefused) {
  const ModelGeometry g = *FindModel("gpt-oss-20b");
  std::string bad = PrefillBody(R"("x":1)");
  const std::string ids = R"("remote_block_ids":[1,2])";
  bad.replace(bad.find(ids), ids.size(), "\"remote_block_ids\":\"\xf2\xf2\"");
  EXPECT_THAT(ParsePrefillResponse(bad, g, {}),
              StatusIs(StatusCode::kInvalidArgument, ::testing::HasSubstr("kv_transfer_params")));
  auto ok = ParsePrefillResponse(PrefillBody(R"("x":1)"), g, {});
  ASSERT_TRUE(ok) << ok.error().ToString();
  EXPECT_EQ(ok->kv_transfer_params, R"({"do_remote_prefill":true,"remote_block_ids":[1,2]})");
}

}  // namespace
}  // namespace eldr::server
