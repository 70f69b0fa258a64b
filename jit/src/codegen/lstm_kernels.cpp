// LSTM kernels (forward and backward). See structured_kernels.cpp for the conventions shared
// by the structured-op kernels.
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
