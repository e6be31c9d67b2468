// Cluster: the router's worker state and decisions, without sockets (time passed in).
#include "eldr/server/cluster.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <boost/json.hpp>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <set>

#include "eldr/geometry.h"
#include "eldr/server/refit_loop.h"
#include "status_matchers.h"

namespace eldr::server {
namespace {

using ::testing::HasSubstr;

namespace json = boost::json;

// The I/O layer's address type is opaque here: a null address stands for any resolved one.
Cluster::Resolver NoResolve() {
  return [](const WorkerSpec&) -> Result<std::shared_ptr<const UpstreamAddress>> {
    return std::shared_ptr<const UpstreamAddress>();
  };
}

std::string WriteSpace(int k) {
  const ModelGeometry g = *FindModel("gpt-oss-20b");
  SignatureSpaceSpec s;
  s.model = g.name;
  s.layers = g.moe_layers;
  s.experts = g.experts;
  s.layer_mask = {0};
  s.idf.assign(g.experts, 1.0f);
  for (int j = 0; j < k; ++j) {
    std::vector<float> c(g.experts, 0.1f);
    c[j] = 1.0f;
    s.centroids.push_back(c);
  }
  const std::string path =
      (std::filesystem::temp_directory_path() / ("cluster_test_space_" + std::to_string(k)))
          .string();
  std::FILE* f = std::fopen(path.c_str(), "w");
  const std::string text = (*SignatureSpace::Build(s))->ToJson();
  std::fwrite(text.data(), 1, text.size(), f);
  std::fclose(f);
  return path;
}

ServeOptions Options(int decoders, const std::string& policy) {
  ServeOptions o;
  o.model = "gpt-oss-20b";
  o.policy = policy;
  o.prefill = {*ParseWorkerUrl("http://p:1")};
  for (int i = 0; i < decoders; ++i) {
    o.decode.push_back(*ParseWorkerUrl("http://d:" + std::to_string(10 + i)));
  }
  o.failure_threshold = 2;
  o.open_ms = 1000;
  return o;
}

TEST(ClusterTest, DecisionsSkipUnavailableDecodersAndSayWhenNoneIsLeft) {
  const ServeOptions o = Options(3, "jsq");
  auto c = *Cluster::Create(o, *FindModel(o.model), NoResolve());
  auto s = c->Snap();
  PolicySlot slot(1);
  const int64_t now = 1'000'000;
  s->decode[0]->draining = true;
  s->decode[1]->breaker.OnFailure(now);
  s->decode[1]->breaker.OnFailure(now);  // threshold 2: open
  for (int i = 0; i < 20; ++i) {
    EXPECT_EQ(c->RouteDecode(*s, slot, nullptr, {}, now).decoder, 2);
  }
  const std::vector<uint8_t> excluded = {0, 0, 1};
  EXPECT_EQ(c->RouteDecode(*s, slot, nullptr, excluded, now).decoder, -1);
  // The open circuit turns half-open after open_ms: the decoder may be tried again.
  EXPECT_EQ(c->RouteDecode(*s, slot, nullptr, excluded, now + 1'000'001).decoder, 1);
}

TEST(ClusterTest, EldrDegradesToJsqWhenTheSpaceNoLongerFitsAndSaysWhy) {
  ServeOptions o = Options(2, "eldr");
  o.space = WriteSpace(2);
  auto c = *Cluster::Create(o, *FindModel(o.model), NoResolve());
  EXPECT_EQ(c->Snap()->policy.options.name, "eldr");
  EXPECT_TRUE(c->Snap()->policy.degraded.empty());
  ExpertCounts counts(24, 32);
  counts.mutable_data()[1] = 5;  // layer 0, expert 1: centroid 1
  PolicySlot slot(1);
  Decision d = c->RouteDecode(*c->Snap(), slot, &counts, {}, 0);
  EXPECT_EQ(d.decoder, 1);
  EXPECT_FALSE(d.fallback);
  ASSERT_TRUE(c->AddWorker("decode", "http://d:99").ok());
  auto s = c->Snap();
  EXPECT_EQ(s->policy.options.name, "jsq");
  EXPECT_NE(s->policy.degraded.find("space k=2 != 3 decoders"), std::string::npos);
  d = c->RouteDecode(*s, slot, &counts, {}, 0);
  EXPECT_TRUE(d.fallback);  // counted: eldr_policy_fallbacks_total
  const json::object w = json::parse(c->WorkersJson(0)).as_object();
  EXPECT_NE(std::string(w.at("policy").as_string()).find("degraded"), std::string::npos);
  std::string metrics;
  c->RenderMetrics(&metrics, 0);
  EXPECT_NE(metrics.find("eldr_policy_fallbacks_total 1"), std::string::npos) << metrics;
  // A space fitted for three decoders restores eldr.
  ASSERT_TRUE(c->Reload(WriteSpace(3)).ok());
  EXPECT_EQ(c->Snap()->policy.options.name, "eldr");
  EXPECT_GT(c->Snap()->version, s->version);
  // A space for the wrong count is refused and the old one kept.
  EXPECT_EQ(c->Reload(WriteSpace(2)).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(c->Snap()->policy.options.name, "eldr");
}

TEST(ClusterTest, EldrPlusServesWithItsOwnOptionsAndDegradesLikeEldr) {
  ServeOptions o = Options(2, "eldr-plus");
  o.space = WriteSpace(2);
  o.plus_tau = 0.05;
  o.plus_slack = 0.3;
  auto c = *Cluster::Create(o, *FindModel(o.model), NoResolve());
  auto s = c->Snap();
  EXPECT_EQ(s->policy.options.name, "eldr-plus");
  EXPECT_DOUBLE_EQ(s->policy.options.plus.tau, 0.05);
  EXPECT_DOUBLE_EQ(s->policy.options.plus.slack, 0.3);
  ExpertCounts counts(24, 32);
  counts.mutable_data()[1] = 5;  // layer 0, expert 1: centroid 1
  PolicySlot slot(1);
  Decision d = c->RouteDecode(*s, slot, &counts, {}, 0);
  EXPECT_EQ(d.decoder, 1);
  EXPECT_FALSE(d.fallback);
  ASSERT_TRUE(c->AddWorker("decode", "http://d:99").ok());
  EXPECT_EQ(c->Snap()->policy.options.name, "jsq");
  EXPECT_NE(c->Snap()->policy.degraded.find("space k=2 != 3 decoders"), std::string::npos);
}

TEST(ClusterTest, AdminOperationsValidateAndKeepInFlightWorkers) {
  const ServeOptions o = Options(2, "rr");
  auto c = *Cluster::Create(o, *FindModel(o.model), NoResolve());
  EXPECT_EQ(c->AddWorker("router", "http://x:1").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(c->AddWorker("decode", "http://d:10").code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(c->AddWorker("decode", "not a url").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(c->RemoveWorker("prefill", "http://p:1").code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(c->RemoveWorker("decode", "http://nope:1").code(), StatusCode::kNotFound);
  EXPECT_EQ(c->Drain("both", "http://d:10", true).code(), StatusCode::kInvalidArgument);
  auto before = c->Snap();
  Ticket t(before->decode[0]);
  ASSERT_TRUE(c->RemoveWorker("decode", "http://d:10").ok());
  EXPECT_EQ(c->Snap()->decode.size(), 1u);
  EXPECT_EQ(before->decode[0]->in_flight.load(), 1);  // the request keeps its worker
  t.Release();
  EXPECT_EQ(before->decode[0]->in_flight.load(), 0);
}

TEST(ClusterTest, SignatureSourcesAreReportedPerPrefillWorker) {
  const ServeOptions o = Options(1, "jsq");
  auto c = *Cluster::Create(o, *FindModel(o.model), NoResolve());
  auto& w = *c->Snap()->prefill[0];
  w.signatures[static_cast<int>(SignatureSource::kSglang)] += 3;
  w.signatures[static_cast<int>(SignatureSource::kNone)] += 2;
  w.last_source = static_cast<int>(SignatureSource::kSglang);
  std::string m;
  c->RenderMetrics(&m, 0);
  EXPECT_NE(
      m.find(
          R"(eldr_prefill_signatures_total{role="prefill",worker="http://p:1",source="sglang"} 3)"),
      std::string::npos)
      << m;
  EXPECT_NE(m.find(R"(source="none"} 2)"), std::string::npos);
  const json::object j = json::parse(c->WorkersJson(0)).as_object();
  const json::object& sig = j.at("workers").as_array()[0].as_object().at("signature").as_object();
  EXPECT_EQ(sig.at("last_source"), "sglang");
  EXPECT_EQ(sig.at("without_signature").to_number<uint64_t>(), 2u);
}

TEST(ClusterTest, MissingSignaturesAreWarnedAboutAtMostOnceAMinutePerWorker) {
  const ServeOptions o = Options(1, "jsq");
  auto c = *Cluster::Create(o, *FindModel(o.model), NoResolve());
  Worker& w = *c->Snap()->prefill[0];
  PrefillResult none, good;
  good.source = SignatureSource::kVllm;
  EXPECT_FALSE(w.CountSignature(good, 0));
  EXPECT_TRUE(w.CountSignature(none, 1'000'000));
  EXPECT_FALSE(w.CountSignature(none, 30'000'000));
  EXPECT_TRUE(w.CountSignature(none, 61'000'001));
  PrefillResult partial = good;
  partial.partial = true;
  EXPECT_FALSE(w.CountSignature(partial, 62'000'000));  // within the minute
  EXPECT_EQ(w.signatures[0].load(), 3u);
  EXPECT_EQ(w.signatures[static_cast<int>(SignatureSource::kVllm)].load(), 2u);
  EXPECT_EQ(w.signatures_partial.load(), 1u);
}

// Counts on experts j..j+3 at every layer, expert j the heaviest at layer 0 (so the test
// space's centroid j matches it best).
ExpertCounts Peaked(const ModelGeometry& g, int j) {
  ExpertCounts c(g.moe_layers, g.experts);
  for (int l = 0; l < g.moe_layers; ++l) {
    for (int e = j; e < j + 4; ++e) c.at(l, e) = 10;
  }
  c.at(0, j) = 100;
  return c;
}

double Metric(const std::string& text, const std::string& sample) {
  const std::string key = "\n" + sample + " ";  // a sample line, not its # HELP
  const size_t at = ("\n" + text).find(key);
  if (at == std::string::npos) return NAN;
  return std::stod(text.substr(at + key.size() - 1));
}

TEST(ClusterTest, ShadowRoutesByTheBaselineAndCountsWhatTheCandidateWouldDo) {
  ServeOptions o = Options(3, "shadow");
  o.shadow_of = "rr";
  o.space = WriteSpace(3);
  ASSERT_TRUE(o.Validate().ok()) << o.Validate().message();
  const ModelGeometry g = *FindModel(o.model);
  auto c = *Cluster::Create(o, g, NoResolve());
  auto s = c->Snap();
  ASSERT_TRUE(s->shadow.has_value()) << s->shadow_degraded;
  EXPECT_EQ(s->policy.options.name, "rr");
  PolicySlot slot(1);
  const ExpertCounts req = Peaked(g, 1);
  std::vector<ShadowTicket> tickets;
  std::vector<int> routed;
  for (int i = 0; i < 6; ++i) {
    const Decision d = c->RouteDecode(*s, slot, &req, {}, 0);
    routed.push_back(d.decoder);
    EXPECT_EQ(d.shadow, 1) << "the candidate keeps the request on its best centroid";
    tickets.emplace_back(*s, d, &req, g.top_k);
  }
  // Round-robin routes; the candidate would have put all six on decoder 1.
  EXPECT_EQ(std::count(routed.begin(), routed.end(), 1), 2);
  EXPECT_EQ(c->RouteDecode(*s, slot, nullptr, {}, 0).shadow, -1);  // no signature: no choice
  std::string text;
  c->RenderMetrics(&text, 0);
  EXPECT_EQ(Metric(text, "eldr_shadow_decisions_total{outcome=\"agree\"}"), 2);
  EXPECT_EQ(Metric(text, "eldr_shadow_decisions_total{outcome=\"disagree\"}"), 4);
  EXPECT_EQ(Metric(text, "eldr_shadow_decisions_total{outcome=\"no_choice\"}"), 1);
  EXPECT_EQ(s->decode[1]->shadow_in_flight.load(), 6);
  EXPECT_EQ(s->decode[0]->shadow_in_flight.load(), 0);
  // Identical requests: ~4 experts per layer per step wherever they run, so the shadow routing
  // (one decoder) loads a third of what the real one (three) does.
  for (int k = 0; k < 3; ++k) {
    EXPECT_NEAR(s->decode[k]->actual_experts->ExpectedDistinct(), 4.0, 0.1);
  }
  EXPECT_NEAR(s->decode[1]->shadow_experts->ExpectedDistinct(), 4.0, 0.1);
  EXPECT_EQ(s->decode[0]->shadow_experts->ExpectedDistinct(), 0);
  EXPECT_NEAR(Metric(text, "eldr_shadow_predicted_change_ratio"), -2.0 / 3, 0.02);
  tickets.clear();
  text.clear();
  c->RenderMetrics(&text, 0);
  EXPECT_EQ(Metric(text, "eldr_shadow_predicted_change_ratio"), 0);
  for (const auto& w : s->decode) {
    EXPECT_EQ(w->shadow_in_flight.load(), 0);
    EXPECT_EQ(w->actual_experts->requests(), 0);
    EXPECT_EQ(w->shadow_experts->ExpectedDistinct(), 0);
  }
}

TEST(ClusterTest, ExpertEstimateOutsideShadowModeFollowsTheInFlightRequests) {
  ServeOptions o = Options(2, "jsq");
  o.expert_estimate = true;
  const ModelGeometry g = *FindModel(o.model);
  auto c = *Cluster::Create(o, g, NoResolve());
  auto s = c->Snap();
  PolicySlot slot(1);
  const ExpertCounts a = Peaked(g, 0), b = Peaked(g, 8);
  std::vector<ShadowTicket> tickets;
  for (const ExpertCounts* req : {&a, &b, &a}) {
    const Decision d = c->RouteDecode(*s, slot, req, {}, 0);
    EXPECT_EQ(d.shadow, -1);
    tickets.emplace_back(*s, d, req, g.top_k);
  }
  std::string text;
  c->RenderMetrics(&text, 0);
  double total = 0;
  for (const auto& w : s->decode) total += w->actual_experts->ExpectedDistinct();
  EXPECT_GT(total, 7.5);  // two decoders, ~4 experts per layer each at least
  EXPECT_NE(text.find("eldr_decode_expected_distinct_experts{"), std::string::npos);
  EXPECT_EQ(text.find("eldr_shadow_"), std::string::npos);
  tickets.clear();
  for (const auto& w : s->decode) EXPECT_EQ(w->actual_experts->ExpectedDistinct(), 0);
}

TEST(ClusterTest, ShadowWithoutAFittingSpaceRoutesAndSaysWhy) {
  ServeOptions o = Options(3, "shadow");
  o.space = WriteSpace(3);
  auto c = *Cluster::Create(o, *FindModel(o.model), NoResolve());
  ASSERT_TRUE(c->RemoveWorker("decode", "http://d:12").ok());
  auto s = c->Snap();
  EXPECT_FALSE(s->shadow.has_value());
  EXPECT_NE(s->shadow_degraded.find("space k=3 != 2 decoders"), std::string::npos);
  PolicySlot slot(1);
  const ExpertCounts req = Peaked(*FindModel(o.model), 1);
  const Decision d = c->RouteDecode(*s, slot, &req, {}, 0);
  EXPECT_GE(d.decoder, 0);  // jsq still routes
  EXPECT_EQ(d.shadow, -1);
}

TEST(ClusterTest, ShadowOptionsAreValidated) {
  ServeOptions o = Options(2, "shadow");
  EXPECT_THAT(o.Validate(),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("needs a signature space")));
  o.space = "x.json";
  o.shadow_of = "eldr";
  EXPECT_THAT(o.Validate(),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("shadow_of must be a load policy")));
  o.shadow_of = "p2c";
  o.shadow_candidate = "jsq";
  EXPECT_THAT(o.Validate(), StatusIs(StatusCode::kInvalidArgument,
                                     HasSubstr("shadow_candidate must be eldr or eldr-plus")));
  o.shadow_candidate = "eldr-plus";
  EXPECT_TRUE(o.Validate().ok());
}

TEST(ShadowFootprintTest, ExpectedDistinctOfDisjointAndIdenticalRequests) {
  const ModelGeometry g = *FindModel("gpt-oss-20b");
  ExpertLoad load(g.moe_layers, g.experts);
  EXPECT_EQ(load.ExpectedDistinct(), 0);
  const auto a = ShadowFootprint::FromCounts(Peaked(g, 0), g.top_k);
  const auto b = ShadowFootprint::FromCounts(Peaked(g, 8), g.top_k);
  load.Add(a);
  const double one = load.ExpectedDistinct();
  EXPECT_GT(one, 3.5);
  EXPECT_LE(one, 4.0);
  load.Add(a);
  EXPECT_NEAR(load.ExpectedDistinct(), one, 0.1);  // the same experts again
  load.Add(b);
  EXPECT_NEAR(load.ExpectedDistinct(), 2 * one, 0.2);  // disjoint experts add up
  load.Remove(b);
  load.Remove(a);
  EXPECT_NEAR(load.ExpectedDistinct(), one, 1e-9);
  load.Remove(a);
  EXPECT_EQ(load.ExpectedDistinct(), 0);
  EXPECT_EQ(load.requests(), 0);
  // Spread counts: a prompt touching all 32 experts evenly selects each with q = top_k / 32.
  ExpertCounts even(g.moe_layers, g.experts);
  for (int l = 0; l < g.moe_layers; ++l)
    for (int e = 0; e < g.experts; ++e) even.at(l, e) = 1;
  load.Add(ShadowFootprint::FromCounts(even, g.top_k));
  EXPECT_NEAR(load.ExpectedDistinct(), g.top_k, 1e-9);
}

TEST(OnlineRefitterTest, RefitsSwapTheSpaceAndEveryFailureKeepsIt) {
  ServeOptions o = Options(3, "eldr");
  o.space = WriteSpace(3);
  const ModelGeometry g = *FindModel(o.model);
  auto c = *Cluster::Create(o, g, NoResolve());
  RefitConfig rc;
  rc.window_s = 10;
  rc.min_requests = 30;
  OnlineRefitter refit(c.get(), rc);
  const auto before = c->Snap();
  // Too few requests: skipped, space kept.
  for (int i = 0; i < 10; ++i) refit.Observe(1'000'000, Peaked(g, i % 3));
  Status s = refit.RunOnce(2'000'000);
  EXPECT_THAT(s, StatusIs(StatusCode::kFailedPrecondition, HasSubstr("10 requests")));
  EXPECT_EQ(c->Snap()->space, before->space);
  EXPECT_EQ(refit.counts().skipped, 1u);
  // Enough, drifted onto experts 1..3 + 4: swapped, a new space with the same k and mask.
  for (int i = 0; i < 60; ++i) refit.Observe(3'000'000, Peaked(g, 1 + i % 3));
  s = refit.RunOnce(4'000'000);
  ASSERT_THAT(s, IsOk());
  auto after = c->Snap();
  EXPECT_NE(after->space, before->space);
  EXPECT_GT(after->version, before->version);
  EXPECT_EQ(after->space->k(), 3);
  EXPECT_EQ(after->space->spec().layer_mask, before->space->spec().layer_mask);
  EXPECT_EQ(after->policy.options.name, "eldr");
  EXPECT_EQ(refit.counts().swapped, 1u);
  EXPECT_EQ(refit.counts().window, 70);
  // Paused: nothing happens.
  refit.Pause(true);
  EXPECT_EQ(refit.RunOnce(5'000'000).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(c->Snap()->space, after->space);
  refit.Pause(false);
  // The window forgets what is older than window_s: 70 requests at t <= 3 s are gone by 14 s.
  EXPECT_EQ(refit.RunOnce(14'000'000).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(refit.counts().window, 0);
  EXPECT_EQ(refit.counts().skipped, 2u);
  // A swap against a space that changed meanwhile (a reload) is refused.
  EXPECT_EQ(c->SwapSpace(before->space, after->space).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(c->Snap()->space, after->space);
}

TEST(OnlineRefitterTest, ConfigIsValidatedAndNeedsASpacePolicy) {
  RefitConfig rc;
  rc.interval_s = 0;
  EXPECT_THAT(rc.Validate(), StatusIs(StatusCode::kInvalidArgument, HasSubstr("refit.interval_s")));
  rc = {};
  rc.max_window = 10;
  EXPECT_THAT(rc.Validate(), StatusIs(StatusCode::kInvalidArgument, HasSubstr("refit.max_window")));
  ServeOptions o = Options(2, "jsq");
  o.refit = RefitConfig{};
  EXPECT_THAT(o.Validate(), StatusIs(StatusCode::kInvalidArgument,
                                     HasSubstr("refit needs a policy with a signature space")));
  auto parsed = ParseServeConfig("refit: {interval_s: 2, window_s: 4, min_requests: 8}\n");
  ASSERT_THAT(parsed, IsOk());
  ASSERT_TRUE(parsed->refit.has_value());
  EXPECT_EQ(parsed->refit->interval_s, 2);
  EXPECT_EQ(parsed->refit->min_requests, 8);
  auto bad = ParseServeConfig("refit: {every: 2}\n");
  ASSERT_THAT(bad, StatusIs(StatusCode::kInvalidArgument, HasSubstr("refit.every")));
}

TEST(ClusterTest, DomainRoutesByTheLabelAndFallsBackWithoutOne) {
  ServeOptions o = Options(4, "domain");
  EXPECT_THAT(o.Validate(),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("needs label_shares")));
  o.label_shares = {{"code", 0.5}, {"math", 0.5}};
  ASSERT_TRUE(o.Validate().ok());
  auto c = *Cluster::Create(o, *FindModel(o.model), NoResolve());
  auto s = c->Snap();
  EXPECT_TRUE(s->policy.degraded.empty()) << s->policy.degraded;
  PolicySlot slot(1);
  std::set<int> code, math;
  for (int i = 0; i < 20; ++i) {
    const Decision a = c->RouteDecode(*s, slot, nullptr, {}, 0, "code");
    const Decision b = c->RouteDecode(*s, slot, nullptr, {}, 0, "math");
    EXPECT_FALSE(a.fallback);
    code.insert(a.decoder);
    math.insert(b.decoder);
  }
  for (int d : code) EXPECT_EQ(math.count(d), 0u) << "label pools are disjoint";
  EXPECT_TRUE(c->RouteDecode(*s, slot, nullptr, {}, 0, "").fallback);
  EXPECT_TRUE(c->RouteDecode(*s, slot, nullptr, {}, 0, "legal").fallback);
  o.label_shares = {{"code", -1}};
  EXPECT_THAT(o.Validate(), StatusIs(StatusCode::kInvalidArgument, HasSubstr("share > 0")));
  auto parsed = ParseServeConfig("policy: domain\nlabel_shares: {code: 0.25, math: 0.75}\n");
  ASSERT_THAT(parsed, IsOk());
  ASSERT_EQ(parsed->label_shares.size(), 2u);
  EXPECT_EQ(parsed->label_shares[1].label, "math");
  EXPECT_EQ(parsed->label_shares[1].share, 0.75);
}

}  // namespace
}  // namespace eldr::server
