// -----------------------------------------------------------------------------
// File: emu/model.h
// -----------------------------------------------------------------------------
// EngineModel: what an emulated MoE engine (`eldr emulate`) computes instead of a forward pass.
// It is the simulator's workload model (sim/workload.h) and step-cost model (sim/cost_model.h)
// made deterministic in the prompt, so that a real proxy in front of emulated engines sees the
// routing behaviour the simulator predicts:
//   * Tokenize: whitespace-separated words -> token ids (hash of the word), a stand-in tokenizer
//     that prefill and decode emulators agree on;
//   * Archetype: each prompt is one of the workload's requests, chosen by the hash of its first
//     KV block, so that prompts sharing a first block share a domain and an expert profile;
//   * PromptPicks: per-token picks (top_k distinct experts per MoE layer), drawn from the
//     archetype's prompt counts with a random stream seeded by the token's whole prefix: identical
//     prefixes give identical picks;
//   * StepUs: time of one continuous-batching decode step of a set of sequences, from the exact
//     distinct experts of their current tokens (the archetypes' decode picks).
//
// Thread-safety: immutable after Create; share it (shared_ptr<const EngineModel>).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "eldr/geometry.h"
#include "eldr/sim/cost_model.h"
#include "eldr/sim/workload.h"
#include "eldr/status.h"

namespace eldr::emu {

struct EngineModelOptions {
  int archetypes = 256;  // workload requests prompts are mapped onto
  int vocab = 50000;     // token ids are in [0, vocab)
  int block_size = 16;   // tokens hashed to choose the archetype
  Status Validate() const;
};

// One sequence of a decode batch.
struct DecodeSeq {
  int archetype = 0;
  int64_t generated = 0;  // tokens already generated (selects the decode pick pattern)
  int64_t context = 0;    // prompt + generated tokens
};

class EngineModel {
 public:
  // `workload` supplies the archetypes (its evaluated requests; at least one) and `cost` the step
  // times. The options' archetypes caps how many requests are used.
  static Result<std::shared_ptr<const EngineModel>> Create(sim::Workload workload,
                                                           sim::CostParams cost,
                                                           EngineModelOptions options = {});

  const ModelGeometry& geometry() const { return w_.geometry; }
  const sim::CostParams& cost() const { return cost_; }
  const sim::Workload& workload() const { return w_; }
  int archetypes() const { return static_cast<int>(w_.requests.size()); }

  std::vector<int32_t> Tokenize(std::string_view text) const;
  int Archetype(std::span<const int32_t> tokens) const;
  const std::string& Label(int archetype) const;

  // Picks of prompt tokens [start, tokens.size()), row-major [rows][moe_layers][top_k].
  std::vector<int32_t> PromptPicks(std::span<const int32_t> tokens, int64_t start = 0) const;

  // Picks of the first `rows` generated tokens of a sequence of `archetype`, row-major
  // [rows][moe_layers][top_k], each layer's picks ascending: token j uses the archetype's decode
  // pattern j (the one StepDistinct uses at generated = j).
  std::vector<int32_t> DecodePicks(int archetype, int64_t rows) const;

  // Distinct experts per MoE layer of one step over `batch`, into `distinct` (moe_layers).
  void StepDistinct(std::span<const DecodeSeq> batch, std::span<int> distinct) const;
  // Microseconds of one decode step over `batch` (empty batch: 0).
  double StepUs(std::span<const DecodeSeq> batch) const;

 private:
  EngineModel() = default;
  sim::Workload w_;
  sim::CostParams cost_;
  EngineModelOptions o_;
  static constexpr int kTableBits = 10, kTable = 1 << kTableBits;
  std::vector<uint16_t> table_;  // [archetype][layer][kTable]: inverse CDF of the prompt counts
};

}  // namespace eldr::emu
