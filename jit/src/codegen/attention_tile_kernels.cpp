// The tiled (flash) attention kernels, forward and backward: a tile of query (or key) rows
// in the lanes of the GEMM micro-tile, walking blocks of the other side's rows. Entered from
// attention_row_kernels.cpp, which also holds the row kernels these fall back to.
#include "../work_items.hpp"
#include "attention.hpp"
#include "gemm_microkernel.hpp"
#include "vector_math.hpp"

#include <algorithm>
#include <functional>
#include <limits>
#include <tuple>
#include <utility>

namespace edifice::jit::codegen {

// ---------------------------------------------------------------------------------------------
// attention: the tiled (flash) forward kernel
//
// Work item: one query tile of NR rows (the GEMM micro-tile's columns: 32 f32 lanes on
// AVX-512) of one batch entry. Queries sit in the lanes, so the softmax statistics of the tile
// are vertical vector operations. The tile's queries are packed once (Qᵀ, D x NR); the keys of
// the tile's band [lo, hi) (the union of its rows' allowed keys: a window or causal predicate
// never visits a key block outside it) are visited in blocks of BC keys:
//   Sᵀ = K_block · Qᵀ            (BC x NR; the GEMM micro-kernel on packed panels)
//   s = scale * Sᵀ, -inf where masked (only blocks on the band's edge test elements)
//   m' = max(m, max_j s), alpha = exp(m - m'), P = exp(s - m'), l = alpha l + sum_j P
//   Oᵀ = alpha Oᵀ + V_blockᵀ · P  (Dv x NR; the micro-kernel again, P as its packed B panel)
// and finally out = Oᵀᵀ / l, lse = m + log l. Memory: O(NR (D + Dv + BC)) per thread, never
// the Sq x Sk score matrix. With Dv >= mr the micro-kernel reads the K and V blocks where they
// lie (rows of K, columns of V: TileKernel::product_rows_in_place / product_cols_in_place)
// instead of packing both per block; only Qᵀ is packed, once per tile.
// Tensor masks have no band: the tile visits every key block and classifies the mask block
// first (a vector OR and min per query row): all zero, the block is skipped (no Sᵀ, no P·V);
// all nonzero, no element is tested; mixed, the block's bits are gathered per query and tested.
// Masked keys (outside a row's band, or zero in the mask) score exactly `fill` in the
// interpreter; they change the result only if exp(fill - m) does not underflow to 0 (a row
// with no allowed key, or a fill close to the scores). A tile with such a row is recomputed by
// the row kernel, which adds them exactly.
namespace {

// Keys per block of the tiled kernels: a multiple of the micro-kernel's rows near 64. Measured
// against half that (znver4, 2 threads, f32, ms fwd / fwd+bwd, 72 vs 36 keys): S 4096 w 256
// 9.6 / 43-56 vs 10.3 / 44, causal 65 / 300 vs 67 / 301, S 1024 unmasked 7.6 / 37 vs 8.1 / 37,
// S 16 0.56 vs 0.94 fwd: within this machine's noise except for short rows, where fewer,
// larger blocks win. Blocks wider than 128 keys would not fit the tensor-mask bit sets.
std::int64_t key_block(const GemmTiling& t) {
  return t.mr * ((64 + t.mr - 1) / t.mr);
}

std::int64_t round_up(std::int64_t a, std::int64_t m) {
  return (a + m - 1) / m * m;
}

// exp(x) for the tiles' softmax, where masked scores are -inf: 0 below the smallest normal
// result instead of a denormal, and a finite argument in every lane, so that the vector exp
// never takes a slow path for one lane out of range (with glibc's libmvec, used before, that sent
// the whole vector to the scalar fallback: measured 3x slower tiles) and no denormal reaches the
// micro-kernel. The flushed terms are below 2^-124 of the row's sum (its largest term is exp(0) =
// 1). NaN propagates. f32 takes vector_math's f32-arithmetic exp, valid from the floor on: about
// half the instructions of the f64 evaluation, and the tiles spent about 15% of their time in exp.
V tile_exp(Emitter& e, Ir& ir, DType d, V x) {
  auto& b = e.builder();
  V floor = ir.c(d == DType::f32 ? -86.5 : -708.0);
  V low = b.CreateFCmpOLT(x, floor);
  V in_range = b.CreateSelect(low, floor, x);
  return b.CreateSelect(
      low, ir.c(0),
      d == DType::f32 ? vector_math::exp_f32_bounded(b, in_range) : e.exp(d, in_range));
}

// What the tiled kernels share: the GEMM micro-kernel of the element type, loops over a
// tile's NR lanes, products of packed panels, and the band test.
struct TileCode {
  Emitter& e;
  Ir& ir;
  const Attention& at;
  GemmTiling t;
  llvm::Function* ukernel;

  TileCode(Emitter& emitter, Ir& ir_, const Attention& attention, const Node& node)
      : e(emitter),
        ir(ir_),
        at(attention),
        t(attention_tiling(node)),
        ukernel(gemm_microkernel(emitter, attention.d, t)) {}

  // Loops over the tile's lanes: vectorised, never unrolled (fully unrolled, SROA turns the
  // lane arrays into scalars and the loop vectoriser no longer sees them).
  void lanes(const std::function<void(V)>& body) {
    plain_loop(e, ir.i(0), ir.i(t.nr), body, /*vectorize=*/true);
  }
  // C (rows x NR, row stride NR) (+)= A · B_tile over kc steps, A packed in mr-row panels
  // (panel p at p * kc * mr), B_tile packed as kc rows of NR.
  void product(llvm::AllocaInst* a_packed, V rows, V kc, llvm::AllocaInst* b_tile,
               llvm::AllocaInst* c, bool accumulate) {
    auto& b = e.builder();
    V panels = b.CreateUDiv(ir.add(rows, t.mr - 1), ir.i(t.mr));
    e.loop(ir.i(0), panels, [&](V p) {
      b.CreateCall(ukernel, {kc, e.element_ptr(at.d, a_packed, ir.mul(ir.mul(p, kc), t.mr)), b_tile,
                             e.element_ptr(at.d, c, ir.mul(p, t.mr * t.nr)), ir.i(t.nr),
                             b.getInt1(accumulate)});
    });
  }
  // body(test) over a block: body(false) when `inside` (every pair of the block is allowed:
  // in the band, or a tensor mask block without a zero) or there is no mask, body(true) (test
  // each pair) otherwise.
  void banded(V inside, const std::function<void(bool)>& body) {
    if (at.kind == MaskKind::none) return body(false);
    e.if_then(inside, [&] { body(false); });
    e.if_then(e.builder().CreateNot(inside), [&] { body(true); });
  }

  // One block of a tile's walk over the rows of the other side (keys for a query tile,
  // queries for a key tile): rows [start, start + count), `row` the flat row of `start`;
  // `inside` when no pair of the block needs a test (see banded); `some`, under tensor masks
  // only (null otherwise), when some pair of the block is allowed.
  struct Block {
    V start, count, row, inside, some;
  };
  // Visits the blocks of `width` rows covering [lo, hi) (with `clamp`, a negative span is
  // empty); blocks within [inner_lo, inner_hi) are inside. flat_row(start) gives a block's
  // flat row; under tensor masks classify(start, count) gives {some, inside} from the mask
  // block (TileCode::classify).
  void walk_blocks(V lo, V hi, V inner_lo, V inner_hi, std::int64_t width, bool clamp,
                   const std::function<V(V)>& flat_row,
                   const std::function<std::pair<V, V>(V, V)>& classify_block,
                   const std::function<void(const Block&)>& visit) {
    auto& b = e.builder();
    V span = ir.sub(hi, lo);
    if (clamp) span = ir.imax(span, ir.i(0));
    V blocks = b.CreateUDiv(ir.add(span, width - 1), ir.i(width));
    e.loop(ir.i(0), blocks, [&](V blk) {
      Block k;
      k.start = ir.add(lo, ir.mul(blk, width));
      k.count = ir.imin(ir.i(width), ir.sub(hi, k.start));
      k.row = flat_row(k.start);
      k.inside = b.CreateAnd(b.CreateICmpSGE(k.start, inner_lo),
                             b.CreateICmpSLE(ir.add(k.start, k.count), inner_hi));
      k.some = nullptr;
      if (at.kind == MaskKind::tensor)
        std::tie(k.some, k.inside) = classify_block(k.start, k.count);
      visit(k);
    });
  }
  // body() where a block has an allowed pair: under tensor masks a block of zeros is skipped.
  void unless_empty(const Block& k, const std::function<void()>& body) {
    if (k.some)
      e.if_then(k.some, body);
    else
      body();
  }

  // Tensor masks. The mask block of queries [i, i + rows) x keys [j, j + cols) (cols <= width,
  // a compile-time bound) is read a query row at a time; a full-width row of contiguous keys
  // is one <width x i8> load, so that classifying a block costs a few instructions per row
  // (most blocks of a banded or block-sparse mask are all zero and only classified).
  V mask_row(V base, V i, V r, V j) {
    return ir.add(base, ir.add(ir.mul(ir.add(i, r), at.mask_query_stride()),
                               ir.mul(j, at.mask_key_stride())));
  }
  // body(vector) for a block whose rows are read as vectors, body(false) otherwise.
  void mask_rows(V cols, std::int64_t width, const std::function<void(bool)>& body) {
    if (at.mask_key_stride() != 1) return body(false);
    V full = e.builder().CreateICmpEQ(cols, ir.i(width));
    e.if_then(full, [&] { body(true); });
    e.if_then(e.builder().CreateNot(full), [&] { body(false); });
  }
  llvm::Value* load_mask_row(V mask, V at_offset, std::int64_t width) {
    auto& b = e.builder();
    auto* vt = llvm::FixedVectorType::get(b.getInt8Ty(), static_cast<unsigned>(width));
    return b.CreateAlignedLoad(vt, e.element_ptr(DType::u8, mask, at_offset), llvm::Align(1));
  }
  // Element (r, col) of the block != 0 (i1), read one at a time.
  V mask_element(V mask, V base, V i, V r, V j, V col) {
    V x =
        e.load(DType::u8, mask, ir.add(mask_row(base, i, r, j), ir.mul(col, at.mask_key_stride())));
    return e.builder().CreateICmpNE(x, e.builder().getInt8(0));
  }
  // {some element is nonzero, every element is nonzero} (i1 each) of the block.
  std::pair<V, V> classify(V mask, V base, V i, V rows, V j, V cols, std::int64_t width) {
    auto& b = e.builder();
    llvm::AllocaInst* any = e.local(DType::u8, b.getInt8(0));
    llvm::AllocaInst* all = e.local(DType::u8, b.getInt8(1));
    mask_rows(cols, width, [&](bool vector) {
      if (vector) {
        // OR and unsigned min of the rows, reduced once.
        auto* vt = llvm::FixedVectorType::get(b.getInt8Ty(), static_cast<unsigned>(width));
        llvm::AllocaInst* vor = vector_local(vt, llvm::Constant::getNullValue(vt));
        llvm::AllocaInst* vmin = vector_local(vt, llvm::Constant::getAllOnesValue(vt));
        e.loop(ir.i(0), rows, [&](V r) {
          V x = load_mask_row(mask, mask_row(base, i, r, j), width);
          e.set(vor, b.CreateOr(e.get(vor), x));
          e.set(vmin, b.CreateBinaryIntrinsic(llvm::Intrinsic::umin, e.get(vmin), x));
        });
        e.set(any, b.CreateZExt(b.CreateICmpNE(b.CreateOrReduce(e.get(vor)), b.getInt8(0)),
                                b.getInt8Ty()));
        e.set(all,
              b.CreateZExt(b.CreateICmpNE(b.CreateIntMinReduce(e.get(vmin), false), b.getInt8(0)),
                           b.getInt8Ty()));
        return;
      }
      // A key stride of 0 repeats one element per row.
      V n = at.mask_key_stride() == 0 ? ir.i(1) : cols;
      e.loop(ir.i(0), rows, [&](V r) {
        e.loop(ir.i(0), n, [&](V col) {
          V nz = b.CreateZExt(mask_element(mask, base, i, r, j, col), b.getInt8Ty());
          e.set(any, b.CreateOr(e.get(any), nz));
          e.set(all, b.CreateAnd(e.get(all), nz));
        });
      });
    });
    return {b.CreateICmpNE(e.get(any), b.getInt8(0)), b.CreateICmpNE(e.get(all), b.getInt8(0))};
  }
  // Queries in lanes: bit r % 64 of words[(r / 64) * NR + c] = element (c, r) != 0 for c < rows,
  // r < cols; 0 elsewhere (width <= 128).
  void query_lane_bits(V mask, V base, V i, V rows, V j, V cols, std::int64_t width,
                       llvm::AllocaInst* words) {
    auto& b = e.builder();
    e.loop(0, 2 * t.nr, [&](V x) { e.store(DType::i64, b.getInt64(0), words, x); });
    mask_rows(cols, width, [&](bool vector) {
      e.loop(ir.i(0), rows, [&](V c) {
        V lo, hi;
        if (vector) {
          V x = load_mask_row(mask, mask_row(base, i, c, j), width);
          V nz = b.CreateICmpNE(x, llvm::Constant::getNullValue(x->getType()));
          V w = b.CreateZExt(b.CreateBitCast(nz, b.getIntNTy(static_cast<unsigned>(width))),
                             b.getInt128Ty());
          lo = b.CreateTrunc(w, b.getInt64Ty());
          hi = b.CreateTrunc(b.CreateLShr(w, 64), b.getInt64Ty());
        } else {
          llvm::AllocaInst* wl = e.local(DType::i64, b.getInt64(0));
          llvm::AllocaInst* wh = e.local(DType::i64, b.getInt64(0));
          e.loop(ir.i(0), cols, [&](V r) {
            V bit = b.CreateShl(b.CreateZExt(mask_element(mask, base, i, c, j, r), b.getInt64Ty()),
                                b.CreateAnd(r, ir.i(63)));
            V low = b.CreateICmpSLT(r, ir.i(64));
            e.set(wl, b.CreateOr(e.get(wl), b.CreateSelect(low, bit, b.getInt64(0))));
            e.set(wh, b.CreateOr(e.get(wh), b.CreateSelect(low, b.getInt64(0), bit)));
          });
          lo = e.get(wl);
          hi = e.get(wh);
        }
        e.store(DType::i64, lo, words, c);
        e.store(DType::i64, hi, words, ir.add(c, t.nr));
      });
    });
  }
  // Whether key r of lane c is allowed, from query_lane_bits (i1).
  V query_lane_bit(llvm::AllocaInst* words, V r, V c) {
    auto& b = e.builder();
    V w = e.load(DType::i64, words, ir.add(ir.mul(b.CreateLShr(r, 6), t.nr), c));
    V bit = b.CreateAnd(b.CreateLShr(w, b.CreateAnd(r, ir.i(63))), b.getInt64(1));
    return b.CreateICmpNE(bit, b.getInt64(0));
  }
  // Keys in lanes: copy[r * NR + c] = element (r, c) for r < rows, c < cols; 0 for c >= cols.
  void key_lane_copy(V mask, V base, V i, V rows, V j, V cols, llvm::AllocaInst* copy) {
    auto& b = e.builder();
    mask_rows(cols, t.nr, [&](bool vector) {
      e.loop(ir.i(0), rows, [&](V r) {
        if (vector) {
          b.CreateAlignedStore(load_mask_row(mask, mask_row(base, i, r, j), t.nr),
                               e.element_ptr(DType::u8, copy, ir.mul(r, t.nr)), llvm::Align(1));
          return;
        }
        e.loop(ir.i(0), ir.i(t.nr), [&](V c) {
          llvm::AllocaInst* x = e.local(DType::u8, b.getInt8(0));
          e.if_then(b.CreateICmpSLT(c, cols), [&] {
            e.set(x, b.CreateZExt(mask_element(mask, base, i, r, j, c), b.getInt8Ty()));
          });
          e.store(DType::u8, e.get(x), copy, ir.add(ir.mul(r, t.nr), c));
        });
      });
    });
  }
  V key_lane_allowed(llvm::AllocaInst* copy, V r, V c) {
    V x = e.load(DType::u8, copy, ir.add(ir.mul(r, t.nr), c));
    return e.builder().CreateICmpNE(x, e.builder().getInt8(0));
  }

 private:
  // A local of a vector type (mem2reg makes it a register).
  llvm::AllocaInst* vector_local(llvm::Type* type, V init) {
    llvm::BasicBlock& entry = e.builder().GetInsertBlock()->getParent()->getEntryBlock();
    llvm::IRBuilder<> eb(&entry, entry.begin());
    llvm::AllocaInst* slot = eb.CreateAlloca(type);
    e.set(slot, init);
    return slot;
  }
};

// What both tiled kernels hold besides the buffers: the tile code, the tile and block sizes and
// the packers of block rows (panels of mr), block columns and tile rows (panels of nr, the
// lanes).
struct TileKernel : AttentionKernel {
  TileCode tc;
  const std::int64_t nr, mr, bc;
  llvm::Function *pack_rows, *pack_cols, *pack_lanes;

  TileKernel(Emitter& emitter, ExpressionEmitter& expr_, const Node& node, const Attention& at_)
      : AttentionKernel(emitter, expr_, node, at_),
        tc(emitter, ir, at_, node),
        nr(tc.t.nr),
        mr(tc.t.mr),
        bc(key_block(tc.t)) {
    pack_rows = gemm_packer(e, d, tc.t, mr, /*transpose=*/true);
    pack_cols = gemm_packer(e, d, tc.t, mr, /*transpose=*/false);
    pack_lanes = gemm_packer(e, d, tc.t, nr, /*transpose=*/true);
  }

  V ptr(V base, V index) { return e.element_ptr(d, base, index); }

  // Products with A read in place (see gemm_microkernel_a_in_place).
  // C (rows x NR, in mr-row panels) = A · B_tile, A's row r at a[r * stride] (kc contiguous
  // elements), `operand_rows` rows from a to the operand's end: every panel in place where
  // the last one's rows past `rows` exist (they only reach rows of C past `rows`), else the
  // partial last panel packed into `packed` (mr x kc).
  void product_rows_in_place(llvm::Function* uk, V a, std::int64_t stride, V rows, V kc,
                             llvm::AllocaInst* b_tile, llvm::AllocaInst* c,
                             llvm::AllocaInst* packed, V operand_rows) {
    V panels = b.CreateUDiv(ir.add(rows, ir.i(mr - 1)), ir.i(mr));
    V readable = b.CreateICmpSGE(operand_rows, ir.mul(panels, mr));
    V full = b.CreateSelect(readable, panels, b.CreateUDiv(rows, ir.i(mr)));
    e.loop(ir.i(0), full, [&](V p) {
      b.CreateCall(uk, {kc, ptr(a, ir.mul(p, mr * stride)), b_tile, ptr(c, ir.mul(p, mr * nr)),
                        ir.i(nr), b.getInt1(false)});
    });
    V rest = ir.sub(rows, ir.mul(full, mr));
    e.if_then(b.CreateICmpSGT(rest, ir.i(0)), [&] {
      V at_row = ir.mul(full, mr);
      b.CreateCall(pack_rows,
                   {packed, ptr(a, ir.mul(at_row, stride)), ir.i(stride), ir.i(1), rest, kc});
      b.CreateCall(tc.ukernel,
                   {kc, packed, b_tile, ptr(c, ir.mul(at_row, nr)), ir.i(nr), b.getInt1(false)});
    });
  }
  // The products whose C rows are an operand's `cols` columns (Oᵀ, dKᵀ, dVᵀ): a micro-tile of
  // cmr = col_rows(cols) rows reading the columns in place. Each C row computed past `cols` is
  // wasted, so 32-register ISAs take 8 rows where that wastes fewer than mr (D 64: 8 panels of
  // 8 instead of 6 of 12; measured faster, see the commit adding it).
  std::int64_t col_rows(std::int64_t cols) const {
    if (tc.t.registers == 32 && round_up(cols, 8) < round_up(cols, mr)) return 8;
    return mr;
  }
  llvm::Function* col_ukernel(std::int64_t cols, std::int64_t row_stride) {
    GemmTiling t = tc.t;
    t.mr = col_rows(cols);
    return gemm_microkernel_a_in_place(e, d, t, 1, row_stride);
  }
  // C += Aᵀ · B_tile, A being kc rows of `cols` contiguous elements at a (row stride cols):
  // row panel p of C is A's columns [start_p, start_p + cmr), start_p = min(p cmr, cols - cmr),
  // so that the last panel overlaps the one before instead of reading past a row (cols >= mr);
  // acc_row gives the row of C that holds a column. C has round_up(cols, cmr) rows, at most
  // round_up(cols, mr).
  void product_cols_in_place(llvm::Function* uk, V a, std::int64_t cols, V kc,
                             llvm::AllocaInst* b_tile, llvm::AllocaInst* c) {
    const std::int64_t cmr = col_rows(cols);
    for (std::int64_t p = 0; p * cmr < cols; ++p)
      b.CreateCall(uk, {kc, ptr(a, ir.i(std::min(p * cmr, cols - cmr))), b_tile,
                        ptr(c, ir.i(p * cmr * nr)), ir.i(nr), b.getInt1(true)});
  }
  V acc_row(V col, std::int64_t cols) {
    const std::int64_t cmr = col_rows(cols);
    const std::int64_t last = (cols + cmr - 1) / cmr - 1;
    V p = ir.imin(b.CreateUDiv(col, ir.i(cmr)), ir.i(last));
    return ir.add(ir.mul(p, cmr), ir.sub(col, ir.imin(ir.mul(p, cmr), ir.i(cols - cmr))));
  }
  // acc_row of a column known at compile time.
  std::int64_t acc_row(std::int64_t col, std::int64_t cols) const {
    const std::int64_t cmr = col_rows(cols);
    const std::int64_t p = std::min(col / cmr, (cols + cmr - 1) / cmr - 1);
    return p * cmr + col - std::min(p * cmr, cols - cmr);
  }

  // dst[(row0 + c) * cols + col] = acc[r(col) * nr + c] for c < n, col < cols, with r(col) =
  // acc_row(col, cols) where the accumulator's rows are `col_panels`, else col: a tile's
  // accumulator (the tile's rows in lanes) written back as rows. A full tile is transposed
  // L x L blocks at a time in registers (the rows of a block's columns known at compile time):
  // element by element, with acc_row's arithmetic per element, it took 7% of the AVX2 backward
  // (S 4096, w 256).
  void store_rows(llvm::AllocaInst* acc, std::int64_t cols, bool col_panels, V n, V dst, V row0) {
    const std::int64_t L = tc.t.lanes;
    auto one_by_one = [&] {
      e.loop(ir.i(0), n, [&](V c) {
        V row = ir.mul(ir.add(row0, c), cols);
        e.loop(0, cols, [&](V col) {
          V r = col_panels ? acc_row(col, cols) : col;
          ir.st(ir.ld(acc, ir.add(ir.mul(r, nr), c)), dst, ir.add(row, col));
        });
      });
    };
    if (cols % L != 0 || nr % L != 0) return one_by_one();
    V full = b.CreateICmpEQ(n, ir.i(nr));
    e.if_then(b.CreateNot(full), one_by_one);
    e.if_then(full, [&] {
      auto* vt = llvm::FixedVectorType::get(e.type(d), static_cast<unsigned>(L));
      const llvm::Align align(dtype_size(d));
      for (std::int64_t col0 = 0; col0 < cols; col0 += L)
        for (std::int64_t c0 = 0; c0 < nr; c0 += L) {
          std::vector<V> v(static_cast<std::size_t>(L));
          for (std::int64_t i = 0; i < L; ++i) {
            const std::int64_t r = col_panels ? acc_row(col0 + i, cols) : col0 + i;
            v[i] = b.CreateAlignedLoad(vt, ptr(acc, ir.i(r * nr + c0)), align);
          }
          transpose_in_registers(b, v);
          for (std::int64_t j = 0; j < L; ++j)
            b.CreateAlignedStore(v[j], ptr(dst, ir.add(ir.mul(ir.add(row0, c0 + j), cols), col0)),
                                 align);
        }
    });
  }
};

// The tiled forward kernel: its stack arrays and one function per stage of a query tile.
struct ForwardTiles : TileKernel {
  const std::int64_t tiles, dv_pad;
  // K and V blocks read in place (Dv >= mr; see TileKernel::product_cols_in_place): the
  // micro-kernels reading rows of k and columns of v. Oᵀ's rows then follow acc_row.
  const bool in_place;
  llvm::Function *uk_k_rows = nullptr, *uk_v_cols = nullptr;
  llvm::AllocaInst *qt, *kpack, *vpack, *st, *ot, *m, *mnew, *l, *alpha;
  // Tensor masks: the mixed block's bits (TileCode::query_lane_bits) and, per query, whether
  // it has an allowed key and a masked one (for the exactness check, exact_tile).
  llvm::AllocaInst *words, *has_allowed, *has_masked;
  V scale, ninf;

  ForwardTiles(Emitter& emitter, ExpressionEmitter& expr_, const Node& node, const Attention& at_)
      : TileKernel(emitter, expr_, node, at_),
        tiles((at_.sq + nr - 1) / nr),
        dv_pad(round_up(at_.dv, mr)),
        in_place(at_.dv >= mr) {
    qt = e.local_array(d, at.dim * nr);
    kpack = e.local_array(d, bc * at.dim);
    vpack = e.local_array(d, dv_pad * bc);
    st = e.local_array(d, bc * nr);
    ot = e.local_array(d, dv_pad * nr);
    m = e.local_array(d, nr);
    mnew = e.local_array(d, nr);
    l = e.local_array(d, nr);
    alpha = e.local_array(d, nr);
    words = tensor ? e.local_array(DType::i64, 2 * nr) : nullptr;
    has_allowed = tensor ? e.local_array(DType::u8, nr) : nullptr;
    has_masked = tensor ? e.local_array(DType::u8, nr) : nullptr;
    scale = ir.c(at.scale);
    ninf = e.lowest(d);
    if (!in_place) return;
    uk_k_rows = gemm_microkernel_a_in_place(e, d, tc.t, at.dim, 1);
    uk_v_cols = col_ukernel(at.dv, at.dv);
  }

  void lanes(const std::function<void(V)>& body) { tc.lanes(body); }
  // acc[c] = step(acc[c], r, c) for the rows r < nb in order, in every lane: 4 rows per
  // iteration with the lane's value carried in a register between them (through memory, a
  // store-to-load chain per row bounded these loops). Same operations in the same order.
  void rows_accumulate(V nb, llvm::AllocaInst* acc, const std::function<V(V, V, V)>& step) {
    constexpr std::int64_t kRows = 4;
    V groups = b.CreateUDiv(nb, ir.i(kRows));
    e.loop(ir.i(0), groups, [&](V g) {
      lanes([&](V c) {
        V v = ir.ld(acc, c);
        for (std::int64_t u = 0; u < kRows; ++u) v = step(v, ir.add(ir.mul(g, kRows), u), c);
        ir.st(v, acc, c);
      });
    });
    e.loop(ir.mul(groups, kRows), nb,
           [&](V r) { lanes([&](V c) { ir.st(step(ir.ld(acc, c), r, c), acc, c); }); });
  }
  // a[c] |= set (u8 flags per lane).
  void flag(llvm::AllocaInst* a, V c, V set) {
    e.store(DType::u8, b.CreateOr(e.load(DType::u8, a, c), b.CreateZExt(set, b.getInt8Ty())), a, c);
  }

  // Work item `it`: query tile it % tiles of batch entry it / tiles. Tiles that exact_tile
  // rejects go to attend_rows.
  void tile(V it, const std::function<void(V, V)>& attend_rows) {
    V bi = ir.div(it, tiles);
    V i0 = ir.mul(ir.rem(it, tiles), nr);
    V nq = ir.imin(ir.i(nr), ir.sub(ir.i(at.sq), i0));
    V row0 = ir.add(ir.mul(bi, at.sq), i0);  // flat index of the tile's first query row
    b.CreateCall(pack_lanes,
                 {qt, ptr(q, ir.mul(row0, at.dim)), ir.i(at.dim), ir.i(1), nq, ir.i(at.dim)});
    V lo = at.key_range(ir, i0).first;
    V hi = at.key_range(ir, ir.add(i0, ir.sub(nq, ir.i(1)))).second;
    // Keys every row of the tile may attend: blocks inside need no per-element test.
    V inner_lo = at.key_range(ir, ir.add(i0, ir.sub(nq, ir.i(1)))).first;
    V inner_hi = at.key_range(ir, i0).second;
    V mbase = at.mask_base(ir, expr, bi);
    lanes([&](V c) {
      ir.st(ninf, m, c);
      ir.st(ir.c(0), l, c);
      if (tensor) {
        e.store(DType::u8, b.getInt8(0), has_allowed, c);
        e.store(DType::u8, b.getInt8(0), has_masked, c);
      }
    });
    e.loop(0, dv_pad * nr, [&](V x) { ir.st(ir.c(0), ot, x); });

    tc.walk_blocks(
        lo, hi, inner_lo, inner_hi, bc, /*clamp=*/false,
        [&](V j0) { return ir.add(ir.mul(bi, at.sk), j0); },
        [&](V j0, V nb) { return tc.classify(mask, mbase, i0, nq, j0, nb, bc); },
        [&](const TileCode::Block& k) {
          if (tensor) note_mask_block(k, mbase, i0, nq);
          tc.unless_empty(k, [&] { key_block_update(k, i0); });
        });

    V ok = exact_tile(i0, nq);
    e.if_then(ok, [&] { store_tile(nq, row0); });
    e.if_then(b.CreateNot(ok), [&] { attend_rows(row0, ir.add(row0, nq)); });
  }

  // Tensor masks: records per query whether the block has an allowed and a masked key (the
  // mixed block's bits land in `words` for key_block_update).
  void note_mask_block(const TileCode::Block& k, V mbase, V i0, V nq) {
    V j0 = k.start, nb = k.count, some = k.some, inside = k.inside;
    lanes([&](V c) {
      flag(has_masked, c, b.CreateNot(some));
      flag(has_allowed, c, inside);
    });
    e.if_then(b.CreateAnd(some, b.CreateNot(inside)), [&] {
      tc.query_lane_bits(mask, mbase, i0, nq, j0, nb, bc, words);
      // Rows with a zero bit in [0, nb) have a masked key, rows with a one an allowed key.
      V full_lo =
          b.CreateSelect(b.CreateICmpSGE(nb, ir.i(64)), b.getInt64(~0ull),
                         ir.sub(b.CreateShl(b.getInt64(1), ir.imin(nb, ir.i(63))), ir.i(1)));
      V full_hi = b.CreateSelect(
          b.CreateICmpSGT(nb, ir.i(64)),
          ir.sub(b.CreateShl(b.getInt64(1), b.CreateAnd(ir.sub(nb, ir.i(64)), ir.i(63))), ir.i(1)),
          b.getInt64(0));
      lanes([&](V c) {
        V lo_w = e.load(DType::i64, words, c);
        V hi_w = e.load(DType::i64, words, ir.add(c, nr));
        flag(has_allowed, c, b.CreateICmpNE(b.CreateOr(lo_w, hi_w), b.getInt64(0)));
        flag(has_masked, c,
             b.CreateOr(b.CreateICmpNE(lo_w, full_lo), b.CreateICmpNE(hi_w, full_hi)));
      });
    });
  }

  // One key block of the online softmax: Sᵀ, the new running max, P and Oᵀ.
  void key_block_update(const TileCode::Block& k, V i0) {
    V j0 = k.start, nb = k.count, kv_row = k.row;
    // Sᵀ = K_block · Qᵀ, one micro-tile of mr keys at a time.
    if (in_place) {
      product_rows_in_place(uk_k_rows, ptr(kp, ir.mul(kv_row, at.dim)), at.dim, nb, ir.i(at.dim),
                            qt, st, kpack, ir.sub(ir.i(at.batch * at.sk), kv_row));
    } else {
      b.CreateCall(pack_rows, {kpack, ptr(kp, ir.mul(kv_row, at.dim)), ir.i(at.dim), ir.i(1), nb,
                               ir.i(at.dim)});
      tc.product(kpack, nb, ir.i(at.dim), qt, st, false);
    }
    // Scale, mask, and the new running max.
    lanes([&](V c) { ir.st(ir.ld(m, c), mnew, c); });
    tc.banded(k.inside, [&](bool test) {
      rows_accumulate(nb, mnew, [&](V cur, V r, V c) {
        V x = ir.add(ir.mul(r, nr), c);
        V s = ir.fmul(ir.ld(st, x), scale);
        if (test) {
          V ok = tensor ? tc.query_lane_bit(words, r, c)
                        : at.in_band(ir, ir.add(i0, c), ir.add(j0, r));
          s = b.CreateSelect(ok, s, ninf);
        }
        ir.st(s, st, x);
        return b.CreateSelect(b.CreateFCmpOLT(cur, s), s, cur);
      });
    });
    // alpha = exp(m - m') (1 while both are -inf); m' = 0 in place of -inf for the exps.
    lanes([&](V c) {
      V old = ir.ld(m, c), now = ir.ld(mnew, c);
      V a =
          b.CreateSelect(b.CreateFCmpOEQ(old, now), ir.c(1), tile_exp(e, ir, d, ir.fsub(old, now)));
      ir.st(a, alpha, c);
      ir.st(now, m, c);
      ir.st(b.CreateSelect(b.CreateFCmpOEQ(now, ninf), ir.c(0), now), mnew, c);
      ir.st(ir.fmul(ir.ld(l, c), a), l, c);
    });
    rows_accumulate(nb, l, [&](V sum, V r, V c) {
      V x = ir.add(ir.mul(r, nr), c);
      V p = tile_exp(e, ir, d, ir.fsub(ir.ld(st, x), ir.ld(mnew, c)));
      ir.st(p, st, x);
      return ir.fadd(sum, p);
    });
    e.loop(0, in_place ? round_up(at.dv, col_rows(at.dv)) : at.dv, [&](V row) {
      lanes([&](V c) {
        V x = ir.add(ir.mul(row, nr), c);
        ir.st(ir.fmul(ir.ld(ot, x), ir.ld(alpha, c)), ot, x);
      });
    });
    // Oᵀ += V_blockᵀ · P, one micro-tile of mr value columns at a time.
    if (in_place)
      return product_cols_in_place(uk_v_cols, ptr(vp, ir.mul(kv_row, at.dv)), at.dv, nb, st, ot);
    b.CreateCall(pack_cols,
                 {vpack, ptr(vp, ir.mul(kv_row, at.dv)), ir.i(1), ir.i(at.dv), ir.i(at.dv), nb});
    tc.product(vpack, ir.i(at.dv), nb, st, ot, true);
  }

  // Whether no row of the tile has masked keys that would contribute (see the top of this
  // file): an AND-reduction over the rows (vectorisable) rather than a branch per row (i1).
  V exact_tile(V i0, V nq) {
    llvm::AllocaInst* exact = e.local(DType::u8, b.getInt8(1));
    if (at.kind != MaskKind::none) {
      V fill = ir.c(at.fill);
      e.loop(ir.i(0), nq, [&](V c) {
        V masked, empty;
        if (tensor) {
          masked = b.CreateICmpNE(e.load(DType::u8, has_masked, c), b.getInt8(0));
          empty = b.CreateICmpEQ(e.load(DType::u8, has_allowed, c), b.getInt8(0));
        } else {
          auto [klo, khi] = at.key_range(ir, ir.add(i0, c));
          masked = b.CreateICmpSGT(ir.i(at.sk), ir.sub(khi, klo));
          empty = b.CreateICmpSLE(khi, klo);
        }
        V pm = e.exp(d, ir.fsub(fill, ir.ld(m, c)));
        V bad = b.CreateOr(empty, b.CreateAnd(masked, b.CreateFCmpUNE(pm, ir.c(0))));
        e.set(exact, b.CreateAnd(e.get(exact), b.CreateZExt(b.CreateNot(bad), b.getInt8Ty())));
      });
    }
    return b.CreateICmpNE(e.get(exact), b.getInt8(0));
  }

  // out = Oᵀᵀ / l and lse = m + log l for the tile's nq rows.
  void store_tile(V nq, V row0) {
    // Lanes past nq divide by l = 0; they are not stored.
    e.loop(0, in_place ? round_up(at.dv, col_rows(at.dv)) : at.dv, [&](V row) {
      lanes([&](V c) {
        V x = ir.add(ir.mul(row, nr), c);
        ir.st(ir.fdiv(ir.ld(ot, x), ir.ld(l, c)), ot, x);
      });
    });
    store_rows(ot, at.dv, in_place, nq, out, row0);
    e.loop(ir.i(0), nq,
           [&](V c) { ir.st(ir.fadd(ir.ld(m, c), e.log(d, ir.ld(l, c))), lse, ir.add(row0, c)); });
  }
};

}  // namespace

void emit_attention_tiles(Emitter& e, ExpressionEmitter& expr, const Node& node,
                          const Attention& at, const KernelArgs& args,
                          const std::function<void(V, V)>& attend_rows) {
  ForwardTiles tiles(e, expr, node, at);
  e.loop(args.begin, args.end, [&](V it) { tiles.tile(it, attend_rows); });
}

// ---------------------------------------------------------------------------------------------
// attention_backward: the tiled (FlashAttention-2 style) kernel
//
// Recomputes P from the saved lse, so no Sq x Sk matrix is ever stored. Work items: the query
// tiles of every batch entry (dq), then the key tiles (dk, dv); NR rows per tile, in the
// lanes. With delta_i = dout_i.out_i:
//   query tile (queries in lanes), per key block of its band:
//     Sᵀ = K_block · Qᵀ, dPᵀ = V_block · dOᵀ, dSᵀ = P (dP - delta) scale  (P = exp(s - lse))
//     dQᵀ += K_blockᵀ · dSᵀ
//   key tile (keys in lanes), per block of the queries that attend it:
//     S = Q_block · Kᵀ, dP = dO_block · Vᵀ, P and dS as above
//     dVᵀ += dO_blockᵀ · P,  dKᵀ += Q_blockᵀ · dS
// every product on the GEMM micro-kernel. Under tensor masks both walk every block and
// classify its mask block as the forward kernel does (skip, no test, or test). Masked pairs
// have ds = 0; they reach dv only with p = exp(fill - lse_i), which a key tile adds exactly
// when some masked query's lse makes it nonzero (a fully masked row, or a fill close to the
// scores).
//
// The single pass (window, causal and unmasked attention, see attention_backward_chunk): the
// query tiles' S, dP and exp repeat the key tiles', so the key tiles also compute
//     dQ_block += dS · K_tile
// (5 products per pair instead of 7, one exp instead of two). A work item is a chunk of
// consecutive key tiles [ka, kb) of one batch entry, walked in order by one thread, and owns
// the dq rows [qa, qb): from the first query attending ka to the first attending kb. Under
// these masks no query of [qa, qb) attends a key at or past kb, so the item's key tiles give
// those rows every key of [ka, kb); the keys below ka reach the first rows (those attending
// ka - 1: up to w - 1 rows of a window, all of them under causal or no mask, which therefore
// keep one chunk per batch entry) through query tiles restricted to keys below ka, run first
// (the "halo"). So dq is accumulated in place without sharing rows between items or threads,
// and the result does not depend on the thread count. The key tile reads its A operands in
// place (rows of Q and dO for S and dP, their columns for dKᵀ and dVᵀ, rows of dS for dQ)
// rather than packing each block 4 times: the micro-kernel only broadcasts A's elements.
// Memory: the dQ block (bc x D) and the packed K tile join the stack arrays, O(NR D).
namespace {

// The tiled backward kernel: its stack arrays, the P and dS step both tile kinds share, and
// one function per tile kind and per block of each.
struct BackwardTiles : TileKernel {
  const std::int64_t dim, dv, q_tiles, k_tiles, nq_items, d_pad, dv_pad;
  // The single pass: keys per item (0: two passes), items per batch entry, and the row stride
  // of the dQ block (dim rounded up to whole micro-tiles of nr columns).
  const std::int64_t chunk_keys, chunks, ldq;
  // Tile operands packed once per item (D x NR and Dv x NR), block operands packed per block.
  llvm::AllocaInst *tile_a, *tile_b, *block_a, *block_b, *block_t;
  // The single pass: K_tile packed in nr-column panels (the B of dQ = dS · K_tile) and the dQ
  // block of that product.
  llvm::AllocaInst *k_cols = nullptr, *dq_block = nullptr;
  // The single pass's micro-kernels reading A in place: rows of q / dout (S, dP), columns of
  // q / dout (dKᵀ, dVᵀ) and rows of dS.
  llvm::Function *uk_q_rows = nullptr, *uk_do_rows = nullptr, *uk_q_cols = nullptr,
                 *uk_do_cols = nullptr, *uk_ds_rows = nullptr;
  llvm::Function* pack_key_cols = nullptr;
  // The single pass under a window mask: delta of the queries the item's key tiles have
  // visited, in a ring of delta_ring_size (a power of two above nr + w + bc) indexed by query
  // row, the rows below delta_ring_end done. Consecutive key tiles visit mostly the same
  // queries: delta (a dot product and a horizontal sum per row) is computed once per row
  // instead of once per key tile (about 9 times at w 256).
  std::int64_t delta_ring_size = 0;
  llvm::AllocaInst *delta_ring = nullptr, *delta_ring_end = nullptr;
  llvm::AllocaInst* sp;  // scores, then P
  llvm::AllocaInst* gp;  // dP, then dS * scale
  llvm::AllocaInst *acc_a, *acc_b, *lse_l, *delta_l;
  // Tensor masks: a mixed block's mask, as bits per query (query tiles) or copied with keys in
  // lanes (key tiles); see TileCode.
  llvm::AllocaInst *words, *mcopy;
  V scale;

  BackwardTiles(Emitter& emitter, ExpressionEmitter& expr_, const Node& node, const Attention& at_)
      : TileKernel(emitter, expr_, node, at_),
        dim(at_.dim),
        dv(at_.dv),
        q_tiles((at_.sq + nr - 1) / nr),
        k_tiles((at_.sk + nr - 1) / nr),
        nq_items(at_.batch * q_tiles),
        d_pad(round_up(dim, mr)),
        dv_pad(round_up(dv, mr)),
        chunk_keys(attention_backward_chunk(node)),
        chunks(chunk_keys ? (at_.sk + chunk_keys - 1) / chunk_keys : 0),
        ldq(round_up(dim, nr)) {
    const std::int64_t wide = std::max(dim, dv);
    tile_a = e.local_array(d, dim * nr);
    tile_b = e.local_array(d, dv * nr);
    block_a = e.local_array(d, bc * wide);
    block_b = e.local_array(d, bc * wide);
    block_t = e.local_array(d, round_up(wide, mr) * bc);
    sp = e.local_array(d, bc * nr);
    gp = e.local_array(d, bc * nr);
    acc_a = e.local_array(d, d_pad * nr);
    acc_b = e.local_array(d, dv_pad * nr);
    lse_l = e.local_array(d, std::max(nr, bc));
    delta_l = e.local_array(d, std::max(nr, bc));
    words = tensor ? e.local_array(DType::i64, 2 * nr) : nullptr;
    mcopy = tensor ? e.local_array(DType::u8, bc * nr) : nullptr;
    scale = ir.c(at.scale);
    if (chunk_keys == 0) return;
    k_cols = e.local_array(d, ldq * nr);
    dq_block = e.local_array(d, bc * ldq);
    uk_q_rows = gemm_microkernel_a_in_place(e, d, tc.t, dim, 1);
    uk_do_rows = gemm_microkernel_a_in_place(e, d, tc.t, dv, 1);
    uk_q_cols = col_ukernel(dim, dim);
    uk_do_cols = col_ukernel(dv, dv);
    uk_ds_rows = gemm_microkernel_a_in_place(e, d, tc.t, nr, 1);
    pack_key_cols = gemm_packer(e, d, tc.t, nr, /*transpose=*/false);
    if (at.kind != MaskKind::window) return;
    std::int64_t size = 1;
    while (size < nr + at.window + bc) size *= 2;
    if (size > 8192) return;  // 32 KiB in f32: rings beyond that stay off the stack
    delta_ring_size = size;
    delta_ring = e.local_array(d, size);
    delta_ring_end = e.local(DType::i64, ir.i(0));
  }

  void zero(llvm::AllocaInst* a, std::int64_t n) {
    e.loop(0, n, [&](V x) { ir.st(ir.c(0), a, x); });
  }
  // delta_i = dout_i.out_i of flat row `row` of dout/out.
  V delta(V row) { return ir.dot(dout, ir.mul(row, dv), out, ir.mul(row, dv), dv); }
  // Packs rows [row, row + rows) of `src` (`cols` wide) with `packer` (rows in panels).
  void pack(llvm::Function* packer, llvm::AllocaInst* dst, V src, V row, V rows,
            std::int64_t cols) {
    b.CreateCall(packer, {dst, ptr(src, ir.mul(row, cols)), ir.i(cols), ir.i(1), rows, ir.i(cols)});
  }
  // Packs the same rows transposed (columns in panels, `rows` k steps).
  void pack_transposed(llvm::AllocaInst* dst, V src, V row, V rows, std::int64_t cols) {
    b.CreateCall(pack_cols,
                 {dst, ptr(src, ir.mul(row, cols)), ir.i(1), ir.i(cols), ir.i(cols), rows});
  }

  // P and dS*scale of a block: rows r < nb of sp/gp, with the row statistics of element (r, c)
  // given by stats(r, c) -> {lse, delta}; elements where allowed(r, c) is false (test) get
  // p = ds = 0.
  void probabilities(V nb, const std::function<V(V, V)>& allowed,
                     const std::function<std::pair<V, V>(V, V)>& stats, V inside) {
    tc.banded(inside, [&](bool test) {
      e.loop(ir.i(0), nb, [&](V r) {
        tc.lanes([&](V c) {
          V x = ir.add(ir.mul(r, nr), c);
          auto [l, dl] = stats(r, c);
          V p = tile_exp(e, ir, d, ir.fsub(ir.fmul(ir.ld(sp, x), scale), l));
          V g = ir.fmul(ir.fmul(p, ir.fsub(ir.ld(gp, x), dl)), scale);
          if (test) {
            V ok = allowed(r, c);
            p = b.CreateSelect(ok, p, ir.c(0));
            g = b.CreateSelect(ok, g, ir.c(0));
          }
          ir.st(p, sp, x);
          ir.st(g, gp, x);
        });
      });
    });
  }

  void query_tile(V bi, V i0, V nq, V key_cap, bool add);
  void query_tile_block(const TileCode::Block& k, V i0, V mbase, V nq);
  // The dq rows a key tile adds its part to (the single pass): [first, end) of its batch entry.
  struct OwnedRows {
    V first, end;
  };
  void key_tile(V bi, V j0, V threshold, const OwnedRows* owned);
  void key_tile_block(const TileCode::Block& k, V j0, V mbase, V nk);
  void key_tile_block_in_place(const TileCode::Block& k, V j0, V nk, const OwnedRows& owned);
  void chunk(V it, V threshold);
  void key_tile_masked_pairs(V j0, V nk, V row0, V lb, V mbase, V inner_lo, V inner_hi,
                             V threshold);
};

// The query tile of rows [i0, i0 + nq) of batch entry bi: dq from the keys below key_cap
// (all keys when null), stored, or added with `add`.
void BackwardTiles::query_tile(V bi, V i0, V nq, V key_cap, bool add) {
  V row0 = ir.add(ir.mul(bi, at.sq), i0);
  V last = ir.add(i0, ir.sub(nq, ir.i(1)));
  pack(pack_lanes, tile_a, q, row0, nq, dim);
  pack(pack_lanes, tile_b, dout, row0, nq, dv);
  tc.lanes([&](V c) {
    ir.st(ir.c(0), lse_l, c);
    ir.st(ir.c(0), delta_l, c);
  });
  e.loop(ir.i(0), nq, [&](V c) {
    ir.st(ir.ld(lse, ir.add(row0, c)), lse_l, c);
    ir.st(delta(ir.add(row0, c)), delta_l, c);
  });
  zero(acc_a, d_pad * nr);
  V lo = at.key_range(ir, i0).first, hi = at.key_range(ir, last).second;
  V inner_lo = at.key_range(ir, last).first, inner_hi = at.key_range(ir, i0).second;
  if (key_cap) hi = ir.imin(hi, key_cap);
  V mbase = at.mask_base(ir, expr, bi);
  tc.walk_blocks(
      lo, hi, inner_lo, inner_hi, bc, /*clamp=*/key_cap != nullptr,
      [&](V j0) { return ir.add(ir.mul(bi, at.sk), j0); },
      [&](V j0, V nb) { return tc.classify(mask, mbase, i0, nq, j0, nb, bc); },
      // Tensor masks: a block of zeros is skipped (ds = 0 for all its pairs).
      [&](const TileCode::Block& k) {
        tc.unless_empty(k, [&] { query_tile_block(k, i0, mbase, nq); });
      });
  e.loop(ir.i(0), nq, [&](V c) {
    V row = ir.mul(ir.add(row0, c), dim);
    e.loop(0, dim, [&](V col) {
      V x = ir.ld(acc_a, ir.add(ir.mul(col, nr), c));
      ir.st(add ? ir.fadd(ir.ld(dq, ir.add(row, col)), x) : x, dq, ir.add(row, col));
    });
  });
}

// One key block of a query tile: Sᵀ, dPᵀ, P and dSᵀ, then dQᵀ += K_blockᵀ · dSᵀ.
void BackwardTiles::query_tile_block(const TileCode::Block& k, V i0, V mbase, V nq) {
  V j0 = k.start, nb = k.count, kv_row = k.row, inside = k.inside;
  pack(pack_rows, block_a, kp, kv_row, nb, dim);
  tc.product(block_a, nb, ir.i(dim), tile_a, sp, false);  // Sᵀ
  pack(pack_rows, block_b, vp, kv_row, nb, dv);
  tc.product(block_b, nb, ir.i(dv), tile_b, gp, false);  // dPᵀ
  if (tensor)
    e.if_then(b.CreateNot(inside),
              [&] { tc.query_lane_bits(mask, mbase, i0, nq, j0, nb, bc, words); });
  probabilities(
      nb,
      [&](V r, V c) {
        return tensor ? tc.query_lane_bit(words, r, c)
                      : at.in_band(ir, ir.add(i0, c), ir.add(j0, r));
      },
      [&](V, V c) {
        return std::pair{ir.ld(lse_l, c), ir.ld(delta_l, c)};
      },
      inside);
  pack_transposed(block_t, kp, kv_row, nb, dim);
  tc.product(block_t, ir.i(dim), nb, gp, acc_a, true);  // dQᵀ += K_blockᵀ · dSᵀ
}

// The key tile of keys [j0, j0 + nr) (fewer at the end) of batch entry bi: dk and dv, and
// with `owned` (the single pass) its part of dq.
void BackwardTiles::key_tile(V bi, V j0, V threshold, const OwnedRows* owned) {
  V nk = ir.imin(ir.i(nr), ir.sub(ir.i(at.sk), j0));
  V row0 = ir.add(ir.mul(bi, at.sk), j0);
  V last = ir.add(j0, ir.sub(nk, ir.i(1)));
  V lb = ir.mul(bi, at.sq);
  pack(pack_lanes, tile_a, kp, row0, nk, dim);
  pack(pack_lanes, tile_b, vp, row0, nk, dv);
  if (owned)
    b.CreateCall(pack_key_cols,
                 {k_cols, ptr(kp, ir.mul(row0, dim)), ir.i(1), ir.i(dim), ir.i(dim), nk});
  zero(acc_a, d_pad * nr);
  zero(acc_b, dv_pad * nr);
  V lo = at.query_range(ir, j0).first, hi = at.query_range(ir, last).second;
  V inner_lo = at.query_range(ir, last).first, inner_hi = at.query_range(ir, j0).second;
  V mbase = at.mask_base(ir, expr, bi);
  tc.walk_blocks(
      lo, hi, inner_lo, inner_hi, bc, /*clamp=*/true, [&](V i0) { return ir.add(lb, i0); },
      [&](V i0, V nb) { return tc.classify(mask, mbase, i0, nb, j0, nk, nr); },
      // Tensor masks: a block of zeros is skipped (its pairs reach dv only through
      // key_tile_masked_pairs).
      [&](const TileCode::Block& k) {
        if (owned) return key_tile_block_in_place(k, j0, nk, *owned);
        tc.unless_empty(k, [&] { key_tile_block(k, j0, mbase, nk); });
      });
  store_rows(acc_a, dim, owned != nullptr, nk, dk, row0);
  store_rows(acc_b, dv, owned != nullptr, nk, dvp, row0);
  if (at.kind == MaskKind::none) return;
  key_tile_masked_pairs(j0, nk, row0, lb, mbase, inner_lo, inner_hi, threshold);
}

// One query block of a key tile: S, dP, P and dS, then dVᵀ += dO_blockᵀ · P and
// dKᵀ += Q_blockᵀ · dS.
void BackwardTiles::key_tile_block(const TileCode::Block& k, V j0, V mbase, V nk) {
  V i0 = k.start, nb = k.count, q_row = k.row, inside = k.inside;
  e.loop(ir.i(0), nb, [&](V r) {
    ir.st(ir.ld(lse, ir.add(q_row, r)), lse_l, r);
    ir.st(delta(ir.add(q_row, r)), delta_l, r);
  });
  pack(pack_rows, block_a, q, q_row, nb, dim);
  tc.product(block_a, nb, ir.i(dim), tile_a, sp, false);  // S
  pack(pack_rows, block_b, dout, q_row, nb, dv);
  tc.product(block_b, nb, ir.i(dv), tile_b, gp, false);  // dP
  if (tensor)
    e.if_then(b.CreateNot(inside), [&] { tc.key_lane_copy(mask, mbase, i0, nb, j0, nk, mcopy); });
  probabilities(
      nb,
      [&](V r, V c) {
        return tensor ? tc.key_lane_allowed(mcopy, r, c)
                      : at.in_band(ir, ir.add(i0, r), ir.add(j0, c));
      },
      [&](V r, V) {
        return std::pair{ir.ld(lse_l, r), ir.ld(delta_l, r)};
      },
      inside);
  pack_transposed(block_t, dout, q_row, nb, dv);
  tc.product(block_t, ir.i(dv), nb, sp, acc_b, true);  // dVᵀ += dO_blockᵀ · P
  pack_transposed(block_t, q, q_row, nb, dim);
  tc.product(block_t, ir.i(dim), nb, gp, acc_a, true);  // dKᵀ += Q_blockᵀ · dS
}

// One query block of a key tile in the single pass: S, dP, P and dS, dVᵀ and dKᵀ as in
// key_tile_block but with every A operand read in place, and dQ_block = dS · K_tile added to
// the rows of dq the item owns.
void BackwardTiles::key_tile_block_in_place(const TileCode::Block& k, V j0, V nk,
                                            const OwnedRows& owned) {
  V i0 = k.start, nb = k.count, q_row = k.row;
  if (delta_ring) {
    // Rows [i0, i0 + nb) lie within the last nr + w - 1 rows done (this key tile's queries).
    V lb = ir.sub(q_row, i0), end = ir.add(i0, nb), done = e.get(delta_ring_end);
    e.loop(ir.imax(i0, done), end, [&](V i) {
      ir.st(delta(ir.add(lb, i)), delta_ring, b.CreateAnd(i, ir.i(delta_ring_size - 1)));
    });
    e.set(delta_ring_end, ir.imax(done, end));
  }
  e.loop(ir.i(0), nb, [&](V r) {
    ir.st(ir.ld(lse, ir.add(q_row, r)), lse_l, r);
    V x = delta_ring ? ir.ld(delta_ring, b.CreateAnd(ir.add(i0, r), ir.i(delta_ring_size - 1)))
                     : delta(ir.add(q_row, r));
    ir.st(x, delta_l, r);
  });
  V q_at = ptr(q, ir.mul(q_row, dim)), do_at = ptr(dout, ir.mul(q_row, dv));
  V rows_left = ir.sub(ir.i(at.batch * at.sq), q_row);
  product_rows_in_place(uk_q_rows, q_at, dim, nb, ir.i(dim), tile_a, sp, block_a, rows_left);  // S
  product_rows_in_place(uk_do_rows, do_at, dv, nb, ir.i(dv), tile_b, gp, block_a,
                        rows_left);  // dP
  probabilities(
      nb, [&](V r, V c) { return at.in_band(ir, ir.add(i0, r), ir.add(j0, c)); },
      [&](V r, V) {
        return std::pair{ir.ld(lse_l, r), ir.ld(delta_l, r)};
      },
      k.inside);
  product_cols_in_place(uk_do_cols, do_at, dv, nb, sp, acc_b);  // dVᵀ += dO_blockᵀ · P
  product_cols_in_place(uk_q_cols, q_at, dim, nb, gp, acc_a);   // dKᵀ += Q_blockᵀ · dS
  // dQ_block = dS · K_tile (rows of gp past nb only reach rows of dq_block not added).
  V first = ir.imax(ir.sub(owned.first, i0), ir.i(0));
  V end = ir.imin(ir.sub(owned.end, i0), nb);
  e.if_then(b.CreateICmpSLT(first, end), [&] {
    V panels = b.CreateUDiv(ir.add(nb, mr - 1), ir.i(mr));
    e.loop(ir.i(0), panels, [&](V p) {
      for (std::int64_t n = 0; n * nr < dim; ++n)
        b.CreateCall(uk_ds_rows, {nk, ptr(gp, ir.mul(p, mr * nr)), ptr(k_cols, ir.mul(nk, n * nr)),
                                  ptr(dq_block, ir.add(ir.mul(p, mr * ldq), ir.i(n * nr))),
                                  ir.i(ldq), b.getInt1(false)});
    });
    e.loop(first, end, [&](V r) {
      V row = ir.mul(ir.add(q_row, r), dim);
      plain_loop(
          e, ir.i(0), ir.i(dim),
          [&](V col) {
            V x = ir.add(row, col);
            ir.st(ir.fadd(ir.ld(dq, x), ir.ld(dq_block, ir.add(ir.mul(r, ldq), col))), dq, x);
          },
          /*vectorize=*/true);
    });
  });
}

// Work item `it` of the single pass: keys [ka, kb) (chunk c = it % chunks of batch entry
// bi = it / chunks) and the dq rows [qa, qb) of the queries from the first that attends ka
// (0 for the first chunk) to the first that attends kb (Sq for the last). A window or causal
// query attends no key at or past the next chunk's ka, so the queries of [qa, qb) miss only
// the keys below ka: the halo query tiles of [qa, qh), qh the end of the queries attending
// key ka - 1, add those first.
void BackwardTiles::chunk(V it, V threshold) {
  V bi = ir.div(it, chunks), c = ir.rem(it, chunks);
  V ka = ir.mul(c, chunk_keys), kb = ir.imin(ir.add(ka, chunk_keys), ir.i(at.sk));
  V first_chunk = b.CreateICmpEQ(c, ir.i(0));
  V qa = b.CreateSelect(first_chunk, ir.i(0), at.query_range(ir, ka).first);
  V qb = b.CreateSelect(b.CreateICmpEQ(c, ir.i(chunks - 1)), ir.i(at.sq),
                        at.query_range(ir, ir.imin(kb, ir.i(at.sk - 1))).first);
  // The last chunk's kb is Sk: clamped above only to keep query_range's argument a key.
  V lb = ir.mul(bi, at.sq);
  e.loop(ir.mul(ir.add(lb, qa), dim), ir.mul(ir.add(lb, qb), dim),
         [&](V x) { ir.st(ir.c(0), dq, x); });
  e.if_then(b.CreateNot(first_chunk), [&] {
    V qh = ir.imin(qb, at.query_range(ir, ir.sub(ka, ir.i(1))).second);
    V tiles = b.CreateUDiv(ir.add(ir.imax(ir.sub(qh, qa), ir.i(0)), ir.i(nr - 1)), ir.i(nr));
    e.loop(ir.i(0), tiles, [&](V t) {
      V i0 = ir.add(qa, ir.mul(t, nr));
      query_tile(bi, i0, ir.imin(ir.i(nr), ir.sub(qb, i0)), ka, /*add=*/true);
    });
  });
  OwnedRows owned{qa, qb};
  // Every query a key tile of the chunk visits is at or above qa.
  if (delta_ring) e.set(delta_ring_end, qa);
  V tiles = b.CreateUDiv(ir.add(ir.sub(kb, ka), ir.i(nr - 1)), ir.i(nr));
  e.loop(ir.i(0), tiles, [&](V t) { key_tile(bi, ir.add(ka, ir.mul(t, nr)), threshold, &owned); });
}

// Masked pairs of a key tile: dv_j += exp(fill - lse_i) dout_i. Every masked query of the
// tile's keys is in [0, inner_lo) or [inner_hi, Sq) (tensor masks: anywhere in [0, Sq));
// "lse_i <= threshold or NaN" there sends the tile's keys through the exact per-key loops.
void BackwardTiles::key_tile_masked_pairs(V j0, V nk, V row0, V lb, V mbase, V inner_lo, V inner_hi,
                                          V threshold) {
  V fill = ir.c(at.fill);
  V any = tensor ? any_lse_below(e, ir, lse, lb, threshold, {{ir.i(0), ir.i(at.sq)}})
                 : any_lse_below(e, ir, lse, lb, threshold,
                                 {{ir.i(0), inner_lo}, {inner_hi, ir.i(at.sq)}});
  e.if_then(any, [&] {
    e.loop(ir.i(0), nk, [&](V c) {
      V j = ir.add(j0, c);
      V vrow = ir.mul(ir.add(row0, c), dv);
      auto masked_pair = [&](V i) {
        V p = e.exp(d, ir.fsub(fill, ir.ld(lse, ir.add(lb, i))));
        e.if_then(b.CreateFCmpUNE(p, ir.c(0)),
                  [&] { ir.axpy(dvp, vrow, p, dout, ir.mul(ir.add(lb, i), dv), dv); });
      };
      if (tensor) {
        e.loop(ir.i(0), ir.i(at.sq), [&](V i) {
          e.if_then(b.CreateNot(at.allowed(ir, mask, mbase, i, j)), [&] { masked_pair(i); });
        });
        return;
      }
      auto [qlo, qhi] = at.query_range(ir, j);
      e.loop(ir.i(0), qlo, masked_pair);
      e.loop(qhi, ir.i(at.sq), masked_pair);
    });
  });
}

}  // namespace

void emit_attention_backward_tiles(Emitter& e, ExpressionEmitter& expr, const Node& node,
                                   const Attention& at, const KernelArgs& args) {
  BackwardTiles tiles(e, expr, node, at);
  Ir& ir = tiles.ir;
  V threshold = ir.c(masked_lse_threshold(at));
  if (tiles.chunk_keys) {
    e.loop(args.begin, args.end, [&](V it) { tiles.chunk(it, threshold); });
    return;
  }
  // Query tiles first (dq), then key tiles (dk, dv).
  e.loop(args.begin, ir.imin(args.end, ir.i(tiles.nq_items)), [&](V it) {
    V bi = ir.div(it, tiles.q_tiles);
    V i0 = ir.mul(ir.rem(it, tiles.q_tiles), tiles.nr);
    tiles.query_tile(bi, i0, ir.imin(ir.i(tiles.nr), ir.sub(ir.i(at.sq), i0)), nullptr, false);
  });
  e.loop(ir.imax(args.begin, ir.i(tiles.nq_items)), args.end, [&](V it) {
    V jt = ir.sub(it, ir.i(tiles.nq_items));
    tiles.key_tile(ir.div(jt, tiles.k_tiles), ir.mul(ir.rem(jt, tiles.k_tiles), tiles.nr),
                   threshold, nullptr);
  });
}

}  // namespace edifice::jit::codegen
