#include "work_items.hpp"

#include "gemm_layout.hpp"

#include <edifice/core/op_attrs.hpp>

#include <algorithm>

namespace edifice::jit {
namespace {

std::int64_t numel(const Shape& s) {
  return shape_numel(s);
}

std::int64_t rows(const Shape& s) {
  if (s.empty()) return 1;
  return s.back() == 0 ? 0 : numel(s) / s.back();
}

// Product of the leading (batch) axes of an attention operand [..., S, D].
std::int64_t leading(const Shape& s) {
  std::int64_t n = 1;
  for (std::size_t i = 0; i + 2 < s.size(); ++i) n *= s[i];
  return n;
}

}  // namespace

GemmTiling attention_tiling(const Node& n) {
  GemmLayout g;
  g.k = n.inputs()[0].shape().back();
  return gemm_tiling(g, n.inputs()[0].dtype());
}

bool tiles_supported(const Node& n) {
  const Shape& q = n.inputs()[0].shape();
  const Shape& k = n.inputs()[1].shape();
  const Shape& v = n.inputs()[2].shape();
  return k[k.size() - 2] > 0 && q.back() <= kMaxTiledHeadDim && v.back() <= kMaxTiledHeadDim;
}

std::int64_t attention_query_tile(const Node& n) {
  const bool tiles = n.attrs().has("kernel") && n.attrs().get_string("kernel") == "tiles";
  return tiles && tiles_supported(n) ? attention_tiling(n).nr : 1;
}

std::int64_t attention_backward_chunk(const Node& n) {
  if (attention_query_tile(n) == 1) return 0;
  const AttentionAttrs at = AttentionAttrs::from(n.attrs());
  if (at.mask == MaskKind::tensor) return 0;
  const GemmTiling t = attention_tiling(n);
  const Shape& q = n.inputs()[0].shape();
  const Shape& v = n.inputs()[2].shape();
  if (q.back() < t.mr || v.back() < t.mr) return 0;
  const Shape& k = n.inputs()[1].shape();
  const std::int64_t sk = k[k.size() - 2];
  // Keys [a, a + chunk) leave the dq of the queries that also attend keys below a (the
  // window's first w - 1) to a second look at those keys: chunks of 8 windows or more keep
  // that under a few percent of the pairs. Batch entries that give the items alone keep all
  // their keys in one chunk, with no halo (S 4096, w 256, 4 heads, 2 threads: backward
  // 12.6 vs 13.1-13.3 ms with chunks of 2048 keys).
  constexpr std::int64_t kMinItems = 4;
  std::int64_t keys = sk;
  if (at.mask == MaskKind::window && leading(q) < kMinItems)
    keys = std::min(sk, std::max<std::int64_t>(8 * at.window, 256));
  keys = (keys + t.nr - 1) / t.nr * t.nr;
  const std::int64_t chunks = (sk + keys - 1) / keys;
  return leading(q) * chunks >= kMinItems ? keys : 0;
}

bool reduces_leading_axes(const Node& reduce) {
  const auto& axes = reduce.attrs().get_ints("axes");
  if (axes.empty() || static_cast<std::int64_t>(axes.size()) >= reduce.inputs()[0].rank())
    return false;
  for (std::size_t i = 0; i < axes.size(); ++i)
    if (axes[i] != static_cast<std::int64_t>(i)) return false;
  return true;
}

std::int64_t work_items(const Kernel& k) {
  const Node& a = *k.anchor;
  switch (k.kind) {
    case KernelKind::loop:
      return rows(k.root->outputs()[0].shape);
    case KernelKind::reduce:
      if (reduces_leading_axes(a))  // blocks of kReduceColumnBlock output columns
        return (numel(a.outputs()[0].shape) + kReduceColumnBlock - 1) / kReduceColumnBlock;
      return numel(a.outputs()[0].shape);
    case KernelKind::gemm:
      // One C tile (tile_m x tile_n of one batch entry, all of K) per item.
      return gemm_tiling(gemm_layout(a), a.outputs()[0].dtype).items;
    case KernelKind::softmax: {
      // One row when the axis is last; otherwise one block of kSoftmaxColumnBlock positions of
      // the axes after it (for one index of the axes before it).
      const Shape& s = a.outputs()[0].shape;
      const auto axis = static_cast<std::size_t>(a.attrs().get_int("axis"));
      std::int64_t outer = 1, inner = 1;
      for (std::size_t i = 0; i < axis; ++i) outer *= s[i];
      for (std::size_t i = axis + 1; i < s.size(); ++i) inner *= s[i];
      if (s[axis] == 0) return 0;
      if (inner == 1) return outer;
      return outer * ((inner + kSoftmaxColumnBlock - 1) / kSoftmaxColumnBlock);
    }
    case KernelKind::layer_norm:
      return rows(a.outputs()[0].shape);
    case KernelKind::layer_norm_backward: {
      // With gamma, one item per block of kLayerNormColumnBlock features for the
      // dgamma/dbeta column sums, then the rows of dx.
      const Shape& x = a.inputs()[0].shape();
      const std::int64_t blocks = (x.back() + kLayerNormColumnBlock - 1) / kLayerNormColumnBlock;
      return rows(x) + (a.num_outputs() == 3 ? blocks : 0);
    }
    case KernelKind::attention: {
      // Tiles of attention_query_tile query rows.
      const Shape& q = a.inputs()[0].shape();
      const std::int64_t tile = attention_query_tile(a);
      return leading(q) * ((q[q.size() - 2] + tile - 1) / tile);
    }
    case KernelKind::attention_backward: {
      // Query tiles (dq), then key tiles (dk, dv); or, in one pass, chunks of keys.
      const Shape& q = a.inputs()[0].shape();
      const Shape& kk = a.inputs()[1].shape();
      if (const std::int64_t keys = attention_backward_chunk(a))
        return leading(q) * ((kk[kk.size() - 2] + keys - 1) / keys);
      const std::int64_t tile = attention_query_tile(a);
      auto tiles = [&](std::int64_t n) { return (n + tile - 1) / tile; };
      return leading(q) * (tiles(q[q.size() - 2]) + tiles(kk[kk.size() - 2]));
    }
    case KernelKind::lstm_scan:  // blocks of kLstmRowBlock batch rows (rows are independent)
    case KernelKind::lstm_scan_backward:
      return (a.inputs()[0].shape()[0] + kLstmRowBlock - 1) / kLstmRowBlock;
    case KernelKind::scatter_add:
      return 1;
  }
  return 1;
}

double work_item_cost(const Kernel& k) {
  std::int64_t items = std::max<std::int64_t>(work_items(k), 1);
  double total = 0;
  for (const Node* n : k.nodes) {
    double out = 0;
    for (const auto& t : n->outputs()) out += static_cast<double>(numel(t.shape));
    if (n->op() == Op::dot_general) {
      GemmLayout g = gemm_layout(*n);
      out = 2.0 * static_cast<double>(g.batch * g.m * g.n * g.k);
    } else if (n->op() == Op::attention || n->op() == Op::attention_backward) {
      const Shape& q = n->inputs()[0].shape();
      const Shape& kk = n->inputs()[1].shape();
      out = 4.0 * static_cast<double>(numel(q)) * static_cast<double>(kk[kk.size() - 2]);
    } else if (n->op() == Op::lstm_scan || n->op() == Op::lstm_scan_backward) {
      // h.w_hh per step (the backward also dz.w_hh^T).
      const Shape& zx = n->inputs()[0].shape();
      const Shape& w = n->inputs()[1].shape();
      out = (n->op() == Op::lstm_scan ? 2.0 : 4.0) * static_cast<double>(zx[0] * zx[1]) *
            static_cast<double>(w[0] * w[1]);
    } else {
      for (const Value& in : n->inputs())
        out = std::max(out, static_cast<double>(numel(in.shape())));
    }
    total += out;
  }
  return total / static_cast<double>(items);
}

std::int64_t work_item_grain(const Kernel& k, int threads) {
  if (k.kind != KernelKind::gemm) return 1;
  const GemmTiling t = gemm_tiling(gemm_layout(*k.anchor), k.anchor->outputs()[0].dtype);
  const std::int64_t n_units = t.items / std::max<std::int64_t>(t.m_tiles, 1);
  return t.whole_k_b && n_units >= 2 * std::int64_t{threads} ? t.m_tiles : 1;
}

int choose_tasks(const Kernel& k, std::int64_t items, int threads) {
  double total = work_item_cost(k) * static_cast<double>(items);
  if (threads <= 1 || items <= 1 || total < 32768) return 1;
  return static_cast<int>(std::min<std::int64_t>(threads, items));
}

std::vector<KernelInfo> describe_kernels(const Plan& plan) {
  std::vector<KernelInfo> infos;
  for (const Kernel& k : plan.kernels) {
    KernelInfo info;
    info.name = k.name;
    info.kind = kernel_kind_name(k.kind);
    for (const Node* n : k.nodes) info.ops.emplace_back(op_name(n->op()));
    info.flops = work_item_cost(k) * static_cast<double>(std::max<std::int64_t>(work_items(k), 1));
    for (const Value& v : k.outputs)
      info.bytes += static_cast<double>(shape_numel(v.shape()) * dtype_size(v.dtype()));
    for (const Value& v : k.inputs)
      info.bytes += static_cast<double>(shape_numel(v.shape()) * dtype_size(v.dtype()));
    infos.push_back(std::move(info));
  }
  return infos;
}

}  // namespace edifice::jit
