// Peak scratch memory of the attention paths of models::multi_head at the module's own example
// (seq 128, batch 32, dim 256, chunk 32): the original's standard path materialises the
// 32 x 128 x 128 f32 scores (2 MB), chunked attention 32 x 32 x 128 (512 KB). Here each path is
// compiled by the JIT and its arena (all intermediate buffers of one run) is measured, next to
// an explicitly unfused softmax(q.k^T).v for reference.
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
  Value scores = o::mul(o::dot_general(q, k, {{2}, {2}, {0}, {0}}), o::scalar(1 / std::sqrt(double(d)), DType::f32));
  scores = o::select(causal, scores, o::full_like(scores, -1e9));
  Value unfused = o::dot_general(o::softmax(scores, -1), v, {{2}, {1}, {0}, {0}});
  struct Case {
    const char* name;
    Value out;
  } cases[] = {
      {"unfused softmax(q.k^T).v (reference)", unfused},
      {"scaled_dot_product_attention (fused kernel)", mh::scaled_dot_product_attention(q, k, v, {.mask = causal})},
      {"chunked_attention, chunk 32", mh::chunked_attention(q, k, v, {.chunk_size = 32, .mask = causal})},
      {"memory_efficient_attention, chunk 32", mh::memory_efficient_attention(q, k, v, {.chunk_size = 32, .causal = true})},
  };
  std::printf("attention scratch memory, batch %lld, seq %lld, dim %lld, causal (f32)\n",
              static_cast<long long>(b), static_cast<long long>(s), static_cast<long long>(d));
  std::printf("%-46s %14s %20s\n", "path", "arena bytes", "largest intermediate");
  for (const Case& c : cases) {
    Graph g({q, k, v}, {c.out});
    auto exe = jit::compile(g, {{b, s, d}, {b, s, d}, {b, s, d}}, {.disk_cache = false});
    std::printf("%-46s %14lld %20lld\n", c.name, static_cast<long long>(exe->arena_bytes()),
                static_cast<long long>(exe->largest_intermediate_bytes()));
  }
  std::printf("The fused kernel keeps one query row's scores (seq floats per thread) on the stack;\n"
              "chunked attention runs it per query chunk; the memory-efficient path is built from\n"
              "graph ops and materialises one batch x seq x chunk score block at a time.\n");
  return 0;
}
