// Google Benchmark suite for eldr's hot paths. Figures and the commands that produced them are
// recorded in docs/perf.md. Run: ./build/release/bench/eldr_bench [--benchmark_filter=...]
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

#include "eldr/block_hash.h"
#include "eldr/fit.h"
#include "eldr/payload.h"
#include "eldr/policy.h"
#include "eldr/server/capture.h"
#include "eldr/server/decode_experts.h"
#include "eldr/server/shadow.h"
#include "eldr/signature_cache.h"
#include "test_util.h"

namespace eldr {
namespace {

const ModelGeometry& Qwen() {
  static const ModelGeometry g = *FindModel("qwen3-30b-a3b");
  return g;
}

// Picks with a realistic skew: most from a per-request hot set, some uniform.
std::vector<int32_t> Picks(const ModelGeometry& g, int64_t tokens, uint64_t seed) {
  Rng rng(seed);
  std::vector<int32_t> out;
  out.reserve(static_cast<size_t>(tokens) * g.moe_layers * g.top_k);
  for (int64_t t = 0; t < tokens; ++t)
    for (int l = 0; l < g.moe_layers; ++l) {
      int32_t row[16];
      for (int j = 0; j < g.top_k; ++j) {
        for (;;) {
          const int32_t e = static_cast<int32_t>(
              rng.Uniform(4) ? (seed * 7 + rng.Uniform(32)) % g.experts : rng.Uniform(g.experts));
          bool dup = false;
          for (int i = 0; i < j; ++i) dup |= row[i] == e;
          if (!dup) {
            row[j] = e;
            break;
          }
        }
      }
      out.insert(out.end(), row, row + g.top_k);
    }
  return out;
}

std::shared_ptr<const SignatureSpace> RandomSpace(const ModelGeometry& g, int k, int layers) {
  Rng rng(3);
  SignatureSpaceSpec s;
  s.model = g.name;
  s.layers = g.moe_layers;
  s.experts = g.experts;
  for (int l = 0; l < layers; ++l) s.layer_mask.push_back(l * g.moe_layers / layers);
  const size_t d = static_cast<size_t>(layers) * g.experts;
  for (size_t i = 0; i < d; ++i) s.idf.push_back(static_cast<float>(0.05 + rng.UniformDouble()));
  for (int j = 0; j < k; ++j) {
    std::vector<float> c(d);
    for (auto& v : c) v = static_cast<float>(rng.UniformDouble());
    s.centroids.push_back(std::move(c));
  }
  return *SignatureSpace::Build(s);
}

// The ELDR routing decision for K = 16, L*E = 6,144 (Qwen3-30B-A3B): score against every
// centroid, form the band, pick the least-loaded decoder. Args: prompt tokens, masked layers
// (48 = every layer, the worst case; greedy selection keeps fewer).
void EldrDecision(benchmark::State& state, const char* name) {
  const auto& g = Qwen();
  auto space = RandomSpace(g, 16, static_cast<int>(state.range(1)));
  auto table = *MakePickTable(Picks(g, state.range(0), 1), g);
  const ExpertCounts counts = table.Counts();
  PolicyOptions o;
  o.name = name;
  o.decoders = 16;
  o.space = space;
  auto policy = std::move(*MakePolicy(o));
  std::vector<int64_t> load(16);
  Rng rng(1);
  for (int i = 0; i < 16; ++i) load[i] = static_cast<int64_t>(rng.Uniform(40));
  RouteRequest req{.counts = &counts};
  for (auto _ : state) {
    auto d = policy->Route(req, {load}, rng);
    benchmark::DoNotOptimize(d);
  }
  state.SetLabel(fmt::format("prompt {} tokens, {} of 48 layers", state.range(0), state.range(1)));
}
void BM_EldrDecision(benchmark::State& state) { EldrDecision(state, "eldr"); }
BENCHMARK(BM_EldrDecision)->Args({64, 48})->Args({512, 48})->Args({4096, 48})->Args({512, 24});
// eldr-plus: the same scoring plus the load bound (docs/results.md).
void BM_EldrPlusDecision(benchmark::State& state) { EldrDecision(state, "eldr-plus"); }
BENCHMARK(BM_EldrPlusDecision)->Args({64, 48})->Args({512, 48})->Args({4096, 48})->Args({512, 24});

// Same decision, timed one by one to report its distribution (P50/P99) rather than a mean.
void EldrDecisionPercentiles(benchmark::State& state, const char* name) {
  const auto& g = Qwen();
  auto space = RandomSpace(g, 16, static_cast<int>(state.range(0)));
  PolicyOptions o;
  o.name = name;
  o.decoders = 16;
  o.space = space;
  auto policy = std::move(*MakePolicy(o));
  std::vector<ExpertCounts> prompts;
  for (int i = 0; i < 64; ++i) prompts.push_back(MakePickTable(Picks(g, 256, 50 + i), g)->Counts());
  std::vector<int64_t> load(16);
  Rng rng(1);
  std::vector<double> ns;
  ns.reserve(1 << 20);
  size_t i = 0;
  for (auto _ : state) {
    for (auto& l : load) l = static_cast<int64_t>(rng.Uniform(40));
    RouteRequest req{.counts = &prompts[i++ % prompts.size()]};
    const auto t0 = std::chrono::steady_clock::now();
    auto d = policy->Route(req, {load}, rng);
    const auto t1 = std::chrono::steady_clock::now();
    benchmark::DoNotOptimize(d);
    ns.push_back(std::chrono::duration<double, std::nano>(t1 - t0).count());
  }
  std::sort(ns.begin(), ns.end());
  state.counters["p50_us"] = ns[ns.size() / 2] / 1000;
  state.counters["p99_us"] = ns[ns.size() * 99 / 100] / 1000;
  state.SetLabel(fmt::format("{} of 48 layers, 64 distinct prompts", state.range(0)));
}
void BM_EldrDecisionPercentiles(benchmark::State& state) { EldrDecisionPercentiles(state, "eldr"); }
BENCHMARK(BM_EldrDecisionPercentiles)->Arg(48)->Arg(24)->Iterations(100000);
void BM_EldrPlusDecisionPercentiles(benchmark::State& state) {
  EldrDecisionPercentiles(state, "eldr-plus");
}
BENCHMARK(BM_EldrPlusDecisionPercentiles)->Arg(48)->Arg(24)->Iterations(100000);

void BM_JsqDecision(benchmark::State& state) {
  PolicyOptions o;
  o.name = "jsq";
  o.decoders = 16;
  auto policy = std::move(*MakePolicy(o));
  std::vector<int64_t> load(16, 3);
  Rng rng(1);
  for (auto _ : state) {
    auto d = policy->Route({}, {load}, rng);
    benchmark::DoNotOptimize(d);
  }
}
BENCHMARK(BM_JsqDecision);

// What shadow mode and expert_estimate add to a routed request (docs/serve.md): the footprint of
// its prompt counts (one log1p per non-zero count) and its add and remove on a decoder's
// ExpertLoad. Qwen3-30B-A3B, the prompt lengths of BM_EldrDecision.
void BM_ShadowFootprint(benchmark::State& state) {
  const auto& g = Qwen();
  auto table = *MakePickTable(Picks(g, state.range(0), 1), g);
  const ExpertCounts counts = table.Counts();
  server::ExpertLoad load(g.moe_layers, g.experts);
  load.Add(server::ShadowFootprint::FromCounts(counts, g.top_k));  // never empty: no reset path
  for (auto _ : state) {
    auto f = server::ShadowFootprint::FromCounts(counts, g.top_k);
    load.Add(f);
    load.Remove(f);
    benchmark::DoNotOptimize(f);
  }
  state.SetLabel(fmt::format("prompt {} tokens", state.range(0)));
}
BENCHMARK(BM_ShadowFootprint)->Arg(64)->Arg(512)->Arg(4096);

// A captured record's JSON line (the capture writer's thread, off the request path).
void BM_CaptureRecordJson(benchmark::State& state) {
  const auto& g = Qwen();
  server::CaptureRecord r;
  r.id = "eldr-0123456789abcdef";
  r.prefill = MakePickTable(Picks(g, 512, 1), g)->Counts();
  r.decoder = "http://10.0.0.1:8200";
  for (auto _ : state) {
    std::string line = server::CaptureRecordJson(r);
    benchmark::DoNotOptimize(line);
  }
}
BENCHMARK(BM_CaptureRecordJson);

// Payload -> validated counts, in bytes of base64 payload per second. 2,048-token prompt.
void BM_DecodeVllm(benchmark::State& state) {
  const auto& g = Qwen();
  const int size = static_cast<int>(state.range(0));
  auto picks = Picks(g, 2048, 2);
  std::vector<int64_t> shape = {2048, g.moe_layers, g.top_k};
  auto data = size == 1 ? testing::AsBytes<uint8_t>(picks) : testing::AsBytes<uint16_t>(picks);
  const std::string payload = Base64Encode(MakeNpy('u', size, shape, data));
  for (auto _ : state) {
    auto t = DecodeVllmRoutedExperts(payload, g);
    benchmark::DoNotOptimize(t);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * payload.size());
  state.SetLabel(
      fmt::format("vLLM .npy uint{} ({:.1f} MB base64)", size * 8, payload.size() / 1e6));
}
BENCHMARK(BM_DecodeVllm)->Arg(1)->Arg(2);

void BM_DecodeSglang(benchmark::State& state) {
  const auto& g = Qwen();
  const std::string payload = Base64Encode(testing::AsBytes<int32_t>(Picks(g, 2048, 3)));
  for (auto _ : state) {
    auto t = DecodeSglangRoutedExperts(payload, g);
    benchmark::DoNotOptimize(t);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * payload.size());
  state.SetLabel(fmt::format("SGLang int32 ({:.1f} MB base64)", payload.size() / 1e6));
}
BENCHMARK(BM_DecodeSglang);

// A captured request's decode leg through the tap (server/decode_experts.h): an SGLang answer for
// a 2,048-token prompt and 256 generated tokens (the prompt's rows are skipped, not validated),
// read, stripped and counted. Arg 0: the whole body; arg 1: the same as a stream in 16 KiB reads.
// BM_DecodeSglang above decodes a payload of the same prompt length in the same run.
void BM_DecodeTapSglang(benchmark::State& state) {
  const auto& g = Qwen();
  const int prompt = 2048, generated = 256;
  auto rows = Picks(g, prompt + generated - 1, 5);
  const std::string b64 = Base64Encode(testing::AsBytes<int32_t>(rows));
  const std::string usage =
      fmt::format(R"("usage":{{"prompt_tokens":{},"completion_tokens":{},"total_tokens":{}}})",
                  prompt, generated, prompt + generated);
  std::string text;
  if (state.range(0) == 0) {
    text = R"({"id":"cmpl-1","object":"text_completion","created":1,"model":"m","choices":[)"
           R"({"index":0,"text":"x","logprobs":null,"finish_reason":"length"}],)" +
           usage + R"(,"sglext":{"routed_experts":")" + b64 + R"("}})";
  } else {
    for (int t = 0; t < generated; ++t) {
      text += R"(data: {"id":"cmpl-1","object":"text_completion","created":1,"model":"m",)"
              R"("choices":[{"index":0,"text":" w","logprobs":null,"finish_reason":null}]})"
              "\n\n";
    }
    text += R"(data: {"id":"cmpl-1","choices":[],)" + usage + "}\n\n";
    text += R"(data: {"id":"cmpl-1","choices":[],"sglext":{"routed_experts":")" + b64 +
            "\"}}\n\ndata: [DONE]\n\n";
  }
  std::string sent;
  for (auto _ : state) {
    server::DecodeExpertsTap tap({.format = server::DecodeExpertsFormat::kSglang, .strip = true});
    if (state.range(0) == 0) {
      sent = tap.Body(text);
    } else {
      sent.clear();
      for (size_t at = 0; at < text.size(); at += 16384) {
        tap.Feed(std::string_view(text).substr(at, 16384), &sent);
      }
      tap.Finish(&sent);
    }
    auto c = tap.Counts(g, -1, generated, true);
    if (!c) state.SkipWithError(c.error().message().c_str());
    benchmark::DoNotOptimize(c);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * text.size());
  state.SetLabel(
      fmt::format("{} ({:.1f} MB)", state.range(0) ? "stream" : "body", text.size() / 1e6));
}
BENCHMARK(BM_DecodeTapSglang)->Arg(0)->Arg(1);

void BM_Base64Decode(benchmark::State& state) {
  std::vector<uint8_t> raw(1 << 22);
  Rng rng(4);
  for (auto& b : raw) b = static_cast<uint8_t>(rng.Next());
  const std::string b64 = Base64Encode(raw);
  std::vector<uint8_t> out;
  for (auto _ : state) {
    Status s = Base64Decode(b64, &out);
    benchmark::DoNotOptimize(s);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * b64.size());
}
BENCHMARK(BM_Base64Decode);

// Signature cache: lookup of a fully cached 2,048-token prompt (8 chunks of 256 tokens), and
// hashing its token ids.
void BM_CacheLookup(benchmark::State& state) {
  const auto& g = Qwen();
  SignatureCache cache(g.moe_layers, g.experts, {});
  std::vector<int32_t> tokens(2048);
  Rng rng(5);
  for (auto& t : tokens) t = static_cast<int32_t>(rng.Uniform(150000));
  auto hashes = ChainedBlockHashes(tokens, 16);
  auto table = *MakePickTable(Picks(g, 2048, 5), g);
  (void)cache.Insert(hashes, table, 0);
  for (auto _ : state) {
    auto p = cache.Lookup(hashes);
    benchmark::DoNotOptimize(p);
  }
}
BENCHMARK(BM_CacheLookup);

void BM_CacheInsert(benchmark::State& state) {
  const auto& g = Qwen();
  auto table = *MakePickTable(Picks(g, 2048, 6), g);
  std::vector<int32_t> tokens(2048);
  Rng rng(6);
  SignatureCache cache(g.moe_layers, g.experts, {});
  for (auto _ : state) {
    for (auto& t : tokens) t = static_cast<int32_t>(rng.Uniform(150000));  // a fresh prompt
    auto hashes = ChainedBlockHashes(tokens, 16);
    Status s = cache.Insert(hashes, table, 0);
    benchmark::DoNotOptimize(s);
  }
  const auto st = cache.Stats();
  state.counters["bytes_per_token"] = static_cast<double>(st.bytes) / st.cached_tokens;
}
BENCHMARK(BM_CacheInsert);

void BM_BlockHash(benchmark::State& state) {
  std::vector<int32_t> tokens(4096);
  Rng rng(7);
  for (auto& t : tokens) t = static_cast<int32_t>(rng.Uniform(150000));
  for (auto _ : state) benchmark::DoNotOptimize(ChainedBlockHashes(tokens, 16));
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()) * tokens.size());
}
BENCHMARK(BM_BlockHash);

// Unit signatures around `modes` planted directions (non-negative, like count*idf vectors).
std::vector<float> Signatures(int n, int d, int modes, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> x(static_cast<size_t>(n) * d);
  for (int i = 0; i < n; ++i) {
    const int m = static_cast<int>(rng.Uniform(modes));
    double n2 = 0;
    float* xi = &x[static_cast<size_t>(i) * d];
    for (int t = 0; t < d; ++t) {
      float v = static_cast<float>(rng.UniformDouble() * 0.5);
      if (t % modes == m) v += 1.0f;
      xi[t] = v;
      n2 += double{v} * v;
    }
    const float inv = static_cast<float>(1 / std::sqrt(n2));
    for (int t = 0; t < d; ++t) xi[t] *= inv;
  }
  return x;
}

// Balanced spherical k-means, K = 16, d = 6,144: N = 1,000 (the paper's calibration size) and
// larger N (100,000 is run with --benchmark_filter=BM_BalancedKMeans/100000).
void BM_BalancedKMeans(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0)), d = 6144, k = 16;
  auto x = Signatures(n, d, 24, 8);
  int iters = 0;
  for (auto _ : state) {
    auto c = SphericalKMeans(x, n, d, k, ClusterAlgo::kBalanced, 1, 50);
    iters = c->iterations;
    benchmark::DoNotOptimize(c);
  }
  state.counters["iterations"] = iters;
}
BENCHMARK(BM_BalancedKMeans)->Arg(1000)->Arg(10000)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_BalancedKMeans)->Arg(100000)->Iterations(1)->Unit(benchmark::kMillisecond);

void BM_CapacitatedAssign(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0)), k = 16;
  Rng rng(9);
  std::vector<double> cost(static_cast<size_t>(n) * k);
  for (auto& c : cost) c = -rng.UniformDouble();
  for (auto _ : state) benchmark::DoNotOptimize(CapacitatedAssign(cost, n, k, (n + k - 1) / k));
}
BENCHMARK(BM_CapacitatedAssign)->Arg(1000)->Arg(100000)->Unit(benchmark::kMillisecond);

// The whole fit (IDF, greedy mask over 30,000 pairs, balanced k-means) on 1,000 synthetic
// Qwen3-30B-A3B calibration requests with decode counts.
void BM_FitWithMask(benchmark::State& state) {
  const auto& g = Qwen();
  std::vector<CalibrationRequest> reqs;
  for (int i = 0; i < 1000; ++i) {
    CalibrationRequest r;
    r.prefill = MakePickTable(Picks(g, 24, 100 + i % 40), g)->Counts();
    r.decode = MakePickTable(Picks(g, 24, 100 + i % 40 + 1), g)->Counts();
    reqs.push_back(std::move(r));
  }
  FitOptions o;
  o.k = 16;
  double mask_s = 0, cluster_s = 0;
  for (auto _ : state) {
    auto f = Fit(reqs, g, o);
    mask_s = f->report.seconds_mask;
    cluster_s = f->report.seconds_cluster;
    benchmark::DoNotOptimize(f);
  }
  state.counters["mask_s"] = mask_s;
  state.counters["cluster_s"] = cluster_s;
}
BENCHMARK(BM_FitWithMask)->Iterations(1)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace eldr

BENCHMARK_MAIN();
