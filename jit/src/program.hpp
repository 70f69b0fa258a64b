#pragma once
// A compiled graph: the plan, the linked code and one step per kernel.

#include <edifice/jit/jit.hpp>

#include "llvm_backend.hpp"
#include "plan.hpp"

#include <functional>
#include <mutex>

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
  std::int64_t grain = 1;  // items per unit of the pool's chunks (work_item_grain)
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

  /// Fills `steps`: one per kernel of `plan`, bound to its function in `code`, its buffers
  /// and its split into tasks (runtime.cpp).
  void bind_steps();
  /// Runs the steps in order (runtime.cpp).
  std::vector<Tensor> run(const std::vector<Tensor>& inputs) const;

  /// With EDIFICE_PROFILE=1: wall time per step summed over every run, printed to stderr by
  /// the destructor (kernels by time, with their share and GFLOP/s).
  ~Program();
  // Arenas of finished runs, reused by the next (a fresh multi-megabyte arena per run costs a
  // page fault per 4 KB on first touch: measured ~10% of a training step). One per concurrent
  // run; held until the executable is destroyed.
  mutable std::mutex arena_mutex;
  mutable std::vector<Tensor> free_arenas;
  mutable std::mutex profile_mutex;
  mutable std::vector<double> profile_seconds;
  // Seconds the tasks spent inside each kernel, summed over tasks (utilisation = busy /
  // (seconds * tasks): below 1 the kernel's work was unevenly split or a task started late).
  mutable std::vector<double> profile_busy;
  mutable std::int64_t profile_runs = 0;
};

/// Whether EDIFICE_PROFILE=1 is set (read once).
bool profiling_enabled();

/// The lowering driver (lower.cpp): graph -> specialised graph -> plan -> code.
std::shared_ptr<Program> build_program(const Graph& graph, const std::vector<Shape>& input_shapes,
                                       const Options& options);

/// Steps 1 to 7 of the lowering driver (lower.cpp): specialise, rewrite, fuse and plan memory
/// for the target codegen_target() names; `stage` is called after each step with its name.
/// Shared by build_program and ahead-of-time export.
Plan plan_graph(const Graph& graph, const std::vector<Shape>& input_shapes, const Options& options,
                const std::function<void(const char*)>& stage);

/// Worker count from options, EDIFICE_THREADS or the hardware.
int resolve_threads(const Options& options);

/// Whether the prune_rows pass runs: Options::prune_rows and not EDIFICE_PRUNE=0.
bool resolve_prune_rows(const Options& options);
/// Whether the absorb_projections pass runs: Options::absorb_projections and not
/// EDIFICE_ABSORB=0.
bool resolve_absorb_projections(const Options& options);

}  // namespace edifice::jit
