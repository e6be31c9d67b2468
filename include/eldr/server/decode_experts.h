// -----------------------------------------------------------------------------
// File: server/decode_experts.h
// -----------------------------------------------------------------------------
// DecodeExpertsTap: reads the routed experts of *generated* tokens out of a decode engine's
// response as the router relays it, for the capture's `decode` counts (the per-layer ρ that
// `eldr fit` needs), and optionally takes them out of what the client receives.
//
// Where the engines put them (docs/serve.md, "Capture"):
//   * SGLang (PR #17648): response-level `sglext.routed_experts`, base64 of little-endian int32,
//     [rows, num_hidden_layers, top_k], rows [routed_experts_start_len, seqlen − 1); a stream
//     sends it in one event whose `choices` is empty. The router asks for it on the decode leg
//     of a sampled request (`return_routed_experts: true`) and, when the client did not ask,
//     strips it again. The prompt's rows are skipped unread: a PD decode engine did not compute
//     them.
//   * vLLM 0.21 (PR #39917): `choices[0].routed_experts`, nested lists of the generated tokens
//     only, sent by an engine started with `--enable-return-routed-experts`; the client gets
//     them as the engine sent them (the router asks for nothing on this flow).
//   vLLM ≥ 0.22 refuses the flag together with a KV connector, so a NIXL decode engine sends
//   none.
//
// The tap is fed the body bytes in order (Body() for a whole body, Feed()/Finish() for a
// stream cut anywhere). Stripping holds back an incomplete SSE event until its end (events are
// small except the one carrying the payload); without stripping, bytes are forwarded at once.
// At most `max_bytes` of payload text are kept: beyond that the tap stops collecting, forwards
// everything unchanged and Counts() says why.
//
// Thread-safety: none; one tap per relayed response, used by the coroutine relaying it.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "eldr/expert_counts.h"
#include "eldr/geometry.h"
#include "eldr/status.h"

namespace eldr::server {

enum class DecodeExpertsFormat {
  kSglang,     // sglext.routed_experts (base64 int32)
  kVllmLists,  // choices[0].routed_experts (nested lists, generated tokens only)
};

struct DecodeExpertsTapOptions {
  DecodeExpertsFormat format = DecodeExpertsFormat::kSglang;
  bool strip = false;     // take the field out of what the client receives (SGLang only)
  int64_t start_row = 0;  // SGLang: the routed_experts_start_len the engine was sent
  size_t max_bytes = size_t{64} << 20;
};

class DecodeExpertsTap {
 public:
  explicit DecodeExpertsTap(DecodeExpertsTapOptions options);

  // A whole (non-streamed) JSON body: collects the field and returns the body to forward.
  std::string Body(std::string body);
  // A piece of an SSE stream: appends to *forward what may be sent now.
  void Feed(std::string_view piece, std::string* forward);
  // The end of the stream: appends what is still held back.
  void Finish(std::string* forward);

  // Counts [moe_layers][experts] of the generated tokens' rows. `prompt_tokens` is the prompt's
  // length (used when the body carried no usage; -1 if unknown); `output_tokens` with
  // `output_exact` is checked against the row count where the engine's contract fixes it.
  // NotFound: the response carried no routed experts; other codes: why they were refused
  // (malformed, wrong shape, more than max_bytes, rows that do not fit the lengths).
  Result<ExpertCounts> Counts(const ModelGeometry& g, int64_t prompt_tokens, int64_t output_tokens,
                              bool output_exact) const;

 private:
  // Where Collect found the field in the text it was given (views into it; empty: not found).
  struct Spans {
    std::string_view ext;  // SGLang: the sglext object
    std::string_view re;   // the routed_experts value
  };
  Spans Collect(std::string_view json);    // one JSON object: a body or an event's data
  void ReadUsage(std::string_view usage);  // the usage object's prompt_tokens, where present
  std::string Stripped(std::string_view json, const Spans& sp) const;
  std::string Event(std::string_view event);

  DecodeExpertsTapOptions o_;
  std::vector<std::string> payloads_;  // raw field text, in order (SGLang: base64 strings)
  size_t kept_ = 0;                    // bytes in payloads_
  int64_t usage_prompt_ = -1;          // usage.prompt_tokens seen in the body
  Status error_;                       // first collection error
  std::string pending_;                // an incomplete SSE event
  size_t scanned_ = 0;                 // bytes of pending_ already searched for its end
};

}  // namespace eldr::server
