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
std::vector<uint8_t> SerializeTrace(const Trace& t);

struct TraceWorkloadOptions {
  int requests = 7200;  // evaluated requests, drawn with replacement from the eval split
  double rate_qps = 60;
  int output_tokens = 512;
  double calibration_fraction = 0.5;  // of the trace's requests, disjoint from the eval split
  int min_decode_tokens = 16;  // requests with fewer routed tokens after the prefix are skipped
  uint64_t seed = 1;
  Status Validate() const;
};

// A simulator workload replaying the trace (see the file comment). Token patterns = the longest
// stored decode part; shorter requests cycle theirs.
Result<Workload> MakeTraceWorkload(const Trace& t, const TraceWorkloadOptions& o);

}  // namespace eldr::sim
