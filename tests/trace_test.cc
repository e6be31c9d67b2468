#include "eldr/sim/trace.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <set>

#include "eldr/rng.h"
#include "status_matchers.h"
#include "test_util.h"

namespace eldr::sim {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

Trace SmallTrace(int requests, int tokens, uint64_t seed, int first_prompt = 100) {
  Trace t;
  t.geometry = *FindModel("gpt-oss-20b");
  t.source = "test";
  t.prefix_tokens = 8;
  Rng rng(seed);
  for (int i = 0; i < requests; ++i) {
    TraceRequest r;
    r.label = i % 3 ? "mmlu" : "gpqa";
    r.prompt_tokens = first_prompt + i;  // unique: identifies the source request on replay
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
  EXPECT_THAT(ParseTrace(bad), StatusIs(StatusCode::kInvalidArgument, HasSubstr("bad magic")));
  bad = good;
  bad.resize(bad.size() - 3);
  EXPECT_THAT(ParseTrace(bad), StatusIs(StatusCode::kInvalidArgument,
                                        HasSubstr("claims 17 tokens beyond the file's end")));
  bad = good;
  bad.push_back(0);
  EXPECT_THAT(ParseTrace(bad),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("1 trailing bytes")));
  bad = good;
  bad[bad.size() - 1] = 40;  // an expert id >= 32
  auto r = ParseTrace(bad);
  ASSERT_THAT(r, StatusIs(StatusCode::kOutOfRange, HasSubstr("expert 40 outside [0, 32)")));
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
  EXPECT_THAT(MakeTraceWorkload(t, bad),
              StatusIs(StatusCode::kInvalidArgument,
                       HasSubstr("0 of 20 requests with at least 8 + 100 routed tokens")));
}

// The source request of a workload request, by its (unique) prompt length; checks that the
// prefill counts are that request's prefix counts.
int SourceOf(const Trace& t, const WorkloadRequest& r, int first_prompt = 100) {
  const int i = r.prompt_tokens - first_prompt;
  if (i < 0 || i >= static_cast<int>(t.requests.size())) return -1;
  const TraceRequest& tr = t.requests[i];
  const ModelGeometry& g = t.geometry;
  ExpertCounts want(g.moe_layers, g.experts);
  for (int tok = 0; tok < t.prefix_tokens; ++tok)
    for (int l = 0; l < g.moe_layers; ++l)
      for (int j = 0; j < g.top_k; ++j)
        ++want.at(l, tr.picks[(static_cast<size_t>(tok) * g.moe_layers + l) * g.top_k + j]);
  for (int l = 0; l < g.moe_layers; ++l)
    for (int e = 0; e < g.experts; ++e)
      if (r.prefill.at(l, e) != want.at(l, e)) return -2;
  return i;
}

TEST(TraceTest, EvaluationPoolIsReplayedWithoutReplacementInShuffledPasses) {
  const Trace t = SmallTrace(40, 30, 5);
  TraceWorkloadOptions o;
  o.min_decode_tokens = 4;  // every request usable
  o.calibration_fraction = 0.5;
  TraceReplayStats st;
  o.requests = 20;  // == pool
  auto w = MakeTraceWorkload(t, o, &st);
  ASSERT_TRUE(w.has_value()) << w.error().ToString();
  ASSERT_EQ(st.pool, 20);
  EXPECT_EQ(st.passes, 1);
  std::set<int> cal;
  for (const auto& r : w->calibration) cal.insert(SourceOf(t, r));
  std::map<int, int> seen;
  for (const auto& r : w->requests) ++seen[SourceOf(t, r)];
  EXPECT_EQ(seen.size(), 20u);  // each of the 20 pool requests exactly once
  for (const auto& [src, n] : seen) {
    EXPECT_GE(src, 0);
    EXPECT_EQ(n, 1) << "request " << src;
    EXPECT_FALSE(cal.count(src)) << "request " << src << " both calibrates and is evaluated";
  }

  o.requests = 50;  // 2.5 x pool
  w = MakeTraceWorkload(t, o, &st);
  ASSERT_TRUE(w.has_value()) << w.error().ToString();
  EXPECT_EQ(st.generated, 50);
  EXPECT_EQ(st.passes, 3);
  std::vector<int> order;
  for (const auto& r : w->requests) order.push_back(SourceOf(t, r));
  seen.clear();
  for (int src : order) ++seen[src];
  EXPECT_EQ(seen.size(), 20u);
  for (const auto& [src, n] : seen) {
    EXPECT_TRUE(n == 2 || n == 3) << "request " << src << " appears " << n << " times";
  }
  // Each full pass is a permutation of the pool, and passes are shuffled afresh.
  const std::set<int> pass1(order.begin(), order.begin() + 20);
  const std::set<int> pass2(order.begin() + 20, order.begin() + 40);
  const std::set<int> pass3(order.begin() + 40, order.end());
  EXPECT_EQ(pass1.size(), 20u);
  EXPECT_EQ(pass2, pass1);
  EXPECT_EQ(pass3.size(), 10u);
  EXPECT_NE(std::vector<int>(order.begin(), order.begin() + 20),
            std::vector<int>(order.begin() + 20, order.begin() + 40));
  for (size_t i = 1; i < w->requests.size(); ++i) {
    EXPECT_EQ(w->requests[i].id, static_cast<int>(i));
    EXPECT_GE(w->requests[i].arrival_us, w->requests[i - 1].arrival_us);
  }
}

TEST(TraceTest, SingleTraceSplitIsDisjointAndHonoursTheFraction) {
  const Trace t = SmallTrace(40, 30, 6);
  TraceWorkloadOptions o;
  o.min_decode_tokens = 4;
  o.calibration_fraction = 0.25;
  o.requests = 30;
  TraceReplayStats st;
  auto w = MakeTraceWorkload(t, o, &st);
  ASSERT_TRUE(w.has_value()) << w.error().ToString();
  EXPECT_FALSE(st.separate_calibration);
  EXPECT_EQ(st.eval_trace.usable, 40);
  EXPECT_EQ(st.calibrating, 10);
  EXPECT_EQ(st.pool, 30);
  ASSERT_EQ(w->calibration.size(), 10u);
  std::set<int> cal, eval;
  for (const auto& r : w->calibration) cal.insert(SourceOf(t, r));
  for (const auto& r : w->requests) eval.insert(SourceOf(t, r));
  EXPECT_EQ(cal.size(), 10u);
  EXPECT_EQ(eval.size(), 30u);
  for (int src : cal) {
    EXPECT_GE(src, 0);
    EXPECT_FALSE(eval.count(src)) << "request " << src << " is in both sets";
  }
  double shares = 0;
  for (double s : w->label_shares) shares += s;
  EXPECT_NEAR(shares, 1.0, 1e-12);
}

TEST(TraceTest, SeparateCalibrationTraceCalibratesAndTheEvalTraceIsReplayedWhole) {
  Trace eval = SmallTrace(12, 30, 7);
  Trace cal = SmallTrace(9, 30, 8, /*first_prompt=*/1000);
  for (auto& r : cal.requests) r.label = "polyglot";  // only in the calibration trace
  eval.requests[3].tokens = 10;                       // too short: 10 < 8 + 4
  eval.requests[3].picks.resize(10 * 24 * 4);
  TraceWorkloadOptions o;
  o.min_decode_tokens = 4;
  o.requests = 11;
  TraceReplayStats st;
  auto w = MakeTraceWorkload(eval, cal, o, &st);
  ASSERT_TRUE(w.has_value()) << w.error().ToString();
  EXPECT_TRUE(st.separate_calibration);
  EXPECT_EQ(st.eval_trace.usable, 11);
  EXPECT_EQ(st.eval_trace.too_short, 1);
  EXPECT_EQ(st.calibration_trace.requests, 9);
  EXPECT_EQ(st.calibration_trace.usable, 9);
  EXPECT_EQ(st.calibrating, 9);
  EXPECT_EQ(st.pool, 11);
  EXPECT_EQ(st.passes, 1);
  std::set<int> evaluated, calibrating;
  for (const auto& r : w->requests) evaluated.insert(SourceOf(eval, r));
  for (const auto& r : w->calibration) calibrating.insert(SourceOf(cal, r, 1000));
  std::set<int> want_eval;
  for (int i = 0; i < 12; ++i)
    if (i != 3) want_eval.insert(i);
  EXPECT_EQ(evaluated, want_eval);
  EXPECT_EQ(calibrating, (std::set<int>{0, 1, 2, 3, 4, 5, 6, 7, 8}));
  // Labels: the union of both traces'; shares from the calibration requests only.
  ASSERT_EQ(w->labels, (std::vector<std::string>{"gpqa", "mmlu", "polyglot"}));
  EXPECT_EQ(w->label_shares, (std::vector<double>{0, 0, 1}));
  for (const auto& r : w->requests) EXPECT_LT(w->labels[r.label], "polyglot");
  for (const auto& r : w->calibration) EXPECT_EQ(w->labels[r.label], "polyglot");

  Trace other = cal;
  other.geometry = *FindModel("qwen3-30b-a3b");
  auto bad = MakeTraceWorkload(eval, other, o);
  EXPECT_THAT(bad, StatusIs(StatusCode::kInvalidArgument,
                            AllOf(HasSubstr("gpt-oss-20b"), HasSubstr("qwen3-30b-a3b"))));
  other = cal;
  other.geometry.top_k = 2;  // same name, other routing
  EXPECT_THAT(MakeTraceWorkload(eval, other, o),
              StatusIs(StatusCode::kInvalidArgument,
                       HasSubstr("(24 x 32, top-4); both must be for the same model")));
  EXPECT_THAT(
      MakeTraceWorkload(eval, eval, o),
      StatusIs(StatusCode::kInvalidArgument,
               HasSubstr("the calibration trace is the evaluation trace")));  // not disjoint
}

TEST(TraceTest, ReplayStatsCountShortRequests) {
  Trace t = SmallTrace(30, 30, 9);
  // prefix 8 + min decode 6 = 14 routed tokens needed: 7 requests fall short, at various depths
  // (none, only a prefix, a prefix and too little decode, exactly one short).
  const int short_tokens[] = {0, 5, 8, 9, 12, 13, 13};
  for (int i = 0; i < 7; ++i) {
    TraceRequest& r = t.requests[i * 4];
    r.tokens = short_tokens[i];
    r.picks.resize(static_cast<size_t>(r.tokens) * 24 * 4);
  }
  t.requests[1].tokens = 14;  // exactly at the threshold: usable
  t.requests[1].picks.resize(14 * 24 * 4);
  TraceWorkloadOptions o;
  o.min_decode_tokens = 6;
  o.calibration_fraction = 0.5;
  o.requests = 25;
  TraceReplayStats st;
  auto w = MakeTraceWorkload(t, o, &st);
  ASSERT_TRUE(w.has_value()) << w.error().ToString();
  EXPECT_EQ(st.eval_trace.requests, 30);
  EXPECT_EQ(st.eval_trace.usable, 23);
  EXPECT_EQ(st.eval_trace.too_short, 7);
  EXPECT_EQ(st.eval_trace.min_routed_tokens, 14);
  EXPECT_EQ(st.calibration_trace.requests, 0);
  EXPECT_EQ(st.calibrating, 12);  // round(0.5 x 23)
  EXPECT_EQ(st.pool, 11);
  EXPECT_EQ(st.generated, 25);
  EXPECT_EQ(st.passes, 3);
  EXPECT_EQ(w->calibration.size(), 12u);
  EXPECT_EQ(w->requests.size(), 25u);
  auto is_short = [](int src) { return src % 4 == 0 && src < 28; };
  for (const auto* set : {&w->calibration, &w->requests}) {
    for (const auto& r : *set) {
      const int src = SourceOf(t, r);
      EXPECT_TRUE(src >= 0 && !is_short(src)) << "request " << src << " should be dropped";
    }
  }
}

TEST(TraceTest, BadOptionsAreRejectedByName) {
  const Trace t = SmallTrace(20, 30, 10);
  for (double f : {0.0, 1.0, std::nan(""), -0.5, 1.5}) {
    TraceWorkloadOptions o;
    o.min_decode_tokens = 4;
    o.calibration_fraction = f;
    auto w = MakeTraceWorkload(t, o);
    EXPECT_THAT(w, StatusIs(StatusCode::kInvalidArgument, HasSubstr("calibration_fraction"))) << f;
  }
  TraceWorkloadOptions o;
  o.requests = 0;
  auto w = MakeTraceWorkload(t, o);
  EXPECT_THAT(w, StatusIs(StatusCode::kInvalidArgument, HasSubstr("requests")));
  o = {};
  o.rate_qps = -1;
  EXPECT_THAT(o.Validate(), StatusIs(StatusCode::kInvalidArgument, HasSubstr("rate_qps")));
  o = {};
  o.min_decode_tokens = 0;
  EXPECT_THAT(o.Validate(), StatusIs(StatusCode::kInvalidArgument, HasSubstr("min_decode_tokens")));
  o = {};
  o.output_tokens = 1;
  EXPECT_THAT(o.Validate(), StatusIs(StatusCode::kInvalidArgument, HasSubstr("output_tokens")));
}

// A trace whose requests each route every token to one fixed expert set per layer. With
// `shared_by_label` every request of a label uses its label's sets (perfect label locality);
// otherwise each request draws its own, independent of its label (no label locality at all).
Trace FixedSetTrace(int labels, int per_label, bool shared_by_label, uint64_t seed) {
  Trace t;
  t.geometry = *FindModel("gpt-oss-20b");
  t.prefix_tokens = 4;
  const ModelGeometry& g = t.geometry;
  Rng rng(seed);
  auto draw_sets = [&] {
    std::vector<uint16_t> row;
    for (int l = 0; l < g.moe_layers; ++l) {
      std::vector<uint16_t> perm(g.experts);
      for (int e = 0; e < g.experts; ++e) perm[e] = static_cast<uint16_t>(e);
      for (int j = 0; j < g.top_k; ++j) std::swap(perm[j], perm[j + rng.Uniform(g.experts - j)]);
      row.insert(row.end(), perm.begin(), perm.begin() + g.top_k);
    }
    return row;
  };
  std::vector<std::vector<uint16_t>> label_rows;
  for (int d = 0; d < labels; ++d) label_rows.push_back(draw_sets());
  for (int i = 0; i < labels * per_label; ++i) {
    TraceRequest r;
    r.label = "L" + std::to_string(i % labels);
    r.prompt_tokens = 10;
    r.tokens = 24;
    const std::vector<uint16_t> row = shared_by_label ? label_rows[i % labels] : draw_sets();
    for (int tok = 0; tok < r.tokens; ++tok) r.picks.insert(r.picks.end(), row.begin(), row.end());
    t.requests.push_back(std::move(r));
  }
  return t;
}

Result<WorkloadStats> StatsOf(const Trace& t, int batch) {
  TraceWorkloadOptions o;
  o.requests = 1;
  o.min_decode_tokens = 4;
  o.calibration_fraction = 0.95;
  ELDR_ASSIGN_OR_RETURN(const Workload w, MakeTraceWorkload(t, o));
  return MeasureWorkload(w, batch);
}

// Same-label and mixed batches are drawn without replacement: with labels smaller than the
// batch, a batch drawn with replacement would hold the same request several times, select fewer
// distinct experts and report label locality that the trace does not have.
TEST(TraceTest, SameLabelReductionDrawsBatchesWithoutReplacement) {
  for (uint64_t seed : {1, 2, 3}) {
    SCOPED_TRACE(seed);
    // 8 labels of 5 requests, batches of 16: no label locality, so no reduction.
    auto none = StatsOf(FixedSetTrace(8, 5, /*shared_by_label=*/false, seed), 16);
    ASSERT_TRUE(none.has_value()) << none.error().ToString();
    EXPECT_NEAR(none->same_domain_reduction, 0.0, 0.05);
    // Perfect label locality is still measured: a label's batch selects only top-k experts.
    auto all = StatsOf(FixedSetTrace(8, 5, /*shared_by_label=*/true, seed), 16);
    ASSERT_TRUE(all.has_value()) << all.error().ToString();
    EXPECT_GT(all->same_domain_reduction, 0.5);
  }
  // Labels larger than the batch: full batches of distinct requests, still no reduction.
  auto big = StatsOf(FixedSetTrace(2, 40, /*shared_by_label=*/false, 4), 16);
  ASSERT_TRUE(big.has_value()) << big.error().ToString();
  EXPECT_NEAR(big->same_domain_reduction, 0.0, 0.05);
}

TEST(TraceTest, PoolTooSmallWarnsPastHalfThePool) {
  EXPECT_FALSE(PoolTooSmall(10, 100));
  EXPECT_FALSE(PoolTooSmall(50, 100));
  EXPECT_TRUE(PoolTooSmall(51, 100));
  EXPECT_TRUE(PoolTooSmall(200, 100));
}

// Regression (fuzz/trace_fuzz.cc): an empty label and a request without routed tokens read back.
// The reader copied zero bytes from a null pointer, undefined behaviour that UBSan reports in the
// asan preset.
TEST(TraceTest, EmptyLabelAndZeroTokenRequestRoundTrip) {
  Trace t = SmallTrace(2, 3, 4);
  t.requests[0].label.clear();
  t.requests[1].tokens = 0;
  t.requests[1].picks.clear();
  auto back = ParseTrace(SerializeTrace(t));
  ASSERT_TRUE(back.has_value()) << back.error().ToString();
  ASSERT_EQ(back->requests.size(), 2u);
  EXPECT_EQ(back->requests[0].label, "");
  EXPECT_EQ(back->requests[0].picks, t.requests[0].picks);
  EXPECT_EQ(back->requests[1].tokens, 0);
  EXPECT_TRUE(back->requests[1].picks.empty());
}

}  // namespace
}  // namespace eldr::sim
