#pragma once
/// \file
/// One compiled training step: forward (train mode), loss, metrics, backward, optional
/// gradient clipping and the optimizer update, all in ONE graph built per (model, loss,
/// optimizer, targets type) and compiled by the JIT once per batch shape.
///
/// The step graph (TrainStep::graph) has these inputs, in order:
///   1. every parameter, sorted by name               ("dense_0.bias", "dense_0.kernel", ...)
///   2. every optimizer state entry, sorted by name   ("adam.m.dense_0.bias", ..., "step")
///   3. "learning_rate"  f64 scalar                   (the schedule's value, from the host)
///   4. "rng_key"        i64 scalar                   (dropout's key for this step)
///   5. the model inputs, in definition order
///   6. "targets"        (dtype and trailing shape of the data; batch axis dynamic when the
///                        model's batch axis is)
/// and these outputs:
///   loss, each metric (in TrainStepOptions::metrics order), the f64 gradient norm before
///   clipping (only with clipping or anomaly mode), the updated parameters (same order as the
///   inputs), the updated optimizer state (same order; "step" is incremented).
///
/// Anomaly mode (the analogue of torch.autograd.detect_anomaly): after each step, if the loss
/// or the gradient norm is NaN or Inf, the step is re-run by the reference interpreter on a
/// graph whose outputs are every float value of the step graph, forward nodes first in
/// topological order; the first node that produces a NaN from NaN-free inputs (or an Inf from
/// finite inputs) is reported in an edifice::Error naming the op, whether it is in the forward
/// or the backward pass, its layer and the user's file:line, e.g.
///
///   anomaly detected in training step 3 (epoch 0, batch 2): log produced NaN in the forward
///   pass (2 of 4 elements non-finite, the first at [1,0]); its inputs: f32[4,1] in [-1.5, 2]
///     in layer "my_log"
///     the layer was defined at model.cpp:42
///
/// (the first two lines are one line of the message). Ops outside layers (losses, metrics) say "the
/// op was defined at"; gradient nodes carry the location and layer of the forward op they
/// differentiate; optimizer nodes are in the layer "optimizer {name}". An input that already holds
/// NaN/Inf (data, parameters, state) is reported as such. If the interpreter finds no such node the
/// error says so (it would point at a JIT bug).
///
/// Parameters and state are not modified by a step that raises. Without anomaly mode there is
/// no extra cost.

#include <edifice/jit/jit.hpp>
#include <edifice/nn/losses.hpp>
#include <edifice/nn/model.hpp>
#include <edifice/nn/optimizers.hpp>

#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace edifice::nn {

struct TrainStepOptions {
  Loss loss;
  /// Computed on the train-mode predictions of each batch (as Keras does).
  std::vector<Metric> metrics;
  std::shared_ptr<const Optimizer> optimizer;
  /// Clip gradients to this global L2 norm before the update (clip_by_global_norm); 0 = off.
  double clip_global_norm = 0.0;
  /// See the file comment.
  bool anomaly_mode = false;
  jit::Options jit = {};
};

/// Scalars one step or evaluation produced.
struct StepResult {
  double loss = 0.0;
  /// In TrainStepOptions::metrics order.
  std::vector<double> metrics;
  /// Global gradient norm before clipping; NaN unless clipping or anomaly mode is on.
  double grad_norm = std::numeric_limits<double>::quiet_NaN();
};

/// One micro-batch's loss, metrics and gradients (TrainStep::gradients).
struct GradientResult {
  StepResult values;  ///< loss and metrics (grad_norm unused)
  /// d loss / d parameter, in TrainStep::param_names() order.
  std::vector<Tensor> grads;
};

class TrainStep {
 public:
  /// Uses the model's first output as the prediction. Throws if the loss or optimizer is
  /// missing. Graphs are built lazily, when the targets' type is known.
  TrainStep(Model model, TrainStepOptions options);

  /// One update: replaces `params` and `state` (including "step") with their updated values.
  /// `params` and `state` must match the model and the optimizer (a mismatch lists every
  /// missing, unexpected and mismatched name). `context` prefixes anomaly reports
  /// ("training step 12 (epoch 2, batch 3)").
  StepResult run(Params& params, OptimizerState& state, double learning_rate, std::int64_t rng_key,
                 const std::vector<Tensor>& inputs, const Tensor& targets,
                 const std::string& context = "training step");

  /// The two halves of a step, for data-parallel training (distributed.hpp), each ONE compiled
  /// graph: `gradients` runs the forward pass (train mode), loss, metrics and backward pass
  /// of one micro-batch (graph inputs: parameters, "rng_key", model inputs, "targets";
  /// outputs: loss, metrics, gradients); `apply_gradients` clips (if asked) and applies the
  /// optimizer to summed gradients (inputs: parameters, state, "learning_rate", "grad/{name}";
  /// outputs: [norm], parameters, state) and returns the gradient norm before clipping (NaN
  /// unless clipping or anomaly mode is on). run() keeps its single fused graph.
  GradientResult gradients(const Params& params, std::int64_t rng_key,
                           const std::vector<Tensor>& inputs, const Tensor& targets);
  double apply_gradients(Params& params, OptimizerState& state, double learning_rate,
                         const std::vector<Tensor>& grads);
  const Graph& gradient_graph(const Tensor& targets);
  const Graph& update_graph();
  /// Parameter names sorted: the order of gradients in both graphs.
  const std::vector<std::string>& param_names();

  /// Loss and metrics of the inference-mode model on one batch (no update).
  StepResult evaluate(const Params& params, const std::vector<Tensor>& inputs,
                      const Tensor& targets);

  /// The step graph for targets like `targets` (the batch axis is made dynamic when the
  /// model's is), built on first use.
  const Graph& graph(const Tensor& targets);

  /// The state names and types the optimizer keeps for this model (initial values).
  OptimizerState initial_state(const Params& params) const;

  const Model& model() const { return model_; }
  const TrainStepOptions& options() const { return options_; }
  std::vector<std::string> metric_names() const;

 private:
  struct Built;
  Built& built(const Tensor& targets, bool train);
  Built& built_gradients(const Tensor& targets);
  Built& built_update();
  std::vector<Value> append_update(Built& b, const std::vector<Value>& params,
                                   std::vector<Value> grads, std::vector<Value>& outputs) const;
  TensorType target_type(const Tensor& targets) const;

  Model model_;
  TrainStepOptions options_;
  std::map<std::string, std::shared_ptr<Built>> cache_;
};

/// The parameter and optimizer-state checks TrainStep::run does, usable before loading a
/// checkpoint: throws edifice::Error listing every missing, unexpected and mismatched entry
/// of `state` against `expected` (names, dtypes, shapes); `what` prefixes the message.
void check_optimizer_state(const OptimizerState& expected, const OptimizerState& state,
                           const std::string& what);

}  // namespace edifice::nn
