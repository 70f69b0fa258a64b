// The GEMM micro-kernel and panel packers (see gemm_microkernel.hpp; the blocking scheme and
// register layout are described at the top of gemm.cpp).
#include "gemm_microkernel.hpp"

#include <llvm/IR/Intrinsics.h>
#include <llvm/IR/Metadata.h>

#include <functional>

namespace edifice::jit::codegen {
namespace {

llvm::Function* new_helper(Emitter& e, const std::string& name,
                           const std::vector<llvm::Type*>& params) {
  auto& ctx = e.context();
  auto* fn =
      llvm::Function::Create(llvm::FunctionType::get(llvm::Type::getVoidTy(ctx), params, false),
                             llvm::Function::InternalLinkage, name, e.module());
  // Called from many loops of many kernels: keep one copy.
  fn->addFnAttr(llvm::Attribute::NoInline);
  fn->addFnAttr(llvm::Attribute::NoUnwind);
  for (unsigned i = 0; i < params.size(); ++i)
    if (params[i]->isPointerTy()) fn->addParamAttr(i, llvm::Attribute::NoAlias);
  return fn;
}

// acc + x * y, fused for floats (FMA where the ISA has it), wrapping for integers.
llvm::Value* mul_add(llvm::IRBuilder<>& b, DType d, llvm::Value* x, llvm::Value* y,
                     llvm::Value* acc) {
  if (is_floating(d))
    return b.CreateIntrinsic(llvm::Intrinsic::fmuladd, {acc->getType()}, {x, y, acc});
  return b.CreateAdd(acc, b.CreateMul(x, y));
}

}  // namespace

void transpose_in_registers(llvm::IRBuilder<>& b, std::vector<llvm::Value*>& v) {
  const int L = static_cast<int>(v.size());
  for (int s = L / 2; s >= 1; s /= 2) {
    std::vector<int> lo(L), hi(L);
    for (int j = 0; j < L; ++j) {
      lo[j] = (j & s) == 0 ? j : L + j - s;
      hi[j] = (j & s) == 0 ? j + s : L + j;
    }
    for (int i = 0; i < L; ++i) {
      if (i & s) continue;
      llvm::Value* a = v[i];
      llvm::Value* c = v[i + s];
      v[i] = b.CreateShuffleVector(a, c, lo);
      v[i + s] = b.CreateShuffleVector(a, c, hi);
    }
  }
}

void plain_loop(Emitter& e, llvm::Value* lo, llvm::Value* hi,
                const std::function<void(llvm::Value*)>& body, bool vectorize) {
  auto& b = e.builder();
  auto& ctx = e.context();
  llvm::BranchInst* latch = e.loop(lo, hi, body);
  auto flag = [&](const char* name) -> llvm::Metadata* {
    return llvm::MDNode::get(ctx, {llvm::MDString::get(ctx, name)});
  };
  auto option = [&](const char* name, llvm::Constant* value) -> llvm::Metadata* {
    return llvm::MDNode::get(
        ctx, {llvm::MDString::get(ctx, name), llvm::ConstantAsMetadata::get(value)});
  };
  // Vectorised loops keep one vector per iteration (no interleaving): with constant trip
  // counts LLVM would otherwise interleave, then fully unroll, then hoist every invariant
  // vector, which costs compile time for nothing in a loop that is not the hot one.
  llvm::Metadata* ops[] = {nullptr,
                           vectorize ? option("llvm.loop.interleave.count", b.getInt32(1))
                                     : option("llvm.loop.vectorize.enable", b.getFalse()),
                           flag("llvm.loop.unroll.disable")};
  auto* md = llvm::MDNode::getDistinct(ctx, ops);
  md->replaceOperandWith(0, md);
  latch->setMetadata(llvm::LLVMContext::MD_loop, md);
}

namespace {

// The micro-kernel with A's element (r, k) at a[r*a_row_stride + k*a_k_stride] (packed: 1, mr).
llvm::Function* microkernel(Emitter& e, DType d, const GemmTiling& t, bool strided_b,
                            std::int64_t a_row_stride, std::int64_t a_k_stride) {
  const int L = t.lanes;
  const auto mr = static_cast<int>(t.mr);
  const auto nv = static_cast<int>(t.nr / t.lanes);
  const bool packed_a = a_row_stride == 1 && a_k_stride == t.mr;
  const std::string name = fmt::format(
      "edifice.gemm.ukernel.{}.{}x{}{}{}", dtype_name(d), t.mr, t.nr, strided_b ? ".strided_b" : "",
      packed_a ? "" : fmt::format(".a{}.{}", a_row_stride, a_k_stride));
  if (auto* existing = e.module().getFunction(name)) return existing;

  auto& ctx = e.context();
  auto& b = e.builder();
  llvm::IRBuilderBase::InsertPointGuard guard(b);
  auto* ptr = llvm::PointerType::getUnqual(ctx);
  auto* i64t = llvm::Type::getInt64Ty(ctx);
  std::vector<llvm::Type*> params = {i64t, ptr, ptr, ptr, i64t, llvm::Type::getInt1Ty(ctx)};
  if (strided_b) params.push_back(i64t);
  llvm::Function* fn = new_helper(e, name, params);
  llvm::Value* kc = fn->getArg(0);
  llvm::Value* a = fn->getArg(1);
  llvm::Value* bp = fn->getArg(2);
  llvm::Value* c = fn->getArg(3);
  llvm::Value* ldc = fn->getArg(4);
  llvm::Value* accumulate = fn->getArg(5);
  // Elements from one k step of B to the next: the packed panel's nr, or a matrix's row stride.
  llvm::Value* ldb = strided_b ? fn->getArg(6) : e.i64(t.nr);

  llvm::Type* et = e.type(d);
  auto* vt = llvm::FixedVectorType::get(et, static_cast<unsigned>(L));
  const llvm::Align vec_align(static_cast<std::uint64_t>(L) * dtype_size(d));
  const llvm::Align elem_align(dtype_size(d));
  // A matrix read in place need not have its rows aligned to a vector.
  const llvm::Align b_align = strided_b ? elem_align : vec_align;

  // Accumulators live in allocas that SROA turns into phis: mr x nv vector registers.
  b.SetInsertPoint(llvm::BasicBlock::Create(ctx, "entry", fn));
  std::vector<llvm::AllocaInst*> slots(static_cast<std::size_t>(mr * nv));
  for (auto& s : slots) s = b.CreateAlloca(vt);
  auto c_at = [&](int r, int v) {
    return b.CreateInBoundsGEP(et, c, b.CreateAdd(b.CreateMul(e.i64(r), ldc), e.i64(v * L)));
  };
  for (auto* s : slots) b.CreateStore(llvm::Constant::getNullValue(vt), s);
  e.if_then(accumulate, [&] {
    for (int r = 0; r < mr; ++r)
      for (int v = 0; v < nv; ++v)
        b.CreateStore(b.CreateAlignedLoad(vt, c_at(r, v), vec_align), slots[r * nv + v]);
  });

  // One k step: nv vector loads of B, mr broadcasts of A, mr*nv FMAs.
  auto steps = [&](llvm::Value* k0, int count) {
    std::vector<llvm::Value*> acc(slots.size());
    for (std::size_t i = 0; i < slots.size(); ++i) acc[i] = b.CreateLoad(vt, slots[i]);
    for (int u = 0; u < count; ++u) {
      llvm::Value* k = b.CreateAdd(k0, e.i64(u));
      llvm::Value* pa = b.CreateInBoundsGEP(et, a, b.CreateMul(k, e.i64(a_k_stride)));
      llvm::Value* pb = b.CreateInBoundsGEP(et, bp, b.CreateMul(k, ldb));
      std::vector<llvm::Value*> bv(static_cast<std::size_t>(nv));
      for (int v = 0; v < nv; ++v)
        bv[v] = b.CreateAlignedLoad(vt, b.CreateConstInBoundsGEP1_64(et, pb, v * L), b_align);
      for (int r = 0; r < mr; ++r) {
        llvm::Value* s = b.CreateAlignedLoad(
            et, b.CreateConstInBoundsGEP1_64(et, pa, r * a_row_stride), elem_align);
        llvm::Value* splat = b.CreateVectorSplat(static_cast<unsigned>(L), s);
        for (int v = 0; v < nv; ++v) acc[r * nv + v] = mul_add(b, d, splat, bv[v], acc[r * nv + v]);
      }
    }
    for (std::size_t i = 0; i < slots.size(); ++i) b.CreateStore(acc[i], slots[i]);
  };
  // Unrolled by 4 (fewer loop-carried pointer updates), then the remaining 0-3 steps.
  constexpr int kUnroll = 4;
  llvm::Value* main_steps = b.CreateMul(b.CreateUDiv(kc, e.i64(kUnroll)), e.i64(kUnroll));
  llvm::Value* main_iters = b.CreateUDiv(kc, e.i64(kUnroll));
  plain_loop(e, e.i64(0), main_iters,
             [&](llvm::Value* i) { steps(b.CreateMul(i, e.i64(kUnroll)), kUnroll); });
  plain_loop(e, main_steps, kc, [&](llvm::Value* k) { steps(k, 1); });

  for (int r = 0; r < mr; ++r)
    for (int v = 0; v < nv; ++v)
      b.CreateAlignedStore(b.CreateLoad(vt, slots[r * nv + v]), c_at(r, v), vec_align);
  b.CreateRetVoid();
  return fn;
}

}  // namespace

llvm::Function* gemm_microkernel(Emitter& e, DType d, const GemmTiling& t, bool strided_b) {
  return microkernel(e, d, t, strided_b, 1, t.mr);
}

llvm::Function* gemm_microkernel_a_in_place(Emitter& e, DType d, const GemmTiling& t,
                                            std::int64_t a_row_stride, std::int64_t a_k_stride) {
  return microkernel(e, d, t, false, a_row_stride, a_k_stride);
}

namespace {

// One packer being emitted: its arguments and the element addressing of both sides.
struct Packer {
  Emitter& e;
  llvm::IRBuilder<>& b;
  DType d;
  llvm::Type* et;
  llvm::PointerType* ptr;
  int L, R;  // lanes, rows per panel
  llvm::Align elem_align;
  llvm::Value *dst, *src, *row_stride, *k_stride, *rows, *kc;
  llvm::Value* full;  // full panels: rows / R

  llvm::Value* src_at(llvm::Value* base, llvm::Value* r, llvm::Value* k) {
    return b.CreateInBoundsGEP(et, base,
                               b.CreateAdd(b.CreateMul(r, row_stride), b.CreateMul(k, k_stride)));
  }
  llvm::Value* dst_at(llvm::Value* base, llvm::Value* k, llvm::Value* r) {
    return b.CreateInBoundsGEP(et, base, b.CreateAdd(b.CreateMul(k, e.i64(R)), r));
  }
  // Software prefetch: a wide source matrix puts every k step (copy) or every row
  // (transpose) on a new 4 KiB page, where hardware prefetchers stop.
  void prefetch(llvm::Value* base, llvm::Value* offset) {
    // Not inbounds: the address may run past the operand (prefetches never fault).
    b.CreateIntrinsic(llvm::Intrinsic::prefetch, {ptr},
                      {b.CreateGEP(et, base, offset), e.i32(0), e.i32(3), e.i32(1)});
  }
  // Elements per 64-byte cache line.
  std::int64_t line() const {
    return std::max<std::int64_t>(1, 64 / static_cast<std::int64_t>(dtype_size(d)));
  }

  void copy_full_panels();
  void transpose_full_panels();
  void partial_panel();
};

// Step k of the block is `rows` contiguous elements, split over the panels: walk k outermost
// so the source is read as whole contiguous runs.
void Packer::copy_full_panels() {
  constexpr std::int64_t kAhead = 4;  // k steps
  const std::int64_t line = this->line();
  llvm::Value* lines = b.CreateUDiv(b.CreateAdd(rows, e.i64(line - 1)), e.i64(line));
  auto* pt = llvm::FixedVectorType::get(et, static_cast<unsigned>(R));
  plain_loop(e, e.i64(0), kc, [&](llvm::Value* k) {
    llvm::Value* ahead = b.CreateMul(b.CreateAdd(k, e.i64(kAhead)), k_stride);
    plain_loop(e, e.i64(0), lines, [&](llvm::Value* l) {
      prefetch(src, b.CreateAdd(ahead, b.CreateMul(l, e.i64(line))));
    });
    llvm::Value* s = b.CreateInBoundsGEP(et, src, b.CreateMul(k, k_stride));
    plain_loop(e, e.i64(0), full, [&](llvm::Value* p) {
      llvm::Value* o = b.CreateInBoundsGEP(et, dst, b.CreateMul(b.CreateMul(p, kc), e.i64(R)));
      b.CreateAlignedStore(
          b.CreateAlignedLoad(pt, b.CreateInBoundsGEP(et, s, b.CreateMul(p, e.i64(R))), elem_align),
          dst_at(o, k, e.i64(0)), elem_align);
    });
  });
}

// Rows contiguous along k: L x L blocks transposed in registers, the k tail element by
// element.
void Packer::transpose_full_panels() {
  auto* vt = llvm::FixedVectorType::get(et, static_cast<unsigned>(L));
  plain_loop(e, e.i64(0), full, [&](llvm::Value* p) {
    llvm::Value* s =
        b.CreateInBoundsGEP(et, src, b.CreateMul(b.CreateMul(p, e.i64(R)), row_stride));
    llvm::Value* o = b.CreateInBoundsGEP(et, dst, b.CreateMul(b.CreateMul(p, kc), e.i64(R)));
    llvm::Value* chunks = b.CreateUDiv(kc, e.i64(L));
    plain_loop(e, e.i64(0), chunks, [&](llvm::Value* chunk) {
      llvm::Value* k0 = b.CreateMul(chunk, e.i64(L));
      constexpr std::int64_t kAhead = 128;  // bytes ahead along each row
      llvm::Value* ahead =
          b.CreateAdd(k0, e.i64(kAhead / static_cast<std::int64_t>(dtype_size(d))));
      plain_loop(e, e.i64(0), e.i64(R), [&](llvm::Value* r) {
        prefetch(s, b.CreateAdd(b.CreateMul(r, row_stride), ahead));
      });
      for (int g = 0; g * L < R; ++g) {
        const int width = std::min(L, R - g * L);
        std::vector<llvm::Value*> v(static_cast<std::size_t>(L));
        for (int i = 0; i < L; ++i)
          v[i] = i < width ? static_cast<llvm::Value*>(b.CreateAlignedLoad(
                                 vt, src_at(s, e.i64(g * L + i), k0), elem_align))
                           : llvm::Constant::getNullValue(vt);
        transpose_in_registers(b, v);
        std::vector<int> head(static_cast<std::size_t>(width));
        for (int j = 0; j < width; ++j) head[j] = j;
        for (int j = 0; j < L; ++j) {
          llvm::Value* col = width == L ? v[j] : b.CreateShuffleVector(v[j], head);
          b.CreateAlignedStore(col, dst_at(o, b.CreateAdd(k0, e.i64(j)), e.i64(g * L)), elem_align);
        }
      }
    });
    // The k tail (kc % L steps), element by element; loops keep the IR small.
    plain_loop(e, b.CreateMul(chunks, e.i64(L)), kc, [&](llvm::Value* k) {
      plain_loop(e, e.i64(0), e.i64(R), [&](llvm::Value* r) {
        b.CreateAlignedStore(b.CreateAlignedLoad(et, src_at(s, r, k), elem_align), dst_at(o, k, r),
                             elem_align);
      });
    });
  });
}

// The last, partial panel: rows past the end read as zero (the micro-kernel always runs
// full panels; the extra rows/columns of C are never stored).
void Packer::partial_panel() {
  llvm::Value* rest = b.CreateSub(rows, b.CreateMul(full, e.i64(R)));
  e.if_then(b.CreateICmpSGT(rest, e.i64(0)), [&] {
    llvm::Value* s =
        b.CreateInBoundsGEP(et, src, b.CreateMul(b.CreateMul(full, e.i64(R)), row_stride));
    llvm::Value* o = b.CreateInBoundsGEP(et, dst, b.CreateMul(b.CreateMul(full, kc), e.i64(R)));
    plain_loop(e, e.i64(0), kc, [&](llvm::Value* k) {
      plain_loop(e, e.i64(0), e.i64(R), [&](llvm::Value* r) {
        llvm::Value* valid = b.CreateICmpSLT(r, rest);
        // Read row 0 in place of missing rows (always in bounds), then choose zero.
        llvm::Value* x =
            b.CreateAlignedLoad(et, src_at(s, b.CreateSelect(valid, r, e.i64(0)), k), elem_align);
        b.CreateAlignedStore(b.CreateSelect(valid, x, llvm::Constant::getNullValue(et)),
                             dst_at(o, k, r), elem_align);
      });
    });
  });
}

}  // namespace

llvm::Function* gemm_packer(Emitter& e, DType d, const GemmTiling& t, std::int64_t panel,
                            bool transpose) {
  const std::string name = fmt::format("edifice.gemm.pack.{}.{}.{}.{}", dtype_name(d),
                                       transpose ? "transpose" : "copy", panel, t.lanes);
  if (auto* existing = e.module().getFunction(name)) return existing;

  auto& ctx = e.context();
  auto& b = e.builder();
  llvm::IRBuilderBase::InsertPointGuard guard(b);
  auto* ptr = llvm::PointerType::getUnqual(ctx);
  auto* i64t = llvm::Type::getInt64Ty(ctx);
  llvm::Function* fn = new_helper(e, name, {ptr, ptr, i64t, i64t, i64t, i64t});
  b.SetInsertPoint(llvm::BasicBlock::Create(ctx, "entry", fn));
  Packer p{e,
           b,
           d,
           e.type(d),
           ptr,
           t.lanes,
           static_cast<int>(panel),
           llvm::Align(dtype_size(d)),
           fn->getArg(0),
           fn->getArg(1),
           fn->getArg(2),
           fn->getArg(3),
           fn->getArg(4),
           fn->getArg(5),
           nullptr};
  p.full = b.CreateUDiv(p.rows, e.i64(p.R));
  if (transpose)
    p.transpose_full_panels();
  else
    p.copy_full_panels();
  p.partial_panel();
  b.CreateRetVoid();
  return fn;
}

}  // namespace edifice::jit::codegen
