// Optimizers against PyTorch's update formulas worked out by hand in f64 on a tiny quadratic,
// global-norm clipping and learning-rate schedules. Every step runs the compiled step graph
// (forward, loss, backward, update in one JIT executable).
#include <edifice/core/interpreter.hpp>
#include <edifice/nn/layers.hpp>
#include <edifice/nn/train_step.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <numbers>

using namespace edifice;

namespace {

// A model whose output is its parameter w [2] (f64) broadcast over the batch: with mse against
// targets c, loss = ((w0-c0)^2 + (w1-c1)^2) / 2 and the gradient is exactly w - c.
nn::Model quadratic_model() {
  auto x = nn::input("x", {nn::dynamic, 1}, DType::f64);
  auto y = nn::custom(
      "quadratic", {x}, {{"w", {2}, DType::f64, nn::Initializer::zeros()}},
      [](const std::vector<Value>& in, const std::map<std::string, Value>& p, const auto&) {
        return ops::add(ops::mul(in[0], ops::scalar(0.0, DType::f64)), p.at("w"));
      },
      {.name = "q"});
  return nn::Model(y);
}

struct Quadratic {
  nn::TrainStep step;
  nn::Params params;
  nn::OptimizerState state;
  Tensor x = Tensor::from_vector<double>({1, 1}, {1.0});
  Tensor c;

  Quadratic(std::shared_ptr<const nn::Optimizer> opt, std::vector<double> w0,
            std::vector<double> c0, double clip = 0.0)
      : step(quadratic_model(),
             {.loss = nn::Loss::mse(), .optimizer = std::move(opt), .clip_global_norm = clip}),
        c(Tensor::from_vector<double>({1, 2}, c0)) {
    params["q.w"] = Tensor::from_vector<double>({2}, w0);
    state = step.initial_state(params);
  }
  nn::StepResult run(double lr) { return step.run(params, state, lr, 0, {x}, c); }
  double w(int i) const { return params.at("q.w").get_as_double(i); }
};

constexpr double kTol = 1e-14;

}  // namespace

TEST_CASE("SGD: plain, momentum, nesterov and weight decay follow torch.optim.SGD", "[nn][optim]") {
  SECTION("plain: p <- p - lr*g, first step by hand") {
    Quadratic q(nn::sgd({.learning_rate = 0.1}), {1, -2}, {0, 0});
    q.run(0.1);
    CHECK(q.w(0) == Approx(0.9).epsilon(kTol));
    CHECK(q.w(1) == Approx(-1.8).epsilon(kTol));
    CHECK(q.state.size() == 1);  // only "step"
    CHECK(*q.state.at("step").data<std::int64_t>() == 1);
  }
  for (bool nesterov : {false, true}) {
    DYNAMIC_SECTION("momentum 0.9, weight decay 0.01, nesterov " << nesterov) {
      const double lr = 0.05, mu = 0.9, wd = 0.01;
      Quadratic q(
          nn::sgd({.learning_rate = lr, .momentum = mu, .nesterov = nesterov, .weight_decay = wd}),
          {1.5, -0.5}, {0.25, 0.75});
      double w[2] = {1.5, -0.5}, b[2] = {0, 0};
      const double c[2] = {0.25, 0.75};
      for (int t = 0; t < 4; ++t) {
        q.run(lr);
        for (int i = 0; i < 2; ++i) {
          double g = (w[i] - c[i]) + wd * w[i];
          b[i] = t == 0 ? g : mu * b[i] + g;  // torch: the first step clones g into the buffer
          g = nesterov ? g + mu * b[i] : b[i];
          w[i] -= lr * g;
        }
        INFO("step " << t + 1);
        CHECK(q.w(0) == Approx(w[0]).epsilon(kTol));
        CHECK(q.w(1) == Approx(w[1]).epsilon(kTol));
        CHECK(q.state.at("sgd.momentum.q.w").get_as_double(0) == Approx(b[0]).epsilon(kTol));
      }
      CHECK(*q.state.at("step").data<std::int64_t>() == 4);
    }
  }
}

TEST_CASE("Adam and AdamW follow torch.optim's bias-corrected updates", "[nn][optim]") {
  const double lr = 0.1, b1 = 0.9, b2 = 0.999, eps = 1e-8;
  for (const char* kind : {"adam", "adam_l2", "adamw"}) {
    DYNAMIC_SECTION(kind) {
      const std::string k = kind;
      const double wd = k == "adam" ? 0.0 : 0.1;
      std::shared_ptr<const nn::Optimizer> opt =
          k == "adamw" ? nn::adamw({.learning_rate = lr, .weight_decay = wd})
                       : nn::adam({.learning_rate = lr, .weight_decay = wd});
      Quadratic q(opt, {2.0, -1.0}, {0.5, 0.5});
      double w[2] = {2.0, -1.0}, m[2] = {0, 0}, v[2] = {0, 0};
      const double c[2] = {0.5, 0.5};
      for (int t = 1; t <= 5; ++t) {
        q.run(lr);
        for (int i = 0; i < 2; ++i) {
          double g = w[i] - c[i];
          if (k == "adamw") w[i] *= 1 - lr * wd;
          if (k == "adam_l2") g += wd * w[i];
          m[i] = b1 * m[i] + (1 - b1) * g;
          v[i] = b2 * v[i] + (1 - b2) * g * g;
          const double mhat = m[i] / (1 - std::pow(b1, t));
          const double vhat = v[i] / (1 - std::pow(b2, t));
          w[i] -= lr * mhat / (std::sqrt(vhat) + eps);
        }
        INFO("step " << t);
        CHECK(q.w(0) == Approx(w[0]).epsilon(1e-13));
        CHECK(q.w(1) == Approx(w[1]).epsilon(1e-13));
        const std::string prefix = k == "adamw" ? "adamw" : "adam";
        CHECK(q.state.at(prefix + ".m.q.w").get_as_double(1) == Approx(m[1]).epsilon(1e-13));
        CHECK(q.state.at(prefix + ".v.q.w").get_as_double(1) == Approx(v[1]).epsilon(1e-13));
      }
      if (k == "adam") {
        // The first Adam step moves each coordinate by lr * sign(g) (up to eps): 2 - 0.1.
        Quadratic fresh(opt, {2.0, -1.0}, {0.5, 0.5});
        fresh.run(lr);
        CHECK(fresh.w(0) == Approx(1.9).epsilon(1e-8));
        CHECK(fresh.w(1) == Approx(-0.9).epsilon(1e-8));
      }
    }
  }
}

TEST_CASE("global-norm clipping scales gradients by max_norm / (norm + 1e-6)", "[nn][optim]") {
  // g = w - c = (3, 4): norm 5.
  Quadratic clipped(nn::sgd({.learning_rate = 1.0}), {3, 4}, {0, 0}, /*clip=*/1.0);
  nn::StepResult r = clipped.run(1.0);
  CHECK(r.grad_norm == Approx(5.0).epsilon(1e-15));
  const double scale = 1.0 / (5.0 + 1e-6);
  CHECK(clipped.w(0) == Approx(3 - 3 * scale).epsilon(kTol));
  CHECK(clipped.w(1) == Approx(4 - 4 * scale).epsilon(kTol));
  // Below max_norm nothing changes: scale = min(1, 10 / 5) = 1.
  Quadratic loose(nn::sgd({.learning_rate = 0.5}), {3, 4}, {0, 0}, /*clip=*/10.0);
  r = loose.run(0.5);
  CHECK(r.grad_norm == Approx(5.0).epsilon(1e-15));
  CHECK(loose.w(0) == 1.5);
  CHECK(loose.w(1) == 2.0);
  // Without clipping (and anomaly mode) the norm is not computed.
  Quadratic plain(nn::sgd({.learning_rate = 0.5}), {3, 4}, {0, 0});
  CHECK(std::isnan(plain.run(0.5).grad_norm));
}

TEST_CASE("the learning rate is a per-step input: changing it does not recompile", "[nn][optim]") {
  Quadratic q(nn::sgd({.learning_rate = 0.1}), {1, 1}, {0, 0});
  q.run(0.5);   // w = 0.5
  q.run(0.25);  // w = 0.5 - 0.25*0.5 = 0.375
  CHECK(q.w(0) == 0.375);
}

TEST_CASE("schedules: constant, linear warmup, warmup + cosine decay", "[nn][optim]") {
  nn::Schedule c = 0.01;
  CHECK(c(0) == 0.01);
  CHECK(c(1000) == 0.01);
  CHECK(c.description() == "constant(0.01)");

  auto w = nn::Schedule::linear_warmup(1.0, 4);
  CHECK(w(0) == 0.25);
  CHECK(w(1) == 0.5);
  CHECK(w(2) == 0.75);
  CHECK(w(3) == 1.0);
  CHECK(w(100) == 1.0);

  auto cos = nn::Schedule::warmup_cosine(1.0, 2, 4, 0.1);
  CHECK(cos(0) == 0.5);
  CHECK(cos(1) == 1.0);
  CHECK(cos(2) == 1.0);  // decay starts at the peak
  CHECK(cos(3) == Approx(0.1 + 0.9 * (1 + std::cos(std::numbers::pi / 4)) / 2).epsilon(1e-15));
  CHECK(cos(4) == Approx(0.55).epsilon(1e-15));
  CHECK(cos(5) == Approx(0.1 + 0.9 * (1 + std::cos(3 * std::numbers::pi / 4)) / 2).epsilon(1e-15));
  CHECK(cos(6) == 0.1);
  CHECK(cos(1000) == 0.1);
  CHECK(cos.description() == "warmup_cosine(peak=1, warmup=2, decay=4, final=0.1)");

  auto pure = nn::Schedule::warmup_cosine(2.0, 0, 2);
  CHECK(pure(0) == 2.0);
  CHECK(pure(1) == Approx(1.0).epsilon(1e-15));
  CHECK(pure(2) == 0.0);

  // The schedule drives the optimizer's rate through its options.
  auto opt = nn::sgd({.learning_rate = nn::Schedule::linear_warmup(0.2, 2)});
  CHECK(opt->learning_rate()(0) == 0.1);
}

TEST_CASE("optimizer options are validated", "[nn][optim]") {
  auto error_of = [](auto&& f) -> std::string {
    try {
      f();
    } catch (const Error& e) {
      return e.what();
    }
    return "<no error>";
  };
  CHECK(error_of([] { nn::sgd({.nesterov = true}); }) == "sgd: nesterov needs momentum > 0");
  CHECK(error_of([] { nn::adam({.beta1 = 1.0}); }) == "adam: beta1 must be in [0, 1), got 1");
  CHECK(error_of([] { nn::adamw({.weight_decay = -1}); }) ==
        "adamw: weight_decay must be a finite number >= 0, got -1");
  CHECK(error_of([] { nn::Schedule::linear_warmup(1.0, 0); }) ==
        "linear_warmup: warmup_steps must be >= 1, got 0");
  // State names and shapes.
  nn::Params p;
  p["a.kernel"] = Tensor(DType::f32, {2, 3});
  auto state = nn::adamw()->init(p);
  CHECK(state.size() == 3);
  CHECK(state.at("adamw.m.a.kernel").shape() == Shape{2, 3});
  CHECK(state.at("adamw.v.a.kernel").dtype() == DType::f32);
  CHECK(state.at("step").dtype() == DType::i64);
}

TEST_CASE("the compiled step graph agrees with the reference interpreter", "[nn][optim]") {
  // Dense + relu + dropout + dense, AdamW with clipping: forward, backward, clip and update in
  // one graph, run by the JIT and by the interpreter on the same inputs.
  auto x = nn::input("x", {nn::dynamic, 3});
  auto h = nn::dropout(nn::relu(nn::dense(x, 5)), {.rate = 0.25});
  nn::TrainStep step(nn::Model(nn::sigmoid(nn::dense(h, 1))),
                     {.loss = nn::Loss::binary_cross_entropy(),
                      .metrics = {nn::Metric::accuracy()},
                      .optimizer = nn::adamw({.learning_rate = 0.01}),
                      .clip_global_norm = 0.5});
  nn::Params params = step.model().init(3);
  nn::OptimizerState state = step.initial_state(params);
  Tensor xs =
      Tensor::from_vector<float>({4, 3}, {0.5f, -1, 2, 1, 0, -0.5f, -2, 1, 1, 0.25f, 0.5f, -1});
  Tensor ys = Tensor::from_vector<float>({4, 1}, {1, 0, 1, 0});
  // Two steps so the moments are non-zero.
  step.run(params, state, 0.01, 11, {xs}, ys);
  std::vector<Tensor> args;
  for (const auto& [name, t] : params) args.push_back(t);
  for (const auto& [name, t] : state) args.push_back(t);
  args.push_back(Tensor::scalar<double>(0.01));
  args.push_back(Tensor::scalar<std::int64_t>(12));
  args.push_back(xs);
  args.push_back(ys);
  const Graph& g = step.graph(ys);
  REQUIRE(g.inputs().size() == args.size());
  std::vector<Tensor> expected = interpret(g, args);
  std::vector<Shape> shapes;
  for (const Tensor& t : args) shapes.push_back(t.shape());
  std::vector<Tensor> got = jit::compile(g, shapes)->run(args);
  REQUIRE(got.size() == expected.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    INFO("output " << i << " of " << got.size());
    REQUIRE(got[i].shape() == expected[i].shape());
    for (std::int64_t k = 0; k < got[i].numel(); ++k)
      CHECK(got[i].get_as_double(k) ==
            Approx(expected[i].get_as_double(k)).margin(1e-6).epsilon(1e-5));
  }
}
