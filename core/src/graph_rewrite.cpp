#include <edifice/core/graph_rewrite.hpp>

namespace edifice {

UseCounts count_uses(const Graph& graph) {
  UseCounts uses;
  for (const Node* n : graph.nodes())
    for (const Value& in : n->inputs()) ++uses[key_of(in)];
  for (const Value& out : graph.outputs()) ++uses[key_of(out)];
  return uses;
}

int use_count(const UseCounts& uses, const Value& v) {
  auto it = uses.find(key_of(v));
  return it == uses.end() ? 0 : it->second;
}

Consumers consumers_of(const Graph& graph) {
  Consumers consumers;
  for (const Node* n : graph.nodes())
    for (const Value& in : n->inputs()) consumers[key_of(in)].push_back(n);
  return consumers;
}

void enter_layer_of(std::optional<LayerScope>& scope, const Node& n) {
  if (!n.scope().empty()) scope.emplace(n.scope(), "", n.location());
}

Graph rewrite_nodes(const Graph& graph, const NodeRewrite& rewrite,
                    const std::map<ValueKey, Value>& replacements) {
  std::map<const Node*, std::vector<Value>> rebuilt;
  auto mapped = [&](const Value& v) {
    if (auto r = replacements.find(key_of(v)); r != replacements.end()) return r->second;
    auto it = rebuilt.find(&v.node());
    return it == rebuilt.end() ? v : it->second[v.index()];
  };
  auto all_mapped = [&](const std::vector<Value>& values) {
    std::vector<Value> out;
    for (const Value& v : values) out.push_back(mapped(v));
    return out;
  };
  bool changed = !replacements.empty();
  for (const Node* n : graph.nodes()) {
    std::vector<Value> inputs = all_mapped(n->inputs());
    const bool inputs_changed = inputs != n->inputs();
    std::optional<LayerScope> scope;
    enter_layer_of(scope, *n);
    if (auto values = rewrite(*n, inputs)) {
      rebuilt[n] = std::move(*values);
      changed = true;
    } else if (inputs_changed) {
      rebuilt[n] = make_node(n->op(), inputs, n->attrs(), n->location());
    }
  }
  if (!changed) return graph;
  return Graph(all_mapped(graph.inputs()), all_mapped(graph.outputs()));
}

Graph replace_values(const Graph& graph, const std::map<ValueKey, Value>& replacements) {
  return rewrite_nodes(
      graph, [](const Node&, const std::vector<Value>&) { return std::nullopt; }, replacements);
}

Graph rewrite_to_fixpoint(Graph graph,
                          const std::function<std::optional<Graph>(const Graph&)>& step) {
  while (auto next = step(graph)) graph = std::move(*next);
  return graph;
}

}  // namespace edifice
