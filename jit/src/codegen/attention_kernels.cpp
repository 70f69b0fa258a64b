// Attention kernels (forward and backward). See structured_kernels.cpp for the conventions
// shared by the structured-op kernels.
#include "../work_items.hpp"
#include "gemm_microkernel.hpp"
#include "structured_ir.hpp"

#include <edifice/core/error.hpp>
#include <edifice/jit/target.hpp>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <tuple>

namespace edifice::jit::codegen {

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
  // Query row i sits at position i + query_offset for the causal and window predicates.
  std::int64_t query_offset = 0;
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
    if (at.has("query_offset")) query_offset = at.get_int("query_offset");
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
  // Tensor masks: element strides of the mask along queries and keys (0 where it broadcasts;
  // the key stride is 1 otherwise, keys being the mask's last axis).
  std::int64_t mask_query_stride() const { return mask_strides[mask_strides.size() - 2]; }
  std::int64_t mask_key_stride() const { return mask_strides.back(); }

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
  // With p = i + query_offset: causal [0, p + 1), window [p - w + 1, p + 1), clamped to [0, Sk).
  std::pair<V, V> key_range(Ir& ir, V i) const {
    if (!predicate()) return {ir.i(0), ir.i(sk)};
    V p = ir.add(i, query_offset);
    V hi = ir.imin(ir.add(p, 1), ir.i(sk));
    if (kind == Mask::causal) return {ir.i(0), hi};
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
    if (kind == Mask::causal) return {lo, ir.i(sq)};
    V hi = ir.imin(ir.i(sq), ir.sub(ir.add(j, window), ir.i(query_offset)));
    return {lo, ir.imax(lo, hi)};
  }
};

}  // namespace

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
// the Sq x Sk score matrix.
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
// result instead of a denormal, and a finite argument in every lane, so that libmvec's vector
// exp stays on its fast path (one lane out of its range sends the whole vector to the scalar
// fallback: measured 3x slower tiles) and no denormal reaches the micro-kernel. The flushed
// terms are below 2^-125 of the row's sum (its largest term is exp(0) = 1). NaN propagates.
V tile_exp(Emitter& e, Ir& ir, DType d, V x) {
  auto& b = e.builder();
  V floor = ir.c(d == DType::f32 ? -87.0 : -708.0);
  V low = b.CreateFCmpOLT(x, floor);
  return b.CreateSelect(low, ir.c(0), e.exp(d, b.CreateSelect(low, floor, x)));
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
    if (at.kind == Mask::none) return body(false);
    e.if_then(inside, [&] { body(false); });
    e.if_then(e.builder().CreateNot(inside), [&] { body(true); });
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

}  // namespace

void emit_attention_tiles(Emitter& e, ExpressionEmitter& expr, const Node& node,
                          const Attention& at, const KernelArgs& args,
                          const std::function<void(V, V)>& attend_rows) {
  const DType d = at.d;
  Ir ir(e, d);
  auto& b = e.builder();
  V q = expr.buffer(node.inputs()[0]);
  V kp = expr.buffer(node.inputs()[1]);
  V vp = expr.buffer(node.inputs()[2]);
  const bool tensor = at.kind == Mask::tensor;
  V mask = tensor ? expr.buffer(node.inputs()[3]) : nullptr;
  V out = expr.buffer(node.output(0));
  V lse = expr.buffer(node.output(1));

  TileCode tc(e, ir, at, node);
  const GemmTiling& t = tc.t;
  const std::int64_t nr = t.nr, mr = t.mr, bc = key_block(t);
  const std::int64_t tiles = (at.sq + nr - 1) / nr;
  llvm::Function* pack_rows = gemm_packer(e, d, t, mr, /*transpose=*/true);
  llvm::Function* pack_cols = gemm_packer(e, d, t, mr, /*transpose=*/false);
  llvm::Function* pack_query = gemm_packer(e, d, t, nr, /*transpose=*/true);

  const std::int64_t dv_pad = round_up(at.dv, mr);
  llvm::AllocaInst* qt = e.local_array(d, at.dim * nr);
  llvm::AllocaInst* kpack = e.local_array(d, bc * at.dim);
  llvm::AllocaInst* vpack = e.local_array(d, dv_pad * bc);
  llvm::AllocaInst* st = e.local_array(d, bc * nr);
  llvm::AllocaInst* ot = e.local_array(d, dv_pad * nr);
  llvm::AllocaInst* m = e.local_array(d, nr);
  llvm::AllocaInst* mnew = e.local_array(d, nr);
  llvm::AllocaInst* l = e.local_array(d, nr);
  llvm::AllocaInst* alpha = e.local_array(d, nr);
  // Tensor masks: the mixed block's bits (TileCode::query_lane_bits) and, per query, whether
  // it has an allowed key and a masked one (for the exactness check below).
  llvm::AllocaInst* words = tensor ? e.local_array(DType::i64, 2 * nr) : nullptr;
  llvm::AllocaInst* has_allowed = tensor ? e.local_array(DType::u8, nr) : nullptr;
  llvm::AllocaInst* has_masked = tensor ? e.local_array(DType::u8, nr) : nullptr;
  V scale = ir.c(at.scale);
  V ninf = e.lowest(d);
  auto ptr = [&](V base, V index) { return e.element_ptr(d, base, index); };
  auto lanes = [&](const std::function<void(V)>& body) { tc.lanes(body); };

  e.loop(args.begin, args.end, [&](V it) {
    V bi = ir.div(it, tiles);
    V i0 = ir.mul(ir.rem(it, tiles), nr);
    V nq = ir.imin(ir.i(nr), ir.sub(ir.i(at.sq), i0));
    V row0 = ir.add(ir.mul(bi, at.sq), i0);  // flat index of the tile's first query row
    b.CreateCall(pack_query,
                 {qt, ptr(q, ir.mul(row0, at.dim)), ir.i(at.dim), ir.i(1), nq, ir.i(at.dim)});
    V lo = at.key_range(ir, i0).first;
    V hi = at.key_range(ir, ir.add(i0, ir.sub(nq, ir.i(1)))).second;
    // Keys every row of the tile may attend: blocks inside need no per-element test.
    V inner_lo = at.key_range(ir, ir.add(i0, ir.sub(nq, ir.i(1)))).first;
    V inner_hi = at.key_range(ir, i0).second;
    V mbase = at.mask_base(ir, expr, bi);
    auto flag = [&](llvm::AllocaInst* a, V c, V set) {
      e.store(DType::u8, b.CreateOr(e.load(DType::u8, a, c), b.CreateZExt(set, b.getInt8Ty())), a,
              c);
    };
    lanes([&](V c) {
      ir.st(ninf, m, c);
      ir.st(ir.c(0), l, c);
      if (tensor) {
        e.store(DType::u8, b.getInt8(0), has_allowed, c);
        e.store(DType::u8, b.getInt8(0), has_masked, c);
      }
    });
    e.loop(0, dv_pad * nr, [&](V x) { ir.st(ir.c(0), ot, x); });

    V span = ir.sub(hi, lo);
    V blocks = b.CreateUDiv(ir.add(span, bc - 1), ir.i(bc));
    e.loop(ir.i(0), blocks, [&](V blk) {
      V j0 = ir.add(lo, ir.mul(blk, bc));
      V nb = ir.imin(ir.i(bc), ir.sub(hi, j0));
      V kv_row = ir.add(ir.mul(bi, at.sk), j0);
      // Every pair of the block allowed (no per-element test); for tensor masks, from the mask
      // block, and a block of zeros is skipped (its scores would all be masked).
      V inside =
          b.CreateAnd(b.CreateICmpSGE(j0, inner_lo), b.CreateICmpSLE(ir.add(j0, nb), inner_hi));
      V some = nullptr;
      if (tensor) {
        std::tie(some, inside) = tc.classify(mask, mbase, i0, nq, j0, nb, bc);
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
              ir.sub(b.CreateShl(b.getInt64(1), b.CreateAnd(ir.sub(nb, ir.i(64)), ir.i(63))),
                     ir.i(1)),
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
      auto block = [&] {
        // Sᵀ = K_block · Qᵀ, one micro-tile of mr keys at a time.
        b.CreateCall(pack_rows, {kpack, ptr(kp, ir.mul(kv_row, at.dim)), ir.i(at.dim), ir.i(1), nb,
                                 ir.i(at.dim)});
        tc.product(kpack, nb, ir.i(at.dim), qt, st, false);
        // Scale, mask, and the new running max.
        lanes([&](V c) { ir.st(ir.ld(m, c), mnew, c); });
        auto scale_rows = [&](bool test) {
          e.loop(ir.i(0), nb, [&](V r) {
            V j = ir.add(j0, r);
            lanes([&](V c) {
              V x = ir.add(ir.mul(r, nr), c);
              V s = ir.fmul(ir.ld(st, x), scale);
              if (test) {
                V ok = tensor ? tc.query_lane_bit(words, r, c) : at.in_band(ir, ir.add(i0, c), j);
                s = b.CreateSelect(ok, s, ninf);
              }
              ir.st(s, st, x);
              V cur = ir.ld(mnew, c);
              ir.st(b.CreateSelect(b.CreateFCmpOLT(cur, s), s, cur), mnew, c);
            });
          });
        };
        tc.banded(inside, scale_rows);
        // alpha = exp(m - m') (1 while both are -inf); m' = 0 in place of -inf for the exps.
        lanes([&](V c) {
          V old = ir.ld(m, c), now = ir.ld(mnew, c);
          V a = b.CreateSelect(b.CreateFCmpOEQ(old, now), ir.c(1),
                               tile_exp(e, ir, d, ir.fsub(old, now)));
          ir.st(a, alpha, c);
          ir.st(now, m, c);
          ir.st(b.CreateSelect(b.CreateFCmpOEQ(now, ninf), ir.c(0), now), mnew, c);
          ir.st(ir.fmul(ir.ld(l, c), a), l, c);
        });
        e.loop(ir.i(0), nb, [&](V r) {
          lanes([&](V c) {
            V x = ir.add(ir.mul(r, nr), c);
            V p = tile_exp(e, ir, d, ir.fsub(ir.ld(st, x), ir.ld(mnew, c)));
            ir.st(p, st, x);
            ir.st(ir.fadd(ir.ld(l, c), p), l, c);
          });
        });
        e.loop(0, at.dv, [&](V row) {
          lanes([&](V c) {
            V x = ir.add(ir.mul(row, nr), c);
            ir.st(ir.fmul(ir.ld(ot, x), ir.ld(alpha, c)), ot, x);
          });
        });
        // Oᵀ += V_blockᵀ · P, one micro-tile of mr value columns at a time.
        b.CreateCall(pack_cols, {vpack, ptr(vp, ir.mul(kv_row, at.dv)), ir.i(1), ir.i(at.dv),
                                 ir.i(at.dv), nb});
        tc.product(vpack, ir.i(at.dv), nb, st, ot, true);
      };
      if (tensor)
        e.if_then(some, block);
      else
        block();
    });

    // Rows whose masked keys would contribute (see above) send the tile to the row kernel.
    llvm::AllocaInst* exact = e.local(DType::u8, b.getInt8(1));
    if (at.kind != Mask::none) {
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
        // An AND-reduction (vectorisable) rather than a branch per row.
        e.set(exact, b.CreateAnd(e.get(exact), b.CreateZExt(b.CreateNot(bad), b.getInt8Ty())));
      });
    }
    V ok = b.CreateICmpNE(e.get(exact), b.getInt8(0));
    e.if_then(ok, [&] {
      e.loop(ir.i(0), nq, [&](V c) {
        V total = ir.ld(l, c);
        V orow = ir.mul(ir.add(row0, c), at.dv);
        e.loop(0, at.dv, [&](V col) {
          ir.st(ir.fdiv(ir.ld(ot, ir.add(ir.mul(col, nr), c)), total), out, ir.add(orow, col));
        });
        ir.st(ir.fadd(ir.ld(m, c), e.log(d, total)), lse, ir.add(row0, c));
      });
    });
    e.if_then(b.CreateNot(ok), [&] { attend_rows(row0, ir.add(row0, nq)); });
  });
}

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

  // Query rows [first, last) (flat indices b*Sq + i), one at a time.
  auto attend_rows = [&](V first, V last) {
    e.loop(first, last, [&](V it) {
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
  };

  if (attention_query_tile(node) == 1) {
    attend_rows(args.begin, args.end);
    return;
  }
  emit_attention_tiles(e, expr, node, at, args, attend_rows);
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
namespace {

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

// Whether some lse_i (i in [r.first, r.second) for each range, lse at offset lb) is at or
// below the threshold, or NaN: an OR-reduction the loop vectoriser handles.
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

}  // namespace

void emit_attention_backward_tiles(Emitter& e, ExpressionEmitter& expr, const Node& node,
                                   const Attention& at, const KernelArgs& args) {
  const DType d = at.d;
  Ir ir(e, d);
  auto& b = e.builder();
  V q = expr.buffer(node.inputs()[0]);
  V kp = expr.buffer(node.inputs()[1]);
  V vp = expr.buffer(node.inputs()[2]);
  const bool tensor = at.kind == Mask::tensor;
  const std::size_t o = tensor ? 4 : 3;
  V mask = tensor ? expr.buffer(node.inputs()[3]) : nullptr;
  V outp = expr.buffer(node.inputs()[o]);
  V lse = expr.buffer(node.inputs()[o + 1]);
  V dout = expr.buffer(node.inputs()[o + 2]);
  V dq = expr.buffer(node.output(0));
  V dk = expr.buffer(node.output(1));
  V dvp = expr.buffer(node.output(2));

  TileCode tc(e, ir, at, node);
  const GemmTiling& t = tc.t;
  const std::int64_t nr = t.nr, mr = t.mr, bc = key_block(t);
  const std::int64_t dim = at.dim, dv = at.dv;
  const std::int64_t q_tiles = (at.sq + nr - 1) / nr, k_tiles = (at.sk + nr - 1) / nr;
  const std::int64_t nq_items = at.batch * q_tiles;
  llvm::Function* pack_rows = gemm_packer(e, d, t, mr, /*transpose=*/true);
  llvm::Function* pack_cols = gemm_packer(e, d, t, mr, /*transpose=*/false);
  llvm::Function* pack_tile = gemm_packer(e, d, t, nr, /*transpose=*/true);

  const std::int64_t d_pad = round_up(dim, mr), dv_pad = round_up(dv, mr);
  const std::int64_t wide = std::max(dim, dv);
  // Tile operands packed once per item (D x NR and Dv x NR), block operands packed per block.
  llvm::AllocaInst* tile_a = e.local_array(d, dim * nr);
  llvm::AllocaInst* tile_b = e.local_array(d, dv * nr);
  llvm::AllocaInst* block_a = e.local_array(d, bc * wide);
  llvm::AllocaInst* block_b = e.local_array(d, bc * wide);
  llvm::AllocaInst* block_t = e.local_array(d, round_up(wide, mr) * bc);
  llvm::AllocaInst* sp = e.local_array(d, bc * nr);  // scores, then P
  llvm::AllocaInst* gp = e.local_array(d, bc * nr);  // dP, then dS * scale
  llvm::AllocaInst* acc_a = e.local_array(d, d_pad * nr);
  llvm::AllocaInst* acc_b = e.local_array(d, dv_pad * nr);
  llvm::AllocaInst* lse_l = e.local_array(d, std::max(nr, bc));
  llvm::AllocaInst* delta_l = e.local_array(d, std::max(nr, bc));
  // Tensor masks: a mixed block's mask, as bits per query (query tiles) or copied with keys in
  // lanes (key tiles); see TileCode.
  llvm::AllocaInst* words = tensor ? e.local_array(DType::i64, 2 * nr) : nullptr;
  llvm::AllocaInst* mcopy = tensor ? e.local_array(DType::u8, bc * nr) : nullptr;
  V scale = ir.c(at.scale);
  auto ptr = [&](V base, V index) { return e.element_ptr(d, base, index); };
  auto lanes = [&](const std::function<void(V)>& body) { tc.lanes(body); };
  auto product = [&](llvm::AllocaInst* a_packed, V rows, V kc, llvm::AllocaInst* b_tile,
                     llvm::AllocaInst* c,
                     bool accumulate) { tc.product(a_packed, rows, kc, b_tile, c, accumulate); };
  auto zero = [&](llvm::AllocaInst* a, std::int64_t n) {
    e.loop(0, n, [&](V x) { ir.st(ir.c(0), a, x); });
  };
  // delta_i = dout_i.out_i of flat row `row` of dout/out.
  auto delta = [&](V row) { return ir.dot(dout, ir.mul(row, dv), outp, ir.mul(row, dv), dv); };
  // P and dS*scale of a block: rows r < nb of sp/gp, with the row statistics of element (r, c)
  // given by stats(r, c) -> {lse, delta}; elements where allowed(r, c) is false (test) get
  // p = ds = 0.
  auto probabilities = [&](V nb, const std::function<V(V, V)>& allowed,
                           const std::function<std::pair<V, V>(V, V)>& stats, V inside) {
    auto body = [&](bool test) {
      e.loop(ir.i(0), nb, [&](V r) {
        lanes([&](V c) {
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
    };
    tc.banded(inside, body);
  };

  // Query tiles: dq.
  e.loop(args.begin, ir.imin(args.end, ir.i(nq_items)), [&](V it) {
    V bi = ir.div(it, q_tiles);
    V i0 = ir.mul(ir.rem(it, q_tiles), nr);
    V nq = ir.imin(ir.i(nr), ir.sub(ir.i(at.sq), i0));
    V row0 = ir.add(ir.mul(bi, at.sq), i0);
    V last = ir.add(i0, ir.sub(nq, ir.i(1)));
    b.CreateCall(pack_tile, {tile_a, ptr(q, ir.mul(row0, dim)), ir.i(dim), ir.i(1), nq, ir.i(dim)});
    b.CreateCall(pack_tile, {tile_b, ptr(dout, ir.mul(row0, dv)), ir.i(dv), ir.i(1), nq, ir.i(dv)});
    lanes([&](V c) {
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
    V mbase = at.mask_base(ir, expr, bi);
    V blocks = b.CreateUDiv(ir.add(ir.sub(hi, lo), bc - 1), ir.i(bc));
    e.loop(ir.i(0), blocks, [&](V blk) {
      V j0 = ir.add(lo, ir.mul(blk, bc));
      V nb = ir.imin(ir.i(bc), ir.sub(hi, j0));
      V kv_row = ir.add(ir.mul(bi, at.sk), j0);
      V inside =
          b.CreateAnd(b.CreateICmpSGE(j0, inner_lo), b.CreateICmpSLE(ir.add(j0, nb), inner_hi));
      V some = nullptr;  // tensor masks: a block of zeros is skipped (ds = 0 for all its pairs)
      if (tensor) std::tie(some, inside) = tc.classify(mask, mbase, i0, nq, j0, nb, bc);
      auto block = [&] {
        b.CreateCall(pack_rows,
                     {block_a, ptr(kp, ir.mul(kv_row, dim)), ir.i(dim), ir.i(1), nb, ir.i(dim)});
        product(block_a, nb, ir.i(dim), tile_a, sp, false);  // Sᵀ
        b.CreateCall(pack_rows,
                     {block_b, ptr(vp, ir.mul(kv_row, dv)), ir.i(dv), ir.i(1), nb, ir.i(dv)});
        product(block_b, nb, ir.i(dv), tile_b, gp, false);  // dPᵀ
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
        b.CreateCall(pack_cols,
                     {block_t, ptr(kp, ir.mul(kv_row, dim)), ir.i(1), ir.i(dim), ir.i(dim), nb});
        product(block_t, ir.i(dim), nb, gp, acc_a, true);  // dQᵀ += K_blockᵀ · dSᵀ
      };
      if (tensor)
        e.if_then(some, block);
      else
        block();
    });
    e.loop(ir.i(0), nq, [&](V c) {
      V row = ir.mul(ir.add(row0, c), dim);
      e.loop(0, dim,
             [&](V col) { ir.st(ir.ld(acc_a, ir.add(ir.mul(col, nr), c)), dq, ir.add(row, col)); });
    });
  });

  // Key tiles: dk and dv.
  V fill = ir.c(at.fill);
  V threshold = ir.c(masked_lse_threshold(at));
  e.loop(ir.imax(args.begin, ir.i(nq_items)), args.end, [&](V it) {
    V jt = ir.sub(it, ir.i(nq_items));
    V bi = ir.div(jt, k_tiles);
    V j0 = ir.mul(ir.rem(jt, k_tiles), nr);
    V nk = ir.imin(ir.i(nr), ir.sub(ir.i(at.sk), j0));
    V row0 = ir.add(ir.mul(bi, at.sk), j0);
    V last = ir.add(j0, ir.sub(nk, ir.i(1)));
    V lb = ir.mul(bi, at.sq);
    b.CreateCall(pack_tile,
                 {tile_a, ptr(kp, ir.mul(row0, dim)), ir.i(dim), ir.i(1), nk, ir.i(dim)});
    b.CreateCall(pack_tile, {tile_b, ptr(vp, ir.mul(row0, dv)), ir.i(dv), ir.i(1), nk, ir.i(dv)});
    zero(acc_a, d_pad * nr);
    zero(acc_b, dv_pad * nr);
    V lo = at.query_range(ir, j0).first, hi = at.query_range(ir, last).second;
    V inner_lo = at.query_range(ir, last).first, inner_hi = at.query_range(ir, j0).second;
    V mbase = at.mask_base(ir, expr, bi);
    V blocks = b.CreateUDiv(ir.add(ir.imax(ir.sub(hi, lo), ir.i(0)), bc - 1), ir.i(bc));
    e.loop(ir.i(0), blocks, [&](V blk) {
      V i0 = ir.add(lo, ir.mul(blk, bc));
      V nb = ir.imin(ir.i(bc), ir.sub(hi, i0));
      V q_row = ir.add(lb, i0);
      V inside =
          b.CreateAnd(b.CreateICmpSGE(i0, inner_lo), b.CreateICmpSLE(ir.add(i0, nb), inner_hi));
      // Tensor masks: a block of zeros is skipped (its pairs reach dv only through the exact
      // loop below).
      V some = nullptr;
      if (tensor) std::tie(some, inside) = tc.classify(mask, mbase, i0, nb, j0, nk, nr);
      auto block = [&] {
        e.loop(ir.i(0), nb, [&](V r) {
          ir.st(ir.ld(lse, ir.add(q_row, r)), lse_l, r);
          ir.st(delta(ir.add(q_row, r)), delta_l, r);
        });
        b.CreateCall(pack_rows,
                     {block_a, ptr(q, ir.mul(q_row, dim)), ir.i(dim), ir.i(1), nb, ir.i(dim)});
        product(block_a, nb, ir.i(dim), tile_a, sp, false);  // S
        b.CreateCall(pack_rows,
                     {block_b, ptr(dout, ir.mul(q_row, dv)), ir.i(dv), ir.i(1), nb, ir.i(dv)});
        product(block_b, nb, ir.i(dv), tile_b, gp, false);  // dP
        if (tensor)
          e.if_then(b.CreateNot(inside),
                    [&] { tc.key_lane_copy(mask, mbase, i0, nb, j0, nk, mcopy); });
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
        b.CreateCall(pack_cols,
                     {block_t, ptr(dout, ir.mul(q_row, dv)), ir.i(1), ir.i(dv), ir.i(dv), nb});
        product(block_t, ir.i(dv), nb, sp, acc_b, true);  // dVᵀ += dO_blockᵀ · P
        b.CreateCall(pack_cols,
                     {block_t, ptr(q, ir.mul(q_row, dim)), ir.i(1), ir.i(dim), ir.i(dim), nb});
        product(block_t, ir.i(dim), nb, gp, acc_a, true);  // dKᵀ += Q_blockᵀ · dS
      };
      if (tensor)
        e.if_then(some, block);
      else
        block();
    });
    e.loop(ir.i(0), nk, [&](V c) {
      V krow = ir.mul(ir.add(row0, c), dim), vrow = ir.mul(ir.add(row0, c), dv);
      e.loop(0, dim, [&](V col) {
        ir.st(ir.ld(acc_a, ir.add(ir.mul(col, nr), c)), dk, ir.add(krow, col));
      });
      e.loop(0, dv, [&](V col) {
        ir.st(ir.ld(acc_b, ir.add(ir.mul(col, nr), c)), dvp, ir.add(vrow, col));
      });
    });
    if (at.kind == Mask::none) return;
    // Masked pairs: dv_j += exp(fill - lse_i) dout_i. Every masked query of the tile's keys is
    // in [0, inner_lo) or [inner_hi, Sq) (tensor masks: anywhere in [0, Sq)); "lse_i <=
    // threshold or NaN" there sends the tile's keys through the exact per-key loops.
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
  if (attention_query_tile(node) != 1) {
    emit_attention_backward_tiles(e, expr, node, at, args);
    return;
  }
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

  // Key rows: dk and dv. Masked queries with lse_i above the threshold are skipped.
  V threshold = ir.c(masked_lse_threshold(at));
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
      V any = any_lse_below(e, ir, lse, lb, threshold, {{ir.i(0), lo}, {hi, ir.i(at.sq)}});
      e.if_then(any, [&] {
        e.loop(ir.i(0), lo, masked_pair);
        e.loop(hi, ir.i(at.sq), masked_pair);
      });
    }
    e.loop(0, at.dim, [&](V t) { ir.st(ir.ld(gk, t), dk, ir.add(krow, t)); });
    e.loop(0, at.dv, [&](V t) { ir.st(ir.ld(gv, t), dvp, ir.add(vrow, t)); });
  });
}

}  // namespace edifice::jit::codegen
