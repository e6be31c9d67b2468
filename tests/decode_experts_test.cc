// The decode tap against decode-leg responses shaped as SGLang and vLLM 0.21 build them
// (tests/fixtures/engines/make_fixtures.py cites the engines' source): it records the generated
// tokens' counts, skips the prompt rows a PD decode engine never computed, takes the field out of
// what the client gets only when asked to, and forwards every other byte unchanged however the
// stream is cut.
#include "eldr/server/decode_experts.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <fstream>
#include <sstream>

#include "eldr/geometry.h"
#include "eldr/server/json_scan.h"
#include "engine_fixtures.h"
#include "status_matchers.h"

namespace eldr::server {
namespace {

namespace json = boost::json;
using ::eldr::IsOk;
using ::eldr::IsOkAndHolds;
using ::eldr::StatusIs;
using ::testing::HasSubstr;

using ::eldr::testing::ReadEngineFixture;

std::string ReadFixture(const std::string& name) { return ReadEngineFixture(name); }
ExpertCounts CountsFrom(const json::value& v) { return testing::CountsFromJson(v); }

struct Expected {
  int64_t prompt_tokens, start, generated;
  ExpertCounts decode;
};

Expected Load(const std::string& model) {
  const json::value e = json::parse(ReadFixture("expected.json")).at(model);
  return {e.at("prompt_tokens").as_int64(), e.at("start").as_int64(),
          e.at("decode_tokens").as_int64(), CountsFrom(e.at("decode_counts"))};
}

// The body as a JSON tree without sglext.routed_experts (and sglext when nothing is left).
json::value WithoutRoutedExperts(std::string_view body) {
  json::value v = json::parse(body);
  auto& o = v.as_object();
  if (auto* ext = o.if_contains("sglext"); ext && ext->is_object()) {
    ext->as_object().erase("routed_experts");
    if (ext->as_object().empty()) o.erase("sglext");
  }
  return v;
}

class DecodeTap : public ::testing::TestWithParam<std::string> {
 protected:
  std::string model() const { return GetParam(); }
  ModelGeometry g() const { return *FindModel(model()); }
};

TEST_P(DecodeTap, SglangBodyGivesTheGeneratedCountsAndIsStripped) {
  const Expected e = Load(model());
  const std::string body = ReadFixture(model() + ".decode-sglang.json");
  DecodeExpertsTap tap({.format = DecodeExpertsFormat::kSglang, .strip = true});
  const std::string sent = tap.Body(body);
  // Prompt rows are zeros (an id repeated k times): reading them would fail the whole payload.
  EXPECT_THAT(tap.Counts(g(), -1, e.generated, true), IsOkAndHolds(e.decode));
  EXPECT_EQ(json::parse(sent), WithoutRoutedExperts(body));
  EXPECT_EQ(sent.find("routed_experts"), std::string::npos);
  // sglext keeps what else it held.
  EXPECT_NE(sent.find("cached_tokens_details"), std::string::npos);
}

TEST_P(DecodeTap, ClientThatAskedGetsTheBodyUnchanged) {
  const Expected e = Load(model());
  const std::string body = ReadFixture(model() + ".decode-sglang.json");
  DecodeExpertsTap tap({.format = DecodeExpertsFormat::kSglang, .strip = false});
  EXPECT_EQ(tap.Body(body), body);
  EXPECT_THAT(tap.Counts(g(), -1, e.generated, true), IsOkAndHolds(e.decode));
}

TEST_P(DecodeTap, RowsFromTheStartTheClientSent) {
  const Expected e = Load(model());
  const std::string body = ReadFixture(model() + ".decode-sglang-start.json");
  DecodeExpertsTap tap({.format = DecodeExpertsFormat::kSglang, .start_row = e.start});
  tap.Body(body);
  EXPECT_THAT(tap.Counts(g(), -1, e.generated, true), IsOkAndHolds(e.decode));
  // Read as if from row 0, the rows do not fit the lengths: refused, not miscounted.
  DecodeExpertsTap wrong({.format = DecodeExpertsFormat::kSglang});
  wrong.Body(body);
  EXPECT_THAT(wrong.Counts(g(), -1, e.generated, true),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("fewer than the 32 to skip")));
}

TEST_P(DecodeTap, SglangStreamCutAnywhere) {
  const Expected e = Load(model());
  const std::string sse = ReadFixture(model() + ".decode-sglang.sse");
  // The reference: every event unchanged except the sglext one, whose payload goes.
  std::string want;
  for (size_t at = 0; at < sse.size();) {
    const size_t end = sse.find("\n\n", at) + 2;
    std::string_view ev = std::string_view(sse).substr(at, end - at);
    if (ev.find("routed_experts") != std::string_view::npos) {
      const std::string_view data = ev.substr(6, ev.size() - 8);
      auto stripped = JsonWithoutMember(data, "sglext");
      ASSERT_THAT(stripped, IsOk());
      want += "data: " + *stripped + "\n\n";
    } else {
      want += ev;
    }
    at = end;
  }
  const size_t step = sse.size() / 97 + 1;  // cut points across the whole stream, payload included
  for (size_t cut = 0; cut <= sse.size(); cut += step) {
    for (const bool strip : {true, false}) {
      DecodeExpertsTap tap({.format = DecodeExpertsFormat::kSglang, .strip = strip});
      std::string sent;
      tap.Feed(std::string_view(sse).substr(0, cut), &sent);
      tap.Feed(std::string_view(sse).substr(cut), &sent);
      tap.Finish(&sent);
      ASSERT_EQ(sent, strip ? want : sse) << "cut at " << cut;
      ASSERT_THAT(tap.Counts(g(), -1, e.generated, true), IsOkAndHolds(e.decode)) << cut;
    }
  }
  // Byte by byte: an event is held only until its end.
  DecodeExpertsTap tap({.format = DecodeExpertsFormat::kSglang, .strip = true});
  std::string sent;
  for (char c : sse) tap.Feed(std::string_view(&c, 1), &sent);
  EXPECT_EQ(sent, want);  // the stream's last event ends with its blank line: nothing held
  tap.Finish(&sent);
  EXPECT_EQ(sent, want);
}

TEST_P(DecodeTap, Vllm021ChoiceListsOfGeneratedTokens) {
  const Expected e = Load(model());
  const std::string body = ReadFixture(model() + ".decode-vllm-0.21.json");
  DecodeExpertsTap tap({.format = DecodeExpertsFormat::kVllmLists});
  EXPECT_EQ(tap.Body(body), body);  // the engine's own field: never stripped
  EXPECT_THAT(tap.Counts(g(), -1, e.generated, true), IsOkAndHolds(e.decode));
  // More rows than tokens generated is not what the engine sends.
  EXPECT_THAT(tap.Counts(g(), -1, e.generated - 2, true),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("rows for")));
}

TEST_P(DecodeTap, ABodyWithoutTheFieldIsNotFoundAndUntouched) {
  const std::string body = ReadFixture(model() + ".vllm-0.22-completion.json");
  for (const auto f : {DecodeExpertsFormat::kSglang, DecodeExpertsFormat::kVllmLists}) {
    DecodeExpertsTap tap({.format = f, .strip = true});
    // vLLM >= 0.22's routed_experts is a base64 string (prompt rows): not the generated lists.
    EXPECT_EQ(tap.Body(body), body);
    EXPECT_THAT(tap.Counts(g(), 32, 1, true), StatusIs(StatusCode::kNotFound, HasSubstr("no")));
  }
}

INSTANTIATE_TEST_SUITE_P(Models, DecodeTap, ::testing::Values("deepseek-v3", "qwen3-30b-a3b"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (char& c : n)
                             c = std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
                           return n;
                         });

TEST(DecodeTapTest, MalformedPayloadIsRefusedAndTheBodyStillForwarded) {
  const ModelGeometry g = *FindModel("qwen3-30b-a3b");
  const std::string body =
      R"({"id":"x","choices":[],"usage":{"prompt_tokens":4,"completion_tokens":2},)"
      R"("sglext":{"routed_experts":"!!!not base64"}})";
  DecodeExpertsTap tap({.format = DecodeExpertsFormat::kSglang, .strip = true});
  const std::string sent = tap.Body(body);
  EXPECT_EQ(sent, R"({"id":"x","choices":[],"usage":{"prompt_tokens":4,"completion_tokens":2}})");
  EXPECT_THAT(tap.Counts(g, -1, 2, true), StatusIs(StatusCode::kInvalidArgument, HasSubstr("")));
  // Not JSON at all: forwarded as it came, refused for the record.
  DecodeExpertsTap bad({.format = DecodeExpertsFormat::kSglang, .strip = true});
  EXPECT_EQ(bad.Body("{\"sglext\": [oops"), "{\"sglext\": [oops");
  EXPECT_THAT(bad.Counts(g, 4, 2, true), StatusIs(StatusCode::kInvalidArgument, HasSubstr("")));
}

TEST(DecodeTapTest, StripsWhereverTheMemberSits) {
  const ModelGeometry g = *FindModel("qwen3-30b-a3b");
  const std::string b64 = "\"\"";  // zero rows: enough to be collected
  const std::pair<std::string, std::string> cases[] = {
      {R"({"a":1,"sglext":{"x":null, "routed_experts" : )" + b64 + R"(},"b":2})",
       R"({"a":1,"sglext":{"x":null},"b":2})"},
      {R"({"sglext":{"routed_experts":)" + b64 + R"(,"x":1},"a":1})",
       R"({"sglext":{"x":1},"a":1})"},
      {R"({"a":1 , "sglext" : { "routed_experts":)" + b64 + R"( } })", R"({"a":1  })"},
      {R"({"sglext":{"routed_experts":)" + b64 + R"(},"a":1})", R"({"a":1})"},
      // An escaped key: found by the scan, cut the scanning way.
      {R"({"a":1,"sglext":{"\u0072outed_experts":)" + b64 + R"(}})", R"({"a":1})"},
  };
  for (const auto& [in, want] : cases) {
    DecodeExpertsTap tap({.format = DecodeExpertsFormat::kSglang, .strip = true});
    EXPECT_EQ(tap.Body(in), want) << in;
    EXPECT_THAT(tap.Counts(g, 0, 1, true), IsOkAndHolds(ExpertCounts(g.moe_layers, g.experts)));
  }
}

TEST(DecodeTapTest, UnknownPromptLengthIsAFailedPrecondition) {
  const ModelGeometry g = *FindModel("qwen3-30b-a3b");
  DecodeExpertsTap tap({.format = DecodeExpertsFormat::kSglang});
  tap.Body(R"({"choices":[],"sglext":{"routed_experts":""}})");
  EXPECT_THAT(tap.Counts(g, -1, 1, false),
              StatusIs(StatusCode::kFailedPrecondition, HasSubstr("prompt")));
}

TEST(DecodeTapTest, AnOversizedEventIsForwardedWhole) {
  const ModelGeometry g = *FindModel("qwen3-30b-a3b");
  const std::string sse = ReadFixture("qwen3-30b-a3b.decode-sglang.sse");
  DecodeExpertsTap tap({.format = DecodeExpertsFormat::kSglang, .strip = true, .max_bytes = 256});
  std::string sent;
  for (size_t at = 0; at < sse.size(); at += 100) {
    tap.Feed(std::string_view(sse).substr(at, 100), &sent);
  }
  tap.Finish(&sent);
  EXPECT_EQ(sent, sse);
  EXPECT_THAT(tap.Counts(g, -1, 6, true),
              StatusIs(StatusCode::kResourceExhausted, HasSubstr("256 bytes")));
}

TEST(JsonWithoutMemberTest, RemovesEveryOccurrenceKeepingTheRest) {
  EXPECT_THAT(JsonWithoutMember(R"({"a":1,"b":[2,{"c":3}],"d":"x"})", "b"),
              IsOkAndHolds(std::string(R"({"a":1,"d":"x"})")));
  EXPECT_THAT(JsonWithoutMember(R"({ "b" : 1 })", "b"), IsOkAndHolds(std::string("{}")));
  EXPECT_THAT(JsonWithoutMember(R"({"b":1,"a":2,"b":3})", "b"),
              IsOkAndHolds(std::string(R"({"a":2})")));
  EXPECT_THAT(JsonWithoutMember(R"({"\u0062":1,"a":2})", "b"),
              IsOkAndHolds(std::string(R"({"a":2})")));
  EXPECT_THAT(JsonWithoutMember(R"({"a":{"b":1}})", "b"),
              IsOkAndHolds(std::string(R"({"a":{"b":1}})")));
  EXPECT_THAT(JsonWithoutMember("{}", "b"), IsOkAndHolds(std::string("{}")));
  EXPECT_THAT(JsonWithoutMember(R"({"a":1,})", "a"),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("malformed")));
}

}  // namespace
}  // namespace eldr::server
