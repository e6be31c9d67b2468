// -----------------------------------------------------------------------------
// File: emu/emulator.h
// -----------------------------------------------------------------------------
// Emulator: `eldr emulate`, an HTTP engine that speaks the wire formats of vLLM (NIXL PD flow)
// and SGLang (bootstrap flow) without a GPU, for tests, demos and dry runs of a router
// configuration (docs/serve.md).
//
//   prefill role: waits the model's prefill time (one prefill at a time, FIFO), answers one token
//     with kv_transfer_params, prompt_token_ids (return_token_ids) and the prompt's routed experts
//     (vLLM base64 .npy uint8 or nested lists, SGLang sgl_ext base64 int32, or eldr_sig counts),
//     honouring routed_experts_prompt_start;
//   decode role: waits the KV-transfer time, then runs continuous batching in real time: each
//     step lasts EngineModel::StepUs of the batch (its distinct experts set its speed) and gives
//     every sequence one token, streamed as SSE (or returned whole).
//
// Faults for tests: `fault = "malformed"` makes prefill answers carry a corrupt expert payload,
// `"error500"` makes every completion fail with 500.
//
// Threads: one io_context thread. Everything the model computes is deterministic in the prompt.
#pragma once

#include <memory>
#include <string>

#include "eldr/emu/model.h"
#include "eldr/status.h"

namespace eldr::emu {

struct EmulatorOptions {
  std::string host = "127.0.0.1";
  int port = 0;                         // 0 = any free port (printed, and in ready_file)
  std::string role = "decode";          // prefill | decode
  std::string backend = "vllm";         // vllm | sglang
  std::string experts_format = "auto";  // auto | vllm-npy | vllm-list | sglang | eldr_sig | none
  double time_scale = 1.0;              // multiplies every emulated duration; 0 = instant
  int max_batch = 256;                  // decode sequences per step; more wait
  int default_max_tokens = 16;          // when the request gives none
  std::string fault;                    // "" | malformed | error500
  std::string ready_file;
  Status Validate() const;
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

}  // namespace eldr::emu
