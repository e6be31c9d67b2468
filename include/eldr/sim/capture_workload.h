// -----------------------------------------------------------------------------
// File: sim/capture_workload.h
// -----------------------------------------------------------------------------
// A simulator workload replaying calibration records captured from live traffic
// (`eldr serve --capture`, server/capture.h): the operator's own requests under every policy.
//
// Replayed as recorded: arrival times (shifted so the first evaluated request arrives at 0),
// prompt lengths, output lengths and prompt expert counts. Not recorded, so approximated (an
// approximation results must state): the expert picks of each decode token. Each request gets
// `token_patterns` pick sets, cycled over its output tokens; at every MoE layer a pick set draws
// top_k distinct experts without replacement, with probability proportional to the request's
// recorded decode counts when it has them, else its prompt counts, plus `smoothing` of the
// layer's mean count on every expert (so a layer with fewer than top_k distinct experts still
// yields a full pick). Prompt counts are known to correlate with decode picks (0.70-0.92 in the
// ELDR paper, arXiv 2607.00466) but are not decode picks: the locality a capture replay shows is
// the prompt's, an upper bound where decode drifts from it.
//
// Split by time, as a deployment refits: the earliest `calibration_fraction` of the records (by
// arrival) calibrate, the later ones are evaluated, so the fit never sees the requests it routes.
//
// Thread-safety: pure function; the Workload returned is immutable.
#pragma once

#include <span>

#include "eldr/calibration.h"
#include "eldr/fit.h"
#include "eldr/sim/workload.h"
#include "eldr/status.h"

namespace eldr::sim {

struct CaptureReplayOptions {
  double calibration_fraction = 0.5;  // in (0, 1)
  int token_patterns = 16;            // in [1, 1024]
  double smoothing = 0.01;            // >= 0, of the layer's mean count, added to every expert
  uint64_t seed = 1;                  // the pick draws
  // InvalidArgument naming the first bad option and its value.
  Status Validate() const;
};

struct CaptureReplayStats {
  int records = 0;
  int usable = 0;          // with arrival, prompt and output lengths >= 1 and prompt counts
  int missing_fields = 0;  // dropped: no arrival_us / prompt_tokens / output_tokens
  int no_output = 0;       // dropped: output_tokens 0 (nothing to decode)
  int with_decode = 0;     // usable records with decode counts
  int calibrating = 0;
  int evaluated = 0;
  double span_s = 0;    // arrival of the last evaluated request minus the first
  double rate_qps = 0;  // evaluated / span_s (0 when span_s is 0)
};

// REQUIRES (else InvalidArgument): requests.size() == meta.size(); at least 4 usable records;
// every table shaped for `g`. `stats`, if not null, receives the counts (also on errors, as far
// as they were computed).
Result<Workload> MakeCaptureWorkload(const ModelGeometry& g,
                                     std::span<const CalibrationRequest> requests,
                                     std::span<const CaptureMeta> meta,
                                     const CaptureReplayOptions& options,
                                     CaptureReplayStats* stats = nullptr);

}  // namespace eldr::sim
