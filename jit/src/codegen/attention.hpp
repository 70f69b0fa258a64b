#pragma once
// What the attention kernels share (attention_row_kernels.cpp: the row kernels and the entry
// points; attention_tile_kernels.cpp: the tiled (flash) kernels): the sizes and mask of an
// attention node with the index arithmetic of its mask, and the masked-pair test of the
// backward kernels.

#include <edifice/core/op_attrs.hpp>

#include "structured_ir.hpp"

#include <cmath>
#include <functional>
#include <initializer_list>
#include <utility>
#include <vector>

namespace edifice::jit::codegen {

// Sizes, attributes and mask addressing of an attention or attention_backward node:
// q [..., Sq, D], k [..., Sk, D], v [..., Sk, Dv] with B = product of the leading axes.
struct Attention {
  MaskKind kind = MaskKind::none;
  std::int64_t window = 0;
  // Query row i sits at position i + query_offset for the causal and window predicates.
  std::int64_t query_offset = 0;
  double scale = 1, fill = 0;
  DType d = DType::f32;
  Shape batch_shape;
  std::int64_t batch = 1, sq = 0, sk = 0, dim = 0, dv = 0;
  // Tensor masks: element stride of the mask per q axis (0 where the mask broadcasts).
  std::vector<std::int64_t> mask_strides;

  explicit Attention(const Node& n) {
    const AttentionAttrs attrs = AttentionAttrs::from(n.attrs());
    kind = attrs.mask;
    window = kind == MaskKind::window ? attrs.window : 0;
    query_offset = attrs.query_offset;
    fill = attrs.fill;
    const Value q = n.inputs()[0];
    const Shape& qs = q.shape();
    const std::size_t r = qs.size();
    d = q.dtype();
    batch_shape.assign(qs.begin(), qs.end() - 2);
    batch = extent_product(batch_shape, 0, batch_shape.size());
    sq = qs[r - 2];
    dim = qs[r - 1];
    sk = n.inputs()[1].shape()[r - 2];
    dv = n.inputs()[2].shape()[r - 1];
    scale = attrs.scale;
    if (scale == 0.0) scale = 1.0 / std::sqrt(static_cast<double>(dim));
    if (kind == MaskKind::tensor) {
      const Shape& ms = n.inputs()[3].shape();
      const std::size_t mr = ms.size();
      mask_strides.assign(r, 0);
      std::int64_t stride = 1;
      for (std::size_t a = mr; a-- > 0;) {
        if (ms[a] != 1) mask_strides[r - mr + a] = stride;
        stride *= ms[a];
      }
    }
  }

  bool predicate() const { return kind == MaskKind::causal || kind == MaskKind::window; }
  // Tensor masks: element strides of the mask along queries and keys (0 where it broadcasts;
  // the key stride is 1 otherwise, keys being the mask's last axis).
  std::int64_t mask_query_stride() const { return mask_strides[mask_strides.size() - 2]; }
  std::int64_t mask_key_stride() const { return mask_strides.back(); }

  // Offset of the mask's [Sq, Sk] block for flat batch index bi.
  V mask_base(Ir& ir, ExpressionEmitter& expr, V bi) const {
    V base = ir.i(0);
    if (kind != MaskKind::tensor || batch_shape.empty()) return base;
    Index idx = expr.delinearize(bi, batch_shape);
    for (std::size_t a = 0; a < batch_shape.size(); ++a)
      if (mask_strides[a] != 0) base = ir.add(base, ir.mul(idx[a], mask_strides[a]));
    return base;
  }
  // Mask element (query i, key j) != 0, for tensor masks.
  V allowed(Ir& ir, V mask, V base, V i, V j) const {
    const std::size_t r = mask_strides.size();
    V at = ir.add(base, ir.add(ir.mul(i, mask_strides[r - 2]), ir.mul(j, mask_strides[r - 1])));
    return ir.b.CreateICmpNE(ir.e.load(DType::u8, mask, at), ir.b.getInt8(0));
  }

  // Keys [lo, hi) that query row i may attend under a predicate mask (all keys otherwise).
  // With p = i + query_offset: causal [0, p + 1), window [p - w + 1, p + 1), clamped to [0, Sk).
  std::pair<V, V> key_range(Ir& ir, V i) const {
    if (!predicate()) return {ir.i(0), ir.i(sk)};
    V p = ir.add(i, query_offset);
    V hi = ir.imin(ir.add(p, 1), ir.i(sk));
    if (kind == MaskKind::causal) return {ir.i(0), hi};
    V lo = ir.imax(ir.i(0), ir.sub(p, ir.i(window - 1)));
    return {ir.imin(lo, hi), hi};
  }
  // Whether query row i may attend key j under a predicate mask (i1).
  V in_band(Ir& ir, V i, V j) const {
    auto [lo, hi] = key_range(ir, i);
    return ir.b.CreateAnd(ir.b.CreateICmpSGE(j, lo), ir.b.CreateICmpSLT(j, hi));
  }
  // Query rows [lo, hi) (lo <= hi) that may attend key j under a predicate mask (all rows
  // otherwise), with p = i + query_offset: causal j <= p, window j <= p <= j + w - 1.
  std::pair<V, V> query_range(Ir& ir, V j) const {
    if (!predicate()) return {ir.i(0), ir.i(sq)};
    V lo = ir.imin(ir.imax(ir.sub(j, ir.i(query_offset)), ir.i(0)), ir.i(sq));
    if (kind == MaskKind::causal) return {lo, ir.i(sq)};
    V hi = ir.imin(ir.i(sq), ir.sub(ir.add(j, window), ir.i(query_offset)));
    return {lo, ir.imax(lo, hi)};
  }
};

// What every attention kernel emitter holds: the emitter, the node's sizes and its buffers.
// attention: inputs q, k, v [, mask]; outputs out, lse. attention_backward: inputs q, k, v
// [, mask], out, lse, dout; outputs dq, dk, dv (dout, dq, dk, dvp null for attention).
struct AttentionKernel {
  Emitter& e;
  ExpressionEmitter& expr;
  const Attention& at;
  const DType d;
  Ir ir;
  llvm::IRBuilder<>& b;
  const bool tensor;  // a mask tensor (input 3)
  V q, kp, vp, mask, out, lse;
  V dout = nullptr, dq = nullptr, dk = nullptr, dvp = nullptr;

  AttentionKernel(Emitter& emitter, ExpressionEmitter& expr_, const Node& node,
                  const Attention& at_)
      : e(emitter),
        expr(expr_),
        at(at_),
        d(at_.d),
        ir(emitter, d),
        b(emitter.builder()),
        tensor(at_.kind == MaskKind::tensor) {
    q = expr.buffer(node.inputs()[0]);
    kp = expr.buffer(node.inputs()[1]);
    vp = expr.buffer(node.inputs()[2]);
    mask = tensor ? expr.buffer(node.inputs()[3]) : nullptr;
    if (node.op() != Op::attention_backward) {
      out = expr.buffer(node.output(0));
      lse = expr.buffer(node.output(1));
      return;
    }
    const std::size_t o = tensor ? 4 : 3;
    out = expr.buffer(node.inputs()[o]);
    lse = expr.buffer(node.inputs()[o + 1]);
    dout = expr.buffer(node.inputs()[o + 2]);
    dq = expr.buffer(node.output(0));
    dk = expr.buffer(node.output(1));
    dvp = expr.buffer(node.output(2));
  }
};

// The threshold above which a masked query's lse makes exp(fill - lse) exactly 0 in the
// element type (attention_row_kernels.cpp).
double masked_lse_threshold(const Attention& at);

// Whether some lse_i (i in [r.first, r.second) for each range, lse at offset lb) is at or
// below the threshold, or NaN: an OR-reduction the loop vectoriser handles.
V any_lse_below(Emitter& e, Ir& ir, V lse, V lb, V threshold,
                std::initializer_list<std::pair<V, V>> ranges);

// The tiled kernels (attention_tile_kernels.cpp), for nodes whose attention_query_tile is not
// 1. The forward kernel sends the tiles it cannot compute exactly to attend_rows(first, last),
// the row kernel over flat query rows [first, last).
void emit_attention_tiles(Emitter& e, ExpressionEmitter& expr, const Node& node,
                          const Attention& at, const KernelArgs& args,
                          const std::function<void(V, V)>& attend_rows);
void emit_attention_backward_tiles(Emitter& e, ExpressionEmitter& expr, const Node& node,
                                   const Attention& at, const KernelArgs& args);

}  // namespace edifice::jit::codegen
