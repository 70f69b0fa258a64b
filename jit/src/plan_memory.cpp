// Static memory plan: graph inputs and outputs live in the caller's tensors, constants in the
// graph; every other materialised value gets an offset in one arena per run, reusing bytes of
// values whose last reader has already run (first fit over live intervals).
#include "plan.hpp"

#include <algorithm>
#include <optional>

namespace edifice::jit {
namespace {

constexpr std::int64_t kAlign = 64;

std::int64_t aligned(std::int64_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

std::int64_t byte_size(const Value& v) {
  return shape_numel(v.shape()) * static_cast<std::int64_t>(dtype_size(v.dtype()));
}

}  // namespace

void plan_memory(Plan& plan) {
  using Key = std::pair<const Node*, int>;
  auto key = [](const Value& v) { return Key{&v.node(), v.index()}; };

  const auto& inputs = plan.graph.inputs();
  for (std::size_t i = 0; i < inputs.size(); ++i)
    plan.buffers[key(inputs[i])] = {BufferSlot::Place::input, static_cast<int>(i), 0,
                                    byte_size(inputs[i])};
  const auto& outputs = plan.graph.outputs();
  for (std::size_t i = 0; i < outputs.size(); ++i) {
    // An output that is also an input or appears twice is copied by the runtime; the first
    // output slot holding a value owns it.
    if (plan.buffers.count(key(outputs[i]))) continue;
    plan.buffers[key(outputs[i])] = {BufferSlot::Place::output, static_cast<int>(i), 0,
                                     byte_size(outputs[i])};
  }

  // Live interval [first writer, last reader] of every arena value, in kernel indices.
  std::map<Key, std::pair<int, int>> live;
  const int n = static_cast<int>(plan.kernels.size());
  for (int k = 0; k < n; ++k) {
    for (const Value& out : plan.kernels[k].outputs) {
      if (plan.buffers.count(key(out))) continue;
      live[key(out)] = {k, k};
    }
    for (const Value& in : plan.kernels[k].inputs) {
      auto it = live.find(key(in));
      if (it != live.end()) it->second.second = k;
      else if (!plan.buffers.count(key(in)) && in.node().op() == Op::constant)
        plan.buffers[key(in)] = {BufferSlot::Place::constant, -1, 0, byte_size(in)};
    }
  }

  // Workspaces live only while their kernel runs.
  struct Request {
    std::optional<Key> value;  // empty: the workspace of kernel `first`
    std::int64_t bytes;
    int first, last;
  };
  std::vector<Request> requests;
  for (int k = 0; k < n; ++k) {
    for (const Value& out : plan.kernels[k].outputs)
      if (live.count(key(out)) && live.at(key(out)).first == k)
        requests.push_back({key(out), byte_size(out), k, live.at(key(out)).second});
    if (plan.kernels[k].workspace_bytes > 0)
      requests.push_back({std::nullopt, plan.kernels[k].workspace_bytes, k, k});
  }

  struct Block {
    std::int64_t offset, bytes;
    int last_use;
  };
  std::vector<Block> placed;
  std::int64_t arena = 0;
  plan.workspace_offsets.assign(plan.kernels.size(), 0);
  for (const Request& r : requests) {
    std::int64_t bytes = aligned(std::max<std::int64_t>(r.bytes, 1));
    // First fit among the blocks still live when this one is written.
    std::vector<std::pair<std::int64_t, std::int64_t>> busy;
    for (const Block& b : placed)
      if (b.last_use >= r.first) busy.push_back({b.offset, b.offset + b.bytes});
    std::sort(busy.begin(), busy.end());
    std::int64_t offset = 0;
    for (auto [lo, hi] : busy) {
      if (offset + bytes <= lo) break;
      offset = std::max(offset, hi);
    }
    placed.push_back({offset, bytes, r.last});
    arena = std::max(arena, offset + bytes);
    if (r.value)
      plan.buffers[*r.value] = {BufferSlot::Place::arena, -1, offset, r.bytes};
    else
      plan.workspace_offsets[r.first] = offset;
  }
  plan.arena_bytes = arena;
}

}  // namespace edifice::jit
