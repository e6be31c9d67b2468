// -----------------------------------------------------------------------------
// File: server/shadow.h
// -----------------------------------------------------------------------------
// Shadow mode's estimate of the distinct experts a decode step loads (`policy: shadow`,
// docs/serve.md): the router routes by a load policy and, for every request, also computes the
// choice ELDR would have made; these types estimate, per decoder, the expected number of
// distinct experts per MoE layer in one decode step of the requests in flight there, under the
// real routing and under the shadow one, so the operator sees the predicted effect before
// switching.
//
// Model: request r's next token selects expert e at layer l with probability
// q_r(l, e) = min(q_max, top_k * c_r(l, e) / sum_e' c_r(l, e')) from its prompt counts c_r (the
// signature ELDR routes on), independently across requests, so a step of the in-flight set R
// loads E[D_l] = sum_e (1 - prod_{r in R} (1 - q_r(l, e))) distinct experts at layer l. Prompt
// counts are a proxy for decode picks (correlated, 0.70-0.92 in the ELDR paper), so the estimate
// is a prediction, comparable between the two routings rather than exact.
//
// Thread-safety: ShadowFootprint is a value. ExpertLoad is internally synchronised (a mutex per
// decoder; Add/Remove touch only a request's non-zero entries).
#pragma once

#include <cstdint>
#include <vector>

#include "eldr/expert_counts.h"
#include "eldr/mutex.h"

namespace eldr::server {

// A request's log(1 - q_r(l, e)) over its non-zero entries (sparse, layer-major index).
struct ShadowFootprint {
  std::vector<uint32_t> index;  // l * E + e
  std::vector<double> log1m_q;  // log(1 - q), < 0
  // From prompt counts; empty when the counts are all zero. REQUIRES: top_k >= 1.
  static ShadowFootprint FromCounts(const ExpertCounts& counts, int top_k, double q_max = 0.999);
};

// The in-flight requests of one decoder under one routing: the sum of their footprints.
class ExpertLoad {
 public:
  ExpertLoad(int layers, int experts);
  void Add(const ShadowFootprint& f) ELDR_EXCLUDES(mu_);
  // REQUIRES: f was added before. With no request left the sums are reset to exactly zero.
  void Remove(const ShadowFootprint& f) ELDR_EXCLUDES(mu_);
  // Expected distinct experts per MoE layer of one step of the requests in flight (0 if none).
  double ExpectedDistinct() const ELDR_EXCLUDES(mu_);
  int64_t requests() const ELDR_EXCLUDES(mu_);

 private:
  int layers_;
  mutable Mutex mu_;
  std::vector<double> sum_ ELDR_GUARDED_BY(mu_);  // sum of log(1 - q) per (l, e)
  int64_t n_ ELDR_GUARDED_BY(mu_) = 0;
};

}  // namespace eldr::server
