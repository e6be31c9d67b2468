// Private: kernels compiled for AVX2+FMA and baseline x86-64, picked at load time (GCC ifunc),
// so one binary is fast on recent CPUs and still runs everywhere.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && \
    !defined(__SANITIZE_ADDRESS__)
#define ELDR_MULTIVERSION __attribute__((target_clones("arch=haswell", "default")))
#else
#define ELDR_MULTIVERSION
#endif

namespace eldr::internal {

// Dot product with 16 independent float lanes (vectorises without -ffast-math).
float Dot(const float* a, const float* b, int d);

}  // namespace eldr::internal
