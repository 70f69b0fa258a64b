#pragma once
// The GEMM building blocks shared by every GEMM kernel of a module: the register-blocked
// micro-kernel and the panel packers. Each is emitted once per module (per dtype and shape)
// as an internal, non-inlined function, so a graph with many GEMMs stays quick to compile.
// The scheme that drives them is described at the top of gemm.cpp.

#include "../gemm_layout.hpp"
#include "emitter.hpp"

#include <functional>
#include <vector>

namespace edifice::jit::codegen {

/// for (i = lo; i < hi; ++i) body(i), like Emitter::loop, but marked so that LLVM does not
/// unroll it and, unless `vectorize`, does not vectorise it either: the helpers are vectorised
/// by hand (the loop vectoriser would re-vectorise them across k into shuffle-heavy, spilling
/// code), and unrolling loops of calls only costs compile time. With `vectorize`, the loop is
/// vectorised without interleaving.
void plain_loop(Emitter& e, llvm::Value* lo, llvm::Value* hi,
                const std::function<void(llvm::Value*)>& body, bool vectorize = false);

/// Transposes L vectors of L lanes in place (v[i][j] -> v[j][i]) in log2(L) stages of
/// two-input shuffles; each stage swaps blocks of s lanes between vectors s apart, which
/// lowers to the usual unpack / shuffle / permute-128 sequences.
void transpose_in_registers(llvm::IRBuilder<>& b, std::vector<llvm::Value*>& v);

/// void ukernel(i64 kc, ptr a, ptr b, ptr c, i64 ldc, i1 accumulate)
///
/// C[r][j] = (accumulate ? C[r][j] : 0) + sum_k a[k*mr + r] * b[k*nr + j] for r < mr, j < nr,
/// with C[r][j] at c[r*ldc + j]. `a` and `b` are packed micro-panels, `b` and every row of `c`
/// aligned to a vector. Each C element is one chain of fused multiply-adds in k order.
///
/// With `strided_b`, a seventh argument `i64 ldb` replaces nr as the distance between k steps
/// of b, which may then be nr columns of a row-major matrix read in place (rows unaligned).
///
/// gemm_microkernel_a_in_place reads A where it lies instead of from a packed panel: element
/// (r, k) at a[r*a_row_stride + k*a_k_stride] (compile-time strides, so each of the mr
/// broadcasts of a k step is one load at a constant displacement). A is only broadcast, so it
/// needs no alignment; all mr rows and kc steps must be readable.
llvm::Function* gemm_microkernel(Emitter& e, DType d, const GemmTiling& t, bool strided_b = false);
llvm::Function* gemm_microkernel_a_in_place(Emitter& e, DType d, const GemmTiling& t,
                                            std::int64_t a_row_stride, std::int64_t a_k_stride);

/// void pack(ptr dst, ptr src, i64 row_stride, i64 k_stride, i64 rows, i64 kc)
///
/// Packs a rows x kc block (element (i, k) at src[i*row_stride + k*k_stride]) into panels of
/// `panel` rows: dst[(p*kc + k)*panel + r] = element (p*panel + r, k), zero past `rows`.
/// `transpose` selects the variant for k_stride == 1 (rows contiguous along k: loads vectors
/// along k and transposes them in registers); otherwise row_stride must be 1 (each k step is a
/// contiguous run of `panel` elements, copied as one vector).
llvm::Function* gemm_packer(Emitter& e, DType d, const GemmTiling& t, std::int64_t panel,
                            bool transpose);

}  // namespace edifice::jit::codegen
