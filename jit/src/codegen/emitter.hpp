#pragma once
// A thin layer over llvm::IRBuilder for writing kernels as readable loops: typed loads and
// stores on buffers, counted loops, mutable locals (promoted to registers by mem2reg), and the
// arithmetic of every elementwise op with the same semantics as the reference interpreter.
// Only codegen/*.cpp include this (it pulls in LLVM's IR headers).

#include "../status_codes.hpp"

#include <edifice/core/dtype.hpp>
#include <edifice/core/op.hpp>

#include <llvm/IR/IRBuilder.h>
#include <llvm/IR/Module.h>

#include <functional>
#include <string>
#include <vector>

namespace edifice::jit::codegen {

/// The parameters of every kernel function:
///   void name(ptr buffers, i64 begin, i64 end, ptr status)
/// `buffers` holds one pointer per kernel buffer (outputs first, then inputs), [begin, end)
/// is this call's share of the kernel's work items, `status` is an i32 written on error.
struct KernelArgs {
  llvm::Function* function = nullptr;
  std::vector<llvm::Value*> buffers;
  llvm::Value* begin = nullptr;
  llvm::Value* end = nullptr;
  llvm::Value* status = nullptr;
};

class Emitter {
 public:
  explicit Emitter(llvm::Module& module);

  llvm::LLVMContext& context() { return ctx_; }
  llvm::Module& module() { return module_; }
  llvm::IRBuilder<>& builder() { return b_; }

  /// Starts `name`, a kernel over `num_buffers` buffers; the insertion point is its body.
  KernelArgs begin_kernel(const std::string& name, int num_buffers);
  /// Returns from the current kernel.
  void end_kernel();

  // ---- types and constants
  llvm::Type* type(DType d);
  llvm::Value* i64(std::int64_t v);
  llvm::Value* i32(std::int32_t v);
  /// `v` converted to dtype `d`.
  llvm::Value* constant(double v, DType d);
  llvm::Value* lowest(DType d);  // -inf for floats, the minimum for integers

  // ---- control flow
  /// for (i = lo; i < hi; ++i) body(i), i of type i64. Returns the loop's back edge, where
  /// callers may attach loop metadata (unroll / vectorise hints).
  llvm::BranchInst* loop(llvm::Value* lo, llvm::Value* hi,
                         const std::function<void(llvm::Value*)>& body);
  llvm::BranchInst* loop(std::int64_t lo, std::int64_t hi,
                         const std::function<void(llvm::Value*)>& body) {
    return loop(i64(lo), i64(hi), body);
  }
  /// for (i = hi - 1; i >= lo; --i) body(i).
  void loop_down(llvm::Value* lo, llvm::Value* hi, const std::function<void(llvm::Value*)>& body);
  /// if (cond) then_body(); cond is i1.
  void if_then(llvm::Value* cond, const std::function<void()>& then_body);

  // ---- locals: stack slots in the entry block, so mem2reg turns them into SSA values
  llvm::AllocaInst* local(DType d, llvm::Value* init);
  llvm::AllocaInst* local_array(DType d, std::int64_t count);
  llvm::Value* get(llvm::AllocaInst* slot);
  void set(llvm::AllocaInst* slot, llvm::Value* v);

  // ---- memory (indices are i64 element offsets)
  llvm::Value* element_ptr(DType d, llvm::Value* base, llvm::Value* index);
  llvm::Value* load(DType d, llvm::Value* base, llvm::Value* index);
  void store(DType d, llvm::Value* v, llvm::Value* base, llvm::Value* index);
  /// A module-level constant array holding `bytes` (for constant tensors).
  llvm::Value* constant_array(const std::string& name, DType d, const void* bytes,
                              std::int64_t count);

  // ---- arithmetic with the interpreter's semantics
  llvm::Value* unary(Op op, DType d, llvm::Value* x);
  /// Binary ops and comparisons (comparisons return u8 0/1). Integer division by zero writes
  /// kIntegerDivisionByZero to `status` and yields 0.
  llvm::Value* binary(Op op, DType d, llvm::Value* a, llvm::Value* b, llvm::Value* status);
  llvm::Value* select(llvm::Value* pred_u8, llvm::Value* a, llvm::Value* b);
  llvm::Value* cast(llvm::Value* v, DType from, DType to);
  /// a + b for accumulation; floats may be reassociated (vectorised reductions).
  llvm::Value* accumulate(DType d, llvm::Value* acc, llvm::Value* v);
  /// max with NaN propagation (as the interpreter's reduce_max).
  llvm::Value* maximum(DType d, llvm::Value* a, llvm::Value* b);

  // float math (d is f32 or f64); exp, log, tanh and erf are the JIT's own (vector_math.hpp)
  llvm::Value* exp(DType d, llvm::Value* x);
  llvm::Value* log(DType d, llvm::Value* x);
  llvm::Value* sqrt(DType d, llvm::Value* x);
  llvm::Value* tanh(DType d, llvm::Value* x);
  llvm::Value* sigmoid(DType d, llvm::Value* x);
  llvm::Value* erf(DType d, llvm::Value* x);
  llvm::Value* fma(DType d, llvm::Value* a, llvm::Value* b, llvm::Value* c);

  /// Writes `code` (a StatusCode) to the status word where `cond` holds.
  void set_status(llvm::Value* status, llvm::Value* cond, StatusCode code);

 private:
  llvm::Value* call_intrinsic(llvm::Intrinsic::ID id, DType d, std::vector<llvm::Value*> args);

  llvm::Module& module_;
  llvm::LLVMContext& ctx_;
  llvm::IRBuilder<> b_;
  llvm::Function* function_ = nullptr;
  llvm::BasicBlock* entry_ = nullptr;
};

}  // namespace edifice::jit::codegen
