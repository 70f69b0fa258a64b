#pragma once
/// \file
/// The lazy graph IR. A `Node` is immutable: an op, its input values, the types of its outputs
/// (inferred when the node is made), its attributes, the layer scope it was built in and the
/// user's source location. A `Value` names one output of one node; it is the handle users
/// build with. A `Graph` is a list of parameter values (the inputs, in call order) and a list
/// of output values; the nodes between them are shared, never copied.

#include <edifice/core/op.hpp>
#include <edifice/core/shape.hpp>

#include <atomic>
#include <cstdint>
#include <memory>
#include <source_location>
#include <string>
#include <vector>

namespace edifice {

/// dtype and shape of one value. The shape may hold kDynamic before specialisation.
struct TensorType {
  DType dtype = DType::f32;
  Shape shape;

  std::int64_t rank() const { return static_cast<std::int64_t>(shape.size()); }
  /// "f32[4,?,64]"
  std::string to_string() const;
  bool operator==(const TensorType&) const = default;
};

class Node;
using NodePtr = std::shared_ptr<const Node>;

/// One output of one node.
class Value {
 public:
  Value() = default;
  Value(NodePtr node, int index);

  bool valid() const { return node_ != nullptr; }
  const Node& node() const { return *node_; }
  int index() const { return index_; }

  const TensorType& type() const;
  DType dtype() const { return type().dtype; }
  const Shape& shape() const { return type().shape; }
  std::int64_t rank() const { return type().rank(); }
  /// Extent of `axis` (negative counts from the end); throws for a bad axis.
  std::int64_t dim(std::int64_t axis) const;

  friend bool operator==(const Value& a, const Value& b) {
    return a.node_ == b.node_ && a.index_ == b.index_;
  }

 private:
  NodePtr node_;
  int index_ = 0;
};

class Node {
 public:
  Op op() const { return op_; }
  const std::vector<Value>& inputs() const { return inputs_; }
  const std::vector<TensorType>& outputs() const { return outputs_; }
  const Attributes& attrs() const { return attrs_; }
  /// The layer scope the node was built in ("layer_1_attn"), or empty.
  const std::string& scope() const { return scope_; }
  /// Where the user defined it: the enclosing layer's call site, or the op builder's.
  const std::source_location& location() const { return location_; }
  /// Creation counter, unique within the process; gives dumps a stable order.
  std::uint64_t id() const { return id_; }

  Value output(int index = 0) const;
  int num_outputs() const { return static_cast<int>(outputs_.size()); }

 private:
  friend std::vector<Value> make_node(Op, std::vector<Value>, Attributes, std::source_location);
  friend std::vector<Value> make_node_typed(Op, std::vector<Value>, Attributes,
                                            std::vector<TensorType>, std::source_location);
  Node() = default;
  std::weak_ptr<const Node> self_;
  Op op_ = Op::constant;
  std::vector<Value> inputs_;
  std::vector<TensorType> outputs_;
  Attributes attrs_;
  std::string scope_;
  std::source_location location_;
  std::uint64_t id_ = 0;
};

/// Makes a node, running shape and dtype inference. On a type error throws edifice::Error:
/// "<op>: <what is wrong>" followed by the scope and the user's file:line.
std::vector<Value> make_node(Op op, std::vector<Value> inputs, Attributes attrs,
                             std::source_location loc = std::source_location::current());

/// Makes a node whose output types are already known (parameters). No inference is run.
std::vector<Value> make_node_typed(Op op, std::vector<Value> inputs, Attributes attrs,
                                   std::vector<TensorType> outputs,
                                   std::source_location loc = std::source_location::current());

/// Where `node` came from, as every error message says it (after its first line):
///   "\n  in layer \"NAME\"\n  the layer was defined at FILE:LINE" for a node made in a layer,
///   "\n  the op was defined at FILE:LINE" otherwise.
std::string where(const Node& node);

/// The name a graph input was given (its parameter's "name"), for messages about inputs.
const std::string& input_name(const Value& input);

/// Throws edifice::Error with `message` followed by where the op was defined: the innermost
/// layer scope ("in layer ... / the layer was defined at FILE:LINE") or `loc` ("the op was
/// defined at FILE:LINE"). Builders use it for errors found before a node exists.
[[noreturn]] void fail_at(const std::source_location& loc, const std::string& message);

/// While alive, nodes made on this thread are attributed to layer `name` (of kind `layer_op`)
/// defined at `loc`, so errors say "in layer ..." and "the layer was defined at ...". Scopes nest;
/// the innermost wins.
class LayerScope {
 public:
  LayerScope(std::string name, std::string layer_op,
             std::source_location loc = std::source_location::current());
  ~LayerScope();
  LayerScope(const LayerScope&) = delete;
  LayerScope& operator=(const LayerScope&) = delete;
};

/// A function from input values to output values.
class Graph {
 public:
  Graph() = default;
  /// `inputs` must be distinct parameter values; every parameter the outputs depend on must be
  /// among them (otherwise edifice::Error names the missing one).
  Graph(std::vector<Value> inputs, std::vector<Value> outputs);

  const std::vector<Value>& inputs() const { return inputs_; }
  const std::vector<Value>& outputs() const { return outputs_; }

  /// Every node the outputs depend on, inputs before users, each once.
  std::vector<const Node*> nodes() const;

  /// One line per node, like a jaxpr:
  ///   { lambda a:f32[4,3] b:f32[3]. let
  ///       c:f32[4,3] = broadcast_in_dim[dims=[1] shape=[4,3]] b    # model.cpp:12
  ///       ...
  ///     in (d) }
  std::string to_string() const;
  /// Graphviz DOT text.
  std::string to_dot() const;
  /// Structural hash: op, attributes, types and wiring; independent of node ids and names.
  std::uint64_t hash() const;

 private:
  std::vector<Value> inputs_;
  std::vector<Value> outputs_;
  // hash(), computed on first use (0 = not yet) and shared by copies: a graph never changes,
  // and the JIT's in-process cache hashes the graph on every call (e.g. each predict).
  std::shared_ptr<std::atomic<std::uint64_t>> hash_cache_;
};

/// Topological order of everything `outputs` depends on.
std::vector<const Node*> topological_order(const std::vector<Value>& outputs);

/// Output types of `op` applied to values of types `inputs`, or edifice::Error with a message
/// "<op>: ..." (no location; make_node adds it). The single home of shape rules.
std::vector<TensorType> infer_types(Op op, const std::vector<TensorType>& inputs,
                                    const Attributes& attrs);

/// The graph rebuilt for concrete input shapes: the dynamic (batch) extent is bound from
/// `input_shapes` (all dynamic extents must agree) and every node is re-inferred. Errors name
/// the input and both shapes.
Graph specialize(const Graph& graph, const std::vector<Shape>& input_shapes);

}  // namespace edifice
