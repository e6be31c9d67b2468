#include <fmt/ranges.h>

#include <CLI/CLI.hpp>
#include <cmath>

#include "commands.h"
#include "eldr/calibration.h"
#include "eldr/fit.h"
#include "eldr/signature_space.h"

namespace eldr::cli {

void AddFitCommand(CLI::App& app, FitArgs& a) {
  auto* c = app.add_subcommand("fit",
                               "Fit a signature space (layer mask, IDF, centroids) from "
                               "calibration counts (docs/formats.md)");
  c->add_option("-i,--input", a.inputs,
                "Calibration JSON Lines, plain or gzip; several files (a capture and its rotated "
                "PATH.1, PATH.2, ...) are merged")
      ->required();
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
  c->add_option("--mask-from", a.mask_from,
                "Keep this signature space's layer mask (a refit on data without decode counts, "
                "such as a capture)");
  c->add_flag("-q,--quiet", a.quiet, "No progress or summary");
}

Status RunFit(const FitArgs& a) {
  // Checked here too (FitOptions::Validate has the same bounds) to name the options as typed.
  if (a.decoders < 1) return InvalidArgument("-k/--decoders must be >= 1, got {}", a.decoders);
  if (a.pairs < 10) return InvalidArgument("--pairs must be >= 10, got {}", a.pairs);
  if (a.max_iters < 1) return InvalidArgument("--max-iters must be >= 1, got {}", a.max_iters);
  if (a.all_layers && !a.mask_from.empty()) {
    return InvalidArgument("--all-layers and --mask-from both choose the layer mask: give one");
  }
  Result<ModelGeometry> geometry = ModelGeometry{};
  if (!a.model.empty()) {
    geometry = FindModel(a.model);
    if (!geometry) return geometry.error();
  }
  ELDR_ASSIGN_OR_RETURN(CalibrationInput in,
                        ReadCalibrationInputs(a.inputs, a.model.empty() ? nullptr : &*geometry));
  CalibrationSet* set = &in.set;
  if (a.model.empty()) geometry = set->geometry;
  std::vector<int> fixed_mask;
  if (!a.mask_from.empty()) {
    ELDR_ASSIGN_OR_RETURN(std::string sj, ReadFile(a.mask_from));
    auto prev = SignatureSpace::FromJson(sj, &*geometry);
    if (!prev) return Error{prev.error().WithContext(a.mask_from)};
    fixed_mask = (*prev)->spec().layer_mask;
  }

  FitOptions o;
  o.k = a.decoders;
  o.algo = a.algo == "km" ? ClusterAlgo::kPlain : ClusterAlgo::kBalanced;
  o.transform = *ParseTransform(a.transform);
  o.greedy_mask = !a.all_layers;
  o.fixed_mask = fixed_mask;
  o.rho_pairs = a.pairs;
  o.seed = a.seed;
  o.max_iters = a.max_iters;
  o.training_sha256 = in.sha256;  // the bytes read, so `sha256sum INPUT` matches
  Progress progress(!a.quiet);
  o.progress = [&](std::string_view stage, double f) { progress.Update(stage, f); };
  if (!a.quiet) {
    fmt::print(stderr, "eldr fit: {} requests of {} from {}\n", set->requests.size(),
               geometry->display_name, fmt::join(a.inputs, ", "));
    for (const auto& n : in.notes) fmt::print(stderr, "eldr fit: note: {}\n", n);
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
  if (!fixed_mask.empty()) {
    fmt::print("rho         not measured: the layer mask of {} is kept (--mask-from)\n",
               a.mask_from);
  } else if (std::isnan(r.peak_rho) && a.all_layers) {
    fmt::print("rho         not measured: every layer used (--all-layers)\n");
  } else if (std::isnan(r.peak_rho)) {
    fmt::print(
        "rho         n/a: the calibration data has no decode counts (a capture without them, the "
        "common case), so rho cannot be measured and every layer is used; --mask-from SPACE "
        "keeps a previous space's mask instead\n");
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
  // docs/formats.md: the ELDR artifact reads count_idf files, and count files only over every
  // layer; an operator moving the file there should learn it here, not from the artifact.
  if (o.transform == SignatureTransform::kBinary) {
    fmt::print("compat      eldr only: the ELDR artifact has no 'binary' variant\n");
  } else if (o.transform == SignatureTransform::kCount &&
             static_cast<int>(r.layer_mask.size()) < geometry->moe_layers) {
    fmt::print(
        "compat      eldr only: the ELDR artifact reads a 'count' space only over every layer "
        "(--all-layers)\n");
  }
  fmt::print("wrote       {}\n", a.output);
  return Status::Ok();
}

}  // namespace eldr::cli
