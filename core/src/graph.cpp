#include <edifice/core/graph.hpp>

#include <algorithm>
#include <atomic>
#include <functional>
#include <map>
#include <set>
#include <unordered_map>
#include <unordered_set>

namespace edifice {
namespace {

struct ScopeEntry {
  std::string name;
  std::string layer_op;
  std::source_location loc;
};

thread_local std::vector<ScopeEntry> scope_stack;
std::atomic<std::uint64_t> next_node_id{0};

}  // namespace

namespace {
// The one format of error locations; `layer_op` is known only while the layer is being built.
std::string location_text(const std::string& layer, const std::string& layer_op,
                          const std::source_location& loc) {
  if (layer.empty()) return fmt::format("\n  the op was defined at {}", format_location(loc));
  return fmt::format("\n  in layer \"{}\"{}\n  the layer was defined at {}", layer,
                     layer_op.empty() ? "" : fmt::format(" ({})", layer_op), format_location(loc));
}
}  // namespace

std::string where(const Node& node) {
  return location_text(node.scope(), "", node.location());
}

const std::string& input_name(const Value& input) {
  return input.node().attrs().get_string("name");
}

void fail_at(const std::source_location& loc, const std::string& what) {
  if (scope_stack.empty()) throw Error(what + location_text("", "", loc));
  const ScopeEntry& s = scope_stack.back();
  throw Error(what + location_text(s.name, s.layer_op, s.loc));
}

namespace {

[[noreturn]] void rethrow_with_context(const Error& e, const std::source_location& loc) {
  fail_at(loc, e.what());
}

std::vector<Value> finish_node(std::shared_ptr<Node> node) {
  std::vector<Value> outs;
  for (int i = 0; i < node->num_outputs(); ++i) outs.emplace_back(node, i);
  return outs;
}

}  // namespace

std::string TensorType::to_string() const {
  return fmt::format("{}{}", dtype_name(dtype), shape_to_string(shape));
}

Value::Value(NodePtr node, int index) : node_(std::move(node)), index_(index) {}

const TensorType& Value::type() const {
  if (!node_) fail("Value: use of an empty value");
  return node_->outputs()[index_];
}

std::int64_t Value::dim(std::int64_t axis) const {
  int a = normalize_axis(axis, rank());
  if (a < 0) fail("Value::dim: axis {} is out of range for {}", axis, type().to_string());
  return shape()[a];
}

Value Node::output(int index) const {
  if (index < 0 || index >= num_outputs())
    fail("Node::output: {} has {} outputs, index {} requested", op_name(op_), num_outputs(), index);
  return Value(self_.lock(), index);
}

std::vector<Value> make_node(Op op, std::vector<Value> inputs, Attributes attrs,
                             std::source_location loc) {
  std::vector<TensorType> in_types;
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    if (!inputs[i].valid()) {
      try {
        fail("{}: input {} is an empty Value", op_name(op), i);
      } catch (const Error& e) {
        rethrow_with_context(e, loc);
      }
    }
    in_types.push_back(inputs[i].type());
  }
  std::vector<TensorType> out_types;
  try {
    out_types = infer_types(op, in_types, attrs);
  } catch (const Error& e) {
    rethrow_with_context(e, loc);
  }
  return make_node_typed(op, std::move(inputs), std::move(attrs), std::move(out_types), loc);
}

std::vector<Value> make_node_typed(Op op, std::vector<Value> inputs, Attributes attrs,
                                   std::vector<TensorType> outputs, std::source_location loc) {
  auto node = std::shared_ptr<Node>(new Node());
  node->self_ = node;
  node->op_ = op;
  node->inputs_ = std::move(inputs);
  node->outputs_ = std::move(outputs);
  node->attrs_ = std::move(attrs);
  if (!scope_stack.empty()) {
    node->scope_ = scope_stack.back().name;
    node->location_ = scope_stack.back().loc;
  } else {
    node->location_ = loc;
  }
  node->id_ = next_node_id++;
  return finish_node(std::move(node));
}

LayerScope::LayerScope(std::string name, std::string layer_op, std::source_location loc) {
  scope_stack.push_back({std::move(name), std::move(layer_op), loc});
}

LayerScope::~LayerScope() {
  scope_stack.pop_back();
}

std::vector<const Node*> topological_order(const std::vector<Value>& outputs) {
  std::vector<const Node*> order;
  std::unordered_set<const Node*> visited;
  // Iterative DFS: deep graphs (long chains of ops) must not overflow the stack.
  std::vector<std::pair<const Node*, std::size_t>> stack;
  for (const Value& out : outputs) {
    if (!out.valid()) fail("Graph: an output is an empty Value");
    if (!visited.insert(&out.node()).second) continue;
    stack.push_back({&out.node(), 0});
    while (!stack.empty()) {
      auto& [node, next] = stack.back();
      if (next < node->inputs().size()) {
        const Node* child = &node->inputs()[next++].node();
        if (visited.insert(child).second) stack.push_back({child, 0});
      } else {
        order.push_back(node);
        stack.pop_back();
      }
    }
  }
  return order;
}

Graph::Graph(std::vector<Value> inputs, std::vector<Value> outputs)
    : inputs_(std::move(inputs)),
      outputs_(std::move(outputs)),
      hash_cache_(std::make_shared<std::atomic<std::uint64_t>>(0)) {
  std::set<const Node*> listed;
  for (std::size_t i = 0; i < inputs_.size(); ++i) {
    const Value& in = inputs_[i];
    if (!in.valid() || in.node().op() != Op::parameter)
      fail("Graph: input {} is not a parameter", i);
    if (!listed.insert(&in.node()).second)
      fail("Graph: parameter \"{}\" is listed twice among the inputs",
           in.node().attrs().get_string("name"));
  }
  for (const Node* n : nodes()) {
    if (n->op() == Op::parameter && !listed.count(n))
      fail(
          "Graph: the outputs depend on parameter \"{}\" ({}), which is not among the graph's "
          "inputs\n  the parameter was defined at {}",
          n->attrs().get_string("name"), n->outputs()[0].to_string(),
          format_location(n->location()));
  }
}

std::vector<const Node*> Graph::nodes() const {
  return topological_order(outputs_);
}

namespace {

// Short variable names a, b, ..., z, ba, bb, ... in order of first definition.
std::string var_name(std::size_t n) {
  std::string s;
  do {
    s.insert(s.begin(), static_cast<char>('a' + n % 26));
    n /= 26;
  } while (n);
  return s;
}

std::string short_file(const char* path) {
  std::string_view p(path);
  auto slash = p.rfind('/');
  return std::string(slash == std::string_view::npos ? p : p.substr(slash + 1));
}

}  // namespace

std::string Graph::to_string() const {
  std::map<std::pair<const Node*, int>, std::string> names;
  std::size_t counter = 0;
  auto name_of = [&](const Value& v) -> std::string {
    auto key = std::make_pair(&v.node(), v.index());
    auto it = names.find(key);
    return it == names.end() ? std::string("<undefined>") : it->second;
  };
  std::string out = "{ lambda";
  for (const Value& in : inputs_) {
    std::string n = var_name(counter++);
    names[{&in.node(), 0}] = n;
    out += fmt::format(" {}:{}", n, in.type().to_string());
  }
  out += ". let\n";
  for (const Node* node : nodes()) {
    if (node->op() == Op::parameter) continue;
    std::string lhs;
    for (int i = 0; i < node->num_outputs(); ++i) {
      std::string n = var_name(counter++);
      names[{node, i}] = n;
      lhs += fmt::format("{}{}:{}", i ? " " : "", n, node->outputs()[i].to_string());
    }
    std::string attrs = node->attrs().to_string();
    std::string args;
    for (const Value& in : node->inputs()) args += " " + name_of(in);
    std::string where =
        short_file(node->location().file_name()) + ":" + std::to_string(node->location().line());
    if (!node->scope().empty()) where = node->scope() + " " + where;
    out += fmt::format("    {} = {}{}{}    # {}\n", lhs, op_name(node->op()),
                       attrs.empty() ? "" : "[" + attrs + "]", args, where);
  }
  out += "  in (";
  for (std::size_t i = 0; i < outputs_.size(); ++i) out += (i ? ", " : "") + name_of(outputs_[i]);
  return out + ") }\n";
}

std::string Graph::to_dot() const {
  std::string out = "digraph edifice {\n  rankdir=TB;\n  node [shape=box, fontname=monospace];\n";
  for (const Node* node : nodes()) {
    std::string label = std::string(op_name(node->op()));
    if (node->op() == Op::parameter) label += " " + node->attrs().get_string("name");
    if (!node->scope().empty()) label += "\\n" + node->scope();
    for (const auto& t : node->outputs()) label += "\\n" + t.to_string();
    out += fmt::format("  n{} [label=\"{}\"];\n", node->id(), label);
    for (std::size_t i = 0; i < node->inputs().size(); ++i) {
      const Value& in = node->inputs()[i];
      out += fmt::format(
          "  n{} -> n{} [label=\"{}\"];\n", in.node().id(), node->id(),
          in.node().num_outputs() > 1 ? fmt::format("{}:{}", in.index(), i) : std::to_string(i));
    }
  }
  for (std::size_t i = 0; i < outputs_.size(); ++i)
    out += fmt::format("  out{} [shape=oval, label=\"output {}\"];\n  n{} -> out{};\n", i, i,
                       outputs_[i].node().id(), i);
  return out + "}\n";
}

std::uint64_t Graph::hash() const {
  if (hash_cache_)
    if (std::uint64_t cached = hash_cache_->load(std::memory_order_relaxed)) return cached;
  // Nodes are numbered by topological position so the hash ignores creation ids.
  std::unordered_map<const Node*, std::uint64_t> position;
  std::uint64_t h = 1469598103934665603ull;
  auto mix = [&](std::uint64_t v) { h = (h ^ v) * 1099511628211ull + (h >> 29); };
  for (std::size_t i = 0; i < inputs_.size(); ++i) position[&inputs_[i].node()] = i;
  std::uint64_t next = inputs_.size();
  for (const Node* node : nodes()) {
    if (!position.count(node)) position[node] = next++;
    mix(position[node]);
    mix(static_cast<std::uint64_t>(node->op()));
    mix(node->attrs().hash());
    for (const auto& t : node->outputs()) {
      mix(static_cast<std::uint64_t>(t.dtype));
      for (auto d : t.shape) mix(static_cast<std::uint64_t>(d));
    }
    for (const Value& in : node->inputs()) {
      mix(position.at(&in.node()));
      mix(static_cast<std::uint64_t>(in.index()));
    }
  }
  for (const Value& out : outputs_) {
    mix(position.at(&out.node()));
    mix(static_cast<std::uint64_t>(out.index()));
  }
  if (h == 0) h = 1;  // 0 marks "not computed"
  if (hash_cache_) hash_cache_->store(h, std::memory_order_relaxed);
  return h;
}

}  // namespace edifice
