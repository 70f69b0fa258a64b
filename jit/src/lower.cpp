// The lowering driver: one numbered step per pass, each stage printable with EDIFICE_DUMP.
#include "codegen/codegen.hpp"
#include "codegen_hash.hpp"
#include "disk_cache.hpp"
#include "program.hpp"
#include "work_items.hpp"

#include <chrono>
#include <cstdlib>
#include <thread>

namespace edifice::jit {
namespace {

// A hash of the JIT's own sources (generated at build time): any change to the code
// generator invalidates every cached object.
constexpr const char* kCodegenVersion = "edifice-codegen-" EDIFICE_CODEGEN_HASH;

std::vector<KernelInfo> describe(const Plan& plan) {
  std::vector<KernelInfo> infos;
  for (const Kernel& k : plan.kernels) {
    KernelInfo info;
    info.name = k.name;
    info.kind = kernel_kind_name(k.kind);
    for (const Node* n : k.nodes) info.ops.emplace_back(op_name(n->op()));
    info.flops = work_item_cost(k) * static_cast<double>(std::max<std::int64_t>(work_items(k), 1));
    for (const Value& v : k.outputs)
      info.bytes += static_cast<double>(shape_numel(v.shape()) * dtype_size(v.dtype()));
    for (const Value& v : k.inputs)
      info.bytes += static_cast<double>(shape_numel(v.shape()) * dtype_size(v.dtype()));
    infos.push_back(std::move(info));
  }
  return infos;
}

// Splits small kernels less: below ~32k elementary operations a thread hand-off costs more
// than it saves.
int choose_tasks(const Kernel& k, std::int64_t items, int threads) {
  double total = work_item_cost(k) * static_cast<double>(items);
  if (threads <= 1 || items <= 1 || total < 32768) return 1;
  return static_cast<int>(std::min<std::int64_t>(threads, items));
}

// LLVM's optimiser dominates cold compiles; one module per hardware thread.
int compile_threads() {
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

// Several objects in one cache entry: "<count>\n" then "<size>\n<bytes>" per object.
std::string pack_objects(const std::vector<std::string>& objects) {
  std::string out = std::to_string(objects.size()) + "\n";
  for (const auto& o : objects) out += std::to_string(o.size()) + "\n" + o;
  return out;
}

// The inverse; nullopt for anything malformed (treated as a cache miss).
std::optional<std::vector<std::string>> unpack_objects(const std::string& bundle) {
  std::size_t pos = 0;
  auto read_number = [&](std::size_t& out) {
    std::size_t nl = bundle.find('\n', pos);
    if (nl == std::string::npos || nl == pos || nl - pos > 12) return false;
    out = 0;
    for (std::size_t i = pos; i < nl; ++i) {
      if (bundle[i] < '0' || bundle[i] > '9') return false;
      out = out * 10 + static_cast<std::size_t>(bundle[i] - '0');
    }
    pos = nl + 1;
    return true;
  };
  std::size_t count = 0;
  if (!read_number(count) || count == 0 || count > 4096) return std::nullopt;
  std::vector<std::string> objects;
  for (std::size_t i = 0; i < count; ++i) {
    std::size_t size = 0;
    if (!read_number(size) || size > bundle.size() - pos) return std::nullopt;
    objects.push_back(bundle.substr(pos, size));
    pos += size;
  }
  if (pos != bundle.size()) return std::nullopt;
  return objects;
}

}  // namespace

bool resolve_prune_rows(const Options& options) {
  const char* env = std::getenv("EDIFICE_PRUNE");
  return options.prune_rows && !(env && std::string(env) == "0");
}

bool resolve_absorb_projections(const Options& options) {
  const char* env = std::getenv("EDIFICE_ABSORB");
  return options.absorb_projections && !(env && std::string(env) == "0");
}

bool prune_rows_enabled(const Options& options) {
  return resolve_prune_rows(options);
}

int resolve_threads(const Options& options) {
  if (options.threads > 0) return options.threads;
  if (const char* t = std::getenv("EDIFICE_THREADS"); t && std::atoi(t) > 0) return std::atoi(t);
  return std::max(1u, std::thread::hardware_concurrency());
}

std::shared_ptr<Program> build_program(const Graph& graph, const std::vector<Shape>& input_shapes,
                                       const Options& options) {
  const auto start = std::chrono::steady_clock::now();
  const Target& target = host_target();
  const DumpOptions& dump = DumpOptions::from_environment();
  auto program = std::make_shared<Program>();
  program->threads = resolve_threads(options);

  auto lap = start;
  std::string timing;
  auto stage = [&](const char* what) {
    auto now = std::chrono::steady_clock::now();
    timing += fmt::format("  {:<24} {:8.2f} ms\n", what,
                          std::chrono::duration<double, std::milli>(now - lap).count());
    lap = now;
  };
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
  // 4. Give every dot_general operand a layout the GEMM kernel reads in place.
  g = canonicalize_dot(g);
  stage("canonicalize_dot");
  // 5. Choose tiled (flash) or row kernels for attention.
  g = choose_attention_kernels(g, options.attention_kernel);
  stage("choose_attention_kernels");
  // 6. Group nodes into kernels.
  Plan& plan = program->plan;
  plan = fuse(g);
  stage("fuse");
  // 7. Give every intermediate an arena offset by liveness.
  plan_memory(plan);
  stage("plan_memory");

  program->cache_key = content_hash(fmt::format("{:016x}|{}|{}|{}|{}", g.hash(), target.triple,
                                                target.cpu, target.features, kCodegenVersion));
  const std::string name = "edifice_" + program->cache_key;
  if (dump.graph) dump.write(name + ".graph.txt", g.to_string());
  if (dump.plan) dump.write(name + ".plan.txt", plan.to_string());

  // 8. Native code: from the disk cache, or generated, optimised and stored.
  DiskCache cache(options.cache_dir);
  std::optional<std::vector<std::string>> objects;
  if (options.disk_cache)
    if (auto bundle = cache.load(program->cache_key)) objects = unpack_objects(*bundle);
  program->from_cache = objects.has_value();
  stage("hash and cache lookup");
  if (!objects) {
    objects = compile_plan(plan, target, name, compile_threads());
    stage("LLVM codegen");
    if (options.disk_cache) cache.store(program->cache_key, pack_objects(*objects));
  }
  // 9. Link it and bind one step per kernel.
  program->code = load_objects(*objects, name);
  stage("link");
  for (const Kernel& k : plan.kernels) {
    Step step;
    step.kernel = &k;
    step.fn = reinterpret_cast<KernelFn>(program->code->symbol(k.name));
    for (const Value& v : k.outputs) step.slots.push_back(plan.slot(v));
    for (const Value& v : k.inputs) step.slots.push_back(plan.slot(v));
    step.items = work_items(k);
    step.tasks = choose_tasks(k, step.items, program->threads);
    program->steps.push_back(std::move(step));
  }
  for (std::size_t i = 0; i < plan.kernels.size(); ++i)
    if (plan.kernels[i].workspace_bytes > 0)
      program->steps[i].slots.push_back({BufferSlot::Place::arena, -1, plan.workspace_offsets[i],
                                         plan.kernels[i].workspace_bytes});
  stage("bind kernels");
  program->infos = describe(plan);
  if (dump.timing) dump.write(name + ".timing.txt", timing);
  program->seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return program;
}

}  // namespace edifice::jit
