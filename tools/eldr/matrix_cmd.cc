// `eldr simulate --matrix paper`: the paper's main table (3 models x 2 workloads x 20-100 qps x
// every policy at 8P16D) and its ablations, each run for every seed of [seed, seed + seeds) on a
// small thread pool, with the paper's numbers beside ours. Every figure is computed per seed
// (against that seed's own baselines) and reported as the mean and range over seeds, so that no
// one lucky draw of workload, fit and policy randomness makes a result. Per seed, each
// (model, workload) cell generates one workload at the highest rate and runs lower rates on its
// first requests with stretched arrivals (same distribution); a cell's seeds run one after another
// so that one workload at a time is held.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <map>
#include <thread>

#include "commands.h"
#include "eldr/fit.h"
#include "eldr/mutex.h"
#include "eldr/sim/simulator.h"

namespace eldr::cli {

namespace {

struct PaperCell {
  const char* model;
  const char* kind;
  double p50, p99;  // % reduction vs the best load balancer, mean over rates (the ELDR paper)
};
constexpr PaperCell kPaper[] = {
    {"qwen3-30b-a3b", "task", 13.9, 6.0},    {"gpt-oss-120b", "task", 7.0, 3.4},
    {"gemma-4-26b-a4b", "task", 9.4, 5.2},   {"qwen3-30b-a3b", "language", 10.0, 6.2},
    {"gpt-oss-120b", "language", 7.3, -1.5}, {"gemma-4-26b-a4b", "language", 5.9, -0.2},
};

constexpr std::array<int, 5> kRates = {20, 40, 60, 80, 100};
constexpr int kAblationRate = 60;            // the ablations' and the busiest-decoder figure's rate
constexpr double kExtraTaus[] = {0.2, 0.3};  // eldr's band, besides a.tau, in the main table

// The main table's columns of changes against the best load balancer.
struct Column {
  const char* header;
  const char* policy;
  const char* variant;  // the main-experiment record's variant
};
constexpr Column kColumns[] = {{"eldr", "eldr", ""},
                               {"eldr tau=0.2", "eldr", "tau=0.2"},
                               {"eldr tau=0.3", "eldr", "tau=0.3"},
                               {"eldr-plus", "eldr-plus", ""},
                               {"domain", "domain", ""}};
constexpr size_t kColumnCount = std::size(kColumns);
// The locality figures' policies; "best LB" is the load balancer with the lowest TPOT P50 at
// each rate and seed.
constexpr const char* kLocality[] = {"best LB", "eldr", "eldr-plus"};
constexpr size_t kLocalityCount = std::size(kLocality);

struct Job {
  SimRecord rec;  // identifying fields filled in; results filled by the run
  sim::SimOptions options;
  int same_as = -1;  // >= 0: identical to that job's options; its result is copied, not re-run
};

// Runs every job on `threads` threads; the workload is shared read-only.
Status RunJobs(const sim::Workload& w, std::vector<Job>& jobs, int threads, Progress& progress,
               std::string_view stage) {
  std::vector<size_t> todo;
  for (size_t i = 0; i < jobs.size(); ++i)
    if (jobs[i].same_as < 0) todo.push_back(i);
  std::atomic<size_t> next{0};
  // The workers' shared state (a struct: the analysis checks members, not locals).
  struct {
    Mutex mu;
    size_t done ELDR_GUARDED_BY(mu) = 0;
    Status first_error ELDR_GUARDED_BY(mu);
  } shared;
  progress.Update(stage, 0);
  auto worker = [&] {
    for (size_t n; (n = next.fetch_add(1)) < todo.size();) {
      Job& job = jobs[todo[n]];
      auto r = sim::Simulate(w, job.options);
      MutexLock lock(&shared.mu);
      if (!r) {
        if (shared.first_error.ok()) {
          shared.first_error = r.error().WithContext(
              fmt::format("{} {} at {} qps", job.rec.policy, job.rec.variant, job.rec.rate));
        }
        continue;
      }
      job.rec.summary = sim::Summarize(*r);
      progress.Update(stage, static_cast<double>(++shared.done) / todo.size());
    }
  };
  std::vector<std::thread> pool;
  for (int t = 0; t < std::max(1, threads); ++t) pool.emplace_back(worker);
  for (auto& t : pool) t.join();
  {
    MutexLock lock(&shared.mu);  // the workers are joined: only for the analysis
    if (!shared.first_error.ok()) return shared.first_error;
  }
  for (auto& j : jobs)
    if (j.same_as >= 0) j.rec.summary = jobs[j.same_as].rec.summary;
  return Status::Ok();
}

double Pct(double v, double base) { return 100 * (v / base - 1); }

std::string MainKey(std::string_view policy, std::string_view variant) {
  return variant.empty() ? std::string(policy) : fmt::format("{}:{}", policy, variant);
}

// A change in TPOT P50 and P99, one value per seed.
struct Change {
  std::vector<double> p50, p99;
  std::string Format() const {
    return fmt::format("P50 {:<21} P99 {}", PctSpread(SpreadOf(p50)), PctSpread(SpreadOf(p99)));
  }
};

// One (model, workload) cell's figures, one value per seed.
struct CellFigures {
  std::string model, kind;
  int experts = 0, decoders = 0;
  double paper50 = 0, paper99 = 0;                                // as changes (negative = faster)
  std::array<Change, kColumnCount> vs_lb;                         // mean over rates
  std::array<std::vector<double>, kLocalityCount> step, request;  // mean over rates
  std::vector<double> share_eldr, share_plus;                     // at kAblationRate
  std::vector<std::string> ablation_order;
  std::map<std::string, Change> ablations;  // vs RR at kAblationRate (pools: RR on the pool)
};

// One seed of one cell: workload, calibration, fits, every job; appends the seed's figures to
// `fig` and its records to `records`.
Status RunCellSeed(const SimulateArgs& a, const PaperCell& cell, const ModelGeometry& g,
                   uint64_t seed, std::string_view stage, Progress& progress, CellFigures& fig,
                   std::vector<SimRecord>* records) {
  const int top = kRates.back();
  sim::WorkloadOptions wo;
  wo.kind = cell.kind;
  wo.rate_qps = top;
  wo.requests = static_cast<int>(top * a.duration);
  wo.calibration = a.calibration;
  wo.seed = seed;
  progress.Update(fmt::format("{}: workload", stage), 0);
  auto w = sim::MakeSyntheticWorkload(g, wo);
  if (!w) return w.error();
  auto prepared = PrepareCell(g, *w, seed);
  if (!prepared) return prepared.error();
  const std::vector<CalibrationRequest>& calib = prepared->calib;
  // Fitted spaces by variant: (algo, transform, K).
  std::map<std::string, std::shared_ptr<const SignatureSpace>> spaces;
  auto space_for = [&](ClusterAlgo algo, SignatureTransform t,
                       int k) -> Result<std::shared_ptr<const SignatureSpace>> {
    const std::string key = fmt::format("{}/{}/{}", static_cast<int>(algo), TransformName(t), k);
    if (auto it = spaces.find(key); it != spaces.end()) return it->second;
    FitOptions fo;
    fo.k = k;
    fo.algo = algo;
    fo.transform = t;
    fo.seed = seed;
    auto fit = Fit(calib, g, fo);
    if (!fit) return tl::unexpected<Status>(fit.error());
    spaces[key] = fit->space;
    return fit->space;
  };
  auto make_job = [&](std::string experiment, std::string variant, int rate, int decoders,
                      const std::string& policy, double tau,
                      std::shared_ptr<const SignatureSpace> space) {
    Job j;
    j.rec.model = g.name;
    j.rec.workload = cell.kind;
    j.rec.experiment = std::move(experiment);
    j.rec.variant = std::move(variant);
    j.rec.rate = rate;
    j.rec.prefill = a.prefill;
    j.rec.decoders = decoders;
    j.rec.policy = policy;
    j.rec.tau = policy == "eldr-plus" ? a.plus.tau : tau;  // the band the policy used
    j.rec.seed = seed;
    sim::SimOptions& so = j.options;
    so.cluster.prefill_workers = a.prefill;
    so.cluster.decode_workers = decoders;
    so.cost = prepared->cost;
    so.policy.name = policy;
    so.policy.tau = tau;
    so.policy.plus = a.plus;
    so.policy.space = std::move(space);
    so.policy.label_shares = prepared->mix;
    so.seed = seed;
    so.max_requests = static_cast<int64_t>(rate * a.duration);
    so.time_scale = static_cast<double>(top) / rate;
    return j;
  };
  auto main_space = space_for(ClusterAlgo::kBalanced, SignatureTransform::kCountIdf, a.decode);
  if (!main_space) return main_space.error();
  std::vector<Job> jobs;
  for (int rate : kRates) {
    for (std::string_view p : PolicyNames())
      jobs.push_back(make_job("main", "", rate, a.decode, std::string(p), a.tau, *main_space));
    for (double tau : kExtraTaus) {
      jobs.push_back(
          make_job("main", fmt::format("tau={}", tau), rate, a.decode, "eldr", tau, *main_space));
    }
  }
  // Ablations at 60 qps, each against its own round-robin run (the ELDR paper). A tau the main
  // experiment already ran at 60 qps is that run's result (the simulation is deterministic).
  for (double tau : {0.0, 0.1, 0.2, 0.3}) {
    Job j =
        make_job("tau", fmt::format("{}", tau), kAblationRate, a.decode, "eldr", tau, *main_space);
    for (size_t i = 0; i < jobs.size(); ++i) {
      const SimRecord& r = jobs[i].rec;
      if (r.experiment == "main" && r.policy == "eldr" && r.rate == kAblationRate && r.tau == tau) {
        j.same_as = static_cast<int>(i);
        break;
      }
    }
    jobs.push_back(std::move(j));
  }
  auto plain = space_for(ClusterAlgo::kPlain, SignatureTransform::kCountIdf, a.decode);
  if (!plain) return plain.error();
  jobs.push_back(make_job("balance", "plain", kAblationRate, a.decode, "eldr", a.tau, *plain));
  for (auto t : {SignatureTransform::kCount, SignatureTransform::kBinary}) {
    auto sp = space_for(ClusterAlgo::kBalanced, t, a.decode);
    if (!sp) return sp.error();
    jobs.push_back(make_job("transform", std::string(TransformName(t)), kAblationRate, a.decode,
                            "eldr", a.tau, *sp));
  }
  if (std::string(cell.model) == "qwen3-30b-a3b" && std::string(cell.kind) == "language") {
    for (int d : {8, 24}) {  // 8P8D and 8P24D; 8P16D is the main run
      auto sp = space_for(ClusterAlgo::kBalanced, SignatureTransform::kCountIdf, d);
      if (!sp) return sp.error();
      jobs.push_back(
          make_job("pool", fmt::format("{}", d), kAblationRate, d, "rr", a.tau, nullptr));
      jobs.push_back(make_job("pool", fmt::format("{}", d), kAblationRate, d, "eldr", a.tau, *sp));
    }
  }
  if (Status s = RunJobs(*w, jobs, a.threads, progress, stage); !s.ok()) return s;

  // Main table: per rate, the change against the best load balancer at that rate and seed.
  std::map<std::pair<int, std::string>, const sim::SimSummary*> main;
  for (const auto& j : jobs) {
    if (j.rec.experiment == "main")
      main[{j.rec.rate, MainKey(j.rec.policy, j.rec.variant)}] = &j.rec.summary;
  }
  auto get = [&](int rate, const std::string& key) -> const sim::SimSummary* {
    auto it = main.find({rate, key});
    return it == main.end() ? nullptr : it->second;
  };
  std::array<double, kColumnCount> c50{}, c99{};
  std::array<double, kLocalityCount> step{}, request{};
  const double n = static_cast<double>(kRates.size());
  for (int rate : kRates) {
    double b50 = INFINITY, b99 = INFINITY;
    const sim::SimSummary* best = nullptr;
    for (std::string_view lb : LoadBalancingPolicyNames()) {
      const sim::SimSummary* s = get(rate, std::string(lb));
      if (s == nullptr) return Internal("matrix: no {} run at {} qps", lb, rate);
      if (best == nullptr || s->tpot_p50 < best->tpot_p50) best = s;
      b50 = std::min(b50, s->tpot_p50);
      b99 = std::min(b99, s->tpot_p99);
    }
    for (size_t c = 0; c < kColumnCount; ++c) {
      const sim::SimSummary* s = get(rate, MainKey(kColumns[c].policy, kColumns[c].variant));
      if (s == nullptr) return Internal("matrix: no {} run at {} qps", kColumns[c].header, rate);
      c50[c] += Pct(s->tpot_p50, b50) / n;
      c99[c] += Pct(s->tpot_p99, b99) / n;
    }
    for (size_t l = 0; l < kLocalityCount; ++l) {
      const sim::SimSummary* s = l == 0 ? best : get(rate, kLocality[l]);
      step[l] += s->mean_distinct / n;
      request[l] += s->request_distinct / n;
    }
  }
  for (size_t c = 0; c < kColumnCount; ++c) {
    fig.vs_lb[c].p50.push_back(c50[c]);
    fig.vs_lb[c].p99.push_back(c99[c]);
  }
  for (size_t l = 0; l < kLocalityCount; ++l) {
    fig.step[l].push_back(step[l]);
    fig.request[l].push_back(request[l]);
  }
  fig.share_eldr.push_back(get(kAblationRate, "eldr")->max_decoder_share);
  fig.share_plus.push_back(get(kAblationRate, "eldr-plus")->max_decoder_share);

  // Ablations: against this seed's round-robin at 60 qps; pools against RR on the same pool.
  const sim::SimSummary& rr60 = *get(kAblationRate, "rr");
  auto add_ablation = [&](const std::string& label, const sim::SimSummary& s,
                          const sim::SimSummary& base) {
    auto [it, inserted] = fig.ablations.try_emplace(label);
    if (inserted) fig.ablation_order.push_back(label);
    it->second.p50.push_back(Pct(s.tpot_p50, base.tpot_p50));
    it->second.p99.push_back(Pct(s.tpot_p99, base.tpot_p99));
  };
  for (const auto& j : jobs) {
    if (j.rec.experiment == "main" || j.rec.experiment == "pool") continue;
    add_ablation(fmt::format("{}={}", j.rec.experiment, j.rec.variant), j.rec.summary, rr60);
  }
  for (size_t i = 0; i + 1 < jobs.size(); ++i) {
    if (jobs[i].rec.experiment == "pool" && jobs[i].rec.policy == "rr") {
      add_ablation(fmt::format("pool=8P{}D", jobs[i].rec.decoders), jobs[i + 1].rec.summary,
                   jobs[i].rec.summary);
    }
  }
  for (auto& j : jobs) records->push_back(std::move(j.rec));
  return Status::Ok();
}

// The expert-parallel section's figures per rate, one value per seed.
struct EpFigures {
  std::vector<int> rates;
  std::vector<Change> per_cluster, contiguous;  // eldr vs RR, by rate
  std::vector<std::vector<double>> rr_p50;      // ms, by rate
};

// Qwen3-235B-A22B with expert parallelism (the ELDR paper): 2P8D, each instance TP=4/EP=4,
// language workload, 24-56 qps, against RR. No 235B latencies are published: its cost model is
// Qwen3-30B-A3B's calibration scaled (ScaleCost), an assumption reported with the result.
Status RunEpSeed(const SimulateArgs& a, uint64_t seed, std::string_view stage, Progress& progress,
                 EpFigures& fig, std::vector<SimRecord>* records) {
  const ModelGeometry g = *FindModel("qwen3-235b-a22b");
  const std::vector<int>& ep_rates = fig.rates;
  const int decoders = 8, ranks = 4;
  sim::WorkloadOptions wo;
  wo.kind = "language";
  wo.rate_qps = ep_rates.back();
  wo.requests = static_cast<int>(ep_rates.back() * a.duration);
  wo.calibration = a.calibration;
  wo.seed = seed;
  progress.Update(fmt::format("{}: workload", stage), 0);
  auto w = sim::MakeSyntheticWorkload(g, wo);
  if (!w) return w.error();
  auto prepared = PrepareCell(g, *w, seed);  // borrows Qwen3-30B-A3B's calibration
  if (!prepared) return prepared.error();
  const std::vector<CalibrationRequest>& calib = prepared->calib;
  FitOptions fo;
  fo.k = decoders;
  fo.seed = seed;
  auto fit = Fit(calib, g, fo);
  if (!fit) return fit.error();
  // Each cluster's expected decode activation places its hot experts on different ranks.
  std::vector<ExpertCounts> act(decoders, ExpertCounts(g.moe_layers, g.experts));
  std::vector<float> scores(decoders);
  for (const auto& r : calib) {
    if (!fit->space->Score(r.prefill, scores).ok()) continue;
    const int k = static_cast<int>(std::max_element(scores.begin(), scores.end()) - scores.begin());
    (void)act[k].Add(r.decode);
  }
  std::vector<std::vector<uint64_t>> balanced;
  for (const auto& c : act) balanced.push_back(sim::BalancedPlacement(g, ranks, c));
  std::vector<Job> jobs;
  const std::pair<const char*, const char*> variants[] = {
      {"rr", "contiguous"}, {"eldr", "contiguous"}, {"eldr", "per-cluster"}};
  for (int rate : ep_rates) {
    for (const auto& [policy, variant] : variants) {
      Job j;
      j.rec.model = g.name;
      j.rec.workload = "language";
      j.rec.experiment = "ep";
      j.rec.variant = variant;
      j.rec.rate = rate;
      j.rec.prefill = 2;
      j.rec.decoders = decoders;
      j.rec.policy = policy;
      j.rec.tau = a.tau;
      j.rec.seed = seed;
      j.options.cluster.prefill_workers = 2;
      j.options.cluster.decode_workers = decoders;
      j.options.cost = prepared->cost;
      j.options.policy.name = policy;
      j.options.policy.tau = a.tau;
      j.options.policy.plus = a.plus;
      j.options.policy.space = fit->space;
      j.options.seed = seed;
      j.options.max_requests = static_cast<int64_t>(rate * a.duration);
      j.options.time_scale = static_cast<double>(ep_rates.back()) / rate;
      j.options.ep_ranks = ranks;
      if (std::string(variant) == "per-cluster") j.options.placement = balanced;
      jobs.push_back(std::move(j));
    }
  }
  if (Status s = RunJobs(*w, jobs, a.threads, progress, stage); !s.ok()) return s;
  for (size_t r = 0; r < ep_rates.size(); ++r) {
    const sim::SimSummary& rr = jobs[3 * r].rec.summary;
    const sim::SimSummary& contiguous = jobs[3 * r + 1].rec.summary;
    const sim::SimSummary& per_cluster = jobs[3 * r + 2].rec.summary;
    fig.per_cluster[r].p50.push_back(Pct(per_cluster.tpot_p50, rr.tpot_p50));
    fig.per_cluster[r].p99.push_back(Pct(per_cluster.tpot_p99, rr.tpot_p99));
    fig.contiguous[r].p50.push_back(Pct(contiguous.tpot_p50, rr.tpot_p50));
    fig.contiguous[r].p99.push_back(Pct(contiguous.tpot_p99, rr.tpot_p99));
    fig.rr_p50[r].push_back(rr.tpot_p50);
  }
  for (auto& j : jobs) records->push_back(std::move(j.rec));
  return Status::Ok();
}

// A share as "9.1% [8.7, 9.5]"; "9.1%" for one seed.
std::string Percent(const Spread& s) {
  if (s.n <= 1) return fmt::format("{:.1f}%", 100 * s.mean);
  return fmt::format("{:.1f}% [{:.1f}, {:.1f}]", 100 * s.mean, 100 * s.lo, 100 * s.hi);
}

std::string_view TrimRight(std::string_view s) {
  while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
  return s;
}

}  // namespace

Status RunMatrix(const SimulateArgs& a, std::vector<SimRecord>* records) {
  using Clock = std::chrono::steady_clock;
  const auto t_start = Clock::now();
  if (a.seeds < 1) return InvalidArgument("--seeds must be >= 1, got {}", a.seeds);
  if (!(a.duration > 0)) return InvalidArgument("duration must be > 0");
  const auto names = PolicyNames();
  for (std::string_view p : {"domain", "eldr", "eldr-plus"}) {
    if (std::find(names.begin(), names.end(), p) == names.end())
      return Internal("matrix: policy {} is not built in", p);
  }
  Progress progress(true);
  std::vector<CellFigures> cells;
  for (const auto& cell : kPaper) {
    auto g = FindModel(cell.model);
    if (!g) return g.error();
    CellFigures fig;
    fig.model = g->display_name;
    fig.kind = cell.kind;
    fig.experts = g->experts;
    fig.decoders = a.decode;
    fig.paper50 = -cell.p50;
    fig.paper99 = -cell.p99;
    for (int i = 0; i < a.seeds; ++i) {
      const std::string stage = fmt::format("{} {} seed {}/{}", g->name, cell.kind, i + 1, a.seeds);
      if (Status s = RunCellSeed(a, cell, *g, a.seed + i, stage, progress, fig, records); !s.ok())
        return s.WithContext(stage);
    }
    cells.push_back(std::move(fig));
  }
  EpFigures ep;
  ep.rates = {24, 40, 56};
  ep.per_cluster.resize(ep.rates.size());
  ep.contiguous.resize(ep.rates.size());
  ep.rr_p50.resize(ep.rates.size());
  for (int i = 0; i < a.seeds; ++i) {
    const std::string stage = fmt::format("qwen3-235b-a22b EP seed {}/{}", i + 1, a.seeds);
    if (Status s = RunEpSeed(a, a.seed + i, stage, progress, ep, records); !s.ok())
      return s.WithContext(stage);
  }

  const std::string seeds = a.seeds == 1 ? fmt::format("seed {}", a.seed)
                                         : fmt::format("seeds {}-{}; mean [min, max] over seeds",
                                                       a.seed, a.seed + a.seeds - 1);
  fmt::print(
      "Main table: 8P{}D, {} s per rate, rates 20-100 qps, {}. Change in TPOT against the best "
      "load balancer at each rate and seed, mean over rates. eldr: tau = {}; eldr-plus: tau = {}, "
      "slack = {}{}; paper: the ELDR paper's eldr.\n",
      a.decode, a.duration, seeds, a.tau, a.plus.tau, a.plus.slack,
      a.plus.sqrt_slack > 0 ? fmt::format(", sqrt slack = {}", a.plus.sqrt_slack) : "");
  for (int q : {50, 99}) {
    std::string head =
        fmt::format("{:<16} {:<9} {:<21} {:<7}", "model", "workload", "eldr", "paper");
    for (size_t c = 1; c < kColumnCount; ++c) head += fmt::format(" {:<21}", kColumns[c].header);
    fmt::print("\nTPOT P{}\n{}\n", q, TrimRight(head));
    for (const auto& f : cells) {
      auto col = [&](size_t c) {
        return PctSpread(SpreadOf(q == 50 ? f.vs_lb[c].p50 : f.vs_lb[c].p99));
      };
      std::string line = fmt::format("{:<16} {:<9} {:<21} {:<7}", f.model, f.kind, col(0),
                                     fmt::format("{:+.1f}%", q == 50 ? f.paper50 : f.paper99));
      for (size_t c = 1; c < kColumnCount; ++c) line += fmt::format(" {:<21}", col(c));
      fmt::print("{}\n", TrimRight(line));
    }
  }
  fmt::print(
      "\nExpert locality: distinct experts per MoE layer (of E), per decode step | per request "
      "(over the steps it took part in), mean over rates and seeds; best LB = the lowest-P50 "
      "load balancer at each rate and seed. Busiest decoder: its share of the requests at {} qps "
      "(fair: 1/{} = {:.1f}%).\n",
      kAblationRate, a.decode, 100.0 / a.decode);
  fmt::print("{:<16} {:<9} {:>4}", "model", "workload", "E");
  for (const char* l : kLocality) fmt::print("   {:<13}", l);
  fmt::print("   {:<21} {}\n", "busiest: eldr", "busiest: eldr-plus");
  for (const auto& f : cells) {
    fmt::print("{:<16} {:<9} {:>4}", f.model, f.kind, f.experts);
    for (size_t l = 0; l < kLocalityCount; ++l) {
      fmt::print("   {:<13}", fmt::format("{:.1f} | {:.1f}", SpreadOf(f.step[l]).mean,
                                          SpreadOf(f.request[l]).mean));
    }
    fmt::print("   {:<21} {}\n", Percent(SpreadOf(f.share_eldr)), Percent(SpreadOf(f.share_plus)));
  }
  fmt::print(
      "\nAblations at {} qps: change in TPOT against round-robin at the same seed (pools: eldr "
      "against RR on the same pool); {}.\n",
      kAblationRate, seeds);
  for (const auto& f : cells) {
    fmt::print("{} {}\n", f.model, f.kind);
    for (const auto& label : f.ablation_order)
      fmt::print("  {:<18} {}\n", label, f.ablations.find(label)->second.Format());
  }
  fmt::print(
      "\nQwen3-235B-A22B, 2P8D, EP=4 per decoder, language (cost model: Qwen3-30B-A3B's scaled; "
      "an assumption); {}. Change in TPOT vs RR at the same seed:\n",
      seeds);
  for (size_t r = 0; r < ep.rates.size(); ++r) {
    fmt::print("  {} qps  ELDR, per-cluster expert placement: {}\n", ep.rates[r],
               ep.per_cluster[r].Format());
    fmt::print("          ELDR, default placement:            {}   (RR P50 {} ms)\n",
               ep.contiguous[r].Format(), ValueSpread(SpreadOf(ep.rr_p50[r]), 1));
  }
  fmt::print("  (paper: median -2.7 to -4.3%, tail -0.6 to -2.0%)\n");
  fmt::print(stderr, "eldr simulate --matrix paper: done in {:.0f} s\n",
             std::chrono::duration<double>(Clock::now() - t_start).count());
  return Status::Ok();
}

}  // namespace eldr::cli
