// Fusion: kernel counts and kinds of known patterns, read from Executable::kernels(), the
// boundaries Executable::plan() explains, and each pattern's values against the interpreter.
#include <edifice/core/interpreter.hpp>
#include <edifice/core/ops.hpp>
#include <edifice/jit/jit.hpp>

#include <fmt/format.h>
#include <catch2/catch.hpp>

#include "test_util.hpp"

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

using namespace edifice;
namespace o = edifice::ops;

using edifice::test::random_tensor;

namespace {

jit::Options options() {
  jit::Options opt;
  opt.disk_cache = false;
  return opt;
}

std::string describe(const jit::Executable& exe) {
  return "summary:\n" + exe.summary() + "plan:\n" + exe.plan();
}

std::vector<std::string> ops_of(const jit::KernelInfo& k) {
  return k.ops;
}

int count(const std::vector<std::string>& v, const std::string& x) {
  return static_cast<int>(std::count(v.begin(), v.end(), x));
}

/// How many kernels compute `op`.
int kernels_computing(const jit::Executable& exe, const std::string& op) {
  int n = 0;
  for (const auto& k : exe.kernels()) n += count(k.ops, op) > 0;
  return n;
}

/// Compiles, checks values against the interpreter (f32, reduction-class tolerance) and
/// returns the executable.
std::shared_ptr<const jit::Executable> compile_and_check(const Graph& g,
                                                         const std::vector<Tensor>& inputs) {
  std::vector<Shape> shapes;
  for (const Tensor& t : inputs) shapes.push_back(t.shape());
  auto exe = jit::compile(g, shapes, options());
  INFO(describe(*exe));
  auto got = exe->run(inputs);
  auto want = interpret(g, inputs);
  REQUIRE(got.size() == want.size());
  for (std::size_t k = 0; k < got.size(); ++k) {
    REQUIRE(got[k].shape() == want[k].shape());
    for (std::int64_t i = 0; i < got[k].numel(); ++i) {
      double a = got[k].get_as_double(i), b = want[k].get_as_double(i);
      INFO("output " << k << " element " << i << ": jit " << a << ", interpreter " << b);
      REQUIRE(std::abs(a - b) <= 1e-5 + 1e-5 * std::abs(b));
    }
  }
  return exe;
}

/// Every kernel's line in the plan says why it ends there.
void check_plan_explains_boundaries(const jit::Executable& exe) {
  std::string plan = exe.plan();
  INFO("plan:\n" << plan);
  for (const auto& k : exe.kernels()) {
    std::size_t at = plan.find(k.name + ":");
    REQUIRE(at != std::string::npos);
    std::string line = plan.substr(at, plan.find('\n', at) - at);
    INFO("kernel line: " << line);
    CHECK(line.find("(ends here: ") != std::string::npos);
  }
}

}  // namespace

TEST_CASE("dense + bias + gelu is one GEMM kernel", "[jit][fusion]") {
  auto x = o::parameter("x", DType::f32, {kDynamic, 48});
  auto w = o::parameter("w", DType::f32, {48, 24});
  auto b = o::parameter("b", DType::f32, {24});
  Graph g({x, w, b}, {o::gelu(o::matmul(x, w) + b)});
  auto exe = compile_and_check(
      g, {random_tensor(DType::f32, {9, 48}, 1), random_tensor(DType::f32, {48, 24}, 2),
          random_tensor(DType::f32, {24}, 3)});
  INFO(describe(*exe));
  REQUIRE(exe->kernels().size() == 1);
  const auto& k = exe->kernels()[0];
  CHECK(k.kind == "gemm");
  CHECK(count(k.ops, "dot_general") == 1);
  CHECK(count(k.ops, "add") == 1);
  CHECK(count(k.ops, "gelu") == 1);
  check_plan_explains_boundaries(*exe);
}

TEST_CASE("an elementwise chain of 5 ops is one loop kernel", "[jit][fusion]") {
  auto x = o::parameter("x", DType::f32, {13, 7});
  Graph g({x}, {o::sigmoid(o::exp(o::neg(o::tanh(o::sin(x)))))});
  auto exe = compile_and_check(g, {random_tensor(DType::f32, {13, 7}, 4)});
  INFO(describe(*exe));
  REQUIRE(exe->kernels().size() == 1);
  CHECK(exe->kernels()[0].kind == "loop");
  CHECK(ops_of(exe->kernels()[0]) ==
        std::vector<std::string>{"sin", "tanh", "neg", "exp", "sigmoid"});
  check_plan_explains_boundaries(*exe);
}

TEST_CASE("a chain with broadcasts and a constant stays one loop kernel", "[jit][fusion]") {
  auto x = o::parameter("x", DType::f32, {6, 10});
  auto b = o::parameter("b", DType::f32, {10});
  auto c = o::parameter("c", DType::f32, {6, 1});
  Graph g({x, b, c}, {o::relu((x * 2.0 + b) * c - 0.5)});
  auto exe = compile_and_check(
      g, {random_tensor(DType::f32, {6, 10}, 5), random_tensor(DType::f32, {10}, 6),
          random_tensor(DType::f32, {6, 1}, 7)});
  INFO(describe(*exe));
  CHECK(exe->kernels().size() == 1);
}

TEST_CASE("a value used twice is materialised once", "[jit][fusion]") {
  auto x = o::parameter("x", DType::f32, {64});
  auto t = o::exp(x);
  SECTION("two uses inside one expression") {
    // Materialised for its two uses, then computed by the one kernel that reads it (once per
    // element, memoised) and never stored: nothing else reads it.
    Graph g({x}, {o::sin(t) + o::cos(t)});
    auto exe = compile_and_check(g, {random_tensor(DType::f32, {64}, 8)});
    INFO(describe(*exe));
    CHECK(exe->kernels().size() == 1);
    CHECK(kernels_computing(*exe, "exp") == 1);
    CHECK(exe->kernels()[0].bytes == 2 * 64 * 4);  // x in, the sum out
    check_plan_explains_boundaries(*exe);
  }
  SECTION("two outputs reading it") {
    // The first reader computes and stores it, the second reads it.
    Graph g({x}, {o::sin(t), o::cos(t)});
    auto exe = compile_and_check(g, {random_tensor(DType::f32, {64}, 9)});
    INFO(describe(*exe));
    CHECK(exe->kernels().size() == 2);
    CHECK(kernels_computing(*exe, "exp") == 1);
    CHECK(kernels_computing(*exe, "sin") == 1);
    CHECK(kernels_computing(*exe, "cos") == 1);
  }
  SECTION("an index remap of an input is recomputed, not materialised") {
    // transpose of a buffer is free to recompute: both users read x directly.
    auto xt = o::transpose(o::reshape(x, {8, 8}), {1, 0});
    Graph g({x}, {o::sin(xt) + o::cos(xt)});
    auto exe = compile_and_check(g, {random_tensor(DType::f32, {64}, 10)});
    INFO(describe(*exe));
    CHECK(exe->kernels().size() == 1);
  }
}

TEST_CASE("an update that reads new values computes and stores them too", "[jit][fusion]") {
  // Adam's shape: m1 and v1 are outputs and the parameter update reads both, elementwise.
  const Shape s = {37, 50};
  auto p = o::parameter("p", DType::f32, s);
  auto gr = o::parameter("g", DType::f32, s);
  auto m = o::parameter("m", DType::f32, s);
  auto v = o::parameter("v", DType::f32, s);
  auto m1 = m * 0.9 + gr * 0.1;
  auto v1 = v * 0.999 + gr * gr * 0.001;
  auto p1 = p - m1 * 0.01 / (o::sqrt(v1) + 1e-8);
  std::vector<Tensor> in = {random_tensor(DType::f32, s, 20), random_tensor(DType::f32, s, 21),
                            random_tensor(DType::f32, s, 22),
                            random_tensor(DType::f32, s, 23, 0.0, 1.0)};
  SECTION("one kernel, three outputs") {
    auto exe = compile_and_check(Graph({p, gr, m, v}, {p1, m1, v1}), in);
    INFO(describe(*exe));
    REQUIRE(exe->kernels().size() == 1);
    CHECK(kernels_computing(*exe, "sqrt") == 1);
    CHECK(exe->kernels()[0].bytes == 7 * 37 * 50 * 4);  // p, g, m, v in; p1, m1, v1 out
    check_plan_explains_boundaries(*exe);
  }
  SECTION("not when another kernel reads the value in between") {
    // m1's column sums (a reduce kernel) come between m1's kernel and the update.
    auto exe =
        compile_and_check(Graph({p, gr, m, v}, {o::reduce_sum(m1, {0}, false), p1, m1, v1}), in);
    INFO(describe(*exe));
    CHECK(exe->kernels().size() == 3);
  }
  SECTION("not when the value is read at another index") {
    auto q = o::parameter("q", DType::f32, {50, 37});
    auto out = o::transpose(m1, {1, 0}) * q;
    auto exe =
        compile_and_check(Graph({p, gr, m, v, q}, {out, m1}),
                          {in[0], in[1], in[2], in[3], random_tensor(DType::f32, {50, 37}, 24)});
    INFO(describe(*exe));
    CHECK(exe->kernels().size() == 2);
  }
}

TEST_CASE("a head merge is one loop kernel reading whole runs", "[jit][fusion]") {
  // [B, H, S, D] -> [B, S, H*D]: column c reads head c / D, feature c % D (the loop walks
  // blocks of D columns); two merges with D = 8 and 12 share runs of gcd 4.
  auto x = o::parameter("x", DType::f32, {2, 3, 5, 8});
  auto y = o::parameter("y", DType::f32, {2, 2, 5, 12});
  auto r = o::parameter("r", DType::f32, {2, 5, 24});
  auto merge = [](const Value& v) {
    return o::reshape(o::transpose(v, {0, 2, 1, 3}), {v.dim(0), v.dim(2), v.dim(1) * v.dim(3)});
  };
  Graph g({x, y, r}, {merge(x) + r, merge(x) * 2.0 - merge(y)});
  auto exe = compile_and_check(
      g, {random_tensor(DType::f32, {2, 3, 5, 8}, 30), random_tensor(DType::f32, {2, 2, 5, 12}, 31),
          random_tensor(DType::f32, {2, 5, 24}, 32)});
  INFO(describe(*exe));
  CHECK(exe->kernels().size() == 2);
  for (const auto& k : exe->kernels()) CHECK(k.kind == "loop");
}

TEST_CASE("reduce_sum(exp(x)) is one reduce kernel", "[jit][fusion]") {
  auto x = o::parameter("x", DType::f32, {16, 33});
  Graph g({x}, {o::reduce_sum(o::exp(x), {1})});
  auto exe = compile_and_check(g, {random_tensor(DType::f32, {16, 33}, 11)});
  INFO(describe(*exe));
  REQUIRE(exe->kernels().size() == 1);
  CHECK(exe->kernels()[0].kind == "reduce");
  CHECK(ops_of(exe->kernels()[0]) == std::vector<std::string>{"exp", "reduce_sum"});
  check_plan_explains_boundaries(*exe);
}

TEST_CASE("softmax is one kernel", "[jit][fusion]") {
  auto x = o::parameter("x", DType::f32, {8, 40});
  Graph g({x}, {o::softmax(x, -1)});
  auto exe = compile_and_check(g, {random_tensor(DType::f32, {8, 40}, 12)});
  INFO(describe(*exe));
  REQUIRE(exe->kernels().size() == 1);
  CHECK(exe->kernels()[0].kind == "softmax");
  check_plan_explains_boundaries(*exe);
}

TEST_CASE("a residual add and a head merge are computed inside the layer norm", "[jit][fusion]") {
  // The post-LN block's LN(x + merge_heads(attn)): attn [B, nh, S, hd] is transposed and
  // reshaped to [B, S, nh * hd] and added to x, all inside the layer_norm kernel.
  auto x = o::parameter("x", DType::f32, {2, 5, 12});
  auto attn = o::parameter("attn", DType::f32, {2, 3, 5, 4});
  auto gamma = o::parameter("gamma", DType::f32, {12});
  auto beta = o::parameter("beta", DType::f32, {12});
  auto merged = o::reshape(o::transpose(attn, {0, 2, 1, 3}), {2, 5, 12});
  Graph g({x, attn, gamma, beta}, {o::layer_norm(o::add(x, merged), gamma, beta, 1e-5)});
  auto exe = compile_and_check(
      g, {random_tensor(DType::f32, {2, 5, 12}, 21), random_tensor(DType::f32, {2, 3, 5, 4}, 22),
          random_tensor(DType::f32, {12}, 23), random_tensor(DType::f32, {12}, 24)});
  INFO(describe(*exe));
  REQUIRE(exe->kernels().size() == 1);
  CHECK(exe->kernels()[0].kind == "layer_norm");
  CHECK(ops_of(exe->kernels()[0]) ==
        std::vector<std::string>{"transpose", "reshape", "add", "layer_norm"});
  check_plan_explains_boundaries(*exe);
}

TEST_CASE("a GEMM reads a column block of its weight in place", "[jit][fusion]") {
  // x . W[:, 8:20] (what the pruned last layer does with the fused QKV weight): no copy of the
  // block, the GEMM reads W with W's row stride; with 1 and with 7 rows of x (the small-M and
  // the packed paths).
  for (std::int64_t rows : {1, 7}) {
    auto x = o::parameter("x", DType::f32, {rows, 16});
    auto w = o::parameter("w", DType::f32, {16, 36});
    Graph g({x, w}, {o::matmul(x, o::slice_axis(w, 1, 8, 20))});
    auto exe = compile_and_check(
        g, {random_tensor(DType::f32, {rows, 16}, 31), random_tensor(DType::f32, {16, 36}, 32)});
    INFO(describe(*exe));
    REQUIRE(exe->kernels().size() == 1);
    CHECK(exe->kernels()[0].kind == "gemm");
    check_plan_explains_boundaries(*exe);
  }
}

TEST_CASE("a GEMM reads a column block of its transposed weight in place", "[jit][fusion]") {
  // x . W[:, 8:24]^T (the absorbed key projection: W's rows are the product's N, the block's
  // columns its K): no copy either; 3 rows of x take the small-M dot-product path, 7 the packed
  // path.
  for (std::int64_t rows : {3, 7}) {
    auto x = o::parameter("x", DType::f32, {rows, 16});
    auto w = o::parameter("w", DType::f32, {21, 40});
    Graph g({x, w}, {o::dot_general(x, o::slice_axis(w, 1, 8, 24),
                                    {.lhs_contract = {1}, .rhs_contract = {1}})});
    auto exe = compile_and_check(
        g, {random_tensor(DType::f32, {rows, 16}, 33), random_tensor(DType::f32, {21, 40}, 34)});
    INFO(describe(*exe));
    REQUIRE(exe->kernels().size() == 1);
    CHECK(exe->kernels()[0].kind == "gemm");
  }
}

TEST_CASE("plan() explains every kernel boundary", "[jit][fusion]") {
  // A reduction feeding elementwise work, a value with two users and a GEMM.
  auto x = o::parameter("x", DType::f32, {12, 20});
  auto w = o::parameter("w", DType::f32, {20, 5});
  auto m = o::reduce_max(x, {1}, true);
  auto e = o::exp(x - m);
  auto y = o::matmul(e / o::reduce_sum(e, {1}, true), w);
  Graph g({x, w}, {y, m});
  auto exe = compile_and_check(
      g, {random_tensor(DType::f32, {12, 20}, 13), random_tensor(DType::f32, {20, 5}, 14)});
  INFO(describe(*exe));
  CHECK(exe->kernels().size() >= 3);
  check_plan_explains_boundaries(*exe);
  std::string plan = exe->plan();
  CHECK(plan.find("ends here") != std::string::npos);
  CHECK(plan.find("graph output") != std::string::npos);
  CHECK(plan.find("used 2 times") != std::string::npos);  // e feeds the sum and the division
  // summary(): one line per kernel.
  std::string summary = exe->summary();
  CHECK(static_cast<std::size_t>(std::count(summary.begin(), summary.end(), '\n')) ==
        exe->kernels().size());
}
