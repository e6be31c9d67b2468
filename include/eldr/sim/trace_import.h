// -----------------------------------------------------------------------------
// File: sim/trace_import.h
// -----------------------------------------------------------------------------
// Reading one per-request file of the public GPT-OSS-MoE-ExpertFingerprinting routing traces
// (data/gptoss20b/SOURCE.md: `<name>_examples.json`, one request's routed tokens) into a
// TraceRequest for eldr's trace format (sim/trace.h). `eldr trace import` walks the directories
// and writes the trace; this is the part that reads outside input, so it lives here, where the
// fuzz target (fuzz/trace_import_fuzz.cc) and the unit tests can reach it.
//
// The file is a JSON object with `router_data`: an array of one-key objects
// {"token_<P>": {"layer_<l>": {"selected_experts": [top_k ids], ...}, ...}}, in token order; the
// first key's P is the prompt length. `dataset` (optional) names the benchmark, reduced to its
// family as the label ("mmlu_pro_law" -> "mmlu_pro").
//
// Contract: whatever this accepts, ParseTrace accepts once serialized (the same limits: expert
// ids in [0, experts), no id twice in one token's top-k, at most 2^20 tokens, prompt length at
// most 2^24, label at most 65535 bytes); errors name the token (index and key) and the layer.
//
// Thread-safety: pure functions.
#pragma once

#include <string>
#include <string_view>

#include "eldr/geometry.h"
#include "eldr/sim/trace.h"
#include "eldr/status.h"

namespace eldr::sim {

struct ImportedRequest {
  bool is_request = false;  // false: valid JSON but not a per-request file (an aggregate, ...)
  TraceRequest request;     // when is_request
};

// Converts one file's text for model `g`, keeping at most `max_tokens` routed tokens (0: all).
// InvalidArgument/OutOfRange for JSON that is not valid or a request file of the wrong shape.
Result<ImportedRequest> ImportFingerprintRequest(std::string_view text, const ModelGeometry& g,
                                                 int max_tokens);

// The benchmark family of a dataset name, as the label of the imported request.
std::string DatasetFamily(std::string_view dataset);

}  // namespace eldr::sim
