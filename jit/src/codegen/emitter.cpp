#include "emitter.hpp"

#include "vector_math.hpp"

#include <edifice/core/error.hpp>
#include <edifice/jit/target.hpp>

#include <llvm/IR/Intrinsics.h>
#include <llvm/IR/MDBuilder.h>

#include <cmath>
#include <limits>

namespace edifice::jit::codegen {

Emitter::Emitter(llvm::Module& module)
    : module_(module), ctx_(module.getContext()), b_(module.getContext()) {
  // FMA contraction is allowed everywhere (as C compilers do with -ffp-contract=on); reductions
  // additionally allow reassociation through `accumulate`.
  llvm::FastMathFlags fmf;
  fmf.setAllowContract(true);
  b_.setFastMathFlags(fmf);
}

KernelArgs Emitter::begin_kernel(const std::string& name, int num_buffers) {
  auto* ptr = llvm::PointerType::getUnqual(ctx_);
  auto* i64t = llvm::Type::getInt64Ty(ctx_);
  auto* void_t = llvm::Type::getVoidTy(ctx_);
  // The public entry unpacks the buffer table and calls the body, whose buffer parameters are
  // noalias: after inlining, LLVM knows outputs never alias inputs and vectorises freely.
  std::vector<llvm::Type*> body_params(num_buffers, ptr);
  body_params.insert(body_params.end(), {i64t, i64t, ptr});
  auto* body = llvm::Function::Create(llvm::FunctionType::get(void_t, body_params, false),
                                      llvm::Function::InternalLinkage, name + ".body", module_);
  body->addFnAttr(llvm::Attribute::AlwaysInline);
  body->addFnAttr(llvm::Attribute::NoUnwind);
  for (int i = 0; i < num_buffers; ++i) {
    body->addParamAttr(i, llvm::Attribute::NoAlias);
    body->addParamAttr(i, llvm::Attribute::getWithAlignment(ctx_, llvm::Align(64)));
  }

  auto* entry_fn =
      llvm::Function::Create(llvm::FunctionType::get(void_t, {ptr, i64t, i64t, ptr}, false),
                             llvm::Function::ExternalLinkage, name, module_);
  entry_fn->addFnAttr(llvm::Attribute::NoUnwind);
  {
    llvm::IRBuilder<> eb(llvm::BasicBlock::Create(ctx_, "entry", entry_fn));
    std::vector<llvm::Value*> args;
    auto* table = entry_fn->getArg(0);
    for (int i = 0; i < num_buffers; ++i)
      args.push_back(eb.CreateLoad(ptr, eb.CreateConstGEP1_64(ptr, table, i)));
    args.insert(args.end(), {entry_fn->getArg(1), entry_fn->getArg(2), entry_fn->getArg(3)});
    eb.CreateCall(body, args);
    eb.CreateRetVoid();
  }

  function_ = body;
  entry_ = llvm::BasicBlock::Create(ctx_, "entry", body);
  auto* start = llvm::BasicBlock::Create(ctx_, "start", body);
  b_.SetInsertPoint(entry_);
  b_.CreateBr(start);
  b_.SetInsertPoint(start);
  KernelArgs args;
  args.function = body;
  for (int i = 0; i < num_buffers; ++i) args.buffers.push_back(body->getArg(i));
  args.begin = body->getArg(num_buffers);
  args.end = body->getArg(num_buffers + 1);
  args.status = body->getArg(num_buffers + 2);
  return args;
}

void Emitter::end_kernel() {
  b_.CreateRetVoid();
  function_ = nullptr;
  entry_ = nullptr;
}

llvm::Type* Emitter::type(DType d) {
  switch (d) {
    case DType::f32:
      return b_.getFloatTy();
    case DType::f64:
      return b_.getDoubleTy();
    case DType::i32:
      return b_.getInt32Ty();
    case DType::i64:
      return b_.getInt64Ty();
    case DType::u8:
      return b_.getInt8Ty();
  }
  return nullptr;
}

llvm::Value* Emitter::i64(std::int64_t v) {
  return b_.getInt64(static_cast<std::uint64_t>(v));
}
llvm::Value* Emitter::i32(std::int32_t v) {
  return b_.getInt32(static_cast<std::uint32_t>(v));
}

llvm::Value* Emitter::constant(double v, DType d) {
  if (is_floating(d)) return llvm::ConstantFP::get(type(d), v);
  return visit_dtype(d, [&]<class T>() -> llvm::Value* {
    return llvm::ConstantInt::get(type(d), static_cast<std::uint64_t>(static_cast<T>(v)),
                                  std::is_signed_v<T>);
  });
}

llvm::Value* Emitter::lowest(DType d) {
  if (is_floating(d)) return llvm::ConstantFP::getInfinity(type(d), /*Negative=*/true);
  return visit_dtype(d, [&]<class T>() -> llvm::Value* {
    return llvm::ConstantInt::get(
        type(d), static_cast<std::uint64_t>(std::numeric_limits<T>::lowest()), std::is_signed_v<T>);
  });
}

llvm::BranchInst* Emitter::loop(llvm::Value* lo, llvm::Value* hi,
                                const std::function<void(llvm::Value*)>& body) {
  llvm::Function* f = b_.GetInsertBlock()->getParent();
  auto* pre = b_.GetInsertBlock();
  auto* header = llvm::BasicBlock::Create(ctx_, "loop", f);
  auto* inner = llvm::BasicBlock::Create(ctx_, "body", f);
  auto* exit = llvm::BasicBlock::Create(ctx_, "done", f);
  b_.CreateBr(header);
  b_.SetInsertPoint(header);
  auto* i = b_.CreatePHI(b_.getInt64Ty(), 2, "i");
  i->addIncoming(lo, pre);
  b_.CreateCondBr(b_.CreateICmpSLT(i, hi), inner, exit);
  b_.SetInsertPoint(inner);
  body(i);
  auto* next = b_.CreateAdd(i, i64(1), "i.next", /*HasNUW=*/false, /*HasNSW=*/true);
  i->addIncoming(next, b_.GetInsertBlock());
  llvm::BranchInst* latch = b_.CreateBr(header);
  b_.SetInsertPoint(exit);
  return latch;
}

void Emitter::loop_down(llvm::Value* lo, llvm::Value* hi,
                        const std::function<void(llvm::Value*)>& body) {
  loop(lo, hi, [&](llvm::Value* j) {
    // i = hi - 1 - (j - lo) walks the same range backwards.
    body(b_.CreateSub(b_.CreateSub(hi, i64(1)), b_.CreateSub(j, lo)));
  });
}

void Emitter::if_then(llvm::Value* cond, const std::function<void()>& then_body) {
  llvm::Function* f = b_.GetInsertBlock()->getParent();
  auto* then_bb = llvm::BasicBlock::Create(ctx_, "then", f);
  auto* merge = llvm::BasicBlock::Create(ctx_, "endif", f);
  b_.CreateCondBr(cond, then_bb, merge);
  b_.SetInsertPoint(then_bb);
  then_body();
  b_.CreateBr(merge);
  b_.SetInsertPoint(merge);
}

llvm::AllocaInst* Emitter::local(DType d, llvm::Value* init) {
  llvm::IRBuilder<> eb(entry_, entry_->begin());
  auto* slot = eb.CreateAlloca(type(d));
  set(slot, init);
  return slot;
}

llvm::AllocaInst* Emitter::local_array(DType d, std::int64_t count) {
  llvm::IRBuilder<> eb(entry_, entry_->begin());
  auto* slot = eb.CreateAlloca(type(d), i64(count));
  slot->setAlignment(llvm::Align(64));
  return slot;
}

llvm::Value* Emitter::get(llvm::AllocaInst* slot) {
  return b_.CreateLoad(slot->getAllocatedType(), slot);
}

void Emitter::set(llvm::AllocaInst* slot, llvm::Value* v) {
  b_.CreateStore(v, slot);
}

llvm::Value* Emitter::element_ptr(DType d, llvm::Value* base, llvm::Value* index) {
  return b_.CreateInBoundsGEP(type(d), base, index);
}

llvm::Value* Emitter::load(DType d, llvm::Value* base, llvm::Value* index) {
  return b_.CreateAlignedLoad(type(d), element_ptr(d, base, index), llvm::Align(dtype_size(d)));
}

void Emitter::store(DType d, llvm::Value* v, llvm::Value* base, llvm::Value* index) {
  b_.CreateAlignedStore(v, element_ptr(d, base, index), llvm::Align(dtype_size(d)));
}

llvm::Value* Emitter::constant_array(const std::string& name, DType d, const void* bytes,
                                     std::int64_t count) {
  llvm::StringRef raw(static_cast<const char*>(bytes),
                      static_cast<std::size_t>(count) * dtype_size(d));
  auto* init = llvm::ConstantDataArray::getRaw(raw, static_cast<std::uint64_t>(count), type(d));
  auto* g = new llvm::GlobalVariable(module_, init->getType(), /*isConstant=*/true,
                                     llvm::GlobalValue::InternalLinkage, init, name);
  g->setAlignment(llvm::Align(64));
  return g;
}

llvm::Value* Emitter::call_intrinsic(llvm::Intrinsic::ID id, DType d,
                                     std::vector<llvm::Value*> args) {
  return b_.CreateIntrinsic(id, {type(d)}, args);
}

llvm::Value* Emitter::exp(DType, llvm::Value* x) {
  return vector_math::exp(b_, x);
}
llvm::Value* Emitter::log(DType, llvm::Value* x) {
  return vector_math::log(b_, x);
}
llvm::Value* Emitter::sqrt(DType d, llvm::Value* x) {
  return call_intrinsic(llvm::Intrinsic::sqrt, d, {x});
}
llvm::Value* Emitter::tanh(DType, llvm::Value* x) {
  return vector_math::tanh(b_, x);
}
llvm::Value* Emitter::erf(DType d, llvm::Value* x) {
  // f32 in f32 arithmetic where multiply-adds fuse (AVX2 implies FMA here: see target.cpp):
  // GELU's erf at twice the lanes of the f64 evaluation (docs/numerics.md).
  if (d == DType::f32 && codegen_target().isa >= Isa::avx2) return vector_math::erf_f32(b_, x);
  return vector_math::erf(b_, x);
}
llvm::Value* Emitter::fma(DType d, llvm::Value* a, llvm::Value* b, llvm::Value* c) {
  return call_intrinsic(llvm::Intrinsic::fmuladd, d, {a, b, c});
}

llvm::Value* Emitter::sigmoid(DType d, llvm::Value* x) {
  // 1 / (1 + exp(-x)): exp overflows to inf for very negative x, giving exactly 0.
  return b_.CreateFDiv(constant(1, d), b_.CreateFAdd(constant(1, d), exp(d, b_.CreateFNeg(x))));
}

llvm::Value* Emitter::unary(Op op, DType d, llvm::Value* x) {
  const bool fp = is_floating(d);
  switch (op) {
    case Op::neg:
      return fp ? b_.CreateFNeg(x) : b_.CreateSub(constant(0, d), x);
    case Op::abs:
      if (fp) return call_intrinsic(llvm::Intrinsic::fabs, d, {x});
      return b_.CreateSelect(b_.CreateICmpSLT(x, constant(0, d)), b_.CreateSub(constant(0, d), x),
                             x);
    case Op::exp:
      return exp(d, x);
    case Op::log:
      return log(d, x);
    case Op::sqrt:
      return sqrt(d, x);
    case Op::rsqrt:
      return b_.CreateFDiv(constant(1, d), sqrt(d, x));
    case Op::tanh:
      return tanh(d, x);
    case Op::sigmoid:
      return sigmoid(d, x);
    case Op::erf:
      return erf(d, x);
    case Op::sin:
      return call_intrinsic(llvm::Intrinsic::sin, d, {x});
    case Op::cos:
      return call_intrinsic(llvm::Intrinsic::cos, d, {x});
    case Op::relu:
      // x < 0 ? 0 : x keeps NaN, like max(x, 0) in the interpreter.
      return b_.CreateSelect(b_.CreateFCmpOLT(x, constant(0, d)), constant(0, d), x);
    case Op::gelu: {
      auto* half_x = b_.CreateFMul(x, constant(0.5, d));
      auto* e = erf(d, b_.CreateFMul(x, constant(M_SQRT1_2, d)));
      return b_.CreateFMul(half_x, b_.CreateFAdd(constant(1, d), e));
    }
    default:
      fail("jit: internal error: {} is not a unary op", op_name(op));
  }
}

llvm::Value* Emitter::maximum(DType d, llvm::Value* a, llvm::Value* b) {
  if (!is_floating(d)) {
    bool is_unsigned = d == DType::u8;
    return b_.CreateSelect(is_unsigned ? b_.CreateICmpUGT(a, b) : b_.CreateICmpSGT(a, b), a, b);
  }
  return call_intrinsic(llvm::Intrinsic::maximum, d, {a, b});  // NaN-propagating
}

llvm::Value* Emitter::binary(Op op, DType d, llvm::Value* a, llvm::Value* b, llvm::Value* status) {
  const bool fp = is_floating(d);
  const bool is_unsigned = d == DType::u8;
  auto to_u8 = [&](llvm::Value* i1) { return b_.CreateZExt(i1, b_.getInt8Ty()); };
  // An ordered comparison as u8: the float, unsigned or signed predicate by dtype.
  using P = llvm::CmpInst::Predicate;
  auto compare = [&](P float_pred, P unsigned_pred, P signed_pred) {
    return to_u8(fp            ? b_.CreateFCmp(float_pred, a, b)
                 : is_unsigned ? b_.CreateICmp(unsigned_pred, a, b)
                               : b_.CreateICmp(signed_pred, a, b));
  };
  switch (op) {
    case Op::add:
      return fp ? b_.CreateFAdd(a, b) : b_.CreateAdd(a, b);
    case Op::sub:
      return fp ? b_.CreateFSub(a, b) : b_.CreateSub(a, b);
    case Op::mul:
      return fp ? b_.CreateFMul(a, b) : b_.CreateMul(a, b);
    case Op::div: {
      if (fp) return b_.CreateFDiv(a, b);
      // Integer division: x / 0 is an error; MIN / -1 wraps to MIN (LLVM's sdiv would trap).
      auto* zero = b_.CreateICmpEQ(b, constant(0, d));
      set_status(status, zero, kIntegerDivisionByZero);
      auto* safe_b = b_.CreateSelect(zero, constant(1, d), b);
      if (is_unsigned) return b_.CreateUDiv(a, safe_b);
      auto* overflow =
          b_.CreateAnd(b_.CreateICmpEQ(a, lowest(d)), b_.CreateICmpEQ(safe_b, constant(-1, d)));
      auto* q = b_.CreateSDiv(a, b_.CreateSelect(overflow, constant(1, d), safe_b));
      return b_.CreateSelect(zero, constant(0, d), q);
    }
    case Op::max:
      return maximum(d, a, b);
    case Op::min:
      if (fp) return call_intrinsic(llvm::Intrinsic::minimum, d, {a, b});
      return b_.CreateSelect(is_unsigned ? b_.CreateICmpULT(a, b) : b_.CreateICmpSLT(a, b), a, b);
    case Op::pow:
      return call_intrinsic(llvm::Intrinsic::pow, d, {a, b});
    case Op::eq:
      return to_u8(fp ? b_.CreateFCmpOEQ(a, b) : b_.CreateICmpEQ(a, b));
    case Op::ne:
      return to_u8(fp ? b_.CreateFCmpUNE(a, b) : b_.CreateICmpNE(a, b));
    case Op::lt:
      return compare(P::FCMP_OLT, P::ICMP_ULT, P::ICMP_SLT);
    case Op::le:
      return compare(P::FCMP_OLE, P::ICMP_ULE, P::ICMP_SLE);
    case Op::gt:
      return compare(P::FCMP_OGT, P::ICMP_UGT, P::ICMP_SGT);
    case Op::ge:
      return compare(P::FCMP_OGE, P::ICMP_UGE, P::ICMP_SGE);
    default:
      fail("jit: internal error: {} is not a binary op", op_name(op));
  }
}

llvm::Value* Emitter::select(llvm::Value* pred_u8, llvm::Value* a, llvm::Value* b) {
  return b_.CreateSelect(b_.CreateICmpNE(pred_u8, b_.getInt8(0)), a, b);
}

llvm::Value* Emitter::cast(llvm::Value* v, DType from, DType to) {
  if (from == to) return v;
  llvm::Type* t = type(to);
  bool from_fp = is_floating(from), to_fp = is_floating(to);
  if (from_fp && to_fp) return b_.CreateFPCast(v, t);
  if (from_fp) {
    // fptosi of NaN or out-of-range values is poison in LLVM; saturate instead (the interpreter's
    // static_cast is undefined there, so any defined value is acceptable).
    return to == DType::u8
               ? b_.CreateIntrinsic(llvm::Intrinsic::fptoui_sat, {t, v->getType()}, {v})
               : b_.CreateIntrinsic(llvm::Intrinsic::fptosi_sat, {t, v->getType()}, {v});
  }
  if (to_fp) return from == DType::u8 ? b_.CreateUIToFP(v, t) : b_.CreateSIToFP(v, t);
  return b_.CreateIntCast(v, t, /*isSigned=*/from != DType::u8);
}

llvm::Value* Emitter::accumulate(DType d, llvm::Value* acc, llvm::Value* v) {
  if (!is_floating(d)) return b_.CreateAdd(acc, v);
  llvm::Value* sum = b_.CreateFAdd(acc, v);
  if (auto* inst = llvm::dyn_cast<llvm::Instruction>(sum)) {
    llvm::FastMathFlags fmf = inst->getFastMathFlags();
    fmf.setAllowReassoc(true);
    inst->setFastMathFlags(fmf);
  }
  return sum;
}

void Emitter::set_status(llvm::Value* status, llvm::Value* cond, StatusCode code) {
  if_then(cond, [&] { b_.CreateStore(i32(code), status); });
}

}  // namespace edifice::jit::codegen
