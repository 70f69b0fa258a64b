#pragma once
/// \file
/// The layer graph of the model DSL, in the spirit of Axon: layers are recorded symbolically
/// (an op, its input layers, its parameters and a forward function written with core ops) and
/// traced into a core graph when a model is built for a mode (inference or training). Each
/// layer is traced once when it is defined, so wiring errors (rank or width mismatches) are
/// reported at once, naming the layer, the shapes and the user's file:line.

#include <edifice/core/graph.hpp>
#include <edifice/core/ops.hpp>

#include <functional>
#include <map>
#include <memory>
#include <source_location>
#include <string>
#include <vector>

namespace edifice::nn {

using Loc = std::source_location;

/// The dynamic (batch) extent in layer shapes: nn::input("x", {nn::dynamic, 60, 1024}).
inline constexpr std::int64_t dynamic = kDynamic;

/// Inference drops dropout; train mode activates it (and anything else mode-dependent).
enum class Mode { inference, train };

/// How a parameter is initialised (from a seed, reproducibly; see init.hpp).
struct Initializer {
  enum class Kind { glorot_uniform, zeros, ones, normal, uniform, orthogonal, constant, lstm_bias };
  Kind kind = Kind::glorot_uniform;
  /// normal: standard deviation; uniform: the half-width of [-scale, scale]; orthogonal: gain;
  /// constant: the value; lstm_bias: the forget gate's value (the other gates get 0).
  double scale = 1.0;

  static Initializer glorot_uniform() { return {Kind::glorot_uniform, 1.0}; }
  static Initializer zeros() { return {Kind::zeros, 0.0}; }
  static Initializer ones() { return {Kind::ones, 1.0}; }
  static Initializer normal(double stddev = 0.05) { return {Kind::normal, stddev}; }
  static Initializer uniform(double limit = 0.05) { return {Kind::uniform, limit}; }
  static Initializer orthogonal(double gain = 1.0) { return {Kind::orthogonal, gain}; }
  static Initializer constant(double value) { return {Kind::constant, value}; }
  /// Zeros, except the forget-gate block (the second of four) set to `forget`.
  static Initializer lstm_bias(double forget) { return {Kind::lstm_bias, forget}; }
};

/// A learnable parameter of a layer: stored as "{layer}.{name}".
struct ParamSpec {
  std::string name;  ///< local name: "kernel", "bias", "gamma", "beta", ...
  Shape shape;
  DType dtype = DType::f32;
  Initializer init;
};

/// What a forward function may look at besides its inputs and parameters.
struct ForwardContext {
  Mode mode = Mode::inference;
  /// An i64 scalar value that changes every training step (train mode only): the key of
  /// counter-based randomness such as dropout. Invalid in inference.
  Value rng_key;
  /// A stable number for this layer (hash of its name), to use as a random stream.
  std::int64_t stream = 0;
};

/// A layer's computation, written with core ops. `params` maps local parameter names to values.
using ForwardFn =
    std::function<Value(const std::vector<Value>& inputs,
                        const std::map<std::string, Value>& params, const ForwardContext& context)>;
/// The same for layers with several outputs (lstm: sequence, h, c).
using MultiForwardFn = std::function<std::vector<Value>(const std::vector<Value>& inputs,
                                                        const std::map<std::string, Value>& params,
                                                        const ForwardContext& context)>;

class Layer;

/// One recorded layer. Immutable once made.
struct LayerNode {
  std::string op;             ///< "dense", "layer_norm", ...
  std::string explicit_name;  ///< empty: named "{op}_{k}" when the model is built
  std::vector<Layer> inputs;
  std::vector<ParamSpec> params;
  MultiForwardFn forward;
  std::vector<TensorType> types;  ///< output types, found by tracing at definition
  std::source_location loc;       ///< where the user defined the layer
  std::uint64_t id = 0;           ///< creation order
  /// An input layer: one of the model's graph inputs, named by explicit_name.
  bool is_input = false;
  /// Options worth showing in Model::summary(), e.g. "units=256".
  std::string description;
};

/// A handle on one output of a layer; what layer functions take and return.
class Layer {
 public:
  Layer() = default;
  Layer(std::shared_ptr<const LayerNode> node, int index = 0)
      : node_(std::move(node)), index_(index) {}

  bool valid() const { return node_ != nullptr; }
  const LayerNode& node() const { return *node_; }
  int index() const { return index_; }
  const TensorType& type() const { return node_->types[index_]; }
  const Shape& shape() const { return type().shape; }
  DType dtype() const { return type().dtype; }
  std::int64_t rank() const { return type().rank(); }

 private:
  std::shared_ptr<const LayerNode> node_;
  int index_ = 0;
};

/// Options of custom and custom_multi.
struct CustomOptions {
  std::string name;         ///< the layer's name; empty: "{op}_{k}" when the model is built
  std::string description;  ///< shown by Model::summary(), e.g. "units=256"
};

/// Records a layer and traces it once to find its output type. Errors raised by the forward
/// function name the layer and `loc`. This is the escape hatch for custom layers:
///
///   auto y = nn::custom("scale", {x}, {{"s", {1}, DType::f32, Initializer::ones()}},
///                       [](auto& in, auto& p, auto&) { return in[0] * p.at("s"); },
///                       {.name = "my_scale"});
Layer custom(std::string op, std::vector<Layer> inputs, std::vector<ParamSpec> params,
             ForwardFn forward, CustomOptions options = {}, Loc loc = Loc::current());
/// A layer with several outputs; returns one handle per output.
std::vector<Layer> custom_multi(std::string op, std::vector<Layer> inputs,
                                std::vector<ParamSpec> params, MultiForwardFn forward,
                                CustomOptions options = {}, Loc loc = Loc::current());

namespace detail {
/// Creation counter shared by every layer, so models can list inputs in definition order.
std::uint64_t next_layer_id();
}  // namespace detail

}  // namespace edifice::nn
