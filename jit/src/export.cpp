// Ahead-of-time export: checks the request, lowers the graph with the JIT's own passes for the
// export target, compiles the kernels and the driver into one object (export_backend.hpp) and
// writes the artifact, its C header and, with run-time parameters, their initial values.
#include "export_backend.hpp"
#include "program.hpp"

#include <edifice/core/error.hpp>
#include <edifice/jit/export.hpp>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>

namespace edifice::jit {
namespace {

namespace fs = std::filesystem;

void check_name(const std::string& name) {
  const bool ok =
      !name.empty() && (std::isalpha(static_cast<unsigned char>(name[0])) || name[0] == '_') &&
      std::all_of(name.begin(), name.end(),
                  [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; });
  if (!ok) fail("export: name \"{}\" is not a C identifier (letters, digits, _)", name);
}

bool shape_fits(const Shape& declared, const Shape& given) {
  if (declared.size() != given.size()) return false;
  for (std::size_t i = 0; i < declared.size(); ++i)
    if (declared[i] != kDynamic && declared[i] != given[i]) return false;
  return true;
}

ExportedTensor describe(const std::string& name, DType dtype, const Shape& shape) {
  return {name, dtype, shape, shape_numel(shape) * static_cast<std::int64_t>(dtype_size(dtype))};
}

// The graph inputs split into parameters and inputs, with every input's concrete shape.
struct Request {
  std::vector<Shape> shapes;  // per graph input
  ArtifactInterface interface;
  std::vector<const Tensor*> param_values;  // in params order
};

Request split_inputs(const Graph& graph, const std::map<std::string, Tensor>& params,
                     const std::vector<Shape>& input_shapes, const ExportOptions& options) {
  Request r;
  r.interface.name = options.name;
  r.interface.runtime_params = options.runtime_params;
  std::set<std::string> used;
  std::size_t next_shape = 0;
  std::vector<std::string> input_names;
  for (const Value& v : graph.inputs()) {
    const std::string& name = input_name(v);
    auto it = params.find(name);
    ArtifactInput in;
    if (it != params.end()) {
      const Tensor& t = it->second;
      if (t.dtype() != v.dtype() || !shape_fits(v.shape(), t.shape()))
        fail("export: parameter \"{}\" is {}{}, the graph takes {}", name, dtype_name(t.dtype()),
             shape_to_string(t.shape()), v.type().to_string());
      used.insert(name);
      r.shapes.push_back(t.shape());
      in.value = &t;
      if (options.runtime_params) {
        in.source = ArtifactInput::Source::param;
        in.index = r.interface.num_params++;
        r.param_values.push_back(&t);
      } else {
        in.source = ArtifactInput::Source::baked;
      }
    } else {
      input_names.push_back(name);
      if (next_shape < input_shapes.size()) r.shapes.push_back(input_shapes[next_shape]);
      ++next_shape;
      in.source = ArtifactInput::Source::input;
      in.index = r.interface.num_inputs++;
    }
    r.interface.graph_inputs.push_back(in);
  }
  for (const auto& [name, t] : params)
    if (!used.count(name)) fail("export: parameter \"{}\" is not an input of the graph", name);
  if (input_shapes.size() != next_shape)
    fail("export: {} input shapes given, the graph has {} inputs besides its parameters ({})",
         input_shapes.size(), next_shape, fmt::join(input_names, ", "));
  return r;
}

std::string c_type(DType d) {
  switch (d) {
    case DType::f32:
      return "float";
    case DType::f64:
      return "double";
    default:
      return std::string(dtype_name(d)) + "_t";
  }
}

std::string upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

// The tensors of one kind as macros (rank, shape, elements, bytes) and arrays over them.
std::string describe_tensors(const std::string& prefix, const char* kind,
                             const std::vector<ExportedTensor>& tensors) {
  std::string s;
  const std::string kind_upper = upper(kind);
  std::vector<std::string> names, bytes;
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const ExportedTensor& t = tensors[i];
    const std::string m = fmt::format("{}_{}_{}", upper(prefix), kind_upper, i);
    s += fmt::format("/* {} {}: \"{}\", {} {} */\n", kind, i, t.name, c_type(t.dtype),
                     shape_to_string(t.shape));
    s += fmt::format("#define {}_RANK {}\n", m, t.shape.size());
    s += fmt::format("#define {}_SHAPE {{{}}}\n", m, fmt::join(t.shape, ", "));
    s += fmt::format("#define {}_ELEMENTS ((size_t){})\n", m, shape_numel(t.shape));
    s += fmt::format("#define {}_BYTES ((size_t){})\n", m, t.bytes);
    names.push_back("\"" + t.name + "\"");
    bytes.push_back(fmt::format("{}", t.bytes));
  }
  // Never empty (C has no empty arrays): a placeholder when there are none.
  if (tensors.empty()) {
    names.push_back("NULL");
    bytes.push_back("0");
  }
  s += fmt::format("EDIFICE_ARTIFACT_UNUSED static const char* const {}_{}_names[] = {{{}}};\n",
                   prefix, kind, fmt::join(names, ", "));
  s += fmt::format("EDIFICE_ARTIFACT_UNUSED static const size_t {}_{}_bytes[] = {{{}}};\n", prefix,
                   kind, fmt::join(bytes, ", "));
  return s + "\n";
}

std::string header_text(const ExportOptions& o, const ExportResult& r) {
  const std::string& n = o.name;
  const std::string N = upper(n);
  std::string s = fmt::format(
      "/* {0}.h: the C interface of the edifice artifact {0}, generated by\n"
      " * edifice::jit::export_library (edifice-export). Do not edit.\n"
      " * Target: {1}, cpu {2}; checked at first call: {3}.\n"
      " * Link with: the artifact, -lm (and -lpthread before glibc 2.34).\n"
      " * Every pointer passed to {0}_run must be {0}_ALIGNMENT-byte aligned. */\n"
      "#ifndef {4}_EDIFICE_ARTIFACT_H\n#define {4}_EDIFICE_ARTIFACT_H\n\n"
      "#include <stddef.h>\n#include <stdint.h>\n\n"
      "#ifdef __cplusplus\nextern \"C\" {{\n#endif\n\n"
      "#ifndef EDIFICE_ARTIFACT_UNUSED\n#if defined(__GNUC__)\n"
      "#define EDIFICE_ARTIFACT_UNUSED __attribute__((unused))\n#else\n"
      "#define EDIFICE_ARTIFACT_UNUSED\n#endif\n#endif\n\n",
      n, r.triple, r.cpu,
      r.required_features.empty() ? "nothing"
                                  : fmt::format("{}", fmt::join(r.required_features, ",")),
      "", N);
  s += fmt::format(
      "/* Return codes of {0}_run; {0}_error_message(code) says more. */\n"
      "#define {1}_OK 0\n"
      "#define {1}_ERROR_CPU 1 /* the CPU lacks a feature the artifact was built for */\n"
      "#define {1}_ERROR_POINTER 2 /* a NULL or misaligned pointer */\n"
      "#define {1}_ERROR_DIVISION_BY_ZERO 3 /* integer division by zero in the graph */\n"
      "#define {1}_ERROR_INDEX 4 /* an index input out of range */\n\n"
      "#define {1}_NUM_INPUTS {2}\n#define {1}_NUM_OUTPUTS {3}\n#define {1}_NUM_PARAMS {4}\n"
      "#define {1}_WORKSPACE_BYTES ((size_t){5})\n#define {1}_ALIGNMENT 64\n\n",
      n, N, r.inputs.size(), r.outputs.size(), r.params.size(), r.workspace_bytes);
  s += fmt::format(
      "/* The same facts under the artifact's own prefix, for code generic over artifacts. */\n"
      "#define {0}_runtime_params {1}\n"
      "EDIFICE_ARTIFACT_UNUSED static const int {0}_num_inputs = {2};\n"
      "EDIFICE_ARTIFACT_UNUSED static const int {0}_num_outputs = {3};\n"
      "EDIFICE_ARTIFACT_UNUSED static const int {0}_num_params = {4};\n"
      "EDIFICE_ARTIFACT_UNUSED static const size_t {0}_workspace_bytes = {5};\n\n",
      n, o.runtime_params ? 1 : 0, r.inputs.size(), r.outputs.size(), r.params.size(),
      r.workspace_bytes);
  s += describe_tensors(n, "input", r.inputs);
  s += describe_tensors(n, "output", r.outputs);
  s += describe_tensors(n, "param", r.params);
  const std::string args = "const void* const* inputs, void* const* outputs, void* workspace);\n";
  if (o.runtime_params)
    s += fmt::format(
             "/* Runs the model: params[i] holds parameter i ({0}_PARAM_i_*; {0}.params.bin holds\n"
             " * the exported values in this order, each padded to a multiple of 64 bytes),\n"
             " * inputs[i] input i, outputs[i] receives output i; workspace holds\n"
             " * {1}_WORKSPACE_BYTES bytes (may be NULL when 0). Returns {1}_OK or an error code.\n"
             " * Reentrant: concurrent calls need their own workspace. */\n"
             "int {0}_run_params(const void* const* params, ",
             n, N) +
         args;
  else
    s += fmt::format(
             "/* Runs the model: inputs[i] holds input i, outputs[i] receives output i; workspace\n"
             " * holds {1}_WORKSPACE_BYTES bytes (may be NULL when 0). Returns {1}_OK or an error\n"
             " * code. Reentrant: concurrent calls need their own workspace. */\n"
             "int {0}_run(",
             n, N) +
         args;
  s += fmt::format(
      "/* Threads for later runs (default 1). With n > 1 a run starts the missing worker\n"
      " * threads (pthreads, kept for the process's life) and splits large kernels over them;\n"
      " * outputs are the same for every n. Runs with n > 1 take turns. */\n"
      "void {0}_set_threads(int n);\n"
      "/* A static description of an error code (the CPU message names the missing feature). */\n"
      "const char* {0}_error_message(int code);\n"
      "/* {1}_OK when this CPU has every feature the artifact was built for, else\n"
      " * {1}_ERROR_CPU. Runs once; {0}_run calls it. */\n"
      "int {0}_check_cpu(void);\n\n"
      "#ifdef __cplusplus\n}}\n#endif\n\n#endif\n",
      n, N);
  return s;
}

void write_file(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) fail("export: cannot write {}", path.string());
}

std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// libNAME.so from the object, linked by the target's C compiler driver.
bool same_architecture(const Target& a, const Target& b) {
  return a.triple.substr(0, a.triple.find('-')) == b.triple.substr(0, b.triple.find('-'));
}

// Checked before compiling: a shared library for another architecture needs its linker named.
void check_linker(const ExportOptions& o, const Target& target) {
  if (o.format == ExportFormat::shared_library && o.linker.empty() &&
      !same_architecture(target, host_target()))
    fail(
        "export: a shared library for {} needs a linker for it: set ExportOptions::linker "
        "(--linker), e.g. aarch64-linux-gnu-gcc",
        target.triple);
}

void link_shared(const ExportOptions& o, const fs::path& object, const fs::path& out) {
  const std::string linker = o.linker.empty() ? "cc" : o.linker;
  const fs::path log = out.string() + ".link.log";
  const std::string command =
      fmt::format("{} -shared -o {} {} -lm > {} 2>&1", quote(linker), quote(out.string()),
                  quote(object.string()), quote(log.string()));
  const int status = std::system(command.c_str());
  std::string output;
  {
    std::ifstream in(log);
    output.assign(std::istreambuf_iterator<char>(in), {});
  }
  fs::remove(log);
  if (status != 0) fail("export: linking {} failed: {}\n{}", out.string(), command, output);
}

}  // namespace

ExportResult export_library(const Graph& graph, const std::map<std::string, Tensor>& params,
                            const std::vector<Shape>& input_shapes, const ExportOptions& options) {
  check_name(options.name);
  Request request = split_inputs(graph, params, input_shapes, options);
  const Target target = resolve_export_target(options.target);
  check_linker(options, target);
  ExportResult result;
  result.triple = target.triple;
  result.cpu = target.cpu;
  std::string object;
  {
    // The JIT's passes and code generator, for the export target.
    CodegenTargetScope scope(target);
    Plan plan = plan_graph(graph, request.shapes, options.jit, [](const char*) {});
    // Kernel symbols carry the artifact's name, so that two artifacts link into one program.
    for (Kernel& k : plan.kernels) k.name = options.name + "_" + k.name;
    object = compile_artifact(plan, request.interface, target);
    result.workspace_bytes = plan.arena_bytes;
    const auto& graph_inputs = plan.graph.inputs();
    for (std::size_t i = 0; i < graph_inputs.size(); ++i) {
      const ArtifactInput& in = request.interface.graph_inputs[i];
      ExportedTensor t =
          describe(input_name(graph_inputs[i]), graph_inputs[i].dtype(), graph_inputs[i].shape());
      if (in.source == ArtifactInput::Source::input) result.inputs.push_back(t);
      if (in.source == ArtifactInput::Source::param) result.params.push_back(t);
    }
    for (std::size_t i = 0; i < plan.graph.outputs().size(); ++i) {
      const Value& v = plan.graph.outputs()[i];
      result.outputs.push_back(describe(fmt::format("output{}", i), v.dtype(), v.shape()));
    }
  }
  result.required_features = checked_cpu_features(target);
  const ObjectFacts facts = inspect_object(object);
  result.code_bytes = facts.code_bytes;
  result.weight_bytes = facts.weight_bytes;
  result.undefined_symbols = facts.undefined_symbols;

  const fs::path dir(options.out_dir);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) fail("export: cannot create {}: {}", dir.string(), ec.message());
  const std::string& n = options.name;
  switch (options.format) {
    case ExportFormat::object:
      result.files.push_back((dir / (n + ".o")).string());
      write_file(result.files.back(), object);
      break;
    case ExportFormat::static_library:
      result.files.push_back((dir / ("lib" + n + ".a")).string());
      write_archive(result.files.back(), object, n + ".o");
      break;
    case ExportFormat::shared_library: {
      result.files.push_back((dir / ("lib" + n + ".so")).string());
      const fs::path temporary = dir / (".edifice-export-" + n + ".o");
      write_file(temporary, object);
      try {
        link_shared(options, temporary, result.files.back());
      } catch (...) {
        fs::remove(temporary);
        throw;
      }
      fs::remove(temporary);
      break;
    }
  }
  result.files.push_back((dir / (n + ".h")).string());
  write_file(result.files.back(), header_text(options, result));
  if (options.runtime_params) {
    // The given values, in the order of NAME_run_params, each padded to 64 bytes.
    std::string blob;
    for (const Tensor* t : request.param_values) {
      blob.append(static_cast<const char*>(t->raw_data()), t->nbytes());
      blob.resize((blob.size() + 63) / 64 * 64, '\0');
    }
    result.files.push_back((dir / (n + ".params.bin")).string());
    write_file(result.files.back(), blob);
  }
  return result;
}

}  // namespace edifice::jit
