#include <CLI/CLI.hpp>
#include <cmath>

#include "commands.h"
#include "eldr/calibration.h"
#include "eldr/fit.h"
#include "eldr/sha256.h"

namespace eldr::cli {

void AddFitCommand(CLI::App& app, FitArgs& a) {
  auto* c = app.add_subcommand("fit",
                               "Fit a signature space (layer mask, IDF, centroids) from "
                               "calibration counts (docs/formats.md)");
  c->add_option("-i,--input", a.input, "Calibration JSONL file")->required();
  c->add_option("-o,--output", a.output, "Signature-space JSON to write")->required();
  c->add_option("-m,--model", a.model,
                "Model preset or a Hugging Face config.json (or its directory; default: the "
                "calibration file's header); see `eldr models`");
  c->add_option("-k,--decoders", a.decoders, "Decoders = centroids (K)")->capture_default_str();
  c->add_option("--algo", a.algo, "kmbal (balanced, ELDR) or km (plain, ablation)")
      ->check(CLI::IsMember({"kmbal", "km"}))
      ->capture_default_str();
  c->add_option("--transform", a.transform, "count_idf, count or binary")
      ->check(CLI::IsMember({"count_idf", "count", "binary"}))
      ->capture_default_str();
  c->add_option("--pairs", a.pairs, "Request pairs for rho")->capture_default_str();
  c->add_option("--seed", a.seed, "Seed for pairs and k-means++")->capture_default_str();
  c->add_option("--max-iters", a.max_iters, "k-means iterations at most")->capture_default_str();
  c->add_flag("--all-layers", a.all_layers, "Skip greedy layer selection; use every layer");
  c->add_flag("-q,--quiet", a.quiet, "No progress or summary");
}

Status RunFit(const FitArgs& a) {
  // Checked here too (FitOptions::Validate has the same bounds) to name the options as typed.
  if (a.decoders < 1) return InvalidArgument("-k/--decoders must be >= 1, got {}", a.decoders);
  if (a.pairs < 10) return InvalidArgument("--pairs must be >= 10, got {}", a.pairs);
  if (a.max_iters < 1) return InvalidArgument("--max-iters must be >= 1, got {}", a.max_iters);
  auto text = ReadFile(a.input);
  if (!text) return text.error();
  Result<ModelGeometry> geometry = ModelGeometry{};
  if (!a.model.empty()) {
    geometry = FindModel(a.model);
    if (!geometry) return geometry.error();
  }
  auto set = ParseCalibrationJsonl(*text, a.model.empty() ? nullptr : &*geometry);
  if (!set) return set.error().WithContext(a.input);
  if (a.model.empty()) geometry = FindModel(set->model);
  if (!geometry) return geometry.error();

  FitOptions o;
  o.k = a.decoders;
  o.algo = a.algo == "km" ? ClusterAlgo::kPlain : ClusterAlgo::kBalanced;
  o.transform = *ParseTransform(a.transform);
  o.greedy_mask = !a.all_layers;
  o.rho_pairs = a.pairs;
  o.seed = a.seed;
  o.max_iters = a.max_iters;
  o.training_sha256 = Sha256Hex(*text);  // the bytes read, so `sha256sum INPUT` matches
  Progress progress(!a.quiet);
  o.progress = [&](std::string_view stage, double f) { progress.Update(stage, f); };
  if (!a.quiet) {
    fmt::print(stderr, "eldr fit: {} requests of {} from {}\n", set->requests.size(),
               geometry->display_name, a.input);
  }
  auto fit = Fit(set->requests, *geometry, o);
  if (!fit) return fit.error();
  if (Status s = WriteFileAtomically(a.output, fit->space->ToJson()); !s.ok()) return s;
  if (a.quiet) return Status::Ok();
  const FitReport& r = fit->report;
  fmt::print("fitted      {} requests ({} skipped: no picks on the masked layers)\n", r.n,
             r.skipped);
  std::string mask;
  for (int l : r.layer_mask) mask += fmt::format("{}{}", mask.empty() ? "" : ",", l);
  fmt::print("layer mask  {} of {} layers: {}\n", r.layer_mask.size(), geometry->moe_layers, mask);
  if (std::isnan(r.peak_rho)) {
    fmt::print("rho         n/a (no decode counts in the calibration data)\n");
  } else {
    fmt::print("rho         peak {:.4f} at {} layers; all {} layers {:.4f}\n", r.peak_rho,
               r.layer_mask.size(), geometry->moe_layers, r.all_layers_rho);
  }
  std::string sizes;
  for (int s : r.cluster_sizes) sizes += fmt::format("{}{}", sizes.empty() ? "" : " ", s);
  fmt::print("clusters    K={} {} sizes [{}] (cap {}), {} iterations{}, mean cosine {:.4f}\n",
             a.decoders, a.algo, sizes, (r.n + a.decoders - 1) / a.decoders, r.iterations,
             r.converged ? "" : " (not converged)", r.objective);
  fmt::print("time        mask {:.2f} s, clustering {:.2f} s\n", r.seconds_mask, r.seconds_cluster);
  fmt::print("wrote       {}\n", a.output);
  return Status::Ok();
}

}  // namespace eldr::cli
