// -----------------------------------------------------------------------------
// File: sim/simulator.h
// -----------------------------------------------------------------------------
// Discrete-event simulation of an xPyD cluster, driving the very routing policies
// the proxy uses:
//   arrival -> prefill worker (prefix hash with a load bound; FCFS, one prefill at a time)
//   -> first token (TTFT ends here: prefill-first handoff, as in the ELDR artifact)
//   -> decode policy called with the request's prefill counts and live in-flight counts; the
//      request counts in flight on that decoder from this dispatch to its completion
//   -> KV transfer -> decoder admission (max batch, KV capacity; FIFO queue when full)
//   -> continuous batching: each step emits one token per batched request and lasts
//      CostParams::StepUs of the batch, whose distinct experts per layer are computed exactly
//      from every batched request's current decode-token picks (bitsets).
// With SimOptions::refit, eldr and eldr-plus follow the traffic with the eldr::Refit that
// `eldr serve` runs (refit.h): at fixed points of simulated time the decode policy is rebuilt on
// a space refitted to a window of recent requests' prompt counts.
// Times are integer microseconds, so runs are exactly reproducible for a seed and comparable
// with the reference stepper in tests/reference/.
//
// Thread-safety: Simulate is reentrant; runs with different options may go in parallel.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "eldr/policy.h"
#include "eldr/refit.h"
#include "eldr/sim/cost_model.h"
#include "eldr/sim/event_queue.h"
#include "eldr/sim/workload.h"
#include "eldr/status.h"

namespace eldr::sim {

struct ClusterOptions {
  int prefill_workers = 8;
  int decode_workers = 16;
  int max_batch = 256;                  // requests per decode step
  int64_t kv_capacity_tokens = 400000;  // per decoder: context tokens it can hold
  double prefill_load_bound = 1.25;     // keep the hash choice while load <= bound * mean
  Status Validate() const;
};

// Online refitting in simulated time (the wall clock is never read). At t = interval_us,
// 2 * interval_us, ... for as long as requests remain to be routed, eldr::Refit runs on the
// prompt counts (WorkloadRequest::prefill) of the requests already routed whose arrival lies in
// (t - window_us, t], at most the `max_window` latest arrivals: the requests whose counts a
// router has seen by then. A refit that succeeds replaces the policy's space (the policy is
// rebuilt with MakePolicy on it); one that fails (too few requests, a degenerate fit) keeps the
// current space. Only policies that route on a space (eldr, eldr-plus) are refitted; others run
// exactly as without it. Refits are deterministic: same workload and options, same refits.
struct SimRefitOptions {
  bool enabled = false;
  int64_t interval_us = 5'000'000;
  int64_t window_us = 10'000'000;
  int max_window = 2048;  // most requests per refit (the latest arrivals)
  RefitOptions fit;       // min_requests, iterations, algorithm, degeneracy bound
  // InvalidArgument unless interval_us, window_us >= 1, max_window >= fit.min_requests (a
  // smaller cap would refuse every refit) and fit is valid. Simulate checks it even when
  // `enabled` is false.
  Status Validate() const;
};

struct SimOptions {
  ClusterOptions cluster;
  CostParams cost;
  PolicyOptions policy;   // decoders is set from cluster.decode_workers
  uint64_t seed = 1;      // randomised policies
  int64_t warmup_us = 0;  // requests arriving earlier are simulated but not reported
  // Run a lower rate on the same workload: only the first `max_requests` requests (0 = all),
  // with arrival times multiplied by `time_scale` (>= 1 stretches arrivals: rate / time_scale).
  int64_t max_requests = 0;
  double time_scale = 1.0;
  // Expert parallelism inside each decoder: experts are spread over `ep_ranks` GPUs, each
  // streaming only its own experts' weights, so a layer costs its busiest rank:
  // a + b * max_r D(l, r). `placement[d]` is decoder d's expert->rank map as bitsets
  // [L][ep_ranks][words] (see ContiguousPlacement / BalancedPlacement); empty = contiguous.
  int ep_ranks = 1;
  std::vector<std::vector<uint64_t>> placement;
  SimRefitOptions refit;  // eldr, eldr-plus: online refitting (off by default)
};

// Expert e of every layer on rank e * ranks / E (the default layout).
std::vector<uint64_t> ContiguousPlacement(const ModelGeometry& g, int ranks);
// Per layer, experts sorted by `activation` (descending) and dealt to ranks in snake order
// (0..r-1, r-1..0, ...), so that each rank gets a similar share of the hot experts: a model of
// ELDR's per-cluster expert-rank permutation for EP (the ELDR paper; the exact algorithm is not
// published).
std::vector<uint64_t> BalancedPlacement(const ModelGeometry& g, int ranks,
                                        const ExpertCounts& activation);

struct RequestResult {
  int id = 0;
  int decoder = -1;
  int64_t arrival_us = 0, first_token_us = 0, finish_us = 0;
  int output_tokens = 0;
  // Distinct experts per MoE layer of the decode steps this request took part in, averaged over
  // those steps: what the request itself waited on (a per-step mean over-weights idle decoders'
  // small batches).
  double mean_distinct = 0;
  double TtftMs() const { return (first_token_us - arrival_us) / 1000.0; }
  // (last token - first token) / (output tokens - 1), in ms.
  double TpotMs() const {
    return output_tokens > 1 ? (finish_us - first_token_us) / 1000.0 / (output_tokens - 1) : 0;
  }
};

// One scheduled refit of a run.
struct SimRefit {
  int64_t time_us = 0;   // simulated time of the refit
  int window = 0;        // requests in its window
  bool swapped = false;  // the new space was taken; false: refused, the old space kept
  // Of a swap (zeros when refused): RefitReport's centroid movement, churn and mean best
  // cosines on the window, old space and new.
  double movement = 0, churn = 0, old_score = 0, new_score = 0;
  std::string refused;  // of a refusal: why (Refit's FailedPrecondition message)
};

struct SimResult {
  std::vector<RequestResult> requests;  // reported (post-warm-up) requests, by id
  int64_t steps = 0;
  double mean_distinct = 0;      // distinct experts per layer per step, mean over steps
  double mean_busiest_rank = 0;  // EP: distinct experts of the busiest rank per layer per step
  double mean_batch = 0;         // requests per step, mean over steps
  int64_t fallbacks = 0;         // policy fell back to load balancing
  int64_t peak_in_flight = 0;    // most requests dispatched to decoders and not finished at once
  int64_t end_us = 0;            // when the last request finished
  std::vector<int64_t> decoder_requests;  // requests served per decoder
  // SimOptions::refit: every scheduled refit in time order, and how many swapped / were refused.
  std::vector<SimRefit> refits;
  int64_t refits_swapped = 0, refits_failed = 0;
};

Result<SimResult> Simulate(const Workload& w, const SimOptions& options);
// The same on a given (empty) event queue; Simulate uses a HeapEventQueue. For tests.
Result<SimResult> SimulateWithQueue(const Workload& w, const SimOptions& options,
                                    EventQueue& queue);

// Summary of a run: percentiles over reported requests.
struct SimSummary {
  double tpot_p50 = 0, tpot_p99 = 0, ttft_p50 = 0;
  double mean_distinct = 0, mean_batch = 0;
  double request_distinct = 0;   // RequestResult::mean_distinct averaged over requests
  double max_decoder_share = 0;  // the busiest decoder's share of all requests (fair: 1/D)
  int64_t requests = 0;
};
SimSummary Summarize(const SimResult& r);

}  // namespace eldr::sim
