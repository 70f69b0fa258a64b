#include "rewrite.hpp"

#include <map>

namespace edifice::jit {

Graph rewrite_nodes(const Graph& graph, const NodeRewrite& rewrite) {
  std::map<const Node*, std::vector<Value>> rebuilt;
  auto mapped = [&](const Value& v) {
    auto it = rebuilt.find(&v.node());
    return it == rebuilt.end() ? v : it->second[v.index()];
  };
  bool changed = false;
  for (const Node* n : graph.nodes()) {
    std::vector<Value> inputs;
    bool inputs_changed = false;
    for (const Value& in : n->inputs()) {
      inputs.push_back(mapped(in));
      inputs_changed |= !(inputs.back() == in);
    }
    std::optional<LayerScope> scope;
    if (!n->scope().empty()) scope.emplace(n->scope(), "", n->location());
    if (auto values = rewrite(*n, inputs)) {
      rebuilt[n] = std::move(*values);
      changed = true;
    } else if (inputs_changed) {
      rebuilt[n] = make_node(n->op(), inputs, n->attrs(), n->location());
    }
  }
  if (!changed) return graph;
  std::vector<Value> outputs;
  for (const Value& v : graph.outputs()) outputs.push_back(mapped(v));
  return Graph(graph.inputs(), outputs);
}

}  // namespace edifice::jit
