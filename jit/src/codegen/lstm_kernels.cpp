// LSTM kernels: lstm_scan and lstm_scan_backward. See structured_kernels.cpp for the conventions
// shared by the structured-op kernels.
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
// The LSTM recurrence. The input projection x.w_ih + b of every step is a graph-level GEMM
// (ops::lstm emits it); these kernels run only the serial part, h.w_hh per step (and in the
// backward dz.w_hh^T). Batch rows are independent through time, so both kernels take blocks of
// R = kLstmRowBlock batch rows as work items: item r is the rows [r*R, min(r*R + R, B)) through
// all S steps. A row's arithmetic is the same whether its block is full (R rows, unrolled, each
// weight load serving every row) or the last, partial one (one row at a time).
namespace {

// Vector accumulators a row-block product keeps in registers: half the register file, leaving
// room for the weight vectors and broadcasts. Split between the rows as rows x (this / rows).
std::int64_t accumulator_budget() {
  return codegen_target().isa == Isa::avx512 ? 16 : 8;
}

// The vectors of a row-block product over `rows` rows: the host's lanes for the element type,
// the accumulators per row (accumulator_budget() / rows, 1 to 4) and element-aligned loads.
struct RowBlockVectors {
  Emitter& e;
  const DType d;
  const unsigned lanes;
  llvm::FixedVectorType* const type;
  llvm::Type* const element;
  const llvm::Align align;
  const std::int64_t per_row;

  RowBlockVectors(Emitter& emitter, DType dtype, std::size_t rows)
      : e(emitter),
        d(dtype),
        lanes(static_cast<unsigned>(
            std::max<std::int64_t>(1, codegen_target().vector_bytes / dtype_size(dtype)))),
        type(llvm::FixedVectorType::get(emitter.type(dtype), lanes)),
        element(emitter.type(dtype)),
        align(dtype_size(dtype)),
        per_row(std::clamp<std::int64_t>(accumulator_budget() / static_cast<std::int64_t>(rows), 1,
                                         4)) {}

  V load(V base, V index) {
    return e.builder().CreateAlignedLoad(type, e.element_ptr(d, base, index), align);
  }
};

// A vector alloca in the function's entry block (promoted to a register by SROA).
llvm::AllocaInst* vector_slot(Ir& ir, llvm::Type* vt) {
  llvm::Function* f = ir.b.GetInsertBlock()->getParent();
  llvm::IRBuilder<> entry(&f->getEntryBlock(), f->getEntryBlock().begin());
  return entry.CreateAlloca(vt);
}

// z_r[col] = init_r[col] + sum_{k < count} a_r(k) * w[k * ncols + col] for col < ncols and the
// rows r < z.size() (z, init: per-row pointers). Register-tiled: for each tile of NV vectors of
// columns (NV = accumulator_budget() / rows, at most 4) the rows' accumulators stay in vector
// registers through all `count` weight rows (each weight vector load feeds every row; a broadcast
// per row and weight row); columns past the last full tile are done one at a time. Either way every
// z_r[col] is one multiply-add chain from init_r[col] in weight-row order.
void row_block_products(Ir& ir, const std::vector<V>& z, const std::vector<V>& init, V w,
                        std::int64_t count, const std::function<V(std::size_t, V)>& a,
                        std::int64_t ncols) {
  Emitter& e = ir.e;
  auto& b = ir.b;
  const DType d = ir.d;
  const std::size_t rows = z.size();
  RowBlockVectors vec(e, d, rows);
  const unsigned lanes = vec.lanes;
  llvm::FixedVectorType* vt = vec.type;
  const std::int64_t nv = vec.per_row;
  const std::int64_t tile = nv * lanes, tiles = ncols / tile;
  llvm::Type* et = vec.element;
  const llvm::Align align = vec.align;
  auto vload = [&](V base, V index) { return vec.load(base, index); };
  std::vector<llvm::AllocaInst*> acc(rows * static_cast<std::size_t>(nv));
  for (auto& s : acc) s = vector_slot(ir, vt);

  e.loop(0, tiles, [&](V t) {
    V c0 = ir.mul(t, tile);
    for (std::size_t r = 0; r < rows; ++r)
      for (std::int64_t v = 0; v < nv; ++v)
        b.CreateStore(vload(init[r], ir.add(c0, v * lanes)), acc[r * nv + v]);
    e.loop(0, count, [&](V kk) {
      V wrow = ir.add(ir.mul(kk, ncols), c0);
      std::vector<V> wv;
      for (std::int64_t v = 0; v < nv; ++v) wv.push_back(vload(w, ir.add(wrow, v * lanes)));
      for (std::size_t r = 0; r < rows; ++r) {
        V s = b.CreateVectorSplat(lanes, a(r, kk));
        for (std::int64_t v = 0; v < nv; ++v) {
          llvm::AllocaInst* slot = acc[r * nv + v];
          V sum =
              b.CreateIntrinsic(llvm::Intrinsic::fmuladd, {vt}, {s, wv[v], b.CreateLoad(vt, slot)});
          b.CreateStore(sum, slot);
        }
      }
    });
    for (std::size_t r = 0; r < rows; ++r)
      for (std::int64_t v = 0; v < nv; ++v)
        b.CreateAlignedStore(b.CreateLoad(vt, acc[r * nv + v]),
                             e.element_ptr(d, z[r], ir.add(c0, v * lanes)), align);
  });
  // Remaining columns: the same chains, one column at a time.
  e.loop(tiles * tile, ncols, [&](V col) {
    for (std::size_t r = 0; r < rows; ++r) {
      llvm::AllocaInst* sum = e.local(d, ir.ld(init[r], col));
      e.loop(0, count, [&](V kk) {
        V wv = ir.ld(w, ir.add(ir.mul(kk, ncols), col));
        e.set(sum, b.CreateIntrinsic(llvm::Intrinsic::fmuladd, {et}, {a(r, kk), wv, e.get(sum)}));
      });
      ir.st(e.get(sum), z[r], col);
    }
  });
}

// out_r[v] = sum_{col < ncols} a_r[col] * w[v * ncols + col] for v < nrows and the rows
// r < out.size(): products with w^T, read in w's own layout (unit stride along its rows). Blocks
// of VB = accumulator_budget() / rows (at most 4) weight rows share each load of a_r and each row's
// load of w feeds every r. Each out_r[v] is: per-lane multiply-add chains over the full vectors of
// columns, summed by a fixed halving tree, then the tail columns chained on in order, whatever
// block it is computed in.
void row_block_dots(Ir& ir, const std::vector<V>& out, const std::vector<V>& a, V w,
                    std::int64_t nrows, std::int64_t ncols) {
  Emitter& e = ir.e;
  auto& b = ir.b;
  const DType d = ir.d;
  const std::size_t rows = out.size();
  RowBlockVectors vec(e, d, rows);
  const unsigned lanes = vec.lanes;
  llvm::FixedVectorType* vt = vec.type;
  const std::int64_t vb = vec.per_row;
  const std::int64_t chunks = ncols / lanes;
  llvm::Type* et = vec.element;
  auto vload = [&](V base, V index) { return vec.load(base, index); };
  auto hsum = [&](V v) {
    for (unsigned n = lanes; n > 1; n /= 2) {
      std::vector<int> lo, hi;
      for (unsigned i = 0; i < n / 2; ++i) lo.push_back(static_cast<int>(i));
      for (unsigned i = n / 2; i < n; ++i) hi.push_back(static_cast<int>(i));
      v = b.CreateFAdd(b.CreateShuffleVector(v, lo), b.CreateShuffleVector(v, hi));
    }
    return b.CreateExtractElement(v, std::uint64_t{0});
  };
  // Weight rows v0 + j for j < nb.
  auto block = [&](V v0, std::int64_t nb) {
    std::vector<llvm::AllocaInst*> acc(rows * static_cast<std::size_t>(nb));
    for (auto& s : acc) s = vector_slot(ir, vt);
    V zero = llvm::Constant::getNullValue(vt);
    for (auto* s : acc) b.CreateStore(zero, s);
    std::vector<V> wrow;
    for (std::int64_t j = 0; j < nb; ++j) wrow.push_back(ir.mul(ir.add(v0, j), ncols));
    e.loop(0, chunks, [&](V c) {
      V col = ir.mul(c, static_cast<std::int64_t>(lanes));
      std::vector<V> wv;
      for (std::int64_t j = 0; j < nb; ++j) wv.push_back(vload(w, ir.add(wrow[j], col)));
      for (std::size_t r = 0; r < rows; ++r) {
        V av = vload(a[r], col);
        for (std::int64_t j = 0; j < nb; ++j) {
          llvm::AllocaInst* slot = acc[r * nb + j];
          b.CreateStore(b.CreateIntrinsic(llvm::Intrinsic::fmuladd, {vt},
                                          {av, wv[j], b.CreateLoad(vt, slot)}),
                        slot);
        }
      }
    });
    for (std::size_t r = 0; r < rows; ++r)
      for (std::int64_t j = 0; j < nb; ++j) {
        llvm::AllocaInst* sum = e.local(d, hsum(b.CreateLoad(vt, acc[r * nb + j])));
        e.loop(chunks * lanes, ncols, [&](V col) {
          e.set(sum,
                b.CreateIntrinsic(llvm::Intrinsic::fmuladd, {et},
                                  {ir.ld(a[r], col), ir.ld(w, ir.add(wrow[j], col)), e.get(sum)}));
        });
        ir.st(e.get(sum), out[r], ir.add(v0, j));
      }
  };
  const std::int64_t full = nrows / vb;
  e.loop(0, full, [&](V i) { block(ir.mul(i, vb), vb); });
  e.loop(full * vb, nrows, [&](V v) { block(v, 1); });
}

// z[col] = sigmoid(z[col]) for the i, f and o gate blocks, in loops of their own: they
// vectorise (exp has vector variants), while the tanh of the g block and of c' stay in the
// per-unit loop (libm tanh calls).
void lstm_sigmoid_gates(Ir& ir, V z, std::int64_t un) {
  auto act = [&](V col) { ir.st(ir.e.sigmoid(ir.d, ir.ld(z, col)), z, col); };
  ir.e.loop(0, 2 * un, act);
  ir.e.loop(3 * un, 4 * un, act);
}

// Work items [args.begin, args.end) as row blocks: run(b0, rows) for full blocks, then the rows
// of the last, partial block one at a time.
void for_row_blocks(Ir& ir, const KernelArgs& args, std::int64_t batch,
                    const std::function<void(V, std::size_t)>& run) {
  Emitter& e = ir.e;
  auto& b = ir.b;
  const std::int64_t block = kLstmRowBlock, full = batch / block;
  e.loop(args.begin, args.end, [&](V item) {
    if (full > 0)
      e.if_then(b.CreateICmpSLT(item, ir.i(full)),
                [&] { run(ir.mul(item, block), static_cast<std::size_t>(block)); });
    if (batch % block != 0)
      e.if_then(b.CreateICmpSGE(item, ir.i(full)),
                [&] { e.loop(full * block, batch, [&](V bi) { run(bi, 1); }); });
  });
}

// Per-row pointers of one step: zx_t, and the previous state (h0/c0 at t = 0, else the stored
// step t-1 of h_seq/c_seq).
struct StepRows {
  std::vector<V> row, zx, h_prev, c_prev;
};

StepRows step_rows(Ir& ir, V b0, std::size_t rows, V step, std::int64_t steps, std::int64_t un,
                   V zx, V h0, V c0, V hs, V cs) {
  auto& b = ir.b;
  llvm::Type* t = ir.e.type(ir.d);
  V first = b.CreateICmpEQ(step, ir.i(0));
  StepRows s;
  for (std::size_t r = 0; r < rows; ++r) {
    V bi = ir.add(b0, static_cast<std::int64_t>(r));
    V row = ir.add(ir.mul(bi, steps), step);  // (b, t) in the [B, S, *] arrays
    V prev = ir.mul(ir.sub(row, ir.i(1)), un);
    s.row.push_back(row);
    s.zx.push_back(b.CreateGEP(t, zx, ir.mul(row, 4 * un)));
    s.h_prev.push_back(
        b.CreateSelect(first, b.CreateGEP(t, h0, ir.mul(bi, un)), b.CreateGEP(t, hs, prev)));
    s.c_prev.push_back(
        b.CreateSelect(first, b.CreateGEP(t, c0, ir.mul(bi, un)), b.CreateGEP(t, cs, prev)));
  }
  return s;
}

}  // namespace

namespace {

// What both LSTM kernels read: the sizes, the element type and the inputs zx [B, S, 4U],
// w_hh [U, 4U], h0 and c0 [B, U].
struct LstmKernel {
  Emitter& e;
  ExpressionEmitter& expr;
  const Node& node;
  const Value zx;
  const DType d;
  Ir ir;
  const std::int64_t batch, steps, un, g4;
  V zxp, whh, h0, c0;

  LstmKernel(Emitter& emitter, ExpressionEmitter& expr_, const Node& n)
      : e(emitter),
        expr(expr_),
        node(n),
        zx(n.inputs()[0]),
        d(zx.dtype()),
        ir(emitter, d),
        batch(zx.shape()[0]),
        steps(zx.shape()[1]),
        un(n.inputs()[1].shape()[0]),
        g4(4 * un),
        zxp(expr_.buffer(zx)),
        whh(expr_.buffer(n.inputs()[1])),
        h0(expr_.buffer(n.inputs()[2])),
        c0(expr_.buffer(n.inputs()[3])) {}
};

struct LstmForward : LstmKernel {
  using LstmKernel::LstmKernel;
  void emit(const KernelArgs& args);
};

struct LstmBackward : LstmKernel {
  using LstmKernel::LstmKernel;
  void emit(const KernelArgs& args);
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// lstm_scan
//
// zx [B, S, 4U], w_hh [U, 4U], h0, c0 [B, U]; outputs h_seq, c_seq [B, S, U]. Per step each
// row's gate pre-activations z [4U] (stack) are zx_t + h.w_hh (row_block_products); then the
// sigmoid gates (a vectorised loop), and per unit c' = f*c + i*g and h' = o*tanh(c') are
// stored; the stored (rounded) h', c' are the next step's state, as in the interpreter.
void LstmForward::emit(const KernelArgs& args) {
  V hs = expr.buffer(node.output(0));
  V cs = expr.buffer(node.output(1));
  std::vector<V> z;
  for (std::int64_t r = 0; r < kLstmRowBlock; ++r)
    z.push_back(e.local_array(d, std::max<std::int64_t>(g4, 1)));

  for_row_blocks(ir, args, batch, [&](V b0, std::size_t rows) {
    std::vector<V> zr(z.begin(), z.begin() + static_cast<std::ptrdiff_t>(rows));
    e.loop(0, steps, [&](V step) {
      StepRows s = step_rows(ir, b0, rows, step, steps, un, zxp, h0, c0, hs, cs);
      row_block_products(
          ir, zr, s.zx, whh, un, [&](std::size_t r, V kk) { return ir.ld(s.h_prev[r], kk); }, g4);
      for (std::size_t r = 0; r < rows; ++r) {
        V srow = ir.mul(s.row[r], un);
        lstm_sigmoid_gates(ir, zr[r], un);
        e.loop(0, un, [&](V u) {
          V ig = ir.ld(zr[r], u);
          V fg = ir.ld(zr[r], ir.add(u, un));
          V gg = e.tanh(d, ir.ld(zr[r], ir.add(u, 2 * un)));
          V og = ir.ld(zr[r], ir.add(u, 3 * un));
          V cn = ir.fadd(ir.fmul(fg, ir.ld(s.c_prev[r], u)), ir.fmul(ig, gg));
          ir.st(cn, cs, ir.add(srow, u));
          ir.st(ir.fmul(og, e.tanh(d, cn)), hs, ir.add(srow, u));
        });
      }
    });
  });
}

// ---------------------------------------------------------------------------------------------
// lstm_scan_backward
//
// inputs zx, w_hh, h0, c0, h_seq, c_seq, dh_seq, dc_seq; outputs dzx [B, S, 4U], dh0, dc0.
// Items are row blocks as in the forward (every output element belongs to one batch row; the
// weight gradient is a graph-level GEMM over dzx). Per row, from the last step back: recompute
// the gates (row_block_products, as in the forward), form dz into dzx_t and the carried dc
// (stack), then dh_{t-1} = dz.w_hh^T (row_block_dots) from the stored dz.
void LstmBackward::emit(const KernelArgs& args) {
  V hs = expr.buffer(node.inputs()[4]);
  V cs = expr.buffer(node.inputs()[5]);
  V dhs = expr.buffer(node.inputs()[6]);
  V dcs = expr.buffer(node.inputs()[7]);
  V dzx = expr.buffer(node.output(0));
  V dh0 = expr.buffer(node.output(1));
  V dc0 = expr.buffer(node.output(2));
  llvm::Type* t = e.type(d);
  std::vector<V> gates, dhn, dcn;
  for (std::int64_t r = 0; r < kLstmRowBlock; ++r) {
    gates.push_back(e.local_array(d, std::max<std::int64_t>(g4, 1)));
    dhn.push_back(e.local_array(d, std::max<std::int64_t>(un, 1)));
    dcn.push_back(e.local_array(d, std::max<std::int64_t>(un, 1)));
  }
  V one = ir.c(1);

  for_row_blocks(ir, args, batch, [&](V b0, std::size_t rows) {
    auto first_rows = [&](const std::vector<V>& v) {
      return std::vector<V>(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(rows));
    };
    const std::vector<V> gr = first_rows(gates), dh_next = first_rows(dhn),
                         dc_next = first_rows(dcn);
    for (std::size_t r = 0; r < rows; ++r) {
      ir.fill(dh_next[r], ir.c(0), un);
      ir.fill(dc_next[r], ir.c(0), un);
    }
    e.loop_down(ir.i(0), ir.i(steps), [&](V step) {
      StepRows s = step_rows(ir, b0, rows, step, steps, un, zxp, h0, c0, hs, cs);
      row_block_products(
          ir, gr, s.zx, whh, un, [&](std::size_t r, V kk) { return ir.ld(s.h_prev[r], kk); }, g4);
      std::vector<V> dz;
      for (std::size_t r = 0; r < rows; ++r) {
        V srow = ir.mul(s.row[r], un);
        V dzr = ir.b.CreateGEP(t, dzx, ir.mul(s.row[r], g4));
        dz.push_back(dzr);
        lstm_sigmoid_gates(ir, gr[r], un);
        e.loop(0, un, [&](V u) {
          V ig = ir.ld(gr[r], u);
          V fg = ir.ld(gr[r], ir.add(u, un));
          V gg = e.tanh(d, ir.ld(gr[r], ir.add(u, 2 * un)));
          V og = ir.ld(gr[r], ir.add(u, 3 * un));
          V tc = e.tanh(d, ir.ld(cs, ir.add(srow, u)));
          V dh = ir.fadd(ir.ld(dhs, ir.add(srow, u)), ir.ld(dh_next[r], u));
          V dc = ir.fadd(ir.fadd(ir.ld(dcs, ir.add(srow, u)), ir.ld(dc_next[r], u)),
                         ir.fmul(ir.fmul(dh, og), ir.fsub(one, ir.fmul(tc, tc))));
          ir.st(ir.fmul(ir.fmul(ir.fmul(dc, gg), ig), ir.fsub(one, ig)), dzr, u);
          ir.st(ir.fmul(ir.fmul(ir.fmul(dc, ir.ld(s.c_prev[r], u)), fg), ir.fsub(one, fg)), dzr,
                ir.add(u, un));
          ir.st(ir.fmul(ir.fmul(dc, ig), ir.fsub(one, ir.fmul(gg, gg))), dzr, ir.add(u, 2 * un));
          ir.st(ir.fmul(ir.fmul(ir.fmul(dh, tc), og), ir.fsub(one, og)), dzr, ir.add(u, 3 * un));
          ir.st(ir.fmul(dc, fg), dc_next[r], u);
        });
      }
      // dh_{t-1} (dh_next was consumed above).
      row_block_dots(ir, dh_next, dz, whh, un, g4);
    });
    for (std::size_t r = 0; r < rows; ++r) {
      V base = ir.mul(ir.add(b0, static_cast<std::int64_t>(r)), un);
      e.loop(0, un, [&](V u) {
        ir.st(ir.ld(dh_next[r], u), dh0, ir.add(base, u));
        ir.st(ir.ld(dc_next[r], u), dc0, ir.add(base, u));
      });
    }
  });
}

void emit_lstm_scan(Emitter& e, ExpressionEmitter& expr, const Kernel& k, const KernelArgs& args) {
  LstmForward(e, expr, *k.anchor).emit(args);
}

void emit_lstm_scan_backward(Emitter& e, ExpressionEmitter& expr, const Kernel& k,
                             const KernelArgs& args) {
  LstmBackward(e, expr, *k.anchor).emit(args);
}

}  // namespace edifice::jit::codegen
