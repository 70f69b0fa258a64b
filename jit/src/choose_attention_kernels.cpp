// Pass: picks the kernel of every attention and attention_backward node and records it in the
// node's "kernel" attribute ("tiles" or "rows"; the interpreter ignores it), so the choice is
// visible in the dumped graph and part of the cache key.
//   tiles: the flash kernels of codegen/attention_tile_kernels.cpp (query/key tiles on the GEMM
//          micro-kernel, O(S) memory).
//   rows:  one query (or key) row per work item, dot products over its allowed keys.
// Rows are used for no keys and very wide heads, and, in automatic mode, while the band a
// query attends is narrow: a tile computes whole blocks of an NR + w wide band, so for small
// w it does up to twice the useful work. Measured with bench/attention_bench on znver4
// (2 threads, hd 64, f32; ms, tiles vs rows):
//   S 60, w 60, B 128:  fwd 1.05 vs 0.67, fwd+bwd 4.8 vs 3.2
//   S 512, w 64, B 16:  fwd 2.4 vs 1.2,   fwd+bwd 10.2 vs 9.9
//   S 128, w 128, B 128: fwd 3.4 vs 3.0,  fwd+bwd 15.5 vs 16.8
//   S 256, w 256, B 32: fwd 2.8 vs 2.9,   fwd+bwd 12.4 vs 16.5
//   S 4096, w 256, B 4: fwd 11.1 vs 13.6, fwd+bwd 46 vs 76
// hence tiles from 256 keys per query forward and 128 backward. Since the tiles read their
// block operands in place and the backward runs in one pass (attention_tile_kernels.cpp), on
// a Sapphire-Rapids-class AVX-512 machine (2 threads, f32, median of 20; ms, tiles
// vs rows, two alternating runs):
//   S 60, w 16, B 128:   fwd 0.51/0.60 vs 0.52/0.59, fwd+bwd 1.90/1.85 vs 1.72/1.73
//   S 60, w 60, B 128:   fwd 0.66/0.68 vs 0.78/0.77, fwd+bwd 2.14/2.09 vs 2.68/2.62
//   S 128, w 128, B 128: fwd 1.52/1.59 vs 2.74/2.67, fwd+bwd 5.2/5.3 vs 6.4/6.2
//   S 512, w 64, B 16:   fwd 0.75/0.79 vs 1.03/1.35, fwd+bwd 3.0/2.9 vs 4.5/4.6
// hence tiles from 48 keys in both directions (as for tensor masks).
// Tensor masks have no band (any key may be allowed: band = Sk), and their row kernel tests
// every (query, key) pair while the tiles skip all-zero mask blocks and test only mixed ones,
// so the crossover is far lower. The same window or causal mask as a u8 [S, S] tensor (same
// machine and settings; ms, tiles vs rows):
//   S 16, none, B 256:   fwd 0.59 vs 0.20,  fwd+bwd 2.8 vs 1.2
//   S 32, none, B 256:   fwd 0.77 vs 0.93,  fwd+bwd 5.5 vs 3.7
//   S 60, w 60, B 128:   fwd 1.18 vs 2.40,  fwd+bwd 5.8 vs 12.2
//   S 128, w 128, B 128: fwd 4.4 vs 10.1,   fwd+bwd 23 vs 39
//   S 512, w 64, B 16:   fwd 3.2 vs 21.9,   fwd+bwd 12.8 vs 88
//   S 1024, none, B 4:   fwd 7.9 vs 11.7,   fwd+bwd 37 vs 74
//   S 4096, w 256, B 4:  fwd 15.1 vs 367,   fwd+bwd 78 vs 1769
//   S 4096, causal, B 4: fwd 69 vs 297,     fwd+bwd 320 vs 1706
// (the predicate tiles: S 4096 w 256 fwd 11.1, fwd+bwd 44: a tensor mask's tiles walk and
// classify every block, aligned to 0 rather than to the band), hence tiles from 48 keys.
#include <edifice/core/op_attrs.hpp>

#include <edifice/core/graph_rewrite.hpp>

#include "plan.hpp"
#include "work_items.hpp"

namespace edifice::jit {
namespace {

constexpr std::int64_t kTiledForwardMinKeys = 48;
constexpr std::int64_t kTiledBackwardMinKeys = 48;
constexpr std::int64_t kTiledTensorMaskMinKeys = 48;

// Keys a query may attend (the widest row): the window, or all keys (tensor masks too).
std::int64_t band(const Node& n) {
  const Shape& k = n.inputs()[1].shape();
  const std::int64_t sk = k[k.size() - 2];
  const AttentionAttrs at = AttentionAttrs::from(n.attrs());
  if (at.mask == MaskKind::window) return std::min(sk, at.window);
  return sk;
}

bool tiled(const Node& n, AttentionKernel choice) {
  if (!tiles_supported(n) || choice == AttentionKernel::rows) return false;
  if (choice == AttentionKernel::tiles) return true;
  // Fewer query rows than a tile's lanes leave most of every tile idle (the absorbed last
  // layer's 4 rows over 60 keys with a tensor mask: 29 us tiles vs 5 us rows).
  const Shape& q = n.inputs()[0].shape();
  if (q[q.size() - 2] < attention_tiling(n).nr) return false;
  const bool tensor_mask = AttentionAttrs::from(n.attrs()).mask == MaskKind::tensor;
  const std::int64_t min_keys = tensor_mask               ? kTiledTensorMaskMinKeys
                                : n.op() == Op::attention ? kTiledForwardMinKeys
                                                          : kTiledBackwardMinKeys;
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
