// Structured-op kernels: softmax, layer_norm (+ backward), attention (+ backward), lstm
// (+ backward). Each is a plain loop nest over buffers (inputs of these kernels are always
// materialised, row-major and contiguous) that matches the reference interpreter
// (core/src/interpreter.cpp) op for op, except that sums are accumulated in the element type
// (the interpreter uses double) and may be reassociated where `accumulate` is used, so that
// LLVM vectorises them. Every work item is computed by the same instruction sequence whichever
// thread runs it, so results do not depend on the thread count.
#include "../work_items.hpp"
#include "kernels.hpp"

#include <edifice/core/error.hpp>
#include <edifice/jit/target.hpp>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <string>

namespace edifice::jit::codegen {
namespace {

using V = llvm::Value*;

// Short names for the i64 index arithmetic and the float arithmetic of one kernel (dtype d).
class Ir {
 public:
  Ir(Emitter& emitter, DType dtype) : e(emitter), b(emitter.builder()), d(dtype) {}

  V i(std::int64_t v) { return e.i64(v); }
  V c(double v) { return e.constant(v, d); }
  V add(V x, V y) { return b.CreateAdd(x, y, "", false, true); }
  V add(V x, std::int64_t y) { return y == 0 ? x : add(x, i(y)); }
  V sub(V x, V y) { return b.CreateSub(x, y, "", false, true); }
  V mul(V x, V y) { return b.CreateMul(x, y, "", false, true); }
  V mul(V x, std::int64_t y) { return y == 1 ? x : mul(x, i(y)); }
  V div(V x, std::int64_t y) { return y == 1 ? x : b.CreateUDiv(x, i(y)); }
  V rem(V x, std::int64_t y) { return y == 1 ? i(0) : b.CreateURem(x, i(y)); }
  V imin(V x, V y) { return b.CreateSelect(b.CreateICmpSLT(x, y), x, y); }
  V imax(V x, V y) { return b.CreateSelect(b.CreateICmpSGT(x, y), x, y); }

  V fadd(V x, V y) { return b.CreateFAdd(x, y); }
  V fsub(V x, V y) { return b.CreateFSub(x, y); }
  V fmul(V x, V y) { return b.CreateFMul(x, y); }
  V fdiv(V x, V y) { return b.CreateFDiv(x, y); }

  V ld(V base, V index) { return e.load(d, base, index); }
  void st(V value, V base, V index) { e.store(d, value, base, index); }

  // sum_{t < n} x[xi + t] * y[yi + t]; reassociable, so the loop vectorises.
  V dot(V x, V xi, V y, V yi, std::int64_t n) {
    llvm::AllocaInst* acc = e.local(d, c(0));
    e.loop(0, n, [&](V t) {
      e.set(acc, e.accumulate(d, e.get(acc), fmul(ld(x, add(xi, t)), ld(y, add(yi, t)))));
    });
    return e.get(acc);
  }
  // y[yi + t] += alpha * x[xi + t] for t < n.
  void axpy(V y, V yi, V alpha, V x, V xi, std::int64_t n) {
    e.loop(0, n, [&](V t) {
      V at = add(yi, t);
      st(fadd(ld(y, at), fmul(alpha, ld(x, add(xi, t)))), y, at);
    });
  }
  // y[t] = v for t < n.
  void fill(V y, V v, std::int64_t n) {
    e.loop(0, n, [&](V t) { st(v, y, t); });
  }

  Emitter& e;
  llvm::IRBuilder<>& b;
  DType d;
};

std::int64_t extent_product(const Shape& s, std::size_t begin, std::size_t end) {
  std::int64_t n = 1;
  for (std::size_t a = begin; a < end; ++a) n *= s[a];
  return n;
}

}  // namespace

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
  V src = expr.buffer(x);
  V gamma = affine ? expr.buffer(node.inputs()[1]) : nullptr;
  V beta = affine ? expr.buffer(node.inputs()[2]) : nullptr;
  V y = expr.buffer(node.output(0));
  V mean = expr.buffer(node.output(1));
  V rstd = expr.buffer(node.output(2));
  e.loop(args.begin, args.end, [&](V r) {
    V base = ir.mul(r, c);
    llvm::AllocaInst* sum = e.local(d, ir.c(0));
    e.loop(0, c,
           [&](V j) { e.set(sum, e.accumulate(d, e.get(sum), ir.ld(src, ir.add(base, j)))); });
    // Division, not multiplication by 1/C, to round like the interpreter's mu /= C.
    V mu = ir.fdiv(e.get(sum), ir.c(static_cast<double>(c)));
    llvm::AllocaInst* sq = e.local(d, ir.c(0));
    e.loop(0, c, [&](V j) {
      V t = ir.fsub(ir.ld(src, ir.add(base, j)), mu);
      e.set(sq, e.accumulate(d, e.get(sq), ir.fmul(t, t)));
    });
    V var = ir.fdiv(e.get(sq), ir.c(static_cast<double>(c)));
    V rs = ir.fdiv(ir.c(1), e.sqrt(d, ir.fadd(var, ir.c(node.attrs().get_float("eps")))));
    ir.st(mu, mean, r);
    ir.st(rs, rstd, r);
    e.loop(0, c, [&](V j) {
      V at = ir.add(base, j);
      V v = ir.fmul(ir.fsub(ir.ld(src, at), mu), rs);
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
// Work items: rows of dx first (item r: one row, three passes over it), then, with gamma, one
// item per block of kLayerNormColumnBlock feature columns computing dgamma = sum_rows dy*xh and
// dbeta = sum_rows dy for those columns. The column sums run over rows in order (vectorised
// across columns, never reassociated), so their order is fixed.
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

  // Rows of dx.
  e.loop(args.begin, ir.imin(args.end, ir.i(rows)), [&](V r) {
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

  // Column blocks of dgamma and dbeta.
  V dgamma = expr.buffer(node.output(1));
  V dbeta = expr.buffer(node.output(2));
  const std::int64_t block = kLayerNormColumnBlock;
  llvm::AllocaInst* ag = e.local_array(d, block);
  llvm::AllocaInst* ab = e.local_array(d, block);
  e.loop(ir.imax(args.begin, ir.i(rows)), args.end, [&](V item) {
    V c0 = ir.mul(ir.sub(item, ir.i(rows)), block);
    V width = ir.imin(ir.i(block), ir.sub(ir.i(c), c0));
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

// ---------------------------------------------------------------------------------------------
// attention: shared setup

namespace {

enum class Mask { none, causal, window, tensor };

// At most this many scores of a query row are kept on the stack between the max pass and the
// exp pass; longer rows recompute them (one more q.k per key) instead.
constexpr std::int64_t kMaxStoredScores = 16384;

// Sizes, attributes and mask addressing of an attention or attention_backward node:
// q [..., Sq, D], k [..., Sk, D], v [..., Sk, Dv] with B = product of the leading axes.
struct Attention {
  Mask kind = Mask::none;
  std::int64_t window = 0;
  double scale = 1, fill = 0;
  DType d = DType::f32;
  Shape batch_shape;
  std::int64_t batch = 1, sq = 0, sk = 0, dim = 0, dv = 0;
  // Tensor masks: element stride of the mask per q axis (0 where the mask broadcasts).
  std::vector<std::int64_t> mask_strides;

  explicit Attention(const Node& n) {
    const Attributes& at = n.attrs();
    const std::string& m = at.get_string("mask");
    if (m == "none")
      kind = Mask::none;
    else if (m == "causal")
      kind = Mask::causal;
    else if (m == "window")
      kind = Mask::window;
    else if (m == "tensor")
      kind = Mask::tensor;
    else
      fail("jit: unknown attention mask kind \"{}\"", m);
    if (kind == Mask::window) window = at.get_int("window");
    fill = at.get_float("fill");
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
    scale = at.get_float("scale");
    if (scale == 0.0) scale = 1.0 / std::sqrt(static_cast<double>(dim));
    if (kind == Mask::tensor) {
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

  bool predicate() const { return kind == Mask::causal || kind == Mask::window; }

  // Offset of the mask's [Sq, Sk] block for flat batch index bi.
  V mask_base(Ir& ir, ExpressionEmitter& expr, V bi) const {
    V base = ir.i(0);
    if (kind != Mask::tensor || batch_shape.empty()) return base;
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
  std::pair<V, V> key_range(Ir& ir, V i) const {
    if (!predicate()) return {ir.i(0), ir.i(sk)};
    V hi = ir.imin(ir.add(i, 1), ir.i(sk));
    if (kind == Mask::causal) return {ir.i(0), hi};
    V lo = ir.imax(ir.i(0), ir.sub(i, ir.i(window - 1)));
    return {ir.imin(lo, hi), hi};
  }
  // Query rows [lo, hi) that may attend key j under a predicate mask (all rows otherwise):
  // causal j <= i, window j <= i <= j + w - 1.
  std::pair<V, V> query_range(Ir& ir, V j) const {
    if (!predicate()) return {ir.i(0), ir.i(sq)};
    V lo = ir.imin(j, ir.i(sq));
    if (kind == Mask::causal) return {lo, ir.i(sq)};
    return {lo, ir.imin(ir.i(sq), ir.add(j, window))};
  }
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// attention
//
// q [B, Sq, D], k [B, Sk, D], v [B, Sk, Dv] (B = leading axes flattened); out [B, Sq, Dv],
// lse [B, Sq]. Work item it is query row i = it % Sq of batch entry b = it / Sq:
//   pass 1: s_j = scale * q_i.k_j (fill where masked) and m = max_j s_j,
//   pass 2: p_j = exp(s_j - m), sum += p_j, acc += p_j * v_j;  out = acc / sum,
//           lse = m + log(sum).
// Pass 1 keeps the row's scores on the stack (up to kMaxStoredScores of them; longer rows
// recompute them in pass 2), so pass 2 is a vectorised exp and sum over the stored row
// followed by the accumulation of v (acc, Dv wide, stays in registers).
// Causal and window masks visit only the allowed keys [lo, hi). The masked keys all score
// exactly `fill`; they enter m through max(m, fill) and the sums through
// pm = exp(fill - m) each, added in a second loop over the masked keys only when pm != 0 at
// run time. With fill = -1e9 pm underflows to 0 for every row that has an allowed key, so
// the masked keys cost nothing; a fully masked row (pm = 1) averages v uniformly, and any
// fill value gives the interpreter's result (up to the order of the sum).
void emit_attention(Emitter& e, ExpressionEmitter& expr, const Kernel& k, const KernelArgs& args) {
  const Node& node = *k.anchor;
  const Attention at(node);
  const DType d = at.d;
  Ir ir(e, d);
  auto& b = e.builder();
  V q = expr.buffer(node.inputs()[0]);
  V kp = expr.buffer(node.inputs()[1]);
  V vp = expr.buffer(node.inputs()[2]);
  V mask = at.kind == Mask::tensor ? expr.buffer(node.inputs()[3]) : nullptr;
  V out = expr.buffer(node.output(0));
  V lse = expr.buffer(node.output(1));

  if (at.sk == 0) {  // no keys: the interpreter's empty sums give out = 0, lse = -inf
    e.loop(args.begin, args.end, [&](V it) {
      e.loop(0, at.dv, [&](V t) { ir.st(ir.c(0), out, ir.add(ir.mul(it, at.dv), t)); });
      ir.st(e.lowest(d), lse, it);
    });
    return;
  }

  const std::int64_t capacity = at.kind == Mask::window ? std::min(at.window, at.sk) : at.sk;
  const bool keep = capacity <= kMaxStoredScores;
  llvm::AllocaInst* scores = keep ? e.local_array(d, capacity) : nullptr;
  llvm::AllocaInst* acc = e.local_array(d, std::max<std::int64_t>(at.dv, 1));
  V scale = ir.c(at.scale);
  V fill = ir.c(at.fill);

  e.loop(args.begin, args.end, [&](V it) {
    V bi = ir.div(it, at.sq);
    V i = ir.rem(it, at.sq);
    V qrow = ir.mul(it, at.dim);
    V kb = ir.mul(bi, at.sk * at.dim);
    V vb = ir.mul(bi, at.sk * at.dv);
    V orow = ir.mul(it, at.dv);
    V mbase = at.mask_base(ir, expr, bi);
    auto [lo, hi] = at.key_range(ir, i);

    // The scaled score of key j, replaced by fill where a tensor mask disallows it.
    auto score = [&](V j) -> V {
      auto dot = [&] {
        return ir.fmul(ir.dot(q, qrow, kp, ir.add(kb, ir.mul(j, at.dim)), at.dim), scale);
      };
      if (at.kind != Mask::tensor) return dot();
      llvm::AllocaInst* s = e.local(d, fill);
      e.if_then(at.allowed(ir, mask, mbase, i, j), [&] { e.set(s, dot()); });
      return e.get(s);
    };

    // Pass 1: scores and their max.
    llvm::AllocaInst* m = e.local(d, e.lowest(d));
    e.loop(lo, hi, [&](V j) {
      V s = score(j);
      if (keep) ir.st(s, scores, ir.sub(j, lo));
      // std::max(m, s) as in the interpreter (a NaN score is skipped here but still poisons
      // the sum); one maxss, where the NaN-propagating maximum is a long serial chain.
      V cur = e.get(m);
      e.set(m, b.CreateSelect(b.CreateFCmpOLT(cur, s), s, cur));
    });
    V mx = e.get(m);
    V masked = nullptr;  // number of keys outside [lo, hi) under a predicate mask
    if (at.predicate()) {
      masked = ir.sub(ir.i(at.sk), ir.sub(hi, lo));
      V with_fill = b.CreateSelect(b.CreateFCmpOLT(mx, fill), fill, mx);
      mx = b.CreateSelect(b.CreateICmpSGT(masked, ir.i(0)), with_fill, mx);
    }

    // Pass 2: exponentials, their sum and the weighted sum of v.
    ir.fill(acc, ir.c(0), at.dv);
    llvm::AllocaInst* sum = e.local(d, ir.c(0));
    auto add_key = [&](V j, V p) {
      e.set(sum, ir.fadd(e.get(sum), p));
      ir.axpy(acc, ir.i(0), p, vp, ir.add(vb, ir.mul(j, at.dv)), at.dv);
    };
    if (keep) {
      // The exponentials over the stored row first (a vectorised exp and a reassociable sum),
      // then the weighted sum of v.
      e.loop(ir.i(0), ir.sub(hi, lo), [&](V t) {
        V p = e.exp(d, ir.fsub(ir.ld(scores, t), mx));
        ir.st(p, scores, t);
        e.set(sum, e.accumulate(d, e.get(sum), p));
      });
      e.loop(lo, hi, [&](V j) {
        ir.axpy(acc, ir.i(0), ir.ld(scores, ir.sub(j, lo)), vp, ir.add(vb, ir.mul(j, at.dv)),
                at.dv);
      });
    } else {
      e.loop(lo, hi, [&](V j) { add_key(j, e.exp(d, ir.fsub(score(j), mx))); });
    }
    if (at.predicate()) {
      V pm = e.exp(d, ir.fsub(fill, mx));
      // une: also true for NaN, which must propagate as in the interpreter.
      V any = b.CreateAnd(b.CreateICmpSGT(masked, ir.i(0)), b.CreateFCmpUNE(pm, ir.c(0)));
      e.if_then(any, [&] {
        e.loop(ir.i(0), lo, [&](V j) { add_key(j, pm); });
        e.loop(hi, ir.i(at.sk), [&](V j) { add_key(j, pm); });
      });
    }
    V total = e.get(sum);
    e.loop(0, at.dv, [&](V t) { ir.st(ir.fdiv(ir.ld(acc, t), total), out, ir.add(orow, t)); });
    ir.st(ir.fadd(mx, e.log(d, total)), lse, it);
  });
}

// ---------------------------------------------------------------------------------------------
// attention_backward
//
// inputs q, k, v [, mask], out, lse, dout; outputs dq, dk, dv. With p_ij = exp(s_ij - lse_i)
// (s the filled, scaled scores), delta_i = dout_i.out_i, dp_ij = dout_i.v_j and
// ds_ij = p_ij (dp_ij - delta_i) where allowed, 0 where masked:
//   dq_i = sum_j (ds_ij scale) k_j,  dk_j = sum_i (ds_ij scale) q_i,  dv_j = sum_i p_ij dout_i.
// Work items: the B*Sq query rows first (item: dq_i, summing over its allowed keys), then the
// B*Sk key rows (item: dk_j and dv_j, summing over the queries that attend key j). Each item
// recomputes the scores it needs, so no item reads another's output.
// An item walks its pairs in chunks of kPairChunk: pass 1 stores each pair's exponent
// (s - lse) and gradient factor (dp - delta) in stack arrays, pass 2 turns them into p and
// ds*scale (a vectorised exp), pass 3 accumulates the rows. Key items form dp - delta as one
// dot, dout_i.(v_j - out_i). Accumulation runs over pairs in index order.
// Masked pairs contribute only to dv, with p = exp(fill - lse_i). Under predicate masks the
// items visit only the allowed pairs; key items then check, with one vectorisable pass over
// the masked queries' lse, whether any such p can be nonzero (lse_i <= fill + a margin beyond
// exp's underflow), and only then add those contributions (fully masked rows, or a fill close
// to the scores). Tensor masks visit every pair and branch per pair.
namespace {
constexpr std::int64_t kPairChunk = 256;
}  // namespace

void emit_attention_backward(Emitter& e, ExpressionEmitter& expr, const Kernel& k,
                             const KernelArgs& args) {
  const Node& node = *k.anchor;
  const Attention at(node);
  const DType d = at.d;
  Ir ir(e, d);
  auto& b = e.builder();
  const std::size_t o = at.kind == Mask::tensor ? 4 : 3;
  V q = expr.buffer(node.inputs()[0]);
  V kp = expr.buffer(node.inputs()[1]);
  V vp = expr.buffer(node.inputs()[2]);
  V mask = at.kind == Mask::tensor ? expr.buffer(node.inputs()[3]) : nullptr;
  V outp = expr.buffer(node.inputs()[o]);
  V lse = expr.buffer(node.inputs()[o + 1]);
  V dout = expr.buffer(node.inputs()[o + 2]);
  V dq = expr.buffer(node.output(0));
  V dk = expr.buffer(node.output(1));
  V dvp = expr.buffer(node.output(2));
  V scale = ir.c(at.scale);
  V fill = ir.c(at.fill);
  const std::int64_t nq = at.batch * at.sq;

  llvm::AllocaInst* gq = e.local_array(d, std::max<std::int64_t>(at.dim, 1));
  llvm::AllocaInst* gk = e.local_array(d, std::max<std::int64_t>(at.dim, 1));
  llvm::AllocaInst* gv = e.local_array(d, std::max<std::int64_t>(at.dv, 1));
  llvm::AllocaInst* ex = e.local_array(d, kPairChunk);  // s - lse, then p
  llvm::AllocaInst* gf = e.local_array(d, kPairChunk);  // dp - delta, then ds * scale

  // For the pair indices [lo, hi), chunk by chunk: stage(t, index) for each (t = index - the
  // chunk's first index: the slot in ex/gf), then pass 2 (ex = p = exp(ex),
  // gf = p * gf * scale) over the chunk, then accumulate(t, index) for each.
  auto chunked = [&](V lo, V hi, const std::function<void(V, V)>& stage,
                     const std::function<void(V, V)>& accumulate) {
    V chunks = b.CreateUDiv(ir.add(ir.sub(hi, lo), kPairChunk - 1), ir.i(kPairChunk));
    e.loop(ir.i(0), chunks, [&](V c) {
      V first = ir.add(lo, ir.mul(c, kPairChunk));
      V last = ir.imin(hi, ir.add(first, kPairChunk));
      e.loop(first, last, [&](V idx) { stage(ir.sub(idx, first), idx); });
      e.loop(ir.i(0), ir.sub(last, first), [&](V t) {
        V p = e.exp(d, ir.ld(ex, t));
        ir.st(p, ex, t);
        ir.st(ir.fmul(ir.fmul(p, ir.ld(gf, t)), scale), gf, t);
      });
      e.loop(first, last, [&](V idx) { accumulate(ir.sub(idx, first), idx); });
    });
  };

  // Query rows: dq.
  e.loop(args.begin, ir.imin(args.end, ir.i(nq)), [&](V it) {
    V bi = ir.div(it, at.sq);
    V i = ir.rem(it, at.sq);
    V qrow = ir.mul(it, at.dim);
    V orow = ir.mul(it, at.dv);
    V kb = ir.mul(bi, at.sk * at.dim);
    V vb = ir.mul(bi, at.sk * at.dv);
    V mbase = at.mask_base(ir, expr, bi);
    V row_lse = ir.ld(lse, it);
    V delta = ir.dot(dout, orow, outp, orow, at.dv);
    ir.fill(gq, ir.c(0), at.dim);
    auto [lo, hi] = at.key_range(ir, i);
    auto stage = [&](V t, V j) {
      auto pair = [&] {
        V s = ir.fmul(ir.dot(q, qrow, kp, ir.add(kb, ir.mul(j, at.dim)), at.dim), scale);
        ir.st(ir.fsub(s, row_lse), ex, t);
        ir.st(ir.fsub(ir.dot(dout, orow, vp, ir.add(vb, ir.mul(j, at.dv)), at.dv), delta), gf, t);
      };
      if (at.kind != Mask::tensor) return pair();
      // Masked: p = 0 and a zero factor, so ds = 0 exactly.
      ir.st(e.lowest(d), ex, t);
      ir.st(ir.c(0), gf, t);
      e.if_then(at.allowed(ir, mask, mbase, i, j), pair);
    };
    chunked(lo, hi, stage, [&](V t, V j) {
      ir.axpy(gq, ir.i(0), ir.ld(gf, t), kp, ir.add(kb, ir.mul(j, at.dim)), at.dim);
    });
    e.loop(0, at.dim, [&](V t) { ir.st(ir.ld(gq, t), dq, ir.add(qrow, t)); });
  });

  // Key rows: dk and dv.
  // exp(x) is exactly 0 in d below these (f32: ln(2^-149) ~ -103.3, f64: ln(2^-1074) ~ -744.4);
  // masked queries with lse_i > fill + margin are skipped.
  const double margin = d == DType::f32 ? 120.0 : 760.0;
  double thr = at.fill + margin + 1e-6 * std::abs(at.fill);
  V threshold = ir.c(thr);
  if (d == DType::f32 && std::isfinite(thr)) {
    // Round the threshold up, so that the check stays conservative.
    float t = static_cast<float>(thr);
    if (static_cast<double>(t) < thr) t = std::nextafter(t, std::numeric_limits<float>::infinity());
    threshold = ir.c(static_cast<double>(t));
  }
  e.loop(ir.imax(args.begin, ir.i(nq)), args.end, [&](V it) {
    V jj = ir.sub(it, ir.i(nq));
    V bi = ir.div(jj, at.sk);
    V j = ir.rem(jj, at.sk);
    V krow = ir.mul(jj, at.dim);
    V vrow = ir.mul(jj, at.dv);
    V qb = ir.mul(bi, at.sq * at.dim);
    V ob = ir.mul(bi, at.sq * at.dv);
    V lb = ir.mul(bi, at.sq);
    V mbase = at.mask_base(ir, expr, bi);
    ir.fill(gk, ir.c(0), at.dim);
    ir.fill(gv, ir.c(0), at.dv);
    auto [lo, hi] = at.query_range(ir, j);
    auto stage = [&](V t, V i) {
      V row_lse = ir.ld(lse, ir.add(lb, i));
      auto pair = [&] {
        V qrow = ir.add(qb, ir.mul(i, at.dim));
        V orow = ir.add(ob, ir.mul(i, at.dv));
        V s = ir.fmul(ir.dot(q, qrow, kp, krow, at.dim), scale);
        ir.st(ir.fsub(s, row_lse), ex, t);
        // dp - delta = dout_i.(v_j - out_i)
        llvm::AllocaInst* acc = e.local(d, ir.c(0));
        e.loop(0, at.dv, [&](V u) {
          V diff = ir.fsub(ir.ld(vp, ir.add(vrow, u)), ir.ld(outp, ir.add(orow, u)));
          e.set(acc, e.accumulate(d, e.get(acc), ir.fmul(ir.ld(dout, ir.add(orow, u)), diff)));
        });
        ir.st(e.get(acc), gf, t);
      };
      if (at.kind != Mask::tensor) return pair();
      // Masked: s = fill (p = exp(fill - lse_i) still reaches dv) and a zero factor (ds = 0).
      ir.st(ir.fsub(fill, row_lse), ex, t);
      ir.st(ir.c(0), gf, t);
      e.if_then(at.allowed(ir, mask, mbase, i, j), pair);
    };
    chunked(lo, hi, stage, [&](V t, V i) {
      ir.axpy(gv, ir.i(0), ir.ld(ex, t), dout, ir.add(ob, ir.mul(i, at.dv)), at.dv);
      ir.axpy(gk, ir.i(0), ir.ld(gf, t), q, ir.add(qb, ir.mul(i, at.dim)), at.dim);
    });
    if (at.predicate()) {
      // dv += p * dout_i for a masked pair (p = exp(fill - lse_i)), skipping p == 0.
      auto masked_pair = [&](V i) {
        V p = e.exp(d, ir.fsub(fill, ir.ld(lse, ir.add(lb, i))));
        e.if_then(b.CreateFCmpUNE(p, ir.c(0)),
                  [&] { ir.axpy(gv, ir.i(0), p, dout, ir.add(ob, ir.mul(i, at.dv)), at.dv); });
      };
      // Masked queries are [0, lo) and [hi, Sq). "lse_i <= threshold or NaN" as an OR-reduction.
      llvm::AllocaInst* any = e.local(DType::u8, b.getInt8(0));
      auto check = [&](V i) {
        V hit = b.CreateFCmpULE(ir.ld(lse, ir.add(lb, i)), threshold);
        e.set(any, b.CreateOr(e.get(any), b.CreateZExt(hit, b.getInt8Ty())));
      };
      e.loop(ir.i(0), lo, check);
      e.loop(hi, ir.i(at.sq), check);
      e.if_then(b.CreateICmpNE(e.get(any), b.getInt8(0)), [&] {
        e.loop(ir.i(0), lo, masked_pair);
        e.loop(hi, ir.i(at.sq), masked_pair);
      });
    }
    e.loop(0, at.dim, [&](V t) { ir.st(ir.ld(gk, t), dk, ir.add(krow, t)); });
    e.loop(0, at.dv, [&](V t) { ir.st(ir.ld(gv, t), dvp, ir.add(vrow, t)); });
  });
}

// ---------------------------------------------------------------------------------------------
// lstm
//
// x [B, S, I], w_ih [I, 4U], w_hh [U, 4U], b [4U], h0, c0 [B, U]; outputs h_seq, c_seq
// [B, S, U]. Work item r is the batch rows [r*R, min(r*R + R, B)) (R = kLstmRowBlock) through
// all S steps. Per step each row's gate pre-activations z [4U] (stack) are
// b + x_t.w_ih + h.w_hh (lstm_preactivations: register tiles over the 4U columns, each weight
// load serving every row of the block); then the sigmoid gates (a vectorised loop), and per
// unit c' = f*c + i*g and h' = o*tanh(c') are stored; the stored (rounded) h', c' are the next
// step's state, as in the interpreter. A row's arithmetic is the same whether its block is
// full (R rows, unrolled) or the last, partial one (one row at a time).
namespace {

// The pre-activations z_r = b + x_r.w_ih + h_r.w_hh of rows r < z.size(): xrow[r] is the
// element offset of row r's input in x, hp[r] points at its state h. Register-tiled: for each
// tile of NV vectors of columns the rows' accumulators stay in vector registers through all
// I + U weight rows (each weight vector load feeds every row; a broadcast per row and weight
// row); columns past the last full tile are done one at a time. Either way every z_r[col] is
// one multiply-add chain from b[col] in weight-row order.
void lstm_preactivations(Ir& ir, const std::vector<llvm::AllocaInst*>& z, V xp,
                         const std::vector<V>& xrow, const std::vector<V>& hp, V wih, V whh, V bias,
                         std::int64_t in, std::int64_t un) {
  Emitter& e = ir.e;
  auto& b = ir.b;
  const DType d = ir.d;
  const std::int64_t g4 = 4 * un;
  const std::size_t rows = z.size();
  const Target& target = host_target();
  const unsigned lanes =
      static_cast<unsigned>(std::max<std::int64_t>(1, target.vector_bytes / dtype_size(d)));
  const std::int64_t nv = target.isa == Isa::avx512 ? 4 : 2;
  const std::int64_t tile = nv * lanes, tiles = g4 / tile;
  llvm::Type* et = e.type(d);
  auto* vt = llvm::FixedVectorType::get(et, lanes);
  const llvm::Align align(dtype_size(d));
  auto vload = [&](V base, V index) {
    return b.CreateAlignedLoad(vt, e.element_ptr(d, base, index), align);
  };
  auto vstore = [&](V v, V base, V index) {
    b.CreateAlignedStore(v, e.element_ptr(d, base, index), align);
  };
  // Vector accumulators: allocas in the entry block, promoted to registers by SROA.
  llvm::Function* f = b.GetInsertBlock()->getParent();
  llvm::IRBuilder<> entry(&f->getEntryBlock(), f->getEntryBlock().begin());
  std::vector<llvm::AllocaInst*> acc(rows * static_cast<std::size_t>(nv));
  for (auto& a : acc) a = entry.CreateAlloca(vt);

  e.loop(0, tiles, [&](V t) {
    V c0 = ir.mul(t, tile);
    for (std::int64_t v = 0; v < nv; ++v) {
      V bv = vload(bias, ir.add(c0, v * lanes));
      for (std::size_t r = 0; r < rows; ++r) b.CreateStore(bv, acc[r * nv + v]);
    }
    // acc_r += a_r(k) * w[k, c0 ..] for k < count.
    auto update = [&](std::int64_t count, V w, const std::function<V(std::size_t, V)>& a) {
      e.loop(0, count, [&](V kk) {
        V wrow = ir.add(ir.mul(kk, g4), c0);
        std::vector<V> wv;
        for (std::int64_t v = 0; v < nv; ++v) wv.push_back(vload(w, ir.add(wrow, v * lanes)));
        for (std::size_t r = 0; r < rows; ++r) {
          V s = b.CreateVectorSplat(lanes, a(r, kk));
          for (std::int64_t v = 0; v < nv; ++v) {
            llvm::AllocaInst* slot = acc[r * nv + v];
            V sum = b.CreateIntrinsic(llvm::Intrinsic::fmuladd, {vt},
                                      {s, wv[v], b.CreateLoad(vt, slot)});
            b.CreateStore(sum, slot);
          }
        }
      });
    };
    update(in, wih, [&](std::size_t r, V kk) { return ir.ld(xp, ir.add(xrow[r], kk)); });
    update(un, whh, [&](std::size_t r, V kk) { return ir.ld(hp[r], kk); });
    for (std::size_t r = 0; r < rows; ++r)
      for (std::int64_t v = 0; v < nv; ++v)
        vstore(b.CreateLoad(vt, acc[r * nv + v]), z[r], ir.add(c0, v * lanes));
  });
  // Remaining columns: the same chains, one column at a time.
  e.loop(tiles * tile, g4, [&](V col) {
    for (std::size_t r = 0; r < rows; ++r) {
      llvm::AllocaInst* sum = e.local(d, ir.ld(bias, col));
      auto chain = [&](V kk, V a, V w) {
        V wv = ir.ld(w, ir.add(ir.mul(kk, g4), col));
        e.set(sum, b.CreateIntrinsic(llvm::Intrinsic::fmuladd, {et}, {a, wv, e.get(sum)}));
      };
      e.loop(0, in, [&](V kk) { chain(kk, ir.ld(xp, ir.add(xrow[r], kk)), wih); });
      e.loop(0, un, [&](V kk) { chain(kk, ir.ld(hp[r], kk), whh); });
      ir.st(e.get(sum), z[r], col);
    }
  });
}

// z[col] = sigmoid(z[col]) for the i, f and o gate blocks, in loops of their own: they
// vectorise (exp has vector variants), while the tanh of the g block and of c' stay in the
// per-unit loop (libm tanh calls).
void lstm_sigmoid_gates(Ir& ir, llvm::AllocaInst* z, std::int64_t un) {
  auto act = [&](V col) { ir.st(ir.e.sigmoid(ir.d, ir.ld(z, col)), z, col); };
  ir.e.loop(0, 2 * un, act);
  ir.e.loop(3 * un, 4 * un, act);
}

}  // namespace

void emit_lstm(Emitter& e, ExpressionEmitter& expr, const Kernel& k, const KernelArgs& args) {
  const Node& node = *k.anchor;
  const Value x = node.inputs()[0];
  const DType d = x.dtype();
  Ir ir(e, d);
  auto& b = e.builder();
  const std::int64_t batch = x.shape()[0], steps = x.shape()[1], in = x.shape()[2];
  const std::int64_t un = node.inputs()[2].shape()[0], g4 = 4 * un;
  V xp = expr.buffer(x);
  V wih = expr.buffer(node.inputs()[1]);
  V whh = expr.buffer(node.inputs()[2]);
  V bias = expr.buffer(node.inputs()[3]);
  V h0 = expr.buffer(node.inputs()[4]);
  V c0 = expr.buffer(node.inputs()[5]);
  V hs = expr.buffer(node.output(0));
  V cs = expr.buffer(node.output(1));
  llvm::Type* t = e.type(d);
  const std::int64_t block = kLstmRowBlock, full = batch / block;
  std::vector<llvm::AllocaInst*> z;
  for (std::int64_t r = 0; r < block; ++r)
    z.push_back(e.local_array(d, std::max<std::int64_t>(g4, 1)));

  // Rows b0 + r for r < rows, all steps.
  auto run_rows = [&](V b0, std::size_t rows) {
    std::vector<llvm::AllocaInst*> zr(z.begin(), z.begin() + static_cast<std::ptrdiff_t>(rows));
    e.loop(0, steps, [&](V step) {
      V first = b.CreateICmpEQ(step, ir.i(0));
      std::vector<V> rowi, xrow, hp, cp;
      for (std::size_t r = 0; r < rows; ++r) {
        V bi = ir.add(b0, static_cast<std::int64_t>(r));
        V row = ir.add(ir.mul(bi, steps), step);  // (b, t) in the [B, S, *] arrays
        // The previous state: h0/c0 at t = 0, else the stored step t-1.
        V prev = ir.mul(ir.sub(row, ir.i(1)), un);
        rowi.push_back(row);
        xrow.push_back(ir.mul(row, in));
        hp.push_back(
            b.CreateSelect(first, b.CreateGEP(t, h0, ir.mul(bi, un)), b.CreateGEP(t, hs, prev)));
        cp.push_back(
            b.CreateSelect(first, b.CreateGEP(t, c0, ir.mul(bi, un)), b.CreateGEP(t, cs, prev)));
      }
      lstm_preactivations(ir, zr, xp, xrow, hp, wih, whh, bias, in, un);
      for (std::size_t r = 0; r < rows; ++r) {
        V srow = ir.mul(rowi[r], un);
        lstm_sigmoid_gates(ir, zr[r], un);
        e.loop(0, un, [&](V u) {
          V ig = ir.ld(zr[r], u);
          V fg = ir.ld(zr[r], ir.add(u, un));
          V gg = e.tanh(d, ir.ld(zr[r], ir.add(u, 2 * un)));
          V og = ir.ld(zr[r], ir.add(u, 3 * un));
          V cn = ir.fadd(ir.fmul(fg, ir.ld(cp[r], u)), ir.fmul(ig, gg));
          ir.st(cn, cs, ir.add(srow, u));
          ir.st(ir.fmul(og, e.tanh(d, cn)), hs, ir.add(srow, u));
        });
      }
    });
  };

  e.loop(args.begin, args.end, [&](V item) {
    if (full > 0)
      e.if_then(b.CreateICmpSLT(item, ir.i(full)),
                [&] { run_rows(ir.mul(item, block), static_cast<std::size_t>(block)); });
    if (batch % block != 0)
      e.if_then(b.CreateICmpSGE(item, ir.i(full)),
                [&] { e.loop(full * block, batch, [&](V bi) { run_rows(bi, 1); }); });
  });
}

// ---------------------------------------------------------------------------------------------
// lstm_backward
//
// inputs x, w_ih, w_hh, b, h0, c0, h_seq, c_seq, dh_seq, dc_seq; outputs dx, dw_ih, dw_hh, db,
// dh0, dc0. A single work item (the weight gradients sum over every batch row and step): zero
// dw_ih, dw_hh, db; then for each batch row, from the last step back, recompute the gates,
// form dz [4U] and the carried dc (stack arrays), and
//   db += dz, dw_ih[i,:] += x_t[i] dz, dx_t[i] = dz.w_ih[i,:],
//   dw_hh[v,:] += h_{t-1}[v] dz, dh_{t-1}[v] = dz.w_hh[v,:]
// (unit stride over the 4U columns). The weight gradients are accumulated in the output
// buffers in the interpreter's order (batch rows ascending, steps descending).
void emit_lstm_backward(Emitter& e, ExpressionEmitter& expr, const Kernel& k,
                        const KernelArgs& args) {
  const Node& node = *k.anchor;
  const Value x = node.inputs()[0];
  const DType d = x.dtype();
  Ir ir(e, d);
  auto& b = e.builder();
  const std::int64_t batch = x.shape()[0], steps = x.shape()[1], in = x.shape()[2];
  const std::int64_t un = node.inputs()[2].shape()[0], g4 = 4 * un;
  V xp = expr.buffer(x);
  V wih = expr.buffer(node.inputs()[1]);
  V whh = expr.buffer(node.inputs()[2]);
  V bias = expr.buffer(node.inputs()[3]);
  V h0 = expr.buffer(node.inputs()[4]);
  V c0 = expr.buffer(node.inputs()[5]);
  V hs = expr.buffer(node.inputs()[6]);
  V cs = expr.buffer(node.inputs()[7]);
  V dhs = expr.buffer(node.inputs()[8]);
  V dcs = expr.buffer(node.inputs()[9]);
  V dx = expr.buffer(node.output(0));
  V dwih = expr.buffer(node.output(1));
  V dwhh = expr.buffer(node.output(2));
  V db = expr.buffer(node.output(3));
  V dh0 = expr.buffer(node.output(4));
  V dc0 = expr.buffer(node.output(5));
  llvm::AllocaInst* gates = e.local_array(d, std::max<std::int64_t>(g4, 1));
  llvm::AllocaInst* dz = e.local_array(d, std::max<std::int64_t>(g4, 1));
  llvm::AllocaInst* dhn = e.local_array(d, std::max<std::int64_t>(un, 1));
  llvm::AllocaInst* dcn = e.local_array(d, std::max<std::int64_t>(un, 1));
  llvm::Type* t = e.type(d);
  V one = ir.c(1);

  e.loop(args.begin, args.end, [&](V) {
    ir.fill(dwih, ir.c(0), in * g4);
    ir.fill(dwhh, ir.c(0), un * g4);
    ir.fill(db, ir.c(0), g4);
    e.loop(0, batch, [&](V bi) {
      ir.fill(dhn, ir.c(0), un);
      ir.fill(dcn, ir.c(0), un);
      e.loop_down(ir.i(0), ir.i(steps), [&](V step) {
        V row = ir.add(ir.mul(bi, steps), step);
        V first = b.CreateICmpEQ(step, ir.i(0));
        V prev = ir.mul(ir.sub(row, ir.i(1)), un);
        V hp = b.CreateSelect(first, b.CreateGEP(t, h0, ir.mul(bi, un)), b.CreateGEP(t, hs, prev));
        V cp = b.CreateSelect(first, b.CreateGEP(t, c0, ir.mul(bi, un)), b.CreateGEP(t, cs, prev));
        V xrow = ir.mul(row, in);
        V srow = ir.mul(row, un);
        // Gate pre-activations, as in the forward.
        lstm_preactivations(ir, {gates}, xp, {xrow}, {hp}, wih, whh, bias, in, un);
        // dz and the carried dc.
        lstm_sigmoid_gates(ir, gates, un);
        e.loop(0, un, [&](V u) {
          V ig = ir.ld(gates, u);
          V fg = ir.ld(gates, ir.add(u, un));
          V gg = e.tanh(d, ir.ld(gates, ir.add(u, 2 * un)));
          V og = ir.ld(gates, ir.add(u, 3 * un));
          V tc = e.tanh(d, ir.ld(cs, ir.add(srow, u)));
          V dh = ir.fadd(ir.ld(dhs, ir.add(srow, u)), ir.ld(dhn, u));
          V dc = ir.fadd(ir.fadd(ir.ld(dcs, ir.add(srow, u)), ir.ld(dcn, u)),
                         ir.fmul(ir.fmul(dh, og), ir.fsub(one, ir.fmul(tc, tc))));
          ir.st(ir.fmul(ir.fmul(ir.fmul(dc, gg), ig), ir.fsub(one, ig)), dz, u);
          ir.st(ir.fmul(ir.fmul(ir.fmul(dc, ir.ld(cp, u)), fg), ir.fsub(one, fg)), dz,
                ir.add(u, un));
          ir.st(ir.fmul(ir.fmul(dc, ig), ir.fsub(one, ir.fmul(gg, gg))), dz, ir.add(u, 2 * un));
          ir.st(ir.fmul(ir.fmul(ir.fmul(dh, tc), og), ir.fsub(one, og)), dz, ir.add(u, 3 * un));
          ir.st(ir.fmul(dc, fg), dcn, u);
        });
        e.loop(0, g4, [&](V col) { ir.st(ir.fadd(ir.ld(db, col), ir.ld(dz, col)), db, col); });
        // dx_t and dw_ih.
        e.loop(0, in, [&](V ii) {
          V wrow = ir.mul(ii, g4);
          ir.axpy(dwih, wrow, ir.ld(xp, ir.add(xrow, ii)), dz, ir.i(0), g4);
          ir.st(ir.dot(dz, ir.i(0), wih, wrow, g4), dx, ir.add(xrow, ii));
        });
        // dh_{t-1} (dh_next was consumed above) and dw_hh.
        e.loop(0, un, [&](V u) {
          V wrow = ir.mul(u, g4);
          ir.axpy(dwhh, wrow, ir.ld(hp, u), dz, ir.i(0), g4);
          ir.st(ir.dot(dz, ir.i(0), whh, wrow, g4), dhn, u);
        });
      });
      e.loop(0, un, [&](V u) {
        ir.st(ir.ld(dhn, u), dh0, ir.add(ir.mul(bi, un), u));
        ir.st(ir.ld(dcn, u), dc0, ir.add(ir.mul(bi, un), u));
      });
    });
  });
}

}  // namespace edifice::jit::codegen
