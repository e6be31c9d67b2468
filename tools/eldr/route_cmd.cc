#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <deque>
#include <numeric>

#include "commands.h"
#include "eldr/calibration.h"
#include "eldr/policy.h"

namespace eldr::cli {

void AddRouteCommand(CLI::App& app, RouteArgs& a) {
  auto* c = app.add_subcommand(
      "route",
      "Routing demo: replay requests through every policy with a fixed number in flight and "
      "report the expected distinct experts per decode step");
  c->add_option("-s,--space", a.space, "Signature-space JSON (from `eldr fit`)")->required();
  c->add_option("-i,--input", a.input, "Requests (calibration JSONL format, with decode counts)")
      ->required();
  c->add_option("--calibration", a.calibration,
                "Calibration JSONL whose label mix sizes the domain pools (default: --input)");
  c->add_option("--policies", a.policies, "Comma-separated policies")->capture_default_str();
  c->add_option("--tau", a.tau, "ELDR locality band")->capture_default_str();
  c->add_option("--per-decoder", a.per_decoder,
                "Requests in flight per decoder (K x this must not exceed the requests)")
      ->capture_default_str();
  c->add_option("--arrivals", a.arrivals, "Requests to route per policy")->capture_default_str();
  c->add_option("--seed", a.seed, "Seed for arrival order and randomised policies")
      ->capture_default_str();
}

namespace {

// Per request: per-(layer, expert) probability that one decode token picks the expert.
struct Replay {
  const CalibrationRequest* req;
  std::vector<float> pick_prob;
};

struct Outcome {
  std::string policy;
  double distinct = 0;  // expected distinct experts per layer per step, per decoder
  double same_label = 0;
  double imbalance = 0;  // mean over arrivals of max/mean in-flight
  int fallbacks = 0;
};

}  // namespace

Status RunRoute(const RouteArgs& a) {
  if (a.per_decoder < 1)
    return InvalidArgument("--per-decoder must be >= 1, got {}", a.per_decoder);
  if (a.arrivals < 1) return InvalidArgument("--arrivals must be >= 1, got {}", a.arrivals);
  auto space_text = ReadFile(a.space);
  if (!space_text) return space_text.error();
  auto input_text = ReadFile(a.input);
  if (!input_text) return input_text.error();
  auto set = ParseCalibrationJsonl(*input_text);
  if (!set) return set.error().WithContext(a.input);
  const ModelGeometry& g = set->geometry;
  auto space = SignatureSpace::FromJson(*space_text, &g);
  if (!space) return space.error().WithContext(a.space);
  std::vector<LabelShare> mix = LabelMix(set->requests);
  if (!a.calibration.empty()) {
    auto ct = ReadFile(a.calibration);
    if (!ct) return ct.error();
    auto cs = ParseCalibrationJsonl(*ct, &g);
    if (!cs) return cs.error().WithContext(a.calibration);
    mix = LabelMix(cs->requests);
  }
  const int K = (*space)->k(), L = g.moe_layers, E = g.experts;
  std::vector<Replay> reqs;
  for (const auto& r : set->requests) {
    if (r.decode.empty()) continue;
    uint64_t per_layer = 0;
    for (uint32_t c : r.decode.layer(0)) per_layer += c;
    const double tokens = static_cast<double>(per_layer) / g.top_k;
    if (tokens <= 0) continue;
    Replay rp{&r, std::vector<float>(static_cast<size_t>(L) * E)};
    for (size_t i = 0; i < rp.pick_prob.size(); ++i)
      rp.pick_prob[i] = static_cast<float>(std::min(1.0, r.decode.data()[i] / tokens));
    reqs.push_back(std::move(rp));
  }
  if (reqs.size() < 2) return InvalidArgument("need at least 2 requests with decode counts");
  const size_t window = static_cast<size_t>(K) * a.per_decoder;
  // A request is never in flight twice at once, so the window must not exceed the requests.
  if (reqs.size() < window) {
    const size_t most = reqs.size() / K;
    return InvalidArgument(
        "{} has {} requests with decode counts, fewer than the {} kept in flight (K = {} "
        "decoders of the signature space x --per-decoder {}), and a request cannot be in flight "
        "twice at once; {}",
        a.input, reqs.size(), window, K, a.per_decoder,
        most >= 1 ? fmt::format("use --per-decoder {} or less, or more requests", most)
                  : fmt::format("give at least {} requests", K));
  }
  // One arrival order for every policy: seeded shuffles of the request set, one after another
  // (each request once per pass). At every arrival the oldest of the `window` in flight
  // finishes, so the requests in flight are the last window - 1 arrivals; a request of the new
  // pass that is still in flight from the previous one is deferred to the first arrival after it
  // finishes (one that is not in flight always exists when reqs.size() >= window).
  std::vector<int> order;
  {
    Rng order_rng(a.seed);
    std::vector<int> deck;  // the rest of the current pass, in order
    std::vector<int64_t> last(reqs.size(), -static_cast<int64_t>(window));  // latest arrival
    for (int64_t n = 0; n < a.arrivals; ++n) {
      if (deck.empty()) {
        deck.resize(reqs.size());
        std::iota(deck.begin(), deck.end(), 0);
        Shuffle(std::span(deck), order_rng);
      }
      const auto next = std::find_if(deck.begin(), deck.end(), [&](int r) {
        return n - last[r] >= static_cast<int64_t>(window);
      });
      if (next == deck.end()) return Internal("no request free to arrive (a bug)");
      last[*next] = n;
      order.push_back(*next);
      deck.erase(next);
    }
  }

  std::vector<Outcome> outcomes;
  for (const std::string& name : SplitList(a.policies)) {
    PolicyOptions po;
    po.name = name;
    po.decoders = K;
    po.tau = a.tau;
    po.space = *space;
    po.label_shares = mix;
    auto policy = MakePolicy(po);
    if (!policy) return policy.error().WithContext("policy " + name);
    Rng rng(a.seed);
    std::deque<std::pair<int, int>> fifo;  // (request, decoder) in arrival order
    std::vector<char> in_flight(reqs.size(), 0);
    std::vector<std::vector<int>> batch(K);
    std::vector<int64_t> load(K, 0);
    Outcome out{name};
    double distinct_sum = 0, same_sum = 0, imb_sum = 0;
    int64_t measured = 0, pairs = 0;
    for (size_t n = 0; n < order.size(); ++n) {
      if (fifo.size() == window) {  // the oldest request finishes first
        auto [r, d] = fifo.front();
        fifo.pop_front();
        in_flight[r] = 0;
        batch[d].erase(std::find(batch[d].begin(), batch[d].end(), r));
        --load[d];
      }
      const int r = order[n];
      if (in_flight[r]) return Internal("request {} would be in flight twice (a bug)", r);
      in_flight[r] = 1;
      RouteRequest rq{.counts = &reqs[r].req->prefill, .label = reqs[r].req->label};
      auto dec = (*policy)->Route(rq, {load}, rng);
      if (!dec) return dec.error();
      out.fallbacks += dec->fallback;
      const int d = dec->decoder;
      for (int other : batch[d]) {
        same_sum += reqs[other].req->label == reqs[r].req->label;
        ++pairs;
      }
      batch[d].push_back(r);
      ++load[d];
      fifo.emplace_back(r, d);
      if (n + 1 < window) continue;  // warm-up until the cluster is full
      // Expected distinct experts in one decode step of each decoder's batch, treating the
      // requests' picks as independent draws from their decode-time pick frequencies.
      double sum = 0;
      int64_t max_load = 0;
      for (int k = 0; k < K; ++k) {
        max_load = std::max(max_load, load[k]);
        double dk = 0;
        for (int i = 0; i < L * E; ++i) {
          double none = 1;
          for (int m : batch[k]) none *= 1.0 - reqs[m].pick_prob[i];
          dk += 1 - none;
        }
        sum += static_cast<double>(batch[k].size()) * dk / L;
      }
      // Request-weighted: what the average in-flight request sees at its own decoder. (An
      // unweighted mean over decoders would reward imbalance, as distinct experts are concave in
      // batch size.)
      distinct_sum += sum / static_cast<double>(window);
      imb_sum += static_cast<double>(max_load) * K / static_cast<double>(window);
      ++measured;
    }
    out.distinct = distinct_sum / std::max<int64_t>(1, measured);
    out.same_label = pairs ? same_sum / pairs : 0;
    out.imbalance = imb_sum / std::max<int64_t>(1, measured);
    outcomes.push_back(out);
  }
  double best_lb = INFINITY;
  for (const auto& o : outcomes)
    if (IsLoadBalancingPolicy(o.policy)) best_lb = std::min(best_lb, o.distinct);
  fmt::print("{} on {} requests from {}; K = {} decoders x {} in flight, {} arrivals, tau = {}\n",
             g.display_name, reqs.size(), a.input, K, a.per_decoder, a.arrivals, a.tau);
  fmt::print("{:<8} {:>22} {:>14} {:>16} {:>14} {:>10}\n", "policy", "distinct experts/step",
             "vs best LB", "same-label pairs", "max/mean load", "fallbacks");
  for (const auto& o : outcomes) {
    const std::string delta =
        std::isfinite(best_lb) ? fmt::format("{:+.1f}%", 100.0 * (o.distinct / best_lb - 1)) : "-";
    fmt::print("{:<8} {:>22.2f} {:>14} {:>15.1f}% {:>14.2f} {:>10}\n", o.policy, o.distinct, delta,
               100 * o.same_label, o.imbalance, o.fallbacks);
  }
  fmt::print(
      "distinct experts/step: expected distinct routed experts per MoE layer in one decode "
      "step of the batch each in-flight request decodes in (of {}), from the requests' decode pick "
      "frequencies.\n",
      E);
  return Status::Ok();
}

void PrintModels() {
  fmt::print("{:<18} {:>6} {:>6} {:>7} {:>6} {:>7} {:>14} {:>6}\n", "model", "layers", "MoE",
             "experts", "top-k", "shared", "expert bytes", "block");
  for (const auto& g : ModelPresets()) {
    fmt::print("{:<18} {:>6} {:>6} {:>7} {:>6} {:>7} {:>14} {:>6}\n", g.name, g.total_layers,
               g.moe_layers, g.experts, g.top_k, g.shared_experts, g.ExpertWeightBytes(),
               g.kv_block_size);
  }
}

}  // namespace eldr::cli
