// -----------------------------------------------------------------------------
// File: emu/emulator.h
// -----------------------------------------------------------------------------
// Emulator: `eldr emulate`, an HTTP engine that speaks the wire formats of vLLM (NIXL PD flow)
// and SGLang (bootstrap flow) without a GPU, for tests, demos and dry runs of a router
// configuration (docs/serve.md). It is an independent oracle of the real engines: it parses
// requests with its own code (never the proxy's) and places routed experts exactly where, and in
// the shape in which, the emulated engine version does.
//
//   prefill role: waits the model's prefill time (one prefill at a time, FIFO), answers one token
//     with kv_transfer_params (vLLM flow), prompt_token_ids (return_token_ids) and the prompt's
//     routed experts in the engine's format (below);
//   decode role: waits the KV-transfer time, then runs continuous batching in real time: each
//     step lasts EngineModel::StepUs of the batch (its distinct experts set its speed) and gives
//     every sequence one token, streamed as SSE (or returned whole).
//
// Engines (`engine`; T = prompt tokens; layers = geometry.total_layers with the dense layers'
// rows all 0, wherever the geometry's MoE-layer map puts them, unless noted):
//   vllm-0.22   choices[0].routed_experts: base64 .npy, uint8 (experts <= 256) or uint16,
//               shape [T - start, total_layers, top_k] (the prefill leg's num_tokens - 1 = T);
//               start = routed_experts_prompt_start only with honour_prompt_start (vLLM PR
//               #51906), else 0 (older servers ignore the field).
//   vllm-0.21   response-level prompt_routed_experts: nested int lists [T, total_layers, top_k],
//               rows of prefix-cached positions all -1 (an emulated prefix cache of 16-token
//               blocks); choices[0].routed_experts: generated-token rows = completion - 1, i.e.
//               an empty list [] for the one-token prefill answer.
//   sglang      response-level sglext.routed_experts (only with return_routed_experts: true):
//               base64 of little-endian int32 [T - start, total_layers, top_k], start =
//               routed_experts_start_len in [0, T] (larger: 400, as SGLang aborts).
//   eldr-hooks  kv_transfer_params.eldr_sig: base64 little-endian int16 [moe_layers, experts]
//               counts of the whole prompt; no routed_experts field.
//
// Client-visible behaviour follows vLLM's OpenAI server: chat streams open with a
// {"role":"assistant","content":""} delta; stream_options.include_usage adds a final chunk with
// "choices": [] and usage before [DONE]; ids are chatcmpl-<X-Request-Id> / cmpl-<X-Request-Id>;
// `created` is the unix time; unknown `model` -> 404 NotFoundError; with an api key, every /v1
// path without "Authorization: Bearer <key>" -> 401 {"error":"Unauthorized"} (/health and
// /metrics stay open). A request whose client disconnects stops (eldr_emu_cancelled_total).
//
// Faults for tests: `fault = "malformed"` makes prefill answers carry a corrupt expert payload,
// `"error500"` makes every completion fail with 500, `"error400"` makes prefill legs fail with
// vLLM's 400 context-length error, `"garbage"` makes prefill legs answer 200 with a body that is
// not JSON. A request may name its own fault in the body field "emu_fault" (same values): it
// applies to that request's prefill leg only (a decode leg ignores it), whatever `fault` is; the
// soak test (tests/soak/soak.py) mixes faults into steady traffic this way.
//
// Threads: one io_context thread. Everything the model computes is deterministic in the prompt.
#pragma once

#include <cstdint>
#include <list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "eldr/emu/model.h"
#include "eldr/status.h"

namespace eldr::emu {

struct EmulatorOptions {
  std::string host = "127.0.0.1";
  int port = 0;                  // 0 = any free port (printed, and in ready_file)
  std::string role = "decode";   // prefill | decode
  std::string backend = "vllm";  // vllm | sglang: the PD flow (NIXL kv_transfer_params, bootstrap)
  // vllm-0.22 | vllm-0.21 | sglang | eldr-hooks; "" = from backend (vllm -> vllm-0.22, sglang ->
  // sglang). eldr-hooks needs backend vllm.
  std::string engine;
  bool honour_prompt_start = false;  // vllm-0.22: apply routed_experts_prompt_start
  // Names a request's `model` may give (the first names responses to requests that give none, on
  // backend vllm: ResponseModelName); empty = the geometry's canonical name, its display name also
  // accepted.
  std::vector<std::string> served_model_names;
  std::string api_key;              // "" = no authentication
  int prefix_cache_blocks = 65536;  // vllm-0.21: blocks the emulated prefix cache remembers
  double time_scale = 1.0;          // multiplies every emulated duration; 0 = instant
  int max_batch = 256;              // decode sequences per step; more wait
  int default_max_tokens = 16;      // when the request gives none
  std::string fault;                // "" | malformed | error500 | error400 | garbage
  std::string ready_file;
  Status Validate() const;
  // The engine after defaulting from backend.
  std::string ResolvedEngine() const;
};

class Emulator {
 public:
  static Result<std::unique_ptr<Emulator>> Create(const EmulatorOptions& options,
                                                  std::shared_ptr<const EngineModel> model);
  virtual ~Emulator() = default;
  virtual int port() const = 0;
  // Serves until SIGINT/SIGTERM or Shutdown().
  virtual Status Run() = 0;
  virtual void Shutdown() = 0;
};

// ---- I/O-free parts (exposed for tests) --------------------------------------------------------

// The emulator's own reading of a /v1/completions or /v1/chat/completions body.
struct EmuRequest {
  bool chat = false;
  bool stream = false;
  bool include_usage = false;   // stream_options.include_usage
  std::string model;            // "" when absent
  std::vector<int32_t> tokens;  // prompt token ids (given, or the model's tokenizer on the text)
  int64_t max_tokens = 16;
  bool return_token_ids = false;
  bool return_routed_experts = false;                        // SGLang
  std::optional<int64_t> routed_experts_prompt_start;        // vLLM
  std::optional<int64_t> routed_experts_start_len;           // SGLang
  bool bootstrap = false;                                    // bootstrap_room present (SGLang PD)
  bool do_remote_decode = false, do_remote_prefill = false;  // kv_transfer_params
  bool kv_has_eldr_sig = false;
  std::optional<std::string> remote_request_id;
  std::string fault;  // "emu_fault": "" or a fault for this request's prefill leg
};

// True for the fault names the emulator knows: malformed, error500, error400, garbage.
bool IsEmuFault(std::string_view fault);

// InvalidArgument (-> 400) for a body that is not an object, lacks prompt/messages, or has wrongly
// typed fields (an emu_fault that IsEmuFault rejects among them). `default_max_tokens` applies
// when neither max_tokens nor max_completion_tokens is given. An empty prompt becomes the one
// token 0.
Result<EmuRequest> ParseEmuRequest(bool chat, std::string_view body, const EngineModel& model,
                                   int64_t default_max_tokens);

// vLLM-style automatic prefix cache: chained hashes of whole `block_size`-token blocks, LRU
// bounded to `max_blocks`. Lookup follows vLLM in never counting the prompt's last token as
// cached (it must be recomputed to sample), so a fully cached block-aligned prompt hits one
// block less.
class PrefixCache {
 public:
  explicit PrefixCache(int max_blocks, int block_size = 16);
  // Tokens of the leading whole blocks already present, then remembers all the prompt's blocks.
  int64_t LookupAndInsert(std::span<const int32_t> tokens);

 private:
  int max_blocks_, block_size_;
  std::list<uint64_t> lru_;  // front = most recent
  std::unordered_map<uint64_t, std::list<uint64_t>::iterator> index_;
};

// The `model` every response to `r` names: the request's own name when it gave one, as both
// engines answer (vLLM's OpenAIServing._get_model_name in
// vllm/entrypoints/openai/serving_engine.py; SGLang's serving_completions.py and serving_chat.py
// answer `request.model`). A request without one is answered with `served_name` on backend vllm and
// with "default" on backend sglang, whose request models default `model` to DEFAULT_MODEL_NAME
// ("default", sglang/srt/entrypoints/openai/protocol.py). The view refers to `r.model`,
// `served_name` or a static string.
std::string_view ResponseModelName(std::string_view backend, const EmuRequest& r,
                                   std::string_view served_name);

struct PrefillContext {
  std::string id;          // response id (cmpl-... / chatcmpl-...)
  int64_t created = 0;     // unix seconds
  std::string model_name;  // echoed `model`
  std::string engine_id, host;
  int port = 0;
  int64_t cached_tokens = 0;  // vllm-0.21: leading prompt tokens found in the prefix cache
};

struct HttpAnswer {
  int status = 200;
  std::string body;
};

// The whole prefill answer to `r` (200 with the engine's payload, or the engine's 400 error), or
// the fault `r.fault` names (else `o.fault`). `o` must be valid (Validate()).
HttpAnswer BuildPrefillAnswer(const EmulatorOptions& o, const EngineModel& model,
                              const EmuRequest& r, const PrefillContext& c);

}  // namespace eldr::emu
