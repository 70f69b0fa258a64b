// Data-parallel training without MPI: micro-shard ranges, the fixed summation tree, packed
// gradients, the split gradient/update step against the fused one, and the errors. The
// multi-rank runs are the MPI tests (tests/mpi/run_mpi_test.sh).
#include <edifice/nn/distributed.hpp>
#include <edifice/nn/layers.hpp>
#include <edifice/nn/trainer.hpp>

#include <catch2/catch.hpp>

#include "test_util.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>

using namespace edifice;
using edifice::test::contains;
using edifice::test::error_of;
using edifice::test::max_abs_diff;

namespace {

nn::Model regressor() {
  auto x = nn::input("x", {nn::dynamic, 3});
  return nn::Model(nn::dense(nn::tanh(nn::dense(x, 8)), 1));
}

nn::Dataset data(std::int64_t n) {
  return nn::Dataset(test::random_tensor(DType::f32, {n, 3}, 1),
                     test::random_tensor(DType::f32, {n, 1}, 2));
}

nn::Params train(std::shared_ptr<nn::Communicator> comm, std::int64_t micro_shards,
                 double clip = 0) {
  nn::Trainer t(regressor(), {.loss = nn::Loss::mse(),
                              .optimizer = nn::adam({.learning_rate = 1e-2}),
                              .clip_global_norm = clip,
                              .distributed = std::move(comm),
                              .distribution = {.micro_shards = micro_shards, .bucket_bytes = 40}});
  t.init(5);
  t.fit(data(10), {.epochs = 3, .batch_size = 4, .progress = false});
  return t.state().params;
}

}  // namespace

TEST_CASE("micro-shards partition every batch, whatever its size", "[nn][distributed]") {
  for (std::int64_t n : {1, 3, 4, 10, 16}) {
    std::int64_t next = 0;
    for (std::int64_t m = 0; m < 4; ++m) {
      nn::SampleRange r = nn::micro_shard_samples(n, 4, m);
      CHECK(r.first == next);
      CHECK(r.last - r.first <= (n + 3) / 4);
      next = r.last;
    }
    CHECK(next == n);
  }
  CHECK(nn::micro_shard_samples(2, 4, 0).last == 0);  // fewer samples than micro-shards
  CHECK(nn::micro_shard_key(7, 3, 0) != nn::micro_shard_key(7, 3, 1));
  CHECK(nn::micro_shard_key(7, 3, 1) != nn::micro_shard_key(7, 4, 1));
}

TEST_CASE("the tree sum has a fixed shape that rank subtrees and buckets reproduce",
          "[nn][distributed]") {
  // Values where f32 addition order shows: the tree over 5 leaves is
  // (l0 + l1) + (l2 + (l3 + l4)).
  const std::vector<float> leaves = {1e8f, 1.0f, -1e8f, 1.0f, 1.0f};
  nn::GradientLayout layout({"g"}, {Tensor(DType::f32, {1})});
  std::vector<const std::byte*> ptrs;
  for (const float& v : leaves) ptrs.push_back(reinterpret_cast<const std::byte*>(&v));
  float out = 0;
  nn::tree_sum(layout, ptrs, 0, 4, reinterpret_cast<std::byte*>(&out));
  const float want = (1e8f + 1.0f) + (-1e8f + (1.0f + 1.0f));
  CHECK(std::memcmp(&out, &want, 4) == 0);
  CHECK(out != ((((1e8f + 1.0f) + -1e8f) + 1.0f) + 1.0f));

  // 8 leaves of mixed f32/f64 gradients: two subtrees of 4 (what 2 ranks send), summed as 2
  // leaves, and bucket by bucket, equal the whole tree byte for byte.
  std::vector<Tensor> like = {Tensor(DType::f32, {3}), Tensor(DType::f64, {2, 2})};
  nn::GradientLayout mixed({"a", "b"}, like);
  CHECK(mixed.bytes() == 16 + 32);  // 12 bytes padded to 16
  std::vector<std::vector<std::byte>> bufs(8, std::vector<std::byte>(mixed.bytes()));
  for (std::uint32_t m = 0; m < 8; ++m)
    mixed.pack(
        {test::random_tensor(DType::f32, {3}, m), test::random_tensor(DType::f64, {2, 2}, m)},
        0.125, bufs[m]);
  auto sum_of = [&](std::size_t lo, std::size_t hi, std::size_t offset, std::size_t length) {
    std::vector<const std::byte*> p;
    for (std::size_t i = lo; i < hi; ++i) p.push_back(bufs[i].data() + offset);
    std::vector<std::byte> s(length);
    nn::tree_sum(mixed, p, offset, length, s.data());
    return s;
  };
  const std::vector<std::byte> whole = sum_of(0, 8, 0, mixed.bytes());
  const std::vector<std::byte> left = sum_of(0, 4, 0, mixed.bytes());
  const std::vector<std::byte> right = sum_of(4, 8, 0, mixed.bytes());
  for (std::size_t offset = 0; offset < mixed.bytes(); offset += 8) {
    std::vector<std::byte> s(8);
    nn::tree_sum(mixed, {left.data() + offset, right.data() + offset}, offset, 8, s.data());
    CHECK(std::memcmp(s.data(), whole.data() + offset, 8) == 0);
  }
  std::vector<Tensor> back = mixed.unpack(whole);
  REQUIRE(back.size() == 2);
  CHECK(back[1].dtype() == DType::f64);
  CHECK(back[1].shape() == Shape{2, 2});
}

TEST_CASE("packed gradients are weighted and only float", "[nn][distributed]") {
  nn::GradientLayout layout({"w"}, {Tensor(DType::f32, {2})});
  std::vector<std::byte> buf(layout.bytes());
  layout.pack({Tensor::from_vector<float>({2}, {2.0f, -4.0f})}, 0.25, buf);
  const Tensor t = layout.unpack(buf)[0];
  CHECK(t.data<float>()[0] == 0.5f);
  CHECK(t.data<float>()[1] == -1.0f);
  CHECK(error_of([] { nn::GradientLayout({"steps"}, {Tensor(DType::i32, {1})}); }) ==
        "distributed training: the gradient of \"steps\" is i32; only f32 and f64 gradients can "
        "be summed");
}

TEST_CASE("the split gradient and update step matches the fused step", "[nn][distributed]") {
  // One micro-shard: the same sums as the fused graph up to rounding.
  const nn::Params fused = train(nullptr, 1);
  const nn::Params one = train(nn::single_process(), 1);
  // Four micro-shards (batches of 4, 4, 2: shards of 1 sample and empty ones), weighted n_m/N.
  const nn::Params four = train(nn::single_process(), 4);
  for (const auto& [name, t] : fused) {
    CHECK(max_abs_diff(t, one.at(name)) < 1e-5);
    CHECK(max_abs_diff(t, four.at(name)) < 1e-5);
  }
  // Clipping moves into the update graph.
  const nn::Params clipped_fused = [&] {
    nn::Trainer t(regressor(), {.loss = nn::Loss::mse(),
                                .optimizer = nn::adam({.learning_rate = 1e-2}),
                                .clip_global_norm = 0.05});
    t.init(5);
    t.fit(data(10), {.epochs = 3, .batch_size = 4, .progress = false});
    return t.state().params;
  }();
  const nn::Params clipped = train(nn::single_process(), 4, 0.05);
  for (const auto& [name, t] : clipped_fused) CHECK(max_abs_diff(t, clipped.at(name)) < 1e-5);
  // The same run twice is the same bits.
  const nn::Params again = train(nn::single_process(), 4);
  for (const auto& [name, t] : four)
    CHECK(std::memcmp(t.raw_data(), again.at(name).raw_data(), t.nbytes()) == 0);
}

TEST_CASE("distributed training errors say what is wrong", "[nn][distributed]") {
  CHECK(contains(error_of([] { train(nn::single_process(), 0); }),
                 "fit (distributed): micro_shards must be >= 1, got 0"));
  nn::TrainerOptions options{.loss = nn::Loss::mse(), .optimizer = nn::sgd()};
  options.distributed = nn::single_process();
  nn::TrainerOptions with_anomaly = options;
  with_anomaly.anomaly_mode = true;
  nn::Trainer anomaly(regressor(), with_anomaly);
  anomaly.init(0);
  CHECK(error_of([&] { anomaly.fit(data(4), {.progress = false}); }) ==
        "fit (distributed): anomaly mode is not supported in data-parallel training");
  auto x = nn::input("x", {4, 3});
  nn::Trainer fixed(nn::Model(nn::dense(x, 1)), options);
  fixed.init(0);
  CHECK(error_of([&] { fixed.fit(data(4), {.batch_size = 4, .progress = false}); }) ==
        "fit (distributed): the model's input \"x\" is f32[4,3]; data-parallel training splits "
        "every batch into micro-shards, so it needs a dynamic batch axis");
  if (!nn::mpi_available())
    CHECK(contains(error_of([] { nn::mpi(); }), "this build of Edifice has no MPI support"));
}

TEST_CASE("a checkpoint resumes only with the micro-shards it was trained with",
          "[nn][distributed]") {
  auto options = [](std::int64_t micro_shards) {
    nn::TrainerOptions o{.loss = nn::Loss::mse(), .optimizer = nn::adam()};
    o.distributed = nn::single_process();
    o.distribution.micro_shards = micro_shards;
    return o;
  };
  const std::string path = fmt::format("{}/edifice_distributed_test_{}.safetensors",
                                       std::filesystem::temp_directory_path().string(), ::getpid());
  nn::Trainer four(regressor(), options(4));
  four.init(1);
  four.fit(data(10), {.max_steps = 2, .batch_size = 4, .progress = false});
  four.save_checkpoint(path);
  nn::Trainer two(regressor(), options(2));
  CHECK(error_of([&] { two.load_checkpoint(path); }) ==
        path +
            ": the checkpoint was trained with 4 micro-shards per batch, this trainer uses 2; "
            "resume with the same micro_shards (any world size dividing it) to continue the same "
            "run");
  nn::Trainer again(regressor(), options(4));
  again.load_checkpoint(path);
  CHECK(again.state().step() == 2);
  std::filesystem::remove(path);
}
