#include <algorithm>

#include "commands.h"
#include "eldr/fit.h"

namespace eldr::cli {

namespace {

// Models without published latencies but with a close published relative borrow its calibration
// (docs/calibration.md, docs/results.md): same expert architecture, non-MoE work scaled by layers,
// per-request KV work divided by the tensor-parallel degree. Any other model gets DeriveCost.
struct Donor {
  const char* model;
  const char* donor;
  int tp;
  const char* note;
};
constexpr Donor kDonors[] = {
    {"gpt-oss-20b", "gpt-oss-120b", 1,
     "cost model: GPT-OSS-120B's calibration scaled to GPT-OSS-20B (same expert shape; t0, t_tok "
     "and prefill x 24/36 layers) - an assumption, no published GPT-OSS-20B latencies exist"},
    {"qwen3-235b-a22b", "qwen3-30b-a3b", 4,
     "cost model: Qwen3-30B-A3B's calibration scaled to Qwen3-235B-A22B at TP=4 (a, b from its "
     "experts; t0 x 94/48 layers; t_tok x 94/48 / 4) - an assumption, no published latencies"},
};

}  // namespace

Spread SpreadOf(const std::vector<double>& values) {
  Spread s;
  if (values.empty()) return s;
  s.n = static_cast<int>(values.size());
  s.lo = *std::min_element(values.begin(), values.end());
  s.hi = *std::max_element(values.begin(), values.end());
  for (double v : values) s.mean += v / s.n;
  return s;
}

std::string PctSpread(const Spread& s) {
  if (s.n <= 1) return fmt::format("{:+.1f}%", s.mean);
  return fmt::format("{:+.1f}% [{:+.1f}, {:+.1f}]", s.mean, s.lo, s.hi);
}

std::string ValueSpread(const Spread& s, int decimals) {
  if (s.n <= 1) return fmt::format("{:.{}f}", s.mean, decimals);
  return fmt::format("{:.{}f} [{:.{}f}, {:.{}f}]", s.mean, decimals, s.lo, decimals, s.hi,
                     decimals);
}

Result<CellSetup> PrepareCell(const ModelGeometry& g, const sim::Workload& w, uint64_t seed,
                              const sim::HardwareProfile& hw) {
  CellSetup cell;
  ModelGeometry cost_model = g;
  int tp = 1;
  bool derived = false;  // no published figures and no donor entry: DeriveCost
  if (!sim::PublishedBaseline(g)) {
    const Donor* donor = std::find_if(std::begin(kDonors), std::end(kDonors),
                                      [&](const Donor& x) { return g.name == x.model; });
    derived = donor == std::end(kDonors);
    ELDR_ASSIGN_OR_RETURN(cost_model, FindModel(derived ? sim::kDerivationDonor : donor->donor));
    if (!derived) {
      tp = donor->tp;
      cell.cost_note = donor->note;
    }
  }
  ELDR_ASSIGN_OR_RETURN(const sim::Baseline baseline, sim::PublishedBaseline(cost_model));
  // D(B) comes from the cost model's own synthetic task workload: one set of hardware parameters
  // per model, whatever workload runs.
  Result<sim::Workload> task = sim::Workload{};
  const bool reuse = w.kind == "task" && cost_model.name == g.name;
  if (!reuse) {
    sim::WorkloadOptions to;
    to.kind = "task";
    to.requests = 1;
    to.seed = seed;
    task = sim::MakeSyntheticWorkload(cost_model, to);
    if (!task) return Error{task.error()};
  }
  const sim::Workload& cw = reuse ? w : *task;
  ELDR_ASSIGN_OR_RETURN(cell.calibration, sim::CalibrateCost(cost_model, baseline, [&](int b) {
                          return sim::MeanMixedDistinct(cw, b, seed);
                        }));
  const sim::CostParams& cal = cell.calibration.params;
  if (derived) {
    ELDR_ASSIGN_OR_RETURN(sim::DerivedCost derivation, sim::DeriveCost(g, hw, cal, cost_model));
    cell.cost = derivation.params;
    cell.cost_note = std::move(derivation.note);
  } else {
    cell.cost = cost_model.name == g.name ? cal : sim::ScaleCost(cal, cost_model, g);
    cell.cost.token_us /= tp;
    if (hw.name != sim::CalibrationHardware().name) {
      ELDR_ASSIGN_OR_RETURN(sim::DerivedCost moved,
                            sim::RescaleForHardware(cell.cost, g.display_name, hw));
      cell.cost = moved.params;
      cell.cost_note += (cell.cost_note.empty() ? "" : "\n") + moved.note;
    }
  }
  for (const auto& r : w.calibration)
    cell.calib.push_back({std::to_string(r.id), w.labels[r.label], r.prefill, r.decode});
  for (size_t i = 0; i < w.labels.size() && i < w.label_shares.size(); ++i)
    cell.mix.push_back({w.labels[i], w.label_shares[i]});
  return cell;
}

}  // namespace eldr::cli
