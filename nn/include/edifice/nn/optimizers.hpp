#pragma once
/// \file
/// Optimizers (SGD, Adam, AdamW) as graph transformations, learning-rate schedules and
/// global-norm gradient clipping. An optimizer does not run anything itself: `update` builds the
/// nodes of one update into the training step's graph (see train_step.hpp), which the JIT
/// compiles together with the forward and backward passes.
///
/// Optimizer state is a set of named tensors, checkpointed as they are:
///   "step"                  i64 scalar: updates applied so far (PyTorch's `step`, from 0)
///   "sgd.momentum.{param}"  SGD's momentum buffer (only with momentum > 0)
///   "adam.m.{param}"        Adam's first moment (exp_avg), "adam.v.{param}" the second
///                           (exp_avg_sq); AdamW uses "adamw.m.{param}" and "adamw.v.{param}"
/// Buffers have their parameter's dtype and shape and start at zero.
///
/// Update formulas, exactly PyTorch's (torch.optim, single-tensor path, PyTorch 2), per
/// parameter p with gradient g, learning rate lr and t = step + 1; scalar coefficients are
/// computed in f64 and rounded to the parameter's dtype where they meet a tensor, as PyTorch does
/// with Python scalars:
///
///   SGD(lr, momentum mu, nesterov, weight_decay wd)             [dampening is always 0]
///     g  <- g + wd*p                                  (if wd != 0)
///     b  <- mu*b + g                                  (if mu != 0; b starts at 0, so the first
///                                                      step gives b = g as in PyTorch)
///     g  <- g + mu*b  if nesterov, else g <- b        (if mu != 0)
///     p  <- p - lr*g
///
///   Adam(lr, beta1, beta2, eps, weight_decay wd)                [L2 penalty, amsgrad off]
///     g  <- g + wd*p                                  (if wd != 0)
///     m  <- m + (1-beta1)*(g - m)                     (torch's lerp_)
///     v  <- beta2*v + (1-beta2)*g*g
///     bc1 = 1 - beta1^t,  bc2 = 1 - beta2^t           (f64)
///     p  <- p - (lr/bc1) * m / (sqrt(v)/sqrt(bc2) + eps)
///
///   AdamW(lr, beta1, beta2, eps, weight_decay wd)               [decoupled weight decay]
///     p  <- p * (1 - lr*wd)                           (before the Adam step, as torch does)
///     then Adam's update with wd = 0
///
/// Defaults: SGD lr 0.01 (Keras; PyTorch 2 uses 1e-3), momentum 0; Adam lr 1e-3, betas
/// (0.9, 0.999), eps 1e-8, weight_decay 0; AdamW the same with weight_decay 0.01 (PyTorch).

#include <edifice/core/graph.hpp>
#include <edifice/nn/model.hpp>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace edifice::nn {

/// Named optimizer state tensors (see the file comment for the names).
using OptimizerState = std::map<std::string, Tensor>;

/// A learning rate as a function of the step: the number of updates already applied (0 for the
/// first update). Evaluated on the host before each step and fed to the step graph as an f64
/// scalar, so changing it never recompiles. A plain number converts to a constant schedule:
/// `nn::adam({.learning_rate = 3e-4})`.
class Schedule {
 public:
  /// constant(lr).
  Schedule(double lr = 1e-3);  // NOLINT(google-explicit-constructor): `.learning_rate = 0.1`

  /// lr at every step.
  static Schedule constant(double lr);
  /// lr(s) = peak * min(1, (s + 1) / warmup_steps): the first update already uses
  /// peak/warmup_steps (no wasted step at lr 0), the update with s = warmup_steps - 1 uses peak.
  static Schedule linear_warmup(double peak, std::int64_t warmup_steps);
  /// Linear warmup as above for `warmup_steps`, then cosine decay from `peak` to `final_lr`
  /// over `decay_steps` more steps, then `final_lr`:
  ///   s <  W:            peak * (s + 1) / W
  ///   W <= s < W + D:    final + (peak - final) * (1 + cos(pi * (s - W) / D)) / 2
  ///   s >= W + D:        final
  /// warmup_steps may be 0 (pure cosine decay); decay_steps must be >= 1.
  static Schedule warmup_cosine(double peak, std::int64_t warmup_steps, std::int64_t decay_steps,
                                double final_lr = 0.0);
  /// Any function of the step; `description` is shown in summaries and checkpoints.
  static Schedule custom(std::string description, std::function<double(std::int64_t)> fn);

  /// The learning rate for the update that follows `step` updates.
  double operator()(std::int64_t step) const { return fn_(step); }
  /// "constant(0.001)", "warmup_cosine(peak=0.001, warmup=100, decay=900, final=0)", ...
  const std::string& description() const { return description_; }

 private:
  Schedule(std::string description, std::function<double(std::int64_t)> fn);
  std::string description_;
  std::function<double(std::int64_t)> fn_;
};

/// What an optimizer's update reads: values inside the step graph.
struct UpdateInputs {
  /// f64 scalar: the schedule's value for this step.
  Value learning_rate;
  /// i64 scalar: updates applied before this one (the "step" state entry).
  Value step;
  /// Parameters, their gradients (same dtype and shape) and the optimizer's state entries
  /// (every entry but "step"), by name.
  std::map<std::string, Value> params;
  std::map<std::string, Value> grads;
  std::map<std::string, Value> state;
};

/// What it produces: every parameter and every state entry (but "step") updated.
struct UpdateOutputs {
  std::map<std::string, Value> params;
  std::map<std::string, Value> state;
};

/// An optimizer. Immutable; shared between training steps and threads.
class Optimizer {
 public:
  explicit Optimizer(Schedule learning_rate) : learning_rate_(std::move(learning_rate)) {}
  virtual ~Optimizer() = default;

  /// "sgd", "adam", "adamw": also the prefix of the state names.
  virtual std::string name() const = 0;
  /// The hyper-parameters as a JSON object text (stored in checkpoint metadata).
  virtual std::string config_json() const = 0;
  /// Names of the per-parameter buffers ("m", "v", "momentum"); state "{name}.{slot}.{param}".
  virtual std::vector<std::string> slots() const = 0;
  /// Builds one update into the current graph.
  virtual UpdateOutputs update(const UpdateInputs& in) const = 0;

  /// The initial state for `params`: "step" = 0 and a zero buffer per slot and parameter.
  OptimizerState init(const Params& params) const;
  /// The state name of `slot` for parameter `param`: "adam.m.dense_0.kernel".
  std::string state_name(const std::string& slot, const std::string& param) const;
  const Schedule& learning_rate() const { return learning_rate_; }

 private:
  Schedule learning_rate_;
};

struct SgdOptions {
  Schedule learning_rate = 0.01;
  /// mu >= 0; 0 keeps no buffer.
  double momentum = 0.0;
  /// Needs momentum > 0 (as in PyTorch).
  bool nesterov = false;
  /// L2 penalty added to the gradient (>= 0).
  double weight_decay = 0.0;
};

struct AdamOptions {
  Schedule learning_rate = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  /// Adam: L2 penalty added to the gradient. AdamW: decoupled decay (PyTorch default 0.01).
  double weight_decay = 0.0;
};

struct AdamWOptions {
  Schedule learning_rate = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.01;
};

/// Factories; invalid hyper-parameters (negative rates, betas outside [0, 1), nesterov
/// without momentum) throw edifice::Error naming the option.
std::shared_ptr<const Optimizer> sgd(SgdOptions options = {});
std::shared_ptr<const Optimizer> adam(AdamOptions options = {});
std::shared_ptr<const Optimizer> adamw(AdamWOptions options = {});

/// Global-norm clipping, in the graph (PyTorch's clip_grad_norm_ with norm_type 2):
///   norm  = sqrt(sum over every gradient of sum(g^2))     (per-tensor sums in the gradient's
///                                                          dtype, combined in f64)
///   scale = min(1, max_norm / (norm + 1e-6))
///   g    <- g * scale                                      (scale rounded to g's dtype)
/// Returns the clipped gradients (same order) and the f64 scalar norm before clipping.
/// `max_norm` must be > 0.
struct ClippedGradients {
  std::vector<Value> grads;
  Value norm;
};
ClippedGradients clip_by_global_norm(const std::vector<Value>& grads, double max_norm);

/// The global L2 norm alone (f64 scalar), as computed by clip_by_global_norm.
Value global_norm(const std::vector<Value>& grads);

}  // namespace edifice::nn
