#pragma once
/// \file
/// Ahead-of-time export: a graph compiled into a self-contained artifact with a C interface,
/// for programs that cannot link LLVM or compile at start-up (a game, a robot, a service).
///
///   jit::ExportOptions options;
///   options.name = "policy";
///   options.out_dir = "deploy";
///   options.target = {.triple = "", .cpu = "x86-64-v3"};  // empty triple: the host's
///   jit::ExportResult r = jit::export_library(graph, params, {{1, 60, 1024}}, options);
///
/// writes deploy/policy.o (or libpolicy.a / libpolicy.so) and deploy/policy.h. The artifact
/// holds the same kernels jit::compile generates (for the host target its outputs equal the
/// JIT's bit for bit) and a driver:
///
///   int policy_run(const void* const* inputs, void* const* outputs, void* workspace);
///   int policy_run_params(const void* const* params, ...)   // with runtime_params
///   const char* policy_error_message(int code);
///   int policy_check_cpu(void);
///   void policy_set_threads(int n);                          // default 1
///
/// Graph inputs named in `params` are parameters: baked into the artifact as read-only data,
/// or (runtime_params) passed to every run, so one artifact serves retrained weights of the
/// same shapes. The other inputs are the artifact's inputs, in graph order. Every pointer
/// passed to a run (inputs, outputs, parameters, workspace) must be 64-byte aligned. On first
/// call the artifact checks that the CPU has the features it was built for and otherwise
/// returns an error code whose message names the missing feature. The artifact needs only the
/// C library (with pthreads) and libm: vector math is the generator's own.

#include <edifice/core/graph.hpp>
#include <edifice/core/tensor.hpp>
#include <edifice/jit/jit.hpp>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace edifice::jit {

/// The machine an artifact is built for. All empty: the host exactly as jit::compile sees it
/// (EDIFICE_ISA applies), so host artifacts reproduce the JIT bit for bit.
struct ExportTarget {
  /// LLVM triple ("x86_64-linux-gnu", "aarch64-linux-gnu"); empty: the host's.
  std::string triple;
  /// LLVM CPU name ("x86-64-v2", "x86-64-v3", "znver4", "neoverse-n1"); empty: the host CPU
  /// for the host triple, else "generic".
  std::string cpu;
  /// Extra LLVM features, comma separated ("+avx512f,-avx2"); may be empty.
  std::string features;
};

/// What export_library writes next to NAME.h.
enum class ExportFormat {
  object,          ///< NAME.o
  static_library,  ///< libNAME.a
  shared_library,  ///< libNAME.so (linked by `ExportOptions::linker`)
};

struct ExportOptions {
  /// The C prefix of every symbol and file name: a C identifier.
  std::string name = "model";
  /// Directory the files are written to (created if missing).
  std::string out_dir = ".";
  ExportFormat format = ExportFormat::object;
  ExportTarget target;
  /// Parameters are passed to every run (NAME_run_params) instead of being baked in;
  /// NAME.params.bin holds the given values in that order, raw, so programs can start from them.
  bool runtime_params = false;
  /// The C compiler driver that links libNAME.so: empty means "cc" for the host's
  /// architecture; other architectures need one named (e.g. "aarch64-linux-gnu-gcc").
  std::string linker;
  /// Lowering options (row pruning, projection absorption, attention kernels) as for
  /// jit::compile; threads, disk_cache and cache_dir are ignored.
  Options jit;
};

/// One input, output or parameter of the artifact.
struct ExportedTensor {
  std::string name;
  DType dtype = DType::f32;
  Shape shape;
  std::int64_t bytes = 0;
};

struct ExportResult {
  std::vector<std::string> files;  ///< paths written (artifact first, then the header, ...)
  std::vector<ExportedTensor> inputs, outputs, params;
  std::int64_t workspace_bytes = 0;
  std::int64_t code_bytes = 0;    ///< executable code (.text sections) of the object
  std::int64_t weight_bytes = 0;  ///< baked parameters and constants (read-only data)
  std::string triple, cpu;        ///< the target, resolved
  /// CPU features the artifact checks at first call (those of its CPU and features that the
  /// check knows; see docs/deploy.md).
  std::vector<std::string> required_features;
  /// Symbols the object leaves for the system to resolve (expf, memcpy, ...).
  std::vector<std::string> undefined_symbols;
};

/// Compiles `graph` for `input_shapes` (one per graph input not named in `params`, in graph
/// order; the batch extent is bound as by jit::compile) and writes the artifact and its header.
/// Throws edifice::Error for a name that is no C identifier, a parameter that is no graph input
/// or whose dtype or shape differs from it, a wrong number of input shapes, an unknown triple,
/// CPU or feature, or a failed link.
ExportResult export_library(const Graph& graph, const std::map<std::string, Tensor>& params,
                            const std::vector<Shape>& input_shapes, const ExportOptions& options);

}  // namespace edifice::jit
