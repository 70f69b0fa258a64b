// Pass: picks the kernel of every attention and attention_backward node and records it in the
// node's "kernel" attribute ("tiles" or "rows"; the interpreter ignores it), so the choice is
// visible in the dumped graph and part of the cache key.
//   tiles: the flash kernels of codegen/attention_kernels.cpp (query/key tiles on the GEMM
//          micro-kernel, O(S) memory).
//   rows:  one query (or key) row per work item, dot products over its allowed keys.
// Rows are used for tensor masks (no tiled variant), no keys and very wide heads, and, in
// automatic mode, while the band a query attends is narrow: a tile computes whole blocks of
// an NR + w wide band, so for small w it does up to twice the useful work. Measured with
// bench/attention_bench on znver4 (2 threads, hd 64, f32; ms, tiles vs rows):
//   S 60, w 60, B 128:  fwd 1.05 vs 0.67, fwd+bwd 4.8 vs 3.2
//   S 512, w 64, B 16:  fwd 2.4 vs 1.2,   fwd+bwd 10.2 vs 9.9
//   S 128, w 128, B 128: fwd 3.4 vs 3.0,  fwd+bwd 15.5 vs 16.8
//   S 256, w 256, B 32: fwd 2.8 vs 2.9,   fwd+bwd 12.4 vs 16.5
//   S 4096, w 256, B 4: fwd 11.1 vs 13.6, fwd+bwd 46 vs 76
// hence tiles from 256 keys per query forward and 128 backward.
#include "plan.hpp"
#include "rewrite.hpp"
#include "work_items.hpp"

namespace edifice::jit {
namespace {

constexpr std::int64_t kTiledForwardMinKeys = 256;
constexpr std::int64_t kTiledBackwardMinKeys = 128;

// Keys a query attends (the widest row): the window, or all keys.
std::int64_t band(const Node& n) {
  const Shape& k = n.inputs()[1].shape();
  const std::int64_t sk = k[k.size() - 2];
  if (n.attrs().get_string("mask") == "window") return std::min(sk, n.attrs().get_int("window"));
  return sk;
}

bool tiled(const Node& n, AttentionKernel choice) {
  if (!tiles_supported(n) || choice == AttentionKernel::rows) return false;
  if (choice == AttentionKernel::tiles) return true;
  const std::int64_t min_keys =
      n.op() == Op::attention ? kTiledForwardMinKeys : kTiledBackwardMinKeys;
  return band(n) >= min_keys;
}

}  // namespace

Graph choose_attention_kernels(const Graph& graph, AttentionKernel choice) {
  return rewrite_nodes(
      graph,
      [choice](const Node& n,
               const std::vector<Value>& inputs) -> std::optional<std::vector<Value>> {
        if (n.op() != Op::attention && n.op() != Op::attention_backward) return std::nullopt;
        const std::string kernel = tiled(n, choice) ? "tiles" : "rows";
        if (n.attrs().has("kernel") && n.attrs().get_string("kernel") == kernel)
          return std::nullopt;
        Attributes attrs = n.attrs();
        attrs.set("kernel", kernel);
        return make_node(n.op(), inputs, attrs, n.location());
      });
}

}  // namespace edifice::jit
