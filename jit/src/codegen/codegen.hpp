#pragma once
// Code generation entry point, free of LLVM types: a plan in, a relocatable object out.

#include "../plan.hpp"

#include <edifice/jit/target.hpp>

#include <string>
#include <vector>

namespace edifice::jit {

/// Emits one LLVM function per kernel of `plan` (named as the kernel), optimises it for
/// `target` and returns relocatable objects. Kernels are split into up to `parts` modules
/// compiled concurrently on their own threads (LLVM contexts are per thread), balanced by
/// estimated code size. `name` labels dumps.
std::vector<std::string> compile_plan(const Plan& plan, const Target& target,
                                      const std::string& name, int parts);

}  // namespace edifice::jit
