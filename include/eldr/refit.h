// -----------------------------------------------------------------------------
// File: refit.h
// -----------------------------------------------------------------------------
// Online refitting: new centroids for a live signature space from a window of recent requests'
// prompt counts, so ELDR follows traffic that drifts away from its calibration. The same code
// runs in `eldr serve` (refit: {interval_s, window_s, min_requests}) and in the simulator
// (`eldr simulate --refit`).
//
// As the ELDR authors' online variant does (the ELDR paper, arXiv 2607.00466, and its artifact's
// proxy): the layer mask, transform and IDF stay those of the current space; balanced spherical
// k-means runs on the window warm-started from the current centroids; the new centroids are then
// matched to the decoders by an exact assignment maximising the summed cosine between each
// decoder's old and new centroid (the Hungarian problem on -C_old C_new^T; CapacitatedAssign with
// capacity 1), so a decoder keeps the region of signature space it had as far as the new fit
// allows and its cached KV and expert residency stay useful. A fit that fails or is degenerate
// is an error and the caller keeps the old space.
//
// Thread-safety: pure function of its inputs; the spaces are immutable.
#pragma once

#include <memory>
#include <span>
#include <vector>

#include "eldr/expert_counts.h"
#include "eldr/fit.h"
#include "eldr/signature_space.h"
#include "eldr/status.h"

namespace eldr {

struct RefitOptions {
  int min_requests = 64;  // fewer usable signatures in the window: FailedPrecondition (kept)
  int max_iters = 20;     // k-means iterations from the warm start
  ClusterAlgo algo = ClusterAlgo::kBalanced;
  // A refit whose balanced objective on the window (the mean cosine of each request to its
  // centroid under the capacitated assignment the fit optimises) falls below the old
  // centroids' by more than this is degenerate (FailedPrecondition): the old space serves the
  // window better. Warm-started balanced k-means never lowers that objective, so this is a
  // guard against numerical failure, not a judgement on rebalancing: the mean *best* cosine does
  // fall when a rebalance splits a grown domain over more decoders, which is the point of it.
  double max_score_loss = 0.02;
  // Two new centroids at least this close (cosine) where the decoders' old ones were not: the
  // fit is degenerate (FailedPrecondition). That happens when one repeated prompt fills the
  // window and balanced k-means deals its copies to several decoders; centroids of different
  // requests, even of one domain split over decoders, are never this close.
  double max_centroid_cosine = 1 - 1e-6;
  Status Validate() const;
};

struct RefitReport {
  int n = 0;        // usable signatures in the window
  int skipped = 0;  // without a pick on the masked layers
  int iterations = 0;
  // Mean over decoders of 1 - cos(old centroid, new centroid) after the matching.
  double centroid_movement = 0;
  // Share of the window whose best-scoring decoder differs between the old and the new space.
  double churn = 0;
  // Mean best cosine of the window under the old space (the drift signal: it falls as traffic
  // moves away from the fit) and under the new one.
  double old_score = 0, new_score = 0;
  // The balanced objective (see max_score_loss) of the old and the new centroids.
  double old_balanced = 0, new_balanced = 0;
  std::vector<int> decoder_of_cluster;  // the matching: new cluster j -> decoder
};

struct RefitResult {
  std::shared_ptr<const SignatureSpace> space;  // same mask, transform, IDF and k as `current`
  RefitReport report;
};

// REQUIRES: every counts table shaped for `current` (InvalidArgument otherwise).
Result<RefitResult> Refit(const SignatureSpace& current, std::span<const ExpertCounts> window,
                          const RefitOptions& options = {});

}  // namespace eldr
