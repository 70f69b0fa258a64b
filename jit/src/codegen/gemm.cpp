// GEMM with a fused elementwise epilogue: C[b] = epilogue(A[b] . B[b]), in the canonical
// layouts of ../gemm_layout.hpp (A as M x K or K x M, B as K x N or N x K, read in place).
//
// Blocking (GotoBLAS/BLIS style; sizes from gemm_tiling in ../gemm_layout.cpp, measured on
// znver4: mr x nr micro-tile, kc = 256, item tiles of <= 48 rows x <= 1024 columns):
//
//   work item = one C tile (<= tile_m x tile_n) of one batch entry, over all of K; items are
//   ordered (batch, n tile, m tile), so the items a thread runs share their B panel
//     Bp (stack): B[K x tile_n] packed into nr-column panels, each K rows of nr contiguous
//         elements, packed when the item's (batch, n tile) differs from the last one packed
//         (B too deep for a 2 MiB Bp is instead packed per K block inside the item); a B
//         stored K x N whose panels are all full is not packed: the micro-kernel reads its
//         rows in place (see in_place_b)
//     Ct (stack): the item's C tile, rows padded to nr
//     for each K block of kc steps:
//       pack A[tile_m x kc] -> Ap: mr-row panels, each kc columns of mr contiguous elements
//       for each nr-column panel of Bp      (the K block of one panel: kc x nr, L1-sized)
//         for each mr-row panel of Ap       (Ap stays in L1/L2 for the whole row of panels)
//           micro-kernel: Ct[mr x nr] (+)= Ap panel . Bp panel
//     epilogue: out[b, m, n] = epilogue(Ct[m][n]) over the valid part of the tile, one store
//       per element; a vectorisable loop along n
//
// Packing reads whichever layout the operand has: a K-contiguous operand (A as M x K, B as
// N x K) is transposed L x L block by block in registers, the other is one vector copy per k
// step; both prefetch the source ahead (rows of a wide matrix are a page apart). Partial
// panels are zero-padded, so the micro-kernel always computes full mr x nr tiles and the
// tails of M and N only shorten the epilogue loop; a K tail is a shorter k loop.
//
// Micro-kernel register layout (gemm_microkernel.cpp), L lanes per vector (f32: 16 on
// AVX-512, 8 on AVX2, 4 on SSE; f64 half that): nr = 2 vectors, accumulators c[r][0..1] for
// r < mr. AVX2/SSE (16 registers): 6 x 2 = 12 accumulators + 2 B vectors + 1 broadcast.
// AVX-512 (32 registers): 12 x 2 = 24 accumulators + 2 B + broadcasts. Per k step: 2 aligned
// vector loads of B, mr broadcast loads of A, 2 * mr independent FMAs (enough to cover FMA
// latency x ports), unrolled x4. It is emitted once per module and called, not inlined.
//
// Determinism: every element of C is one chain of multiply-adds in k order starting from 0
// (K blocks store and reload the running sum exactly), whatever the tiling or the thread that
// runs the item; products of at most 4 rows with B stored N x K instead sum in vector lanes,
// in an order fixed by the shape alone. Integer dtypes use the same code with wrapping
// multiply-add.
#include <edifice/core/op_attrs.hpp>

#include "../gemm_layout.hpp"
#include "gemm_microkernel.hpp"
#include "kernels.hpp"

namespace edifice::jit::codegen {
namespace {

std::int64_t ceil_div(std::int64_t a, std::int64_t b) {
  return (a + b - 1) / b;
}

// One work item's C tile: rows [m0, m0 + mi) and columns [n0, n0 + ni) of batch entry
// `batch`, with the item's A rows and B columns at a_item and b_item.
struct GemmTile {
  llvm::Value *key, *batch, *m0, *mi, *n0, *ni, *m_panels, *n_panels, *a_item, *b_item;
};

// One GEMM kernel: its operands in the layout of ../gemm_layout.hpp, the tiling, the
// strategy the shape selects, and the helpers and stack buffers every strategy uses.
struct Gemm {
  Emitter& e;
  ExpressionEmitter& expr;
  llvm::IRBuilder<>& b;
  const Node& dot;
  const GemmLayout g;
  const DType d;
  const GemmTiling t;
  const Value root;
  llvm::Value *a_ptr, *b_ptr, *c_ptr;
  // Element strides of A as (m, k) and B as (n, k).
  std::int64_t a_sm, a_sk, b_sn, b_sk;
  std::int64_t tm, tn, b_depth;
  bool small_m, small_m_nk, in_place_b;
  llvm::Function *ukernel, *pack_a, *pack_b, *ukernel_in_place;
  llvm::AllocaInst *ct, *ap, *bp, *packed_key;
  // Output axes: batch axes, then M's, then N's; each group delinearised on its own so the
  // common single-axis case is plain index arithmetic (vectorisable epilogue).
  Shape batch_shape, m_shape, n_shape;

  Gemm(Emitter& emitter, ExpressionEmitter& expr_, const Kernel& k);

  llvm::Value* min(llvm::Value* x, llvm::Value* y) {
    return b.CreateSelect(b.CreateICmpSLT(x, y), x, y);
  }
  // Tile i of T spans panels [i*P/T, (i+1)*P/T) (see GemmTiling): {first, count}.
  std::pair<llvm::Value*, llvm::Value*> span(llvm::Value* i, std::int64_t tiles, std::int64_t unit,
                                             std::int64_t extent) {
    const std::int64_t panels = ceil_div(extent, unit);
    auto edge = [&](llvm::Value* j) {
      return min(
          b.CreateMul(b.CreateUDiv(b.CreateMul(j, e.i64(panels)), e.i64(tiles)), e.i64(unit)),
          e.i64(extent));
    };
    llvm::Value* lo = edge(i);
    return std::make_pair(lo, b.CreateSub(edge(b.CreateAdd(i, e.i64(1))), lo));
  }

  GemmTile tile(llvm::Value* item);
  void multiply_small_m(const GemmTile& tile);
  void multiply_small_m_nk(const GemmTile& tile);
  void multiply_blocked(const GemmTile& tile);
  void store_epilogue(const GemmTile& tile);
};

Gemm::Gemm(Emitter& emitter, ExpressionEmitter& expr_, const Kernel& k)
    : e(emitter),
      expr(expr_),
      b(emitter.builder()),
      dot(*k.anchor),
      g(gemm_layout(dot)),
      d(dot.outputs()[0].dtype),
      t(gemm_tiling(g, d)),
      root(k.root->output(0)) {
  const Shape& out_shape = dot.outputs()[0].shape;
  a_ptr = expr.buffer(dot.inputs()[0]);
  // B may be a column block of a wider matrix, read in place (see ColumnView).
  const std::optional<ColumnView> b_view = gemm_column_view(dot, 1);
  b_ptr = b_view ? e.element_ptr(d, expr.buffer(b_view->source), e.i64(b_view->offset))
                 : expr.buffer(dot.inputs()[1]);
  c_ptr = expr.buffer(root);

  a_sm = g.trans_a ? 1 : g.k;
  a_sk = g.trans_a ? g.m : 1;
  b_sn = g.trans_b ? (b_view ? b_view->row_stride : g.k) : 1;
  b_sk = g.trans_b ? 1 : (b_view ? b_view->row_stride : g.n);
  ukernel = gemm_microkernel(e, d, t);
  pack_a = gemm_packer(e, d, t, t.mr, /*transpose=*/a_sm != 1);
  pack_b = gemm_packer(e, d, t, t.nr, /*transpose=*/b_sn != 1);

  tm = t.tile_m;
  tn = t.tile_n;
  // Products with at most kSmallM rows of A and B stored K x N skip packing (see
  // multiply_small_m).
  constexpr std::int64_t kSmallM = 4;
  small_m = is_floating(d) && g.m <= kSmallM && b_sn == 1 && g.k > 0;
  // The same with B stored N x K (the absorbed key projection's Wk^T) and A M x K: dot
  // products along the contiguous k of both, instead of a transposing pack of B.
  small_m_nk = is_floating(d) && !small_m && g.m <= kSmallM && b_sk == 1 && a_sk == 1 && g.k > 0;
  // B stored K x N with every nr-column panel full is read in place by the micro-kernel, one
  // row of the panel per k step, instead of being packed: on znver4 the prefetchers stream the
  // strided rows from L2 as fast as a packed panel, and the packing copy (the item's whole
  // block of B, per thread) is saved. gemm_bench, % of peak packed -> in place, 2 threads:
  // 60 x 1024 x 256 80 -> 93, 1920 x 1024 x 256 92 -> 95, 1920 x 256 x 768 92 -> 96.
  // Not when B's rows are a multiple of 2 KiB apart: a panel's rows then fall into the same
  // few cache sets, so the kc x nr panel no longer stays in L1 across the item's row panels
  // (gemm_bench, 1 thread, Sapphire Rapids: square 1024 48 -> 68% of peak packed, the weight
  // gradient 256 x 1920 x 1024 with A^T 47 -> 61%).
  constexpr std::int64_t kAliasingStrideBytes = 2048;
  const bool aliasing_rows =
      (b_sk * static_cast<std::int64_t>(dtype_size(d))) % kAliasingStrideBytes == 0;
  in_place_b =
      is_floating(d) && !small_m && b_sn == 1 && g.n % t.nr == 0 && g.k > 0 && !aliasing_rows;
  ukernel_in_place = in_place_b ? gemm_microkernel(e, d, t, true) : nullptr;
  // B panels hold b_depth k steps: all of K (packed once per (batch, n tile) and reused by the
  // following items) or one K block.
  b_depth = t.whole_k_b ? std::max<std::int64_t>(g.k, 1) : t.kc;
  ct = e.local_array(d, tm * tn);
  ap = e.local_array(d, tm * t.kc);
  bp = e.local_array(d, in_place_b ? 1 : b_depth * tn);
  packed_key = e.local(DType::i64, e.i64(-1));

  const DotDims dims = DotDims::from(dot.attrs());
  const auto nb = static_cast<std::ptrdiff_t>(dims.lhs_batch.size());
  const auto nm = static_cast<std::ptrdiff_t>(dot.inputs()[0].rank()) - nb -
                  static_cast<std::ptrdiff_t>(dims.lhs_contract.size());
  batch_shape.assign(out_shape.begin(), out_shape.begin() + nb);
  m_shape.assign(out_shape.begin() + nb, out_shape.begin() + nb + nm);
  n_shape.assign(out_shape.begin() + nb + nm, out_shape.end());
}

GemmTile Gemm::tile(llvm::Value* item) {
  GemmTile c;
  // item = (batch * n_tiles + n tile) * m_tiles + m tile
  c.key = b.CreateUDiv(item, e.i64(t.m_tiles));
  c.batch = b.CreateUDiv(c.key, e.i64(t.n_tiles));
  std::tie(c.m0, c.mi) = span(b.CreateURem(item, e.i64(t.m_tiles)), t.m_tiles, t.mr, g.m);
  std::tie(c.n0, c.ni) = span(b.CreateURem(c.key, e.i64(t.n_tiles)), t.n_tiles, t.nr, g.n);
  c.m_panels = b.CreateUDiv(b.CreateAdd(c.mi, e.i64(t.mr - 1)), e.i64(t.mr));
  c.n_panels = b.CreateUDiv(b.CreateAdd(c.ni, e.i64(t.nr - 1)), e.i64(t.nr));
  c.a_item = e.element_ptr(
      d, a_ptr,
      b.CreateAdd(b.CreateMul(c.batch, e.i64(g.m * g.k)), b.CreateMul(c.m0, e.i64(a_sm))));
  c.b_item = e.element_ptr(
      d, b_ptr,
      b.CreateAdd(b.CreateMul(c.batch, e.i64(g.k * g.n)), b.CreateMul(c.n0, e.i64(b_sn))));
  return c;
}

// A row or two (a model's pruned last position, a batch-1 step): packing B (the whole weight
// matrix) would cost far more than the product. Stream B's rows in place instead; each element
// is still one chain of multiply-adds in k order from 0, as in multiply_blocked.
void Gemm::multiply_small_m(const GemmTile& c) {
  plain_loop(e, e.i64(0), c.mi, [&](llvm::Value* r) {
    plain_loop(
        e, e.i64(0), c.ni,
        [&](llvm::Value* j) {
          e.store(d, e.constant(0, d), ct, b.CreateAdd(b.CreateMul(r, e.i64(tn)), j));
        },
        true);
  });
  plain_loop(e, e.i64(0), e.i64(g.k), [&](llvm::Value* kk) {
    llvm::Value* b_row = b.CreateMul(kk, e.i64(b_sk));
    plain_loop(e, e.i64(0), c.mi, [&](llvm::Value* r) {
      llvm::Value* a = e.load(
          d, c.a_item, b.CreateAdd(b.CreateMul(r, e.i64(a_sm)), b.CreateMul(kk, e.i64(a_sk))));
      llvm::Value* c_row = b.CreateMul(r, e.i64(tn));
      plain_loop(
          e, e.i64(0), c.ni,
          [&](llvm::Value* j) {
            llvm::Value* at = b.CreateAdd(c_row, j);
            llvm::Value* bv = e.load(d, c.b_item, b.CreateAdd(b_row, j));
            e.store(d, e.fma(d, a, bv, e.load(d, ct, at)), ct, at);
          },
          true);
    });
  });
}

// Few rows of A with B stored N x K: four rows of B per pass over A's row, four independent
// sums vectorised along k (reassociated: each sum is kept in vector lanes and added across
// them at the end).
void Gemm::multiply_small_m_nk(const GemmTile& c) {
  auto dots = [&](llvm::Value* r, llvm::Value* j0, int count) {
    llvm::Value* a_row = e.element_ptr(d, c.a_item, b.CreateMul(r, e.i64(a_sm)));
    std::vector<llvm::AllocaInst*> acc;
    for (int i = 0; i < count; ++i) acc.push_back(e.local(d, e.constant(0, d)));
    plain_loop(
        e, e.i64(0), e.i64(g.k),
        [&](llvm::Value* kk) {
          llvm::Value* a = e.load(d, a_row, kk);
          for (int i = 0; i < count; ++i) {
            llvm::Value* row = b.CreateMul(b.CreateAdd(j0, e.i64(i)), e.i64(b_sn));
            llvm::Value* sum =
                b.CreateIntrinsic(llvm::Intrinsic::fmuladd, {e.type(d)},
                                  {a, e.load(d, c.b_item, b.CreateAdd(row, kk)), e.get(acc[i])});
            llvm::FastMathFlags fmf;
            fmf.setAllowReassoc(true);
            fmf.setAllowContract(true);
            llvm::cast<llvm::Instruction>(sum)->setFastMathFlags(fmf);
            e.set(acc[i], sum);
          }
        },
        /*vectorize=*/true);
    for (int i = 0; i < count; ++i)
      e.store(d, e.get(acc[i]), ct,
              b.CreateAdd(b.CreateMul(r, e.i64(tn)), b.CreateAdd(j0, e.i64(i))));
  };
  constexpr int kRowsOfB = 4;
  llvm::Value* groups = b.CreateUDiv(c.ni, e.i64(kRowsOfB));
  plain_loop(e, e.i64(0), c.mi, [&](llvm::Value* r) {
    plain_loop(e, e.i64(0), groups,
               [&](llvm::Value* gi) { dots(r, b.CreateMul(gi, e.i64(kRowsOfB)), kRowsOfB); });
    plain_loop(e, b.CreateMul(groups, e.i64(kRowsOfB)), c.ni,
               [&](llvm::Value* j) { dots(r, j, 1); });
  });
}

// The blocked product of the scheme at the top of this file: packed (or in-place) B panels,
// packed A per K block, the micro-kernel over the item's panels.
void Gemm::multiply_blocked(const GemmTile& c) {
  if (t.whole_k_b && g.k > 0 && !in_place_b) {
    // Packing is exact, so reusing the panel changes no bits.
    e.if_then(b.CreateICmpNE(c.key, e.get(packed_key)), [&] {
      b.CreateCall(pack_b, {bp, c.b_item, e.i64(b_sn), e.i64(b_sk), c.ni, e.i64(g.k)});
      e.set(packed_key, c.key);
    });
  }
  if (g.k == 0)
    plain_loop(
        e, e.i64(0), e.i64(tm * tn), [&](llvm::Value* i) { e.store(d, e.constant(0, d), ct, i); },
        true);
  plain_loop(e, e.i64(0), e.i64(ceil_div(g.k, t.kc)), [&](llvm::Value* block) {
    llvm::Value* pc = b.CreateMul(block, e.i64(t.kc));
    llvm::Value* kc = min(e.i64(t.kc), b.CreateSub(e.i64(g.k), pc));
    // Offset of this K block inside each B panel.
    llvm::Value* b_block = b.CreateMul(pc, e.i64(t.nr));
    if (!t.whole_k_b && !in_place_b) {
      b.CreateCall(pack_b, {bp, e.element_ptr(d, c.b_item, b.CreateMul(pc, e.i64(b_sk))),
                            e.i64(b_sn), e.i64(b_sk), c.ni, kc});
      b_block = e.i64(0);
    }
    llvm::Value* b_panel_size = t.whole_k_b ? e.i64(b_depth * t.nr) : b.CreateMul(kc, e.i64(t.nr));
    b.CreateCall(pack_a, {ap, e.element_ptr(d, c.a_item, b.CreateMul(pc, e.i64(a_sk))), e.i64(a_sm),
                          e.i64(a_sk), c.mi, kc});
    llvm::Value* accumulate = b.CreateICmpNE(block, e.i64(0));
    plain_loop(e, e.i64(0), c.n_panels, [&](llvm::Value* jr) {
      llvm::Value* b_panel =
          in_place_b ? e.element_ptr(
                           d, c.b_item,
                           b.CreateAdd(b.CreateMul(jr, e.i64(t.nr)), b.CreateMul(pc, e.i64(b_sk))))
                     : e.element_ptr(d, bp, b.CreateAdd(b.CreateMul(jr, b_panel_size), b_block));
      plain_loop(e, e.i64(0), c.m_panels, [&](llvm::Value* ir) {
        llvm::Value* a_panel = e.element_ptr(d, ap, b.CreateMul(ir, b.CreateMul(kc, e.i64(t.mr))));
        llvm::Value* c_tile = e.element_ptr(
            d, ct, b.CreateAdd(b.CreateMul(ir, e.i64(t.mr * tn)), b.CreateMul(jr, e.i64(t.nr))));
        if (in_place_b)
          b.CreateCall(ukernel_in_place,
                       {kc, a_panel, b_panel, c_tile, e.i64(tn), accumulate, e.i64(b_sk)});
        else
          b.CreateCall(ukernel, {kc, a_panel, b_panel, c_tile, e.i64(tn), accumulate});
      });
    });
  });
}

// Each finished element goes through the fused expression, then one store.
void Gemm::store_epilogue(const GemmTile& c) {
  Index batch_index = expr.delinearize(c.batch, batch_shape);
  plain_loop(e, e.i64(0), c.mi, [&](llvm::Value* r) {
    llvm::Value* m = b.CreateAdd(c.m0, r);
    Index prefix = batch_index;
    for (llvm::Value* i : expr.delinearize(m, m_shape)) prefix.push_back(i);
    llvm::Value* out_row =
        b.CreateMul(b.CreateAdd(b.CreateMul(c.batch, e.i64(g.m)), m), e.i64(g.n));
    plain_loop(
        e, e.i64(0), c.ni,
        [&](llvm::Value* j) {
          llvm::Value* n = b.CreateAdd(c.n0, j);
          expr.clear_memo();
          expr.override_node(&dot, [&](const Index&) {
            return e.load(d, ct, b.CreateAdd(b.CreateMul(r, e.i64(tn)), j));
          });
          Index index = prefix;
          for (llvm::Value* i : expr.delinearize(n, n_shape)) index.push_back(i);
          e.store(root.dtype(), expr.at(root, index), c_ptr, b.CreateAdd(out_row, n));
          expr.clear_memo();
        },
        /*vectorize=*/true);
  });
}

}  // namespace

void emit_gemm(Emitter& e, ExpressionEmitter& expr, const Kernel& k, const KernelArgs& args) {
  Gemm gemm(e, expr, k);
  plain_loop(e, args.begin, args.end, [&](llvm::Value* item) {
    const GemmTile tile = gemm.tile(item);
    if (gemm.small_m)
      gemm.multiply_small_m(tile);
    else if (gemm.small_m_nk)
      gemm.multiply_small_m_nk(tile);
    else
      gemm.multiply_blocked(tile);
    gemm.store_epilogue(tile);
  });
}

}  // namespace edifice::jit::codegen
