#pragma once
// The LLVM side of ahead-of-time export (codegen/export_codegen.cpp), behind an interface free
// of LLVM types: the export target, the artifact's driver compiled with the plan's kernels,
// facts about the object, and static archives. export.cpp drives it.

#include "plan.hpp"

#include <edifice/jit/export.hpp>
#include <edifice/jit/target.hpp>

#include <string>
#include <vector>

namespace edifice::jit {

/// Where the driver finds each graph input of the plan.
struct ArtifactInput {
  enum class Source {
    input,  ///< inputs[index] of NAME_run
    param,  ///< params[index] of NAME_run_params
    baked,  ///< `value`, compiled in as read-only data
  } source = Source::input;
  int index = 0;
  const Tensor* value = nullptr;
};

/// The C interface the driver implements.
struct ArtifactInterface {
  std::string name;                         ///< C prefix of every symbol
  std::vector<ArtifactInput> graph_inputs;  ///< one per input of the plan's graph
  int num_inputs = 0, num_params = 0;
  bool runtime_params = false;
};

/// Error codes of NAME_run (the header names them NAME_OK, NAME_ERROR_CPU, ...).
enum ArtifactError : int {
  kArtifactOk = 0,
  kArtifactCpuUnsupported = 1,
  kArtifactBadPointer = 2,
  kArtifactDivisionByZero = 3,
  kArtifactIndexOutOfRange = 4,
};

/// The Target for a user's triple, CPU and features (empty fields: the host's; all empty:
/// host_target() itself), for an object linked by a system linker. Throws edifice::Error for an
/// unknown triple, CPU or feature, naming what is accepted.
Target resolve_export_target(const ExportTarget& target);

/// The CPU features the artifact checks at first call, in check order: those of `target` (CPU
/// and features) that the check can test (cpuid/xgetbv on x86-64, AT_HWCAP on aarch64).
std::vector<std::string> checked_cpu_features(const Target& target);

/// The plan's kernels (named as in the plan) and the driver, optimised for `target`, as one
/// relocatable object.
std::string compile_artifact(const Plan& plan, const ArtifactInterface& interface,
                             const Target& target);

struct ObjectFacts {
  std::int64_t code_bytes = 0;    ///< executable sections
  std::int64_t weight_bytes = 0;  ///< the baked data section
  std::vector<std::string> undefined_symbols;
};
ObjectFacts inspect_object(const std::string& object);

/// Writes an archive (with a symbol index) holding `object` as `member`.
void write_archive(const std::string& path, const std::string& object, const std::string& member);

/// The section holding baked parameters and constants.
inline constexpr const char* kWeightSection = ".rodata.edifice_weights";

}  // namespace edifice::jit
