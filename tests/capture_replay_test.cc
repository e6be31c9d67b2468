// Capture replay (sim/capture_workload.h): recorded arrivals and lengths, a time split, and
// decode picks drawn from the recorded counts.
#include <gtest/gtest.h>

#include <bit>

#include "eldr/rng.h"
#include "eldr/sim/capture_workload.h"
#include "status_matchers.h"
#include "test_util.h"

namespace eldr::sim {
namespace {

using ::testing::HasSubstr;

struct Capture {
  std::vector<CalibrationRequest> reqs;
  std::vector<CaptureMeta> meta;
};

// n records, arriving every 100 ms in reverse order of index (the replay must sort them), each
// using only experts [4 * (i % 4), 4 * (i % 4) + 8) at every layer.
Capture Make(const ModelGeometry& g, int n) {
  Capture c;
  for (int i = 0; i < n; ++i) {
    CalibrationRequest r;
    r.id = fmt::format("r{}", i);
    r.label = i % 2 ? "code" : "math";
    r.prefill = ExpertCounts(g.moe_layers, g.experts);
    for (int l = 0; l < g.moe_layers; ++l) {
      for (int e = 0; e < 8; ++e) r.prefill.at(l, 4 * (i % 4) + e) = 1 + e;
    }
    c.reqs.push_back(std::move(r));
    CaptureMeta m;
    m.prompt_tokens = 10 + i;
    m.output_tokens = 20 + i;
    m.arrival_us = 5'000'000 + int64_t{100'000} * (n - 1 - i);
    c.meta.push_back(m);
  }
  return c;
}

TEST(CaptureReplayTest, ReplaysRecordedArrivalsSplitByTime) {
  const ModelGeometry g = *FindModel("gpt-oss-20b");
  Capture c = Make(g, 20);
  CaptureReplayOptions o;
  o.smoothing = 0;
  CaptureReplayStats st;
  auto w = MakeCaptureWorkload(g, c.reqs, c.meta, o, &st);
  ASSERT_THAT(w, IsOk());
  EXPECT_EQ(st.usable, 20);
  EXPECT_EQ(st.calibrating, 10);
  EXPECT_EQ(st.evaluated, 10);
  ASSERT_EQ(w->requests.size(), 10u);
  ASSERT_EQ(w->calibration.size(), 10u);
  // The latest arrivals (lowest indices) are evaluated, from time 0 in 100 ms steps.
  for (int j = 0; j < 10; ++j) {
    const auto& r = w->requests[j];
    EXPECT_EQ(r.id, j);
    EXPECT_EQ(r.arrival_us, int64_t{100'000} * j);
    const int i = 9 - j;  // record index
    EXPECT_EQ(r.prompt_tokens, 10 + i);
    EXPECT_EQ(r.output_tokens, 20 + i);
    EXPECT_EQ(r.prefill, c.reqs[i].prefill);
    // Every pick set holds exactly top_k experts per layer, all among the recorded ones.
    for (int t = 0; t < w->token_patterns; ++t) {
      for (int l = 0; l < g.moe_layers; ++l) {
        const uint64_t* b = w->Bits(r, t, l);
        int n = 0;
        for (int e = 0; e < g.experts; ++e) {
          if (b[e / 64] >> (e % 64) & 1) {
            ++n;
            EXPECT_GT(c.reqs[i].prefill.at(l, e), 0u) << "expert " << e << " was never used";
          }
        }
        ASSERT_EQ(n, g.top_k);
      }
    }
  }
  EXPECT_NEAR(st.span_s, 0.9, 1e-9);
  EXPECT_EQ(w->labels, (std::vector<std::string>{"code", "math"}));
}

TEST(CaptureReplayTest, HeavierExpertsAreDrawnMoreOften) {
  const ModelGeometry g = *FindModel("gpt-oss-20b");
  Capture c = Make(g, 8);
  CaptureReplayOptions o;
  o.token_patterns = 1024;
  auto w = MakeCaptureWorkload(g, c.reqs, c.meta, o);
  ASSERT_TRUE(w.has_value());
  // Record 0 (the last arrival: evaluated last) weighs experts 0..7 as 1..8.
  const auto& r = w->requests.back();
  int light = 0, heavy = 0;
  for (int t = 0; t < w->token_patterns; ++t) {
    const uint64_t* b = w->Bits(r, t, 0);
    light += b[0] & 1;
    heavy += b[0] >> 7 & 1;
  }
  EXPECT_GT(heavy, light);
}

TEST(CaptureReplayTest, RecordsWithoutReplayFieldsAreDroppedAndCounted) {
  const ModelGeometry g = *FindModel("gpt-oss-20b");
  Capture c = Make(g, 10);
  c.meta[0].arrival_us = -1;
  c.meta[1].output_tokens = 0;
  CaptureReplayStats st;
  auto w = MakeCaptureWorkload(g, c.reqs, c.meta, {}, &st);
  ASSERT_TRUE(w.has_value());
  EXPECT_EQ(st.missing_fields, 1);
  EXPECT_EQ(st.no_output, 1);
  EXPECT_EQ(st.usable, 8);
  c.meta.resize(3);
  c.reqs.resize(3);
  w = MakeCaptureWorkload(g, c.reqs, c.meta, {}, &st);
  ASSERT_THAT(w, StatusIs(StatusCode::kInvalidArgument, HasSubstr("need 4")));
}

TEST(CaptureReplayTest, ACaptureOfAnotherModelIsRefused) {
  const ModelGeometry g = *FindModel("gpt-oss-20b");
  Capture c = Make(g, 6);
  auto w = MakeCaptureWorkload(*FindModel("qwen3-30b-a3b"), c.reqs, c.meta, {});
  ASSERT_THAT(w, StatusIs(StatusCode::kInvalidArgument, HasSubstr("shaped")));
}

}  // namespace
}  // namespace eldr::sim
