#include "codegen.hpp"

#include "../llvm_backend.hpp"
#include "kernels.hpp"

#include <llvm/IR/LLVMContext.h>

namespace edifice::jit {

std::string compile_plan(const Plan& plan, const Target& target, const std::string& name) {
  using namespace codegen;
  llvm::LLVMContext context;
  auto module = std::make_unique<llvm::Module>(name, context);
  Emitter e(*module);
  for (const Kernel& k : plan.kernels) {
    int buffers = static_cast<int>(k.outputs.size() + k.inputs.size()) + (k.workspace_bytes > 0);
    KernelArgs args = e.begin_kernel(k.name, buffers);
    ExpressionEmitter expr(e, plan, k, args);
    switch (k.kind) {
      case KernelKind::loop: emit_loop(e, expr, k, args); break;
      case KernelKind::reduce: emit_reduce(e, expr, k, args); break;
      case KernelKind::gemm: emit_gemm(e, expr, k, args); break;
      case KernelKind::scatter_add: emit_scatter_add(e, expr, k, args); break;
      case KernelKind::softmax: emit_softmax(e, expr, k, args); break;
      case KernelKind::layer_norm: emit_layer_norm(e, expr, k, args); break;
      case KernelKind::layer_norm_backward: emit_layer_norm_backward(e, expr, k, args); break;
      case KernelKind::attention: emit_attention(e, expr, k, args); break;
      case KernelKind::attention_backward: emit_attention_backward(e, expr, k, args); break;
      case KernelKind::lstm: emit_lstm(e, expr, k, args); break;
      case KernelKind::lstm_backward: emit_lstm_backward(e, expr, k, args); break;
    }
    e.end_kernel();
  }
  return optimize_to_object(*module, target, name);
}

}  // namespace edifice::jit
