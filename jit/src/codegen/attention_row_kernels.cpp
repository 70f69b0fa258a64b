// The attention row kernels, forward and backward, and the entry points of both directions,
// which send tiled nodes to attention_tile_kernels.cpp. See structured_kernels.cpp for the
// conventions shared by the structured-op kernels.
#include "../work_items.hpp"
#include "attention.hpp"

#include <edifice/core/error.hpp>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>

namespace edifice::jit::codegen {

namespace {

// At most this many scores of a query row are kept on the stack between the max pass and the
// exp pass; longer rows recompute them (one more q.k per key) instead.
constexpr std::int64_t kMaxStoredScores = 16384;

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
namespace {

// The row kernel of attention: its buffers and the stack arrays of one query row.
struct RowForward : AttentionKernel {
  bool keep = false;  // the row's scores stay on the stack between the passes
  llvm::AllocaInst *scores = nullptr, *acc = nullptr;
  V scale = nullptr, fill = nullptr;

  using AttentionKernel::AttentionKernel;

  // No keys: the interpreter's empty sums give out = 0, lse = -inf.
  void no_keys(const KernelArgs& args) {
    e.loop(args.begin, args.end, [&](V it) {
      e.loop(0, at.dv, [&](V t) { ir.st(ir.c(0), out, ir.add(ir.mul(it, at.dv), t)); });
      ir.st(e.lowest(d), lse, it);
    });
  }

  void allocate() {
    const std::int64_t capacity = at.kind == MaskKind::window ? std::min(at.window, at.sk) : at.sk;
    keep = capacity <= kMaxStoredScores;
    scores = keep ? e.local_array(d, capacity) : nullptr;
    acc = e.local_array(d, std::max<std::int64_t>(at.dv, 1));
    scale = ir.c(at.scale);
    fill = ir.c(at.fill);
  }

  // Query row `it` (flat b*Sq + i): both passes, out and lse.
  void attend_row(V it) {
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
      if (at.kind != MaskKind::tensor) return dot();
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
  }
};

}  // namespace

void emit_attention(Emitter& e, ExpressionEmitter& expr, const Kernel& k, const KernelArgs& args) {
  const Node& node = *k.anchor;
  const Attention at(node);
  RowForward rows(e, expr, node, at);
  if (at.sk == 0) {
    rows.no_keys(args);
    return;
  }
  rows.allocate();
  // Query rows [first, last) (flat indices b*Sq + i), one at a time.
  auto attend_rows = [&](V first, V last) {
    e.loop(first, last, [&](V it) { rows.attend_row(it); });
  };
  if (attention_query_tile(node) == 1) {
    attend_rows(args.begin, args.end);
    return;
  }
  emit_attention_tiles(e, expr, node, at, args, attend_rows);
}

// ---------------------------------------------------------------------------------------------
// attention_backward: shared by the row and the tiled kernels

// exp(x - lse) is exactly 0 in d when lse > fill + margin (f32: ln(2^-149) ~ -103.3, f64:
// ln(2^-1074) ~ -744.4); masked queries with lse_i above the returned threshold are skipped.
double masked_lse_threshold(const Attention& at) {
  const double margin = at.d == DType::f32 ? 120.0 : 760.0;
  const double thr = at.fill + margin + 1e-6 * std::abs(at.fill);
  if (at.d == DType::f32 && std::isfinite(thr)) {
    // Round the threshold up, so that the check stays conservative.
    float t = static_cast<float>(thr);
    if (static_cast<double>(t) < thr) t = std::nextafter(t, std::numeric_limits<float>::infinity());
    return static_cast<double>(t);
  }
  return thr;
}

V any_lse_below(Emitter& e, Ir& ir, V lse, V lb, V threshold,
                std::initializer_list<std::pair<V, V>> ranges) {
  auto& b = e.builder();
  llvm::AllocaInst* any = e.local(DType::u8, b.getInt8(0));
  for (const auto& [lo, hi] : ranges)
    e.loop(lo, hi, [&](V i) {
      V hit = b.CreateFCmpULE(ir.ld(lse, ir.add(lb, i)), threshold);
      e.set(any, b.CreateOr(e.get(any), b.CreateZExt(hit, b.getInt8Ty())));
    });
  return b.CreateICmpNE(e.get(any), b.getInt8(0));
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

// The row kernel of attention_backward: its buffers, the per-pair stack arrays and the two
// kinds of work item.
struct RowBackward : AttentionKernel {
  V scale, fill;
  const std::int64_t nq;
  llvm::AllocaInst *gq, *gk, *gv;
  llvm::AllocaInst* ex;  // s - lse, then p
  llvm::AllocaInst* gf;  // dp - delta, then ds * scale

  RowBackward(Emitter& emitter, ExpressionEmitter& expr_, const Node& node, const Attention& at_)
      : AttentionKernel(emitter, expr_, node, at_), nq(at_.batch * at_.sq) {
    scale = ir.c(at.scale);
    fill = ir.c(at.fill);
    gq = e.local_array(d, std::max<std::int64_t>(at.dim, 1));
    gk = e.local_array(d, std::max<std::int64_t>(at.dim, 1));
    gv = e.local_array(d, std::max<std::int64_t>(at.dv, 1));
    ex = e.local_array(d, kPairChunk);
    gf = e.local_array(d, kPairChunk);
  }

  // For the pair indices [lo, hi), chunk by chunk: stage(t, index) for each (t = index - the
  // chunk's first index: the slot in ex/gf), then pass 2 (ex = p = exp(ex),
  // gf = p * gf * scale) over the chunk, then accumulate(t, index) for each.
  void chunked(V lo, V hi, const std::function<void(V, V)>& stage,
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
  }

  // Query row `it` (flat b*Sq + i): dq_i over the row's allowed keys.
  void query_row(V it) {
    V bi = ir.div(it, at.sq);
    V i = ir.rem(it, at.sq);
    V qrow = ir.mul(it, at.dim);
    V orow = ir.mul(it, at.dv);
    V kb = ir.mul(bi, at.sk * at.dim);
    V vb = ir.mul(bi, at.sk * at.dv);
    V mbase = at.mask_base(ir, expr, bi);
    V row_lse = ir.ld(lse, it);
    V delta = ir.dot(dout, orow, out, orow, at.dv);
    ir.fill(gq, ir.c(0), at.dim);
    auto [lo, hi] = at.key_range(ir, i);
    auto stage = [&](V t, V j) {
      auto pair = [&] {
        V s = ir.fmul(ir.dot(q, qrow, kp, ir.add(kb, ir.mul(j, at.dim)), at.dim), scale);
        ir.st(ir.fsub(s, row_lse), ex, t);
        ir.st(ir.fsub(ir.dot(dout, orow, vp, ir.add(vb, ir.mul(j, at.dv)), at.dv), delta), gf, t);
      };
      if (at.kind != MaskKind::tensor) return pair();
      // Masked: p = 0 and a zero factor, so ds = 0 exactly.
      ir.st(e.lowest(d), ex, t);
      ir.st(ir.c(0), gf, t);
      e.if_then(at.allowed(ir, mask, mbase, i, j), pair);
    };
    chunked(lo, hi, stage, [&](V t, V j) {
      ir.axpy(gq, ir.i(0), ir.ld(gf, t), kp, ir.add(kb, ir.mul(j, at.dim)), at.dim);
    });
    e.loop(0, at.dim, [&](V t) { ir.st(ir.ld(gq, t), dq, ir.add(qrow, t)); });
  }

  // Key row `jj` (flat b*Sk + j): dk_j and dv_j over the queries that attend key j. Masked
  // queries with lse_i above `threshold` are skipped.
  void key_row(V jj, V threshold) {
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
          V diff = ir.fsub(ir.ld(vp, ir.add(vrow, u)), ir.ld(out, ir.add(orow, u)));
          e.set(acc, e.accumulate(d, e.get(acc), ir.fmul(ir.ld(dout, ir.add(orow, u)), diff)));
        });
        ir.st(e.get(acc), gf, t);
      };
      if (at.kind != MaskKind::tensor) return pair();
      // Masked: s = fill (p = exp(fill - lse_i) still reaches dv) and a zero factor (ds = 0).
      ir.st(ir.fsub(fill, row_lse), ex, t);
      ir.st(ir.c(0), gf, t);
      e.if_then(at.allowed(ir, mask, mbase, i, j), pair);
    };
    chunked(lo, hi, stage, [&](V t, V i) {
      ir.axpy(gv, ir.i(0), ir.ld(ex, t), dout, ir.add(ob, ir.mul(i, at.dv)), at.dv);
      ir.axpy(gk, ir.i(0), ir.ld(gf, t), q, ir.add(qb, ir.mul(i, at.dim)), at.dim);
    });
    if (at.predicate()) add_masked_queries(lo, hi, lb, ob, threshold);
    e.loop(0, at.dim, [&](V t) { ir.st(ir.ld(gk, t), dk, ir.add(krow, t)); });
    e.loop(0, at.dv, [&](V t) { ir.st(ir.ld(gv, t), dvp, ir.add(vrow, t)); });
  }

  // Predicate masks: dv += p * dout_i for the masked queries [0, lo) and [hi, Sq) of a key row
  // (p = exp(fill - lse_i)), skipping p == 0; none at all unless some lse_i is at or below
  // the threshold (or NaN), found by an OR-reduction.
  void add_masked_queries(V lo, V hi, V lb, V ob, V threshold) {
    auto masked_pair = [&](V i) {
      V p = e.exp(d, ir.fsub(fill, ir.ld(lse, ir.add(lb, i))));
      e.if_then(b.CreateFCmpUNE(p, ir.c(0)),
                [&] { ir.axpy(gv, ir.i(0), p, dout, ir.add(ob, ir.mul(i, at.dv)), at.dv); });
    };
    V any = any_lse_below(e, ir, lse, lb, threshold, {{ir.i(0), lo}, {hi, ir.i(at.sq)}});
    e.if_then(any, [&] {
      e.loop(ir.i(0), lo, masked_pair);
      e.loop(hi, ir.i(at.sq), masked_pair);
    });
  }
};

}  // namespace

void emit_attention_backward(Emitter& e, ExpressionEmitter& expr, const Kernel& k,
                             const KernelArgs& args) {
  const Node& node = *k.anchor;
  const Attention at(node);
  if (attention_query_tile(node) != 1) {
    emit_attention_backward_tiles(e, expr, node, at, args);
    return;
  }
  RowBackward rows(e, expr, node, at);
  Ir& ir = rows.ir;
  // Query rows first, then key rows.
  e.loop(args.begin, ir.imin(args.end, ir.i(rows.nq)), [&](V it) { rows.query_row(it); });
  V threshold = ir.c(masked_lse_threshold(at));
  e.loop(ir.imax(args.begin, ir.i(rows.nq)), args.end,
         [&](V it) { rows.key_row(ir.sub(it, ir.i(rows.nq)), threshold); });
}

}  // namespace edifice::jit::codegen
