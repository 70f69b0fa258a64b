// The training loop: learning XOR and a regression, running means and validation, early
// stopping, handlers, batching and shuffling, the CSV log, progress output and anomaly mode.
#include <edifice/nn/init.hpp>
#include <edifice/nn/layers.hpp>
#include <edifice/nn/trainer.hpp>

#include <fmt/format.h>
#include <unistd.h>
#include <catch2/catch.hpp>

#include "test_util.hpp"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

using namespace edifice;

using edifice::test::contains;
using edifice::test::error_of;

namespace {

std::filesystem::path temp_dir() {
  auto dir =
      std::filesystem::temp_directory_path() / fmt::format("edifice_trainer_test_{}", ::getpid());
  std::filesystem::create_directories(dir);
  return dir;
}

std::vector<std::string> read_lines(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::vector<std::string> lines;
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  return lines;
}

nn::FitOptions quiet(nn::FitOptions o) {
  o.progress = false;
  return o;
}

// A small regression problem: y = sin(2x) + x/2 on 64 points of [-1.5, 1.5].
nn::Dataset regression_data(int n) {
  std::vector<float> xs, ys;
  for (int i = 0; i < n; ++i) {
    const float x = -1.5f + 3.0f * static_cast<float>(i) / static_cast<float>(n - 1);
    xs.push_back(x);
    ys.push_back(std::sin(2 * x) + x / 2);
  }
  return nn::Dataset(Tensor::from_vector<float>({n, 1}, xs),
                     Tensor::from_vector<float>({n, 1}, ys));
}

nn::Model small_regressor() {
  auto x = nn::input("x", {nn::dynamic, 1});
  auto h = nn::tanh(nn::dense(x, 16));
  return nn::Model(nn::dense(h, 1));
}

}  // namespace

TEST_CASE("a small MLP learns XOR to 100% accuracy", "[nn][train]") {
  auto x = nn::input("x", {nn::dynamic, 2});
  auto hidden = nn::tanh(nn::dense(x, 8));
  auto y = nn::sigmoid(nn::dense(hidden, 1));
  nn::Trainer trainer(nn::Model(y), {.loss = nn::Loss::binary_cross_entropy(),
                                     .metrics = {nn::Metric::accuracy()},
                                     .optimizer = nn::adam({.learning_rate = 0.05})});
  trainer.init(7);
  nn::Dataset xor_data(Tensor::from_vector<float>({4, 2}, {0, 0, 0, 1, 1, 0, 1, 1}),
                       Tensor::from_vector<float>({4, 1}, {0, 1, 1, 0}));
  nn::History h = trainer.fit(xor_data, quiet({.epochs = 300, .batch_size = 4}));
  CHECK(h.stop_reason == "epochs");
  CHECK(h.steps == 300);
  CHECK(h.epochs.size() == 300);
  nn::NamedValues eval = trainer.evaluate(xor_data);
  INFO("final XOR loss " << eval[0].second);
  CHECK(eval[1].first == "accuracy");
  CHECK(eval[1].second == 1.0);
  CHECK(eval[0].second < 0.01);  // binary cross-entropy; observed 7.2e-4 after 300 epochs
  // The loss went down overall.
  CHECK(h.metrics.at("loss").back() < 0.2 * h.metrics.at("loss").front());
}

TEST_CASE("a small regression reaches a low MSE", "[nn][train]") {
  nn::Trainer trainer(small_regressor(), {.loss = nn::Loss::mse(),
                                          .metrics = {nn::Metric::from_loss(nn::Loss::mae())},
                                          .optimizer = nn::adam({.learning_rate = 0.02})});
  trainer.init(3);
  nn::Dataset data = regression_data(64);
  const double before = trainer.evaluate(data)[0].second;
  nn::History h = trainer.fit(data, quiet({.epochs = 400, .batch_size = 16}));
  nn::NamedValues eval = trainer.evaluate(data);
  INFO("MSE before " << before << ", after " << eval[0].second << ", MAE " << eval[1].second);
  // Observed: MSE 1.116 before, 1.47e-3 after 400 epochs (MAE 0.032); the targets' variance
  // is ~0.6.
  CHECK(before > 1.0);
  CHECK(eval[0].second < 3e-3);
  CHECK(eval[1].first == "mae");
  CHECK(h.steps == 400 * 4);
}

TEST_CASE("running means are batch-size weighted and match evaluation", "[nn][train]") {
  // lr = 0: parameters never change, so the epoch mean must equal the dataset mean, and with
  // 10 samples in batches of 4 the last batch (2 samples) must weigh half as much.
  nn::Trainer trainer(small_regressor(), {.loss = nn::Loss::mse(),
                                          .metrics = {nn::Metric::from_loss(nn::Loss::mae())},
                                          .optimizer = nn::sgd({.learning_rate = 0.0})});
  trainer.init(11);
  nn::Dataset data = regression_data(10);
  nn::Dataset val = regression_data(7);
  std::vector<double> batch_losses, batch_sizes;
  std::vector<nn::NamedValues> running;
  trainer.on_step([&](const nn::StepEvent& e) {
    batch_losses.push_back(e.loss);
    batch_sizes.push_back(static_cast<double>(e.batch_size));
    running.push_back(e.running);
    return nn::Control::proceed;
  });
  nn::History h = trainer.fit(
      data, quiet({.epochs = 2, .batch_size = 4, .validation = val, .validation_batch_size = 3}));
  REQUIRE(batch_losses.size() == 6);
  CHECK(batch_sizes == std::vector<double>{4, 4, 2, 4, 4, 2});
  double sum = 0, count = 0;
  for (int i = 0; i < 3; ++i) {
    sum += batch_losses[i] * batch_sizes[i];
    count += batch_sizes[i];
    CHECK(running[i][0].first == "loss");
    CHECK(running[i][0].second == Approx(sum / count).epsilon(1e-12));
  }
  // The running mean restarts each epoch.
  CHECK(running[3][0].second == Approx(batch_losses[3]).epsilon(1e-12));
  nn::NamedValues full = trainer.evaluate(data, 10);
  nn::NamedValues v = trainer.evaluate(val, 7);
  for (int e = 0; e < 2; ++e) {
    CHECK(h.metrics.at("loss")[e] == Approx(full[0].second).epsilon(1e-6));
    CHECK(h.metrics.at("mae")[e] == Approx(full[1].second).epsilon(1e-6));
    CHECK(h.metrics.at("val_loss")[e] == Approx(v[0].second).epsilon(1e-6));
    CHECK(h.metrics.at("val_mae")[e] == Approx(v[1].second).epsilon(1e-6));
  }
  CHECK(h.epochs == std::vector<std::int64_t>{0, 1});
}

TEST_CASE("early stopping stops after `patience` epochs without improvement", "[nn][train]") {
  nn::Trainer trainer(small_regressor(),
                      {.loss = nn::Loss::mse(), .optimizer = nn::sgd({.learning_rate = 0.0})});
  trainer.init(1);
  nn::Dataset data = regression_data(8);
  std::ostringstream out;
  // The loss never changes: epoch 0 sets the best, epochs 1 and 2 do not improve -> stop.
  nn::History h = trainer.fit(data, {.epochs = 20,
                                     .batch_size = 8,
                                     .validation = data,
                                     .early_stopping = nn::EarlyStopping{.patience = 2},
                                     .progress_out = &out,
                                     .progress_tty = false});
  CHECK(h.stop_reason == "early_stopping");
  CHECK(h.epochs == std::vector<std::int64_t>{0, 1, 2});
  CHECK(trainer.state().loop.epoch == 3);
  CHECK(trainer.state().loop.early_stopping_wait == 2);
  CHECK(contains(out.str(), "Early stopping after epoch 3: val_loss did not improve for 2 epochs"));

  // A decreasing loss with min_delta larger than its improvements also stops.
  nn::Trainer learning(small_regressor(),
                       {.loss = nn::Loss::mse(), .optimizer = nn::sgd({.learning_rate = 1e-4})});
  learning.init(1);
  h = learning.fit(data, quiet({.epochs = 20,
                                .batch_size = 8,
                                .early_stopping = nn::EarlyStopping{
                                    .monitor = "loss", .patience = 1, .min_delta = 1.0}}));
  CHECK(h.stop_reason == "early_stopping");
  CHECK(h.epochs.size() == 2);

  // Unknown monitors are rejected up front, listing what is logged.
  CHECK(error_of([&] {
          trainer.fit(data, quiet({.epochs = 1, .early_stopping = nn::EarlyStopping{}}));
        }) == "fit: early stopping monitors \"val_loss\", but the epochs log only: loss");
}

TEST_CASE("handlers run in order, filter by every, and can stop", "[nn][train]") {
  nn::Trainer trainer(small_regressor(),
                      {.loss = nn::Loss::mse(), .optimizer = nn::sgd({.learning_rate = 0.01})});
  trainer.init(5);
  std::vector<std::string> calls;
  trainer.on_step([&](const nn::StepEvent& e) {
    calls.push_back(fmt::format("a{}", e.step));
    return nn::Control::proceed;
  });
  trainer.on_step(
      [&](const nn::StepEvent& e) {
        calls.push_back(fmt::format("b{}", e.step));
        return e.step == 6 ? nn::Control::stop : nn::Control::proceed;
      },
      3);
  int epochs_seen = 0;
  trainer.on_epoch([&](const nn::EpochEvent& e) {
    ++epochs_seen;
    CHECK(e.metrics[0].first == "loss");
    return nn::Control::proceed;
  });
  std::string completed;
  trainer.on_completion([&](const nn::History& h) { completed = h.stop_reason; });
  nn::History h = trainer.fit(regression_data(16), quiet({.epochs = 10, .batch_size = 4}));
  CHECK(calls == std::vector<std::string>{"a1", "a2", "a3", "b3", "a4", "a5", "a6", "b6"});
  CHECK(h.stop_reason == "handler");
  CHECK(h.steps == 6);
  CHECK(epochs_seen == 1);  // epoch 0 ended after step 4
  CHECK(completed == "handler");
  // The state stopped mid-epoch: epoch 1, two batches in.
  CHECK(trainer.state().loop.epoch == 1);
  CHECK(trainer.state().loop.cursor == 2);

  // max_steps is absolute: continuing to 9 runs 3 more steps.
  h = trainer.fit(regression_data(16), quiet({.epochs = 10, .max_steps = 9, .batch_size = 4}));
  CHECK(h.stop_reason == "max_steps");
  CHECK(h.steps == 9);
}

TEST_CASE("batching: partial batches kept or dropped, shuffling depends on (seed, epoch)",
          "[nn][train]") {
  CHECK(nn::batches_per_epoch(10, 4, false) == 3);
  CHECK(nn::batches_per_epoch(10, 4, true) == 2);
  CHECK(nn::batches_per_epoch(8, 4, false) == 2);

  auto a = nn::epoch_order(50, true, 123, 0);
  auto b = nn::epoch_order(50, true, 123, 1);
  CHECK(a == nn::epoch_order(50, true, 123, 0));  // a pure function of (seed, epoch)
  CHECK(a != b);
  CHECK(a != nn::epoch_order(50, true, 124, 0));
  CHECK(std::set<std::int64_t>(a.begin(), a.end()).size() == 50);  // a permutation
  auto identity = nn::epoch_order(5, false, 123, 3);
  CHECK(identity == std::vector<std::int64_t>{0, 1, 2, 3, 4});

  // Every sample is seen once per epoch; with drop_last the partial batch is skipped.
  nn::Trainer trainer(small_regressor(),
                      {.loss = nn::Loss::mse(), .optimizer = nn::sgd({.learning_rate = 0.0})});
  trainer.init(2);
  std::vector<std::int64_t> sizes;
  trainer.on_step([&](const nn::StepEvent& e) {
    sizes.push_back(e.batch_size);
    return nn::Control::proceed;
  });
  trainer.fit(regression_data(10), quiet({.epochs = 1, .batch_size = 4, .drop_last = true}));
  CHECK(sizes == std::vector<std::int64_t>{4, 4});

  // Gathered rows follow the order.
  nn::Dataset d(Tensor::from_vector<std::int32_t>({3, 2}, {0, 1, 2, 3, 4, 5}),
                Tensor::from_vector<float>({3}, {10, 11, 12}));
  std::vector<std::int64_t> idx = {2, 0};
  auto batch = d.gather(idx);
  CHECK(batch.inputs[0].shape() == Shape{2, 2});
  CHECK(batch.inputs[0].at<std::int32_t>({0, 1}) == 5);
  CHECK(batch.targets.at<float>({1}) == 10.0f);
}

TEST_CASE("data errors name the input, both types and the fixed batch", "[nn][train]") {
  nn::Trainer trainer(small_regressor(), {.loss = nn::Loss::mse(), .optimizer = nn::sgd()});
  trainer.init(0);
  nn::Dataset wrong(Tensor(DType::f32, {8, 3}), Tensor(DType::f32, {8, 1}));
  CHECK(error_of([&] { trainer.fit(wrong, quiet({})); }) ==
        "fit: input \"x\" of the data is f32[8,3], the model takes f32[?,1] (the leading axis is "
        "the samples)");
  CHECK(error_of([] {
          nn::Dataset(Tensor(DType::f32, {8, 3}), Tensor(DType::f32, {7, 1}));
        }) ==
        "Dataset: input 0 is f32[8,3] but the targets f32[7,1] hold 7 samples (the leading extents "
        "must agree)");

  auto x = nn::input("x", {4, 2});
  nn::Trainer fixed(nn::Model(nn::dense(x, 1)), {.loss = nn::Loss::mse(), .optimizer = nn::sgd()});
  fixed.init(0);
  nn::Dataset ten(Tensor(DType::f32, {10, 2}), Tensor(DType::f32, {10, 1}));
  CHECK(contains(error_of([&] { fixed.fit(ten, quiet({.batch_size = 4})); }),
                 "the model's input \"x\" has a fixed batch of 4 (f32[4,2]), so batches must all "
                 "hold exactly 4 samples; got batch_size 4 for 10 samples"));
  CHECK(fixed.fit(ten, quiet({.batch_size = 4, .drop_last = true})).steps == 2);

  // Class indices out of range are caught on the host.
  auto xi = nn::input("x", {nn::dynamic, 2});
  nn::Trainer clf(
      nn::Model(nn::dense(xi, 3)),
      {.loss = nn::Loss::categorical_cross_entropy_with_logits(), .optimizer = nn::sgd()});
  clf.init(0);
  nn::Dataset bad(Tensor(DType::f32, {3, 2}), Tensor::from_vector<std::int64_t>({3}, {0, 3, 1}));
  CHECK(error_of([&] { clf.fit(bad, quiet({})); }) ==
        "fit: target class index 3 (element 1 of the targets) is out of range for the model's 3 "
        "classes");
}

TEST_CASE("a classifier with integer class targets trains through the compiled step",
          "[nn][train]") {
  // Three Gaussian-ish blobs, labels as i64 indices, logits + categorical cross-entropy.
  std::vector<float> xs;
  std::vector<std::int64_t> ys;
  Tensor noise = nn::initialize(nn::Initializer::uniform(0.3), {60, 2}, DType::f32, 9, 1);
  const float centers[3][2] = {{0, 1}, {1, -1}, {-1, -1}};
  for (int i = 0; i < 60; ++i) {
    xs.push_back(centers[i % 3][0] + noise.data<float>()[2 * i]);
    xs.push_back(centers[i % 3][1] + noise.data<float>()[2 * i + 1]);
    ys.push_back(i % 3);
  }
  nn::Dataset data(Tensor::from_vector<float>({60, 2}, xs),
                   Tensor::from_vector<std::int64_t>({60}, ys));
  auto x = nn::input("x", {nn::dynamic, 2});
  nn::Trainer trainer(nn::Model(nn::dense(nn::relu(nn::dense(x, 8)), 3)),
                      {.loss = nn::Loss::categorical_cross_entropy_with_logits(),
                       .metrics = {nn::Metric::accuracy()},
                       .optimizer = nn::adamw({.learning_rate = 0.05}),
                       .clip_global_norm = 5.0});
  trainer.init(4);
  double first_norm = NAN;
  trainer.on_step([&](const nn::StepEvent& e) {
    if (e.step == 1) first_norm = e.grad_norm;
    return nn::Control::proceed;
  });
  trainer.fit(data, quiet({.epochs = 30, .batch_size = 16}));
  CHECK(trainer.evaluate(data)[1].second == 1.0);
  CHECK(first_norm > 0);  // clipping on: the norm is reported
}

TEST_CASE("the CSV log has stable columns, per epoch or per step", "[nn][train]") {
  const auto dir = temp_dir();
  nn::Dataset data = regression_data(10);
  nn::Trainer trainer(small_regressor(), {.loss = nn::Loss::mse(),
                                          .metrics = {nn::Metric::from_loss(nn::Loss::mae())},
                                          .optimizer = nn::sgd({.learning_rate = 0.05})});
  trainer.init(1);
  const auto epochs_csv = dir / "epochs.csv";
  trainer.fit(
      data,
      quiet({.epochs = 3, .batch_size = 4, .validation = data, .csv_path = epochs_csv.string()}));
  auto lines = read_lines(epochs_csv);
  REQUIRE(lines.size() == 4);
  CHECK(lines[0] == "epoch,step,loss,mae,val_loss,val_mae,lr,elapsed_s");
  for (int e = 0; e < 3; ++e) {
    CHECK(lines[1 + e].rfind(fmt::format("{},{},", e, 3 * (e + 1)), 0) == 0);
    CHECK(std::count(lines[1 + e].begin(), lines[1 + e].end(), ',') == 7);
    CHECK(contains(lines[1 + e], ",0.05,"));  // lr
  }

  nn::Trainer steps(small_regressor(), {.loss = nn::Loss::mse(),
                                        .metrics = {nn::Metric::from_loss(nn::Loss::mae())},
                                        .optimizer = nn::sgd({.learning_rate = 0.05})});
  steps.init(1);
  const auto steps_csv = dir / "steps.csv";
  steps.fit(data, quiet({.epochs = 2,
                         .batch_size = 4,
                         .validation = data,
                         .csv_path = steps_csv.string(),
                         .csv_every = nn::FitOptions::CsvEvery::step}));
  lines = read_lines(steps_csv);
  REQUIRE(lines.size() == 7);
  CHECK(lines[0] == "epoch,step,loss,mae,lr,elapsed_s");
  CHECK(lines[1].rfind("0,1,", 0) == 0);
  CHECK(lines[4].rfind("1,4,", 0) == 0);
  CHECK(lines[6].rfind("1,6,", 0) == 0);
  // A continued run appends under the same header; another header is refused.
  steps.fit(data, quiet({.epochs = 3,
                         .batch_size = 4,
                         .csv_path = steps_csv.string(),
                         .csv_every = nn::FitOptions::CsvEvery::step}));
  lines = read_lines(steps_csv);
  CHECK(lines.size() == 10);
  CHECK(lines[9].rfind("2,9,", 0) == 0);
  CHECK(contains(error_of([&] {
                   steps.fit(data, quiet({.epochs = 4,
                                          .batch_size = 4,
                                          .validation = data,
                                          .csv_path = steps_csv.string()}));
                 }),
                 "CsvLogger: cannot append to"));
  std::filesystem::remove_all(dir);
}

TEST_CASE("fit prints plain progress lines when the output is not a terminal", "[nn][train]") {
  nn::Trainer trainer(small_regressor(), {.loss = nn::Loss::mse(),
                                          .metrics = {nn::Metric::from_loss(nn::Loss::mae())},
                                          .optimizer = nn::sgd({.learning_rate = 0.05})});
  trainer.init(1);
  std::ostringstream out;
  nn::Dataset data = regression_data(12);
  trainer.fit(data, {.epochs = 2,
                     .batch_size = 2,
                     .validation = data,
                     .progress_out = &out,
                     .progress_tty = false,
                     .progress_options = {.line_every = 4}});
  std::vector<std::string> lines;
  std::istringstream in(out.str());
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  // Per epoch: a line at step 4 of 6, then the final line with validation values.
  REQUIRE(lines.size() == 4);
  CHECK(lines[0].rfind("Epoch 1/2 4/6  66% | ", 0) == 0);
  CHECK(contains(lines[0], " | loss: "));
  CHECK(contains(lines[0], " - mae: "));
  CHECK(!contains(lines[0], "val_loss"));
  CHECK(lines[1].rfind("Epoch 1/2 6/6 100% | ", 0) == 0);
  CHECK(contains(lines[1], " - val_loss: "));
  CHECK(contains(lines[1], " - val_mae: "));
  CHECK(lines[3].rfind("Epoch 2/2 6/6 100% | ", 0) == 0);
  CHECK(out.str().find('\r') == std::string::npos);
}

namespace {
// Anomaly fixtures: each builds a NaN/Inf at a line the test knows.
nn::Model log_model(int& line) {
  auto x = nn::input("x", {nn::dynamic, 1});
  line = __LINE__ + 1;
  auto l = nn::custom("log", {x}, {}, [](auto& in, auto&, auto&) { return ops::log(in[0]); },
                      {.name = "my_log"});
  return nn::Model(nn::dense(l, 1, {.name = "head"}));
}
}  // namespace

TEST_CASE("anomaly mode names the op, the pass, the layer and the user's line", "[nn][train]") {
  nn::Dataset data(Tensor::from_vector<float>({4, 1}, {1, 2, -3, 4}), Tensor(DType::f32, {4, 1}));
  SECTION("a log of a negative value in a layer") {
    int line = 0;
    nn::Trainer trainer(log_model(line),
                        {.loss = nn::Loss::mse(), .optimizer = nn::sgd(), .anomaly_mode = true});
    trainer.init(0);
    const nn::Params before = trainer.state().params;
    const std::string msg =
        error_of([&] { trainer.fit(data, quiet({.batch_size = 4, .shuffle = false})); });
    INFO(msg);
    CHECK(
        msg.rfind("anomaly detected in training step 1 (epoch 0, batch 0): log produced NaN in the "
                  "forward pass (1 of 4 elements non-finite, the first at [2,0]); its inputs: "
                  "f32[4,1] in [-3, 4]",
                  0) == 0);
    CHECK(contains(msg, "\n  in layer \"my_log\"\n  the layer was defined at " +
                            fmt::format("{}:{}", __FILE__, line)));
    // The failed step changed nothing.
    CHECK(trainer.state().step() == 0);
    CHECK(trainer.state().params.at("head.kernel").bitwise_equal(before.at("head.kernel")));
  }
  SECTION("a log in a custom loss points at the loss' line") {
    auto x = nn::input("x", {nn::dynamic, 1});
    nn::Model model(nn::dense(x, 1, {.kernel_initializer = nn::Initializer::ones()}));
    const int line = __LINE__ + 2;
    nn::Loss loss{"log_loss", [](const Value& y, const Value& p) {
                    return ops::reduce_mean(ops::log(ops::sub(p, y)), {0, 1});
                  }};
    nn::Trainer trainer(model, {.loss = loss, .optimizer = nn::sgd(), .anomaly_mode = true});
    trainer.init(0);
    const std::string msg =
        error_of([&] { trainer.fit(data, quiet({.batch_size = 4, .shuffle = false})); });
    INFO(msg);
    CHECK(contains(msg, "log produced NaN in the forward pass"));
    CHECK(contains(msg, fmt::format("\n  the op was defined at {}:{}", __FILE__, line)));
  }
  SECTION("an Inf born in the backward pass: the gradient of sqrt at 0") {
    auto x = nn::input("x", {nn::dynamic, 1});
    const int line = __LINE__ + 2;  // the line of the nn::custom call
    auto r =
        nn::custom("root", {x}, {{"a", {1}, DType::f32, nn::Initializer::zeros()}},
                   [](auto& in, auto& p, auto&) { return ops::sqrt(ops::add(in[0], p.at("a"))); },
                   {.name = "root"});
    nn::Trainer trainer(nn::Model(r),
                        {.loss = nn::Loss::mse(), .optimizer = nn::sgd(), .anomaly_mode = true});
    trainer.init(0);
    nn::Dataset zeros(Tensor::from_vector<float>({2, 1}, {0, 1}),
                      Tensor::from_vector<float>({2, 1}, {1, 1}));
    const std::string msg =
        error_of([&] { trainer.fit(zeros, quiet({.batch_size = 2, .shuffle = false})); });
    INFO(msg);
    CHECK(contains(msg, "div produced Inf in the backward (or update) pass"));
    CHECK(contains(msg, "\n  in layer \"root\"\n  the layer was defined at " +
                            fmt::format("{}:{}", __FILE__, line)));
  }
  SECTION("without anomaly mode training goes on") {
    int line = 0;
    nn::Trainer trainer(log_model(line), {.loss = nn::Loss::mse(), .optimizer = nn::sgd()});
    trainer.init(0);
    nn::History h = trainer.fit(data, quiet({.batch_size = 4}));
    CHECK(std::isnan(h.metrics.at("loss")[0]));
  }
}
