// libFuzzer target: one per-request file of the GPT-OSS-MoE-ExpertFingerprinting routing traces,
// as `eldr trace import` reads it (sim/trace_import.h), for gpt-oss-20b (the traces' model).
// Input: one byte of max_tokens (0-7), then the file's text.
// Invariants on an accepted request: at most max_tokens tokens (when > 0), tokens x L x top_k
// picks, each in [0, E) and none repeated within a token's layer; and the contract the importer
// exists for: the trace written from it is one that ParseTrace accepts, and reads back equal.
#include <string_view>

#include "eldr/sim/trace.h"
#include "eldr/sim/trace_import.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  static const eldr::ModelGeometry g = *eldr::FindModel("gpt-oss-20b");
  const int max_tokens = data[0] % 8;
  const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
  auto got = eldr::sim::ImportFingerprintRequest(text, g, max_tokens);
  if (!got) {
    ELDR_FUZZ_CHECK(!got.error().message().empty());
    return 0;
  }
  if (!got->is_request) return 0;
  const eldr::sim::TraceRequest& r = got->request;
  ELDR_FUZZ_CHECK(max_tokens == 0 || r.tokens <= max_tokens);
  eldr::fuzz::CheckTracePicks(r.tokens, r.prompt_tokens, r.picks, g);
  eldr::sim::Trace t;
  t.geometry = g;
  t.source = "fuzz";
  t.requests.push_back(r);
  const std::vector<uint8_t> bytes = eldr::sim::SerializeTrace(t);
  auto back = eldr::sim::ParseTrace(bytes);
  ELDR_FUZZ_CHECK(back.has_value());
  ELDR_FUZZ_CHECK(back->requests.size() == 1);
  const eldr::sim::TraceRequest& b = back->requests[0];
  ELDR_FUZZ_CHECK(b.label == r.label && b.prompt_tokens == r.prompt_tokens &&
                  b.tokens == r.tokens && b.picks == r.picks);
  return 0;
}
