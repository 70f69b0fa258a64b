#pragma once
/// \file
/// The tools every graph-rewriting pass shares (autodiff, specialize, and the compiler's
/// passes): values as map keys, use and consumer maps, the node-by-node rebuild and a fixpoint
/// driver. Graphs are immutable; a rewrite makes new nodes for what changed and shares the rest.

#include <edifice/core/graph.hpp>

#include <functional>
#include <map>
#include <optional>
#include <utility>
#include <vector>

namespace edifice {

/// One output of one node, as a map key.
using ValueKey = std::pair<const Node*, int>;
inline ValueKey key_of(const Value& v) {
  return {&v.node(), v.index()};
}

/// How often each value is read: once per input slot of a node that reads it, plus once per
/// appearance among the graph's outputs.
using UseCounts = std::map<ValueKey, int>;
UseCounts count_uses(const Graph& graph);
/// The count of `v` (0 when nothing reads it).
int use_count(const UseCounts& uses, const Value& v);

/// The nodes that read each value, once per input slot, in topological order.
using Consumers = std::map<ValueKey, std::vector<const Node*>>;
Consumers consumers_of(const Graph& graph);

/// Enters the layer scope of `n` (if it has one), so that nodes made while `scope` lives are
/// attributed to the layer of the node they replace.
void enter_layer_of(std::optional<LayerScope>& scope, const Node& n);

/// The values that replace node `n`'s outputs, given its (possibly rebuilt) inputs; nullopt
/// keeps the node (remade only if an input changed).
using NodeRewrite = std::function<std::optional<std::vector<Value>>(
    const Node& n, const std::vector<Value>& inputs)>;

/// Rebuilds `graph` in topological order. Values in `replacements` are replaced wherever they
/// are read (inputs, node operands, outputs); then each node is replaced by
/// rewrite(node, inputs) when that gives values, and otherwise remade with the same op and
/// attributes if any input changed. New nodes are attributed to the replaced node's layer;
/// nodes nothing reads any more are dropped. Returns `graph` itself when nothing changed.
Graph rewrite_nodes(const Graph& graph, const NodeRewrite& rewrite,
                    const std::map<ValueKey, Value>& replacements = {});

/// The graph with each value of `replacements` replaced (consumers remade, dead nodes dropped).
Graph replace_values(const Graph& graph, const std::map<ValueKey, Value>& replacements);

/// Applies `step` until it finds nothing more to rewrite (returns nullopt); for passes that
/// rewrite one match per round because a rewrite invalidates what the others matched.
Graph rewrite_to_fixpoint(Graph graph,
                          const std::function<std::optional<Graph>(const Graph&)>& step);

}  // namespace edifice
