// Losses and metrics as core-op graphs. Every node is built at the caller's `loc`, so errors and
// anomaly reports name the user's line rather than this file.
#include <edifice/nn/losses.hpp>

#include <numeric>

namespace edifice::nn {
namespace {

using ops::Axes;
using Loc = std::source_location;

void check_pred(const char* what, const Value& y_true, const Value& y_pred, const Loc& loc) {
  if (!y_true.valid() || !y_pred.valid())
    fail_at(loc, fmt::format("{}: an operand is empty", what));
  if (!is_floating(y_pred.dtype()))
    fail_at(loc,
            fmt::format("{}: y_pred must be f32 or f64, got {}", what, y_pred.type().to_string()));
}

// y_true of y_pred's shape, in y_pred's dtype.
Value same_shape_target(const char* what, const Value& y_true, const Value& y_pred,
                        const Loc& loc) {
  check_pred(what, y_true, y_pred, loc);
  if (y_true.shape() != y_pred.shape())
    fail_at(loc, fmt::format("{}: y_true {} and y_pred {} must have the same shape", what,
                             y_true.type().to_string(), y_pred.type().to_string()));
  return ops::cast(y_true, y_pred.dtype(), loc);
}

Axes all_axes(std::int64_t rank) {
  Axes axes(static_cast<std::size_t>(rank));
  std::iota(axes.begin(), axes.end(), 0);
  return axes;
}

Value mean_all(const Value& x, const Loc& loc) {
  return x.rank() == 0 ? x : ops::reduce_mean(x, all_axes(x.rank()), false, loc);
}

Value c(double v, const Value& like, const Loc& loc) {
  return ops::scalar(v, like.dtype(), loc);
}

Value clamp(const Value& x, double lo, double hi, const Loc& loc) {
  return ops::max(ops::min(x, c(hi, x, loc), loc), c(lo, x, loc), loc);
}

std::int64_t class_count(const char* what, const Value& y_pred, const Loc& loc) {
  if (y_pred.rank() < 1 || y_pred.shape().back() == kDynamic)
    fail_at(loc, fmt::format("{}: y_pred {} needs a concrete last (class) axis", what,
                             y_pred.type().to_string()));
  return y_pred.shape().back();
}

bool is_index_target(const Value& y_true, const Value& y_pred) {
  if (y_true.dtype() != DType::i32 && y_true.dtype() != DType::i64) return false;
  if (y_true.rank() + 1 != y_pred.rank()) return false;
  return std::equal(y_true.shape().begin(), y_true.shape().end(), y_pred.shape().begin());
}

// Targets of a categorical loss as a distribution over the last axis of y_pred: one-hot from
// class indices, or y_true itself (cast) when it already has y_pred's shape.
Value class_distribution(const char* what, const Value& y_true, const Value& y_pred,
                         const Loc& loc) {
  check_pred(what, y_true, y_pred, loc);
  const std::int64_t classes = class_count(what, y_pred, loc);
  if (is_index_target(y_true, y_pred)) {
    Shape with_axis = y_true.shape();
    with_axis.push_back(1);
    Value column = ops::reshape(y_true, with_axis, loc);
    Value ids = ops::iota({classes}, 0, y_true.dtype(), loc);
    return ops::cast(ops::eq(column, ids, loc), y_pred.dtype(), loc);
  }
  if (y_true.shape() != y_pred.shape())
    fail_at(loc,
            fmt::format("{}: y_true {} must be one-hot of y_pred's shape {} or class indices "
                        "(i32/i64) of shape {}",
                        what, y_true.type().to_string(), y_pred.type().to_string(),
                        shape_to_string(Shape(y_pred.shape().begin(), y_pred.shape().end() - 1))));
  return ops::cast(y_true, y_pred.dtype(), loc);
}

// -mean over rows of sum_c(y_c * logp_c).
Value cross_entropy_from_log_probs(const Value& dist, const Value& log_p, const Loc& loc) {
  Value per_row = ops::reduce_sum(ops::mul(dist, log_p, loc), {-1}, false, loc);
  return ops::neg(mean_all(per_row, loc), loc);
}

// C - argmax(x) over the last axis (first of tied maxima), in x's float dtype: reduce_max of
// a reversed index where x attains its maximum.
Value reversed_argmax(const Value& x, const Loc& loc) {
  const std::int64_t classes = x.shape().back();
  Tensor rev(x.dtype(), {classes});
  for (std::int64_t i = 0; i < classes; ++i)
    rev.set_from_double(i, static_cast<double>(classes - i));
  Value is_max = ops::eq(x, ops::reduce_max(x, {-1}, true, loc), loc);
  Value score = ops::select(is_max, ops::constant(rev, loc), c(0, x, loc), loc);
  return ops::reduce_max(score, {-1}, false, loc);
}

}  // namespace

namespace losses {

Value mse(const Value& y_true, const Value& y_pred, Loc loc) {
  Value y = same_shape_target("mse", y_true, y_pred, loc);
  Value d = ops::sub(y_pred, y, loc);
  return mean_all(ops::mul(d, d, loc), loc);
}

Value mae(const Value& y_true, const Value& y_pred, Loc loc) {
  Value y = same_shape_target("mae", y_true, y_pred, loc);
  return mean_all(ops::abs(ops::sub(y_pred, y, loc), loc), loc);
}

Value huber(const Value& y_true, const Value& y_pred, double delta, Loc loc) {
  if (!(delta > 0)) fail_at(loc, fmt::format("huber: delta must be > 0, got {}", delta));
  Value y = same_shape_target("huber", y_true, y_pred, loc);
  Value a = ops::abs(ops::sub(y_pred, y, loc), loc);
  Value q = ops::min(a, c(delta, a, loc), loc);
  Value quadratic = ops::mul(c(0.5, q, loc), ops::mul(q, q, loc), loc);
  Value linear = ops::mul(c(delta, a, loc), ops::sub(a, q, loc), loc);
  return mean_all(ops::add(quadratic, linear, loc), loc);
}

Value binary_cross_entropy(const Value& y_true, const Value& y_pred, double eps, Loc loc) {
  if (!(eps > 0 && eps < 0.5))
    fail_at(loc, fmt::format("binary_cross_entropy: eps must be in (0, 0.5), got {}", eps));
  Value y = same_shape_target("binary_cross_entropy", y_true, y_pred, loc);
  Value p = clamp(y_pred, eps, 1 - eps, loc);
  Value one = c(1, p, loc);
  Value ll =
      ops::add(ops::mul(y, ops::log(p, loc), loc),
               ops::mul(ops::sub(one, y, loc), ops::log(ops::sub(one, p, loc), loc), loc), loc);
  return ops::neg(mean_all(ll, loc), loc);
}

Value binary_cross_entropy_with_logits(const Value& y_true, const Value& y_pred, Loc loc) {
  Value y = same_shape_target("binary_cross_entropy_with_logits", y_true, y_pred, loc);
  const Value& z = y_pred;
  Value softplus_neg_abs =
      ops::log(ops::add(c(1, z, loc), ops::exp(ops::neg(ops::abs(z, loc), loc), loc), loc), loc);
  Value l = ops::add(ops::sub(ops::relu(z, loc), ops::mul(z, y, loc), loc), softplus_neg_abs, loc);
  return mean_all(l, loc);
}

Value categorical_cross_entropy(const Value& y_true, const Value& y_pred, double eps, Loc loc) {
  if (!(eps > 0 && eps < 0.5))
    fail_at(loc, fmt::format("categorical_cross_entropy: eps must be in (0, 0.5), got {}", eps));
  Value dist = class_distribution("categorical_cross_entropy", y_true, y_pred, loc);
  return cross_entropy_from_log_probs(dist, ops::log(clamp(y_pred, eps, 1 - eps, loc), loc), loc);
}

Value categorical_cross_entropy_with_logits(const Value& y_true, const Value& y_pred, Loc loc) {
  Value dist = class_distribution("categorical_cross_entropy_with_logits", y_true, y_pred, loc);
  Value shifted = ops::sub(y_pred, ops::reduce_max(y_pred, {-1}, true, loc), loc);
  Value lse = ops::log(ops::reduce_sum(ops::exp(shifted, loc), {-1}, true, loc), loc);
  return cross_entropy_from_log_probs(dist, ops::sub(shifted, lse, loc), loc);
}

}  // namespace losses

namespace metrics {

Value binary_accuracy(const Value& y_true, const Value& y_pred, double threshold, Loc loc) {
  Value y = same_shape_target("binary_accuracy", y_true, y_pred, loc);
  Value hit = ops::eq(ops::gt(y_pred, c(threshold, y_pred, loc), loc),
                      ops::gt(y, c(0.5, y, loc), loc), loc);
  return mean_all(ops::cast(hit, y_pred.dtype(), loc), loc);
}

Value categorical_accuracy(const Value& y_true, const Value& y_pred, Loc loc) {
  check_pred("categorical_accuracy", y_true, y_pred, loc);
  const std::int64_t classes = class_count("categorical_accuracy", y_pred, loc);
  Value predicted = reversed_argmax(y_pred, loc);
  Value expected;
  if (is_index_target(y_true, y_pred)) {
    expected = ops::sub(c(static_cast<double>(classes), y_pred, loc),
                        ops::cast(y_true, y_pred.dtype(), loc), loc);
  } else {
    Value y = class_distribution("categorical_accuracy", y_true, y_pred, loc);
    expected = reversed_argmax(y, loc);
  }
  return mean_all(ops::cast(ops::eq(predicted, expected, loc), y_pred.dtype(), loc), loc);
}

Value accuracy(const Value& y_true, const Value& y_pred, double threshold, Loc loc) {
  check_pred("accuracy", y_true, y_pred, loc);
  if (is_index_target(y_true, y_pred) ||
      (y_pred.rank() >= 2 && y_pred.shape().back() > 1 && y_true.shape() == y_pred.shape()))
    return categorical_accuracy(y_true, y_pred, loc);
  return binary_accuracy(y_true, y_pred, threshold, loc);
}

}  // namespace metrics

Loss Loss::mse(losses::Loc loc) {
  return {"mse", [loc](const Value& t, const Value& p) { return losses::mse(t, p, loc); }};
}
Loss Loss::mae(losses::Loc loc) {
  return {"mae", [loc](const Value& t, const Value& p) { return losses::mae(t, p, loc); }};
}
Loss Loss::huber(double delta, losses::Loc loc) {
  if (!(delta > 0)) fail_at(loc, fmt::format("huber: delta must be > 0, got {}", delta));
  return {"huber",
          [delta, loc](const Value& t, const Value& p) { return losses::huber(t, p, delta, loc); }};
}
Loss Loss::binary_cross_entropy(double eps, losses::Loc loc) {
  return {"binary_cross_entropy", [eps, loc](const Value& t, const Value& p) {
            return losses::binary_cross_entropy(t, p, eps, loc);
          }};
}
Loss Loss::binary_cross_entropy_with_logits(losses::Loc loc) {
  return {"binary_cross_entropy_with_logits", [loc](const Value& t, const Value& p) {
            return losses::binary_cross_entropy_with_logits(t, p, loc);
          }};
}
Loss Loss::categorical_cross_entropy(double eps, losses::Loc loc) {
  return {"categorical_cross_entropy", [eps, loc](const Value& t, const Value& p) {
            return losses::categorical_cross_entropy(t, p, eps, loc);
          }};
}
Loss Loss::categorical_cross_entropy_with_logits(losses::Loc loc) {
  return {"categorical_cross_entropy_with_logits", [loc](const Value& t, const Value& p) {
            return losses::categorical_cross_entropy_with_logits(t, p, loc);
          }};
}

Metric Metric::accuracy(double threshold, metrics::Loc loc) {
  return {"accuracy", [threshold, loc](const Value& t, const Value& p) {
            return metrics::accuracy(t, p, threshold, loc);
          }};
}
Metric Metric::binary_accuracy(double threshold, metrics::Loc loc) {
  return {"binary_accuracy", [threshold, loc](const Value& t, const Value& p) {
            return metrics::binary_accuracy(t, p, threshold, loc);
          }};
}
Metric Metric::categorical_accuracy(metrics::Loc loc) {
  return {"categorical_accuracy", [loc](const Value& t, const Value& p) {
            return metrics::categorical_accuracy(t, p, loc);
          }};
}
Metric Metric::from_loss(const Loss& loss) {
  return {loss.name, loss.fn};
}

}  // namespace edifice::nn
