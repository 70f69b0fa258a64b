// Running a program: check the inputs, allocate outputs and the arena, run each kernel's work
// items on the thread pool, and turn status codes into errors that name the op.
#include "codegen/codegen.hpp"
#include "program.hpp"
#include "thread_pool.hpp"

#include <atomic>

namespace edifice::jit {
namespace {

std::string where(const Node& n) {
  std::string s;
  if (!n.scope().empty()) s += fmt::format("\n  in layer \"{}\"", n.scope());
  return s + fmt::format("\n  the {} was defined at {}", n.scope().empty() ? "op" : "layer",
                         format_location(n.location()));
}

[[noreturn]] void report(const Kernel& k, int code) {
  // Name the node that can raise this code.
  const Node* culprit = k.anchor;
  for (const Node* n : k.nodes) {
    bool can_raise = code == 1 ? (n->op() == Op::div && is_integral(n->outputs()[0].dtype))
                               : (n->op() == Op::take || n->op() == Op::scatter_add);
    if (can_raise) culprit = n;
  }
  const char* what = code == 1 ? "integer division by zero" : "index out of range";
  throw Error(fmt::format("{}: {} (kernel {}){}", op_name(culprit->op()), what, k.name,
                          where(*culprit)));
}

}  // namespace

std::vector<Tensor> Program::run(const std::vector<Tensor>& inputs) const {
  const auto& params = plan.graph.inputs();
  if (inputs.size() != params.size())
    fail("jit: {} inputs given, the graph takes {}", inputs.size(), params.size());
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    const TensorType& want = params[i].type();
    if (inputs[i].dtype() != want.dtype || inputs[i].shape() != want.shape)
      fail("jit: input {} (\"{}\") is {}{}, the executable was compiled for {}", i,
           params[i].node().attrs().get_string("name"), dtype_name(inputs[i].dtype()),
           shape_to_string(inputs[i].shape()), want.to_string());
  }
  const auto& graph_outputs = plan.graph.outputs();
  std::vector<Tensor> outputs;
  // Every output and arena byte is written by a kernel before it is read.
  for (const Value& v : graph_outputs) outputs.push_back(Tensor::uninitialized(v.dtype(), v.shape()));
  Tensor arena = Tensor::uninitialized(DType::u8, {plan.arena_bytes});

  auto pointer = [&](const BufferSlot& s, const Value* v) -> void* {
    switch (s.place) {
      case BufferSlot::Place::input: return const_cast<void*>(inputs[s.index].raw_data());
      case BufferSlot::Place::output: return outputs[s.index].raw_data();
      case BufferSlot::Place::arena: return static_cast<std::byte*>(arena.raw_data()) + s.offset;
      case BufferSlot::Place::constant:
        return const_cast<void*>(v->node().attrs().get_tensor("value").raw_data());
    }
    return nullptr;
  };

  ThreadPool& pool = ThreadPool::shared(threads);
  std::vector<void*> table;
  for (const Step& step : steps) {
    if (step.items == 0) continue;
    const Kernel& k = *step.kernel;
    table.clear();
    std::size_t slot = 0;
    for (const Value& v : k.outputs) table.push_back(pointer(step.slots[slot++], &v));
    for (const Value& v : k.inputs) table.push_back(pointer(step.slots[slot++], &v));
    if (slot < step.slots.size()) table.push_back(pointer(step.slots[slot], nullptr));
    std::int32_t status = 0;
    void** t = table.data();
    pool.parallel_for(step.items, step.tasks, [&](std::int64_t begin, std::int64_t end) {
      std::int32_t local = 0;
      step.fn(t, begin, end, &local);
      if (local) std::atomic_ref<std::int32_t>(status).store(local);
    });
    if (status) report(k, status);
  }

  // Outputs with no kernel of their own: graph inputs and repeated outputs are copies.
  for (std::size_t i = 0; i < graph_outputs.size(); ++i) {
    const BufferSlot& s = plan.slot(graph_outputs[i]);
    if (s.place == BufferSlot::Place::input) outputs[i] = inputs[s.index].clone();
    else if (s.place == BufferSlot::Place::output && s.index != static_cast<int>(i))
      outputs[i] = outputs[s.index].clone();
  }
  return outputs;
}

}  // namespace edifice::jit
