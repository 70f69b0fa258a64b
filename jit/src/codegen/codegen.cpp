#include "codegen.hpp"

#include "../llvm_backend.hpp"
#include "kernels.hpp"

#include <llvm/IR/LLVMContext.h>
#include <llvm/IR/Module.h>

#include <algorithm>
#include <exception>
#include <thread>

namespace edifice::jit {

namespace {

void emit_kernel(codegen::Emitter& e, const Plan& plan, const Kernel& k) {
  using namespace codegen;
  int buffers = static_cast<int>(k.outputs.size() + k.inputs.size()) + (k.workspace_bytes > 0);
  KernelArgs args = e.begin_kernel(k.name, buffers);
  ExpressionEmitter expr(e, plan, k, args);
  switch (k.kind) {
    case KernelKind::loop:
      emit_loop(e, expr, k, args);
      break;
    case KernelKind::reduce:
      emit_reduce(e, expr, k, args);
      break;
    case KernelKind::gemm:
      emit_gemm(e, expr, k, args);
      break;
    case KernelKind::scatter_add:
      emit_scatter_add(e, expr, k, args);
      break;
    case KernelKind::softmax:
      emit_softmax(e, expr, k, args);
      break;
    case KernelKind::layer_norm:
      emit_layer_norm(e, expr, k, args);
      break;
    case KernelKind::layer_norm_backward:
      emit_layer_norm_backward(e, expr, k, args);
      break;
    case KernelKind::attention:
      emit_attention(e, expr, k, args);
      break;
    case KernelKind::attention_backward:
      emit_attention_backward(e, expr, k, args);
      break;
    case KernelKind::lstm_scan:
      emit_lstm_scan(e, expr, k, args);
      break;
    case KernelKind::lstm_scan_backward:
      emit_lstm_scan_backward(e, expr, k, args);
      break;
  }
  e.end_kernel();
}

// Rough code size of a kernel, to balance the modules compiled in parallel.
double code_weight(const Kernel& k) {
  switch (k.kind) {
    case KernelKind::gemm:
      return 8.0 + static_cast<double>(k.nodes.size());
    case KernelKind::attention_backward:
    case KernelKind::lstm_scan_backward:
      return 10.0;
    case KernelKind::attention:
    case KernelKind::lstm_scan:
    case KernelKind::layer_norm_backward:
      return 6.0;
    default:
      return 1.0 + static_cast<double>(k.nodes.size());
  }
}

}  // namespace

namespace {

// LLVM tunes most AVX-512 CPUs (Sapphire Rapids, Ice Lake, ...) to vectorise with 256-bit
// vectors, which halves the width of every loop the vectoriser writes (elementwise epilogues,
// the attention tiles' softmax lanes, layer norm) next to the micro-kernel's 512-bit FMAs.
// Kernels run for milliseconds on all cores, where the clock penalty that tuning avoids is
// small: ask for full-width vectors.
void prefer_full_vectors(llvm::Module& module, const Target& target) {
  if (target.isa != Isa::avx512) return;
  for (llvm::Function& f : module)
    if (!f.isDeclaration()) f.addFnAttr("prefer-vector-width", "512");
}

}  // namespace

std::vector<std::string> compile_plan(const Plan& plan, const Target& target,
                                      const std::string& name, int parts,
                                      const std::function<void(llvm::Module&)>& extend) {
  const int n = static_cast<int>(plan.kernels.size());
  parts = std::max(1, std::min(parts, n));
  // Greedy balance: heaviest kernels first, each to the lightest module so far.
  std::vector<int> order(n);
  for (int i = 0; i < n; ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
    return code_weight(plan.kernels[a]) > code_weight(plan.kernels[b]);
  });
  std::vector<std::vector<int>> groups(parts);
  std::vector<double> load(parts, 0);
  for (int i : order) {
    int g = static_cast<int>(std::min_element(load.begin(), load.end()) - load.begin());
    groups[g].push_back(i);
    load[g] += code_weight(plan.kernels[i]);
  }
  std::vector<std::string> objects(parts);
  std::vector<std::exception_ptr> errors(parts);
  auto compile_group = [&](int g) {
    try {
      // The emitters ask codegen_target() (a thread's own setting) for the target.
      CodegenTargetScope scope(target);
      llvm::LLVMContext context;
      const std::string part_name = parts == 1 ? name : fmt::format("{}.part{}", name, g);
      auto module = std::make_unique<llvm::Module>(part_name, context);
      codegen::Emitter e(*module);
      for (int i : groups[g]) emit_kernel(e, plan, plan.kernels[i]);
      prefer_full_vectors(*module, target);
      if (g == 0 && extend) extend(*module);
      objects[g] = optimize_to_object(*module, target, part_name);
    } catch (...) {
      errors[g] = std::current_exception();
    }
  };
  std::vector<std::thread> threads;
  for (int g = 1; g < parts; ++g) threads.emplace_back(compile_group, g);
  compile_group(0);
  for (auto& t : threads) t.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
  return objects;
}

}  // namespace edifice::jit
