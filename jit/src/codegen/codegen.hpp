#pragma once
// Code generation entry point, free of LLVM types: a plan in, a relocatable object out.

#include "../plan.hpp"

#include <edifice/jit/target.hpp>

#include <string>

namespace edifice::jit {

/// Emits one LLVM function per kernel of `plan` (named as the kernel), optimises the module
/// for `target` and returns the object file bytes. `name` labels dumps.
std::string compile_plan(const Plan& plan, const Target& target, const std::string& name);

}  // namespace edifice::jit
