// Peak scratch memory of the attention paths of models::multi_head at the module's own example
// (seq 128, batch 32, dim 256, chunk 32): the original's standard path materialises the
// 32 x 128 x 128 f32 scores (2 MB), chunked attention 32 x 32 x 128 (512 KB). Here each path is
// compiled by the JIT with the row and with the tiled attention kernels, and its arena (all
// intermediate buffers of one run) is measured, next to an explicitly unfused
// softmax(q.k^T).v for reference; the kernels' per-thread stack scratch is computed from
// their layout.
#include <edifice/models/multi_head.hpp>

#include <cmath>
#include <cstdio>

using namespace edifice;
namespace mh = edifice::models::multi_head;
namespace o = edifice::ops;

int main() {
  const std::int64_t b = 32, s = 128, d = 256;
  auto q = o::parameter("q", DType::f32, {b, s, d});
  auto k = o::parameter("k", DType::f32, {b, s, d});
  auto v = o::parameter("v", DType::f32, {b, s, d});
  Value causal = o::constant(mh::causal_mask(s));
  Value scores = o::mul(o::dot_general(q, k, {{2}, {2}, {0}, {0}}),
                        o::scalar(1 / std::sqrt(double(d)), DType::f32));
  scores = o::select(causal, scores, o::full_like(scores, -1e9));
  Value unfused = o::dot_general(o::softmax(scores, -1), v, {{2}, {1}, {0}, {0}});
  struct Case {
    const char* name;
    Value out;
  } cases[] = {
      {"unfused softmax(q.k^T).v (reference)", unfused},
      {"scaled_dot_product_attention (fused kernel)",
       mh::scaled_dot_product_attention(q, k, v, {.mask = causal})},
      {"chunked_attention, chunk 32",
       mh::chunked_attention(q, k, v, {.chunk_size = 32, .mask = causal})},
      {"memory_efficient_attention, chunk 32",
       mh::memory_efficient_attention(q, k, v, {.chunk_size = 32, .causal = true})},
  };
  std::printf("attention scratch memory, batch %lld, seq %lld, dim %lld, causal (f32)\n",
              static_cast<long long>(b), static_cast<long long>(s), static_cast<long long>(d));
  std::printf("%-46s %-6s %12s %14s %16s\n", "path", "kernel", "arena bytes", "largest interm.",
              "stack per thread");
  // Stack scratch of the attention kernels per thread (attention_row_kernels.cpp and
  // attention_tile_kernels.cpp): the row kernel one row of scores and one output row; the
  // tiled kernel its packed Qᵀ (D x 32), a key block of K and V (72 x D each), the block's
  // scores (72 x 32) and Oᵀ (D x 32) on AVX-512 f32.
  const std::int64_t rows_stack = 4 * (s + d);
  const std::int64_t tiles_stack =
      4 * (d * 32 + 72 * d + 72 * (d + 11) / 12 * 12 + 72 * 32 + (d + 11) / 12 * 12 * 32 + 4 * 32);
  for (const Case& c : cases) {
    for (auto kernel : {jit::AttentionKernel::rows, jit::AttentionKernel::tiles}) {
      Graph g({q, k, v}, {c.out});
      auto exe = jit::compile(g, {{b, s, d}, {b, s, d}, {b, s, d}},
                              {.disk_cache = false, .attention_kernel = kernel});
      bool fused = false;
      for (const auto& info : exe->kernels()) fused |= info.kind == "attention";
      const bool tiles = kernel == jit::AttentionKernel::tiles;
      std::printf("%-46s %-6s %12lld %14lld %16lld\n", c.name,
                  fused ? (tiles ? "tiles" : "rows") : "-",
                  static_cast<long long>(exe->arena_bytes()),
                  static_cast<long long>(exe->largest_intermediate_bytes()),
                  static_cast<long long>(fused ? (tiles ? tiles_stack : rows_stack) : 0));
      // Tensor masks (the first two fused paths) always run the row kernel.
      if (!fused || c.out.node().inputs().size() > 3) break;
    }
  }
  std::printf(
      "No fused path materialises the %lld x %lld scores: the row kernel keeps one row of\n"
      "them per thread, the tiled kernel one 72-key block for 32 queries. chunked_attention\n"
      "and memory_efficient_attention are the same fused op (their chunking is the\n"
      "kernels' tiling).\n",
      static_cast<long long>(s), static_cast<long long>(s));
  return 0;
}
