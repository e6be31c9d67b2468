// -----------------------------------------------------------------------------
// File: signature_cache.h
// -----------------------------------------------------------------------------
// SignatureCache: expert counts of prompt prefixes the router has already seen, so that a prompt
// whose prefix the engine served from its prefix cache still gets its exact signature, and so
// that a decode worker can be chosen before prefill from a predicted signature
// (the ELDR paper (arXiv 2607.00466)).
//
// Counts are additive over tokens. The cache stores, per *chunk* of `chunk_blocks` full KV blocks,
// the counts of that chunk's tokens, keyed by the chained hash of the chunk's last block (which
// identifies the whole prefix). A prompt's counts = Σ cached chunks of its longest cached prefix
// + the counts of the remaining tokens. Grouping blocks into chunks is what keeps memory within
// ~64 bytes per cached token: one chunk costs L*E bytes (uint8 counts; larger values spill to a
// small side list) plus a fixed overhead, whatever its length. chunk_blocks = 1 gives per-block
// granularity at a higher cost per token.
//
// Eviction is LRU per shard under a byte budget (16 shards by default, picked by the key's top
// bits). A lookup stops at the first missing chunk, so an evicted middle chunk only shortens the
// usable prefix; it never yields wrong counts.
//
// Thread-safety: all methods are thread-safe (one mutex per shard).
//
// Example:
//   auto hashes = ChainedBlockHashes(token_ids, cache.options().block_size);
//   SignatureCache::Prefix p = cache.Lookup(hashes);            // p.tokens covered, p.counts
//   ... engine returns picks for tokens [p.tokens, T) (or all of them) ...
//   ELDR_ASSIGN_OR_RETURN(ExpertCounts all, cache.Resolve(hashes, T, picks, first_token));
#pragma once

#include <atomic>
#include <cstdint>
#include <list>
#include <memory>
#include <span>
#include <unordered_map>
#include <vector>

#include "eldr/expert_counts.h"
#include "eldr/payload.h"
#include "eldr/status.h"

namespace eldr {

struct SignatureCacheOptions {
  int block_size = 16;    // tokens per KV block (must match the hashes)
  int chunk_blocks = 16;  // blocks per cached chunk (256 tokens by default)
  size_t memory_budget_bytes = size_t{256} << 20;  // upper bound on accounted bytes
  int shards = 16;                                 // power of two in [1, 256]
  Status Validate() const;
};

struct SignatureCacheStats {
  uint64_t lookups = 0;
  uint64_t hit_chunks = 0;  // chunks returned by lookups
  uint64_t hit_tokens = 0;  // prompt tokens covered by cached chunks
  uint64_t inserted_chunks = 0;
  uint64_t evicted_chunks = 0;
  uint64_t entries = 0;        // chunks held now
  uint64_t bytes = 0;          // accounted bytes held now (<= budget)
  uint64_t cached_tokens = 0;  // tokens covered by the chunks held now
};

class SignatureCache {
 public:
  // Validates the options and shape.
  static Result<std::unique_ptr<SignatureCache>> Create(int layers, int experts,
                                                        SignatureCacheOptions options);
  // REQUIRES: options.Validate().ok(), layers > 0, 0 < experts <= 65535 (use Create to check).
  SignatureCache(int layers, int experts, SignatureCacheOptions options);
  SignatureCache(const SignatureCache&) = delete;
  SignatureCache& operator=(const SignatureCache&) = delete;
  ~SignatureCache();

  struct Prefix {
    int64_t tokens = 0;  // length of the cached prefix (a multiple of the chunk length)
    int chunks = 0;
    ExpertCounts counts;  // counts of tokens [0, tokens)
  };

  // Longest prefix of whole chunks present in the cache. `block_hashes` as ChainedBlockHashes.
  Prefix Lookup(std::span<const uint64_t> block_hashes) const;

  // Stores the chunks fully covered by `picks`, whose row 0 is prompt token `first_token`.
  // Chunks already present are refreshed (LRU), not rewritten. InvalidArgument on a shape
  // mismatch; no partial insert of a bad table can happen (PickTables are pre-validated).
  Status Insert(std::span<const uint64_t> block_hashes, const PickTable& picks,
                int64_t first_token);

  // The whole prompt's counts from the cached prefix plus `picks` (rows for prompt tokens
  // [first_token, first_token + picks.tokens())), then Insert. FailedPrecondition if the picks
  // start after the cached prefix ends (tokens in between are unknown) or do not reach
  // `prompt_tokens`.
  Result<ExpertCounts> Resolve(std::span<const uint64_t> block_hashes, int64_t prompt_tokens,
                               const PickTable& picks, int64_t first_token);

  SignatureCacheStats Stats() const;
  const SignatureCacheOptions& options() const { return options_; }
  int64_t chunk_tokens() const {
    return static_cast<int64_t>(options_.block_size) * options_.chunk_blocks;
  }
  // Accounted bytes for one chunk with no spilled entries.
  size_t ChunkBytes() const;

 private:
  struct Entry;
  struct Shard;
  Shard& ShardFor(uint64_t key) const;
  bool Get(uint64_t key, ExpertCounts* add_to) const;
  void Put(uint64_t key, const ExpertCounts& chunk_counts, int64_t chunk_tokens);

  int layers_, experts_;
  SignatureCacheOptions options_;
  std::unique_ptr<Shard[]> shards_;
  int shard_shift_;
  mutable std::atomic<uint64_t> lookups_{0}, hit_chunks_{0}, hit_tokens_{0}, inserted_{0},
      evicted_{0};
};

}  // namespace eldr
