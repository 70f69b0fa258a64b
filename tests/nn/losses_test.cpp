// Losses and metrics against hand-computed values (f64) and finite-difference gradients
// (edifice::grad run by the interpreter against central differences of the interpreted loss).
#include <edifice/core/autodiff.hpp>
#include <edifice/core/interpreter.hpp>
#include <edifice/nn/losses.hpp>

#include <catch2/catch.hpp>

#include "test_util.hpp"

#include <cmath>
#include <functional>

using namespace edifice;
namespace losses = edifice::nn::losses;
namespace metrics = edifice::nn::metrics;

using edifice::test::error_of;

namespace {

using LossFn = std::function<Value(const Value&, const Value&)>;

Tensor f64s(Shape shape, std::vector<double> v) {
  return Tensor::from_vector<double>(shape, v);
}

double run_scalar(const LossFn& f, const Tensor& y_true, const Tensor& y_pred) {
  Value t = ops::parameter("y_true", y_true.dtype(), y_true.shape());
  Value p = ops::parameter("y_pred", y_pred.dtype(), y_pred.shape());
  Value l = f(t, p);
  REQUIRE(l.rank() == 0);
  return interpret(Graph({t, p}, {l}), {y_true, y_pred})[0].get_as_double(0);
}

// d loss / d y_pred from edifice::grad (interpreted) against central differences (f64,
// h = 1e-6): gradcheck's defaults (atol 1e-5, rtol 1e-3) are loose for f64; these are tighter.
void check_gradient(const LossFn& f, const Tensor& y_true, const Tensor& y_pred) {
  Value t = ops::parameter("y_true", y_true.dtype(), y_true.shape());
  Value p = ops::parameter("y_pred", y_pred.dtype(), y_pred.shape());
  Value l = f(t, p);
  Tensor g = interpret(Graph({t, p}, grad(l, {p})), {y_true, y_pred})[0];
  const double h = 1e-6;
  for (std::int64_t i = 0; i < y_pred.numel(); ++i) {
    Tensor plus = y_pred.clone(), minus = y_pred.clone();
    plus.set_from_double(i, y_pred.get_as_double(i) + h);
    minus.set_from_double(i, y_pred.get_as_double(i) - h);
    const double fd = (run_scalar(f, y_true, plus) - run_scalar(f, y_true, minus)) / (2 * h);
    INFO("element " << i);
    CHECK(g.get_as_double(i) == Approx(fd).margin(1e-7).epsilon(1e-6));
  }
}

}  // namespace

TEST_CASE("mse, mae and huber match hand-computed means", "[nn][loss]") {
  // d = y_pred - y_true = 0.5, 0, -1, 1
  Tensor y = f64s({4}, {1, 2, 3, 4});
  Tensor p = f64s({4}, {1.5, 2, 2, 5});
  auto mse = [](const Value& a, const Value& b) { return losses::mse(a, b); };
  auto mae = [](const Value& a, const Value& b) { return losses::mae(a, b); };
  auto huber = [](const Value& a, const Value& b) { return losses::huber(a, b, 0.75); };
  CHECK(run_scalar(mse, y, p) == 0.5625);      // (0.25 + 0 + 1 + 1) / 4
  CHECK(run_scalar(mae, y, p) == 0.625);       // (0.5 + 0 + 1 + 1) / 4
  CHECK(run_scalar(huber, y, p) == 0.265625);  // (0.125 + 0 + 2 * 0.75 * (1 - 0.375)) / 4
  // delta = 1 puts |d| = 1 on the boundary: both branches give 0.5 there.
  auto huber1 = [](const Value& a, const Value& b) { return losses::huber(a, b); };
  CHECK(run_scalar(huber1, y, p) == 0.28125);  // (0.125 + 0 + 0.5 + 0.5) / 4

  // Gradients away from the kinks (d = 0, |d| = delta).
  Tensor y2 = f64s({2, 3}, {0.3, -1.2, 2.0, 0.7, 0.1, -0.4});
  Tensor p2 = f64s({2, 3}, {0.1, -0.2, 2.9, -1.6, 0.45, -0.35});
  check_gradient(mse, y2, p2);
  check_gradient(mae, y2, p2);
  check_gradient(huber, y2, p2);
}

TEST_CASE("binary cross-entropy from probabilities clamps with eps", "[nn][loss]") {
  Tensor y = f64s({4, 1}, {1, 0, 1, 0});
  Tensor p = f64s({4, 1}, {0.9, 0.2, 0.6, 0.0});  // the last is clamped to eps
  auto bce = [](const Value& a, const Value& b) { return losses::binary_cross_entropy(a, b); };
  const double expected = -(std::log(0.9) + std::log(0.8) + std::log(0.6) + std::log(1 - 1e-7)) / 4;
  CHECK(run_scalar(bce, y, p) == Approx(expected).epsilon(1e-15));
  // p = 1 with y = 0 is finite thanks to the clamp: -log(eps).
  CHECK(run_scalar(bce, f64s({1}, {0}), f64s({1}, {1.0})) == Approx(-std::log(1e-7)).epsilon(1e-9));
  check_gradient(bce, f64s({2, 2}, {1, 0, 0.25, 1}), f64s({2, 2}, {0.3, 0.6, 0.5, 0.95}));
}

TEST_CASE("binary cross-entropy from logits is stable for large logits", "[nn][loss]") {
  Tensor y = f64s({5}, {1, 0, 1, 1, 0});
  Tensor z = f64s({5}, {2, -1, 0, -800, 800});
  auto bce = [](const Value& a, const Value& b) {
    return losses::binary_cross_entropy_with_logits(a, b);
  };
  // max(z,0) - z*y + log1p(exp(-|z|)) per element, by hand:
  const double expected = ((0 + std::log1p(std::exp(-2.0))) +  // z = 2, y = 1
                           (0 + std::log1p(std::exp(-1.0))) +  // z = -1, y = 0
                           std::log(2.0) +                     // z = 0
                           800.0 +                             // z = -800, y = 1
                           800.0) /                            // z = 800, y = 0
                          5;
  CHECK(run_scalar(bce, y, z) == Approx(expected).epsilon(1e-15));
  // Same as the probability form where both are well defined.
  Tensor z2 = f64s({3}, {0.4, -1.3, 2.2});
  Tensor y2 = f64s({3}, {1, 0, 0.3});
  double naive = 0;
  for (int i = 0; i < 3; ++i) {
    const double s = 1 / (1 + std::exp(-z2.get_as_double(i)));
    const double t = y2.get_as_double(i);
    naive -= (t * std::log(s) + (1 - t) * std::log(1 - s)) / 3;
  }
  CHECK(run_scalar(bce, y2, z2) == Approx(naive).epsilon(1e-13));
  check_gradient(bce, y2, z2);
  check_gradient(bce, f64s({2}, {1, 0}), f64s({2}, {-30, 25}));
}

TEST_CASE("categorical cross-entropy takes one-hot, soft or index targets", "[nn][loss]") {
  Tensor p = f64s({2, 3}, {0.7, 0.2, 0.1, 0.1, 0.1, 0.8});
  const double expected = -(std::log(0.7) + std::log(0.8)) / 2;
  auto cce = [](const Value& a, const Value& b) { return losses::categorical_cross_entropy(a, b); };
  CHECK(run_scalar(cce, f64s({2, 3}, {1, 0, 0, 0, 0, 1}), p) == Approx(expected).epsilon(1e-15));
  CHECK(run_scalar(cce, Tensor::from_vector<std::int64_t>({2}, {0, 2}), p) ==
        Approx(expected).epsilon(1e-15));
  CHECK(run_scalar(cce, Tensor::from_vector<std::int32_t>({2}, {0, 2}), p) ==
        Approx(expected).epsilon(1e-15));
  // Soft labels.
  const double soft = -(0.5 * std::log(0.7) + 0.5 * std::log(0.2) + std::log(0.8)) / 2;
  CHECK(run_scalar(cce, f64s({2, 3}, {0.5, 0.5, 0, 0, 0, 1}), p) == Approx(soft).epsilon(1e-15));
  check_gradient(cce, f64s({2, 3}, {0.2, 0.5, 0.3, 0, 1, 0}), p);
}

TEST_CASE("categorical cross-entropy from logits uses a stable log-softmax", "[nn][loss]") {
  Tensor z = f64s({2, 3}, {1, 2, 3, 1000, 0, -1000});
  auto cce = [](const Value& a, const Value& b) {
    return losses::categorical_cross_entropy_with_logits(a, b);
  };
  const double lse1 = 3 + std::log(std::exp(-2.0) + std::exp(-1.0) + 1.0);
  const double lse2 = 1000 + std::log1p(std::exp(-1000.0) + std::exp(-2000.0));
  const double expected = (-(3 - lse1) - (1000 - lse2)) / 2;  // targets: class 2, class 0
  CHECK(run_scalar(cce, Tensor::from_vector<std::int64_t>({2}, {2, 0}), z) ==
        Approx(expected).epsilon(1e-15));
  CHECK(run_scalar(cce, f64s({2, 3}, {0, 0, 1, 1, 0, 0}), z) == Approx(expected).epsilon(1e-15));
  // Rank 3: rows are every leading position.
  Tensor z3 = f64s({2, 2, 2}, {0.1, 0.9, -0.5, 0.5, 2.0, 1.0, 0.0, 0.0});
  Tensor t3 = Tensor::from_vector<std::int32_t>({2, 2}, {1, 0, 0, 1});
  double e3 = 0;
  for (int r = 0; r < 4; ++r) {
    const double a = z3.get_as_double(2 * r), b = z3.get_as_double(2 * r + 1);
    const double lse =
        std::max(a, b) + std::log(std::exp(a - std::max(a, b)) + std::exp(b - std::max(a, b)));
    e3 -= ((t3.get_as_double(r) == 0 ? a : b) - lse) / 4;
  }
  CHECK(run_scalar(cce, t3, z3) == Approx(e3).epsilon(1e-14));
  check_gradient(cce, f64s({2, 3}, {0.2, 0.5, 0.3, 0, 1, 0}),
                 f64s({2, 3}, {0.3, -1.2, 2.0, 0.7, 0.1, -0.4}));
}

TEST_CASE("f32 losses agree with the f64 values", "[nn][loss]") {
  Tensor y = Tensor::from_vector<float>({3}, {1, 0, 1});
  Tensor p = Tensor::from_vector<float>({3}, {0.8f, 0.3f, 0.55f});
  auto bce = [](const Value& a, const Value& b) { return losses::binary_cross_entropy(a, b); };
  const double expected = -(std::log(0.8) + std::log(0.7) + std::log(0.55)) / 3;
  CHECK(run_scalar(bce, y, p) == Approx(expected).epsilon(1e-6));
  // u8 0/1 targets are cast to the prediction's dtype.
  CHECK(run_scalar(bce, Tensor::from_vector<std::uint8_t>({3}, {1, 0, 1}), p) ==
        Approx(expected).epsilon(1e-6));
}

TEST_CASE("accuracy: argmax for indices and one-hot, threshold for binary", "[nn][loss]") {
  // Row argmaxes: 1, 0, 2, 0 (tie between 0 and 1: the first wins).
  Tensor p = f64s({4, 3}, {0.1, 0.7, 0.2, 0.5, 0.3, 0.2, 0.2, 0.2, 0.6, 0.4, 0.4, 0.2});
  Tensor idx = Tensor::from_vector<std::int64_t>({4}, {1, 0, 1, 1});
  auto acc = [](const Value& a, const Value& b) { return metrics::accuracy(a, b); };
  CHECK(run_scalar(acc, idx, p) == 0.5);
  Tensor onehot = f64s({4, 3}, {0, 1, 0, 1, 0, 0, 0, 1, 0, 0, 1, 0});
  CHECK(run_scalar(acc, onehot, p) == 0.5);
  Tensor all_right = Tensor::from_vector<std::int32_t>({4}, {1, 0, 2, 0});
  CHECK(run_scalar(acc, all_right, p) == 1.0);
  // Binary: (p > 0.5) == (y > 0.5) -> 0,1,0,1 against 0,1,1,0.
  Tensor pb = f64s({4, 1}, {0.2, 0.7, 0.5, 0.9});
  Tensor yb = f64s({4, 1}, {0, 1, 1, 0});
  CHECK(run_scalar(acc, yb, pb) == 0.5);
  auto logit_acc = [](const Value& a, const Value& b) { return metrics::accuracy(a, b, 0.0); };
  CHECK(run_scalar(logit_acc, yb, f64s({4, 1}, {-1, 2, 0.5, -3})) == 1.0);
}

TEST_CASE("loss shape errors name both types and the caller's line", "[nn][loss]") {
  Value y = ops::parameter("y", DType::f32, {4});
  Value p = ops::parameter("p", DType::f32, {4, 1});
  const int line = __LINE__ + 1;
  std::string msg = error_of([&] { losses::mse(y, p); });
  CHECK(msg.find("mse: y_true f32[4] and y_pred f32[4,1] must have the same shape") !=
        std::string::npos);
  CHECK(msg.find(fmt::format("the op was defined at {}:{}", __FILE__, line)) != std::string::npos);

  Value logits = ops::parameter("z", DType::f32, {4, 3});
  Value bad = ops::parameter("t", DType::i64, {4, 2});
  msg = error_of([&] { losses::categorical_cross_entropy_with_logits(bad, logits); });
  CHECK(
      msg.find("categorical_cross_entropy_with_logits: y_true i64[4,2] must be one-hot of y_pred's "
               "shape f32[4,3] or class indices (i32/i64) of shape [4]") != std::string::npos);
  msg = error_of([&] { nn::Loss::huber(-1.0); });
  CHECK(msg.find("huber: delta must be > 0, got -1") != std::string::npos);
}
