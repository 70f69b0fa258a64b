#pragma once
// A compiled graph: the plan, the linked code and one step per kernel.

#include <edifice/jit/jit.hpp>

#include "llvm_backend.hpp"
#include "plan.hpp"

namespace edifice::jit {

/// The native signature of every kernel (see codegen/emitter.hpp).
using KernelFn = void (*)(void** buffers, std::int64_t begin, std::int64_t end,
                          std::int32_t* status);

struct Step {
  KernelFn fn = nullptr;
  const Kernel* kernel = nullptr;
  std::vector<BufferSlot> slots;  // outputs, inputs, then the workspace if any
  std::int64_t items = 0;
  int tasks = 1;
};

class Program {
 public:
  Plan plan;
  std::shared_ptr<LoadedObject> code;
  std::vector<Step> steps;
  std::vector<KernelInfo> infos;
  std::string cache_key;
  bool from_cache = false;
  double seconds = 0;
  int threads = 1;

  /// Runs the steps in order (runtime.cpp).
  std::vector<Tensor> run(const std::vector<Tensor>& inputs) const;
};

/// The lowering driver (lower.cpp): graph -> specialised graph -> plan -> code.
std::shared_ptr<Program> build_program(const Graph& graph, const std::vector<Shape>& input_shapes,
                                       const Options& options);

/// Worker count from options, EDIFICE_THREADS or the hardware.
int resolve_threads(const Options& options);

}  // namespace edifice::jit
