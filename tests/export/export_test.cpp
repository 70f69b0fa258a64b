// Ahead-of-time export (jit/export.hpp, nn/export.hpp, tools/edifice_export.cpp): artifacts
// of the sliding-window and hybrid models are linked into the C program examples/deploy/deploy.c
// with gcc (the artifact, -lm, -lpthread only) and their outputs compared with the JIT's:
// bit for bit for the host target, within 1e-5 relative for x86-64-v2 and for aarch64 under
// qemu. Also: the CPU check (a feature the host lacks gives the documented error, no SIGILL),
// run-time parameters, the .a and .so formats, the header from C++, the command-line tool and
// the errors of bad requests.
#include "test_util.hpp"

#include <edifice/jit/export.hpp>
#include <edifice/jit/target.hpp>
#include <edifice/models/multi_head.hpp>
#include <edifice/nn/export.hpp>
#include <edifice/nn/safetensors.hpp>

#include <sys/wait.h>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

namespace {

using namespace edifice;
using edifice::test::contains;
using edifice::test::error_of;
namespace fs = std::filesystem;
namespace mh = models::multi_head;

struct Shell {
  int status = 0;
  std::string output;
};

// Runs `command` with sh, stdout and stderr captured.
Shell shell(const std::string& command) {
  Shell r;
  FILE* p = popen((command + " 2>&1").c_str(), "r");
  REQUIRE(p != nullptr);
  char buffer[4096];
  while (std::size_t n = std::fread(buffer, 1, sizeof buffer, p)) r.output.append(buffer, n);
  const int raw = pclose(p);
  r.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : 128 + WTERMSIG(raw);
  return r;
}

bool have(const std::string& program) {
  return shell("command -v " + program).status == 0;
}

fs::path fresh_dir(const std::string& name) {
  fs::path dir =
      fs::temp_directory_path() / ("edifice_export_test_" + std::to_string(getpid())) / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

struct Model {
  nn::Model model;
  nn::Params params;
  Shape input;
};

Model sliding_window(std::int64_t embed, std::int64_t batch) {
  mh::Built b = mh::build_sliding_window({.embed_dim = embed});
  nn::Model m(b.output);
  Shape input = b.input.shape();
  input[0] = batch;
  return {m, m.init(7), input};
}

Model hybrid(std::int64_t embed, std::int64_t batch) {
  mh::Built b = mh::build_hybrid({.embed_dim = embed, .lstm_hidden = 32, .seq_len = 12});
  nn::Model m(b.output);
  Shape input = b.input.shape();
  input[0] = batch;
  return {m, m.init(11), input};
}

Tensor jit_output(const Model& m, const Tensor& x, const nn::Params& params) {
  return m.model.predict_all(params, {x}, nn::Mode::inference, 0, {})[0];
}

void write_raw(const fs::path& path, const std::vector<const Tensor*>& tensors, bool pad64) {
  std::ofstream out(path, std::ios::binary);
  for (const Tensor* t : tensors) {
    out.write(static_cast<const char*>(t->raw_data()), static_cast<std::streamsize>(t->nbytes()));
    if (pad64)
      for (std::size_t i = t->nbytes(); i % 64; ++i) out.put('\0');
  }
}

Tensor read_f32(const fs::path& path, const Shape& shape) {
  Tensor t(DType::f32, shape);
  std::ifstream in(path, std::ios::binary);
  in.read(static_cast<char*>(t.raw_data()), static_cast<std::streamsize>(t.nbytes()));
  REQUIRE(in.gcount() == static_cast<std::streamsize>(t.nbytes()));
  return t;
}

// Whether the object calls glibc's libmvec (it must not: vector math is the generator's own).
bool needs_libmvec(const jit::ExportResult& r) {
  for (const auto& s : r.undefined_symbols)
    if (s.rfind("_ZGV", 0) == 0) return true;
  return false;
}

// deploy.c linked with the artifact: gcc, the artifact, -lm, -lpthread.
fs::path build_program(const jit::ExportResult& r, const std::string& name, const fs::path& dir,
                       const std::string& cc = "gcc", const std::string& link = "") {
  const fs::path exe = dir / (name + "_deploy");
  std::string artifact = link.empty() ? r.files.at(0) : link;
  CHECK(!needs_libmvec(r));
  const Shell s = shell(fmt::format(
      "{} -std=c11 -O2 -Wall -Wextra -Werror -I{} -DMODEL_HEADER='\"{}.h\"' -DMODEL={} {} {} -o "
      "{} -lm -lpthread",
      cc, dir.string(), name, name, EDF_DEPLOY_C, artifact, exe.string()));
  INFO(s.output);
  REQUIRE(s.status == 0);
  return exe;
}

// Runs the program on `x` (and params), returns its output.
Tensor run_program(const std::string& runner, const fs::path& exe, const Tensor& x,
                   const Shape& out_shape, const std::string& extra = "") {
  const fs::path dir = exe.parent_path();
  write_raw(dir / "inputs.bin", {&x}, false);
  const Shell s =
      shell(fmt::format("{} {} {} {} {}", runner, exe.string(), (dir / "inputs.bin").string(),
                        (dir / "outputs.bin").string(), extra));
  INFO(s.output);
  REQUIRE(s.status == 0);
  return read_f32(dir / "outputs.bin", out_shape);
}

bool bit_identical(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && std::memcmp(a.raw_data(), b.raw_data(), a.nbytes()) == 0;
}

// max |a - b| over max |b|.
double relative_difference(const Tensor& a, const Tensor& b) {
  double scale = 0;
  for (std::int64_t i = 0; i < b.numel(); ++i)
    scale = std::max(scale, std::abs(b.get_as_double(i)));
  return edifice::test::max_abs_diff(a, b) / std::max(scale, 1e-30);
}

jit::ExportOptions options_for(const std::string& name, const fs::path& dir) {
  jit::ExportOptions o;
  o.name = name;
  o.out_dir = dir.string();
  return o;
}

// Exports `m`, links deploy.c and compares with the JIT on a random input.
void check_host_bit_identical(const Model& m, const std::string& name,
                              jit::ExportFormat format = jit::ExportFormat::object) {
  const fs::path dir = fresh_dir(name);
  jit::ExportOptions o = options_for(name, dir);
  o.format = format;
  const jit::ExportResult r = nn::export_model(m.model, m.params, {m.input}, o);
  std::string link;
  if (format == jit::ExportFormat::shared_library)
    link = fmt::format("-L{} -l{} -Wl,-rpath,{}", dir.string(), name, dir.string());
  const fs::path exe = build_program(r, name, dir, "gcc", link);
  const Tensor x = edifice::test::random_tensor(DType::f32, m.input, 3);
  const Tensor want = jit_output(m, x, m.params);
  const Tensor got = run_program("", exe, x, want.shape());
  CHECK(bit_identical(got, want));
  // The artifact's thread pool splits kernels differently; the outputs stay the same.
  const Tensor threaded = run_program("", exe, x, want.shape(), "--threads 3 --repeat 3");
  CHECK(bit_identical(threaded, want));
}

TEST_CASE("export: the default sliding-window model reproduces the JIT bit for bit",
          "[export][host]") {
  // The default shapes (embed 1024, window 60, 4 heads of 64, 2 layers), batch 1 and 32.
  check_host_bit_identical(sliding_window(1024, 1), "sliding_b1");
  check_host_bit_identical(sliding_window(1024, 32), "sliding_b32");
}

TEST_CASE("export: the hybrid model reproduces the JIT bit for bit, as .a and .so",
          "[export][host]") {
  check_host_bit_identical(hybrid(24, 3), "hybrid_o");
  check_host_bit_identical(hybrid(24, 3), "hybrid_a", jit::ExportFormat::static_library);
  check_host_bit_identical(sliding_window(32, 2), "sliding_so", jit::ExportFormat::shared_library);
}

TEST_CASE("export: x86-64-v2 (SSE only) agrees within 1e-5 and needs no libmvec",
          "[export][x86-64-v2]") {
  if (jit::host_target().triple.rfind("x86_64", 0) != 0) return;
  for (const auto& [name, m] :
       {std::pair{"v2_sliding", sliding_window(64, 4)}, std::pair{"v2_hybrid", hybrid(24, 3)}}) {
    const fs::path dir = fresh_dir(name);
    jit::ExportOptions o = options_for(name, dir);
    o.target.cpu = "x86-64-v2";
    const jit::ExportResult r = nn::export_model(m.model, m.params, {m.input}, o);
    CHECK(r.cpu == "x86-64-v2");
    CHECK(!needs_libmvec(r));
    CHECK(std::find(r.required_features.begin(), r.required_features.end(), "avx") ==
          r.required_features.end());
    CHECK(std::find(r.required_features.begin(), r.required_features.end(), "sse4.2") !=
          r.required_features.end());
    const fs::path exe = build_program(r, name, dir);
    const Tensor x = edifice::test::random_tensor(DType::f32, m.input, 5);
    const Tensor want = jit_output(m, x, m.params);
    const double rel = relative_difference(run_program("", exe, x, want.shape()), want);
    INFO(name << ": relative difference " << rel);
    CHECK(rel <= 1e-5);
  }
}

TEST_CASE("export: an aarch64 artifact (neoverse-n1) runs under qemu and agrees within 1e-5",
          "[.aarch64]") {
  if (!have("aarch64-linux-gnu-gcc") || !have("qemu-aarch64")) {
    std::puts(
        "SKIP: the aarch64 cross toolchain is absent (apt-get install gcc-aarch64-linux-gnu "
        "libc6-dev-arm64-cross qemu-user)");
    std::exit(77);
  }
  for (const auto& [name, m] :
       {std::pair{"arm_sliding", sliding_window(64, 4)}, std::pair{"arm_hybrid", hybrid(24, 3)}}) {
    const fs::path dir = fresh_dir(name);
    jit::ExportOptions o = options_for(name, dir);
    o.target = {"aarch64-linux-gnu", "neoverse-n1", ""};
    const jit::ExportResult r = nn::export_model(m.model, m.params, {m.input}, o);
    CHECK(!needs_libmvec(r));
    CHECK(std::find(r.required_features.begin(), r.required_features.end(), "neon") !=
          r.required_features.end());
    const fs::path exe = build_program(r, name, dir, "aarch64-linux-gnu-gcc");
    const Tensor x = edifice::test::random_tensor(DType::f32, m.input, 9);
    const Tensor want = jit_output(m, x, m.params);
    const Tensor got = run_program("qemu-aarch64 -L /usr/aarch64-linux-gnu", exe, x, want.shape());
    const double rel = relative_difference(got, want);
    INFO(name << ": relative difference " << rel);
    CHECK(rel <= 1e-5);
    // The pool on aarch64 (pthread types of other sizes): the same outputs on 2 threads.
    CHECK(bit_identical(
        run_program("qemu-aarch64 -L /usr/aarch64-linux-gnu", exe, x, want.shape(), "--threads 2"),
        got));
  }
}

TEST_CASE("export: built for a feature the CPU lacks, the artifact returns the documented error",
          "[export][cpu-check]") {
  if (jit::host_target().triple.rfind("x86_64", 0) != 0) return;
  // The first of these that the host lacks.
  std::string missing;
  for (const char* f : {"avx512f", "avx512fp16", "amx-fp16", "avx512vp2intersect"})
    if (contains("," + jit::host_target().features + ",", fmt::format(",-{},", f))) {
      missing = f;
      break;
    }
  REQUIRE(!missing.empty());
  const Model m = sliding_window(32, 2);
  const fs::path dir = fresh_dir("cpu_check");
  jit::ExportOptions o = options_for("cpu_check", dir);
  o.target.features = "+" + missing;
  const jit::ExportResult r = nn::export_model(m.model, m.params, {m.input}, o);
  const fs::path exe = build_program(r, "cpu_check", dir);
  write_raw(dir / "inputs.bin", {}, false);
  const Tensor x = edifice::test::random_tensor(DType::f32, m.input, 1);
  write_raw(dir / "inputs.bin", {&x}, false);
  const Shell s = shell(fmt::format("{} {} {}", exe.string(), (dir / "inputs.bin").string(),
                                    (dir / "outputs.bin").string()));
  INFO(s.output);
  CHECK(s.status == 2);  // deploy.c: the artifact returned an error (no SIGILL: 132)
  CHECK(contains(s.output, "error 1: edifice artifact cpu_check was built for " + r.triple +
                               " (cpu " + r.cpu + "; checks "));
  CHECK(contains(s.output, "; this CPU lacks " + missing + "\n"));
}

TEST_CASE("export: run-time parameters follow the weights passed to each run", "[export][params]") {
  const Model m = hybrid(24, 2);
  const fs::path dir = fresh_dir("runtime");
  jit::ExportOptions o = options_for("runtime", dir);
  o.runtime_params = true;
  const jit::ExportResult r = nn::export_model(m.model, m.params, {m.input}, o);
  REQUIRE(r.params.size() == m.params.size());
  CHECK(r.weight_bytes < 4096);  // nothing of the parameters is baked in
  const fs::path exe = build_program(r, "runtime", dir);
  const Tensor x = edifice::test::random_tensor(DType::f32, m.input, 2);
  // The exported values (NAME.params.bin), then retrained ones of the same shapes.
  const Tensor want = jit_output(m, x, m.params);
  const Tensor got =
      run_program("", exe, x, want.shape(), "--params " + (dir / "runtime.params.bin").string());
  CHECK(bit_identical(got, want));
  nn::Params other = m.model.init(99);
  std::vector<const Tensor*> ordered;
  for (const auto& p : r.params) ordered.push_back(&other.at(p.name));
  write_raw(dir / "other.bin", ordered, true);
  const Tensor want_other = jit_output(m, x, other);
  const Tensor got_other =
      run_program("", exe, x, want.shape(), "--params " + (dir / "other.bin").string());
  CHECK(bit_identical(got_other, want_other));
  CHECK(!bit_identical(got_other, got));
}

TEST_CASE("export: the header compiles as C++ and the artifact links from C++", "[export][host]") {
  const Model m = sliding_window(16, 1);
  const fs::path dir = fresh_dir("cxx");
  const jit::ExportResult r =
      nn::export_model(m.model, m.params, {m.input}, options_for("cxx", dir));
  std::ofstream(dir / "main.cpp") << R"(#include "cxx.h"
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>
int main() {
  static_assert(CXX_NUM_INPUTS == 1 && CXX_NUM_OUTPUTS == 1, "counts");
  const std::int64_t shape[] = CXX_INPUT_0_SHAPE;
  std::vector<void*> buffers;
  for (std::size_t bytes : {CXX_INPUT_0_BYTES, CXX_OUTPUT_0_BYTES, CXX_WORKSPACE_BYTES + 64})
    buffers.push_back(std::aligned_alloc(64, (bytes + 63) / 64 * 64));
  const void* inputs[] = {buffers[0]};
  void* outputs[] = {buffers[1]};
  std::printf("%d %s\n", cxx_run(inputs, outputs, buffers[2]), cxx_error_message(CXX_OK));
  // A misaligned workspace is refused.
  int code = cxx_run(inputs, outputs, static_cast<char*>(buffers[2]) + 1);
  std::printf("%d %s %lld\n", code, cxx_error_message(code), static_cast<long long>(shape[2]));
}
)";
  CHECK(!needs_libmvec(r));
  const Shell build = shell(
      fmt::format("g++ -std=c++17 -Wall -Wextra -Werror -I{0} {0}/main.cpp {1} -o {0}/cxx -lm",
                  dir.string(), r.files.at(0)));
  INFO(build.output);
  REQUIRE(build.status == 0);
  const Shell run = shell((dir / "cxx").string());
  CHECK(run.output ==
        "0 ok\n2 cxx: an input, output, parameter or the workspace pointer is NULL or not "
        "64-byte aligned (allocate with aligned_alloc(64, ...)) 16\n");
}

TEST_CASE("export: bad requests are clear errors", "[export][errors]") {
  const Model m = sliding_window(16, 1);
  const fs::path dir = fresh_dir("errors");
  auto attempt = [&](jit::ExportOptions o, nn::Params params, std::vector<Shape> shapes) {
    return error_of([&] { nn::export_model(m.model, params, shapes, o); });
  };
  jit::ExportOptions o = options_for("errors", dir);
  jit::ExportOptions bad = o;
  bad.name = "3d-model";
  CHECK(attempt(bad, m.params, {m.input}) ==
        "export: name \"3d-model\" is not a C identifier (letters, digits, _)");
  bad = o;
  bad.target.triple = "sparc64-linux-gnu";
  CHECK(attempt(bad, m.params, {m.input}) ==
        "export: unknown or unsupported target triple \"sparc64-linux-gnu\" (supported: "
        "x86_64-linux-gnu, aarch64-linux-gnu)");
  bad = o;
  bad.target.cpu = "znver99";
  CHECK(contains(attempt(bad, m.params, {m.input}), "export: unknown CPU \"znver99\" for "));
  CHECK(contains(attempt(bad, m.params, {m.input}), "; LLVM knows: "));
  bad = o;
  bad.target.features = "+avx9000";
  CHECK(contains(attempt(bad, m.params, {m.input}), "export: unknown feature \"+avx9000\" for "));
  bad = o;
  bad.target = {"aarch64-linux-gnu", "", ""};
  bad.format = jit::ExportFormat::shared_library;
  CHECK(attempt(bad, m.params, {m.input}) ==
        "export: a shared library for aarch64-unknown-linux-gnu needs a linker for it: set "
        "ExportOptions::linker (--linker), e.g. aarch64-linux-gnu-gcc");
  CHECK(attempt(o, m.params, {m.input, m.input}) ==
        "export: 2 input shapes given, the model has 1 inputs (state_sequence)");

  // Parameters: missing and mismatched at the model level, then at the graph level.
  nn::Params missing = m.params;
  missing.erase(missing.begin());
  CHECK(contains(attempt(o, missing, {m.input}),
                 "export: parameters do not match the model (1 problems):"));
  const nn::TracedModel traced = m.model.trace(nn::Mode::inference);
  nn::Params wrong = m.params;
  const std::string first = wrong.begin()->first;
  wrong[first] = Tensor(DType::f32, {3});
  CHECK(error_of([&] { jit::export_library(traced.graph, wrong, {m.input}, o); }) ==
        fmt::format("export: parameter \"{}\" is f32[3], the graph takes {}", first,
                    m.params.at(first).dtype() == DType::f32
                        ? "f32" + shape_to_string(m.params.at(first).shape())
                        : ""));
  nn::Params extra = m.params;
  extra["no_such_param"] = Tensor(DType::f32, {1});
  CHECK(error_of([&] { jit::export_library(traced.graph, extra, {m.input}, o); }) ==
        "export: parameter \"no_such_param\" is not an input of the graph");
  CHECK(error_of([&] { jit::export_library(traced.graph, m.params, {}, o); }) ==
        "export: 0 input shapes given, the graph has 1 inputs besides its parameters "
        "(state_sequence)");
}

TEST_CASE("export: edifice-export exports a trained parameter file", "[export][cli]") {
  const fs::path dir = fresh_dir("cli");
  const Model m = sliding_window(48, 2);
  nn::save_safetensors((dir / "params.safetensors").string(), m.params);
  const Shell help = shell(std::string(EDF_EXPORT_TOOL) + " --help");
  CHECK(help.status == 0);
  CHECK(contains(help.output, "usage: edifice-export --model SPEC"));
  const Shell bad =
      shell(std::string(EDF_EXPORT_TOOL) + " --model sliding_window --out x --batch 2");
  CHECK(bad.status == 1);
  CHECK(bad.output == "edifice-export: give exactly one of --params FILE and --init-seed N\n");
  const Shell s = shell(fmt::format(
      "{} --model 'sliding_window embed_dim=48' --params {} --batch 2 --out {}/clim --format a",
      EDF_EXPORT_TOOL, (dir / "params.safetensors").string(), dir.string()));
  INFO(s.output);
  REQUIRE(s.status == 0);
  CHECK(contains(s.output, "exported clim for "));
  jit::ExportResult r;
  r.files = {(dir / "libclim.a").string()};
  const fs::path exe = build_program(r, "clim", dir);
  const Tensor x = edifice::test::random_tensor(DType::f32, m.input, 4);
  const Tensor want = jit_output(m, x, m.params);
  CHECK(bit_identical(run_program("", exe, x, want.shape()), want));
}

}  // namespace
