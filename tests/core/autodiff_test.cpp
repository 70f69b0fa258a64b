// Autodiff machinery: gradient graphs evaluated with the interpreter and compared with
// hand-derived gradients and with central finite differences in f64. The per-op gradient
// table lives in tests/op_table; these tests cover accumulation, unused wrt, multi-output
// nodes, scopes, errors and a few composite graphs.
#include <edifice/core/autodiff.hpp>
#include <edifice/core/interpreter.hpp>
#include <edifice/core/ops.hpp>

#include <catch2/catch.hpp>

#include "test_util.hpp"

#include <cmath>
#include <numbers>
#include <random>
#include <set>

using edifice::test::random_tensor;

namespace {

using namespace edifice;
namespace o = edifice::ops;

Value param(const std::string& name, const Shape& shape, DType dtype = DType::f64) {
  return o::parameter(name, dtype, shape);
}

// sum of all elements, as a rank-0 value.
Value total(const Value& x) {
  std::vector<std::int64_t> axes;
  for (std::int64_t i = 0; i < x.rank(); ++i) axes.push_back(i);
  return o::reduce_sum(x, axes);
}

// <x, w> for a constant w of x's shape: a scalar loss whose gradient w.r.t. x is w.
Value weighted_total(const Value& x, std::uint32_t seed) {
  return total(o::mul(x, o::constant(random_tensor(DType::f64, x.shape(), seed))));
}

double scalar_of(const Graph& f, const std::vector<Tensor>& inputs) {
  return interpret(f, inputs).at(0).get_as_double(0);
}

// Central differences of f's scalar output with respect to input `which`.
Tensor numeric_grad(const Graph& f, std::vector<Tensor> inputs, int which, double h = 1e-6) {
  Tensor x = inputs[which].clone();  // tensors share buffers; never perturb the caller's
  inputs[which] = x;
  Tensor out(DType::f64, x.shape());
  for (std::int64_t i = 0; i < x.numel(); ++i) {
    const double orig = x.get_as_double(i);
    x.set_from_double(i, orig + h);
    const double up = scalar_of(f, inputs);
    x.set_from_double(i, orig - h);
    const double down = scalar_of(f, inputs);
    x.set_from_double(i, orig);
    out.set_from_double(i, (up - down) / (2 * h));
  }
  return out;
}

void check_close(const Tensor& actual, const Tensor& expected, double tol) {
  REQUIRE(actual.shape() == expected.shape());
  for (std::int64_t i = 0; i < actual.numel(); ++i) {
    INFO("element " << i << " of " << actual.to_string() << " vs expected "
                    << expected.to_string());
    CHECK(actual.get_as_double(i) == Approx(expected.get_as_double(i)).margin(tol).epsilon(tol));
  }
}

// Every gradient of grad(f, wrt) against finite differences.
void check_gradients(const Graph& f, const std::vector<Tensor>& inputs, const std::vector<int>& wrt,
                     double tol = 1e-6) {
  const Graph g = grad(f, wrt);
  const std::vector<Tensor> grads = interpret(g, inputs);
  REQUIRE(grads.size() == wrt.size());
  for (std::size_t k = 0; k < wrt.size(); ++k) {
    INFO("gradient with respect to input " << wrt[k]);
    REQUIRE(grads[k].dtype() == inputs[wrt[k]].dtype());
    check_close(grads[k], numeric_grad(f, inputs, wrt[k]), tol);
  }
}

// Elementwise f(t) for tensors of any float dtype.
template <class F>
Tensor map(const Tensor& t, F f) {
  Tensor out(t.dtype(), t.shape());
  for (std::int64_t i = 0; i < t.numel(); ++i) out.set_from_double(i, f(t.get_as_double(i)));
  return out;
}

}  // namespace

TEST_CASE("grad of an elementwise expression matches the hand-derived gradient", "[autodiff]") {
  const Value x = param("x", {2, 3}), y = param("y", {2, 3});
  const Graph f({x, y}, {total(o::add(o::mul(x, y), o::sin(x)))});
  const Tensor xv = random_tensor(DType::f64, {2, 3}, 1), yv = random_tensor(DType::f64, {2, 3}, 2);
  const auto g = interpret(grad(f, {0, 1}), {xv, yv});
  Tensor expected_dx(DType::f64, {2, 3});
  for (int i = 0; i < 6; ++i)
    expected_dx.set_from_double(i, yv.get_as_double(i) + std::cos(xv.get_as_double(i)));
  check_close(g[0], expected_dx, 1e-12);
  check_close(g[1], xv, 1e-12);
}

TEST_CASE("a value used several times accumulates every contribution", "[autodiff]") {
  const Value x = param("x", {4});
  const Tensor xv = random_tensor(DType::f64, {4}, 3);

  SECTION("x * x") {
    const Graph f({x}, {total(o::mul(x, x))});
    check_close(interpret(grad(f, {0}), {xv})[0], map(xv, [](double v) { return 2 * v; }), 1e-12);
  }
  SECTION("an intermediate with three uses") {
    const Value t = o::tanh(x);
    const Graph f({x}, {total(o::add(o::mul(t, t), o::sub(t, o::exp(t))))});
    const Tensor expected = map(xv, [](double v) {
      const double tv = std::tanh(v);
      return (2 * tv + 1 - std::exp(tv)) * (1 - tv * tv);
    });
    check_close(interpret(grad(f, {0}), {xv})[0], expected, 1e-12);
  }
  SECTION("an output listed twice in vjp sums its cotangents") {
    const Value y = o::mul(x, o::scalar(3.0, DType::f64));
    const Value c1 = o::constant(Tensor::full(DType::f64, {4}, 1.0));
    const Value c2 = o::constant(Tensor::full(DType::f64, {4}, 2.0));
    const auto d = vjp({y, y}, {c1, c2}, {x});
    check_close(interpret(Graph({x}, d), {xv})[0], Tensor::full(DType::f64, {4}, 9.0), 0);
  }
}

TEST_CASE("wrt values the outputs do not depend on get zeros", "[autodiff]") {
  const Value x = param("x", {3}), z = param("z", {2, 5});
  const Graph f({x, z}, {total(o::exp(x))});
  const Graph g = grad(f, {1, 0});
  REQUIRE(g.outputs()[0].type() == z.type());
  const auto r =
      interpret(g, {random_tensor(DType::f64, {3}, 4), random_tensor(DType::f64, {2, 5}, 5)});
  check_close(r[0], Tensor::zeros(DType::f64, {2, 5}), 0);
  check_close(r[1], map(random_tensor(DType::f64, {3}, 4), [](double v) { return std::exp(v); }),
              1e-12);

  SECTION("also when the unused value feeds other nodes") {
    const Value unused = o::sin(z);
    const auto d = grad(total(o::exp(x)), {unused});
    REQUIRE(d[0].type() == unused.type());
  }
}

TEST_CASE("vjp with respect to an intermediate value", "[autodiff]") {
  const Value x = param("x", {3});
  const Value h = o::sin(x);
  const Value loss = total(o::mul(h, h));
  const auto d = grad(loss, {h, x});
  const Tensor xv = random_tensor(DType::f64, {3}, 6);
  const auto r = interpret(Graph({x}, d), {xv});
  check_close(r[0], map(xv, [](double v) { return 2 * std::sin(v); }), 1e-12);
  check_close(r[1], map(xv, [](double v) { return 2 * std::sin(v) * std::cos(v); }), 1e-12);
}

TEST_CASE("2-layer tanh MLP with softmax cross-entropy matches finite differences", "[autodiff]") {
  const Value x = param("x", {4, 3}), w1 = param("w1", {3, 5}), b1 = param("b1", {5});
  const Value w2 = param("w2", {5, 3}), b2 = param("b2", {3});
  Tensor labels(DType::f64, {4, 3});
  for (int i = 0; i < 4; ++i) labels.at<double>({i, (i * 2) % 3}) = 1.0;
  const Value h = o::tanh(o::add(o::matmul(x, w1), b1));
  const Value logits = o::add(o::matmul(h, w2), b2);
  const Value nll =
      o::neg(o::reduce_sum(o::mul(o::constant(labels), o::log(o::softmax(logits, -1))), {-1}));
  const Graph f({x, w1, b1, w2, b2}, {o::reduce_mean(nll, {0})});
  const std::vector<Tensor> in = {
      random_tensor(DType::f64, {4, 3}, 10), random_tensor(DType::f64, {3, 5}, 11),
      random_tensor(DType::f64, {5}, 12), random_tensor(DType::f64, {5, 3}, 13),
      random_tensor(DType::f64, {3}, 14)};
  check_gradients(f, in, {0, 1, 2, 3, 4});
}

TEST_CASE("dot_general gradients restore the operands' axis order", "[autodiff]") {
  SECTION("matmul: d<A.B, W>/dA = W.B^T, d/dB = A^T.W") {
    const Value a = param("a", {2, 3}), b = param("b", {3, 4});
    const Tensor w = random_tensor(DType::f64, {2, 4}, 20);
    const Graph f({a, b}, {total(o::mul(o::matmul(a, b), o::constant(w)))});
    const Tensor av = random_tensor(DType::f64, {2, 3}, 21),
                 bv = random_tensor(DType::f64, {3, 4}, 22);
    const auto g = interpret(grad(f, {0, 1}), {av, bv});
    Tensor da(DType::f64, {2, 3}), db(DType::f64, {3, 4});
    for (int i = 0; i < 2; ++i)
      for (int k = 0; k < 3; ++k)
        for (int j = 0; j < 4; ++j) {
          da.at<double>({i, k}) += w.at<double>({i, j}) * bv.at<double>({k, j});
          db.at<double>({k, j}) += av.at<double>({i, k}) * w.at<double>({i, j});
        }
    check_close(g[0], da, 1e-12);
    check_close(g[1], db, 1e-12);
  }
  SECTION("batch and contracting axes scattered, contracting pairs in opposite orders") {
    // lhs [K1, B, M, K2], rhs [K2, N, B, K1] -> [B, M, N].
    const Value lhs = param("lhs", {3, 2, 2, 4}), rhs = param("rhs", {4, 3, 2, 3});
    const Value out = o::dot_general(lhs, rhs, {{0, 3}, {3, 0}, {1}, {2}});
    REQUIRE(out.shape() == Shape{2, 2, 3});
    const Graph f({lhs, rhs}, {weighted_total(out, 23)});
    check_gradients(
        f,
        {random_tensor(DType::f64, {3, 2, 2, 4}, 24), random_tensor(DType::f64, {4, 3, 2, 3}, 25)},
        {0, 1});
  }
  SECTION("two batch axes in swapped order, no free rhs axis") {
    // lhs [B1, M, B2, K], rhs [K, B2, B1] with lhs_batch {2, 0} -> [B2, B1, M].
    const Value lhs = param("lhs", {2, 3, 4, 5}), rhs = param("rhs", {5, 4, 2});
    const Value out = o::dot_general(lhs, rhs, {{3}, {0}, {2, 0}, {1, 2}});
    REQUIRE(out.shape() == Shape{4, 2, 3});
    const Graph f({lhs, rhs}, {weighted_total(out, 26)});
    check_gradients(
        f, {random_tensor(DType::f64, {2, 3, 4, 5}, 27), random_tensor(DType::f64, {5, 4, 2}, 28)},
        {0, 1});
  }
  SECTION("outer product (no contraction)") {
    const Value a = param("a", {3}), b = param("b", {2});
    const Graph f({a, b}, {weighted_total(o::dot_general(a, b, {{}, {}, {}, {}}), 29)});
    check_gradients(f, {random_tensor(DType::f64, {3}, 30), random_tensor(DType::f64, {2}, 31)},
                    {0, 1});
  }
}

TEST_CASE("broadcast_in_dim sums over new and stretched axes; reductions broadcast back",
          "[autodiff]") {
  const Value a = param("a", {3}), b = param("b", {2, 1, 4});
  SECTION("hand-derived") {
    // d/da sum(broadcast(a)) = number of copies = 2 * 4.
    const Graph f({a}, {total(o::broadcast_in_dim(a, {2, 3, 4}, {1}))});
    check_close(interpret(grad(f, {0}), {random_tensor(DType::f64, {3}, 40)})[0],
                Tensor::full(DType::f64, {3}, 8.0), 0);
  }
  SECTION("finite differences") {
    const Value ab = o::broadcast_in_dim(a, {2, 3, 4}, {1});
    const Value bb = o::broadcast_in_dim(b, {2, 3, 4}, {0, 1, 2});
    const Value c = o::mul(o::mul(ab, bb), o::constant(random_tensor(DType::f64, {2, 3, 4}, 41)));
    const Value loss = o::add(o::reduce_mean(o::reduce_max(c, {2}), {0, 1}),
                              o::reduce_sum(o::reduce_mean(o::mul(c, c), {0, 2}), {0}));
    const Graph f({a, b}, {loss});
    check_gradients(
        f, {random_tensor(DType::f64, {3}, 42), random_tensor(DType::f64, {2, 1, 4}, 43)}, {0, 1});
  }
  SECTION("NumPy-style broadcasting in add") {
    const Graph f({a, b}, {weighted_total(o::add(a, o::reshape(b, {2, 4, 1})), 44)});
    check_gradients(
        f, {random_tensor(DType::f64, {3}, 45), random_tensor(DType::f64, {2, 1, 4}, 46)}, {0, 1});
  }
}

TEST_CASE("max, min and reduce_max split the gradient equally between ties", "[autodiff]") {
  const Value x = param("x", {3}), y = param("y", {3});
  const Tensor xv = Tensor::from_vector<double>({3}, {1, 2, 3});
  const Tensor yv = Tensor::from_vector<double>({3}, {1, 0, 5});
  auto run = [&](const Value& loss) {
    return interpret(grad(Graph({x, y}, {loss}), {0, 1}), {xv, yv});
  };
  auto g = run(total(o::max(x, y)));
  check_close(g[0], Tensor::from_vector<double>({3}, {0.5, 1, 0}), 0);
  check_close(g[1], Tensor::from_vector<double>({3}, {0.5, 0, 1}), 0);
  g = run(total(o::min(x, y)));
  check_close(g[0], Tensor::from_vector<double>({3}, {0.5, 0, 1}), 0);
  check_close(g[1], Tensor::from_vector<double>({3}, {0.5, 1, 0}), 0);

  const Value m = param("m", {2, 3});
  const Tensor mv = Tensor::from_vector<double>({2, 3}, {2, 2, 1, 0, 4, 4});
  const auto gm = interpret(grad(Graph({m}, {total(o::reduce_max(m, {1}))}), {0}), {mv});
  check_close(gm[0], Tensor::from_vector<double>({2, 3}, {0.5, 0.5, 0, 0, 0.5, 0.5}), 0);
}

TEST_CASE("every elementwise rule in one composite matches finite differences", "[autodiff]") {
  const Value x = param("x", {2, 3}), y = param("y", {2, 3});
  const Value one = o::scalar(1.0, DType::f64);
  const Value y2p1 = o::add(o::mul(y, y), one);  // > 0
  std::vector<Value> terms = {o::mul(o::gelu(x), o::sigmoid(y)),
                              o::mul(o::erf(x), o::cos(y)),
                              o::sqrt(o::exp(x)),
                              o::rsqrt(y2p1),
                              o::log(y2p1),
                              o::abs(x),
                              o::relu(y),
                              o::pow(o::exp(x), y),
                              o::min(x, y),
                              o::max(x, o::neg(y)),
                              o::div(x, y2p1),
                              o::sub(o::tanh(x), y),
                              o::select(o::gt(x, y), o::mul(x, x), o::sin(y))};
  Value sum = terms[0];
  for (std::size_t i = 1; i < terms.size(); ++i) sum = o::add(sum, terms[i]);
  const Graph f({x, y}, {weighted_total(sum, 50)});
  check_gradients(f, {random_tensor(DType::f64, {2, 3}, 51), random_tensor(DType::f64, {2, 3}, 52)},
                  {0, 1});
}

TEST_CASE("layout ops: strided slice, interior pad, concat, transpose, reshape", "[autodiff]") {
  const Value x = param("x", {5, 4});
  const Value s = o::slice(x, {1, 0}, {5, 4}, {2, 3});     // [2, 2]
  const Value p = o::pad(s, 1.5, {1, 0}, {0, 2}, {1, 1});  // [4, 5]
  REQUIRE(p.shape() == Shape{4, 5});
  const Value c = o::concat({p, o::transpose(x, {1, 0}), o::slice_axis(p, 0, 1, 3)}, 0);
  const Value r = o::reshape(c, {5, 10});
  const Graph f({x}, {weighted_total(o::mul(r, r), 60)});
  check_gradients(f, {random_tensor(DType::f64, {5, 4}, 61)}, {0});

  SECTION("slice gradient is g padded back in place") {
    const Graph fs({x}, {total(s)});
    Tensor expected(DType::f64, {5, 4});
    for (int i : {1, 3})
      for (int j : {0, 3}) expected.at<double>({i, j}) = 1.0;
    check_close(interpret(grad(fs, {0}), {random_tensor(DType::f64, {5, 4}, 62)})[0], expected, 0);
  }
}

TEST_CASE("take and scatter_add are each other's transpose", "[autodiff]") {
  const Value x = param("x", {5, 3}), u = param("u", {3, 4, 2});
  const Value idx = o::constant(Tensor::from_vector<std::int32_t>({4}, {0, 2, 2, 4}));
  const Tensor w = random_tensor(DType::f64, {4, 3}, 70);
  const Graph f({x}, {total(o::mul(o::take(x, idx, 0), o::constant(w)))});
  const Tensor dx = interpret(grad(f, {0}), {random_tensor(DType::f64, {5, 3}, 71)})[0];
  Tensor expected(DType::f64, {5, 3});
  const int rows[] = {0, 2, 2, 4};
  for (int k = 0; k < 4; ++k)
    for (int j = 0; j < 3; ++j) expected.at<double>({rows[k], j}) += w.at<double>({k, j});
  check_close(dx, expected, 1e-12);

  const Graph fs({u}, {weighted_total(o::scatter_add(idx, u, 1, 6), 72)});
  check_gradients(fs, {random_tensor(DType::f64, {3, 4, 2}, 73)}, {0});
  const Value cols = o::constant(Tensor::from_vector<std::int64_t>({2, 2}, {2, 0, 2, 1}));
  const Graph ft({x}, {weighted_total(o::take(x, cols, -1), 74)});  // [5, 2, 2], negative axis
  check_gradients(ft, {random_tensor(DType::f64, {5, 3}, 75)}, {0});
}

TEST_CASE("layer_norm: y, mean and rstd are all differentiable", "[autodiff]") {
  const Value x = param("x", {3, 5}), gamma = param("gamma", {5}), beta = param("beta", {5});
  const std::vector<Tensor> in = {random_tensor(DType::f64, {3, 5}, 80),
                                  random_tensor(DType::f64, {5}, 81, 0.5, 1.5),
                                  random_tensor(DType::f64, {5}, 82)};
  const auto ln = o::layer_norm_full(x, gamma, beta, 1e-5);
  SECTION("all three outputs") {
    const Value loss = o::add(o::add(weighted_total(ln[0], 83), weighted_total(ln[1], 84)),
                              weighted_total(ln[2], 85));
    check_gradients(Graph({x, gamma, beta}, {loss}), in, {0, 1, 2}, 1e-5);
  }
  SECTION("only the statistics (gamma and beta get zeros)") {
    const Value loss = o::add(weighted_total(ln[1], 86), weighted_total(ln[2], 87));
    const Graph f({x, gamma, beta}, {loss});
    check_gradients(f, in, {0}, 1e-5);
    const auto g = interpret(grad(f, {1, 2}), in);
    check_close(g[0], Tensor::zeros(DType::f64, {5}), 0);
    check_close(g[1], Tensor::zeros(DType::f64, {5}), 0);
  }
  SECTION("without gamma and beta") {
    const auto plain = o::layer_norm_full(x, std::nullopt, std::nullopt, 1e-5);
    const Value loss = o::add(weighted_total(plain[0], 88), weighted_total(plain[2], 89));
    check_gradients(Graph({x}, {loss}), {in[0]}, {0}, 1e-5);
  }
}

TEST_CASE("attention: out and lse are both differentiable under every mask kind", "[autodiff]") {
  const Value q = param("q", {2, 3, 4}), k = param("k", {2, 5, 4}), v = param("v", {2, 5, 2});
  Tensor mask(DType::u8, {3, 5});
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 5; ++j) mask.at<std::uint8_t>({i, j}) = (i + j) % 3 != 0;
  const std::vector<std::pair<const char*, o::AttentionMask>> masks = {
      {"none", o::AttentionMask::none()},
      {"causal", o::AttentionMask::causal()},
      {"window", o::AttentionMask::sliding_window(2)},
      {"tensor", o::AttentionMask::from_tensor(o::constant(mask))}};
  const std::vector<Tensor> in = {random_tensor(DType::f64, {2, 3, 4}, 90),
                                  random_tensor(DType::f64, {2, 5, 4}, 91),
                                  random_tensor(DType::f64, {2, 5, 2}, 92)};
  for (const auto& [name, m] : masks) {
    DYNAMIC_SECTION("mask " << name) {
      o::AttentionOptions opts;
      opts.mask = m;
      const auto att = o::attention_full(q, k, v, opts);
      const Value both = o::add(weighted_total(att[0], 93), weighted_total(att[1], 94));
      check_gradients(Graph({q, k, v}, {both}), in, {0, 1, 2}, 1e-5);
      // lse alone: v gets zeros, q and k get the primitive-op path only.
      const Graph lse_only({q, k, v}, {weighted_total(att[1], 95)});
      check_gradients(lse_only, in, {0, 1, 2}, 1e-5);
    }
  }
}

TEST_CASE("lstm: a missing output cotangent counts as zeros", "[autodiff]") {
  const Value x = param("x", {2, 3, 2}), w_ih = param("w_ih", {2, 8}), w_hh = param("w_hh", {2, 8});
  const Value b = param("b", {8}), h0 = param("h0", {2, 2}), c0 = param("c0", {2, 2});
  const auto seq = o::lstm(x, w_ih, w_hh, b, h0, c0);
  const std::vector<Tensor> in = {
      random_tensor(DType::f64, {2, 3, 2}, 100), random_tensor(DType::f64, {2, 8}, 101),
      random_tensor(DType::f64, {2, 8}, 102),    random_tensor(DType::f64, {8}, 103),
      random_tensor(DType::f64, {2, 2}, 104),    random_tensor(DType::f64, {2, 2}, 105)};
  const std::vector<int> all = {0, 1, 2, 3, 4, 5};
  SECTION("h_seq only") {
    check_gradients(Graph({x, w_ih, w_hh, b, h0, c0}, {weighted_total(seq[0], 106)}), in, all,
                    1e-5);
  }
  SECTION("c_seq only") {
    check_gradients(Graph({x, w_ih, w_hh, b, h0, c0}, {weighted_total(seq[1], 107)}), in, all,
                    1e-5);
  }
}

TEST_CASE("gradients over the dynamic batch axis", "[autodiff]") {
  const Value x = param("x", {kDynamic, 3}), w = param("w", {3});
  const Value per_row = o::reduce_sum(o::mul(x, w), {1});  // w broadcast over the batch
  const Value loss = o::reduce_mean(o::mul(per_row, per_row), {0});
  const Graph f({x, w}, {loss});
  const Graph g = grad(f, {0, 1});
  REQUIRE(g.outputs()[0].shape() == Shape{kDynamic, 3});
  for (std::int64_t batch : {1, 4}) {
    INFO("batch " << batch);
    check_gradients(
        f, {random_tensor(DType::f64, {batch, 3}, 110), random_tensor(DType::f64, {3}, 111)},
        {0, 1});
  }
}

TEST_CASE("f32 graphs get f32 gradients", "[autodiff]") {
  const Value x = param("x", {4}, DType::f32);
  const Graph f({x}, {total(o::gelu(x))});
  const Graph g = grad(f, {0});
  REQUIRE(g.outputs()[0].dtype() == DType::f32);
  const Tensor xv = random_tensor(DType::f64, {4}, 120).cast(DType::f32);
  const Tensor expected = map(xv, [](double v) {
    return 0.5 * (1 + std::erf(v / std::sqrt(2.0))) +
           v * std::exp(-v * v / 2) / std::sqrt(2 * std::numbers::pi);
  });
  check_close(interpret(g, {xv})[0], expected, 1e-5);

  SECTION("float casts cast the cotangent back") {
    // Finite differences cannot see through an f32 round trip, so this one is by hand.
    const Value y = param("y", {4});
    const Tensor w = random_tensor(DType::f64, {4}, 121);
    const Value loss = total(o::mul(o::cast(o::cast(y, DType::f32), DType::f64), o::constant(w)));
    const Tensor dy =
        interpret(grad(Graph({y}, {loss}), {0}), {random_tensor(DType::f64, {4}, 122)})[0];
    check_close(dy, w.cast(DType::f32).cast(DType::f64), 0);
  }
}

TEST_CASE("grad(Graph) keeps the inputs and optionally the output", "[autodiff]") {
  const Value x = param("x", {3}), y = param("y", {3});
  const Graph f({x, y}, {total(o::mul(x, y))});
  const Graph g = grad(f, {1}, true);
  REQUIRE(g.inputs().size() == 2);
  REQUIRE(g.inputs()[0] == x);
  REQUIRE(g.inputs()[1] == y);
  REQUIRE(g.outputs().size() == 2);
  REQUIRE(g.outputs()[0] == f.outputs()[0]);
  const Tensor xv = random_tensor(DType::f64, {3}, 130), yv = random_tensor(DType::f64, {3}, 131);
  const auto r = interpret(g, {xv, yv});
  double dot = 0;
  for (int i = 0; i < 3; ++i) dot += xv.get_as_double(i) * yv.get_as_double(i);
  CHECK(r[0].get_as_double(0) == Approx(dot));
  check_close(r[1], xv, 0);
}

TEST_CASE("gradient nodes are attributed to the forward op's scope and line", "[autodiff]") {
  const Value x = param("x", {3}), w = param("w", {3});
  const auto layer_loc = std::source_location::current();
  Value h;
  {
    LayerScope scope("layer_1", "dense", layer_loc);
    h = o::tanh(o::mul(x, w));
  }
  const Value loss = total(h);
  const std::uint_least32_t loss_line = loss.node().location().line();
  const Graph f({x, w}, {loss});
  const Graph g = grad(f, {0, 1});

  std::set<const Node*> forward;
  for (const Node* n : f.nodes()) forward.insert(n);
  int in_layer = 0, outside = 0;
  for (const Node* n : g.nodes()) {
    if (forward.count(n)) continue;
    INFO(g.to_string());
    if (n->scope() == "layer_1") {
      ++in_layer;
      CHECK(n->location().line() == layer_loc.line());
    } else {
      ++outside;
      CHECK(n->scope().empty());
      CHECK(n->location().line() == loss_line);  // the seed and reduce_sum's gradient
    }
  }
  CHECK(in_layer > 0);
  CHECK(outside > 0);
}

TEST_CASE("autodiff errors name the offending type or op", "[autodiff]") {
  const Value x = param("x", {3});
  SECTION("grad of a non-scalar") {
    CHECK_THROWS_WITH(grad(o::exp(x), {x}),
                      Catch::Contains("rank-0 float") && Catch::Contains("f64[3]"));
  }
  SECTION("grad of an integer scalar") {
    const Value i = param("i", {}, DType::i32);
    CHECK_THROWS_WITH(grad(i, {i}), Catch::Contains("i32[]"));
  }
  SECTION("wrt an integer value") {
    const Value i = param("i", {3}, DType::i64);
    CHECK_THROWS_WITH(grad(total(x), {x, i}), Catch::Contains("i64[3]"));
  }
  SECTION("cotangent of the wrong type") {
    CHECK_THROWS_WITH(vjp({x}, {o::scalar(1.0, DType::f64)}, {x}),
                      Catch::Contains("f64[]") && Catch::Contains("f64[3]"));
  }
  SECTION("grad(Graph) with a bad index") {
    CHECK_THROWS_WITH(grad(Graph({x}, {total(x)}), {1}), Catch::Contains("out of range"));
  }
  SECTION("second order through a fused backward op") {
    const Value xm = param("xm", {2, 3});
    const auto ln = o::layer_norm_full(xm, std::nullopt, std::nullopt, 1e-5);
    const Value dx =
        o::layer_norm_backward(xm, ln[1], ln[2], o::mul(xm, xm), std::nullopt, 1e-5)[0];
    CHECK_THROWS_WITH(grad(total(dx), {xm}),
                      Catch::Contains("layer_norm_backward: second-order gradients are not "
                                      "supported"));
  }
  SECTION("no gradient flows into integer ops or indices") {
    const Value i = param("i", {3}, DType::i32);
    const Value loss = total(o::mul(x, o::cast(o::abs(i), DType::f64)));
    const auto d = grad(loss, {x});
    const auto r = interpret(
        Graph({x, i}, d),
        {random_tensor(DType::f64, {3}, 140), Tensor::from_vector<std::int32_t>({3}, {-1, 2, 0})});
    check_close(r[0], Tensor::from_vector<double>({3}, {1, 2, 0}), 0);
  }
}
