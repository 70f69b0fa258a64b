// Layers against hand-computed values, naming rules, wiring errors and build/predict.
#include <edifice/core/interpreter.hpp>
#include <edifice/nn/init.hpp>
#include <edifice/nn/layers.hpp>
#include <edifice/nn/model.hpp>

#include <catch2/catch.hpp>

#include "test_util.hpp"

#include <cmath>

using namespace edifice;

using edifice::test::error_of;

namespace {

std::string here(int line) { return fmt::format("{}:{}", __FILE__, line); }

}  // namespace

TEST_CASE("the DSL from the issue builds, initialises and predicts", "[nn]") {
  auto x = nn::input("state_sequence", {nn::dynamic, 6, 10});
  auto h = nn::dense(x, 8, {.name = "input_proj"});
  h = nn::layer_norm(nn::gelu(h));
  auto model = nn::Model(h);
  auto [init, predict] = model.build({.mode = nn::Mode::inference});
  nn::Params params = init(42);
  REQUIRE(params.size() == 4);
  CHECK(params.at("input_proj.kernel").shape() == Shape{10, 8});
  CHECK(params.at("layer_norm_0.gamma").get_as_double(3) == 1.0);
  CHECK(params.at("layer_norm_0.beta").get_as_double(3) == 0.0);
  // Reproducible from the seed, different for another seed.
  CHECK(init(42).at("input_proj.kernel").bitwise_equal(params.at("input_proj.kernel")));
  CHECK(!init(43).at("input_proj.kernel").bitwise_equal(params.at("input_proj.kernel")));
  Tensor batch = nn::initialize(nn::Initializer::uniform(1.0), {3, 6, 10}, DType::f32, 7, 1);
  Tensor y = predict(params, {batch});
  CHECK(y.shape() == Shape{3, 6, 8});
  // Each row is layer-normalised: mean 0, variance ~1 (gamma 1, beta 0).
  for (int r = 0; r < 18; ++r) {
    double mean = 0, var = 0;
    for (int c = 0; c < 8; ++c) mean += y.get_as_double(r * 8 + c) / 8;
    for (int c = 0; c < 8; ++c) var += std::pow(y.get_as_double(r * 8 + c) - mean, 2) / 8;
    CHECK(std::abs(mean) < 1e-5);
    CHECK(var == Approx(1.0).epsilon(1e-3));
  }
}

TEST_CASE("dense computes x.kernel + bias with Axon's [in, out] kernel", "[nn]") {
  auto x = nn::input("x", {2, 3});
  auto model = nn::Model(nn::dense(x, 2, {.name = "d"}));
  nn::Params p;
  p["d.kernel"] = Tensor::from_vector<float>({3, 2}, {1, 2, 3, 4, 5, 6});
  p["d.bias"] = Tensor::from_vector<float>({2}, {0.5f, -1});
  auto [init, predict] = model.build();
  Tensor y = predict(p, {Tensor::from_vector<float>({2, 3}, {1, 0, 0, 1, 1, 1})});
  CHECK(y.at<float>({0, 0}) == 1.5f);
  CHECK(y.at<float>({0, 1}) == 1.0f);
  CHECK(y.at<float>({1, 0}) == 9.5f);
  CHECK(y.at<float>({1, 1}) == 11.0f);
}

TEST_CASE("layers are named {op}_{k} in traversal order unless named", "[nn]") {
  auto x = nn::input("x", {nn::dynamic, 4});
  auto a = nn::dense(x, 4);
  auto b = nn::dense(nn::relu(a), 4);
  auto c = nn::dense(b, 2, {.name = "head"});
  auto model = nn::Model(c);
  CHECK(model.layer_name(a) == "dense_0");
  CHECK(model.layer_name(b) == "dense_1");
  CHECK(model.layer_name(c) == "head");
  std::vector<std::string> names;
  for (const auto& p : model.parameters()) names.push_back(p.name);
  CHECK(names == std::vector<std::string>{"dense_0.bias", "dense_0.kernel", "dense_1.bias",
                                          "dense_1.kernel", "head.bias", "head.kernel"});
  CHECK(model.parameter_count() == 4 * 4 + 4 + 4 * 4 + 4 + 4 * 2 + 2);
  std::string table = model.summary();
  CHECK(table.find("| dense_0 ") != std::string::npos);
  CHECK(table.find("Total parameters: 50") != std::string::npos);
}

TEST_CASE("wiring errors name the layer, the shapes and the user's line", "[nn]") {
  auto x = nn::input("x", {nn::dynamic, 4});
  auto y = nn::input("y", {nn::dynamic, 5});
  int line = __LINE__ + 1;
  auto msg = error_of([&] { nn::add(x, y, {.name = "merge"}); });
  CHECK(msg == "add: cannot broadcast f32[?,4] and f32[?,5] together: axis -1 has extents 4 and 5\n"
               "  in layer \"merge\" (add)\n  the layer was defined at " + here(line));
  line = __LINE__ + 1;
  msg = error_of([&] { nn::dense(x, 0); });
  CHECK(msg == "dense: units must be >= 1, got 0\n  in layer \"dense\" (dense)\n  the layer was "
               "defined at " + here(line));
  auto a = nn::dense(x, 3, {.name = "same"});
  auto b = nn::dense(a, 3, {.name = "same"});
  msg = error_of([&] { nn::Model m(b); });
  CHECK(msg.rfind("Model: duplicate layer name \"same\": a dense defined at ", 0) == 0);
}

TEST_CASE("predict lists every missing, unexpected and mismatched parameter", "[nn]") {
  auto x = nn::input("x", {2, 3});
  auto model = nn::Model(nn::dense(x, 2, {.name = "d"}));
  auto [init, predict] = model.build();
  nn::Params p = init(0);
  p.erase("d.bias");
  p["d.kernel"] = Tensor(DType::f32, {2, 2});
  p["extra"] = Tensor(DType::f32, {1});
  auto msg = error_of([&] { predict(p, {Tensor(DType::f32, {2, 3})}); });
  CHECK(msg == "predict: parameters do not match the model (3 problems):\n"
               "  missing: d.bias f32[2]\n"
               "  mismatched: d.kernel is f32[2,2], the model expects f32[3,2]\n"
               "  unexpected: extra f32[1]");
}

TEST_CASE("predict names a mismatched input by its name, not its position", "[nn]") {
  // The model's graph inputs are its parameters first, then the data: the data input is not
  // input 0 of the compiled graph, and users know it only by name.
  auto x = nn::input("state_sequence", {nn::dynamic, 3});
  auto model = nn::Model(nn::dense(x, 2, {.name = "d"}));
  const nn::Params p = model.init(0);
  CHECK(error_of([&] { model.predict_all(p, {Tensor(DType::f32, {2, 4})}); }) ==
        "specialize: input \"state_sequence\" has shape [2,4], the graph expects f32[?,3]");
  CHECK(error_of([&] { model.predict_all(p, {Tensor(DType::f64, {2, 3})}); }) ==
        "jit: input \"state_sequence\" is f64[2,3], the executable was compiled for f32[2,3]");
}

TEST_CASE("dropout is identity in inference and inverted dropout in training", "[nn]") {
  auto x = nn::input("x", {100, 100});
  auto model = nn::Model(nn::dropout(x, {.rate = 0.25}));
  Tensor ones = Tensor::full(DType::f32, {100, 100}, 1.0);
  auto [i0, infer] = model.build({.mode = nn::Mode::inference});
  CHECK(infer({}, {ones}).bitwise_equal(ones));
  auto [i1, train] = model.build({.mode = nn::Mode::train});
  Tensor a = train({}, {ones});
  Tensor b = train({}, {ones});
  int kept = 0;
  for (std::int64_t i = 0; i < a.numel(); ++i) {
    double v = a.get_as_double(i);
    CHECK((v == 0.0 || std::abs(v - 1.0 / 0.75) < 1e-6));
    kept += v != 0.0;
  }
  CHECK(kept > 7300);  // 7500 expected; 5 sigma is about 217
  CHECK(kept < 7700);
  CHECK(!a.bitwise_equal(b));  // the key advances every call
}

TEST_CASE("lstm returns the sequence and the final states", "[nn]") {
  auto x = nn::input("x", {2, 5, 3});
  auto out = nn::lstm(x, 4, {.name = "rnn", .forget_bias = 1.0});
  auto model = nn::Model(std::vector<nn::Layer>{out.sequence, out.h, out.c});
  nn::Params p = model.init(1);
  CHECK(p.at("rnn.bias").get_as_double(4) == 1.0);  // forget block
  CHECK(p.at("rnn.bias").get_as_double(0) == 0.0);
  auto xs = nn::initialize(nn::Initializer::uniform(1.0), {2, 5, 3}, DType::f32, 3, 3);
  auto outs = model.predict_all(p, {xs});
  REQUIRE(outs.size() == 3);
  CHECK(outs[0].shape() == Shape{2, 5, 4});
  for (int b = 0; b < 2; ++b)
    for (int u = 0; u < 4; ++u)
      CHECK(outs[1].at<float>({b, u}) == outs[0].at<float>({b, 4, u}));
}

TEST_CASE("initialisers have the documented statistics", "[nn]") {
  auto g = nn::initialize(nn::Initializer::glorot_uniform(), {200, 300}, DType::f64, 5, 9);
  double limit = std::sqrt(6.0 / 500.0), max_abs = 0, mean = 0;
  for (std::int64_t i = 0; i < g.numel(); ++i) {
    max_abs = std::max(max_abs, std::abs(g.get_as_double(i)));
    mean += g.get_as_double(i) / g.numel();
  }
  CHECK(max_abs <= limit);
  CHECK(max_abs > 0.99 * limit);
  CHECK(std::abs(mean) < 0.01 * limit);
  auto q = nn::initialize(nn::Initializer::orthogonal(), {6, 4}, DType::f64, 5, 9);
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) {
      double dot = 0;
      for (int r = 0; r < 6; ++r) dot += q.at<double>({r, i}) * q.at<double>({r, j});
      CHECK(dot == Approx(i == j ? 1.0 : 0.0).margin(1e-12));
    }
  auto n = nn::initialize(nn::Initializer::normal(2.0), {100000}, DType::f64, 1, 2);
  double m = 0, v = 0;
  for (std::int64_t i = 0; i < n.numel(); ++i) m += n.get_as_double(i) / n.numel();
  for (std::int64_t i = 0; i < n.numel(); ++i) v += std::pow(n.get_as_double(i) - m, 2) / n.numel();
  CHECK(std::abs(m) < 0.03);
  CHECK(std::sqrt(v) == Approx(2.0).epsilon(0.02));
}
