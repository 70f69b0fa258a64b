// Determinism: the same inputs give bit-identical outputs run after run, with 1 or 2 threads
// (Options::threads), and when one executable runs on several threads at once. The graph mixes
// every kernel kind large enough to be split into several tasks: a GEMM with an epilogue,
// row and column reductions, a big elementwise loop, softmax, layer_norm, a gather and a
// concatenation.
#include <edifice/core/autodiff.hpp>
#include <edifice/core/interpreter.hpp>
#include <edifice/core/ops.hpp>
#include <edifice/jit/jit.hpp>

#include <catch2/catch.hpp>

#include "test_util.hpp"

#include <cmath>
#include <random>
#include <thread>
#include <vector>

using namespace edifice;
namespace o = edifice::ops;

using edifice::test::random_tensor;

namespace {

struct Mixed {
  Graph graph;
  std::vector<Tensor> inputs;
};

Mixed mixed_graph(DType ft) {
  auto x = o::parameter("x", ft, {96, 160});
  auto w = o::parameter("w", ft, {160, 128});
  auto b = o::parameter("b", ft, {128});
  auto big = o::parameter("big", ft, {512, 300});
  auto idx = o::parameter("idx", DType::i32, {40});
  auto h = o::gelu(o::matmul(x, w) + b);                       // gemm + epilogue
  auto rows = o::reduce_sum(o::exp(o::tanh(big)), {1});        // row reduction, 512 items
  auto cols = o::reduce_mean(big * big, {0});                  // column reduction
  auto loop = o::sin(big) * 2.0 + o::sqrt(o::abs(big) + 0.5);  // big elementwise loop
  auto sm = o::softmax(h, -1);
  auto ln = o::layer_norm(h, 1e-5);
  auto gathered = o::concat({o::take(h, idx, 0), o::slice_axis(h, 0, 0, 8)}, 0);
  auto mx = o::reduce_max(o::matmul(o::transpose(x, {1, 0}), x), {0});  // transposed operand
  Graph g({x, w, b, big, idx}, {h, rows, cols, loop, sm, ln, gathered, mx});
  std::vector<std::int32_t> ids(40);
  for (int i = 0; i < 40; ++i) ids[static_cast<std::size_t>(i)] = (i * 37) % 96;
  return {g,
          {random_tensor(ft, {96, 160}, 1), random_tensor(ft, {160, 128}, 2),
           random_tensor(ft, {128}, 3), random_tensor(ft, {512, 300}, 4),
           Tensor::from_vector<std::int32_t>({40}, ids)}};
}

jit::Options with_threads(int threads) {
  jit::Options opt;
  opt.threads = threads;
  opt.disk_cache = false;
  return opt;
}

std::vector<Shape> shapes_of(const std::vector<Tensor>& ts) {
  std::vector<Shape> s;
  for (const Tensor& t : ts) s.push_back(t.shape());
  return s;
}

void check_identical(const std::vector<Tensor>& a, const std::vector<Tensor>& b) {
  REQUIRE(a.size() == b.size());
  for (std::size_t k = 0; k < a.size(); ++k) {
    INFO("output " << k);
    CHECK(a[k].bitwise_equal(b[k]));
  }
}

}  // namespace

TEST_CASE("same inputs give bit-identical outputs, whatever the thread count",
          "[jit][determinism]") {
  for (DType ft : {DType::f32, DType::f64}) {
    INFO("dtype " << dtype_name(ft));
    Mixed m = mixed_graph(ft);
    auto one = jit::compile(m.graph, shapes_of(m.inputs), with_threads(1));
    auto two = jit::compile(m.graph, shapes_of(m.inputs), with_threads(2));
    INFO("plan:\n" << two->plan());
    std::vector<Tensor> reference = one->run(m.inputs);

    // Sanity: the values are right.
    std::vector<Tensor> want = interpret(m.graph, m.inputs);
    REQUIRE(want.size() == reference.size());
    double tol = ft == DType::f32 ? 1e-4 : 1e-10;
    for (std::size_t k = 0; k < want.size(); ++k)
      for (std::int64_t i = 0; i < want[k].numel(); ++i) {
        double g = reference[k].get_as_double(i), w = want[k].get_as_double(i);
        INFO("output " << k << " element " << i << ": jit " << g << ", interpreter " << w);
        REQUIRE(std::abs(g - w) <= tol * (1 + std::abs(w)));
      }

    for (int run = 0; run < 3; ++run) {
      INFO("1 thread, run " << run);
      check_identical(one->run(m.inputs), reference);
    }
    for (int run = 0; run < 3; ++run) {
      INFO("2 threads, run " << run);
      check_identical(two->run(m.inputs), reference);
    }
    // One executable run from two threads at once, and another beside them.
    std::vector<Tensor> from_a, from_b, from_c;
    std::thread ta([&] { from_a = two->run(m.inputs); });
    std::thread tb([&] { from_b = two->run(m.inputs); });
    std::thread tc([&] { from_c = one->run(m.inputs); });
    ta.join();
    tb.join();
    tc.join();
    check_identical(from_a, reference);
    check_identical(from_b, reference);
    check_identical(from_c, reference);
    // Inputs held in different buffers (other addresses, other alignment history).
    std::vector<Tensor> copies;
    for (const Tensor& t : m.inputs) copies.push_back(t.clone());
    check_identical(two->run(copies), reference);
  }
}

TEST_CASE("layer_norm_backward is bit-identical whatever the thread count", "[jit][determinism]") {
  // dgamma/dbeta column blocks (whole and partial) and dx rows, split over two tasks.
  for (std::int64_t c : {256, 200}) {
    INFO("features " << c);
    auto x = o::parameter("x", DType::f32, {700, c});
    auto gamma = o::parameter("gamma", DType::f32, {c});
    auto beta = o::parameter("beta", DType::f32, {c});
    auto w = o::parameter("w", DType::f32, {700, c});
    Value loss = o::reduce_sum(o::layer_norm(x, gamma, beta, 1e-5) * w, {0, 1}, false);
    Graph g({x, gamma, beta, w}, grad(loss, {x, gamma, beta}));
    std::vector<Tensor> in = {
        random_tensor(DType::f32, {700, c}, 1), random_tensor(DType::f32, {c}, 2, 0.5, 1.5),
        random_tensor(DType::f32, {c}, 3), random_tensor(DType::f32, {700, c}, 4)};
    auto one = jit::compile(g, shapes_of(in), with_threads(1));
    auto two = jit::compile(g, shapes_of(in), with_threads(2));
    INFO("plan:\n" << two->plan());
    std::vector<Tensor> reference = one->run(in);
    for (int run = 0; run < 3; ++run) check_identical(two->run(in), reference);
  }
}
