// Private: hot kernels built twice, for AVX2+FMA and for baseline x86-64, and picked at run time
// by CPU *features*. (GCC's target_clones("arch=haswell") dispatches on the CPU model and so
// silently took the SSE path on AMD EPYC; see docs/perf.md.)
#pragma once

namespace eldr::internal {

#if defined(__x86_64__) && defined(__GNUC__)
#define ELDR_X86_DISPATCH 1
enum class Isa { kBase, kAvx2, kAvx512 };
inline Isa CpuIsa() {
  static const Isa isa = [] {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl"))
      return Isa::kAvx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::kAvx2;
    return Isa::kBase;
  }();
  return isa;
}
#define ELDR_TARGET_AVX2 __attribute__((target("avx2,fma")))
#define ELDR_TARGET_AVX512 __attribute__((target("avx512f,avx512vl,avx2,fma")))
#else
#define ELDR_X86_DISPATCH 0
#define ELDR_TARGET_AVX2
#define ELDR_TARGET_AVX512
#endif
#define ELDR_INLINE_BODY inline __attribute__((always_inline))

// Dot product with enough independent float lanes to hide FMA latency (vectorises without
// -ffast-math): 32 on AVX2, 64 on AVX-512.
float Dot(const float* a, const float* b, int d);

}  // namespace eldr::internal
