#include "eldr/block_hash.h"

#include <xxhash.h>

namespace eldr {

std::vector<uint64_t> ChainedBlockHashes(std::span<const int32_t> tokens, int block_size,
                                         uint64_t seed) {
  std::vector<uint64_t> out;
  if (block_size <= 0) return out;
  const size_t n = tokens.size() / block_size;
  out.reserve(n);
  uint64_t parent = seed;
  for (size_t b = 0; b < n; ++b) {
    parent =
        XXH3_64bits_withSeed(tokens.data() + b * block_size, block_size * sizeof(int32_t), parent);
    out.push_back(parent);
  }
  return out;
}

}  // namespace eldr
