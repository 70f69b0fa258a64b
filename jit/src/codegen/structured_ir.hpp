// Ir: short names for the index and float arithmetic of the structured-op kernels
// (softmax, layer_norm, attention, lstm), shared by their translation units.
#pragma once

#include "kernels.hpp"

#include <edifice/core/error.hpp>

#include <cstdint>

namespace edifice::jit::codegen {

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

inline std::int64_t extent_product(const Shape& s, std::size_t begin, std::size_t end) {
  std::int64_t n = 1;
  for (std::size_t a = begin; a < end; ++a) n *= s[a];
  return n;
}

}  // namespace edifice::jit::codegen
