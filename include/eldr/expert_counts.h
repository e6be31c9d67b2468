// -----------------------------------------------------------------------------
// File: expert_counts.h
// -----------------------------------------------------------------------------
// ExpertCounts: the raw ELDR signal for one request, c(l, e) = how many tokens picked routed
// expert e in their top-k at MoE layer l (the ELDR paper, arXiv 2607.00466). Only discrete picks
// count, never gate scores. Counts are additive over token ranges, which the signature cache relies
// on.
//
// Thread-safety: a value type; concurrent const access is safe.
//
// Example:
//   ExpertCounts c(geometry.moe_layers, geometry.experts);
//   ELDR_RETURN_IF_ERROR(c.AddToken(picks));   // picks: L*top_k expert ids, layer-major
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "eldr/status.h"

namespace eldr {

class ExpertCounts {
 public:
  ExpertCounts() = default;
  ExpertCounts(int layers, int experts)
      : layers_(layers), experts_(experts), c_(static_cast<size_t>(layers) * experts, 0) {}

  int layers() const { return layers_; }
  int experts() const { return experts_; }
  bool empty() const { return c_.empty(); }
  uint32_t at(int layer, int expert) const { return c_[Index(layer, expert)]; }
  uint32_t& at(int layer, int expert) { return c_[Index(layer, expert)]; }
  std::span<const uint32_t> layer(int l) const {
    return {c_.data() + static_cast<size_t>(l) * experts_, static_cast<size_t>(experts_)};
  }
  // Flat layer-major table, size L*E.
  std::span<const uint32_t> data() const { return c_; }
  std::span<uint32_t> mutable_data() { return c_; }

  // Adds one token's picks: `picks` holds L groups of `top_k` expert ids, layer-major.
  // Fails (and changes nothing) on a wrong size, an id outside [0, E) or a repeated id within one
  // layer's top-k.
  Status AddToken(std::span<const int32_t> picks, int top_k);

  // this += other. REQUIRES: same shape (checked; InvalidArgument otherwise).
  Status Add(const ExpertCounts& other);
  // this -= other. FailedPrecondition (nothing changed) if any entry would go negative.
  Status Subtract(const ExpertCounts& other);

  // Sum of all entries (= tokens * L * top_k for complete tokens).
  uint64_t Total() const;
  void Clear() { std::fill(c_.begin(), c_.end(), 0u); }

  friend bool operator==(const ExpertCounts&, const ExpertCounts&) = default;

 private:
  size_t Index(int l, int e) const { return static_cast<size_t>(l) * experts_ + e; }
  int layers_ = 0;
  int experts_ = 0;
  std::vector<uint32_t> c_;
};

}  // namespace eldr
