// -----------------------------------------------------------------------------
// File: fit.h
// -----------------------------------------------------------------------------
// The offline fit of ELDR (the ELDR paper, arXiv 2607.00466): calibration requests in,
// SignatureSpace out.
//   1. IDF per (layer, expert) from the calibration prefill counts: log((N+1)/(df+1)).
//   2. Layer mask by forward greedy selection maximising Spearman rho between the cosine
//      distances of prefill signatures and of decode activation vectors over seeded random
//      request pairs; the mask is the greedy prefix at the peak of the rho path.
//   3. Balanced spherical k-means (K = number of decoders): k-means++ seeding, and in every
//      iteration an *exact* capacitated assignment (each cluster <= ceil(N/K) points) solved as
//      a min-cost flow by successive shortest paths over the K cluster nodes, then centroids =
//      renormalised means. Plain spherical k-means (argmax assignment) for ablations.
// Deterministic for a seed. No threads, no I/O.
//
// Thread-safety: functions are reentrant.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "eldr/expert_counts.h"
#include "eldr/geometry.h"
#include "eldr/signature_space.h"
#include "eldr/status.h"

namespace eldr {

struct CalibrationRequest {
  std::string id;
  std::string label;     // optional domain label
  ExpertCounts prefill;  // required
  ExpertCounts decode;   // optional (empty): needed for the layer mask's rho
};

enum class ClusterAlgo { kBalanced, kPlain };

struct FitOptions {
  int k = 16;  // decoders = centroids
  ClusterAlgo algo = ClusterAlgo::kBalanced;
  SignatureTransform transform = SignatureTransform::kCountIdf;
  bool greedy_mask = true;  // false: all layers
  // When not empty, this layer mask is used as given (no greedy selection, no rho): a refit on
  // data without decode counts keeps the previous space's mask. Sorted, unique, in [0, L)
  // (InvalidArgument otherwise).
  std::vector<int> fixed_mask;
  int rho_pairs = 30000;  // request pairs for rho
  uint64_t seed = 1;
  int max_iters = 50;
  // Provenance copied into the space as training_sha256: the SHA-256 hex of the calibration
  // input's bytes (Sha256Hex in eldr/sha256.h), or empty. Fit does not check it (it sees parsed
  // requests, not bytes); Validate() checks only its form.
  std::string training_sha256;
  // Progress callback (stage name, fraction done in [0, 1]); may be empty.
  std::function<void(std::string_view, double)> progress;
  Status Validate() const;
};

struct FitReport {
  int n = 0;                      // requests with a usable signature
  int skipped = 0;                // requests without a pick on the masked layers
  std::vector<int> greedy_order;  // layers in the order greedy selection added them
  std::vector<double> rho_path;   // rho after each addition
  std::vector<int> layer_mask;    // sorted
  double peak_rho = 0;            // NaN when no decode counts were given
  double all_layers_rho = 0;      // rho with every layer (NaN likewise)
  std::vector<int> cluster_sizes;
  int iterations = 0;
  bool converged = false;
  double objective = 0;  // mean cosine of points to their centroid
  double seconds_mask = 0, seconds_cluster = 0;
};

struct FitResult {
  std::shared_ptr<const SignatureSpace> space;
  FitReport report;
};

Result<FitResult> Fit(std::span<const CalibrationRequest> requests, const ModelGeometry& g,
                      const FitOptions& options);

// ---- building blocks (exposed for tests, benchmarks and ablations) ---------------------------

// IDF over L*E: log((N+1)/(df+1)), df = requests with a non-zero count.
std::vector<float> ComputeIdf(std::span<const CalibrationRequest> requests);

// Spearman rank correlation with average ranks for ties. NaN if either side is constant.
double Spearman(std::span<const double> a, std::span<const double> b);

// Exact capacitated assignment: minimises sum_i cost[i*k + a[i]] subject to every cluster
// holding at most `cap` points. REQUIRES (checked): cap*k >= n. Deterministic. O(n*k^2 + n*k*log n)
// in practice.
Result<std::vector<int>> CapacitatedAssign(std::span<const double> cost, int n, int k, int cap);

struct Clustering {
  std::vector<float> centroids;  // k x d, unit rows
  std::vector<int> assignment;   // n
  int iterations = 0;
  bool converged = false;
};

// Spherical k-means over unit rows x (n x d). Balanced: exact capacitated assignment with
// cap = ceil(n/k). REQUIRES (checked): 1 <= k <= n. `init` (k x d unit rows), when given, is the
// starting centroids (a warm start: online refitting) instead of k-means++ seeding.
Result<Clustering> SphericalKMeans(std::span<const float> x, int n, int d, int k, ClusterAlgo algo,
                                   uint64_t seed, int max_iters, std::span<const float> init = {});

}  // namespace eldr
