// -----------------------------------------------------------------------------
// File: block_hash.h
// -----------------------------------------------------------------------------
// Prefix-chained block hashes over token ids, the keys of the signature cache. Block i's hash is
// XXH3-64 of the block's token ids (little-endian int32) seeded with block i-1's hash (block 0
// is seeded with `seed`), so a hash identifies the whole prefix up to the end of its block. Only
// full blocks are hashed, as in vLLM's prefix cache. eldr keys on its own hashes, never on an
// engine's.
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace eldr {

// Hashes of the floor(tokens.size() / block_size) full blocks. REQUIRES: block_size > 0.
std::vector<uint64_t> ChainedBlockHashes(std::span<const int32_t> tokens, int block_size,
                                         uint64_t seed = 0);

}  // namespace eldr
