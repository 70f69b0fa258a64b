// Every built-in layer: gradients of its traced graph (with respect to its parameters and its
// input) against central finite differences in f64 (eps 1e-6, atol 1e-5, rtol 1e-3).
#include <edifice/core/autodiff.hpp>
#include <edifice/core/interpreter.hpp>
#include <edifice/nn/init.hpp>
#include <edifice/nn/layers.hpp>
#include <edifice/nn/model.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <functional>

using namespace edifice;

namespace {

Tensor random(const Shape& shape, std::uint64_t stream, DType dtype = DType::f64) {
  return nn::initialize(nn::Initializer::uniform(1.0), shape, dtype, 99, stream);
}

// loss = sum(output * fixed random weights); checks d loss / d every float graph input.
void check_layer_gradients(const nn::Layer& out, nn::Mode mode = nn::Mode::inference) {
  nn::Model model(out);
  nn::TracedModel t = model.trace(mode);
  const auto& inputs = t.graph.inputs();
  Value y = t.graph.outputs()[0];
  Value w = ops::constant(random(y.shape(), 1234));
  Value loss = ops::reduce_sum(ops::mul(y, w), [&] {
    std::vector<std::int64_t> axes;
    for (std::int64_t i = 0; i < y.rank(); ++i) axes.push_back(i);
    return axes;
  }());
  std::vector<Value> wrt;
  for (const Value& in : inputs)
    if (is_floating(in.dtype())) wrt.push_back(in);
  std::vector<Value> outs = {loss};
  for (const Value& g : grad(loss, wrt)) outs.push_back(g);
  Graph g(inputs, outs);

  std::vector<Tensor> args;
  nn::Params params = model.init(5);
  std::size_t stream = 0;
  for (const Value& in : inputs) {
    const std::string& name = in.node().attrs().get_string("name");
    if (params.count(name)) {
      // Parameters drawn afresh so gammas, biases and the like are not all equal.
      args.push_back(random(in.shape(), 100 + stream++, in.dtype()));
    } else if (in.dtype() == DType::i64 && in.rank() == 0) {
      args.push_back(Tensor::scalar<std::int64_t>(7));  // the rng key
    } else if (!is_floating(in.dtype())) {
      Tensor ids(in.dtype(), in.shape());
      for (std::int64_t i = 0; i < ids.numel(); ++i) ids.set_from_double(i, double(i % 3));
      args.push_back(ids);
    } else {
      args.push_back(random(in.shape(), 200 + stream++, in.dtype()));
    }
  }
  auto base = interpret(g, args);
  const double eps = 1e-6;
  std::size_t k = 0;
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    if (!is_floating(inputs[i].dtype())) continue;
    const Tensor& analytic = base[1 + k++];
    for (std::int64_t j = 0; j < args[i].numel(); ++j) {
      std::vector<Tensor> plus = args, minus = args;
      plus[i] = args[i].clone();
      minus[i] = args[i].clone();
      plus[i].set_from_double(j, args[i].get_as_double(j) + eps);
      minus[i].set_from_double(j, args[i].get_as_double(j) - eps);
      double numeric = (interpret(g, plus)[0].get_as_double(0) -
                        interpret(g, minus)[0].get_as_double(0)) / (2 * eps);
      double a = analytic.get_as_double(j);
      INFO("input " << inputs[i].node().attrs().get_string("name") << " element " << j);
      CHECK(std::abs(a - numeric) <= 1e-5 + 1e-3 * std::abs(numeric));
    }
  }
}

}  // namespace

TEST_CASE("every built-in layer's gradients match finite differences in f64", "[nn][grad]") {
  auto x = nn::input("x", {2, 3, 4}, DType::f64);
  auto x2 = nn::input("x2", {2, 3, 4}, DType::f64);
  SECTION("dense") { check_layer_gradients(nn::dense(x, 3)); }
  SECTION("dense without bias") { check_layer_gradients(nn::dense(x, 2, {.use_bias = false})); }
  SECTION("layer_norm") { check_layer_gradients(nn::layer_norm(x)); }
  SECTION("relu") { check_layer_gradients(nn::relu(nn::dense(x, 3))); }
  SECTION("gelu") { check_layer_gradients(nn::gelu(x)); }
  SECTION("tanh") { check_layer_gradients(nn::tanh(x)); }
  SECTION("sigmoid") { check_layer_gradients(nn::sigmoid(x)); }
  SECTION("softmax") { check_layer_gradients(nn::softmax(x, {.axis = 1})); }
  SECTION("add") { check_layer_gradients(nn::add(x, x2)); }
  SECTION("multiply") { check_layer_gradients(nn::multiply(x, x2)); }
  SECTION("concatenate") { check_layer_gradients(nn::concatenate({x, x2}, {.axis = 1})); }
  SECTION("reshape") { check_layer_gradients(nn::dense(nn::reshape(x, {2, 12}), 2)); }
  SECTION("transpose") { check_layer_gradients(nn::dense(nn::transpose(x, {0, 2, 1}), 2)); }
  SECTION("take_index") { check_layer_gradients(nn::take_index(nn::dense(x, 3), 1, -1)); }
  SECTION("lstm sequence") { check_layer_gradients(nn::lstm(x, 2).sequence); }
  SECTION("lstm final states") {
    auto l = nn::lstm(x, 2, {.forget_bias = 1.0});
    check_layer_gradients(nn::add(l.h, l.c));
  }
  SECTION("dropout in train mode") {
    check_layer_gradients(nn::dropout(nn::dense(x, 3), {.rate = 0.3}), nn::Mode::train);
  }
  SECTION("custom") {
    auto scaled = nn::custom(
        "scale", {x}, {{"s", {4}, DType::f64, nn::Initializer::ones()}},
        [](const auto& in, const auto& p, const auto&) { return ops::mul(in[0], p.at("s")); });
    check_layer_gradients(scaled);
  }
}

TEST_CASE("embedding gradients reach the table", "[nn][grad]") {
  // The embedding table is f32; its gradient is a scatter-add of the upstream rows.
  auto ids = nn::input("ids", {2, 3}, DType::i64);
  auto e = nn::embedding(ids, 5, 2, {.name = "emb"});
  nn::Model model(e);
  nn::TracedModel t = model.trace(nn::Mode::inference);
  Value y = t.graph.outputs()[0];
  Value loss = ops::reduce_sum(y, {0, 1, 2});
  Value dtable = grad(loss, {t.graph.inputs()[0]})[0];
  Graph g(t.graph.inputs(), {dtable});
  Tensor table = random({5, 2}, 1, DType::f32);
  Tensor idx = Tensor::from_vector<std::int64_t>({2, 3}, {0, 1, 1, 4, 4, 4});
  Tensor d = interpret(g, {table, idx})[0];
  const double counts[] = {1, 2, 0, 0, 3};
  for (int r = 0; r < 5; ++r)
    for (int c = 0; c < 2; ++c) CHECK(d.at<float>({r, c}) == counts[r]);
}
