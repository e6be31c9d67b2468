// -----------------------------------------------------------------------------
// File: sim/workload.h
// -----------------------------------------------------------------------------
// Synthetic, seeded MoE routing workloads for the simulator: requests with arrival times, prompt
// lengths, a domain label, the prompt's expert counts, and the expert picks of their decode
// tokens — drawn from a generative model with per-layer expert popularity, per-domain and
// per-request affinities, token-level noise and a decode-phase drift.
//
// Decode picks are exact per token (k distinct experts per layer), stored as bitsets so that the
// simulator computes the distinct experts of a batch exactly. To keep generation fast, each
// request owns `token_patterns` distinct decode-token pick sets and its t-th decode token uses
// pattern t mod token_patterns. Prompt counts are drawn per (layer, expert) around the prompt's
// expected inclusion counts (normal approximation to the sum of per-token inclusions).
//
// Thread-safety: a Workload is immutable after creation; share it freely.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "eldr/expert_counts.h"
#include "eldr/geometry.h"
#include "eldr/status.h"

namespace eldr::sim {

struct WorkloadOptions {
  std::string kind = "task";  // "task" (4 domains) or "language" (WildChat-like skew)
  int requests = 7200;        // evaluated requests
  int calibration = 1000;     // disjoint calibration requests (no arrival times)
  double rate_qps = 60;       // Poisson arrivals
  int output_tokens = 512;    // every request decodes exactly this many (ignore_eos)
  int token_patterns = 16;    // distinct decode-token pick sets per request
  int min_prompt = 16, max_prompt = 1024;
  double mean_prompt = 300;  // log-normal prompt lengths, clamped to [min, max]
  uint64_t seed = 1;
  // Generative model (logit scale). Defaults are per workload kind; see docs/calibration.md.
  double popularity_sigma = -1;  // per-layer expert popularity spread (<0: kind default)
  double domain_boost = -1;      // logit boost of a domain's preferred experts
  double subdomain_boost = -1;   // logit boost of a sub-domain's (source/topic) experts
  double request_boost = -1;     // logit boost of a request's own preferred experts
  double drift_sigma = -1;       // decode-phase logit drift of each request
  double domain_drift = -1;      // decode-phase logit drift shared by a domain
  // A domain mix that changes over the run, in [0, 1] (0: the fixed mix). Evaluated request i of
  // n draws its label from DriftedShares(label_shares, mix_drift, i / (n - 1)): the first label
  // (legal for task, en for language) grows linearly from its calibrated share s0 to
  // s0 + mix_drift * (1 - s0) at the last arrival, the others shrink in proportion. Calibration
  // requests keep the calibrated mix, so a space fitted on them is stale by the end of the run.
  // At 0 the workload is exactly the one without the option.
  double mix_drift = 0;
  Status Validate() const;
};

struct WorkloadRequest {
  int id = 0;
  int64_t arrival_us = 0;
  int prompt_tokens = 0;
  int output_tokens = 0;
  int label = 0;               // index into Workload::labels
  ExpertCounts prefill;        // counts over the prompt
  ExpertCounts decode;         // whole-output decode counts: calibration requests only (empty
                               // for evaluated requests, which carry per-token picks in `bits`)
  std::vector<uint64_t> bits;  // [token_patterns][L][words]: decode picks as bitsets
};

struct Workload {
  ModelGeometry geometry;
  std::string kind;
  std::vector<std::string> labels;
  std::vector<double> label_shares;  // the calibrated mix (the calibration requests' shares)
  int words = 0;                     // 64-bit words per layer bitset
  int token_patterns = 0;
  std::vector<WorkloadRequest> requests;     // by arrival
  std::vector<WorkloadRequest> calibration;  // disjoint, same distribution

  // Bitset of request r's decode token t at layer l.
  const uint64_t* Bits(const WorkloadRequest& r, int t, int l) const {
    return r.bits.data() +
           (static_cast<size_t>(t % token_patterns) * geometry.moe_layers + l) * words;
  }
};

Result<Workload> MakeSyntheticWorkload(const ModelGeometry& g, const WorkloadOptions& options);

// Research, a ceiling on what any prompt signature can buy: replaces every request's prompt
// counts with what it selects while decoding, so that a policy routing on `prefill` knows the
// experts the request will actually use. An evaluated request gets the counts of its first
// min(output_tokens, token_patterns) decode-token patterns (its decode tokens cycle through them,
// so these are its decode counts up to a factor); a calibration request gets its `decode`
// counts, so the fit partitions the same space. No router can know this before decoding; `eldr
// simulate --oracle-signatures` uses it to separate the signature's noise from the load bound's
// price (docs/results.md). Fails, leaving *w untouched, when a calibration request has no
// decode counts (a capture without them).
Status UseDecodeSignatures(Workload* w);

// The label mix at fraction `progress` in [0, 1] of a run drifting by `mix_drift` from `shares`
// (normalised, WorkloadOptions::mix_drift): shares[0] + progress * mix_drift * (1 - shares[0])
// for the first label, the others scaled by the same factor so that the mix sums to 1.
// REQUIRES: shares non-empty, normalised, shares[0] < 1 unless mix_drift * progress == 0.
std::vector<double> DriftedShares(const std::vector<double>& shares, double mix_drift,
                                  double progress);

// Statistics of a workload, the ones the paper reports (the ELDR paper, arXiv 2607.00466).
struct WorkloadStats {
  double prefill_decode_correlation = 0;  // Pearson, per expert (pooled), normalised activations
  double same_domain_reduction = 0;       // 1 - distinct(same-domain batch)/distinct(mixed)
  double hot_expert_ratio = 0;            // mean over layers of max/mean decode load
  int batch = 0;
};
// Measured on the calibration requests. REQUIRES: w.calibration non-empty (else all zeros).
WorkloadStats MeasureWorkload(const Workload& w, int batch = 32, uint64_t seed = 7);

// Mean distinct experts per MoE layer of one decode step of `batch` requests drawn at random
// from the calibration set (mixed domains, as load balancing forms them).
double MeanMixedDistinct(const Workload& w, int batch, uint64_t seed = 7, int trials = 200);

}  // namespace eldr::sim
