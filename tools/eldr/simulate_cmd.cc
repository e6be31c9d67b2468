#include <CLI/CLI.hpp>
#include <chrono>
#include <cmath>

#include "commands.h"
#include "eldr/fit.h"
#include "eldr/sim/simulator.h"
#include "eldr/sim/trace.h"

namespace eldr::cli {

void AddSimulateCommand(CLI::App& app, SimulateArgs& a) {
  auto* c = app.add_subcommand(
      "simulate",
      "Simulate an xPyD cluster serving a workload under every routing policy, side "
      "by side on identical arrivals (defaults: Qwen3-30B-A3B, task, 8P16D, 60 qps, "
      "120 s)");
  c->add_option("-m,--model", a.model, "Model preset")->capture_default_str();
  c->add_option("-w,--workload", a.workload, "task or language")
      ->check(CLI::IsMember({"task", "language"}))
      ->capture_default_str();
  c->add_option("--prefill", a.prefill, "Prefill workers")->capture_default_str();
  c->add_option("--decode", a.decode, "Decode workers (= centroids)")->capture_default_str();
  c->add_option("-r,--rate", a.rate, "Arrival rate, requests/s (Poisson)")->capture_default_str();
  c->add_option("-d,--duration", a.duration, "Seconds of arrivals")->capture_default_str();
  c->add_option("--policies", a.policies, "Comma-separated policies")->capture_default_str();
  c->add_option("--tau", a.tau, "ELDR locality band")->capture_default_str();
  c->add_option("--band-min", a.band_min, "ELDR: widen a band to at least this many decoders")
      ->capture_default_str();
  c->add_option("--warmup", a.warmup, "Seconds of arrivals simulated but not reported")
      ->capture_default_str();
  c->add_option("--calibration", a.calibration, "Calibration requests for the fit")
      ->capture_default_str();
  c->add_option("--seed", a.seed, "Seed of workload, fit and policies")->capture_default_str();
  c->add_flag("--stats", a.stats, "Also print the workload's routing statistics");
  c->add_option("--matrix", a.matrix,
                "Run an experiment set instead: 'paper' = 3 models x 2 workloads x 20-100 qps x "
                "six policies, plus the ablations (-d sets the seconds per rate)")
      ->check(CLI::IsMember({"paper"}));
  c->add_option("--trace", a.trace,
                "Replay a recorded routing trace (`eldr trace import`) instead of a synthetic "
                "workload; the model is the trace's");
  c->add_option("--json", a.json, "Write every result as JSON to this file");
  c->add_option("--csv", a.csv, "Write every result as CSV to this file");
  c->add_option("--requests-csv", a.requests_csv,
                "Write every request's decoder, TTFT and TPOT per policy as CSV (for CDFs)");
  c->add_option("--threads", a.threads, "Simulations run in parallel (--matrix)")
      ->capture_default_str();
  // Generative-model knobs (docs/calibration.md); negative = the calibrated default.
  c->add_option("--popularity-sigma", a.popularity, "Workload model: expert popularity spread");
  c->add_option("--domain-boost", a.domain_boost, "Workload model: domain affinity");
  c->add_option("--subdomain-boost", a.subdomain_boost,
                "Workload model: sub-domain (source dataset / topic) affinity");
  c->add_option("--request-boost", a.request_boost, "Workload model: request affinity");
  c->add_option("--drift", a.drift, "Workload model: per-request decode drift");
  c->add_option("--domain-drift", a.domain_drift, "Workload model: per-domain decode drift");
}

Status WriteRecords(const std::vector<SimRecord>& records, const std::string& json_path,
                    const std::string& csv_path) {
  if (!json_path.empty()) {
    std::string out = "[\n";
    for (size_t i = 0; i < records.size(); ++i) {
      const auto& r = records[i];
      out += fmt::format(
          "  {{\"model\":\"{}\",\"workload\":\"{}\",\"experiment\":\"{}\",\"variant\":\"{}\","
          "\"rate_qps\":{},\"prefill\":{},\"decoders\":{},\"policy\":\"{}\",\"tau\":{},"
          "\"tpot_p50_ms\":{:.4f},\"tpot_p99_ms\":{:.4f},\"ttft_p50_ms\":{:.3f},"
          "\"distinct_experts_per_step\":{:.3f},\"mean_batch\":{:.3f},\"requests\":{}}}{}\n",
          r.model, r.workload, r.experiment, r.variant, r.rate, r.prefill, r.decoders, r.policy,
          r.tau, r.summary.tpot_p50, r.summary.tpot_p99, r.summary.ttft_p50,
          r.summary.mean_distinct, r.summary.mean_batch, r.summary.requests,
          i + 1 < records.size() ? "," : "");
    }
    out += "]\n";
    if (Status s = WriteFileAtomically(json_path, out); !s.ok()) return s;
  }
  if (!csv_path.empty()) {
    std::string out =
        "model,workload,experiment,variant,rate_qps,prefill,decoders,policy,tau,tpot_p50_ms,"
        "tpot_p99_ms,ttft_p50_ms,distinct_experts_per_step,mean_batch,requests\n";
    for (const auto& r : records) {
      out +=
          fmt::format("{},{},{},{},{},{},{},{},{},{:.4f},{:.4f},{:.3f},{:.3f},{:.3f},{}\n", r.model,
                      r.workload, r.experiment, r.variant, r.rate, r.prefill, r.decoders, r.policy,
                      r.tau, r.summary.tpot_p50, r.summary.tpot_p99, r.summary.ttft_p50,
                      r.summary.mean_distinct, r.summary.mean_batch, r.summary.requests);
    }
    if (Status s = WriteFileAtomically(csv_path, out); !s.ok()) return s;
  }
  return Status::Ok();
}

Status RunSimulate(const SimulateArgs& a) {
  if (!a.matrix.empty()) {
    std::vector<SimRecord> records;
    if (Status s = RunMatrix(a, &records); !s.ok()) return s;
    return WriteRecords(records, a.json, a.csv);
  }
  using Clock = std::chrono::steady_clock;
  const auto t_start = Clock::now();
  if (!(a.rate > 0) || !(a.duration > 0)) return InvalidArgument("rate and duration must be > 0");
  const int requests = std::max(1, static_cast<int>(std::lround(a.rate * a.duration)));
  Result<ModelGeometry> g = ModelGeometry{};
  Result<sim::Workload> w = sim::Workload{};
  if (!a.trace.empty()) {
    auto bytes = ReadFile(a.trace);
    if (!bytes) return bytes.error();
    auto t =
        sim::ParseTrace(std::span(reinterpret_cast<const uint8_t*>(bytes->data()), bytes->size()));
    if (!t) return t.error().WithContext(a.trace);
    g = t->geometry;
    sim::TraceWorkloadOptions to;
    to.requests = requests;
    to.rate_qps = a.rate;
    to.seed = a.seed;
    w = sim::MakeTraceWorkload(*t, to);
    if (!w) return w.error().WithContext(a.trace);
    fmt::print(stderr,
               "eldr simulate: replaying {} ({} {}), {}P{}D, {} qps x {} s = {} requests; "
               "the first {} routed tokens of each request stand in for its prompt\n",
               a.trace, t->requests.size(), g->display_name, a.prefill, a.decode, a.rate,
               a.duration, requests, t->prefix_tokens);
  } else {
    g = FindModel(a.model);
    if (!g) return g.error();
  }
  sim::WorkloadOptions wo;
  wo.kind = a.workload;
  wo.rate_qps = a.rate;
  wo.requests = requests;
  wo.calibration = a.calibration;
  wo.seed = a.seed;
  wo.popularity_sigma = a.popularity;
  wo.domain_boost = a.domain_boost;
  wo.subdomain_boost = a.subdomain_boost;
  wo.request_boost = a.request_boost;
  wo.drift_sigma = a.drift;
  wo.domain_drift = a.domain_drift;
  if (a.trace.empty()) {
    fmt::print(stderr, "eldr simulate: {} {} workload, {}P{}D, {} qps x {} s = {} requests\n",
               g->display_name, a.workload, a.prefill, a.decode, a.rate, a.duration, requests);
    w = sim::MakeSyntheticWorkload(*g, wo);
    if (!w) return w.error();
  }
  // Cost parameters from baseline figures only (docs/calibration.md).
  auto cell = PrepareCell(*g, *w, a.seed);
  if (!cell) return cell.error();
  const sim::CostParams& cost = cell->cost;
  const sim::Calibration* cal = &cell->calibration;
  if (!cell->cost_note.empty()) fmt::print("{}\n", cell->cost_note);
  if (a.stats) {
    fmt::print(
        "cost model: t0 {:.0f} us, per MoE layer {:.1f} us + {:.2f} us per distinct expert, "
        "{:.1f} us per batched request; MoE share of a step {:.0f}% (20 qps) to {:.0f}% "
        "(60 qps); prefill {:.1f} ms + {:.0f} us/token\n",
        cost.t0_us, cost.layer_us, cost.expert_us, cost.token_us, 100 * cal->moe_fraction_low,
        100 * cal->moe_fraction_high, cost.prefill_fixed_us / 1e3, cost.prefill_token_us);
    const auto st = sim::MeasureWorkload(*w);
    fmt::print(
        "workload: prefill->decode correlation {:.3f}; same-domain batches of {} select "
        "{:.1f}% fewer distinct experts than mixed; hottest expert {:.2f}x the layer mean\n",
        st.prefill_decode_correlation, st.batch, 100 * st.same_domain_reduction,
        st.hot_expert_ratio);
  }
  // Fit on the disjoint calibration requests, as the paper does.
  FitOptions fo;
  fo.k = a.decode;
  fo.seed = a.seed;
  auto fit = Fit(cell->calib, *g, fo);
  if (!fit) return fit.error().WithContext("fit");
  const std::vector<LabelShare>& mix = cell->mix;

  struct Row {
    std::string policy;
    sim::SimSummary s;
    int64_t fallbacks;
  };
  std::vector<Row> rows;
  std::vector<SimRecord> records;
  std::string per_request = "policy,request,decoder,arrival_ms,ttft_ms,tpot_ms\n";
  for (const std::string& name : SplitList(a.policies)) {
    sim::SimOptions so;
    so.cluster.prefill_workers = a.prefill;
    so.cluster.decode_workers = a.decode;
    so.cost = cost;
    so.policy.name = name;
    so.policy.tau = a.tau;
    so.policy.band_min = a.band_min;
    so.policy.space = fit->space;
    so.policy.label_shares = mix;
    so.seed = a.seed;
    so.warmup_us = static_cast<int64_t>(a.warmup * 1e6);
    const auto t0 = Clock::now();
    auto r = sim::Simulate(*w, so);
    if (!r) return r.error().WithContext("policy " + name);
    rows.push_back({name, sim::Summarize(*r), r->fallbacks});
    if (!a.requests_csv.empty()) {
      for (const auto& q : r->requests) {
        per_request += fmt::format("{},{},{},{:.3f},{:.3f},{:.4f}\n", name, q.id, q.decoder,
                                   q.arrival_us / 1e3, q.TtftMs(), q.TpotMs());
      }
    }
    records.push_back({g->name, a.trace.empty() ? a.workload : "trace", "single", "",
                       static_cast<int>(std::lround(a.rate)), a.prefill, a.decode, name, a.tau,
                       rows.back().s});
    fmt::print(stderr, "  {:<7} simulated in {:.2f} s\n", name,
               std::chrono::duration<double>(Clock::now() - t0).count());
  }
  double best_p50 = INFINITY, best_p99 = INFINITY;
  for (const auto& r : rows) {
    if (IsLoadBalancingPolicy(r.policy)) {
      best_p50 = std::min(best_p50, r.s.tpot_p50);
      best_p99 = std::min(best_p99, r.s.tpot_p99);
    }
  }
  fmt::print("{} {}, {}P{}D, {} qps x {} s ({} requests), tau = {}\n", g->display_name,
             a.trace.empty() ? a.workload + " workload" : "trace " + a.trace, a.prefill, a.decode,
             a.rate, a.duration, requests, a.tau);
  fmt::print("{:<8} {:>10} {:>10} {:>10} {:>10} {:>10} {:>14} {:>7}\n", "policy", "TPOT p50",
             "TPOT p99", "TTFT p50", "vs LB p50", "vs LB p99", "experts/step", "batch");
  for (const auto& r : rows) {
    auto pct = [](double v, double base) {
      return std::isfinite(base) ? fmt::format("{:+.1f}%", 100 * (v / base - 1)) : std::string("-");
    };
    fmt::print("{:<8} {:>8.2f}ms {:>8.2f}ms {:>8.1f}ms {:>10} {:>10} {:>14.1f} {:>7.1f}\n",
               r.policy, r.s.tpot_p50, r.s.tpot_p99, r.s.ttft_p50, pct(r.s.tpot_p50, best_p50),
               pct(r.s.tpot_p99, best_p99), r.s.mean_distinct, r.s.mean_batch);
  }
  fmt::print(
      "vs LB: change against the best load-balancing baseline (rr, random, jsq, p2c). "
      "experts/step: distinct experts per MoE layer per decode step (of {}).\n",
      g->experts);
  fmt::print(stderr, "eldr simulate: done in {:.1f} s\n",
             std::chrono::duration<double>(Clock::now() - t_start).count());
  if (!a.requests_csv.empty()) {
    if (Status s = WriteFileAtomically(a.requests_csv, per_request); !s.ok()) return s;
  }
  return WriteRecords(records, a.json, a.csv);
}

}  // namespace eldr::cli
