#pragma once
// Emits the value of a fused expression at a multi-index: walks from a kernel's root through
// inlined elementwise and layout nodes down to buffers, mapping the index through each layout
// op (broadcast, transpose, reshape, slice, pad, concat, gather) on the way.

#include "../plan.hpp"
#include "emitter.hpp"

#include <functional>
#include <map>

namespace edifice::jit::codegen {

using Index = std::vector<llvm::Value*>;

class ExpressionEmitter {
 public:
  ExpressionEmitter(Emitter& e, const Plan& plan, const Kernel& kernel, const KernelArgs& args);

  /// The value of `v` at `index` (one i64 per axis of v's shape).
  llvm::Value* at(const Value& v, const Index& index);
  /// Makes `node`'s first output evaluate through `f` instead of its op (the GEMM epilogue
  /// uses it for the dot's accumulator).
  void override_node(const Node* node, std::function<llvm::Value*(const Index&)> f);
  /// The buffer pointer of a value the kernel reads or writes.
  llvm::Value* buffer(const Value& v) const;
  /// Forget memoised values (call when the insertion point leaves their scope).
  void clear_memo() { memo_.clear(); }

  llvm::Value* linearize(const Index& index, const Shape& shape);
  Index delinearize(llvm::Value* flat, const Shape& shape);
  /// The input index of a reshape from in_shape to out_shape at output index `index`.
  Index reshape_index(const Index& index, const Shape& out_shape, const Shape& in_shape);

 private:
  llvm::Value* compute(const Value& v, const Index& index);
  // v at index, read from its buffer (v is computed by an earlier kernel or is an input).
  llvm::Value* load_buffered(const Value& v, const Index& index);
  llvm::Value* pad(const Node& n, const Index& index);
  llvm::Value* concat(const Node& n, const Index& index);
  llvm::Value* random_uniform(const Node& n, const Index& index);
  llvm::Value* take(const Node& n, const Index& index);

  Emitter& e_;
  const Plan& plan_;
  const Kernel& kernel_;
  const KernelArgs& args_;
  std::map<std::pair<const Node*, int>, llvm::Value*> buffers_;
  std::map<const Node*, std::function<llvm::Value*(const Index&)>> overrides_;
  std::map<std::pair<const Node*, std::vector<llvm::Value*>>, llvm::Value*> memo_;
  int constant_count_ = 0;
};

}  // namespace edifice::jit::codegen
