#pragma once
// The JIT's own transcendental functions, emitted as LLVM IR (no libm or libmvec calls), so
// that generated code is the same wherever it runs and needs no vector math library (glibc's
// libmvec is x86-only; an exported object must link against the C library, libm and pthreads
// alone). Each function is an internal, always-inline IR function of straight-line code:
// selects instead of branches, no tables, exponent scaling by integer operations on the bits,
// so that after inlining the loop vectoriser runs it at the target's width.
//
// f64 arguments are computed in f64; f32 arguments are widened to f64, computed with shorter
// polynomials (relative error ~1e-10) and rounded once (exceptions in f32 arithmetic, for
// callers that choose them: exp_f32_bounded and erf_f32). f32 results are
// within one ULP, f64 results within two. Special values follow C's libm: NaN in gives NaN out,
// exp(-inf) = 0, exp overflows to inf and underflows to 0 or a subnormal, log(0) = -inf, log(x < 0)
// = NaN, tanh(+-inf) = +-1, erf(+-inf) = +-1, tanh, erf keep the sign of zero. The accuracy table
// is in docs/numerics.md.

#include <llvm/IR/IRBuilder.h>

namespace edifice::jit::codegen::vector_math {

/// e^x for `x` of type float or double (or a vector of either), at the builder's position.
llvm::Value* exp(llvm::IRBuilder<>& b, llvm::Value* x);
/// The natural logarithm.
llvm::Value* log(llvm::IRBuilder<>& b, llvm::Value* x);
/// The hyperbolic tangent.
llvm::Value* tanh(llvm::IRBuilder<>& b, llvm::Value* x);
/// The error function.
llvm::Value* erf(llvm::IRBuilder<>& b, llvm::Value* x);

/// e^x for `x` of type float (or a vector of float) known to be >= -86.5, computed in f32
/// arithmetic inline at the builder's position (with its fast-math flags): within 0.99 ULP of
/// e^x for every f32 input in [-86.5, 88.72], inf above, NaN for NaN; below -86.5 the result is
/// unspecified (callers clamp). About half the instructions of exp, which evaluates f32 in f64;
/// the tiled attention kernels' softmax uses it (docs/numerics.md).
llvm::Value* exp_f32_bounded(llvm::IRBuilder<>& b, llvm::Value* x);

/// erf(x) for `x` of type float (or a vector of float) in f32 arithmetic, for targets with fused
/// multiply-add: within 1 ULP of erf in f64 for every f32 input (docs/numerics.md), NaN for NaN,
/// +-1 for +-inf, the sign of zero kept. About half the instructions of erf, which evaluates
/// f32 in f64 (GELU's share of a dense + GELU kernel).
llvm::Value* erf_f32(llvm::IRBuilder<>& b, llvm::Value* x);

}  // namespace edifice::jit::codegen::vector_math
