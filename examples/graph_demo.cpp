// Builds a small graph, differentiates it and evaluates both with the reference interpreter.
#include <edifice/edifice.hpp>

#include <fmt/core.h>

int main() {
  using namespace edifice;
  namespace o = edifice::ops;

  // loss = mean((tanh(x.W + b) - y)^2)
  auto x = o::parameter("x", DType::f64, {kDynamic, 3});
  auto w = o::parameter("w", DType::f64, {3, 2});
  auto b = o::parameter("b", DType::f64, {2});
  auto y = o::parameter("y", DType::f64, {kDynamic, 2});
  auto h = o::tanh(o::matmul(x, w) + b);
  auto loss = o::reduce_mean((h - y) * (h - y), {0, 1});
  Graph forward({x, w, b, y}, {loss});
  Graph backward = grad(forward, {1, 2}, /*keep_outputs=*/true);

  fmt::print("forward graph:\n{}\n", forward.to_string());
  fmt::print("gradient graph:\n{}\n", backward.to_string());

  auto xs = Tensor::from_vector<double>({4, 3}, {1, 0, 0, 0, 1, 0, 0, 0, 1, 1, 1, 1});
  auto ws = Tensor::from_vector<double>({3, 2}, {0.1, -0.2, 0.3, 0.4, -0.5, 0.6});
  auto bs = Tensor::from_vector<double>({2}, {0.01, -0.02});
  auto ys = Tensor::from_vector<double>({4, 2}, {0, 1, 1, 0, 0, 0, 1, 1});
  // A few steps of gradient descent, evaluated by the reference interpreter.
  for (int step = 0; step < 5; ++step) {
    auto out = interpret(backward, {xs, ws, bs, ys});
    fmt::print("step {}: loss {:.6f}\n", step, out[0].get_as_double(0));
    for (std::int64_t i = 0; i < ws.numel(); ++i)
      ws.set_from_double(i, ws.get_as_double(i) - 0.5 * out[1].get_as_double(i));
    for (std::int64_t i = 0; i < bs.numel(); ++i)
      bs.set_from_double(i, bs.get_as_double(i) - 0.5 * out[2].get_as_double(i));
  }
  return 0;
}
