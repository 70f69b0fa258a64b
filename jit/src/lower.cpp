// The lowering driver, the table of contents of the JIT: one numbered step per pass, each
// stage printable with EDIFICE_DUMP and timed with EDIFICE_DUMP=timing.
#include "codegen/codegen.hpp"
#include "disk_cache.hpp"
#include "program.hpp"
#include "work_items.hpp"

#include <chrono>
#include <functional>
#include <thread>

namespace edifice::jit {
namespace {

// The wall time of each stage, for the timing dump.
class StageTimer {
 public:
  void operator()(const char* what) {
    auto now = std::chrono::steady_clock::now();
    text_ += fmt::format("  {:<24} {:8.2f} ms\n", what,
                         std::chrono::duration<double, std::milli>(now - lap_).count());
    lap_ = now;
  }
  const std::string& text() const { return text_; }
  double seconds_since_start() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }

 private:
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point lap_ = start_;
  std::string text_;
};

// LLVM's optimiser dominates cold compiles; one module per hardware thread.
int compile_threads() {
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

// The plan's objects from the disk cache, else generated, optimised and stored.
std::vector<std::string> native_code(Program& program, const Options& options,
                                     const std::string& name, StageTimer& stage) {
  DiskCache cache(options.cache_dir);
  std::optional<std::vector<std::string>> objects;
  if (options.disk_cache) objects = cache.load_objects(program.cache_key);
  program.from_cache = objects.has_value();
  stage("hash and cache lookup");
  if (objects) return std::move(*objects);
  std::vector<std::string> compiled =
      compile_plan(program.plan, host_target(), name, compile_threads());
  stage("LLVM codegen");
  if (options.disk_cache) cache.store_objects(program.cache_key, compiled);
  return compiled;
}

}  // namespace

Plan plan_graph(const Graph& graph, const std::vector<Shape>& input_shapes, const Options& options,
                const std::function<void(const char*)>& stage) {
  // 1. Bind the dynamic batch extent: every later stage sees static shapes.
  Graph g = specialize(graph, input_shapes);
  stage("specialize");
  // 2. Compute only the rows that are read (a model's last position): slices move up through
  //    row-wise producers.
  if (resolve_prune_rows(options)) {
    g = prune_rows(g);
    stage("prune_rows");
  }
  // 3. Attend over the un-projected keys where few query rows remain (the pruned last layer).
  if (resolve_absorb_projections(options)) {
    g = absorb_projections(g);
    stage("absorb_projections");
  }
  // 4. Compute transposed dot results (weight gradients) directly, by swapping the operands.
  g = fold_dot_transpose(g);
  stage("fold_dot_transpose");
  // 5. Give every dot_general operand a layout the GEMM kernel reads in place.
  g = canonicalize_dot(g);
  stage("canonicalize_dot");
  // 6. Choose tiled (flash) or row kernels for attention.
  g = choose_attention_kernels(g, options.attention_kernel);
  stage("choose_attention_kernels");
  // 7. Group nodes into kernels.
  Plan plan = fuse(g);
  stage("fuse");
  // 8. Give every intermediate an arena offset by liveness.
  plan_memory(plan);
  stage("plan_memory");
  return plan;
}

std::shared_ptr<Program> build_program(const Graph& graph, const std::vector<Shape>& input_shapes,
                                       const Options& options) {
  StageTimer stage;
  const DumpOptions& dump = DumpOptions::from_environment();
  auto program = std::make_shared<Program>();
  program->threads = resolve_threads(options);
  // Steps 1 to 8: graph -> plan.
  program->plan = plan_graph(graph, input_shapes, options, std::ref(stage));
  const Graph& g = program->plan.graph;

  program->cache_key = object_cache_key(g.hash(), host_target());
  const std::string name = "edifice_" + program->cache_key;
  if (dump.graph) dump.write(name + ".graph.txt", g.to_string());
  if (dump.plan) dump.write(name + ".plan.txt", program->plan.to_string());
  // 9. Native code: from the disk cache, or generated, optimised and stored.
  const std::vector<std::string> objects = native_code(*program, options, name, stage);
  // 10. Link it and bind one step per kernel.
  program->code = load_objects(objects, name);
  stage("link");
  program->bind_steps();
  stage("bind kernels");
  program->infos = describe_kernels(program->plan);
  if (dump.timing) dump.write(name + ".timing.txt", stage.text());
  program->seconds = stage.seconds_since_start();
  return program;
}

}  // namespace edifice::jit
