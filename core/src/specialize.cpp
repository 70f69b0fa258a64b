// Binds the dynamic (batch) extent and rebuilds the graph with concrete shapes, so that every
// later stage (interpreter, compiler) sees static shapes only.
#include <edifice/core/graph.hpp>
#include <edifice/core/graph_rewrite.hpp>

#include <map>
#include <optional>

namespace edifice {
namespace {

// Attribute keys whose integer lists are shapes or extents that may hold kDynamic.
constexpr std::string_view kShapeKeys[] = {"shape", "limit"};

Attributes bind_attrs(const Attributes& attrs, std::int64_t batch) {
  Attributes out = attrs;
  for (auto key : kShapeKeys) {
    if (!attrs.has(key)) continue;
    auto v = attrs.get_ints(key);
    for (auto& d : v)
      if (d == kDynamic) d = batch;
    out.set(std::string(key), v);
  }
  if (attrs.has("dim_size") && attrs.get_int("dim_size") == kDynamic) out.set("dim_size", batch);
  return out;
}

}  // namespace

Graph specialize(const Graph& graph, const std::vector<Shape>& input_shapes) {
  const auto& inputs = graph.inputs();
  if (input_shapes.size() != inputs.size())
    fail("specialize: {} input shapes given, the graph has {} inputs", input_shapes.size(),
         inputs.size());
  std::optional<std::int64_t> batch;
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    const Shape& want = inputs[i].shape();
    const Shape& got = input_shapes[i];
    const std::string& name = input_name(inputs[i]);
    bool ok = want.size() == got.size();
    for (std::size_t a = 0; ok && a < want.size(); ++a) {
      if (want[a] == kDynamic) {
        if (batch && *batch != got[a])
          fail(
              "specialize: input \"{}\" has batch extent {} on axis {}, but an earlier input "
              "bound the batch to {}",
              name, got[a], a, *batch);
        batch = got[a];
      } else {
        ok = want[a] == got[a];
      }
    }
    if (!ok)
      fail("specialize: input \"{}\" has shape {}, the graph expects {}", name,
           shape_to_string(got), inputs[i].type().to_string());
  }
  if (!batch) return graph;  // nothing dynamic among the inputs

  // Every input is replaced, including inputs no output uses (they are not among the nodes),
  // and every other node is remade with the batch bound in its shape attributes.
  std::map<ValueKey, Value> typed_inputs;
  for (const Value& in : inputs) {
    const Node& node = in.node();
    TensorType t = node.outputs()[0];
    for (auto& d : t.shape)
      if (d == kDynamic) d = *batch;
    typed_inputs[key_of(in)] =
        make_node_typed(Op::parameter, {}, node.attrs(), {t}, node.location())[0];
  }
  return rewrite_nodes(
      graph,
      [&](const Node& node, const std::vector<Value>& in) -> std::optional<std::vector<Value>> {
        if (node.op() == Op::parameter) return std::nullopt;
        return make_node(node.op(), in, bind_attrs(node.attrs(), *batch), node.location());
      },
      typed_inputs);
}

}  // namespace edifice
