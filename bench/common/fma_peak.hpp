#pragma once
// The machine's f32 FMA peak, measured: independent accumulator chains of full-width FMAs per
// core, on `threads` cores at once. Shared by gemm_bench and peer_bench.
#include <edifice/jit/target.hpp>

#include <algorithm>
#include <chrono>
#include <functional>
#include <thread>
#include <vector>

namespace edifice::bench {

inline double peak_seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// ---- FMA peak: 12 independent accumulator chains (more than latency x ports on current
// x86 cores) of vfmadd231ps on full-width registers, per core.

__attribute__((target("avx2,fma"))) inline double fma_loop_avx2(long iters) {
  float out[8];
  asm volatile(
      "vxorps %%ymm0, %%ymm0, %%ymm0\n\t"
      "vxorps %%ymm1, %%ymm1, %%ymm1\n\t"
      "vxorps %%ymm2, %%ymm2, %%ymm2\n\t"
      "vxorps %%ymm3, %%ymm3, %%ymm3\n\t"
      "vxorps %%ymm4, %%ymm4, %%ymm4\n\t"
      "vxorps %%ymm5, %%ymm5, %%ymm5\n\t"
      "vxorps %%ymm6, %%ymm6, %%ymm6\n\t"
      "vxorps %%ymm7, %%ymm7, %%ymm7\n\t"
      "vxorps %%ymm8, %%ymm8, %%ymm8\n\t"
      "vxorps %%ymm9, %%ymm9, %%ymm9\n\t"
      "vxorps %%ymm10, %%ymm10, %%ymm10\n\t"
      "vxorps %%ymm11, %%ymm11, %%ymm11\n\t"
      "vxorps %%ymm12, %%ymm12, %%ymm12\n\t"
      "vxorps %%ymm13, %%ymm13, %%ymm13\n\t"
      "1:\n\t"
      "vfmadd231ps %%ymm12, %%ymm13, %%ymm0\n\t"
      "vfmadd231ps %%ymm12, %%ymm13, %%ymm1\n\t"
      "vfmadd231ps %%ymm12, %%ymm13, %%ymm2\n\t"
      "vfmadd231ps %%ymm12, %%ymm13, %%ymm3\n\t"
      "vfmadd231ps %%ymm12, %%ymm13, %%ymm4\n\t"
      "vfmadd231ps %%ymm12, %%ymm13, %%ymm5\n\t"
      "vfmadd231ps %%ymm12, %%ymm13, %%ymm6\n\t"
      "vfmadd231ps %%ymm12, %%ymm13, %%ymm7\n\t"
      "vfmadd231ps %%ymm12, %%ymm13, %%ymm8\n\t"
      "vfmadd231ps %%ymm12, %%ymm13, %%ymm9\n\t"
      "vfmadd231ps %%ymm12, %%ymm13, %%ymm10\n\t"
      "vfmadd231ps %%ymm12, %%ymm13, %%ymm11\n\t"
      "dec %[n]\n\t"
      "jnz 1b\n\t"
      "vmovups %%ymm0, %[out]\n\t"
      "vzeroupper\n\t"
      : [n] "+r"(iters), [out] "=m"(out)
      :
      : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10",
        "xmm11", "xmm12", "xmm13", "cc");
  return out[0];
}

__attribute__((target("avx512f"))) inline double fma_loop_avx512(long iters) {
  float out[16];
  asm volatile(
      "vpxord %%zmm0, %%zmm0, %%zmm0\n\t"
      "vmovaps %%zmm0, %%zmm1\n\t"
      "vmovaps %%zmm0, %%zmm2\n\t"
      "vmovaps %%zmm0, %%zmm3\n\t"
      "vmovaps %%zmm0, %%zmm4\n\t"
      "vmovaps %%zmm0, %%zmm5\n\t"
      "vmovaps %%zmm0, %%zmm6\n\t"
      "vmovaps %%zmm0, %%zmm7\n\t"
      "vmovaps %%zmm0, %%zmm8\n\t"
      "vmovaps %%zmm0, %%zmm9\n\t"
      "vmovaps %%zmm0, %%zmm10\n\t"
      "vmovaps %%zmm0, %%zmm11\n\t"
      "vmovaps %%zmm0, %%zmm12\n\t"
      "vmovaps %%zmm0, %%zmm13\n\t"
      "1:\n\t"
      "vfmadd231ps %%zmm12, %%zmm13, %%zmm0\n\t"
      "vfmadd231ps %%zmm12, %%zmm13, %%zmm1\n\t"
      "vfmadd231ps %%zmm12, %%zmm13, %%zmm2\n\t"
      "vfmadd231ps %%zmm12, %%zmm13, %%zmm3\n\t"
      "vfmadd231ps %%zmm12, %%zmm13, %%zmm4\n\t"
      "vfmadd231ps %%zmm12, %%zmm13, %%zmm5\n\t"
      "vfmadd231ps %%zmm12, %%zmm13, %%zmm6\n\t"
      "vfmadd231ps %%zmm12, %%zmm13, %%zmm7\n\t"
      "vfmadd231ps %%zmm12, %%zmm13, %%zmm8\n\t"
      "vfmadd231ps %%zmm12, %%zmm13, %%zmm9\n\t"
      "vfmadd231ps %%zmm12, %%zmm13, %%zmm10\n\t"
      "vfmadd231ps %%zmm12, %%zmm13, %%zmm11\n\t"
      "dec %[n]\n\t"
      "jnz 1b\n\t"
      "vmovups %%zmm0, %[out]\n\t"
      "vzeroupper\n\t"
      : [n] "+r"(iters), [out] "=m"(out)
      :
      : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10",
        "xmm11", "xmm12", "xmm13", "cc");
  return out[0];
}

inline double fma_loop_sse(long iters) {
  float out[4];
  asm volatile(
      "xorps %%xmm0, %%xmm0\n\t"
      "xorps %%xmm1, %%xmm1\n\t"
      "xorps %%xmm2, %%xmm2\n\t"
      "xorps %%xmm3, %%xmm3\n\t"
      "xorps %%xmm4, %%xmm4\n\t"
      "xorps %%xmm5, %%xmm5\n\t"
      "xorps %%xmm12, %%xmm12\n\t"
      "1:\n\t"
      "mulps %%xmm12, %%xmm0\n\t"
      "addps %%xmm12, %%xmm1\n\t"
      "mulps %%xmm12, %%xmm2\n\t"
      "addps %%xmm12, %%xmm3\n\t"
      "mulps %%xmm12, %%xmm4\n\t"
      "addps %%xmm12, %%xmm5\n\t"
      "dec %[n]\n\t"
      "jnz 1b\n\t"
      "movups %%xmm0, %[out]\n\t"
      : [n] "+r"(iters), [out] "=m"(out)
      :
      : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm12", "cc");
  return out[0];
}

// GFLOP/s of the FMA loop on `threads` cores at once: the best of 3 repetitions of `iters`
// loop iterations per thread (12 FMAs each; the default takes about 0.2-0.3 s per repetition).
inline double measure_peak(jit::Isa isa, int threads, long iters = 100'000'000) {
  double flops_per_iter = 12.0 * 2 * 8;  // 12 FMAs of 8 lanes
  std::function<double(long)> loop = fma_loop_avx2;
  if (isa == jit::Isa::avx512) {
    loop = fma_loop_avx512;
    flops_per_iter = 12.0 * 2 * 16;
  } else if (isa < jit::Isa::avx2) {
    loop = fma_loop_sse;
    flops_per_iter = 6.0 * 4;  // separate mul and add, 4 lanes
  }
  loop(iters / 10);  // warm up (clock ramp)
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) {
    auto start = std::chrono::steady_clock::now();
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) pool.emplace_back([&] { loop(iters); });
    for (auto& th : pool) th.join();
    best = std::max(best, threads * iters * flops_per_iter / peak_seconds_since(start) / 1e9);
  }
  return best;
}

}  // namespace edifice::bench
