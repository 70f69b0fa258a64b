// prune_rows: the rewrite on small graphs (which nodes shrink, which stay whole, the attention
// query_offset), pinned through the pass itself (plan.hpp), and values unchanged: interpreter
// before/after the pass, JIT with and without it. Then every model of models/multi_head,
// forward and gradients, pruned against unpruned against the interpreter.
#include <edifice/core/autodiff.hpp>
#include <edifice/core/interpreter.hpp>
#include <edifice/core/ops.hpp>
#include <edifice/jit/jit.hpp>
#include <edifice/models/multi_head.hpp>
#include <edifice/nn/init.hpp>

#include "../../jit/src/plan.hpp"

#include <fmt/format.h>
#include <catch2/catch.hpp>

#include "test_util.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <random>
#include <string>
#include <vector>

using namespace edifice;
namespace o = edifice::ops;
namespace mh = edifice::models::multi_head;

using edifice::test::max_abs_diff;
using edifice::test::random_tensor;

namespace {

jit::Options options(bool prune) {
  jit::Options opt;
  opt.disk_cache = false;
  opt.prune_rows = prune;
  return opt;
}

std::vector<Tensor> random_inputs(const Graph& g, std::uint32_t seed) {
  std::vector<Tensor> in;
  for (const Value& v : g.inputs()) {
    if (v.dtype() == DType::u8) {
      Tensor m(DType::u8, v.shape());
      std::mt19937 rng(seed++);
      for (std::int64_t i = 0; i < m.numel(); ++i) m.data<std::uint8_t>()[i] = rng() % 4 != 0;
      in.push_back(m);
    } else {
      in.push_back(random_tensor(v.dtype(), v.shape(), seed++));
    }
  }
  return in;
}

std::vector<const Node*> nodes_of(const Graph& g, Op op) {
  std::vector<const Node*> r;
  for (const Node* n : g.nodes())
    if (n->op() == op) r.push_back(n);
  return r;
}

const Node& only(const Graph& g, Op op) {
  auto ns = nodes_of(g, op);
  INFO(g.to_string());
  REQUIRE(ns.size() == 1);
  return *ns[0];
}

double max_abs(const Tensor& t) {
  double m = 0;
  for (std::int64_t i = 0; i < t.numel(); ++i) m = std::max(m, std::abs(t.get_as_double(i)));
  return m;
}

bool bit_equal(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && a.dtype() == b.dtype() &&
         std::equal(static_cast<const char*>(a.raw_data()),
                    static_cast<const char*>(a.raw_data()) + a.nbytes(),
                    static_cast<const char*>(b.raw_data()));
}

std::vector<Shape> shapes_of(const std::vector<Tensor>& ts) {
  std::vector<Shape> s;
  for (const auto& t : ts) s.push_back(t.shape());
  return s;
}

// The pass keeps values: the interpreter gives bit-identical results on the pruned graph (it
// computes each row the same way), and the JIT with pruning matches the JIT without it and the
// interpreter.
void check_values(const Graph& g, const Graph& pruned) {
  auto in = random_inputs(g, 11);
  auto ref = interpret(g, in);
  auto ref_pruned = interpret(pruned, in);
  auto with = jit::compile(g, shapes_of(in), options(true))->run(in);
  auto without = jit::compile(g, shapes_of(in), options(false))->run(in);
  REQUIRE(ref.size() == ref_pruned.size());
  for (std::size_t i = 0; i < ref.size(); ++i) {
    CHECK(bit_equal(ref[i], ref_pruned[i]));
    const double tol = 1e-5 * std::max(1.0, max_abs(ref[i]));
    CHECK(max_abs_diff(with[i], without[i]) <= tol);
    CHECK(max_abs_diff(with[i], ref[i]) <= tol);
  }
}

// The last position of [B, S, ...] as the models take it: reshape(slice_axis(x, 1, S-1, S)).
Value last_position(const Value& x) {
  Shape out = x.shape();
  out.erase(out.begin() + 1);
  return o::reshape(o::slice_axis(x, 1, x.dim(1) - 1, x.dim(1)), out);
}

}  // namespace

TEST_CASE("prune_rows: dense, bias, tanh and layer_norm compute only the kept row",
          "[jit][prune]") {
  auto x = o::parameter("x", DType::f32, {2, 5, 4});
  auto w = o::parameter("w", DType::f32, {4, 3});
  auto b = o::parameter("b", DType::f32, {3});
  auto gamma = o::parameter("gamma", DType::f32, {3});
  auto beta = o::parameter("beta", DType::f32, {3});
  Value y = o::layer_norm(o::tanh(o::matmul(x, w) + b), gamma, beta, 1e-5);
  Graph g({x, w, b, gamma, beta}, {last_position(y)});
  Graph p = jit::prune_rows(g);
  INFO(p.to_string());
  // One slice left, on the parameter x; every rank-3 node after it has one row.
  const Node& s = only(p, Op::slice);
  CHECK(s.inputs()[0] == x);
  CHECK(s.attrs().get_ints("start") == std::vector<std::int64_t>{0, 4, 0});
  for (const Node* n : p.nodes())
    if (n->op() != Op::parameter && n->outputs()[0].shape.size() == 3)
      CHECK(n->outputs()[0].shape[1] == 1);
  CHECK(only(p, Op::layer_norm).inputs()[0].shape() == Shape{2, 1, 3});
  CHECK(only(p, Op::dot_general).inputs()[1] == w);  // the rhs is not sliced
  CHECK(only(p, Op::broadcast_in_dim).inputs()[0] == b);
  CHECK(nodes_of(p, Op::layer_norm).size() == 1);
  check_values(g, p);
}

TEST_CASE("prune_rows: a producer whose other rows are used elsewhere stays whole",
          "[jit][prune]") {
  auto x = o::parameter("x", DType::f32, {2, 5, 4});
  Value y = o::layer_norm(o::exp(x), 1e-5);
  SECTION("a second, unsliced consumer") {
    Graph g({x}, {last_position(y), o::reduce_sum(y, {1})});
    Graph p = jit::prune_rows(g);
    INFO(p.to_string());
    CHECK(only(p, Op::layer_norm).outputs()[0].shape == Shape{2, 5, 4});
    CHECK(only(p, Op::slice).inputs()[0].node().op() == Op::layer_norm);
    check_values(g, p);
  }
  SECTION("the value itself is a graph output") {
    Graph g({x}, {last_position(y), y});
    Graph p = jit::prune_rows(g);
    CHECK(only(p, Op::layer_norm).outputs()[0].shape == Shape{2, 5, 4});
    check_values(g, p);
  }
  SECTION("layer_norm's mean is used unsliced") {
    auto full = o::layer_norm_full(o::exp(x), std::nullopt, std::nullopt, 1e-5);
    Graph g({x}, {last_position(full[0]), full[1]});
    Graph p = jit::prune_rows(g);
    CHECK(only(p, Op::layer_norm).outputs()[0].shape == Shape{2, 5, 4});
    check_values(g, p);
  }
  SECTION("two different slices of the same value") {
    Graph g({x}, {last_position(y), o::slice_axis(y, 1, 0, 1)});
    Graph p = jit::prune_rows(g);
    CHECK(only(p, Op::layer_norm).outputs()[0].shape == Shape{2, 5, 4});
    check_values(g, p);
  }
  SECTION("the same slice twice is one pruned producer") {
    Graph g({x}, {last_position(y), o::sin(last_position(y))});
    Graph p = jit::prune_rows(g);
    CHECK(only(p, Op::layer_norm).outputs()[0].shape == Shape{2, 1, 4});
    check_values(g, p);
  }
}

TEST_CASE("prune_rows: slices compose, whole slices vanish, strides go through elementwise",
          "[jit][prune]") {
  auto x = o::parameter("x", DType::f32, {3, 9});
  SECTION("slice of a slice") {
    Value inner = o::slice_axis(x, 1, 2, 8);                    // columns 2..7
    Value y = o::slice(o::exp(inner), {1, 1}, {3, 6}, {1, 2});  // columns 3, 5, 7
    Graph g({x}, {y});
    Graph p = jit::prune_rows(g);
    INFO(p.to_string());
    const Node& s = only(p, Op::slice);
    CHECK(s.inputs()[0] == x);
    CHECK(s.attrs().get_ints("start") == std::vector<std::int64_t>{1, 3});
    CHECK(s.attrs().get_ints("stride") == std::vector<std::int64_t>{1, 2});
    CHECK(only(p, Op::exp).outputs()[0].shape == Shape{2, 3});
    check_values(g, p);
  }
  SECTION("a slice that keeps everything") {
    Graph g({x}, {o::slice_axis(o::tanh(x), 1, 0, 9)});
    Graph p = jit::prune_rows(g);
    CHECK(nodes_of(p, Op::slice).empty());
    check_values(g, p);
  }
  SECTION("reductions over other axes, transpose, concat") {
    Value t = o::transpose(o::concat({o::sin(x), o::cos(x)}, 1), {1, 0});  // [18, 3]
    Value y = o::slice_axis(o::reduce_max(o::exp(t), {0}), 0, 1, 2);       // column 1 of x
    Graph g({x}, {y});
    Graph p = jit::prune_rows(g);
    INFO(p.to_string());
    // One slice of x per concat operand (sin and cos).
    auto slices = nodes_of(p, Op::slice);
    REQUIRE(slices.size() == 2);
    for (const Node* s : slices) CHECK(s->inputs()[0] == x);
    CHECK(only(p, Op::reduce_max).inputs()[0].shape() == Shape{18, 1});
    check_values(g, p);
  }
  SECTION("softmax along the sliced axis stops the slice") {
    Graph g({x},
            {o::slice_axis(o::softmax(x, 1), 1, 0, 2), o::slice_axis(o::softmax(x, 0), 1, 0, 2)});
    Graph p = jit::prune_rows(g);
    INFO(p.to_string());
    auto sm = nodes_of(p, Op::softmax);
    REQUIRE(sm.size() == 2);
    for (const Node* n : sm)
      CHECK(n->outputs()[0].shape == (n->attrs().get_int("axis") == 1 ? Shape{3, 9} : Shape{3, 2}));
    check_values(g, p);
  }
}

TEST_CASE("prune_rows: disjoint slices that leave rows unread split their producer",
          "[jit][prune]") {
  auto x = o::parameter("x", DType::f32, {6, 4});
  Value y = o::exp(x) * 2.0;
  SECTION("rows 0 and 4..5: two smaller copies") {
    Graph g({x}, {o::slice_axis(y, 0, 0, 1), o::slice_axis(y, 0, 4, 6)});
    Graph p = jit::prune_rows(g);
    INFO(p.to_string());
    auto exps = nodes_of(p, Op::exp);
    REQUIRE(exps.size() == 2);
    std::vector<Shape> shapes = {exps[0]->outputs()[0].shape, exps[1]->outputs()[0].shape};
    std::sort(shapes.begin(), shapes.end());
    CHECK(shapes == std::vector<Shape>{{1, 4}, {2, 4}});
    check_values(g, p);
  }
  SECTION("overlapping slices: computed once, whole") {
    Graph g({x}, {o::slice_axis(y, 0, 0, 3), o::slice_axis(y, 0, 2, 4)});
    Graph p = jit::prune_rows(g);
    CHECK(only(p, Op::exp).outputs()[0].shape == Shape{6, 4});
    check_values(g, p);
  }
  SECTION("disjoint slices covering everything: computed once, whole") {
    Graph g({x}, {o::slice_axis(y, 0, 0, 3), o::slice_axis(y, 0, 3, 6)});
    Graph p = jit::prune_rows(g);
    CHECK(only(p, Op::exp).outputs()[0].shape == Shape{6, 4});
    check_values(g, p);
  }
}

TEST_CASE("attention query_offset: the rows of a longer query block, through the JIT",
          "[jit][prune]") {
  // attention(q[:, off:off+n], k, v, query_offset off) == attention(q, k, v)[:, off:off+n]
  // (out and lse), and so are the gradients wrt q, k, v; interpreter and JIT.
  const std::int64_t s = 7, off = 3, n = 3;
  auto q = o::parameter("q", DType::f32, {2, s, 4});
  auto k = o::parameter("k", DType::f32, {2, s, 4});
  auto v = o::parameter("v", DType::f32, {2, s, 3});
  auto w = o::parameter("w", DType::f32, {2, n, 3});
  for (auto mask : {o::AttentionMask::causal(), o::AttentionMask::sliding_window(2),
                    o::AttentionMask::sliding_window(5)}) {
    INFO("window " << mask.window);
    o::AttentionOptions opt;
    opt.mask = mask;
    auto whole_full = o::attention_full(q, k, v, opt);
    std::vector<Value> whole = {o::slice_axis(whole_full[0], 1, off, off + n),
                                o::slice_axis(whole_full[1], 1, off, off + n)};
    opt.query_offset = off;
    std::vector<Value> rows = o::attention_full(o::slice_axis(q, 1, off, off + n), k, v, opt);
    // The loss reads lse too, so the gradient also takes autodiff's lse path (the mask built
    // from iotas, with the offset).
    auto with_grads = [&](const std::vector<Value>& out) {
      Value loss = o::reduce_sum(out[0] * w, {0, 1, 2}) + o::reduce_sum(out[1] * 0.5, {0, 1});
      std::vector<Value> outs = out;
      for (const Value& d : grad(loss, {q, k, v})) outs.push_back(d);
      return Graph({q, k, v, w}, outs);
    };
    Graph g_rows = with_grads(rows), g_whole = with_grads(whole);
    auto in = random_inputs(g_rows, 3);
    auto ref = interpret(g_whole, in);
    auto ref_rows = interpret(g_rows, in);
    auto jit_rows = jit::compile(g_rows, shapes_of(in), options(false))->run(in);
    for (std::size_t i = 0; i < ref.size(); ++i) {
      INFO("output " << i);
      const double tol = 1e-5 * std::max(1.0, max_abs(ref[i]));
      CHECK(max_abs_diff(ref_rows[i], ref[i]) <= 1e-12 + tol * 1e-2);
      CHECK(max_abs_diff(jit_rows[i], ref[i]) <= tol);
    }
  }
}

TEST_CASE("prune_rows: broadcast operands of extent 1 and constants", "[jit][prune]") {
  auto x = o::parameter("x", DType::f32, {2, 6, 4});
  auto scale = o::parameter("scale", DType::f32, {2, 1, 4});
  Tensor pe = random_tensor(DType::f32, {6, 4}, 5);
  Value y = o::relu(x * scale + o::constant(pe));
  Graph g({x, scale}, {last_position(y)});
  Graph p = jit::prune_rows(g);
  INFO(p.to_string());
  // x and the constant lose their other rows; the extent-1 axis of scale is not sliced.
  auto slices = nodes_of(p, Op::slice);
  REQUIRE(slices.size() == 2);
  int of_x = 0, of_constant = 0;
  for (const Node* s : slices) {
    of_x += s->inputs()[0] == x;
    of_constant += s->inputs()[0].node().op() == Op::constant;
  }
  CHECK(of_x == 1);
  CHECK(of_constant == 1);
  for (const Node* n : nodes_of(p, Op::broadcast_in_dim)) CHECK(n->outputs()[0].shape[1] == 1);
  check_values(g, p);
}

TEST_CASE("prune_rows: attention keeps k and v whole and offsets the query rows", "[jit][prune]") {
  auto x = o::parameter("x", DType::f32, {2, 6, 4});
  auto wq = o::parameter("wq", DType::f32, {4, 4});
  auto wk = o::parameter("wk", DType::f32, {4, 4});
  auto wv = o::parameter("wv", DType::f32, {4, 3});
  auto att = [&](o::AttentionMask mask, std::int64_t offset = 0) {
    o::AttentionOptions opt;
    opt.mask = mask;
    opt.query_offset = offset;
    return o::attention(o::matmul(x, wq), o::matmul(x, wk), o::matmul(x, wv), opt);
  };
  auto params = std::vector<Value>{x, wq, wk, wv};
  auto pruned_attention = [](const Graph& p) -> const Node& { return only(p, Op::attention); };

  SECTION("window, last row") {
    Graph g(params, {last_position(att(o::AttentionMask::sliding_window(3)))});
    Graph p = jit::prune_rows(g);
    INFO(p.to_string());
    const Node& a = pruned_attention(p);
    CHECK(a.inputs()[0].shape() == Shape{2, 1, 4});
    CHECK(a.inputs()[1].shape() == Shape{2, 6, 4});
    CHECK(a.inputs()[2].shape() == Shape{2, 6, 3});
    CHECK(a.attrs().get_int("query_offset") == 5);
    // Only the q projection is computed for one row.
    int one_row = 0;
    for (const Node* d : nodes_of(p, Op::dot_general)) one_row += d->outputs()[0].shape[1] == 1;
    CHECK(one_row == 1);
    check_values(g, p);
  }
  SECTION("causal, rows 2..4, offsets add up") {
    Graph g(params, {o::slice_axis(att(o::AttentionMask::causal(), 1), 1, 2, 4)});
    Graph p = jit::prune_rows(g);
    INFO(p.to_string());
    const Node& a = pruned_attention(p);
    CHECK(a.inputs()[0].shape() == Shape{2, 2, 4});
    CHECK(a.attrs().get_int("query_offset") == 3);
    check_values(g, p);
  }
  SECTION("a tensor mask loses its other query rows, no offset") {
    auto m = o::parameter("m", DType::u8, {6, 6});
    o::AttentionOptions opt;
    opt.mask = o::AttentionMask::from_tensor(m);
    Value y = o::attention(o::matmul(x, wq), o::matmul(x, wk), o::matmul(x, wv), opt);
    Graph g({x, wq, wk, wv, m}, {last_position(y)});
    Graph p = jit::prune_rows(g);
    INFO(p.to_string());
    const Node& a = pruned_attention(p);
    CHECK(a.inputs()[0].shape() == Shape{2, 1, 4});
    CHECK(a.inputs()[3].shape() == Shape{1, 6});
    CHECK_FALSE(a.attrs().has("query_offset"));
    check_values(g, p);
  }
  SECTION("a strided slice of the query rows stops at attention") {
    Graph g(params, {o::slice(att(o::AttentionMask::causal()), {0, 0, 0}, {2, 6, 3}, {1, 2, 1})});
    Graph p = jit::prune_rows(g);
    CHECK(pruned_attention(p).inputs()[0].shape() == Shape{2, 6, 4});
    check_values(g, p);
  }
  SECTION("lse used unsliced keeps attention whole") {
    o::AttentionOptions opt;
    opt.mask = o::AttentionMask::causal();
    auto full = o::attention_full(o::matmul(x, wq), o::matmul(x, wk), o::matmul(x, wv), opt);
    Graph g(params, {last_position(full[0]), full[1]});
    Graph p = jit::prune_rows(g);
    CHECK(pruned_attention(p).inputs()[0].shape() == Shape{2, 6, 4});
    check_values(g, p);
  }
}

TEST_CASE("prune_rows: multi-head split and merge (reshape, transpose) reach the q projection",
          "[jit][prune]") {
  const std::int64_t nh = 2, hd = 3, h = nh * hd;
  auto x = o::parameter("x", DType::f32, {2, 5, 4});
  auto w = o::parameter("w", DType::f32, {4, 3 * h});
  auto wo = o::parameter("wo", DType::f32, {h, 4});
  Value qkv = o::matmul(x, w);
  auto split = [&](std::int64_t part) {
    return o::transpose(
        o::reshape(o::slice_axis(qkv, -1, part * h, (part + 1) * h), {2, 5, nh, hd}), {0, 2, 1, 3});
  };
  o::AttentionOptions opt;
  opt.mask = o::AttentionMask::sliding_window(2);
  Value a = o::attention(split(0), split(1), split(2), opt);  // [2,nh,5,hd]
  Value merged = o::reshape(o::transpose(a, {0, 2, 1, 3}), {2, 5, h});
  Value y = o::layer_norm(x + o::matmul(merged, wo), 1e-5);
  Graph g({x, w, wo}, {last_position(y)});
  Graph p = jit::prune_rows(g);
  INFO(p.to_string());
  const Node& at = only(p, Op::attention);
  CHECK(at.inputs()[0].shape() == Shape{2, nh, 1, hd});
  CHECK(at.inputs()[1].shape() == Shape{2, nh, 5, hd});
  CHECK(at.attrs().get_int("query_offset") == 4);
  // The fused qkv projection is split by columns: q for the last row only, k and v for every
  // row (attention needs all keys).
  std::vector<Shape> projections;
  for (const Node* d : nodes_of(p, Op::dot_general)) {
    const Value& rhs = d->inputs()[1];
    if (rhs.node().op() == Op::slice && rhs.node().inputs()[0] == w)
      projections.push_back(d->outputs()[0].shape);
  }
  std::sort(projections.begin(), projections.end());
  CHECK(projections == std::vector<Shape>{{2, 1, h}, {2, 5, h}, {2, 5, h}});
  CHECK(only(p, Op::layer_norm).outputs()[0].shape == Shape{2, 1, 4});
  check_values(g, p);
}

// ---------------------------------------------------------------------------------------------
// The models

namespace {

struct SmallModel {
  std::string name;
  mh::Built built;
  std::int64_t batch, seq, embed;
};

std::vector<SmallModel> small_models() {
  return {
      {"build",
       mh::build({.embed_dim = 6,
                  .window_size = 4,
                  .num_heads = 2,
                  .head_dim = 3,
                  .num_layers = 2,
                  .ffn_dim = 7,
                  .dropout = 0.0,
                  .seq_len = 6}),
       3, 6, 6},
      {"sliding window",
       mh::build_sliding_window({.embed_dim = 6,
                                 .window_size = 3,
                                 .num_heads = 2,
                                 .head_dim = 2,
                                 .num_layers = 2,
                                 .ffn_dim = 5,
                                 .dropout = 0.0,
                                 .seq_len = 7}),
       2, 7, 6},
      {"hybrid",
       mh::build_hybrid({.embed_dim = 4,
                         .lstm_hidden = 3,
                         .lstm_layers = 2,
                         .num_heads = 2,
                         .head_dim = 2,
                         .dropout = 0.0,
                         .window_size = 5}),
       2, 5, 4},
      {"hybrid mlp",
       mh::build_hybrid_mlp({.embed_dim = 4,
                             .lstm_hidden = 3,
                             .num_heads = 1,
                             .head_dim = 2,
                             .dropout = 0.0,
                             .window_size = 4,
                             .mlp_sizes = {3, 2}}),
       3, 4, 4},
  };
}

std::vector<Tensor> model_args(const nn::Model& model, const SmallModel& m) {
  nn::Params p = model.init(9);
  std::vector<Tensor> args;
  for (const auto& info : model.parameters()) args.push_back(p.at(info.name));
  args.push_back(
      nn::initialize(nn::Initializer::uniform(1.0), {m.batch, m.seq, m.embed}, DType::f32, 42, 21));
  return args;
}

Graph loss_graph(const Graph& forward) {
  Value out = forward.outputs()[0];
  Value loss = o::reduce_sum(o::mul(out, out), {0, 1});
  std::vector<Value> wrt(forward.inputs().begin(), forward.inputs().end());
  std::vector<Value> grads = grad(loss, wrt);
  std::vector<Value> outs = {loss};
  outs.insert(outs.end(), grads.begin(), grads.end());
  return Graph(forward.inputs(), outs);
}

// Pruned JIT against unpruned JIT and both against the interpreter. Returns how many outputs
// are bit-identical between the pruned and unpruned runs, and the largest relative difference.
std::pair<int, double> compare_runs(const Graph& g, const std::vector<Tensor>& args,
                                    const char* what) {
  INFO(what);
  auto pruned = jit::compile(g, shapes_of(args), options(true));
  auto whole = jit::compile(g, shapes_of(args), options(false));
  auto a = pruned->run(args), b = whole->run(args), ref = interpret(g, args);
  REQUIRE(a.size() == ref.size());
  int identical = 0;
  double worst = 0;
  for (std::size_t i = 0; i < ref.size(); ++i) {
    INFO("output " << i);
    const double scale = std::max(1.0, max_abs(ref[i]));
    CHECK(max_abs_diff(a[i], b[i]) <= 1e-6 * scale);
    CHECK(max_abs_diff(a[i], ref[i]) <= 1e-5 * scale);
    CHECK(max_abs_diff(b[i], ref[i]) <= 1e-5 * scale);
    identical += bit_equal(a[i], b[i]);
    worst = std::max(worst, max_abs_diff(a[i], b[i]) / scale);
  }
  return {identical, worst};
}

double total_flops(const jit::Executable& exe) {
  double f = 0;
  for (const auto& k : exe.kernels()) f += k.flops;
  return f;
}

}  // namespace

TEST_CASE("prune_rows: every model, forward and gradients, pruned == unpruned == interpreter",
          "[jit][prune][models]") {
  std::string report;
  for (auto& m : small_models()) {
    INFO(m.name);
    nn::Model model(m.built.output);
    nn::TracedModel t = model.trace(nn::Mode::inference);
    const Graph& g = t.graph;
    auto args = model_args(model, m);
    Graph specialised = specialize(g, shapes_of(args));
    Graph p = jit::prune_rows(specialised);
    // Exactly one attention per layer, each computing one query row per head.
    for (const Node* a : nodes_of(p, Op::attention))
      if (a->outputs()[0].shape[2] == 1) CHECK(a->inputs()[1].shape()[2] == m.seq);
    CHECK(nodes_of(p, Op::attention).size() == nodes_of(specialised, Op::attention).size());
    int one_row = 0;
    for (const Node* a : nodes_of(p, Op::attention)) one_row += a->outputs()[0].shape[2] == 1;
    CHECK(one_row == 1);  // the last layer's
    CHECK(bit_equal(interpret(p, args)[0], interpret(specialised, args)[0]));
    auto pruned = jit::compile(g, shapes_of(args), options(true));
    auto whole = jit::compile(g, shapes_of(args), options(false));
    CHECK(total_flops(*pruned) < total_flops(*whole));
    auto [fwd_same, fwd_diff] = compare_runs(g, args, "forward");
    Graph lg = loss_graph(g);
    auto [grad_same, grad_diff] = compare_runs(lg, args, "loss and gradients");
    Graph lp = jit::prune_rows(specialize(lg, shapes_of(args)));
    report += fmt::format(
        "{}: forward bit-identical {}, max rel diff {:.2e}; gradient graph {} of {} outputs "
        "bit-identical, max rel diff {:.2e}; gradient graph nodes {} -> {} after prune_rows\n",
        m.name, fwd_same == 1, fwd_diff, grad_same, lg.outputs().size(), grad_diff,
        specialize(lg, shapes_of(args)).nodes().size(), lp.nodes().size());
  }
  // The report is printed with -s.
  INFO(report);
  SUCCEED();
}

// Not a unit test: the saving on the sliding-window model at its production size. Run with
//   jit_tests "[.prune_bench]"
TEST_CASE("prune_rows: sliding-window model timing", "[.prune_bench]") {
  auto built = mh::build_sliding_window({.embed_dim = 1024,
                                         .window_size = 60,
                                         .num_heads = 4,
                                         .head_dim = 64,
                                         .num_layers = 2,
                                         .ffn_dim = 256,
                                         .dropout = 0.0,
                                         .seq_len = 60});
  nn::Model model(built.output);
  nn::TracedModel t = model.trace(nn::Mode::inference);
  SmallModel m{"sliding window", built, 32, 60, 1024};
  auto args = model_args(model, m);
  std::vector<Tensor> outs[2];
  for (bool prune : {false, true}) {
    auto exe = jit::compile(t.graph, shapes_of(args), options(prune));
    for (int i = 0; i < 3; ++i) outs[prune] = exe->run(args);
    std::vector<double> ms;
    for (int i = 0; i < 30; ++i) {
      auto t0 = std::chrono::steady_clock::now();
      outs[prune] = exe->run(args);
      ms.push_back(
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(ms.begin(), ms.end());
    fmt::print(
        "prune_rows={}: {} kernels, {:.3e} flop, arena {} bytes, run median {:.3f} ms "
        "(min {:.3f})\n{}\n",
        prune, exe->kernels().size(), total_flops(*exe), exe->arena_bytes(), ms[ms.size() / 2],
        ms[0], exe->summary());
  }
  fmt::print("max |pruned - unpruned| = {:.3e} (max |out| {:.3e})\n",
             max_abs_diff(outs[1][0], outs[0][0]), max_abs(outs[0][0]));
}
