#include "eldr/sim/capture_workload.h"

#include <algorithm>
#include <map>
#include <numeric>

#include "eldr/rng.h"

namespace eldr::sim {

Status CaptureReplayOptions::Validate() const {
  if (!(calibration_fraction > 0 && calibration_fraction < 1)) {
    return InvalidArgument("calibration_fraction must be in (0, 1), got {}", calibration_fraction);
  }
  if (token_patterns < 1 || token_patterns > 1024) {
    return InvalidArgument("token_patterns must be in [1, 1024], got {}", token_patterns);
  }
  if (!(smoothing >= 0) || !std::isfinite(smoothing)) {
    return InvalidArgument("smoothing must be finite and >= 0, got {}", smoothing);
  }
  return Status::Ok();
}

namespace {

// Sets top_k distinct experts of one layer in `bits`, drawn without replacement with
// probability proportional to `weight` (a copy: drawn entries are zeroed).
void DrawLayer(std::vector<double> weight, int top_k, Rng& rng, uint64_t* bits) {
  double total = std::accumulate(weight.begin(), weight.end(), 0.0);
  for (int k = 0; k < top_k && total > 0; ++k) {
    double u = rng.UniformDouble() * total;
    size_t e = 0;
    for (; e + 1 < weight.size(); ++e) {
      if (u < weight[e]) break;
      u -= weight[e];
    }
    while (weight[e] == 0) e = (e + 1) % weight.size();  // rounding at the end of the range
    bits[e / 64] |= uint64_t{1} << (e % 64);
    total -= weight[e];
    weight[e] = 0;
  }
}

}  // namespace

Result<Workload> MakeCaptureWorkload(const ModelGeometry& g,
                                     std::span<const CalibrationRequest> requests,
                                     std::span<const CaptureMeta> meta,
                                     const CaptureReplayOptions& o, CaptureReplayStats* stats) {
  CaptureReplayStats local;
  CaptureReplayStats& st = stats != nullptr ? *stats : local;
  st = {};
  ELDR_RETURN_IF_ERROR(o.Validate());
  ELDR_RETURN_IF_ERROR(g.Validate());
  if (requests.size() != meta.size()) {
    return InvalidArgument("{} requests but {} capture records", requests.size(), meta.size());
  }
  const int L = g.moe_layers, E = g.experts;
  st.records = static_cast<int>(requests.size());
  std::vector<size_t> usable;
  for (size_t i = 0; i < requests.size(); ++i) {
    const auto& m = meta[i];
    const auto& r = requests[i];
    if (r.prefill.layers() != L || r.prefill.experts() != E ||
        (!r.decode.empty() && (r.decode.layers() != L || r.decode.experts() != E))) {
      return InvalidArgument("record {} ({}): counts are not shaped [{}][{}] for {}", i, r.id, L, E,
                             g.display_name);
    }
    if (m.arrival_us < 0 || m.prompt_tokens < 0 || m.output_tokens < 0) {
      ++st.missing_fields;
      continue;
    }
    if (m.output_tokens == 0) {
      ++st.no_output;
      continue;
    }
    usable.push_back(i);
    if (!r.decode.empty() && r.decode.Total() > 0) ++st.with_decode;
  }
  st.usable = static_cast<int>(usable.size());
  if (usable.size() < 4) {
    return InvalidArgument(
        "only {} of {} records can be replayed (need 4: {} lack arrival_us, prompt_tokens or "
        "output_tokens, {} have no output tokens)",
        usable.size(), requests.size(), st.missing_fields, st.no_output);
  }
  std::stable_sort(usable.begin(), usable.end(),
                   [&](size_t a, size_t b) { return meta[a].arrival_us < meta[b].arrival_us; });
  const int n = static_cast<int>(usable.size());
  const int n_cal = std::clamp(static_cast<int>(std::lround(o.calibration_fraction * n)), 2, n - 2);
  st.calibrating = n_cal;
  st.evaluated = n - n_cal;

  Workload w;
  w.geometry = g;
  w.kind = "capture";
  w.words = (E + 63) / 64;
  w.token_patterns = o.token_patterns;
  std::map<std::string, int> label_index;
  for (size_t i : usable) {
    label_index.emplace(requests[i].label.empty() ? "(none)" : requests[i].label, 0);
  }
  for (auto& [name, idx] : label_index) {
    idx = static_cast<int>(w.labels.size());
    w.labels.push_back(name);
  }
  w.label_shares.assign(w.labels.size(), 0.0);
  Rng rng(o.seed ^ 0xC4A7u);
  const int64_t t0 = meta[usable[n_cal]].arrival_us;
  std::vector<double> weight(E);
  for (int j = 0; j < n; ++j) {
    const size_t i = usable[j];
    const CalibrationRequest& cr = requests[i];
    WorkloadRequest r;
    r.id = j < n_cal ? j : j - n_cal;  // evaluated requests are numbered 0..n-1 (simulator.h)
    r.label = label_index.at(cr.label.empty() ? "(none)" : cr.label);
    r.prompt_tokens = static_cast<int>(std::min<int64_t>(meta[i].prompt_tokens, 1 << 24));
    r.output_tokens = static_cast<int>(std::min<int64_t>(meta[i].output_tokens, 1 << 24));
    r.prefill = cr.prefill;
    if (j < n_cal) {
      r.decode = cr.decode;  // calibration: what fit sees (may be empty)
      w.label_shares[r.label] += 1.0 / n_cal;
      w.calibration.push_back(std::move(r));
      continue;
    }
    r.arrival_us = meta[i].arrival_us - t0;
    const ExpertCounts& src = !cr.decode.empty() && cr.decode.Total() > 0 ? cr.decode : cr.prefill;
    r.bits.assign(static_cast<size_t>(w.token_patterns) * L * w.words, 0);
    for (int l = 0; l < L; ++l) {
      const auto row = src.layer(l);
      double sum = 0;
      for (uint32_t c : row) sum += c;
      const double floor = std::max(o.smoothing * sum / E, 1e-9);
      for (int e = 0; e < E; ++e) weight[e] = row[e] + floor;
      for (int pat = 0; pat < w.token_patterns; ++pat) {
        DrawLayer(weight, g.top_k, rng,
                  r.bits.data() + (static_cast<size_t>(pat) * L + l) * w.words);
      }
    }
    w.requests.push_back(std::move(r));
  }
  st.span_s = static_cast<double>(w.requests.back().arrival_us) * 1e-6;
  st.rate_qps = st.span_s > 0 ? st.evaluated / st.span_s : 0;
  return w;
}

}  // namespace eldr::sim
