#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <thread>

#include "commands.h"
#include "eldr/fit.h"
#include "eldr/sim/capture_workload.h"
#include "eldr/sim/simulator.h"
#include "eldr/sim/trace.h"

namespace eldr::cli {

void AddSimulateCommand(CLI::App& app, SimulateArgs& a) {
  auto* c = app.add_subcommand(
      "simulate",
      "Simulate an xPyD cluster serving a workload under every routing policy, side "
      "by side on identical arrivals (defaults: Qwen3-30B-A3B, task, 8P16D, 60 qps, "
      "120 s)");
  a.model_opt = c->add_option("-m,--model", a.model,
                              "Model preset or a Hugging Face config.json (or its directory)")
                    ->capture_default_str();
  c->add_option("-w,--workload", a.workload, "task or language")
      ->check(CLI::IsMember({"task", "language"}))
      ->capture_default_str();
  c->add_option("--prefill", a.prefill, "Prefill workers")->capture_default_str();
  c->add_option("--decode", a.decode, "Decode workers (= centroids)")->capture_default_str();
  c->add_option("-r,--rate", a.rate, "Arrival rate, requests/s (Poisson)")->capture_default_str();
  c->add_option("-d,--duration", a.duration, "Seconds of arrivals")->capture_default_str();
  c->add_option("--policies", a.policies,
                "Comma-separated policies; eldr:TAU runs eldr with its own tau")
      ->capture_default_str();
  c->add_option("--tau", a.tau, "ELDR locality band")->capture_default_str();
  c->add_option("--plus-tau", a.plus.tau, "eldr-plus: locality band inside the load bound")
      ->capture_default_str();
  c->add_option("--plus-slack", a.plus.slack,
                "eldr-plus: load bound, at most (1 + slack) x the mean in flight")
      ->capture_default_str();
  c->add_option("--plus-sqrt-slack", a.plus.sqrt_slack,
                "eldr-plus: load bound grows by this x sqrt(mean in flight) (0: off)")
      ->capture_default_str();
  c->add_option("--seeds", a.seeds,
                "Seeds to run (seed, seed+1, ...): every figure as mean and range over them")
      ->capture_default_str();
  c->add_option("--band-min", a.band_min, "ELDR: widen a band to at least this many decoders")
      ->capture_default_str();
  c->add_option("--warmup", a.warmup, "Seconds of arrivals simulated but not reported")
      ->capture_default_str();
  a.calibration_opt =
      c->add_option("--calibration", a.calibration,
                    "Synthetic workloads: calibration requests for the fit (disjoint)")
          ->capture_default_str();
  c->add_option("--seed", a.seed, "Seed of workload, fit and policies")->capture_default_str();
  std::string profiles;
  for (const auto& p : sim::HardwareProfiles()) profiles += (profiles.empty() ? "" : ", ") + p.name;
  c->add_option("--hardware", a.hardware,
                fmt::format("Decode accelerator of the cost model: {}. Models without published "
                            "latencies derive their step cost for it; a calibrated model is "
                            "rescaled by HBM bandwidth unless it is {} (docs/calibration.md)",
                            profiles, sim::CalibrationHardware().name))
      ->capture_default_str();
  c->add_flag("--stats", a.stats, "Also print the workload's routing statistics");
  c->add_option("--matrix", a.matrix,
                "Run an experiment set instead: 'paper' = 3 models x 2 workloads x 20-100 qps x "
                "six policies, plus the ablations (-d sets the seconds per rate)")
      ->check(CLI::IsMember({"paper"}));
  c->add_option("--trace", a.trace,
                "Replay a recorded routing trace (`eldr trace import`) or a capture of live "
                "traffic (`eldr serve --capture`; several files comma-separated) instead of a "
                "synthetic workload; the model is the file's");
  c->add_option("--calibration-trace", a.calibration_trace,
                "With --trace: fit on this trace and evaluate every request of --trace");
  c->add_option("--calibration-fraction", a.calibration_fraction,
                "With --trace alone: share of its requests that calibrate (the rest are replayed)")
      ->capture_default_str();
  c->add_option("--json", a.json, "Write every result as JSON to this file");
  c->add_option("--csv", a.csv, "Write every result as CSV to this file");
  c->add_option("--requests-csv", a.requests_csv,
                "Write every request's decoder, TTFT and TPOT per policy as CSV (for CDFs)");
  c->add_option("--threads", a.threads, "Simulations run in parallel")->capture_default_str();
  // Generative-model knobs (docs/calibration.md); negative = the calibrated default.
  c->add_option("--popularity-sigma", a.popularity, "Workload model: expert popularity spread");
  c->add_option("--domain-boost", a.domain_boost, "Workload model: domain affinity");
  c->add_option("--subdomain-boost", a.subdomain_boost,
                "Workload model: sub-domain (source dataset / topic) affinity");
  c->add_option("--request-boost", a.request_boost, "Workload model: request affinity");
  c->add_option("--drift", a.drift, "Workload model: per-request decode drift");
  c->add_option("--domain-drift", a.domain_drift, "Workload model: per-domain decode drift");
  c->add_option("--mix-drift", a.mix_drift,
                "Synthetic workloads: the domain mix drifts over the run, the first domain's share "
                "growing linearly from its calibrated s0 to s0 + X (1 - s0) at the last arrival "
                "(0..1); calibration keeps the initial mix")
      ->capture_default_str();
  c->add_flag("--oracle-signatures", a.oracle_signatures,
              "Research: every request's signature is what it selects while decoding, not its "
              "prompt's counts; no router can know this, so it bounds what any prompt signature "
              "can buy");
  c->add_flag("--refit", a.refit,
              "Also run every eldr / eldr-plus policy refitted online in simulated time "
              "(label +refit): eldr::Refit on the recent prompt counts, as eldr serve's refit");
  c->add_option("--refit-interval", a.refit_interval,
                "With --refit: seconds of simulated time between refits")
      ->capture_default_str();
  c->add_option("--refit-window", a.refit_window,
                "With --refit: each refit fits the routed requests that arrived in the last this "
                "many seconds")
      ->capture_default_str();
  c->add_option("--refit-min", a.refit_min,
                "With --refit: a window with fewer usable requests keeps the current space")
      ->capture_default_str();
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
          "\"seed\":{},\"tpot_p50_ms\":{:.4f},\"tpot_p99_ms\":{:.4f},\"ttft_p50_ms\":{:.3f},"
          "\"distinct_experts_per_step\":{:.3f},\"distinct_experts_per_request\":{:.3f},"
          "\"max_decoder_share\":{:.4f},\"mean_batch\":{:.3f},\"requests\":{}}}{}\n",
          r.model, r.workload, r.experiment, r.variant, r.rate, r.prefill, r.decoders, r.policy,
          r.tau, r.seed, r.summary.tpot_p50, r.summary.tpot_p99, r.summary.ttft_p50,
          r.summary.mean_distinct, r.summary.request_distinct, r.summary.max_decoder_share,
          r.summary.mean_batch, r.summary.requests, i + 1 < records.size() ? "," : "");
    }
    out += "]\n";
    if (Status s = WriteFileAtomically(json_path, out); !s.ok()) return s;
  }
  if (!csv_path.empty()) {
    std::string out =
        "model,workload,experiment,variant,rate_qps,prefill,decoders,policy,tau,seed,tpot_p50_ms,"
        "tpot_p99_ms,ttft_p50_ms,distinct_experts_per_step,distinct_experts_per_request,"
        "max_decoder_share,mean_batch,requests\n";
    for (const auto& r : records) {
      out += fmt::format(
          "{},{},{},{},{},{},{},{},{},{},{:.4f},{:.4f},{:.3f},{:.3f},{:.3f},{:.4f},{:.3f},{}\n",
          r.model, r.workload, r.experiment, r.variant, r.rate, r.prefill, r.decoders, r.policy,
          r.tau, r.seed, r.summary.tpot_p50, r.summary.tpot_p99, r.summary.ttft_p50,
          r.summary.mean_distinct, r.summary.request_distinct, r.summary.max_decoder_share,
          r.summary.mean_batch, r.summary.requests);
    }
    if (Status s = WriteFileAtomically(csv_path, out); !s.ok()) return s;
  }
  return Status::Ok();
}

namespace {

// One entry of --policies: a policy name, optionally with its own parameters: "eldr:TAU",
// "eldr-plus:TAU" or "eldr-plus:TAU:SLACK"; "eldr-plus-rel:..." is eldr-plus with the band
// relative to the score spread (a research variant, docs/results.md).
struct PolicySpec {
  std::string label, name;
  double tau = 0;
  PolicyOptions::Plus plus;
  bool refit = false;  // --refit: the "+refit" copy of an eldr / eldr-plus entry
};

Result<std::vector<PolicySpec>> ParsePolicies(const std::string& list, double tau,
                                              const PolicyOptions::Plus& plus) {
  std::vector<PolicySpec> out;
  for (const std::string& item : SplitList(list)) {
    PolicySpec p{item, item, tau, plus};
    const std::vector<std::string> parts = [&] {
      std::vector<std::string> v;
      size_t from = 0;
      for (size_t colon; (colon = item.find(':', from)) != std::string::npos; from = colon + 1) {
        v.push_back(item.substr(from, colon - from));
      }
      v.push_back(item.substr(from));
      return v;
    }();
    p.name = parts[0];
    if (p.name == "eldr-plus-rel") {
      p.name = "eldr-plus";
      p.plus.relative_band = true;
    }
    const size_t max_params = p.name == "eldr" ? 1 : p.name == "eldr-plus" ? 3 : 0;
    if (parts.size() - 1 > max_params) {
      return InvalidArgument(
          "--policies: '{}': only eldr:TAU and eldr-plus:TAU[:SLACK[:SQRT_SLACK]] take "
          "parameters",
          item);
    }
    for (size_t i = 1; i < parts.size(); ++i) {
      char* end = nullptr;
      const double v = std::strtod(parts[i].c_str(), &end);
      if (parts[i].empty() || end != parts[i].c_str() + parts[i].size()) {
        return InvalidArgument("--policies: '{}': '{}' is not a number", item, parts[i]);
      }
      if (p.name == "eldr") p.tau = v;
      if (p.name == "eldr-plus") {
        (i == 1 ? p.plus.tau : i == 2 ? p.plus.slack : p.plus.sqrt_slack) = v;
      }
    }
    out.push_back(std::move(p));
  }
  if (out.empty()) return InvalidArgument("--policies is empty");
  return out;
}

// --refit: each eldr / eldr-plus entry followed by its refitted copy, so that one run (same
// workload, fit and arrivals) compares them.
Result<std::vector<PolicySpec>> WithRefitCopies(std::vector<PolicySpec> in) {
  std::vector<PolicySpec> out;
  for (auto& p : in) {
    const bool space = p.name == "eldr" || p.name == "eldr-plus";
    out.push_back(p);
    if (!space) continue;
    p.label += "+refit";
    p.refit = true;
    out.push_back(std::move(p));
  }
  if (out.size() == in.size()) {
    return InvalidArgument("--refit: --policies has no eldr or eldr-plus policy to refit");
  }
  return out;
}

Result<sim::SimRefitOptions> RefitOptionsOf(const SimulateArgs& a) {
  sim::SimRefitOptions r;
  if (!(a.refit_interval > 0) || !(a.refit_window > 0) || !std::isfinite(a.refit_interval) ||
      !std::isfinite(a.refit_window)) {
    return InvalidArgument("--refit-interval and --refit-window must be positive seconds");
  }
  r.interval_us = std::llround(a.refit_interval * 1e6);
  r.window_us = std::llround(a.refit_window * 1e6);
  r.fit.min_requests = a.refit_min;
  ELDR_RETURN_IF_ERROR(r.Validate());
  return r;
}

// A capture (calibration JSON Lines, plain or gzip) rather than an eldr trace file.
Result<bool> IsCapture(const std::string& paths) {
  const auto list = SplitList(paths);
  if (list.size() != 1) return true;  // only captures come in several files
  ELDR_ASSIGN_OR_RETURN(std::string bytes, ReadFile(list[0]));
  return !sim::IsTraceBytes(
      std::span(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
}

Result<sim::Trace> LoadTrace(const std::string& path) {
  ELDR_ASSIGN_OR_RETURN(std::string bytes, ReadFile(path));
  auto t = sim::ParseTrace(std::span(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
  if (!t) return Error{t.error().WithContext(path)};
  return t;
}

void PrintUsage(std::string_view path, const sim::TraceUsage& u) {
  fmt::print(stderr, "  {}: {} requests, {} usable, {} dropped with fewer than {} routed tokens\n",
             path, u.requests, u.usable, u.too_short, u.min_routed_tokens);
}

}  // namespace

Status RunSimulate(const SimulateArgs& a) {
  auto hw = sim::FindHardwareProfile(a.hardware);
  if (!hw) return hw.error().WithContext("--hardware");
  if (!a.matrix.empty()) {
    if (a.refit || a.mix_drift != 0 || a.oracle_signatures) {
      return InvalidArgument(
          "--refit, --mix-drift and --oracle-signatures apply to single simulations, not "
          "--matrix");
    }
    if (hw->name != sim::CalibrationHardware().name) {
      return InvalidArgument(
          "--hardware {}: --matrix paper reproduces the published set-up, on {} (the calibration "
          "hardware); give --hardware to single simulations",
          hw->name, sim::CalibrationHardware().name);
    }
    std::vector<SimRecord> records;
    if (Status s = RunMatrix(a, &records); !s.ok()) return s;
    return WriteRecords(records, a.json, a.csv);
  }
  using Clock = std::chrono::steady_clock;
  const auto t_start = Clock::now();
  if (!(a.rate > 0) || !(a.duration > 0)) return InvalidArgument("rate and duration must be > 0");
  if (a.seeds < 1) return InvalidArgument("--seeds must be >= 1 (got {})", a.seeds);
  const bool trace = !a.trace.empty();
  if (!trace && !a.calibration_trace.empty()) {
    return InvalidArgument("--calibration-trace needs --trace (the trace to evaluate)");
  }
  if (trace && a.calibration_opt != nullptr && a.calibration_opt->count() > 0) {
    return InvalidArgument(
        "--calibration sets the synthetic workload's calibration requests; with --trace use "
        "--calibration-fraction or --calibration-trace");
  }
  if (trace && a.mix_drift != 0) {
    return InvalidArgument("--mix-drift changes the synthetic workload; a trace has its own mix");
  }
  ELDR_ASSIGN_OR_RETURN(std::vector<PolicySpec> policies, ParsePolicies(a.policies, a.tau, a.plus));
  sim::SimRefitOptions refit;
  if (a.refit) {
    ELDR_ASSIGN_OR_RETURN(policies, WithRefitCopies(std::move(policies)));
    ELDR_ASSIGN_OR_RETURN(refit, RefitOptionsOf(a));
  }
  const int requests = std::max(1, static_cast<int>(std::lround(a.rate * a.duration)));
  ModelGeometry g;
  sim::Trace eval_trace, cal_trace;
  bool capture = false;
  CalibrationInput cap;
  if (trace) {
    ELDR_ASSIGN_OR_RETURN(capture, IsCapture(a.trace));
  }
  if (capture) {
    if (!a.calibration_trace.empty()) {
      return InvalidArgument(
          "--calibration-trace works with eldr trace files; a capture calibrates on its own "
          "earliest requests (--calibration-fraction)");
    }
    const bool model_given = a.model_opt != nullptr && a.model_opt->count() > 0;
    if (model_given) {
      ELDR_ASSIGN_OR_RETURN(g, FindModel(a.model));
    }
    ELDR_ASSIGN_OR_RETURN(cap,
                          ReadCalibrationInputs(SplitList(a.trace), model_given ? &g : nullptr));
    if (!model_given) g = cap.set.geometry;
    for (const auto& n : cap.notes) fmt::print(stderr, "eldr simulate: note: {}\n", n);
  } else if (trace) {
    ELDR_ASSIGN_OR_RETURN(eval_trace, LoadTrace(a.trace));
    if (!a.calibration_trace.empty()) {
      ELDR_ASSIGN_OR_RETURN(cal_trace, LoadTrace(a.calibration_trace));
    }
    g = eval_trace.geometry;
  } else {
    ELDR_ASSIGN_OR_RETURN(g, FindModel(a.model));
  }
  const std::string what = capture ? fmt::format("capture {} of {}", a.trace, g.display_name)
                           : trace ? "trace " + a.trace
                                   : fmt::format("{} {} workload", g.display_name, a.workload);
  // A capture replays its own arrivals: --rate and --duration do not apply (said below).
  const std::string load =
      capture ? fmt::format("{} records", cap.set.requests.size())
              : fmt::format("{} qps x {} s = {} requests", a.rate, a.duration, requests);
  fmt::print(stderr, "eldr simulate: {}, {}P{}D, {}, {} seed{} ({}..{})\n", what, a.prefill,
             a.decode, load, a.seeds, a.seeds > 1 ? "s" : "", a.seed, a.seed + a.seeds - 1);

  struct Run {
    std::vector<sim::SimSummary> s;  // per seed
    std::vector<double> vs50, vs99;  // per seed, against that seed's best load balancer
    int64_t fallbacks = 0;
    int64_t refits_swapped = 0, refits_failed = 0;
    double churn = 0;  // summed over swaps
  };
  std::vector<Run> runs(policies.size());
  double capture_rate = 0;
  std::vector<SimRecord> records;
  std::string per_request = "policy,seed,request,decoder,arrival_ms,ttft_ms,tpot_ms\n";
  int pool = 0;
  int64_t peak_in_flight = 0;
  std::vector<std::string> labels;  // the workload's, with its calibrated shares
  std::vector<double> shares;
  Progress progress(a.seeds > 1);
  for (int si = 0; si < a.seeds; ++si) {
    const uint64_t seed = a.seed + static_cast<uint64_t>(si);
    Result<sim::Workload> w = sim::Workload{};
    if (capture) {
      sim::CaptureReplayOptions co;
      co.calibration_fraction = a.calibration_fraction;
      co.seed = seed;
      sim::CaptureReplayStats cs;
      w = sim::MakeCaptureWorkload(g, cap.set.requests, cap.set.meta, co, &cs);
      if (!w) return Error{w.error().WithContext(a.trace)};
      capture_rate = cs.rate_qps;
      if (si == 0) {
        fmt::print(
            stderr,
            "  {} records: {} replayable ({} lack arrival/length fields, {} have no output "
            "tokens), {} with decode counts\n"
            "  the earliest {} calibrate; {} are replayed at their recorded arrivals: {:.1f} "
            "s, {:.2f} qps (--rate and --duration do not apply)\n"
            "  decode-token picks are drawn from each request's {} counts (an "
            "approximation: docs/serve.md)\n",
            cs.records, cs.usable, cs.missing_fields, cs.no_output, cs.with_decode, cs.calibrating,
            cs.evaluated, cs.span_s, cs.rate_qps,
            cs.with_decode == cs.usable ? "decode"
            : cs.with_decode            ? "decode (or prompt)"
                                        : "prompt");
      }
    } else if (trace) {
      sim::TraceWorkloadOptions to;
      to.requests = requests;
      to.rate_qps = a.rate;
      to.seed = seed;
      to.calibration_fraction = a.calibration_fraction;
      sim::TraceReplayStats rs;
      w = a.calibration_trace.empty() ? sim::MakeTraceWorkload(eval_trace, to, &rs)
                                      : sim::MakeTraceWorkload(eval_trace, cal_trace, to, &rs);
      if (!w) return Error{w.error().WithContext(a.trace)};
      pool = rs.pool;
      if (si == 0) {
        fmt::print(stderr,
                   "eldr simulate: the first {} routed tokens of each request stand in for its "
                   "prompt\n",
                   eval_trace.prefix_tokens);
        PrintUsage(a.trace, rs.eval_trace);
        if (rs.separate_calibration) PrintUsage(a.calibration_trace, rs.calibration_trace);
        fmt::print(stderr,
                   "  {} calibrating{}, evaluation pool {} distinct requests replayed without "
                   "replacement: {} requests = {} pass{} in shuffled order\n",
                   rs.calibrating,
                   rs.separate_calibration
                       ? " (from " + a.calibration_trace + ")"
                       : fmt::format(" ({:.0f}% of the usable)", 100 * a.calibration_fraction),
                   rs.pool, rs.generated, rs.passes, rs.passes > 1 ? "es" : "");
      }
    } else {
      sim::WorkloadOptions wo;
      wo.kind = a.workload;
      wo.rate_qps = a.rate;
      wo.requests = requests;
      wo.calibration = a.calibration;
      wo.seed = seed;
      wo.popularity_sigma = a.popularity;
      wo.domain_boost = a.domain_boost;
      wo.subdomain_boost = a.subdomain_boost;
      wo.request_boost = a.request_boost;
      wo.drift_sigma = a.drift;
      wo.domain_drift = a.domain_drift;
      wo.mix_drift = a.mix_drift;
      w = sim::MakeSyntheticWorkload(g, wo);
      if (!w) return w.error();
      labels = w->labels;
      shares = w->label_shares;
    }
    if (a.oracle_signatures) {
      if (Status s = sim::UseDecodeSignatures(&*w); !s.ok()) return s;
      if (si == 0) {
        fmt::print(stderr,
                   "eldr simulate: --oracle-signatures: every signature is the request's own "
                   "decode picks (a ceiling no router can reach)\n");
      }
    }
    // Cost parameters from baseline figures only, or assumed with cost_note saying how
    // (docs/calibration.md).
    auto cell = PrepareCell(g, *w, seed, *hw);
    if (!cell) return cell.error();
    const sim::CostParams& cost = cell->cost;
    if (si == 0 && !cell->cost_note.empty()) fmt::print("{}\n", cell->cost_note);
    if (si == 0 && a.stats) {
      const sim::Calibration* cal = &cell->calibration;
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
    fo.seed = seed;
    auto fit = Fit(cell->calib, g, fo);
    if (!fit) return fit.error();  // the fitter says "fit: ..." itself
    std::vector<Result<sim::SimResult>> results(policies.size(), sim::SimResult{});
    std::atomic<size_t> next{0};
    auto worker = [&] {
      for (size_t i; (i = next.fetch_add(1)) < policies.size();) {
        sim::SimOptions so;
        so.cluster.prefill_workers = a.prefill;
        so.cluster.decode_workers = a.decode;
        so.cost = cost;
        so.policy.name = policies[i].name;
        so.policy.tau = policies[i].tau;
        so.policy.band_min = a.band_min;
        so.policy.plus = policies[i].plus;
        so.policy.space = fit->space;
        so.policy.label_shares = cell->mix;
        so.seed = seed;
        so.warmup_us = static_cast<int64_t>(a.warmup * 1e6);
        if (policies[i].refit) {
          so.refit = refit;
          so.refit.enabled = true;
        }
        results[i] = sim::Simulate(*w, so);
      }
    };
    {
      std::vector<std::thread> pool_threads;
      for (int t = 0; t < std::max(1, a.threads); ++t) pool_threads.emplace_back(worker);
      for (auto& t : pool_threads) t.join();
    }
    double best50 = INFINITY, best99 = INFINITY;
    for (size_t i = 0; i < policies.size(); ++i) {
      if (!results[i]) return results[i].error().WithContext("policy " + policies[i].label);
      const sim::SimResult& r = *results[i];
      runs[i].s.push_back(sim::Summarize(r));
      runs[i].fallbacks += r.fallbacks;
      runs[i].refits_swapped += r.refits_swapped;
      runs[i].refits_failed += r.refits_failed;
      for (const auto& ev : r.refits) runs[i].churn += ev.churn;
      peak_in_flight = std::max(peak_in_flight, r.peak_in_flight);
      if (IsLoadBalancingPolicy(policies[i].name)) {
        best50 = std::min(best50, runs[i].s.back().tpot_p50);
        best99 = std::min(best99, runs[i].s.back().tpot_p99);
      }
      if (!a.requests_csv.empty()) {
        for (const auto& q : r.requests) {
          per_request += fmt::format("{},{},{},{},{:.3f},{:.3f},{:.4f}\n", policies[i].label, seed,
                                     q.id, q.decoder, q.arrival_us / 1e3, q.TtftMs(), q.TpotMs());
        }
      }
      SimRecord rec{g.name,
                    capture ? "capture"
                    : trace ? "trace"
                            : a.workload,
                    "single",
                    policies[i].label == policies[i].name ? "" : policies[i].label,
                    static_cast<int>(std::lround(capture ? capture_rate : a.rate)),
                    a.prefill,
                    a.decode,
                    policies[i].name,
                    policies[i].tau,
                    runs[i].s.back()};
      rec.seed = seed;
      records.push_back(std::move(rec));
    }
    for (auto& run : runs) {
      run.vs50.push_back(std::isfinite(best50) ? 100 * (run.s.back().tpot_p50 / best50 - 1) : NAN);
      run.vs99.push_back(std::isfinite(best99) ? 100 * (run.s.back().tpot_p99 / best99 - 1) : NAN);
    }
    progress.Update(fmt::format("seed {}/{}", si + 1, a.seeds),
                    static_cast<double>(si + 1) / a.seeds);
  }
  if (trace && !capture && sim::PoolTooSmall(peak_in_flight, pool)) {
    fmt::print(stderr,
               "eldr simulate: warning: up to {} requests were in flight at once against an "
               "evaluation pool of {}: copies of one request from consecutive passes overlap and "
               "flatter locality routing; use a larger trace, a lower rate or "
               "--calibration-trace\n",
               peak_in_flight, pool);
  }
  const bool lb = std::any_of(policies.begin(), policies.end(),
                              [](const PolicySpec& p) { return IsLoadBalancingPolicy(p.name); });
  if (capture) {
    fmt::print("{}, {}P{}D, recorded arrivals ({:.2f} qps), tau = {}, {} seed{}{}\n", what,
               a.prefill, a.decode, capture_rate, a.tau, a.seeds, a.seeds > 1 ? "s" : "",
               a.seeds > 1 ? ": mean [min, max] (seeds vary the drawn decode picks)" : "");
  } else {
    fmt::print("{}, {}P{}D, {} qps x {} s ({} requests), tau = {}, {} seed{}{}\n",
               trace ? what : g.display_name + " " + a.workload + " workload", a.prefill, a.decode,
               a.rate, a.duration, requests, a.tau, a.seeds, a.seeds > 1 ? "s" : "",
               a.seeds > 1 ? ": mean [min, max]" : "");
  }
  if (a.mix_drift > 0) {
    const std::vector<double> end = sim::DriftedShares(shares, a.mix_drift, 1);
    fmt::print(
        "domain mix drifts by {}: {} is {:.1f}% of the calibration and the first arrivals, "
        "{:.1f}% of the last; the other domains shrink in proportion\n",
        a.mix_drift, labels[0], 100 * shares[0], 100 * end[0]);
  }
  fmt::print("{:<18} {:>24} {:>24} {:>10} {:>24} {:>24} {:>9} {:>9} {:>8}\n", "policy",
             "TPOT p50 ms", "TPOT p99 ms", "TTFT p50", "vs LB p50", "vs LB p99", "exp/step",
             "exp/req", "busiest");
  auto spread = [](const Run& r, auto field) {
    std::vector<double> v;
    for (const auto& s : r.s) v.push_back(field(s));
    return SpreadOf(v);
  };
  for (size_t i = 0; i < policies.size(); ++i) {
    const Run& r = runs[i];
    fmt::print("{:<18} {:>24} {:>24} {:>10.1f} {:>24} {:>24} {:>9.1f} {:>9.1f} {:>7.1f}%\n",
               policies[i].label,
               ValueSpread(spread(r, [](const sim::SimSummary& s) { return s.tpot_p50; }), 2),
               ValueSpread(spread(r, [](const sim::SimSummary& s) { return s.tpot_p99; }), 2),
               spread(r, [](const sim::SimSummary& s) { return s.ttft_p50; }).mean,
               lb ? PctSpread(SpreadOf(r.vs50)) : "-", lb ? PctSpread(SpreadOf(r.vs99)) : "-",
               spread(r, [](const sim::SimSummary& s) { return s.mean_distinct; }).mean,
               spread(r, [](const sim::SimSummary& s) { return s.request_distinct; }).mean,
               100 * spread(r, [](const sim::SimSummary& s) { return s.max_decoder_share; }).mean);
  }
  fmt::print(
      "vs LB: change against the best load-balancing baseline (rr, random, jsq, p2c) of the same "
      "seed. exp/step: distinct experts per MoE layer per decode step (of {}); exp/req: the same "
      "averaged per request over the steps it took part in. busiest: the busiest decoder's share "
      "of requests (fair: {:.1f}%).\n",
      g.experts, 100.0 / a.decode);
  if (a.refit) {
    fmt::print(
        "+refit: eldr::Refit every {} s of simulated time on the prompt counts of the routed "
        "requests that arrived in the last {} s (at most {}); taken when the window has >= {} "
        "usable requests and the fit is not degenerate, else the space is kept. Same workload, "
        "fit and seeds as the static rows.\n",
        a.refit_interval, a.refit_window, refit.max_window, refit.fit.min_requests);
    for (size_t i = 0; i < policies.size(); ++i) {
      const Run& r = runs[i];
      if (!policies[i].refit) continue;
      fmt::print("  {:<18} {} refits swapped, {} refused over {} seed{}; mean churn {:.1f}%\n",
                 policies[i].label, r.refits_swapped, r.refits_failed, a.seeds,
                 a.seeds > 1 ? "s" : "",
                 r.refits_swapped ? 100 * r.churn / static_cast<double>(r.refits_swapped) : 0.0);
    }
  }
  fmt::print(stderr, "eldr simulate: done in {:.1f} s\n",
             std::chrono::duration<double>(Clock::now() - t_start).count());
  if (!a.requests_csv.empty()) {
    if (Status s = WriteFileAtomically(a.requests_csv, per_request); !s.ok()) return s;
  }
  return WriteRecords(records, a.json, a.csv);
}

}  // namespace eldr::cli
