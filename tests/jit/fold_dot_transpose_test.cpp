// fold_dot_transpose: transpose(dot(a, b)) becomes dot(b, a) where the transpose swaps the
// free-axis groups and nothing else reads the dot; pinned through the pass itself (plan.hpp),
// with values bit-identical in the interpreter and the JIT matching it. A dense layer's weight
// gradient (autodiff's transpose(dot(dy, x))) is the case that matters.
#include <edifice/core/autodiff.hpp>
#include <edifice/core/interpreter.hpp>
#include <edifice/core/op_attrs.hpp>
#include <edifice/core/ops.hpp>
#include <edifice/jit/jit.hpp>

#include "../../jit/src/plan.hpp"

#include <catch2/catch.hpp>

#include "test_util.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

using namespace edifice;
namespace o = edifice::ops;

using edifice::test::max_abs_diff;
using edifice::test::random_tensor;

namespace {

std::vector<const Node*> nodes_of(const Graph& g, Op op) {
  std::vector<const Node*> r;
  for (const Node* n : g.nodes())
    if (n->op() == op) r.push_back(n);
  return r;
}

std::vector<Tensor> random_inputs(const Graph& g) {
  std::vector<Tensor> in;
  std::uint32_t seed = 3;
  for (const Value& v : g.inputs()) in.push_back(random_tensor(v.dtype(), v.shape(), seed++));
  return in;
}

bool bit_equal(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && a.nbytes() == b.nbytes() &&
         std::memcmp(a.raw_data(), b.raw_data(), a.nbytes()) == 0;
}

// Interpreter bit-identical before and after the pass (each element is the same sum in the same
// order), and the JIT (which runs the pass) within rounding of the interpreter.
void check_values(const Graph& g, const Graph& folded) {
  auto in = random_inputs(g);
  auto ref = interpret(g, in);
  auto ref_folded = interpret(folded, in);
  std::vector<Shape> shapes;
  for (const Tensor& t : in) shapes.push_back(t.shape());
  jit::Options options;
  options.disk_cache = false;
  auto got = jit::compile(g, shapes, options)->run(in);
  REQUIRE(ref.size() == got.size());
  for (std::size_t i = 0; i < ref.size(); ++i) {
    CHECK(bit_equal(ref[i], ref_folded[i]));
    CHECK(max_abs_diff(got[i], ref[i]) <= 1e-5);
  }
}

}  // namespace

TEST_CASE("fold_dot_transpose: a transposed product is the product with swapped operands",
          "[jit][fold_dot_transpose]") {
  // The weight-gradient shape: [K, M] x [K, N] contracted over K, transposed to [N, M].
  auto a = o::parameter("a", DType::f32, {37, 19});
  auto b = o::parameter("b", DType::f32, {37, 45});
  Value y = o::transpose(o::dot_general(a, b, {{0}, {0}, {}, {}}), {1, 0});
  Graph g({a, b}, {y});
  Graph folded = jit::fold_dot_transpose(g);
  INFO(folded.to_string());
  CHECK(nodes_of(folded, Op::transpose).empty());
  auto dots = nodes_of(folded, Op::dot_general);
  REQUIRE(dots.size() == 1);
  CHECK(dots[0]->inputs()[0] == b);
  CHECK(dots[0]->inputs()[1] == a);
  CHECK(folded.outputs()[0].shape() == Shape{45, 19});
  check_values(g, folded);
}

TEST_CASE("fold_dot_transpose: batch axes stay first", "[jit][fold_dot_transpose]") {
  auto a = o::parameter("a", DType::f32, {3, 7, 5});
  auto b = o::parameter("b", DType::f32, {3, 5, 9});
  Value y = o::transpose(o::dot_general(a, b, {{2}, {1}, {0}, {0}}), {0, 2, 1});
  Graph g({a, b}, {y});
  Graph folded = jit::fold_dot_transpose(g);
  INFO(folded.to_string());
  CHECK(nodes_of(folded, Op::transpose).empty());
  CHECK(folded.outputs()[0].shape() == Shape{3, 9, 7});
  check_values(g, folded);
}

TEST_CASE("fold_dot_transpose: leaves other permutations and shared products alone",
          "[jit][fold_dot_transpose]") {
  auto a = o::parameter("a", DType::f32, {3, 7, 5});
  auto b = o::parameter("b", DType::f32, {3, 5, 9});
  Value d = o::dot_general(a, b, {{2}, {1}, {0}, {0}});
  // Moves the batch axis: not a swap of the free groups.
  Graph moved({a, b}, {o::transpose(d, {1, 0, 2})});
  CHECK(nodes_of(jit::fold_dot_transpose(moved), Op::transpose).size() == 1);
  // The product is also an output: folding would compute it twice.
  Graph shared({a, b}, {o::transpose(d, {0, 2, 1}), d});
  Graph kept = jit::fold_dot_transpose(shared);
  CHECK(nodes_of(kept, Op::transpose).size() == 1);
  CHECK(nodes_of(kept, Op::dot_general).size() == 1);
  check_values(shared, kept);
}

TEST_CASE("fold_dot_transpose: a dense layer's weight gradient is computed in place",
          "[jit][fold_dot_transpose]") {
  auto x = o::parameter("x", DType::f32, {4, 6, 16});
  auto w = o::parameter("w", DType::f32, {16, 8});
  Value loss = o::reduce_sum(o::tanh(o::matmul(x, w)), {0, 1, 2}, false);
  const std::vector<Value> dw = grad(loss, {w});
  Graph g({x, w}, dw);
  Graph folded = jit::fold_dot_transpose(g);
  INFO(g.to_string());
  INFO(folded.to_string());
  // Autodiff transposes dot(dy, x) into dw; after the pass the dot yields [16, 8] itself.
  REQUIRE(nodes_of(g, Op::transpose).size() == 1);
  CHECK(nodes_of(folded, Op::transpose).empty());
  CHECK(folded.outputs()[0].node().op() == Op::dot_general);
  check_values(g, folded);
}
