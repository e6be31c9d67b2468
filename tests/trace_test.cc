#include "eldr/sim/trace.h"

#include <gtest/gtest.h>

#include "eldr/rng.h"
#include "test_util.h"

namespace eldr::sim {
namespace {

Trace SmallTrace(int requests, int tokens, uint64_t seed) {
  Trace t;
  t.geometry = *FindModel("gpt-oss-20b");
  t.source = "test";
  t.prefix_tokens = 8;
  Rng rng(seed);
  for (int i = 0; i < requests; ++i) {
    TraceRequest r;
    r.label = i % 3 ? "mmlu" : "gpqa";
    r.prompt_tokens = 100 + i;
    r.tokens = tokens - i % 5;
    for (int32_t p : testing::RandomPicks(t.geometry, r.tokens, rng)) {
      r.picks.push_back(static_cast<uint16_t>(p));
    }
    t.requests.push_back(std::move(r));
  }
  return t;
}

TEST(TraceTest, SerializeParseRoundTrip) {
  const Trace t = SmallTrace(12, 40, 1);
  const auto bytes = SerializeTrace(t);
  auto back = ParseTrace(bytes);
  ASSERT_TRUE(back.has_value()) << back.error().ToString();
  ASSERT_EQ(back->requests.size(), 12u);
  EXPECT_EQ(back->geometry.name, "gpt-oss-20b");
  EXPECT_EQ(back->prefix_tokens, 8);
  for (size_t i = 0; i < 12; ++i) {
    EXPECT_EQ(back->requests[i].label, t.requests[i].label);
    EXPECT_EQ(back->requests[i].prompt_tokens, t.requests[i].prompt_tokens);
    EXPECT_EQ(back->requests[i].picks, t.requests[i].picks);
  }
}

TEST(TraceTest, CorruptFilesAreRejectedNeverCrash) {
  const auto good = SerializeTrace(SmallTrace(4, 20, 2));
  auto bad = good;
  bad[0] = 'X';
  EXPECT_FALSE(ParseTrace(bad).has_value());
  bad = good;
  bad.resize(bad.size() - 3);
  EXPECT_FALSE(ParseTrace(bad).has_value());
  bad = good;
  bad.push_back(0);
  EXPECT_FALSE(ParseTrace(bad).has_value());
  bad = good;
  bad[bad.size() - 1] = 40;  // an expert id >= 32
  auto r = ParseTrace(bad);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kOutOfRange);
  Rng rng(3);
  for (int i = 0; i < 2000; ++i) {
    bad = good;
    for (int e = 0; e < 3; ++e) bad[rng.Uniform(bad.size())] = static_cast<uint8_t>(rng.Next());
    auto p = ParseTrace(bad);
    if (p.has_value()) {
      for (const auto& req : p->requests) {
        EXPECT_EQ(req.picks.size(), static_cast<size_t>(req.tokens) * 24 * 4);
      }
    }
  }
}

TEST(TraceTest, WorkloadUsesThePrefixAsPromptAndTheRestAsDecodePicks) {
  const Trace t = SmallTrace(20, 30, 4);
  TraceWorkloadOptions o;
  o.requests = 50;
  o.rate_qps = 10;
  o.min_decode_tokens = 4;
  auto w = MakeTraceWorkload(t, o);
  ASSERT_TRUE(w.has_value()) << w.error().ToString();
  EXPECT_EQ(w->requests.size(), 50u);
  EXPECT_EQ(w->calibration.size(), 10u);
  EXPECT_EQ(w->token_patterns, 22);  // longest decode part: 30 - 8
  EXPECT_EQ(w->labels, (std::vector<std::string>{"gpqa", "mmlu"}));
  for (const auto& r : w->requests) {
    EXPECT_EQ(r.prefill.Total(), 8u * 24 * 4);  // the 8 prefix tokens
    // Every decode pattern has exactly top-k experts per layer.
    for (int p = 0; p < w->token_patterns; ++p) {
      int n = 0;
      for (int i = 0; i < w->words; ++i) n += std::popcount(w->Bits(r, p, 5)[i]);
      EXPECT_EQ(n, 4);
    }
  }
  for (const auto& r : w->calibration) {
    EXPECT_GT(r.decode.Total(), 0u);
  }
  TraceWorkloadOptions bad = o;
  bad.min_decode_tokens = 100;
  EXPECT_FALSE(MakeTraceWorkload(t, bad).has_value());
}

}  // namespace
}  // namespace eldr::sim
