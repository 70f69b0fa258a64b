#pragma once
/// \file
/// The reference interpreter: evaluates any graph with plain loops, written to be obviously
/// correct rather than fast. It is the oracle every JIT kernel is tested against.

#include <edifice/core/graph.hpp>
#include <edifice/core/tensor.hpp>

#include <vector>

namespace edifice {

/// Runs `graph` on `inputs` (one tensor per graph input, matching dtype and shape; dynamic
/// extents are bound from them). Returns one tensor per output. Errors name the input at fault.
std::vector<Tensor> interpret(const Graph& graph, const std::vector<Tensor>& inputs);

}  // namespace edifice
