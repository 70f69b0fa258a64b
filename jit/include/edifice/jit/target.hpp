#pragma once
/// \file
/// The CPU the JIT generates code for: LLVM's host detection, cross-checked against CPUID and
/// the OS's saved register state (LLVM has reported AVX-512 on EPYC parts that lack it), and
/// capped by the environment variable EDIFICE_ISA=avx512|avx2|sse4.2|generic.

#include <string>
#include <vector>

namespace edifice::jit {

/// Instruction-set levels the code generator distinguishes, in increasing order.
enum class Isa { generic, sse42, avx2, avx512 };

std::string isa_name(Isa isa);

struct Target {
  std::string triple;    ///< e.g. "x86_64-pc-linux-gnu"
  std::string cpu;       ///< LLVM CPU name used for code generation
  std::string features;  ///< LLVM feature string, "+avx2,+fma,-avx512f,..."
  Isa isa = Isa::generic;
  int vector_bytes = 16;  ///< widest vector register used: 16, 32 or 64
  std::string host_cpu;   ///< the CPU name LLVM detected
  /// Features LLVM reported that CPUID or the OS did not confirm (and that were turned off).
  std::vector<std::string> corrections;
  /// True when EDIFICE_ISA lowered the level below what the host supports.
  bool capped = false;
  /// Code linked into this process by ORC (x86-64's large code model) rather than an object
  /// for a system linker (small code model, as ahead-of-time export emits).
  bool jit = true;

  int f32_lanes() const { return vector_bytes / 4; }
  /// "znver3 avx2 (8 x f32 lanes)"; lists corrections and the cap when present.
  std::string describe() const;
};

/// Detects the host once per process (reads EDIFICE_ISA then). Throws edifice::Error for an
/// unknown EDIFICE_ISA value.
const Target& host_target();

/// Detection with an explicit cap (empty = none), for tests.
Target detect_target(const std::string& isa_cap);

/// The target code is generated for on this thread: host_target(), unless a
/// CodegenTargetScope is active (ahead-of-time export lowers and compiles a graph for another
/// CPU: the GEMM tiling, the attention tiles and the LSTM vectors follow it).
const Target& codegen_target();

/// Makes `target` this thread's codegen_target() until destroyed (scopes nest).
class CodegenTargetScope {
 public:
  explicit CodegenTargetScope(const Target& target);
  ~CodegenTargetScope();
  CodegenTargetScope(const CodegenTargetScope&) = delete;
  CodegenTargetScope& operator=(const CodegenTargetScope&) = delete;

 private:
  const Target* previous_;
};

}  // namespace edifice::jit
