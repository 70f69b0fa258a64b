// Structured-op kernels: softmax and layer_norm (+ backward); attention and lstm live in
// attention_row_kernels.cpp, attention_tile_kernels.cpp and lstm_kernels.cpp. Each is a plain loop
// nest over buffers (inputs of these kernels are always materialised, row-major and contiguous)
// that matches the reference interpreter (core/src/interpreter.cpp) op for op, except that sums are
// accumulated in the element type (the interpreter uses double) and may be reassociated where
// `accumulate` is used, so that LLVM vectorises them. Every work item is computed by the same
// instruction sequence whichever thread runs it, so results do not depend on the thread count.
#include "../work_items.hpp"
#include "structured_ir.hpp"

#include <edifice/core/error.hpp>
#include <edifice/jit/target.hpp>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <string>

namespace edifice::jit::codegen {

// ---------------------------------------------------------------------------------------------
// softmax
//
// x and y are [outer, n, inner] around the softmax axis (extent n). Three passes: max,
// exp(x - max) stored into y while summing, y /= sum.
// - Axis last (inner = 1): work item r is row r, contiguous; the max and the sum are
//   reassociable reductions (vectorised).
// - Otherwise: work item r is o = r / blocks, positions [c0, c0 + width) of the inner axes with
//   c0 = (r % blocks) * kSoftmaxColumnBlock; each pass walks j and updates per-position max and
//   sum (stack arrays) across the contiguous block, so loads are unit stride and each
//   position's reductions run over j in order.
void emit_softmax(Emitter& e, ExpressionEmitter& expr, const Kernel& k, const KernelArgs& args) {
  const Node& node = *k.anchor;
  const Value x = node.inputs()[0];
  const DType d = x.dtype();
  Ir ir(e, d);
  const auto axis = static_cast<std::size_t>(node.attrs().get_int("axis"));
  const Shape& shape = x.shape();
  const std::int64_t n = shape[axis], inner = extent_product(shape, axis + 1, shape.size());
  V src = expr.buffer(x);
  V dst = expr.buffer(node.output(0));
  if (inner == 1) {
    e.loop(args.begin, args.end, [&](V r) {
      V base = ir.mul(r, n);
      llvm::AllocaInst* m = e.local(d, e.lowest(d));
      e.loop(0, n, [&](V j) { e.set(m, e.maximum(d, e.get(m), ir.ld(src, ir.add(base, j)))); });
      V mx = e.get(m);
      llvm::AllocaInst* sum = e.local(d, ir.c(0));
      e.loop(0, n, [&](V j) {
        V p = e.exp(d, ir.fsub(ir.ld(src, ir.add(base, j)), mx));
        ir.st(p, dst, ir.add(base, j));
        e.set(sum, e.accumulate(d, e.get(sum), p));
      });
      V s = e.get(sum);
      e.loop(0, n,
             [&](V j) { ir.st(ir.fdiv(ir.ld(dst, ir.add(base, j)), s), dst, ir.add(base, j)); });
    });
    return;
  }
  const std::int64_t block = kSoftmaxColumnBlock;
  const std::int64_t blocks = (inner + block - 1) / block;
  llvm::AllocaInst* m = e.local_array(d, block);
  llvm::AllocaInst* sum = e.local_array(d, block);
  e.loop(args.begin, args.end, [&](V r) {
    V c0 = ir.mul(ir.rem(r, blocks), block);
    V base = ir.add(ir.mul(ir.div(r, blocks), n * inner), c0);
    V width = ir.imin(ir.i(block), ir.sub(ir.i(inner), c0));
    auto at = [&](V j, V t) { return ir.add(ir.add(base, ir.mul(j, inner)), t); };
    e.loop(ir.i(0), width, [&](V t) {
      ir.st(e.lowest(d), m, t);
      ir.st(ir.c(0), sum, t);
    });
    e.loop(0, n, [&](V j) {
      e.loop(ir.i(0), width,
             [&](V t) { ir.st(e.maximum(d, ir.ld(m, t), ir.ld(src, at(j, t))), m, t); });
    });
    e.loop(0, n, [&](V j) {
      e.loop(ir.i(0), width, [&](V t) {
        V p = e.exp(d, ir.fsub(ir.ld(src, at(j, t)), ir.ld(m, t)));
        ir.st(p, dst, at(j, t));
        ir.st(ir.fadd(ir.ld(sum, t), p), sum, t);
      });
    });
    e.loop(0, n, [&](V j) {
      e.loop(ir.i(0), width,
             [&](V t) { ir.st(ir.fdiv(ir.ld(dst, at(j, t)), ir.ld(sum, t)), dst, at(j, t)); });
    });
  });
}

// ---------------------------------------------------------------------------------------------
// layer_norm
//
// x, y [rows, C]; mean, rstd [rows]; gamma, beta [C]. Work item r is row r: mean, population
// variance (two passes, reassociable sums), rstd = 1/sqrt(var + eps), then y. Everything is
// computed in the node dtype, so y uses exactly the stored mean and rstd.
void emit_layer_norm(Emitter& e, ExpressionEmitter& expr, const Kernel& k, const KernelArgs& args) {
  const Node& node = *k.anchor;
  const Value x = node.inputs()[0];
  const DType d = x.dtype();
  Ir ir(e, d);
  const bool affine = node.inputs().size() == 3;
  const std::int64_t c = x.shape().back();
  V gamma = affine ? expr.buffer(node.inputs()[1]) : nullptr;
  V beta = affine ? expr.buffer(node.inputs()[2]) : nullptr;
  V y = expr.buffer(node.output(0));
  V mean = expr.buffer(node.output(1));
  V rstd = expr.buffer(node.output(2));
  const Shape rows_shape(x.shape().begin(), x.shape().end() - 1);
  e.loop(args.begin, args.end, [&](V r) {
    V base = ir.mul(r, c);
    // x may be an inlined expression (the residual add and head merge before a post-LN norm,
    // whose transposed reads are gathers): the first pass evaluates it once per element and
    // parks the row in y's row, which the other passes read back contiguously.
    const Index lead = expr.delinearize(r, rows_shape);
    auto src_at = [&](V j) { return ir.ld(y, ir.add(base, j)); };
    llvm::AllocaInst* sum = e.local(d, ir.c(0));
    e.loop(0, c, [&](V j) {
      Index index = lead;
      index.push_back(j);
      V value = expr.at(x, index);
      expr.clear_memo();
      ir.st(value, y, ir.add(base, j));
      e.set(sum, e.accumulate(d, e.get(sum), value));
    });
    // Division, not multiplication by 1/C, to round like the interpreter's mu /= C.
    V mu = ir.fdiv(e.get(sum), ir.c(static_cast<double>(c)));
    llvm::AllocaInst* sq = e.local(d, ir.c(0));
    e.loop(0, c, [&](V j) {
      V t = ir.fsub(src_at(j), mu);
      e.set(sq, e.accumulate(d, e.get(sq), ir.fmul(t, t)));
    });
    V var = ir.fdiv(e.get(sq), ir.c(static_cast<double>(c)));
    V rs = ir.fdiv(ir.c(1), e.sqrt(d, ir.fadd(var, ir.c(node.attrs().get_float("eps")))));
    ir.st(mu, mean, r);
    ir.st(rs, rstd, r);
    e.loop(0, c, [&](V j) {
      V at = ir.add(base, j);
      V v = ir.fmul(ir.fsub(src_at(j), mu), rs);
      if (affine) v = ir.fadd(ir.fmul(v, ir.ld(gamma, j)), ir.ld(beta, j));
      ir.st(v, y, at);
    });
  });
}

// ---------------------------------------------------------------------------------------------
// layer_norm_backward
//
// inputs x, mean, rstd, dy [, gamma]; outputs dx [, dgamma, dbeta]. With xh = (x - mean)*rstd
// and g = dy*gamma (or dy):  dx = rstd * (g - mean_C(g) - xh * mean_C(g*xh)).
// Work items: with gamma, first one item per block of kLayerNormColumnBlock feature columns
// computing dgamma = sum_rows dy*xh and dbeta = sum_rows dy for those columns, then the rows of
// dx (item blocks + r: row r, three passes over it). The column items read every row, so they
// come first: the pool hands out items in order and balances the end with the light row items
// (placed last, the column items all fell to one thread: half the kernel ran on one core).
// The column sums run over rows in order (vectorised across columns, never reassociated), so
// their order is fixed.
void emit_layer_norm_backward(Emitter& e, ExpressionEmitter& expr, const Kernel& k,
                              const KernelArgs& args) {
  const Node& node = *k.anchor;
  const Value x = node.inputs()[0];
  const DType d = x.dtype();
  Ir ir(e, d);
  const bool affine = node.inputs().size() == 5;
  const std::int64_t c = x.shape().back();
  const std::int64_t rows = c == 0 ? 0 : shape_numel(x.shape()) / c;
  V xs = expr.buffer(x);
  V mean = expr.buffer(node.inputs()[1]);
  V rstd = expr.buffer(node.inputs()[2]);
  V dy = expr.buffer(node.inputs()[3]);
  V gamma = affine ? expr.buffer(node.inputs()[4]) : nullptr;
  V dx = expr.buffer(node.output(0));
  const std::int64_t block = kLayerNormColumnBlock;
  const std::int64_t blocks = affine ? (c + block - 1) / block : 0;

  // Rows of dx: items [blocks, blocks + rows).
  e.loop(ir.imax(args.begin, ir.i(blocks)), args.end, [&](V item) {
    V r = ir.sub(item, ir.i(blocks));
    V base = ir.mul(r, c);
    V mu = ir.ld(mean, r);
    V rs = ir.ld(rstd, r);
    auto xh = [&](V j) { return ir.fmul(ir.fsub(ir.ld(xs, ir.add(base, j)), mu), rs); };
    auto g = [&](V j) {
      V v = ir.ld(dy, ir.add(base, j));
      return affine ? ir.fmul(v, ir.ld(gamma, j)) : v;
    };
    llvm::AllocaInst* sg = e.local(d, ir.c(0));
    llvm::AllocaInst* sgx = e.local(d, ir.c(0));
    e.loop(0, c, [&](V j) {
      V gj = g(j);
      e.set(sg, e.accumulate(d, e.get(sg), gj));
      e.set(sgx, e.accumulate(d, e.get(sgx), ir.fmul(gj, xh(j))));
    });
    V mean_g = ir.fdiv(e.get(sg), ir.c(static_cast<double>(c)));
    V mean_gx = ir.fdiv(e.get(sgx), ir.c(static_cast<double>(c)));
    e.loop(0, c, [&](V j) {
      V v = ir.fsub(ir.fsub(g(j), mean_g), ir.fmul(xh(j), mean_gx));
      ir.st(ir.fmul(rs, v), dx, ir.add(base, j));
    });
  });
  if (!affine) return;

  // Column blocks of dgamma and dbeta: items [0, blocks).
  V dgamma = expr.buffer(node.output(1));
  V dbeta = expr.buffer(node.output(2));
  llvm::AllocaInst* ag = e.local_array(d, block);
  llvm::AllocaInst* ab = e.local_array(d, block);
  e.loop(args.begin, ir.imin(args.end, ir.i(blocks)), [&](V item) {
    V c0 = ir.mul(item, block);
    // A constant width where the blocks tile C exactly: LLVM then keeps the block's sums in
    // vector registers instead of a short vectorised loop with remainder per row.
    V width = c % block == 0 ? ir.i(block) : ir.imin(ir.i(block), ir.sub(ir.i(c), c0));
    e.loop(ir.i(0), width, [&](V t) {
      ir.st(ir.c(0), ag, t);
      ir.st(ir.c(0), ab, t);
    });
    e.loop(0, rows, [&](V r) {
      V base = ir.add(ir.mul(r, c), c0);
      V mu = ir.ld(mean, r);
      V rs = ir.ld(rstd, r);
      e.loop(ir.i(0), width, [&](V t) {
        V at = ir.add(base, t);
        V g = ir.ld(dy, at);
        V xh = ir.fmul(ir.fsub(ir.ld(xs, at), mu), rs);
        ir.st(ir.fadd(ir.ld(ag, t), ir.fmul(g, xh)), ag, t);
        ir.st(ir.fadd(ir.ld(ab, t), g), ab, t);
      });
    });
    e.loop(ir.i(0), width, [&](V t) {
      ir.st(ir.ld(ag, t), dgamma, ir.add(c0, t));
      ir.st(ir.ld(ab, t), dbeta, ir.add(c0, t));
    });
  });
}

}  // namespace edifice::jit::codegen
