#pragma once
/// \file
/// Reverse-mode automatic differentiation as a graph transformation: the result is more graph
/// (gradient nodes that reference the forward nodes), so gradients are run and compiled like
/// any other graph.

#include <edifice/core/graph.hpp>

#include <vector>

namespace edifice {

/// Vector-Jacobian product: the gradient of sum_i <cotangents[i], outputs[i]> with respect to
/// each of `wrt`. A value of `wrt` that the outputs do not depend on gets zeros. Cotangents
/// must match the outputs' types. Integer-typed values get no gradient (error if asked).
std::vector<Value> vjp(const std::vector<Value>& outputs, const std::vector<Value>& cotangents,
                       const std::vector<Value>& wrt);

/// Gradient of a scalar (rank-0, float) value with respect to `wrt`.
std::vector<Value> grad(const Value& scalar_output, const std::vector<Value>& wrt);

/// A graph computing the gradients of `graph`'s single scalar output with respect to the
/// graph inputs at positions `wrt` (its inputs are those of `graph`). With
/// `keep_outputs` the original output comes first.
Graph grad(const Graph& graph, const std::vector<int>& wrt, bool keep_outputs = false);

}  // namespace edifice
