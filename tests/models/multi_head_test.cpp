// models::multi_head: shapes and parameter counts of the original's tests, plus numeric checks
// the original lacks (masks, positional encoding, QK layer norm, RoPE, attention paths).
#include <edifice/core/interpreter.hpp>
#include <edifice/models/multi_head.hpp>
#include <edifice/nn/init.hpp>

#include <catch2/catch.hpp>

#include "test_util.hpp"

#include <cmath>

using namespace edifice;
namespace mh = edifice::models::multi_head;
namespace o = edifice::ops;

using edifice::test::first_line_of_error;
using edifice::test::max_abs_diff;

namespace {

Tensor uniform(const Shape& shape, std::uint64_t stream, double limit = 1.0) {
  return nn::initialize(nn::Initializer::uniform(limit), shape, DType::f32, 42, stream);
}

// Runs a model through the reference interpreter.
Tensor run(const nn::Model& model, const nn::Params& params, const Tensor& input) {
  nn::TracedModel t = model.trace(nn::Mode::inference);
  std::vector<Tensor> args;
  for (const auto& n : t.param_names) args.push_back(params.at(n));
  args.push_back(input);
  return interpret(t.graph, args)[0];
}

}  // namespace

TEST_CASE("the original's test shapes and parameter count", "[models]") {
  auto built = mh::build_sliding_window(
      {.embed_dim = 64, .window_size = 12, .num_heads = 4, .head_dim = 8, .num_layers = 2});
  nn::Model model(built.output);
  CHECK(built.output.shape() == Shape{nn::dynamic, 32});
  CHECK(model.parameter_count() == 42016);
  CHECK(mh::output_size({.num_heads = 4, .head_dim = 8}) == 32);
  nn::Params p = model.init(1);
  Tensor y = run(model, p, uniform({4, 12, 64}, 7));
  CHECK(y.shape() == Shape{4, 32});
  for (std::int64_t i = 0; i < y.numel(); ++i) CHECK(std::isfinite(y.get_as_double(i)));

  auto hybrid = mh::build_hybrid(
      {.embed_dim = 16, .lstm_hidden = 16, .num_heads = 2, .head_dim = 8, .window_size = 8});
  CHECK(hybrid.output.shape() == Shape{nn::dynamic, 16});
  auto mlp = mh::build_hybrid_mlp({.embed_dim = 16,
                                   .lstm_hidden = 16,
                                   .num_heads = 2,
                                   .head_dim = 8,
                                   .window_size = 8,
                                   .mlp_sizes = {16, 8}});
  CHECK(mlp.output.shape() == Shape{nn::dynamic, 8});
  CHECK(mh::output_size({.mlp_sizes = std::vector<std::int64_t>{16, 8}}) == 8);
  CHECK(mh::output_size({.num_heads = 2, .hidden_size = 16}) == 16);
  CHECK(mh::output_size() == 256);
  auto b = mh::build(
      {.embed_dim = 16, .hidden_size = 16, .window_size = 8, .num_heads = 2, .num_layers = 1});
  CHECK(b.output.shape() == Shape{nn::dynamic, 16});
}

TEST_CASE("parameter names follow the original", "[models]") {
  auto built = mh::build_sliding_window({.embed_dim = 8,
                                         .window_size = 4,
                                         .num_heads = 2,
                                         .head_dim = 2,
                                         .num_layers = 1,
                                         .ffn_dim = 4});
  nn::Model model(built.output);
  std::vector<std::string> names;
  for (const auto& p : model.parameters()) names.push_back(p.name);
  CHECK(names == std::vector<std::string>{
                     "input_proj.bias", "input_proj.kernel", "layer_1_attn_qkv.bias",
                     "layer_1_attn_qkv.kernel", "layer_1_ffn1.bias", "layer_1_ffn1.kernel",
                     "layer_1_ffn2.bias", "layer_1_ffn2.kernel", "layer_1_norm1.beta",
                     "layer_1_norm1.gamma", "layer_1_norm2.beta", "layer_1_norm2.gamma"});
}

TEST_CASE("masks", "[models]") {
  Tensor c = mh::causal_mask(4);
  CHECK(c.dtype() == DType::u8);
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) CHECK(c.at<std::uint8_t>({i, j}) == (j <= i ? 1 : 0));
  Tensor w = mh::window_mask(6, 3);
  CHECK(w.at<std::uint8_t>({4, 2}) == 1);
  CHECK(w.at<std::uint8_t>({4, 4}) == 1);
  CHECK(w.at<std::uint8_t>({4, 1}) == 0);
  CHECK(w.at<std::uint8_t>({4, 5}) == 0);
  CHECK(mh::window_mask(5, 9).bitwise_equal(mh::causal_mask(5)));
}

TEST_CASE("positional encoding check values", "[models]") {
  auto x = nn::input("x", {1, 60, 256});
  nn::Model model(mh::add_positional_encoding(x));
  Tensor pe = run(model, {}, Tensor(DType::f32, {1, 60, 256}));
  CHECK(pe.at<float>({0, 1, 0}) == Approx(0.841471).margin(1e-6));
  CHECK(pe.at<float>({0, 1, 1}) == Approx(0.836080).margin(1e-6));
  CHECK(pe.at<float>({0, 1, 2}) == Approx(0.830716).margin(1e-6));
  CHECK(pe.at<float>({0, 59, 255}) == Approx(-0.790580).margin(1e-6));
  for (int d = 0; d < 256; ++d) CHECK(pe.at<float>({0, 0, d}) == 0.0f);
}

TEST_CASE("qk_layer_norm", "[models]") {
  auto t = o::parameter("t", DType::f64, {1, 4});
  Graph g({t}, {mh::qk_layer_norm(t)});
  Tensor y = interpret(g, {Tensor::from_vector<double>({1, 4}, {1, 2, 3, 4})})[0];
  const double want[] = {-1.341640, -0.447213, 0.447213, 1.341640};
  for (int i = 0; i < 4; ++i) CHECK(y.get_as_double(i) == Approx(want[i]).margin(1e-6));
}

TEST_CASE("constant Q = K = 0.1, V = 0.5 gives 0.5 on every path and mask", "[models]") {
  auto q = o::parameter("q", DType::f32, {2, 8, 16});
  auto k = o::parameter("k", DType::f32, {2, 8, 16});
  auto v = o::parameter("v", DType::f32, {2, 8, 16});
  Value causal2 = o::constant(mh::causal_mask(8));
  std::vector<Value> outs = {
      mh::scaled_dot_product_attention(q, k, v),
      mh::scaled_dot_product_attention(q, k, v, {.mask = causal2}),
      mh::chunked_attention(q, k, v, {.chunk_size = 4}),
      mh::chunked_attention(q, k, v, {.chunk_size = 3, .mask = causal2}),
      mh::memory_efficient_attention(q, k, v, {.chunk_size = 4}),
      mh::memory_efficient_attention(q, k, v, {.chunk_size = 3, .causal = true}),
      mh::memory_efficient_attention(q, k, v, {.chunk_size = 3, .causal = true, .window = 2}),
  };
  Graph g({q, k, v}, outs);
  auto results = interpret(
      g, {Tensor::full(DType::f32, {2, 8, 16}, 0.1), Tensor::full(DType::f32, {2, 8, 16}, 0.1),
          Tensor::full(DType::f32, {2, 8, 16}, 0.5)});
  for (const Tensor& r : results) {
    CHECK(r.shape() == Shape{2, 8, 16});
    for (std::int64_t i = 0; i < r.numel(); ++i)
      CHECK(r.get_as_double(i) == Approx(0.5).margin(1e-6));
  }
}

TEST_CASE("chunked and memory-efficient attention agree with the standard path", "[models]") {
  auto q = o::parameter("q", DType::f32, {2, 13, 8});
  auto k = o::parameter("k", DType::f32, {2, 13, 8});
  auto v = o::parameter("v", DType::f32, {2, 13, 8});
  for (int mask_kind = 0; mask_kind < 3; ++mask_kind) {
    Value mask;
    std::int64_t window = 0;
    if (mask_kind == 1) mask = o::constant(mh::causal_mask(13));
    if (mask_kind == 2) {
      window = 4;
      mask = o::constant(mh::window_mask(13, 4));
    }
    Graph g({q, k, v},
            {mh::scaled_dot_product_attention(q, k, v, {.mask = mask}),
             mh::chunked_attention(q, k, v, {.chunk_size = 5, .mask = mask}),
             mh::memory_efficient_attention(
                 q, k, v, {.chunk_size = 5, .causal = mask_kind > 0, .window = window})});
    auto r = interpret(
        g, {uniform({2, 13, 8}, 1, 2.0), uniform({2, 13, 8}, 2, 2.0), uniform({2, 13, 8}, 3)});
    INFO("mask kind " << mask_kind);
    CHECK(max_abs_diff(r[0], r[1]) <= 1e-6);
    CHECK(max_abs_diff(r[0], r[2]) <= 1e-5);
  }
}

TEST_CASE("RoPE makes q.k depend only on the position difference", "[models]") {
  // A single head whose q and k are the same vector at every position: after RoPE the score
  // between positions m and n depends on m - n only.
  auto x = nn::input("x", {1, 6, 4});
  std::vector<nn::Layer> weights;
  auto y = mh::self_attention(x, {.hidden_size = 4,
                                  .num_heads = 1,
                                  .dropout = 0,
                                  .causal = false,
                                  .rope = true,
                                  .name = "sa",
                                  .weights = &weights});
  nn::Model model(std::vector<nn::Layer>{y, weights[0]});
  nn::Params p = model.init(3);
  // q = k = x . W (per position): feed the same row everywhere.
  Tensor in(DType::f32, {1, 6, 4});
  for (int s = 0; s < 6; ++s)
    for (int d = 0; d < 4; ++d) in.at<float>({0, s, d}) = 0.3f * (d + 1);
  nn::TracedModel t = model.trace(nn::Mode::inference);
  std::vector<Tensor> args;
  for (const auto& n : t.param_names) args.push_back(p.at(n));
  args.push_back(in);
  Tensor w = interpret(t.graph, args)[1];  // [1, 1, 6, 6] softmax weights
  // log w(i, j) - log w(i, j') = s(i, j) - s(i, j') = f(i - j) - f(i - j') when scores depend
  // only on the offset, so shifting both positions by one leaves it unchanged.
  auto logw = [&](int i, int j) { return std::log(w.at<float>({0, 0, i, j})); };
  for (int i = 0; i < 5; ++i)
    for (int j = 0; j < 5; ++j)
      for (int j2 = 0; j2 < 5; ++j2)
        CHECK(logw(i, j) - logw(i, j2) ==
              Approx(logw(i + 1, j + 1) - logw(i + 1, j2 + 1)).margin(1e-4));
}

TEST_CASE("attention weights: rows sum to 1 and masked entries are exactly 0", "[models]") {
  auto built = mh::build_sliding_window({.embed_dim = 8,
                                         .window_size = 3,
                                         .num_heads = 2,
                                         .head_dim = 4,
                                         .num_layers = 2,
                                         .seq_len = 7});
  REQUIRE(built.attention_weights.size() == 2);
  std::vector<nn::Layer> outs = {built.output};
  outs.insert(outs.end(), built.attention_weights.begin(), built.attention_weights.end());
  nn::Model model(outs);
  nn::Params p = model.init(5);
  nn::TracedModel t = model.trace(nn::Mode::inference);
  std::vector<Tensor> args;
  for (const auto& n : t.param_names) args.push_back(p.at(n));
  args.push_back(uniform({2, 7, 8}, 11));
  auto r = interpret(t.graph, args);
  for (int layer = 1; layer <= 2; ++layer) {
    const Tensor& w = r[layer];
    CHECK(w.shape() == Shape{2, 2, 7, 7});
    for (int b = 0; b < 2; ++b)
      for (int h = 0; h < 2; ++h)
        for (int i = 0; i < 7; ++i) {
          double sum = 0;
          for (int j = 0; j < 7; ++j) {
            double x = w.at<float>({b, h, i, j});
            if (j > i || j < i - 2) CHECK(x == 0.0);
            sum += x;
          }
          CHECK(sum == Approx(1.0).margin(1e-6));
        }
  }
}

TEST_CASE("bad options are rejected before anything is compiled", "[models]") {
  CHECK(first_line_of_error([] { mh::build_sliding_window({}); }) ==
        "build_sliding_window: embed_dim is required");
  CHECK(first_line_of_error([] {
          mh::build({.embed_dim = 8, .hidden_size = 10, .num_heads = 4});
        }) == "build: hidden_size 10 is not divisible by num_heads 4");
  auto x = nn::input("x", {2, 5, 8});
  CHECK(first_line_of_error([&] {
          mh::self_attention(x, {.hidden_size = 10, .num_heads = 2, .rope = true});
        }) == "self_attention: rope needs an even head_dim, got 5");
  CHECK(first_line_of_error([] { mh::build_sliding_window({.embed_dim = 8, .window_size = 0}); }) ==
        "build_sliding_window: window_size must be >= 1, got 0");
  CHECK(first_line_of_error([&] {
          mh::self_attention(x, {.hidden_size = 8, .chunked = true, .chunk_size = 0});
        }) == "self_attention: chunk_size must be >= 1, got 0");
  CHECK(first_line_of_error([] { mh::build_sliding_window({.embed_dim = 8, .dropout = 1.0}); }) ==
        "build_sliding_window: dropout must be in [0, 1), got 1");
  CHECK(first_line_of_error([] { mh::build_sliding_window({.embed_dim = 8, .num_layers = 0}); }) ==
        "build_sliding_window: num_layers must be >= 1, got 0");
  CHECK(first_line_of_error([] { mh::build_hybrid({.embed_dim = 8, .lstm_layers = 0}); }) ==
        "build_hybrid: lstm_layers must be >= 1, got 0");
}

#include <edifice/models/registry.hpp>

TEST_CASE("the registry builds by name from string options", "[models]") {
  CHECK(models::list_architectures() == std::vector<std::string>{"attention", "attention_hybrid",
                                                                 "attention_hybrid_mlp",
                                                                 "attention_sliding_window"});
  auto built = models::build("attention", {{"input_size", "16"},
                                           {"hidden_size", "16"},
                                           {"num_heads", "2"},
                                           {"num_layers", "1"},
                                           {"window_size", "8"}});
  CHECK(built.output.shape() == Shape{nn::dynamic, 16});
  auto mlp = models::build("attention_hybrid_mlp", {{"embed_dim", "16"},
                                                    {"lstm_hidden", "16"},
                                                    {"num_heads", "2"},
                                                    {"head_dim", "8"},
                                                    {"window_size", "8"},
                                                    {"mlp_sizes", "16, 8"}});
  CHECK(mlp.output.shape() == Shape{nn::dynamic, 8});
  CHECK(first_line_of_error([] { models::build("transformer", {}); }) ==
        "models::build: unknown architecture \"transformer\" (known: attention, attention_hybrid, "
        "attention_hybrid_mlp, attention_sliding_window)");
  CHECK(first_line_of_error([] {
          models::build("attention", {{"embed_dim", "8"}, {"embed_size", "8"}});
        }).rfind("models::build(\"attention\"): unknown option \"embed_size\" (accepted: ", 0) ==
        0);
  CHECK(first_line_of_error([] {
          models::build("attention", {{"embed_dim", "8"}, {"num_heads", "four"}});
        }) == "models::build(\"attention\"): option num_heads = \"four\" is not an integer");
  CHECK(first_line_of_error([] { models::build("attention", {}); }) ==
        "build_sliding_window: embed_dim is required");
  auto f64 = models::build("attention_hybrid", {{"embed_dim", "4"}, {"dtype", "f64"}});
  CHECK(f64.output.type().dtype == DType::f64);
  CHECK(first_line_of_error([] {
          models::build("attention", {{"embed_dim", "8"}, {"dtype", "bf16"}});
        }) == "models::build(\"attention\"): option dtype = \"bf16\" is not f32 or f64");
}

#include <edifice/core/autodiff.hpp>
#include <edifice/jit/jit.hpp>

namespace {

// Each model, small: JIT forward and gradients equal the interpreter's; gradients match
// central finite differences in f64 along a random direction (JAX's check_grads style).
struct SmallModel {
  std::string name;
  mh::Built built;
  std::int64_t batch, seq, embed;
};

std::vector<SmallModel> small_models(DType dtype = DType::f32) {
  return {
      {"sliding window",
       mh::build_sliding_window({.embed_dim = 6,
                                 .window_size = 3,
                                 .num_heads = 2,
                                 .head_dim = 2,
                                 .num_layers = 2,
                                 .ffn_dim = 5,
                                 .dropout = 0.0,
                                 .seq_len = 5,
                                 .dtype = dtype}),
       2, 5, 6},
      {"hybrid",
       mh::build_hybrid({.embed_dim = 4,
                         .lstm_hidden = 3,
                         .lstm_layers = 2,
                         .num_heads = 2,
                         .head_dim = 2,
                         .dropout = 0.0,
                         .window_size = 4,
                         .dtype = dtype}),
       2, 4, 4},
      {"hybrid mlp",
       mh::build_hybrid_mlp({.embed_dim = 4,
                             .lstm_hidden = 3,
                             .num_heads = 1,
                             .head_dim = 2,
                             .dropout = 0.0,
                             .window_size = 3,
                             .mlp_sizes = {3, 2},
                             .dtype = dtype}),
       3, 3, 4},
  };
}

// sum(out^2) and its gradients with respect to every parameter (the traced graph's inputs
// but the last, which is the model's input).
Graph loss_graph(const nn::Model& model, std::vector<Value>& params_out) {
  nn::TracedModel t = model.trace(nn::Mode::inference);
  Value out = t.graph.outputs()[0];
  Value loss = o::reduce_sum(o::mul(out, out), {0, 1});
  std::vector<Value> wrt(t.graph.inputs().begin(), t.graph.inputs().end() - 1);
  params_out = wrt;
  std::vector<Value> grads = grad(loss, wrt);
  std::vector<Value> outs = {loss};
  outs.insert(outs.end(), grads.begin(), grads.end());
  return Graph(t.graph.inputs(), outs);
}

}  // namespace

TEST_CASE("each model: the JIT equals the interpreter, forward and gradients", "[models][jit]") {
  for (auto& m : small_models()) {
    INFO(m.name);
    nn::Model model(m.built.output);
    nn::Params p = model.init(9);
    std::vector<Value> params;
    Graph g = loss_graph(model, params);
    std::vector<Tensor> args;
    for (const auto& info : model.parameters()) args.push_back(p.at(info.name));
    args.push_back(uniform({m.batch, m.seq, m.embed}, 21));
    std::vector<Shape> shapes;
    for (const auto& a : args) shapes.push_back(a.shape());
    auto jit_out = jit::compile(g, shapes)->run(args);
    auto ref = interpret(g, args);
    REQUIRE(jit_out.size() == ref.size());
    for (std::size_t i = 0; i < ref.size(); ++i) {
      double scale = 0;
      for (std::int64_t j = 0; j < ref[i].numel(); ++j)
        scale = std::max(scale, std::abs(ref[i].get_as_double(j)));
      CHECK(max_abs_diff(jit_out[i], ref[i]) <= 1e-5 * std::max(1.0, scale));
    }
  }
}

TEST_CASE("each model in f64: gradients match central finite differences", "[models]") {
  // Built in f64 (Options::dtype); for each parameter tensor, the directional derivative along
  // a random direction against (L(p + h d) - L(p - h d)) / 2h, h = 1e-6, in the interpreter.
  for (auto& m : small_models(DType::f64)) {
    INFO(m.name);
    nn::Model model(m.built.output);
    nn::Params p = model.init(9);
    std::vector<Value> params;
    Graph g = loss_graph(model, params);
    std::vector<Tensor> args;
    for (const auto& info : model.parameters()) {
      REQUIRE(p.at(info.name).dtype() == DType::f64);
      args.push_back(p.at(info.name));
    }
    args.push_back(nn::initialize(nn::Initializer::uniform(1.0), {m.batch, m.seq, m.embed},
                                  DType::f64, 42, 21));
    const auto base = interpret(g, args);
    const double h = 1e-6;
    for (std::size_t i = 0; i < params.size(); ++i) {
      INFO("parameter " << model.parameters()[i].name);
      Tensor dir =
          nn::initialize(nn::Initializer::uniform(1.0), args[i].shape(), DType::f64, 77, i);
      double analytic = 0;
      std::vector<Tensor> plus = args, minus = args;
      plus[i] = args[i].clone();
      minus[i] = args[i].clone();
      for (std::int64_t j = 0; j < dir.numel(); ++j) {
        const double d = dir.get_as_double(j);
        analytic += d * base[1 + i].get_as_double(j);
        plus[i].set_from_double(j, args[i].get_as_double(j) + h * d);
        minus[i].set_from_double(j, args[i].get_as_double(j) - h * d);
      }
      const double numeric =
          (interpret(g, plus)[0].get_as_double(0) - interpret(g, minus)[0].get_as_double(0)) /
          (2 * h);
      CHECK(numeric == Approx(analytic).epsilon(1e-5).margin(1e-8));
    }
  }
}

TEST_CASE("model builders reject a non-float dtype", "[models]") {
  CHECK_THROWS_WITH(mh::build_sliding_window({.embed_dim = 4, .dtype = DType::i32}),
                    Catch::Contains("build_sliding_window: dtype must be f32 or f64, got i32"));
  CHECK_THROWS_WITH(mh::build_hybrid({.embed_dim = 4, .dtype = DType::u8}),
                    Catch::Contains("build_hybrid: dtype must be f32 or f64, got u8"));
}

#include <edifice/nn/train_step.hpp>

TEST_CASE("training steps differentiate the row-pruned forward pass", "[models][jit]") {
  // The loss reads only the last position, so the last layer's attention runs for one query
  // row (query_offset) in the step graph; the step's results equal the unpruned step's. (SGD:
  // Adam's g / (|g| + eps) would turn the rounding noise of gradients that are exactly zero in
  // theory, such as the key bias's, into full steps.)
  auto built = mh::build_sliding_window({.embed_dim = 6,
                                         .window_size = 4,
                                         .num_heads = 2,
                                         .head_dim = 4,
                                         .num_layers = 2,
                                         .ffn_dim = 8,
                                         .dropout = 0.0,
                                         .seq_len = 7});
  nn::Model model(built.output);
  const Tensor x = uniform({3, 7, 6}, 5);
  const Tensor t = uniform({3, 8}, 6);
  auto make = [&](bool prune) {
    jit::Options jo;
    jo.prune_rows = prune;
    return nn::TrainStep(
        model, {.loss = nn::Loss::mse(), .optimizer = nn::sgd({.learning_rate = 1e-2}), .jit = jo});
  };
  nn::TrainStep pruned = make(true), full = make(false);
  auto one_row_attention = [](const Graph& g) {
    int n = 0;
    for (const Node* node : g.nodes())
      if (node->op() == Op::attention && node->inputs()[0].shape()[2] == 1) ++n;
    return n;
  };
  CHECK(one_row_attention(pruned.graph(t)) == 1);
  CHECK(one_row_attention(full.graph(t)) == 0);
  nn::Params p1 = model.init(3), p2 = p1;
  nn::OptimizerState s1 = pruned.initial_state(p1), s2 = full.initial_state(p2);
  for (int step = 0; step < 3; ++step) {
    const double l1 = pruned.run(p1, s1, 1e-2, 0, {x}, t).loss;
    const double l2 = full.run(p2, s2, 1e-2, 0, {x}, t).loss;
    CHECK(l1 == Approx(l2).epsilon(1e-6));
  }
  for (const auto& [name, v] : p1) {
    INFO(name);
    CHECK(max_abs_diff(v, p2.at(name)) <= 1e-6);
  }
}
