#pragma once
// The graph and inputs the disk-cache tests compile, shared with the jit_cache_probe helper
// (a second process must build the very same graph). Every call builds new Graph and Node
// objects: identical structure, so identical hash and disk-cache key.
#include <edifice/core/ops.hpp>

#include <cstdint>
#include <vector>

namespace edifice::cache_test {

/// x [?, 24] f32, w [24, 16], b [16]: a GEMM with an epilogue, a reduction and a loop kernel.
inline Graph make_graph() {
  namespace o = edifice::ops;
  auto x = o::parameter("x", DType::f32, {kDynamic, 24});
  auto w = o::parameter("w", DType::f32, {24, 16});
  auto b = o::parameter("b", DType::f32, {16});
  auto h = o::gelu(o::matmul(x, w) + b);
  return Graph({x, w, b}, {h, o::reduce_sum(o::exp(o::tanh(h)), {1}), o::sin(x) * 2.0});
}

/// Deterministic inputs for batch `rows` (no <random>: the same values in every process).
inline std::vector<Tensor> make_inputs(std::int64_t rows) {
  auto fill = [](Shape shape, std::uint32_t seed) {
    Tensor t(DType::f32, std::move(shape));
    std::uint32_t s = seed;
    for (std::int64_t i = 0; i < t.numel(); ++i) {
      s = s * 1664525u + 1013904223u;
      t.set_from_double(i, static_cast<double>(s >> 8) / 16777216.0 * 2.0 - 1.0);
    }
    return t;
  };
  return {fill({rows, 24}, 1), fill({24, 16}, 2), fill({16}, 3)};
}

}  // namespace edifice::cache_test
