#pragma once
// The node-by-node graph rebuild the rewriting passes share.

#include <edifice/core/graph.hpp>

#include <functional>
#include <optional>
#include <vector>

namespace edifice::jit {

/// The values that replace node `n`'s outputs, given its (possibly rebuilt) inputs; nullopt
/// keeps the node (remade only if an input changed).
using NodeRewrite = std::function<std::optional<std::vector<Value>>(
    const Node& n, const std::vector<Value>& inputs)>;

/// Rebuilds `graph` in topological order: each node is replaced by rewrite(node, inputs) when
/// that gives values, and otherwise remade with the same op and attributes if any input
/// changed. New nodes are attributed to the replaced node's layer. Returns `graph` itself when
/// nothing changed.
Graph rewrite_nodes(const Graph& graph, const NodeRewrite& rewrite);

}  // namespace edifice::jit
