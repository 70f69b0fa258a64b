#pragma once
/// \file
/// A model: the layers an output depends on, named and ready to be built into compiled
/// init/predict functions, as Axon.build does:
///
///   auto model = nn::Model(h);
///   auto [init, predict] = model.build({.mode = nn::Mode::inference});
///   nn::Params params = init(42);              // named, reproducible from the seed
///   Tensor y = predict(params, {batch});       // compiled by the JIT, cached per shape

#include <edifice/jit/jit.hpp>
#include <edifice/nn/layer.hpp>

#include <functional>
#include <map>
#include <string>
#include <vector>

namespace edifice::nn {

/// Parameters by full name, "{layer}.{param}".
using Params = std::map<std::string, Tensor>;

struct ParamInfo {
  std::string name;   ///< "{layer}.{param}"
  std::string layer;  ///< the layer's name
  TensorType type;
  Initializer init;
};

/// The model traced into a core graph for one mode.
struct TracedModel {
  /// Inputs: every parameter (sorted by name), then the model inputs (in definition order),
  /// then in train mode the random key (i64 scalar). Outputs: the model outputs.
  Graph graph;
  std::vector<std::string> param_names;
  std::vector<std::string> input_names;
  bool has_rng_key = false;
  /// Layer name of each output.
  std::vector<std::string> output_layers;
};

/// Raises edifice::Error listing every missing, unexpected and mismatched (name, shapes)
/// parameter of `given` against `expected`; `what` prefixes the message.
void check_params(const std::vector<ParamInfo>& expected, const Params& given,
                  const std::string& what);

struct BuildOptions {
  Mode mode = Mode::inference;
  jit::Options jit = {};
};

class Model {
 public:
  /// Collects and names every layer the outputs depend on. A duplicate layer name is an error
  /// naming both definitions.
  explicit Model(Layer output);
  explicit Model(std::vector<Layer> outputs);

  const std::vector<ParamInfo>& parameters() const { return params_; }
  std::int64_t parameter_count() const;
  /// Input layers in definition order.
  const std::vector<Layer>& inputs() const { return inputs_; }
  const std::vector<Layer>& outputs() const { return outputs_; }
  /// The name a layer got in this model.
  const std::string& layer_name(const Layer& layer) const;

  /// A table like Axon's Display.as_table: layer, op, output shape, parameters, totals.
  std::string summary() const;

  TracedModel trace(Mode mode) const;

  /// Initial parameters from `seed`: each parameter is drawn from its own counter-based
  /// stream (keyed by its name), so values do not depend on the order of layers.
  Params init(std::uint64_t seed) const;

  using InitFn = std::function<Params(std::uint64_t seed)>;
  /// Runs the compiled model; returns its (first) output. In train mode every call draws
  /// fresh dropout masks (the key advances), like Axon's predict in :train.
  using PredictFn = std::function<Tensor(const Params& params, const std::vector<Tensor>& inputs)>;
  std::pair<InitFn, PredictFn> build(BuildOptions options = {}) const;

  /// All outputs, for models with several.
  std::vector<Tensor> predict_all(const Params& params, const std::vector<Tensor>& inputs,
                                  Mode mode = Mode::inference, std::int64_t rng_key = 0,
                                  const jit::Options& options = {}) const;

 private:
  std::vector<Layer> outputs_;
  std::vector<Layer> inputs_;
  std::vector<const LayerNode*> order_;  // layers, inputs first
  std::map<const LayerNode*, std::string> names_;
  std::vector<ParamInfo> params_;
};

}  // namespace edifice::nn
