#pragma once
// Code generation entry point, free of LLVM types: a plan in, a relocatable object out.

#include "../plan.hpp"

#include <edifice/jit/target.hpp>

#include <functional>
#include <string>
#include <vector>

namespace llvm {
class Module;
}

namespace edifice::jit {

/// Emits one LLVM function per kernel of `plan` (named as the kernel), optimises it for
/// `target` and returns relocatable objects. Kernels are split into up to `parts` modules
/// compiled concurrently on their own threads (LLVM contexts are per thread), balanced by
/// estimated code size. `name` labels dumps. `extend`, when given, adds code to the first
/// module before it is optimised (ahead-of-time export adds its driver there).
std::vector<std::string> compile_plan(const Plan& plan, const Target& target,
                                      const std::string& name, int parts,
                                      const std::function<void(llvm::Module&)>& extend = {});

}  // namespace edifice::jit
