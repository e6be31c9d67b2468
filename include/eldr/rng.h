// -----------------------------------------------------------------------------
// File: rng.h
// -----------------------------------------------------------------------------
// Rng: the one source of randomness in eldr (xoshiro256**, seeded through splitmix64). Every
// component that needs randomness takes an Rng& or a seed, so that a run is reproducible for a
// seed and tests never depend on unseeded randomness.
//
// Thread-safety: not thread-safe; give each thread its own Rng.
#pragma once

#include <cstdint>
#include <span>
#include <utility>

namespace eldr {

class Rng {
 public:
  explicit Rng(uint64_t seed = 1);

  uint64_t Next();
  // Uniform in [0, n). REQUIRES: n > 0. Unbiased (Lemire's method).
  uint64_t Uniform(uint64_t n);
  // Uniform in [0, 1).
  double UniformDouble() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }

 private:
  uint64_t s_[4];
};

// Fisher-Yates: a uniform permutation of `v`, drawing Uniform(i) for i = size .. 2.
template <class T>
void Shuffle(std::span<T> v, Rng& rng) {
  for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[rng.Uniform(i)]);
}

}  // namespace eldr
