// Public entry points: compile with an in-process cache, Executable accessors, Function.
#include <edifice/jit/jit.hpp>

#include "program.hpp"

#include <list>

namespace edifice::jit {
namespace {

// In-process cache of executables by (graph hash, input shapes, ISA, threads); bounded so a
// long-running process that sees many shapes does not keep every program alive.
class ExecutableCache {
 public:
  static ExecutableCache& instance() {
    static ExecutableCache cache;
    return cache;
  }
  std::shared_ptr<const Executable> get_or_build(const Graph& graph,
                                                 const std::vector<Shape>& shapes,
                                                 const Options& options) {
    std::string key = fmt::format("{:016x}|{}|{}|{}|{}|{}|{}|{}|{}", graph.hash(),
                                  host_target().cpu, host_target().features,
                                  resolve_threads(options), options.disk_cache, options.cache_dir,
                                  resolve_prune_rows(options), resolve_absorb_projections(options),
                                  static_cast<int>(options.attention_kernel));
    for (const Shape& s : shapes) key += "|" + shape_to_string(s);
    {
      std::lock_guard lock(mutex_);
      for (auto it = entries_.begin(); it != entries_.end(); ++it)
        if (it->first == key) {
          entries_.splice(entries_.begin(), entries_, it);
          return it->second;
        }
    }
    auto exe = std::make_shared<const Executable>(build_program(graph, shapes, options));
    std::lock_guard lock(mutex_);
    entries_.emplace_front(key, exe);
    if (entries_.size() > kCapacity) entries_.pop_back();
    return exe;
  }

 private:
  static constexpr std::size_t kCapacity = 128;
  std::mutex mutex_;
  std::list<std::pair<std::string, std::shared_ptr<const Executable>>> entries_;
};

}  // namespace

Executable::Executable(std::shared_ptr<Program> program) : program_(std::move(program)) {}
Executable::~Executable() = default;

std::vector<Tensor> Executable::run(const std::vector<Tensor>& inputs) const {
  return program_->run(inputs);
}
const std::vector<KernelInfo>& Executable::kernels() const {
  return program_->infos;
}
std::string Executable::plan() const {
  return program_->plan.to_string();
}
bool Executable::loaded_from_cache() const {
  return program_->from_cache;
}
double Executable::compile_seconds() const {
  return program_->seconds;
}
std::int64_t Executable::arena_bytes() const {
  return program_->plan.arena_bytes;
}
std::int64_t Executable::largest_intermediate_bytes() const {
  std::int64_t largest = 0;
  for (const auto& [key, slot] : program_->plan.buffers)
    if (slot.place == BufferSlot::Place::arena) largest = std::max(largest, slot.bytes);
  return largest;
}

std::string Executable::summary() const {
  std::string out;
  for (const KernelInfo& k : program_->infos) {
    std::string ops;
    for (const auto& op : k.ops) ops += (ops.empty() ? "" : ",") + op;
    out += fmt::format("{:<24} {:<20} {:>12.0f} flop {:>12.0f} bytes  [{}]\n", k.name, k.kind,
                       k.flops, k.bytes, ops);
  }
  return out;
}

std::shared_ptr<const Executable> compile(const Graph& graph, const std::vector<Shape>& shapes,
                                          const Options& options) {
  return ExecutableCache::instance().get_or_build(graph, shapes, options);
}

Function::Function(Graph graph, Options options)
    : graph_(std::move(graph)), options_(std::move(options)) {}

std::shared_ptr<const Executable> Function::executable(const std::vector<Shape>& shapes) const {
  return compile(graph_, shapes, options_);
}

std::vector<Tensor> Function::operator()(const std::vector<Tensor>& inputs) const {
  std::vector<Shape> shapes;
  for (const Tensor& t : inputs) shapes.push_back(t.shape());
  if (shapes.size() != graph_.inputs().size())
    fail("jit: {} inputs given, the graph takes {}", shapes.size(), graph_.inputs().size());
  return executable(shapes)->run(inputs);
}

}  // namespace edifice::jit
