// absorb_projections: which attentions the pass rewrites (few query rows over keys and values
// projected from H, used nowhere else) and which it leaves, pinned through the pass itself
// (plan.hpp); then values of the compiled graph, absorbed and not, against the interpreter on
// the original graph, in f32 and f64, for every mask kind, with and without biases, a query
// row with no allowed key and a fill close to the scores (where the key bias's per-row shift
// of the scores must be kept: dropping it changes the result).
#include <edifice/core/autodiff.hpp>
#include <edifice/core/interpreter.hpp>
#include <edifice/core/ops.hpp>
#include <edifice/jit/jit.hpp>

#include "../../jit/src/plan.hpp"

#include <catch2/catch.hpp>

#include "test_util.hpp"

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

using namespace edifice;
namespace o = edifice::ops;

using edifice::test::max_abs_diff;

namespace {

constexpr std::int64_t kBatch = 2, kKeys = 24, kModel = 16, kHeads = 2, kHead = 8, kHeadV = 6;

struct Case {
  ops::AttentionMask mask = ops::AttentionMask::none();
  std::int64_t query_rows = 1;
  std::int64_t query_offset = 0;
  double fill = -1e9;
  bool bias_k = true, bias_v = true;
  DType dtype = DType::f32;
};

// heads(x . W + b): [B, S, nh*hd] -> [B, nh, S, hd], the models' projection layout.
Value project(const Value& x, const std::string& name, std::int64_t head, bool bias, DType d) {
  Value y = o::dot_general(x, o::parameter(name + ".w", d, {kModel, kHeads * head}),
                           {.lhs_contract = {2}, .rhs_contract = {0}});
  if (bias)
    y = o::add(y,
               o::broadcast_in_dim(o::parameter(name + ".b", d, {kHeads * head}), y.shape(), {2}));
  const Shape& s = x.shape();
  return o::transpose(o::reshape(y, {s[0], s[1], kHeads, head}), {0, 2, 1, 3});
}

// Outputs: the attention output [B, nh, Sq, hdv] and its lse [B, nh, Sq]; optionally k too.
Graph attention_graph(const Case& c, bool output_keys = false) {
  Value xq = o::parameter("xq", c.dtype, {kBatch, c.query_rows, kModel});
  Value h = o::parameter("h", c.dtype, {kBatch, kKeys, kModel});
  Value q = project(xq, "q", kHead, true, c.dtype);
  Value k = project(h, "k", kHead, c.bias_k, c.dtype);
  Value v = project(h, "v", kHeadV, c.bias_v, c.dtype);
  ops::AttentionOptions opt;
  opt.mask = c.mask;
  opt.fill = c.fill;
  opt.query_offset = c.query_offset;
  std::vector<Value> r = o::attention_full(q, k, v, opt);
  std::vector<Value> outputs = {r[0], r[1]};
  if (output_keys) outputs.push_back(k);
  std::vector<Value> inputs;
  for (const Node* n : topological_order(outputs))
    if (n->op() == Op::parameter) inputs.push_back(n->output(0));
  return Graph(inputs, outputs);
}

std::vector<Tensor> random_inputs(const Graph& g, std::uint32_t seed) {
  std::vector<Tensor> in;
  for (const Value& v : g.inputs()) {
    Tensor t(v.dtype(), v.shape());
    std::mt19937 rng(seed++);
    std::uniform_real_distribution<double> u(-1, 1);
    for (std::int64_t i = 0; i < t.numel(); ++i) t.set_from_double(i, u(rng));
    in.push_back(t);
  }
  return in;
}

const Node& only_attention(const Graph& g) {
  std::vector<const Node*> found;
  for (const Node* n : g.nodes())
    if (n->op() == Op::attention) found.push_back(n);
  INFO(g.to_string());
  REQUIRE(found.size() == 1);
  return *found[0];
}

bool absorbed(const Graph& g) {
  // The rewritten attention reads H (plus a column of ones with a key bias) as its keys.
  const Graph a = jit::absorb_projections(g);
  const Value& keys = only_attention(a).inputs()[1];
  return keys.rank() == 3 && keys.shape()[1] == kKeys;
}

double max_abs(const Tensor& t) {
  double m = 0;
  for (std::int64_t i = 0; i < t.numel(); ++i) m = std::max(m, std::abs(t.get_as_double(i)));
  return m;
}

std::vector<Tensor> run(const Graph& g, const std::vector<Tensor>& in, bool absorb) {
  jit::Options opt;
  opt.disk_cache = false;
  opt.absorb_projections = absorb;
  std::vector<Shape> shapes;
  for (const Tensor& t : in) shapes.push_back(t.shape());
  return jit::compile(g, shapes, opt)->run(in);
}

// Absorbed and unabsorbed JIT results against the interpreter on the original graph.
void check_values(const Case& c) {
  Graph g = attention_graph(c);
  REQUIRE(absorbed(g));
  auto in = random_inputs(g, 7);
  auto ref = interpret(g, in);
  auto with = run(g, in, true);
  auto without = run(g, in, false);
  const double rel = c.dtype == DType::f64 ? 1e-12 : 1e-5;
  for (std::size_t i = 0; i < ref.size(); ++i) {
    INFO("output " << i);
    const double tol = rel * std::max(1.0, max_abs(ref[i]));
    CHECK(max_abs_diff(with[i], ref[i]) <= tol);
    CHECK(max_abs_diff(without[i], ref[i]) <= tol);
  }
}

}  // namespace

TEST_CASE("absorb_projections: one query row attends over H, heads folded into the query axis",
          "[jit][absorb]") {
  Case c;
  c.mask = ops::AttentionMask::sliding_window(5);
  c.query_offset = kKeys - 1;
  Graph a = jit::absorb_projections(attention_graph(c));
  const Node& att = only_attention(a);
  INFO(a.to_string());
  // q' [B, nh*Sq, Din+1] over keys [H, 1] [B, Sk, Din+1] and values H [B, Sk, Din].
  CHECK(att.inputs()[0].shape() == Shape{kBatch, kHeads, kModel + 1});
  CHECK(att.inputs()[1].shape() == Shape{kBatch, kKeys, kModel + 1});
  CHECK(att.inputs()[2].shape() == Shape{kBatch, kKeys, kModel});
  // The window predicate of the last position, per head, as an explicit mask.
  REQUIRE(att.attrs().get_string("mask") == "tensor");
  CHECK(att.inputs()[3].shape() == Shape{kHeads, kKeys});
  CHECK(att.attrs().get_float("scale") == Approx(1 / std::sqrt(double(kHead))));
  // No product with kKeys rows is left: the key and value projections are gone.
  for (const Node* n : a.nodes())
    if (n->op() == Op::dot_general) CHECK(n->output(0).shape()[1] != kKeys);
}

TEST_CASE("absorb_projections: leaves attention whose projections are needed or cheap",
          "[jit][absorb]") {
  SECTION("every query row (the direct form is cheaper)") {
    Case c;
    c.query_rows = kKeys;
    c.mask = ops::AttentionMask::causal();
    Graph g = attention_graph(c);
    CHECK(jit::absorb_projections(g).hash() == g.hash());
  }
  SECTION("the keys are an output too") {
    Graph g = attention_graph(Case{}, /*output_keys=*/true);
    CHECK(jit::absorb_projections(g).hash() == g.hash());
  }
  SECTION("a gradient graph (the backward reads k and v)") {
    Graph g = attention_graph(Case{});
    Value loss = o::reduce_sum(g.outputs()[0], {0, 1, 2, 3});
    std::vector<Value> wrt(g.inputs().begin(), g.inputs().end());
    std::vector<Value> grads = grad(loss, wrt);
    Graph gg(g.inputs(), grads);
    const Graph a = jit::absorb_projections(gg);
    CHECK(a.hash() == gg.hash());
  }
}

TEST_CASE("absorb_projections: values equal the interpreter's", "[jit][absorb]") {
  for (DType d : {DType::f32, DType::f64}) {
    Case c;
    c.dtype = d;
    SECTION(std::string("no mask, ") + std::string(dtype_name(d))) {
      check_values(c);
    }
    SECTION(std::string("causal, two query rows at an offset, ") + std::string(dtype_name(d))) {
      c.mask = ops::AttentionMask::causal();
      c.query_rows = 2;
      c.query_offset = 6;
      check_values(c);
    }
    SECTION(std::string("window, last row, ") + std::string(dtype_name(d))) {
      c.mask = ops::AttentionMask::sliding_window(4);
      c.query_offset = kKeys - 1;
      check_values(c);
    }
    SECTION(std::string("no biases, ") + std::string(dtype_name(d))) {
      c.bias_k = c.bias_v = false;
      c.mask = ops::AttentionMask::sliding_window(3);
      c.query_offset = 8;
      check_values(c);
    }
    SECTION(std::string("value bias only, ") + std::string(dtype_name(d))) {
      c.bias_k = false;
      check_values(c);
    }
    SECTION(std::string("a row with no allowed key averages every value, ") +
            std::string(dtype_name(d))) {
      c.mask = ops::AttentionMask::sliding_window(2);
      c.query_offset = kKeys + 4;
      check_values(c);
    }
    SECTION(std::string("a fill among the scores, ") + std::string(dtype_name(d))) {
      // Masked pairs score 0.05: their weight depends on the unmasked scores' shift q.bk.
      c.mask = ops::AttentionMask::sliding_window(5);
      c.query_offset = kKeys - 1;
      c.fill = 0.05;
      check_values(c);
    }
  }
}
