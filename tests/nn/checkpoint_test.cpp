// Training checkpoints: contents, exact resume (mid-epoch, dropout on, shuffling on), refusal
// to half-load mismatched parameters or optimizer state, and plain parameter files.
#include <edifice/nn/checkpoint.hpp>
#include <edifice/nn/init.hpp>
#include <edifice/nn/layers.hpp>
#include <edifice/nn/safetensors.hpp>
#include <edifice/nn/trainer.hpp>

#include <nlohmann/json.hpp>

#include <fmt/format.h>
#include <unistd.h>
#include <catch2/catch.hpp>

#include "test_util.hpp"

#include <cstring>
#include <filesystem>
#include <fstream>

using namespace edifice;

using edifice::test::contains;
using edifice::test::error_of;

namespace {

struct TempDir {
  std::filesystem::path path;
  TempDir() {
    static int n = 0;
    path = std::filesystem::temp_directory_path() /
           fmt::format("edifice_checkpoint_test_{}_{}", ::getpid(), n++);
    std::filesystem::create_directories(path);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

nn::Model dropout_model() {
  auto x = nn::input("x", {nn::dynamic, 3});
  auto h = nn::relu(nn::dense(x, 8));
  h = nn::dropout(h, {.rate = 0.3});
  return nn::Model(nn::dense(h, 1));
}

nn::TrainerOptions adam_options() {
  return {.loss = nn::Loss::mse(),
          .metrics = {nn::Metric::from_loss(nn::Loss::mae())},
          .optimizer = nn::adam({.learning_rate = nn::Schedule::warmup_cosine(0.02, 3, 12)})};
}

// 22 samples: batches of 4 leave a partial batch of 2, so two executables (batch 4 and 2).
nn::Dataset data22() {
  Tensor x = nn::initialize(nn::Initializer::uniform(1.0), {22, 3}, DType::f32, 5, 1);
  std::vector<float> y;
  for (int i = 0; i < 22; ++i) {
    const float* r = x.data<float>() + 3 * i;
    y.push_back(r[0] - 2 * r[1] * r[2]);
  }
  return nn::Dataset(x, Tensor::from_vector<float>({22, 1}, y));
}

const nn::FitOptions kFit = {.epochs = 3, .batch_size = 4, .progress = false};

void require_same_state(const nn::TrainState& a, const nn::TrainState& b) {
  REQUIRE(a.params.size() == b.params.size());
  for (const auto& [name, t] : a.params) {
    INFO(name);
    CHECK(t.bitwise_equal(b.params.at(name)));
  }
  REQUIRE(a.optimizer.size() == b.optimizer.size());
  for (const auto& [name, t] : a.optimizer) {
    INFO(name);
    CHECK(t.bitwise_equal(b.optimizer.at(name)));
  }
  CHECK(a.loop.epoch == b.loop.epoch);
  CHECK(a.loop.cursor == b.loop.cursor);
  CHECK(a.loop.dropout_counter == b.loop.dropout_counter);
  CHECK(a.loop.data_seed == b.loop.data_seed);
}

}  // namespace

TEST_CASE("a resumed run is bit-identical to the uninterrupted run", "[nn][checkpoint]") {
  const nn::Dataset data = data22();
  nn::Trainer full(dropout_model(), adam_options());
  full.init(9);
  nn::History full_history = full.fit(data, kFit);
  REQUIRE(full.state().step() == 18);

  // The test means something only if dropout and shuffling change the result.
  {
    nn::Trainer other_dropout(dropout_model(), adam_options());
    other_dropout.init(9);
    other_dropout.state().loop.dropout_seed ^= 1;
    other_dropout.fit(data, kFit);
    CHECK(!other_dropout.state()
               .params.at("dense_1.kernel")
               .bitwise_equal(full.state().params.at("dense_1.kernel")));
    nn::Trainer other_order(dropout_model(), adam_options());
    other_order.init(9);
    other_order.state().loop.data_seed ^= 1;
    other_order.fit(data, kFit);
    CHECK(!other_order.state()
               .params.at("dense_1.kernel")
               .bitwise_equal(full.state().params.at("dense_1.kernel")));
  }

  // Stops: mid-epoch (step 8 = epoch 1, batch 2), after the last batch of epoch 0 but before
  // its end-of-epoch work (step 6), and mid-epoch 2 (step 15).
  for (std::int64_t k : {8, 6, 15}) {
    DYNAMIC_SECTION("stopped after step " << k) {
      TempDir dir;
      const std::string path = dir / "ckpt.safetensors";
      nn::Trainer first(dropout_model(), adam_options());
      first.init(9);
      first.on_step([&](const nn::StepEvent& e) {
        if (e.step != k) return nn::Control::proceed;
        first.save_checkpoint(path, R"({"model": "dropout_mlp"})");
        return nn::Control::stop;
      });
      nn::History h1 = first.fit(data, kFit);
      CHECK(h1.stop_reason == "handler");
      CHECK(first.state().step() == k);

      // A new process, in effect: a freshly built model and trainer.
      nn::Trainer resumed(dropout_model(), adam_options());
      resumed.load_checkpoint(path);
      CHECK(resumed.state().step() == k);
      CHECK(resumed.state().loop.cursor == (k == 6 ? 6 : k % 6));
      nn::History h2 = resumed.fit(data, kFit);
      CHECK(h2.stop_reason == "epochs");
      require_same_state(full.state(), resumed.state());

      // Epoch means continue across the resume exactly (running sums are checkpointed).
      std::vector<double> losses = h1.metrics["loss"];
      losses.insert(losses.end(), h2.metrics["loss"].begin(), h2.metrics["loss"].end());
      CHECK(losses == full_history.metrics.at("loss"));
    }
  }
}

TEST_CASE("a checkpoint saved at an epoch end resumes with the next epoch", "[nn][checkpoint]") {
  TempDir dir;
  const nn::Dataset data = data22();
  nn::Trainer full(dropout_model(), adam_options());
  full.init(3);
  full.fit(data, kFit);

  nn::Trainer first(dropout_model(), adam_options());
  first.init(3);
  first.on_epoch([&](const nn::EpochEvent& e) {
    first.save_checkpoint(dir / "epoch.safetensors");
    return e.epoch == 0 ? nn::Control::stop : nn::Control::proceed;
  });
  first.fit(data, kFit);
  nn::Trainer resumed(dropout_model(), adam_options());
  resumed.load_checkpoint(dir / "epoch.safetensors");
  CHECK(resumed.state().loop.epoch == 1);
  CHECK(resumed.state().loop.cursor == 0);
  nn::History h = resumed.fit(data, kFit);
  CHECK(h.epochs == std::vector<std::int64_t>{1, 2});
  require_same_state(full.state(), resumed.state());
}

TEST_CASE("a checkpoint is one safetensors file with params, optimizer, loop and metadata",
          "[nn][checkpoint]") {
  TempDir dir;
  nn::Trainer t(dropout_model(), adam_options());
  t.init(1);
  t.fit(data22(), {.epochs = 1, .max_steps = 2, .batch_size = 4, .progress = false});
  const std::string path = dir / "c.safetensors";
  t.save_checkpoint(path, R"({"units": 8, "name": "mlp"})");
  nn::SafetensorsFile f = nn::load_safetensors(path);
  for (const char* name :
       {"params/dense_0.kernel", "params/dense_1.bias", "optimizer/adam.m.dense_0.kernel",
        "optimizer/adam.v.dense_1.bias", "optimizer/step", "loop/epoch", "loop/cursor",
        "loop/data_seed", "loop/dropout_seed", "loop/dropout_counter", "loop/running_sums",
        "loop/running_count", "loop/early_stopping_best", "loop/early_stopping_wait",
        "loop/elapsed_s"}) {
    INFO(name);
    CHECK(f.tensors.count(name) == 1);
  }
  CHECK(f.tensors.size() == 4 + 8 + 1 + 10);
  CHECK(*f.tensors.at("optimizer/step").data<std::int64_t>() == 2);
  CHECK(*f.tensors.at("loop/cursor").data<std::int64_t>() == 2);
  CHECK(*f.tensors.at("loop/dropout_counter").data<std::int64_t>() == 2);
  CHECK(f.tensors.at("loop/running_sums").shape() == Shape{2});
  CHECK(f.metadata.at("format") == "edifice.training_checkpoint");
  CHECK(f.metadata.at("format_version") == "1");
  CHECK(f.metadata.at("step") == "2");
  CHECK(nlohmann::json::parse(f.metadata.at("config")) ==
        nlohmann::json::parse(R"({"units": 8, "name": "mlp"})"));
  auto params = nlohmann::json::parse(f.metadata.at("parameters"));
  REQUIRE(params.size() == 4);
  CHECK(params[0]["name"] == "dense_0.bias");
  CHECK(params[1]["shape"] == nlohmann::json::parse("[3,8]"));
  CHECK(params[1]["dtype"] == "f32");
  CHECK(nlohmann::json::parse(f.metadata.at("optimizer"))["optimizer"] == "adam");

  // Round trip of the state, seeds bit for bit.
  nn::TrainState s = nn::load_checkpoint(path);
  CHECK(s.loop.data_seed == t.state().loop.data_seed);
  CHECK(s.loop.dropout_seed == t.state().loop.dropout_seed);
  CHECK(s.loop.running_sums == t.state().loop.running_sums);
  CHECK(std::isnan(s.loop.early_stopping_best));

  // Invalid config JSON is refused before anything is written.
  CHECK(contains(error_of([&] { t.save_checkpoint(path, "{not json"); }),
                 "save_checkpoint: the config is not valid JSON"));
  CHECK(nn::load_checkpoint(path).step() == 2);
}

TEST_CASE("loading mismatched parameters lists every problem and loads nothing",
          "[nn][checkpoint]") {
  TempDir dir;
  const std::string path = dir / "a.safetensors";
  nn::Trainer a(dropout_model(), adam_options());
  a.init(1);
  a.save_checkpoint(path);

  auto x = nn::input("x", {nn::dynamic, 3});
  nn::Model other(nn::dense(nn::dense(x, 6), 1, {.name = "out"}));
  nn::Trainer b(other, adam_options());
  b.init(2);
  const nn::TrainState before = b.state();
  const std::string msg = error_of([&] { b.load_checkpoint(path); });
  CHECK(msg.rfind(path + ": parameters do not match the model (6 problems):", 0) == 0);
  CHECK(contains(msg, "\n  mismatched: dense_0.bias is f32[8], the model expects f32[6]"));
  CHECK(contains(msg, "\n  mismatched: dense_0.kernel is f32[3,8], the model expects f32[3,6]"));
  CHECK(contains(msg, "\n  missing: out.bias f32[1]"));
  CHECK(contains(msg, "\n  missing: out.kernel f32[6,1]"));
  CHECK(contains(msg, "\n  unexpected: dense_1.bias f32[1]"));
  CHECK(contains(msg, "\n  unexpected: dense_1.kernel f32[8,1]"));
  require_same_state(before, b.state());

  // Same model, another optimizer: the optimizer state does not match.
  nn::Trainer sgd(dropout_model(),
                  {.loss = nn::Loss::mse(), .optimizer = nn::sgd({.momentum = 0.9})});
  sgd.init(2);
  const nn::TrainState sgd_before = sgd.state();
  const std::string msg2 = error_of([&] { sgd.load_checkpoint(path); });
  CHECK(msg2.rfind(path + ": optimizer state does not match (12 problems):", 0) == 0);
  CHECK(contains(msg2, "\n  missing: sgd.momentum.dense_0.kernel f32[3,8]"));
  CHECK(contains(msg2, "\n  unexpected: adam.v.dense_1.kernel f32[8,1]"));
  require_same_state(sgd_before, sgd.state());

  // A file that is not a training checkpoint.
  nn::save_params(dir / "p.safetensors", a.state().params);
  CHECK(error_of([&] { nn::load_checkpoint(dir / "p.safetensors"); }) ==
        dir / "p.safetensors" +
            ": not an Edifice training checkpoint (__metadata__ \"format\" is missing, expected "
            "\"edifice.training_checkpoint\")");
}

TEST_CASE("save_params and load_params round-trip and check against a model", "[nn][checkpoint]") {
  TempDir dir;
  nn::Model model = dropout_model();
  nn::Params p = model.init(4);
  const std::string path = dir / "params.safetensors";
  nn::save_params(path, p, {{"note", "hello"}});
  std::map<std::string, std::string> meta;
  nn::Params q = nn::load_params(path, &meta);
  CHECK(meta.at("note") == "hello");
  REQUIRE(q.size() == p.size());
  for (const auto& [name, t] : p) CHECK(t.bitwise_equal(q.at(name)));
  CHECK(nn::load_safetensors(path).tensors.count("dense_0.kernel") == 1);  // no prefix
  CHECK(nn::load_params(path, model).size() == 4);

  // From a training checkpoint: the params/ entries, prefix removed.
  nn::Trainer t(model, adam_options());
  t.init(4);
  t.save_checkpoint(dir / "ckpt.safetensors");
  nn::Params from_ckpt = nn::load_params(dir / "ckpt.safetensors");
  CHECK(from_ckpt.size() == 4);
  CHECK(from_ckpt.at("dense_0.kernel").bitwise_equal(p.at("dense_0.kernel")));

  // Against another model: every problem, no partial result.
  auto x = nn::input("x", {nn::dynamic, 3});
  nn::Model small(nn::dense(x, 1));
  const std::string msg = error_of([&] { nn::load_params(path, small); });
  CHECK(msg.rfind(path + ": parameters do not match the model (4 problems):", 0) == 0);
  CHECK(contains(msg, "\n  mismatched: dense_0.kernel is f32[3,8], the model expects f32[3,1]"));
  CHECK(contains(msg, "\n  unexpected: dense_1.kernel f32[8,1]"));
}

TEST_CASE("a checkpoint with one flipped byte in any tensor is refused, naming the tensor",
          "[nn][checkpoint][checksum]") {
  TempDir dir;
  nn::Trainer t(dropout_model(), adam_options());
  t.init(1);
  t.fit(data22(), {.epochs = 1, .max_steps = 2, .batch_size = 4, .progress = false});
  const std::string path = dir / "c.safetensors";
  t.save_checkpoint(path);
  std::ifstream in(path, std::ios::binary);
  const std::string valid{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  // The whole file, checked: it parses from memory as it loads from disk.
  nn::TrainState state = nn::parse_checkpoint(valid, "c");
  CHECK(state.step() == 2);

  std::uint64_t n = 0;
  std::memcpy(&n, valid.data(), 8);
  auto header = nlohmann::json::parse(valid.substr(8, n));
  int flipped = 0;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") continue;
    std::size_t begin = 8 + n + entry["data_offsets"][0].get<std::size_t>();
    std::size_t end = 8 + n + entry["data_offsets"][1].get<std::size_t>();
    if (begin == end) continue;
    INFO(name);
    std::string bytes = valid;
    bytes[(begin + end) / 2] ^= 0x01;
    const std::string bad = dir / "bad.safetensors";
    {
      std::ofstream out(bad, std::ios::binary | std::ios::trunc);
      out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    }
    const std::string expected = bad + ": tensor \"" + name + "\": checksum mismatch: its " +
                                 std::to_string(end - begin) + " bytes hash to xxh64 ";
    CHECK(error_of([&] { nn::load_checkpoint(bad); }).starts_with(expected));
    nn::Trainer fresh(dropout_model(), adam_options());
    CHECK(error_of([&] { fresh.load_checkpoint(bad); }).starts_with(expected));
    CHECK(error_of([&] {
            nn::parse_checkpoint(bytes, "mem");
          }).starts_with("mem: tensor \"" + name + "\": checksum mismatch"));
    ++flipped;
  }
  CHECK(flipped == 4 + 8 + 1 + 10);  // every tensor of the checkpoint
}

TEST_CASE("parameter files can be stored as F16 or BF16 and load as f32",
          "[nn][checkpoint][half]") {
  TempDir dir;
  nn::Model model = dropout_model();
  nn::Params params = model.init(3);
  const std::string path = dir / "half.safetensors";
  nn::save_safetensors(path, params, {}, {.f32_as = nn::HalfFormat::bf16});
  nn::Params back = nn::load_params(path, model);  // checked against the model: f32, same shapes
  for (const auto& [name, t] : params) {
    INFO(name);
    const Tensor& b = back.at(name);
    REQUIRE(b.dtype() == DType::f32);
    for (std::int64_t i = 0; i < t.numel(); ++i)
      CHECK(b.data<float>()[i] == nn::bf16_bits_to_f32(nn::f32_to_bf16_bits(t.data<float>()[i])));
  }
}
