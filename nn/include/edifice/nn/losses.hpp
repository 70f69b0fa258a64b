#pragma once
/// \file
/// Losses and metrics, built from core ops on graph values, so they are differentiated by
/// edifice::grad and compiled with the rest of a training step. Every function takes
/// `(y_true, y_pred)` in that order (as Axon and Keras do) and returns a rank-0 value: the mean
/// over every sample (and, for the elementwise losses, every element), in y_pred's dtype.
///
/// Shapes: y_true must have exactly y_pred's shape (a [?] target against a [?,1] prediction is
/// an error, not a silent [?,?] broadcast), except for class-index targets of the categorical
/// losses and accuracy, which have y_pred's shape without its last (class) axis. Float (or
/// integer 0/1) targets of another dtype are cast to y_pred's dtype. y_pred must be f32 or f64.
///
/// Exact formulas (d = y_pred - y_true, mean over all elements unless stated):
///
///   mse                         mean(d^2)
///   mae                         mean(|d|)
///   huber(delta)                mean(0.5*q^2 + delta*(|d| - q)),  q = min(|d|, delta)
///                               (= 0.5 d^2 where |d| <= delta, else delta*(|d| - delta/2);
///                                PyTorch's HuberLoss and Keras' Huber)
///   binary_cross_entropy(eps)   -mean(y*log(p) + (1-y)*log(1-p)),  p = clamp(y_pred, eps, 1-eps)
///                               (Keras' clipping; PyTorch's BCELoss instead clamps log at -100)
///   binary_cross_entropy_with_logits
///                               mean(max(z,0) - z*y + log(1 + exp(-|z|))),  z = y_pred
///                               (stable for any z; PyTorch's BCEWithLogitsLoss)
///   categorical_cross_entropy(eps)
///                               -mean_rows(sum_c y_c * log(clamp(p_c, eps, 1-eps)))
///                               (probabilities are not renormalised)
///   categorical_cross_entropy_with_logits
///                               -mean_rows(sum_c y_c * (z_c - m - log(sum_k exp(z_k - m)))),
///                               m = max_k z_k (log-softmax by max subtraction)
///
/// "Rows" are all leading axes; the class axis is the last. For the categorical losses y_true
/// is either one-hot (or any distribution: soft labels), a float tensor of y_pred's shape, or
/// class indices (i32/i64) of shape y_pred.shape[:-1], turned into a one-hot in the graph; an
/// index outside [0, C) then selects nothing (the Trainer checks index ranges on the host).
///
/// Every node is attributed to `loc` (the caller's line by default), so shape errors and
/// anomaly reports (trainer.hpp) point at the line that asked for the loss.

#include <edifice/core/graph.hpp>
#include <edifice/core/ops.hpp>

#include <functional>
#include <source_location>
#include <string>

namespace edifice::nn {

namespace losses {

using Loc = std::source_location;

/// Defaults: eps as Keras' backend epsilon; delta as PyTorch and Keras.
inline constexpr double kDefaultEps = 1e-7;
inline constexpr double kDefaultHuberDelta = 1.0;

Value mse(const Value& y_true, const Value& y_pred, Loc loc = Loc::current());
Value mae(const Value& y_true, const Value& y_pred, Loc loc = Loc::current());
/// `delta` > 0: where the loss turns from quadratic to linear.
Value huber(const Value& y_true, const Value& y_pred, double delta = kDefaultHuberDelta,
            Loc loc = Loc::current());
/// y_pred holds probabilities in [0, 1]; `eps` in (0, 0.5) keeps the logs finite.
Value binary_cross_entropy(const Value& y_true, const Value& y_pred, double eps = kDefaultEps,
                           Loc loc = Loc::current());
/// y_pred holds logits (any real value).
Value binary_cross_entropy_with_logits(const Value& y_true, const Value& y_pred,
                                       Loc loc = Loc::current());
/// y_pred holds class probabilities along its last axis.
Value categorical_cross_entropy(const Value& y_true, const Value& y_pred, double eps = kDefaultEps,
                                Loc loc = Loc::current());
/// y_pred holds class logits along its last axis.
Value categorical_cross_entropy_with_logits(const Value& y_true, const Value& y_pred,
                                            Loc loc = Loc::current());

}  // namespace losses

namespace metrics {

using Loc = std::source_location;

/// Fraction of samples classified correctly, in y_pred's dtype:
///  - class indices (i32/i64 y_true of shape y_pred.shape[:-1]): argmax(y_pred) == y_true;
///  - one-hot y_true of y_pred's shape with a last extent > 1: argmax(y_pred) == argmax(y_true);
///  - otherwise (a last extent of 1, or rank 1): binary, (y_pred > threshold) == (y_true > 0.5)
///    per element. Use threshold 0 when y_pred holds logits.
/// argmax takes the first of tied maxima.
Value accuracy(const Value& y_true, const Value& y_pred, double threshold = 0.5,
               Loc loc = Loc::current());
/// The binary case of `accuracy` whatever the shapes (elementwise over all elements).
Value binary_accuracy(const Value& y_true, const Value& y_pred, double threshold = 0.5,
                      Loc loc = Loc::current());
/// The categorical cases of `accuracy` (indices or one-hot) whatever the last extent.
Value categorical_accuracy(const Value& y_true, const Value& y_pred, Loc loc = Loc::current());

}  // namespace metrics

/// A named loss for the training loop: `fn(y_true, y_pred)` returns a rank-0 float value. The
/// factories capture the caller's line so every loss node points at it. Any other function is a
/// custom loss: `nn::Loss{"my_loss", [](const Value& y, const Value& p) { ... }}`.
struct Loss {
  std::string name;
  std::function<Value(const Value& y_true, const Value& y_pred)> fn;

  static Loss mse(losses::Loc loc = losses::Loc::current());
  static Loss mae(losses::Loc loc = losses::Loc::current());
  static Loss huber(double delta = losses::kDefaultHuberDelta,
                    losses::Loc loc = losses::Loc::current());
  static Loss binary_cross_entropy(double eps = losses::kDefaultEps,
                                   losses::Loc loc = losses::Loc::current());
  static Loss binary_cross_entropy_with_logits(losses::Loc loc = losses::Loc::current());
  static Loss categorical_cross_entropy(double eps = losses::kDefaultEps,
                                        losses::Loc loc = losses::Loc::current());
  static Loss categorical_cross_entropy_with_logits(losses::Loc loc = losses::Loc::current());
};

/// A named metric: `fn(y_true, y_pred)` returns a rank-0 float value; the training loop
/// reports its running mean over the epoch (weighted by batch size) under `name`.
struct Metric {
  std::string name;
  std::function<Value(const Value& y_true, const Value& y_pred)> fn;

  /// metrics::accuracy, named "accuracy".
  static Metric accuracy(double threshold = 0.5, metrics::Loc loc = metrics::Loc::current());
  static Metric binary_accuracy(double threshold = 0.5, metrics::Loc loc = metrics::Loc::current());
  static Metric categorical_accuracy(metrics::Loc loc = metrics::Loc::current());
  /// A loss used as a metric (e.g. mae while training on mse), named as the loss.
  static Metric from_loss(const Loss& loss);
};

}  // namespace edifice::nn
