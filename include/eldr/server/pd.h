// -----------------------------------------------------------------------------
// File: server/pd.h
// -----------------------------------------------------------------------------
// The wire side of a prefill/decode (PD) disaggregated request, free of I/O so that it is tested
// and fuzzed on its own (docs/serve.md):
//   * ParseClientRequest: an OpenAI /v1/completions or /v1/chat/completions body;
//   * the bodies of the prefill and decode legs for vLLM's NIXL connector (pull: decode chosen
//     after prefill) and SGLang's bootstrap rendezvous (decode chosen first);
//   * ParsePrefillResponse: transfer parameters, prompt token ids and the prompt's expert picks
//     from a prefill response, wherever the engine put them (SignatureSource below), decoded in
//     place without a JSON tree of the payload;
//   * the head of an upstream POST.
//
// Thread-safety: pure functions; ClientRequest is a plain value.
#pragma once

#include <boost/json/object.hpp>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "eldr/expert_counts.h"
#include "eldr/geometry.h"
#include "eldr/net/wire.h"
#include "eldr/payload.h"
#include "eldr/status.h"

namespace eldr::server {

enum class Endpoint { kCompletions, kChat };

struct ClientRequest {
  Endpoint endpoint = Endpoint::kCompletions;
  boost::json::object body;  // the client's JSON, unchanged
  bool stream = false;
  int64_t n = 1;
  std::string model;
  std::string prompt_text;             // prompt, or chat messages' text joined with '\n'
  std::vector<int32_t> prompt_tokens;  // when the client sent token ids (completions)
  // Set by the router, not read from the body: the X-Eldr-Label header and the arrival time
  // (Unix microseconds), for captured records.
  std::string label;
  int64_t arrival_unix_us = 0;
};

// InvalidArgument (-> 400) for a body that is not a JSON object, lacks the prompt/messages, or has
// fields of the wrong type.
Result<ClientRequest> ParseClientRequest(Endpoint endpoint, std::string_view body);

// vLLM NIXL prefill leg: the client's body with stream=false, max_tokens=1 (and
// max_completion_tokens=1 if present), stream_options / min_tokens / min_completion_tokens
// removed, return_token_ids=true, and kv_transfer_params asking for a remote decode.
// `routed_experts_start` > 0 asks the engine to omit rows of a prefix the router already knows
// (routed_experts_prompt_start).
std::string VllmPrefillBody(const ClientRequest& req, int64_t routed_experts_start = 0);
// vLLM NIXL decode leg: the client's body plus the prefill's kv_transfer_params (raw JSON). With
// `prompt_token_ids` (completions only) the prompt is replaced by them, so that the decode engine
// does not tokenize it again.
std::string VllmDecodeBody(const ClientRequest& req, std::string_view kv_transfer_params,
                           std::span<const int32_t> prompt_token_ids = {});

struct Bootstrap {
  std::string host;
  int port = 0;
  uint64_t room = 0;  // in [0, 2^63 - 1]
};
// SGLang legs: the client's body plus bootstrap_host/port/room. The prefill leg is non-streaming
// and asks for routed experts (return_routed_experts, rows from routed_experts_start_len); the
// decode leg keeps the client's stream; with `ask_routed_experts` (a captured request) it also
// asks for the generated tokens' routed experts (return_routed_experts: true).
std::string SglangPrefillBody(const ClientRequest& req, const Bootstrap& b);
std::string SglangDecodeBody(const ClientRequest& req, const Bootstrap& b,
                             bool ask_routed_experts = false);
// Whether the client's own body asks for routed experts (return_routed_experts: true).
bool ClientAsksRoutedExperts(const ClientRequest& req);

// Where the prompt's routed experts came from. The engines place them differently (verified in
// their source; docs/serve.md has the compatibility table):
//   kVllm        choices[0].routed_experts, base64 .npy [prompt + out - 1, num_hidden_layers, k]
//                (vLLM >= 0.22, PR #38939); nested lists in some earlier builds (kVllmList)
//   kVllm021     response-level prompt_routed_experts, nested lists [prompt, layers, k], -1 rows
//                for positions without routes (vLLM 0.21, PR #39917); choices[0].routed_experts
//                then holds the generated tokens only and is ignored
//   kSglang      response-level sglext.routed_experts, base64 int32 [rows, num_hidden_layers, k]
//                from routed_experts_start_len (SGLang PR #17648); choices[0].sgl_ext (an early
//                variant described by the SGLang docs) is read too
//   kEldrHooks   kv_transfer_params.eldr_sig, base64 int16 [L, E] counts (the ELDR authors'
//                vLLM hooks); also accepted on the choice or the response
enum class SignatureSource { kNone, kVllm, kVllmList, kVllm021, kSglang, kEldrHooks };
inline constexpr int kSignatureSources = 6;
std::string_view SignatureSourceName(SignatureSource s);  // "none", "vllm", "vllm-list", ...
// "auto" (look everywhere, in the order above) or one source name: only that place is read.
Result<std::optional<SignatureSource>> ParseSignatureSourcePin(std::string_view name);

struct PrefillRequestInfo {
  // Prompt length when the router knows it (client-sent token ids); -1 otherwise, in which case
  // the response's prompt_token_ids or usage.prompt_tokens are used.
  int64_t prompt_tokens = -1;
  // The first prompt row the router asked for (routed_experts_prompt_start on vLLM). Engines
  // that do not implement it return every row: the row count tells which happened.
  int64_t routed_experts_start = 0;
  std::optional<SignatureSource> pin;  // signature_source config: read only this place
};

struct PrefillResult {
  std::string kv_transfer_params;  // raw JSON object ("" if absent or null), eldr_sig removed
  std::vector<int32_t> prompt_token_ids;  // empty if the engine did not return them
  int64_t prompt_tokens = -1;             // known prompt length (request, ids or usage); -1 unknown
  std::optional<PickTable> picks;         // per-token picks (vLLM, SGLang encodings)
  int64_t picks_first_token = 0;          // prompt token of picks row 0
  std::optional<ExpertCounts> counts;     // eldr_sig encoding
  SignatureSource source = SignatureSource::kNone;
  // Picks cover only part of the prompt and no earlier rows can fill the gap (unknown rows
  // inside the prompt): the counts are usable but partial, and must not enter the cache.
  bool partial = false;
  // Why a payload that was present was not used (row count that matches neither what was asked
  // nor the whole prompt, ...); source is then kNone. Empty otherwise.
  std::string rejected;
  std::string finish_reason;
};

// Parses a prefill response. An error object in the body, a body that is not JSON, a payload that
// does not decode for `g`, or one beyond `opts.max_decoded_bytes` is an error (the proxy answers
// 502 with the message). A response without any expert payload is not an error: `source` is
// kNone and the policy falls back to load balancing. A payload whose row count cannot be matched
// to the prompt is not trusted: `rejected` says why (it would store wrong counts under the
// prompt's block hashes otherwise).
Result<PrefillResult> ParsePrefillResponse(std::string_view body, const ModelGeometry& g,
                                           const PayloadOptions& opts,
                                           const PrefillRequestInfo& info = {});

// ---- HTTP/1.1 message heads ------------------------------------------------------------------
// The proxy writes its messages as one head plus the body, gathered into one send, instead of
// through a generic serializer (response heads, error bodies: eldr/net/wire.h). Every argument
// must already be a valid header value (no CR or LF): paths and hosts come from the
// configuration, request ids from a parsed request header.

// "POST path HTTP/1.1" with Host, Content-Type: application/json, X-Request-Id, the data-parallel
// rank header when dp_rank >= 0, and Content-Length; keep-alive (HTTP/1.1's default).
// With a non-empty `api_key`, "Authorization: Bearer <api_key>" is added (engines started with
// --api-key).
std::string UpstreamPostHead(std::string_view path, std::string_view host, int port,
                             std::string_view request_id, int dp_rank, size_t content_length,
                             std::string_view api_key = {});

}  // namespace eldr::server
