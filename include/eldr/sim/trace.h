// -----------------------------------------------------------------------------
// File: sim/trace.h
// -----------------------------------------------------------------------------
// Recorded routing traces in eldr's compact, versioned trace format ("eldr.trace", version 1;
// docs/formats.md), and workloads replayed from them.
//
// A trace holds, per request, a label, the prompt length and the expert picks of its routed
// tokens [tokens][L][top_k]. The public GPT-OSS-20B routing traces (data/gptoss20b/SOURCE.md) hold
// decode tokens only: on replay the first `prefix_tokens` of each request stand in for its prompt's
// expert counts and the rest drive decoding (cycled over the request's 512 output tokens). Results
// on such traces must say so.
//
// Thread-safety: a Trace is a value; ParseTrace/SerializeTrace are reentrant.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "eldr/geometry.h"
#include "eldr/sim/workload.h"
#include "eldr/status.h"

namespace eldr::sim {

inline constexpr std::string_view kTraceFormat = "eldr.trace";
inline constexpr int kTraceVersion = 1;

struct TraceRequest {
  std::string label;
  int prompt_tokens = 0;        // original prompt length (prefill time, KV size on replay)
  int tokens = 0;               // routed tokens stored
  std::vector<uint16_t> picks;  // [tokens][L][top_k]
};

struct Trace {
  ModelGeometry geometry;
  std::string source;  // free text: provenance and licence
  int prefix_tokens = 32;
  std::vector<TraceRequest> requests;
};

// Validates every pick (range, duplicates within a token's top-k) while parsing; a file for an
// unknown model or another version is refused.
Result<Trace> ParseTrace(std::span<const uint8_t> bytes);
// True when `bytes` starts with the trace format's magic (what ParseTrace reads).
bool IsTraceBytes(std::span<const uint8_t> bytes);
std::vector<uint8_t> SerializeTrace(const Trace& t);

struct TraceWorkloadOptions {
  int requests = 7200;  // evaluated requests generated (see "Replay" below)
  double rate_qps = 60;
  int output_tokens = 512;
  // Single-trace split: the fraction of the usable requests that calibrates, in (0, 1); the rest
  // is the evaluation pool. Ignored (but still validated) when a separate calibration trace is
  // given.
  double calibration_fraction = 0.5;
  // A request is usable when it has at least prefix_tokens + min_decode_tokens routed tokens;
  // shorter ones are dropped (and counted in TraceReplayStats).
  int min_decode_tokens = 16;
  uint64_t seed = 1;
  // Returns InvalidArgument naming the first bad option and its value.
  Status Validate() const;
};

// Usable / dropped counts of one trace under TraceWorkloadOptions.
struct TraceUsage {
  int requests = 0;           // requests in the trace
  int usable = 0;             // requests with >= min_routed_tokens routed tokens
  int too_short = 0;          // dropped: fewer than min_routed_tokens routed tokens
  int min_routed_tokens = 0;  // the threshold: prefix_tokens + min_decode_tokens
};

// What MakeTraceWorkload did, for the caller to print.
struct TraceReplayStats {
  TraceUsage eval_trace;         // the trace replayed (on a single-trace split it also calibrates)
  TraceUsage calibration_trace;  // the separate calibration trace; all zero on a single-trace split
  bool separate_calibration = false;
  int calibrating = 0;  // Workload::calibration.size()
  int pool = 0;         // evaluation pool: distinct requests replayed
  int generated = 0;    // Workload::requests.size() (= options.requests)
  int passes = 0;       // ceil(generated / pool); the last one may be partial
};

// A simulator workload replaying trace `t` (see the file comment), split into calibration and
// evaluation requests. Token patterns = the longest stored decode part; shorter requests cycle
// theirs.
//
// Split: the usable requests of `t` are shuffled (seeded); the first
// round(calibration_fraction x usable), clamped to [2, usable - 2], calibrate and the rest form
// the evaluation pool, so the two sets are disjoint. REQUIRES (else InvalidArgument): >= 4 usable.
//
// Replay (without replacement): the pool is replayed in passes; each pass is a fresh, seeded
// permutation of the pool, so every pool request appears once per pass, and passes continue
// until options.requests are generated (the last pass may be partial). Copies of one request
// therefore only meet across a pass boundary; see PoolTooSmall.
//
// Labels: the sorted distinct labels of the usable requests; label_shares are the calibration
// requests' label frequencies. `stats`, if not null, receives the counts (also on most errors,
// as far as they were computed).
Result<Workload> MakeTraceWorkload(const Trace& t, const TraceWorkloadOptions& o,
                                   TraceReplayStats* stats = nullptr);

// As above, but calibrating on a separate trace: ALL usable requests of `eval` form the
// evaluation pool (replayed as above) and ALL usable requests of `calibration` calibrate;
// calibration_fraction is not used. Labels are the union of both traces' usable requests' labels.
// Each trace uses its own prefix_tokens. Token patterns = the longest decode part of either.
// Returns InvalidArgument, naming both models, when the geometries differ (name, MoE layers,
// experts, top-k); InvalidArgument when `eval` and `calibration` are the same object, or when
// either has fewer than 2 usable requests.
Result<Workload> MakeTraceWorkload(const Trace& eval, const Trace& calibration,
                                   const TraceWorkloadOptions& o,
                                   TraceReplayStats* stats = nullptr);

// The rule for warning that the evaluation pool is too small for the load: true when the peak
// number of requests in flight exceeds half the pool. With N in flight and a pool of P replayed
// in shuffled passes, a request shares its time in flight with its own copy from the next or
// previous pass with probability about (N/P)^2 (N <= P), i.e. ~25% at N = P/2; such copies
// land on the same decoder under locality routing and inflate its gain. Copies exist only when
// passes > 1, so callers need not warn on a single pass. REQUIRES: pool > 0.
bool PoolTooSmall(int64_t peak_in_flight, int pool);

}  // namespace eldr::sim
