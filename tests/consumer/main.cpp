#include <edifice/edifice.hpp>

#include <cstdio>

int main() {
  namespace o = edifice::ops;
  auto x = o::parameter("x", edifice::DType::f32, {3});
  edifice::Graph g({x}, {o::reduce_sum(x * x, {0})});
  auto out = edifice::interpret(g, {edifice::Tensor::from_vector<float>({3}, {1, 2, 3})});
  double v = out[0].get_as_double(0);
  std::printf("sum of squares = %g\n", v);
  return v == 14.0 ? 0 : 1;
}
