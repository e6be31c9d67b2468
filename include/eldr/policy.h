// -----------------------------------------------------------------------------
// File: policy.h
// -----------------------------------------------------------------------------
// Decode routing policies behind one interface. The same objects route in the proxy and in the
// simulator, so a simulated result is a result about the shipped code.
//
//   rr      round-robin over decoders
//   random  uniform (seeded)
//   jsq     fewest in-flight requests; ties broken uniformly at random
//   p2c     two distinct decoders sampled uniformly; the less loaded wins, a tie goes to the
//           first sampled
//   domain  oracle label pools (the ELDR paper, arXiv 2607.00466): labels with share >= 1/K get
//           floor(K*share) decoders, rarer labels share a "misc" pool (at least one decoder),
//           leftover decoders go by largest fractional part; JSQ with random ties inside a pool
//   eldr    locality band (the ELDR paper, arXiv 2607.00466): scores s_k = signature . centroid_k;
//           band = {k : s_k >= max - tau}; the decoder in the band with the fewest in-flight
//           requests, ties to the lowest index
//   eldr-plus  ELDR's locality under a load bound (docs/results.md, "eldr-plus"): only decoders
//           whose in-flight count with this request stays within
//           ceil((1 + slack) * (in flight + 1) / available) may take it (bounded loads,
//           Mirrokni et al. 2018); among them the band {k : s_k >= max - tau} (max over the
//           eligible) and the least loaded in it, ties to the better score. The busiest
//           decoder never exceeds (1 + slack) x the mean plus one.
//
// Missing inputs are normal, never errors: a policy given no usable signature (eldr, eldr-plus)
// or no known label (domain) falls back to jsq over the available decoders and says so in
// RouteDecision::fallback. Decoders marked unavailable in the ClusterView are never chosen;
// Unavailable is returned only when none is available.
//
// Thread-safety: a policy instance is NOT thread-safe (rr keeps a cursor; others use the caller's
// Rng). Create one per thread with MakePolicy; they share the immutable SignatureSpace.
//
// Example:
//   ELDR_ASSIGN_OR_RETURN(auto policy, MakePolicy(opts));
//   RouteRequest req{.counts = &counts};
//   ELDR_ASSIGN_OR_RETURN(RouteDecision d, policy->Route(req, view, rng));
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "eldr/expert_counts.h"
#include "eldr/rng.h"
#include "eldr/signature_space.h"
#include "eldr/status.h"

namespace eldr {

// What a policy may know about a request. Every field is optional.
struct RouteRequest {
  const ExpertCounts* counts = nullptr;   // prefill expert counts (observed or predicted)
  std::span<const float> signature = {};  // an already-embedded unit signature (wins over counts)
  std::string_view label = {};            // domain/language label (domain policy only)
};

// The live state a policy routes on.
struct ClusterView {
  std::span<const int64_t> in_flight;       // per decoder
  std::span<const uint8_t> available = {};  // per decoder, non-zero = may be chosen; empty = all
};

struct RouteDecision {
  int decoder = -1;
  bool fallback = false;  // the policy could not use its signal and balanced load instead
  int band_size = 0;      // eldr: decoders in the locality band (0 for other policies)
  float best_score = 0;   // eldr: best centroid cosine
};

class RoutingPolicy {
 public:
  virtual ~RoutingPolicy() = default;
  virtual std::string_view Name() const = 0;
  int decoders() const { return decoders_; }
  // Picks a decoder. The contract, enforced here for every policy: the view must have
  // decoders() entries (and a mask of the same size, or none), else InvalidArgument; the
  // decision's decoder is in [0, decoders()) and available, else Internal (a policy bug, never a
  // wrong pick); Unavailable only when no decoder is available. The same seed and inputs give
  // the same decision. No I/O, no locks, no allocation on the eldr/eldr-plus/jsq/p2c/rr/random
  // paths.
  Result<RouteDecision> Route(const RouteRequest& req, const ClusterView& view, Rng& rng);

 protected:
  explicit RoutingPolicy(int decoders) : decoders_(decoders) {}

 private:
  // The policy's choice. Called with a view already checked for shape.
  virtual Result<RouteDecision> Choose(const RouteRequest& req, const ClusterView& view,
                                       Rng& rng) = 0;
  int decoders_;
};

struct LabelShare {
  std::string label;
  double share = 0;
};

struct PolicyOptions {
  std::string name = "eldr";  // rr | random | jsq | p2c | domain | eldr | eldr-plus
  int decoders = 0;           // required, > 0
  double tau = 0.1;           // eldr: in [0, 2]
  // eldr: a band narrower than this is widened to the band_min best-scoring available decoders
  // (ties included). 1 = the paper's band; one revision of the authors' artifact used 2.
  int band_min = 1;
  // eldr-plus: its own band and load bound (its defaults are one configuration for every cell).
  struct Plus {
    double tau = 0.1;     // in [0, 2]
    double slack = 0.05;  // epsilon of the load bound: finite, >= 0
    // Research variant (docs/results.md): with sqrt_slack = c > 0 the room above the mean grows
    // like the natural spread of balanced counts, capped by slack: capacity =
    // ceil(m + min(slack * m, c * sqrt(m))), m the mean in flight per available decoder once this
    // request is placed. Finite, >= 0; 0 = off (capacity ceil((1 + slack) * m)).
    double sqrt_slack = 0;
    // Research variant (docs/results.md): tau as a fraction of the eligible decoders' score
    // spread (band = {s_k >= max - tau * (max - min)}) instead of an absolute cosine width.
    bool relative_band = false;
  } plus;
  std::shared_ptr<const SignatureSpace> space;  // eldr, eldr-plus: required, k() == decoders
  std::vector<LabelShare> label_shares;         // domain: calibration label mix (required)
  Status Validate() const;
};

// The names MakePolicy accepts, in display order.
std::span<const std::string_view> PolicyNames();
// The load-only baselines (rr, random, jsq, p2c): "the best load balancer" of every report is
// the best of these.
std::span<const std::string_view> LoadBalancingPolicyNames();
bool IsLoadBalancingPolicy(std::string_view name);
Result<std::unique_ptr<RoutingPolicy>> MakePolicy(const PolicyOptions& options);

// Domain policy pools, exposed for tests and reports: pool index per label (misc last) and the
// decoder range [begin, end) of each pool.
struct DomainPools {
  std::vector<std::string> labels;  // pool i serves labels[i]; "" = misc
  std::vector<std::pair<int, int>> ranges;
};
Result<DomainPools> ComputeDomainPools(std::span<const LabelShare> shares, int decoders);

}  // namespace eldr
