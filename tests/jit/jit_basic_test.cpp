// End-to-end checks of the JIT pipeline against the reference interpreter.
#include <edifice/core/autodiff.hpp>
#include <edifice/core/interpreter.hpp>
#include <edifice/core/ops.hpp>
#include <edifice/jit/jit.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <random>

using namespace edifice;
namespace o = edifice::ops;

namespace {

Tensor random_tensor(DType d, const Shape& shape, std::uint32_t seed, double lo = -1,
                     double hi = 1) {
  Tensor t(d, shape);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> u(lo, hi);
  for (std::int64_t i = 0; i < t.numel(); ++i) t.set_from_double(i, u(rng));
  return t;
}

void require_close(const Tensor& got, const Tensor& want, double rtol, double atol) {
  REQUIRE(got.dtype() == want.dtype());
  REQUIRE(got.shape() == want.shape());
  for (std::int64_t i = 0; i < got.numel(); ++i) {
    double g = got.get_as_double(i), w = want.get_as_double(i);
    INFO("element " << i << ": jit " << g << " vs interpreter " << w);
    REQUIRE(std::abs(g - w) <= atol + rtol * std::abs(w));
  }
}

void check_against_interpreter(const Graph& g, const std::vector<Tensor>& inputs,
                               double rtol = 1e-6, double atol = 1e-6) {
  std::vector<Shape> shapes;
  for (const auto& t : inputs) shapes.push_back(t.shape());
  auto exe = jit::compile(g, shapes);
  auto got = exe->run(inputs);
  auto want = interpret(g, inputs);
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < got.size(); ++i) require_close(got[i], want[i], rtol, atol);
}

}  // namespace

TEST_CASE("elementwise chains fuse into one kernel and match the interpreter", "[jit]") {
  auto x = o::parameter("x", DType::f32, {kDynamic, 37});
  auto b = o::parameter("b", DType::f32, {37});
  auto y = o::gelu(o::tanh(x) * 2.0 + b);
  Graph g({x, b}, {y});
  auto exe = jit::compile(g, {{5, 37}, {37}});
  CHECK(exe->kernels().size() == 1);
  check_against_interpreter(
      g, {random_tensor(DType::f32, {5, 37}, 1), random_tensor(DType::f32, {37}, 2)});
}

TEST_CASE("reductions, layouts and gathers match the interpreter", "[jit]") {
  auto x = o::parameter("x", DType::f64, {4, 6, 5});
  auto idx = o::parameter("idx", DType::i64, {3});
  auto s = o::reduce_sum(o::exp(x), {1});
  auto m = o::reduce_max(o::transpose(x, {2, 0, 1}), {2});
  auto p =
      o::pad(o::slice(x, {0, 1, 0}, {4, 6, 5}, {2, 2, 1}), 0.5, {1, 0, 0}, {0, 2, 1}, {0, 1, 0});
  auto t = o::take(x, idx, 1);
  auto c = o::concat({x, o::neg(x)}, 2);
  Graph g({x, idx}, {s, m, p, t, c});
  auto idx_t = Tensor::from_vector<std::int64_t>({3}, {5, 0, 2});
  check_against_interpreter(g, {random_tensor(DType::f64, {4, 6, 5}, 3), idx_t}, 1e-12, 1e-12);
}

TEST_CASE("reductions over leading axes (column blocks) match the interpreter", "[jit]") {
  // 150 and 240 output columns: full blocks of 64 and a partial one; producers inlined.
  for (DType d : {DType::f64, DType::f32}) {
    auto x = o::parameter("x", d, {7, 3, 150});
    auto y = o::parameter("y", d, {5, 2, 3, 40});
    auto s = o::reduce_sum(o::exp(x) * 0.5, {0, 1});
    auto m = o::reduce_max(x, {0});
    auto mean = o::reduce_mean(o::tanh(y), {0, 1});
    auto s4 = o::reduce_sum(y, {0});
    Graph g({x, y}, {s, m, mean, s4});
    check_against_interpreter(
        g, {random_tensor(d, {7, 3, 150}, 11), random_tensor(d, {5, 2, 3, 40}, 12)},
        d == DType::f64 ? 1e-12 : 1e-5, d == DType::f64 ? 1e-12 : 1e-5);
  }
  auto n = o::parameter("n", DType::i32, {9, 70});
  Graph gi({n}, {o::reduce_sum(n, {0}), o::reduce_max(n, {0})});
  Tensor nt(DType::i32, {9, 70});
  for (std::int64_t i = 0; i < nt.numel(); ++i)
    nt.set_from_double(i, static_cast<double>((i * 37) % 101) - 50);
  check_against_interpreter(gi, {nt}, 0, 0);
}

TEST_CASE("matmul with bias and gelu is one GEMM kernel", "[jit]") {
  auto x = o::parameter("x", DType::f32, {7, 33});
  auto w = o::parameter("w", DType::f32, {33, 19});
  auto bias = o::parameter("bias", DType::f32, {19});
  auto y = o::gelu(o::matmul(x, w) + bias);
  Graph g({x, w, bias}, {y});
  auto exe = jit::compile(g, {{7, 33}, {33, 19}, {19}});
  CHECK(exe->kernels().size() == 1);
  CHECK(exe->kernels()[0].kind == "gemm");
  check_against_interpreter(
      g,
      {random_tensor(DType::f32, {7, 33}, 4), random_tensor(DType::f32, {33, 19}, 5),
       random_tensor(DType::f32, {19}, 6)},
      1e-5, 1e-5);
}

TEST_CASE("gradients run through the JIT", "[jit]") {
  auto x = o::parameter("x", DType::f64, {6, 4});
  auto w = o::parameter("w", DType::f64, {4, 3});
  auto loss = o::reduce_mean(o::tanh(o::matmul(x, w)) * o::tanh(o::matmul(x, w)), {0, 1});
  Graph g = grad(Graph({x, w}, {loss}), {0, 1}, true);
  check_against_interpreter(
      g, {random_tensor(DType::f64, {6, 4}, 7), random_tensor(DType::f64, {4, 3}, 8)}, 1e-10,
      1e-12);
}

TEST_CASE("run-time errors name the op", "[jit]") {
  auto x = o::parameter("x", DType::f32, {4});
  auto idx = o::parameter("idx", DType::i32, {2});
  Graph g({x, idx}, {o::take(x, idx, 0)});
  auto exe = jit::compile(g, {{4}, {2}});
  auto bad = Tensor::from_vector<std::int32_t>({2}, {1, 9});
  try {
    exe->run({random_tensor(DType::f32, {4}, 9), bad});
    FAIL("no error");
  } catch (const Error& e) {
    std::string msg = e.what();
    CHECK(msg.rfind("take: index out of range (kernel k0_loop)", 0) == 0);
    CHECK(msg.find("jit_basic_test.cpp") != std::string::npos);
  }
}
