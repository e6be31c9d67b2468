// -----------------------------------------------------------------------------
// File: server/prompt_signal.h
// -----------------------------------------------------------------------------
// PromptSignal: what the router knows of a prompt's expert counts, behind one prompt key shared
// by both PD flows. It joins the prefill payload (pd.h), the signature cache (exact counts of
// prefix chunks seen before, keyed by block hashes of token ids) and the prefix memo (predicted
// counts from text prefixes, for the SGLang flow that must choose the decoder before prefill).
//
//   vLLM (decode chosen after prefill):   Begin -> KnownTokens (ask only for the rest) ->
//                                         FromPrefill (counts to route by; fills the cache)
//   SGLang (decode chosen first):         Begin -> Predict (counts to route by) -> Learn
//
// Thread-safety: thread-safe (the cache and the memo lock internally); a Prompt is a plain
// value owned by one request.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string_view>
#include <vector>

#include "eldr/expert_counts.h"
#include "eldr/server/pd.h"
#include "eldr/server/prefix_memo.h"
#include "eldr/signature_cache.h"

namespace eldr::server {

class PromptSignal {
 public:
  // REQUIRES: cache has the model's [moe_layers, experts] shape.
  PromptSignal(std::unique_ptr<SignatureCache> cache, size_t memo_budget_bytes);

  // One request's prompt: its key bytes (text, or the token ids' bytes when the client sent
  // ids) and, with token ids, the block hashes the cache is keyed by.
  struct Prompt {
    std::string_view key;          // points into the request
    std::vector<uint64_t> hashes;  // empty without client token ids
    int64_t tokens = -1;           // client token ids' count; -1 for text prompts
  };
  Prompt Begin(const ClientRequest& req) const;

  // Prompt tokens at the start whose counts the cache holds (0 without token ids). Never the
  // whole prompt: the engine is always asked for at least one row.
  int64_t KnownTokens(const Prompt& p) const;

  // Counts to route a prompt by before its prefill: the cache's longest cached prefix, else the
  // memo's longest text prefix; nullopt when nothing is known.
  std::optional<ExpertCounts> Predict(const Prompt& p) const;

  struct Signal {
    std::optional<ExpertCounts> counts;  // nullopt: no usable signature
    // The counts cover part of the prompt (rows the engine did not send that the cache cannot
    // fill, or -1 rows inside the prompt).
    bool partial = false;
  };
  // The counts of a prefill answer: eldr_sig counts as they are; picks completed by the cached
  // prefix when they start after token 0, then stored (never when partial or rejected). The
  // prompt's token ids are the engine's when it returned them, else the client's.
  Signal FromPrefill(const Prompt& p, const PrefillResult& pr);

  // Remembers a prefill answer of a prompt routed by Predict (SGLang): memo and cache.
  void Learn(const Prompt& p, const PrefillResult& pr);

  const SignatureCache& cache() const { return *cache_; }
  const PrefixMemo& memo() const { return memo_; }

 private:
  std::unique_ptr<SignatureCache> cache_;
  PrefixMemo memo_;
};

}  // namespace eldr::server
