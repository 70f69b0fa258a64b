// export_bench: the exported artifact of the default sliding-window model (embed 1024) against
// the JIT, batch 1 and 32, on 1 and 2 threads (both sides alike): artifact size (code and weights
// separately), cold start (a fresh process: dlopen of libNAME.so + first run) against the JIT's
// compile, and run time in alternating rounds (JIT, artifact, JIT, ...; the ratio is taken per
// round, its median reported). Prints the docs/performance.md block; with --markdown FILE replaces
// the block between "<!-- export_bench: begin" and "<!-- export_bench: end -->" in FILE.
//
//   export_bench [--rounds N] [--markdown docs/performance.md]
#include <edifice/edifice.hpp>

#include <dlfcn.h>
#include <sys/utsname.h>
#include <unistd.h>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

using namespace edifice;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

using RunFn = int (*)(const void* const*, void* const*, void*);

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

void* aligned(std::size_t bytes) {
  void* p = std::aligned_alloc(64, std::max<std::size_t>(64, (bytes + 63) / 64 * 64));
  std::memset(p, 0, std::max<std::size_t>(64, (bytes + 63) / 64 * 64));
  return p;
}

// The child process of a cold-start measurement: dlopen + dlsym + first run, in microseconds.
int cold_start(const char* library, const char* name, std::size_t in_bytes, std::size_t out_bytes,
               std::size_t workspace_bytes) {
  void* in = aligned(in_bytes);
  void* out = aligned(out_bytes);
  void* workspace = aligned(workspace_bytes);
  const auto start = Clock::now();
  void* handle = dlopen(library, RTLD_NOW | RTLD_LOCAL);
  if (!handle) {
    std::fprintf(stderr, "dlopen: %s\n", dlerror());
    return 1;
  }
  auto run = reinterpret_cast<RunFn>(dlsym(handle, (std::string(name) + "_run").c_str()));
  const void* inputs[] = {in};
  void* outputs[] = {out};
  const int code = run(inputs, outputs, workspace);
  std::printf("%.1f\n", seconds_since(start) * 1e6);
  return code;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

struct Row {
  std::int64_t batch = 0;
  int threads = 1;
  jit::ExportResult result;
  std::int64_t so_bytes = 0;
  double cold_us = 0, jit_compile_s = 0, jit_ms = 0, artifact_ms = 0, ratio = 0;
  bool identical = false;
};

Row measure(std::int64_t batch, int threads, int rounds, const fs::path& dir) {
  Row row;
  row.batch = batch;
  row.threads = threads;
  auto built = models::multi_head::build_sliding_window({.embed_dim = 1024});
  nn::Model model(built.output);
  const nn::Params params = model.init(1);
  Shape shape = built.input.shape();
  shape[0] = batch;
  const std::string name = fmt::format("sliding_b{}_t{}", batch, threads);
  jit::ExportOptions options;
  options.name = name;
  options.out_dir = dir.string();
  options.format = jit::ExportFormat::shared_library;
  row.result = nn::export_model(model, params, {shape}, options);
  const std::string library = row.result.files.at(0);
  row.so_bytes = static_cast<std::int64_t>(fs::file_size(library));

  // Cold start in a fresh process (this program, re-executed).
  const std::string command = fmt::format(
      "/proc/{}/exe --cold-start {} {} {} {} {}", getpid(), library, name,
      row.result.inputs.at(0).bytes, row.result.outputs.at(0).bytes, row.result.workspace_bytes);
  std::vector<double> colds;
  for (int i = 0; i < 5; ++i) {
    FILE* p = popen(command.c_str(), "r");
    double us = 0;
    if (std::fscanf(p, "%lf", &us) == 1) colds.push_back(us);
    pclose(p);
  }
  row.cold_us = colds.empty() ? -1 : median(colds);

  // The JIT on the same thread count, compiled from scratch.
  const nn::TracedModel traced = model.trace(nn::Mode::inference);
  std::vector<Tensor> args;
  std::vector<Shape> shapes;
  for (const auto& n : traced.param_names) args.push_back(params.at(n));
  const Tensor x = Tensor::from_vector<float>(shape, [&] {
    std::vector<float> v(static_cast<std::size_t>(shape_numel(shape)));
    for (std::size_t i = 0; i < v.size(); ++i)
      v[i] = static_cast<float>((i * 7919 % 2001) / 1000.0 - 1.0);
    return v;
  }());
  args.push_back(x);
  for (const Tensor& t : args) shapes.push_back(t.shape());
  jit::Options jo;
  jo.threads = threads;
  jo.disk_cache = false;
  auto exe = jit::compile(traced.graph, shapes, jo);
  row.jit_compile_s = exe->compile_seconds();

  void* handle = dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL);
  auto run = reinterpret_cast<RunFn>(dlsym(handle, (name + "_run").c_str()));
  reinterpret_cast<void (*)(int)>(dlsym(handle, (name + "_set_threads").c_str()))(threads);
  void* in = aligned(x.nbytes());
  std::memcpy(in, x.raw_data(), x.nbytes());
  void* out = aligned(static_cast<std::size_t>(row.result.outputs.at(0).bytes));
  void* workspace = aligned(static_cast<std::size_t>(row.result.workspace_bytes));
  const void* inputs[] = {in};
  void* outputs[] = {out};
  const Tensor want = exe->run(args)[0];
  run(inputs, outputs, workspace);
  row.identical = std::memcmp(want.raw_data(), out, want.nbytes()) == 0;

  const int calls = batch == 1 ? 200 : 10;
  std::vector<double> jit_ms, artifact_ms, ratios;
  for (int r = 0; r < rounds; ++r) {
    auto t = Clock::now();
    for (int i = 0; i < calls; ++i) exe->run(args);
    const double j = seconds_since(t) * 1e3 / calls;
    t = Clock::now();
    for (int i = 0; i < calls; ++i) run(inputs, outputs, workspace);
    const double a = seconds_since(t) * 1e3 / calls;
    jit_ms.push_back(j);
    artifact_ms.push_back(a);
    ratios.push_back(a / j);
  }
  row.jit_ms = median(jit_ms);
  row.artifact_ms = median(artifact_ms);
  row.ratio = median(ratios);
  return row;
}

std::string markdown(const std::vector<Row>& rows, int rounds) {
  utsname u{};
  uname(&u);
  std::string s = fmt::format(
      "<!-- export_bench: begin (bench/export_bench) -->\n\n"
      "## Ahead-of-time export: artifact against the JIT\n\n"
      "`build/bench/export_bench --markdown docs/performance.md` on {} ({}), JIT target {}. "
      "The default sliding-window model (embed 1024, window 60, 4 heads of 64, 2 layers), "
      "exported for the host as `libNAME.so` (`jit::export_library`, parameters baked in); "
      "both sides on the same thread count (the JIT's `Options::threads`, the artifact's "
      "`NAME_set_threads`). Cold start: a fresh process's `dlopen` of the library + its first "
      "run on one thread (median of 5 processes), against the "
      "JIT's compile from scratch (no disk cache) in this process. Run time: median of {} "
      "alternating rounds (JIT, then artifact; 200 calls per round at batch 1, 10 at batch "
      "32); the ratio is the median of the per-round ratios.\n\n"
      "| batch | threads | code | weights | libNAME.so | cold start (dlopen + 1st run) | JIT "
      "compile | JIT run | artifact run | artifact / JIT | outputs equal |\n"
      "|---|---|---|---|---|---|---|---|---|---|---|\n",
      u.nodename, u.machine, jit::host_target().describe(), rounds);
  for (const Row& r : rows)
    s += fmt::format(
        "| {} | {} | {:.1f} KiB | {:.2f} MiB | {:.2f} MiB | {:.2f} ms | {:.2f} s | "
        "{:.3f} ms | {:.3f} ms | {:.3f} | {} |\n",
        r.batch, r.threads, r.result.code_bytes / 1024.0, r.result.weight_bytes / 1048576.0,
        r.so_bytes / 1048576.0, r.cold_us / 1e3, r.jit_compile_s, r.jit_ms, r.artifact_ms, r.ratio,
        r.identical ? "bit for bit" : "NO");
  s += "\nWeights are the baked parameters and graph constants (section "
       "`.rodata.edifice_weights` of the object); code is its `.text`.\n\n"
       "<!-- export_bench: end -->";
  return s;
}

void replace_block(const std::string& path, const std::string& block) {
  std::ifstream in(path);
  std::string text((std::istreambuf_iterator<char>(in)), {});
  const auto begin = text.find("<!-- export_bench: begin");
  const std::string end_marker = "<!-- export_bench: end -->";
  const auto end = text.find(end_marker);
  if (begin != std::string::npos && end != std::string::npos)
    text.replace(begin, end + end_marker.size() - begin, block);
  else
    text += "\n" + block + "\n";
  std::ofstream(path) << text;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 7 && std::string(argv[1]) == "--cold-start")
    return cold_start(argv[2], argv[3], std::stoull(argv[4]), std::stoull(argv[5]),
                      std::stoull(argv[6]));
  int rounds = 15;
  std::string markdown_path;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::string(argv[i]) == "--rounds") rounds = std::atoi(argv[i + 1]);
    if (std::string(argv[i]) == "--markdown") markdown_path = argv[i + 1];
  }
  const fs::path dir = fs::temp_directory_path() / ("export_bench_" + std::to_string(getpid()));
  fs::create_directories(dir);
  std::vector<Row> rows;
  for (int threads : {1, 2})
    for (std::int64_t batch : {1, 32}) rows.push_back(measure(batch, threads, rounds, dir));
  fs::remove_all(dir);
  const std::string block = markdown(rows, rounds);
  std::puts(block.c_str());
  if (!markdown_path.empty()) replace_block(markdown_path, block);
  return 0;
}
