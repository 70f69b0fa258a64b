// Running a program: check the inputs, allocate outputs and the arena, run each kernel's work
// items on the thread pool, and turn status codes into errors that name the op.
#include "program.hpp"
#include "status_codes.hpp"
#include "thread_pool.hpp"
#include "work_items.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>

namespace edifice::jit {
namespace {

[[noreturn]] void report(const Kernel& k, int code) {
  // Name the node that can raise this code.
  const Node* culprit = k.anchor;
  for (const Node* n : k.nodes) {
    bool can_raise = code == kIntegerDivisionByZero
                         ? (n->op() == Op::div && is_integral(n->outputs()[0].dtype))
                         : (n->op() == Op::take || n->op() == Op::scatter_add);
    if (can_raise) culprit = n;
  }
  const char* what =
      code == kIntegerDivisionByZero ? "integer division by zero" : "index out of range";
  throw Error(
      fmt::format("{}: {} (kernel {}){}", op_name(culprit->op()), what, k.name, where(*culprit)));
}

}  // namespace

bool profiling_enabled() {
  static const bool on = [] {
    const char* env = std::getenv("EDIFICE_PROFILE");
    return env && std::string(env) == "1";
  }();
  return on;
}

Program::~Program() {
  if (profile_runs == 0) return;
  double total = 0;
  std::vector<std::size_t> order;
  for (std::size_t i = 0; i < profile_seconds.size(); ++i) {
    total += profile_seconds[i];
    order.push_back(i);
  }
  std::sort(order.begin(), order.end(),
            [&](std::size_t a, std::size_t b) { return profile_seconds[a] > profile_seconds[b]; });
  std::string out = fmt::format("edifice profile: {} runs of {} kernels, {:.3f} ms per run\n",
                                profile_runs, steps.size(), 1e3 * total / profile_runs);
  for (std::size_t i : order) {
    const double ms = 1e3 * profile_seconds[i] / static_cast<double>(profile_runs);
    const double flops = i < infos.size() ? infos[i].flops : 0;
    const double util = profile_seconds[i] > 0
                            ? profile_busy[i] / profile_seconds[i] / std::max(1, steps[i].tasks)
                            : 0.0;
    out += fmt::format("  {:<22} {:9.3f} ms {:5.1f}% util {:4.2f} {:8.1f} GFLOP/s  [{}]\n",
                       steps[i].kernel->name, ms, 100 * profile_seconds[i] / total, util,
                       ms > 0 ? flops / ms / 1e6 : 0.0, fmt::join(infos[i].ops, ","));
  }
  std::fputs(out.c_str(), stderr);
}

void Program::bind_steps() {
  for (const Kernel& k : plan.kernels) {
    Step step;
    step.kernel = &k;
    step.fn = reinterpret_cast<KernelFn>(code->symbol(k.name));
    for (const Value& v : k.outputs) step.slots.push_back(plan.slot(v));
    for (const Value& v : k.inputs) step.slots.push_back(plan.slot(v));
    step.items = work_items(k);
    step.tasks = choose_tasks(k, step.items, threads);
    step.grain = work_item_grain(k, threads);
    steps.push_back(std::move(step));
  }
  for (std::size_t i = 0; i < plan.kernels.size(); ++i)
    if (plan.kernels[i].workspace_bytes > 0)
      steps[i].slots.push_back({BufferSlot::Place::arena, -1, plan.workspace_offsets[i],
                                plan.kernels[i].workspace_bytes});
}

std::vector<Tensor> Program::run(const std::vector<Tensor>& inputs) const {
  const auto& params = plan.graph.inputs();
  if (inputs.size() != params.size())
    fail("jit: {} inputs given, the graph takes {}", inputs.size(), params.size());
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    const TensorType& want = params[i].type();
    if (inputs[i].dtype() != want.dtype || inputs[i].shape() != want.shape)
      fail("jit: input \"{}\" is {}{}, the executable was compiled for {}", input_name(params[i]),
           dtype_name(inputs[i].dtype()), shape_to_string(inputs[i].shape()), want.to_string());
  }
  const auto& graph_outputs = plan.graph.outputs();
  std::vector<Tensor> outputs;
  // Every output and arena byte is written by a kernel before it is read.
  for (const Value& v : graph_outputs)
    outputs.push_back(Tensor::uninitialized(v.dtype(), v.shape()));
  Tensor arena;
  bool reused = false;
  {
    std::lock_guard lock(arena_mutex);
    if (!free_arenas.empty()) {
      arena = std::move(free_arenas.back());
      free_arenas.pop_back();
      reused = true;
    }
  }
  if (!reused) arena = Tensor::uninitialized(DType::u8, {plan.arena_bytes});
  // Back to the pool however the run ends (kernels report errors by throwing).
  struct ArenaReturn {
    const Program& program;
    Tensor& arena;
    ~ArenaReturn() {
      std::lock_guard lock(program.arena_mutex);
      program.free_arenas.push_back(std::move(arena));
    }
  } arena_return{*this, arena};

  auto pointer = [&](const BufferSlot& s, const Value* v) -> void* {
    switch (s.place) {
      case BufferSlot::Place::input:
        return const_cast<void*>(inputs[s.index].raw_data());
      case BufferSlot::Place::output:
        return outputs[s.index].raw_data();
      case BufferSlot::Place::arena:
        return static_cast<std::byte*>(arena.raw_data()) + s.offset;
      case BufferSlot::Place::constant:
        return const_cast<void*>(v->node().attrs().get_tensor("value").raw_data());
    }
    return nullptr;
  };

  ThreadPool& pool = ThreadPool::shared(threads);
  std::vector<void*> table;
  const bool profile = profiling_enabled();
  std::vector<double> step_seconds(profile ? steps.size() : 0);
  std::vector<double> step_busy(profile ? steps.size() : 0);
  for (std::size_t si = 0; si < steps.size(); ++si) {
    const Step& step = steps[si];
    if (step.items == 0) continue;
    const auto start =
        profile ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point{};
    const Kernel& k = *step.kernel;
    table.clear();
    std::size_t slot = 0;
    for (const Value& v : k.outputs) table.push_back(pointer(step.slots[slot++], &v));
    for (const Value& v : k.inputs) table.push_back(pointer(step.slots[slot++], &v));
    if (slot < step.slots.size()) table.push_back(pointer(step.slots[slot], nullptr));
    std::int32_t status = 0;
    void** t = table.data();
    pool.parallel_for(
        step.items, step.tasks,
        [&](std::int64_t begin, std::int64_t end) {
          std::int32_t local = 0;
          const auto chunk_start =
              profile ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point{};
          step.fn(t, begin, end, &local);
          if (profile)
            std::atomic_ref<double>(step_busy[si])
                .fetch_add(
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - chunk_start)
                        .count());
          if (local) std::atomic_ref<std::int32_t>(status).store(local);
        },
        step.grain);
    if (status) report(k, status);
    if (profile)
      step_seconds[si] =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  if (profile) {
    std::lock_guard lock(profile_mutex);
    if (profile_seconds.empty()) profile_seconds.assign(steps.size(), 0.0);
    if (profile_busy.empty()) profile_busy.assign(steps.size(), 0.0);
    for (std::size_t i = 0; i < step_seconds.size(); ++i) profile_seconds[i] += step_seconds[i];
    for (std::size_t i = 0; i < step_busy.size(); ++i) profile_busy[i] += step_busy[i];
    ++profile_runs;
  }

  // Outputs with no kernel of their own: graph inputs and repeated outputs are copies.
  for (std::size_t i = 0; i < graph_outputs.size(); ++i) {
    const BufferSlot& s = plan.slot(graph_outputs[i]);
    if (s.place == BufferSlot::Place::input)
      outputs[i] = inputs[s.index].clone();
    else if (s.place == BufferSlot::Place::output && s.index != static_cast<int>(i))
      outputs[i] = outputs[s.index].clone();
  }
  return outputs;
}

}  // namespace edifice::jit
