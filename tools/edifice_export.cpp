// edifice-export: ahead-of-time export of a registry model with trained parameters, so that
// deploying a model needs no C++ (see --help and the README's "Deploy a trained model").
#include <edifice/core/error.hpp>
#include <edifice/models/registry.hpp>
#include <edifice/nn/checkpoint.hpp>
#include <edifice/nn/export.hpp>
#include <edifice/nn/layers.hpp>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <sstream>
#include <string>

namespace {

using namespace edifice;

constexpr const char* kHelp =
    R"(usage: edifice-export --model SPEC (--params FILE | --init-seed N) --out DIR/NAME [options]

Compiles a registry model with its parameters into a self-contained artifact with a C header:
DIR/NAME.o (or DIR/libNAME.a, DIR/libNAME.so) and DIR/NAME.h. The artifact needs only the C
library and libm at run time; see the README section "Deploy a trained model".

  --model SPEC        architecture and options, e.g. "sliding_window embed_dim=1024 num_layers=2"
                      (architectures: attention, attention_sliding_window, attention_hybrid,
                      attention_hybrid_mlp; the "attention_" prefix may be left out). The option
                      head=N adds a dense layer of N outputs named "head" on top, as
                      examples/delayed_recall.cpp does.
  --params FILE       trained parameters: a parameter file (nn::save_params) or a training
                      checkpoint (Trainer::save_checkpoint; its "params/" entries)
  --init-seed N       instead of --params: the model's initial parameters from seed N
  --batch N           batch size the artifact is compiled for (default 1)
  --seq-len N         sequence length (default: the model's)
  --out DIR/NAME      output directory and artifact name (a C identifier)
  --format o|a|so     object (default), static library or shared library
  --target TRIPLE     LLVM triple, e.g. x86_64-linux-gnu, aarch64-linux-gnu (default: host)
  --cpu CPU           LLVM CPU, e.g. x86-64-v2, x86-64-v3, znver4, neoverse-n1 (default: the
                      host CPU for the host's architecture, else generic)
  --features LIST     extra LLVM features, e.g. +avx512f,-avx2
  --runtime-params    parameters passed to NAME_run_params instead of built in (writes
                      DIR/NAME.params.bin with the given values)
  --linker CC         C compiler driver that links libNAME.so for another architecture
  --help              this text
)";

struct Args {
  std::string model, params, out, target, cpu, features, linker, format = "o";
  std::int64_t batch = 1, seq_len = 0;
  std::optional<std::uint64_t> seed;
  bool runtime_params = false;
};

std::int64_t parse_int(const std::string& flag, const std::string& v) {
  try {
    std::size_t used = 0;
    long long n = std::stoll(v, &used);
    if (used == v.size() && n >= 0) return n;
  } catch (...) {
  }
  fail("edifice-export: {} takes a non-negative integer, not \"{}\"", flag, v);
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      std::fputs(kHelp, stdout);
      std::exit(0);
    }
    if (flag == "--runtime-params") {
      a.runtime_params = true;
      continue;
    }
    if (i + 1 >= argc) fail("edifice-export: {} needs a value (see --help)", flag);
    const std::string v = argv[++i];
    if (flag == "--model")
      a.model = v;
    else if (flag == "--params")
      a.params = v;
    else if (flag == "--init-seed")
      a.seed = static_cast<std::uint64_t>(parse_int(flag, v));
    else if (flag == "--batch")
      a.batch = parse_int(flag, v);
    else if (flag == "--seq-len")
      a.seq_len = parse_int(flag, v);
    else if (flag == "--out")
      a.out = v;
    else if (flag == "--format")
      a.format = v;
    else if (flag == "--target")
      a.target = v;
    else if (flag == "--cpu")
      a.cpu = v;
    else if (flag == "--features")
      a.features = v;
    else if (flag == "--linker")
      a.linker = v;
    else
      fail("edifice-export: unknown option {} (see --help)", flag);
  }
  if (a.model.empty()) fail("edifice-export: --model is required (see --help)");
  if (a.out.empty()) fail("edifice-export: --out is required (see --help)");
  if (a.params.empty() == !a.seed.has_value())
    fail("edifice-export: give exactly one of --params FILE and --init-seed N");
  if (a.batch < 1) fail("edifice-export: --batch must be at least 1");
  return a;
}

// "sliding_window embed_dim=1024 num_layers=2" -> architecture and options (head=N included).
std::pair<std::string, models::Config> parse_spec(const std::string& spec) {
  std::istringstream in(spec);
  std::string arch, item;
  in >> arch;
  models::Config config;
  while (in >> item) {
    auto eq = item.find('=');
    if (eq == std::string::npos || eq == 0)
      fail("edifice-export: model option \"{}\" is not key=value", item);
    config[item.substr(0, eq)] = item.substr(eq + 1);
  }
  const auto known = models::list_architectures();
  if (std::find(known.begin(), known.end(), arch) == known.end() &&
      std::find(known.begin(), known.end(), "attention_" + arch) != known.end())
    arch = "attention_" + arch;
  return {arch, config};
}

jit::ExportFormat parse_format(const std::string& f) {
  if (f == "o") return jit::ExportFormat::object;
  if (f == "a") return jit::ExportFormat::static_library;
  if (f == "so") return jit::ExportFormat::shared_library;
  fail("edifice-export: --format takes o, a or so, not \"{}\"", f);
}

int run(int argc, char** argv) {
  const Args a = parse(argc, argv);
  auto [arch, config] = parse_spec(a.model);
  std::int64_t head = 0;
  if (auto it = config.find("head"); it != config.end()) {
    head = parse_int("head=", it->second);
    config.erase(it);
  }
  const models::multi_head::Built built = models::build(arch, config);
  const nn::Model model(head > 0 ? nn::dense(built.output, head, {.name = "head"}) : built.output);
  const nn::Params params = a.seed ? model.init(*a.seed) : nn::load_params(a.params, model);
  Shape input = built.input.shape();
  input[0] = a.batch;
  if (a.seq_len > 0) input[1] = a.seq_len;
  if (std::find(input.begin(), input.end(), kDynamic) != input.end())
    fail(
        "edifice-export: the model's input {} has a dynamic extent besides the batch: give "
        "--seq-len",
        shape_to_string(built.input.shape()));

  jit::ExportOptions options;
  const std::filesystem::path out(a.out);
  options.name = out.filename().string();
  options.out_dir = out.has_parent_path() ? out.parent_path().string() : ".";
  options.format = parse_format(a.format);
  options.target = {a.target, a.cpu, a.features};
  options.runtime_params = a.runtime_params;
  options.linker = a.linker;
  const jit::ExportResult r = nn::export_model(model, params, {input}, options);
  std::printf(
      "exported %s for %s (cpu %s): input %s, code %lld bytes, weights %lld bytes, "
      "workspace %lld bytes\n",
      options.name.c_str(), r.triple.c_str(), r.cpu.c_str(), shape_to_string(input).c_str(),
      static_cast<long long>(r.code_bytes), static_cast<long long>(r.weight_bytes),
      static_cast<long long>(r.workspace_bytes));
  for (const std::string& f : r.files) std::printf("  wrote %s\n", f.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
}
