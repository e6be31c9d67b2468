// -----------------------------------------------------------------------------
// File: occupancy.h
// -----------------------------------------------------------------------------
// ExpertOccupancy: per decoder, the predicted probability that each (layer, expert) stays idle in
// a decode step of the requests in flight on it, from their prompts' expert counts. A request's
// per-token activation is p(l, e) = top_k * c(l, e) / sum_e c(l, e) (clamped below 1); a decoder's
// idle probability is the product of (1 - p) over its in-flight requests. What a request would
// add to a decoder's step is then sum p * idle: the expected number of experts it brings that no
// in-flight request there is predicted to select. Used by eldr-plus's marginal-cost variant
// (docs/results.md).
//
// Thread-safety: not thread-safe; the owner serialises Add/Remove with readers.
#pragma once

#include <span>
#include <vector>

#include "eldr/expert_counts.h"

namespace eldr {

class ExpertOccupancy {
 public:
  ExpertOccupancy(int decoders, int layers, int experts, int top_k);

  // A request's per-token activation probabilities (size layers * experts). False when the
  // counts have another shape or no picks.
  bool Activation(const ExpertCounts& counts, std::vector<float>* p) const;
  void Add(int decoder, std::span<const float> p);
  void Remove(int decoder, std::span<const float> p);
  // Expected experts `p` adds to `decoder`'s step, summed over layers.
  double Added(int decoder, std::span<const float> p) const;
  // Expected distinct experts of `decoder`'s step, summed over layers.
  double ExpectedDistinct(int decoder) const;
  int decoders() const { return decoders_; }

 private:
  int decoders_, layers_, experts_, top_k_;
  std::vector<double> idle_;  // [decoders][layers * experts]
};

}  // namespace eldr
