#include <gtest/gtest.h>

#include "eldr/calibration.h"
#include "eldr/expert_counts.h"
#include "eldr/geometry.h"
#include "eldr/rng.h"
#include "eldr/status.h"
#include "status_matchers.h"

namespace eldr {
namespace {

using ::testing::AllOf;
using ::testing::Eq;
using ::testing::HasSubstr;
using ::testing::Not;

// The matchers the tests use to state a Status (status_matchers.h) fail when they should.
TEST(StatusMatchersTest, MatchWhatTheyNameAndNothingElse) {
  EXPECT_THAT(Status::Ok(), IsOk());
  EXPECT_THAT(InvalidArgument("bad port {}", 7), Not(IsOk()));
  EXPECT_THAT(InvalidArgument("bad port {}", 7),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("port 7")));
  EXPECT_THAT(InvalidArgument("bad port"), Not(StatusIs(StatusCode::kNotFound, HasSubstr("port"))));
  EXPECT_THAT(InvalidArgument("bad port"),
              Not(StatusIs(StatusCode::kInvalidArgument, HasSubstr("host"))));
  EXPECT_THAT(Result<int>(3), IsOkAndHolds(3));
  EXPECT_THAT(Result<int>(3), Not(IsOkAndHolds(4)));
  const Result<int> bad = NotFound("no such file");
  EXPECT_THAT(bad, Not(IsOkAndHolds(3)));
  EXPECT_THAT(bad, StatusIs(StatusCode::kNotFound, HasSubstr("file")));
  EXPECT_THAT(Result<int>(3), Not(StatusIs(StatusCode::kNotFound, HasSubstr(""))));
}

Result<int> Half(int x) {
  if (x % 2) return InvalidArgument("{} is odd", x);
  return x / 2;
}
Result<int> Quarter(int x) {
  ELDR_ASSIGN_OR_RETURN(int h, Half(x));
  ELDR_ASSIGN_OR_RETURN(int q, Half(h));
  return q;
}

TEST(StatusTest, ResultPropagatesErrorsWithMessages) {
  EXPECT_EQ(*Quarter(12), 3);
  auto r = Quarter(6);
  ASSERT_THAT(r, StatusIs(StatusCode::kInvalidArgument, Eq("3 is odd")));
  Status s = NotFound("x");
  EXPECT_EQ(s.WithContext("file a").message(), "file a: x");
  EXPECT_TRUE(Status().ok());
}

TEST(GeometryTest, PresetsAreValidAndFoundByAnySpelling) {
  for (const auto& g : ModelPresets()) EXPECT_TRUE(g.Validate().ok()) << g.name;
  EXPECT_EQ(FindModel("Qwen/Qwen3-30B-A3B")->moe_layers, 48);
  EXPECT_EQ(FindModel("gpt_oss_120b")->top_k, 4);
  auto missing = FindModel("llama-3");
  ASSERT_THAT(missing, StatusIs(StatusCode::kNotFound,
                                AllOf(HasSubstr("llama-3"), HasSubstr("qwen3-30b-a3b"))));
  // Qwen3-30B-A3B expert: 3 x 2048 x 768 bf16 weights.
  EXPECT_EQ(FindModel("qwen3-30b-a3b")->ExpertWeightBytes(), 3LL * 2048 * 768 * 2);
}

TEST(ExpertCountsTest, AddTokenValidatesAndLeavesCountsUntouchedOnError) {
  ExpertCounts c(2, 4);
  std::vector<int32_t> ok = {0, 3, 1, 2};
  ASSERT_TRUE(c.AddToken(ok, 2).ok());
  EXPECT_EQ(c.at(0, 3), 1u);
  EXPECT_EQ(c.Total(), 4u);
  const ExpertCounts before = c;
  std::vector<int32_t> out_of_range = {0, 1, 1, 4};
  EXPECT_EQ(c.AddToken(out_of_range, 2).code(), StatusCode::kOutOfRange);
  std::vector<int32_t> dup = {0, 1, 2, 2};
  EXPECT_EQ(c.AddToken(dup, 2).code(), StatusCode::kInvalidArgument);
  std::vector<int32_t> short_row = {0, 1, 2};
  EXPECT_EQ(c.AddToken(short_row, 2).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(c, before);
  ExpertCounts d = c;
  ASSERT_TRUE(d.Add(c).ok());
  ASSERT_TRUE(d.Subtract(c).ok());
  EXPECT_EQ(d, c);
  ExpertCounts big(2, 4);
  big.at(1, 1) = 9;
  EXPECT_EQ(d.Subtract(big).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(d, c);
  EXPECT_THAT(d.Add(ExpertCounts(3, 4)),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("cannot add 3x4 counts to 2x4")));
}

TEST(RngTest, DeterministicAndUniformEnough) {
  Rng a(5), b(5), c(6);
  EXPECT_EQ(a.Next(), b.Next());
  EXPECT_NE(a.Next(), c.Next());
  std::vector<int> h(7, 0);
  for (int i = 0; i < 70000; ++i) ++h[a.Uniform(7)];
  for (int x : h) EXPECT_NEAR(x, 10000, 400);
}

std::string Row(int L, int E, int v) {
  std::string s = "[";
  for (int l = 0; l < L; ++l) {
    s += l ? ",[" : "[";
    for (int e = 0; e < E; ++e) s += (e ? "," : "") + std::to_string(e == l % E ? v : 0);
    s += "]";
  }
  return s + "]";
}

TEST(CalibrationTest, ParsesHeaderRequestsAndLabelMix) {
  const ModelGeometry g = *FindModel("mixtral-8x7b");
  std::string text = R"({"format":"eldr.calibration","version":1,"model":"mixtral-8x7b"})"
                     "\n";
  text += R"({"id":"a","label":"x","prefill":)" + Row(32, 8, 2) + "}\n\n";
  text += R"({"label":"y","prefill":)" + Row(32, 8, 1) + R"(,"decode":)" + Row(32, 8, 5) + "}\n";
  text += R"({"label":"x","prefill":)" + Row(32, 8, 3) + "}\r\n";
  auto set = ParseCalibrationJsonl(text);
  ASSERT_TRUE(set.has_value()) << set.error().ToString();
  ASSERT_EQ(set->requests.size(), 3u);
  EXPECT_EQ(set->requests[0].id, "a");
  EXPECT_EQ(set->requests[1].id, "line4");
  EXPECT_EQ(set->requests[1].decode.at(0, 0), 5u);
  EXPECT_TRUE(set->requests[0].decode.empty());
  auto mix = LabelMix(set->requests);
  ASSERT_EQ(mix.size(), 2u);
  EXPECT_NEAR(mix[0].share, 2.0 / 3, 1e-12);
  // The same file checked against another model fails on the header.
  ModelGeometry other = *FindModel("gpt-oss-20b");
  auto wrong = ParseCalibrationJsonl(text, &other);
  ASSERT_THAT(wrong,
              StatusIs(StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr("line 1"),
                             HasSubstr("calibration data for Mixtral-8x7B, not GPT-OSS-20B"))));
  (void)g;
}

TEST(CalibrationTest, ErrorsNameTheLineAndTheProblem) {
  struct Case {
    std::string text;
    std::string needle;
    StatusCode code = StatusCode::kInvalidArgument;
  };
  const std::string hdr = R"({"format":"eldr.calibration","version":1,"model":"mixtral-8x7b"})"
                          "\n";
  const std::vector<Case> cases = {
      {"", "no requests"},
      {R"({"prefill":[]})", "no model"},
      {hdr + "{not json", "line 2: not valid JSON"},
      {hdr + "[1,2]", "JSON object"},
      {hdr + R"({"label":"x"})", "missing 'prefill'"},
      {hdr + R"({"prefill":[[1,2]]})", "list of 32 layers"},
      {hdr + R"({"prefill":)" + Row(32, 7, 1) + "}", "layer 0 must list 8"},
      {hdr + R"({"prefill":)" + Row(32, 8, -1) + "}", "out of range", StatusCode::kOutOfRange},
      {R"({"format":"eldr.calibration","version":1,"model":"nope"})", "unknown model",
       StatusCode::kNotFound},
      {R"({"format":"other"})", "format is not 'eldr.calibration'",
       StatusCode::kFailedPrecondition},
  };
  for (const auto& c : cases) {
    auto r = ParseCalibrationJsonl(c.text);
    EXPECT_THAT(r, StatusIs(c.code, HasSubstr(c.needle))) << c.text;
  }
}

}  // namespace
}  // namespace eldr
