// A streaming agent: "which token did you see 12 frames ago?", answered at every frame.
//
// Frames are one-hot tokens (vocabulary 16). A small sliding-window model in streaming-band form
// (seq_len 240, window 60: every position attends to itself and the 59 before it, absolute
// positions) is trained on sequences of 240 frames with the answer supervised at every position
// (t >= 12). Then models::multi_head::Stream runs it one frame at a time on fresh streams, and
// the program prints the accuracy of each answer and the per-frame latency (step plus the
// classification head).
//
//   stream_agent [--steps N] [--frames N] [--seed S] [--min-accuracy A] [--long]
//
// --long trains for 4000 steps instead of 1200 (the default run stays under 2 minutes on 2
// cores). The stream runs in episodes of the trained length 240, reset between them: past it
// the absolute positions were never seen in training (a model streamed past its trained length
// answered at chance in our runs). Exits 1 if the streamed accuracy is below A (default 0).
#include <edifice/core/philox.hpp>
#include <edifice/models/stream.hpp>
#include <edifice/nn/losses.hpp>
#include <edifice/nn/optimizers.hpp>
#include <edifice/nn/trainer.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

using namespace edifice;
namespace mh = edifice::models::multi_head;

namespace {

constexpr std::int64_t kSeqLen = 240, kWindow = 60, kVocab = 16, kDelay = 12;

// The streaming model's options: what Stream is built from.
mh::SlidingWindowOptions model_options() {
  return {.embed_dim = kVocab,
          .window_size = kWindow,
          .num_heads = 2,
          .head_dim = 16,
          .num_layers = 2,
          .ffn_dim = 64,
          .dropout = 0.0,
          .seq_len = kSeqLen};
}

// Tokens from a counter-based generator: the data is a pure function of (seed, stream, t).
std::int64_t token(std::uint64_t seed, std::int64_t stream, std::int64_t t) {
  auto c = philox::philox4x32_10(philox::counter_for(static_cast<std::uint64_t>(t), stream),
                                 philox::key_from_seed(seed));
  return c[0] % kVocab;
}

// n sequences of 240 one-hot frames; the target at position t >= 12 is the token at t - 12
// (rows before that are zero: no loss).
nn::Dataset make_data(std::uint64_t seed, std::int64_t n) {
  Tensor x(DType::f32, {n, kSeqLen, kVocab}), y(DType::f32, {n, kSeqLen, kVocab});
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t t = 0; t < kSeqLen; ++t) {
      x.data<float>()[(i * kSeqLen + t) * kVocab + token(seed, i, t)] = 1.0f;
      if (t >= kDelay)
        y.data<float>()[(i * kSeqLen + t) * kVocab + token(seed, i, t - kDelay)] = 1.0f;
    }
  return nn::Dataset(x, y);
}

// build_sliding_window's layers with the same names, but keeping every position (the builder
// returns the last), plus a dense head: the trained parameters, less the head, are the
// streaming model's.
nn::Layer training_model() {
  const mh::SlidingWindowOptions o = model_options();
  const std::int64_t h = o.num_heads * o.head_dim;
  nn::Layer x = nn::input("state_sequence", {nn::dynamic, kSeqLen, kVocab});
  x = nn::dense(x, h, {.name = "input_proj"});
  x = mh::add_positional_encoding(x, {.name = "pos_encoding"});
  for (std::int64_t l = 1; l <= o.num_layers; ++l) {
    const std::string p = "layer_" + std::to_string(l);
    nn::Layer a = mh::sliding_window_attention(x, {.window_size = kWindow,
                                                   .num_heads = o.num_heads,
                                                   .head_dim = o.head_dim,
                                                   .name = p + "_attn"});
    x = nn::layer_norm(nn::add(x, a, {.name = p + "_residual1"}), {.name = p + "_norm1"});
    nn::Layer f = nn::gelu(nn::dense(x, o.ffn_dim, {.name = p + "_ffn1"}));
    f = nn::dense(f, h, {.name = p + "_ffn2"});
    x = nn::layer_norm(nn::add(x, f, {.name = p + "_residual2"}), {.name = p + "_norm2"});
  }
  return nn::dense(x, kVocab, {.name = "head"});
}

double percentile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<std::size_t>(q * static_cast<double>(v.size())))];
}

}  // namespace

int main(int argc, char** argv) {
  std::int64_t steps = 1200, frames = 2400;
  std::uint64_t seed = 1;
  double min_accuracy = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--steps")
      steps = std::stoll(next());
    else if (a == "--frames")
      frames = std::stoll(next());
    else if (a == "--seed")
      seed = std::stoull(next());
    else if (a == "--min-accuracy")
      min_accuracy = std::stod(next());
    else if (a == "--long")
      steps = 3000;
    else {
      std::fprintf(stderr,
                   "usage: %s [--steps N] [--frames N] [--seed S] [--min-accuracy A] [--long]\n",
                   argv[0]);
      return 2;
    }
  }
  if (frames <= kDelay) {
    std::fprintf(stderr, "--frames must be > %lld\n", static_cast<long long>(kDelay));
    return 2;
  }

  // ---- training (every position supervised) ----
  nn::Model model(training_model());
  std::printf(
      "stream agent: answer the token seen %lld frames ago, at every frame (vocabulary "
      "%lld, chance %.2f%%); streaming-band model, seq_len %lld, window %lld, %lld "
      "parameters\n",
      static_cast<long long>(kDelay), static_cast<long long>(kVocab), 100.0 / kVocab,
      static_cast<long long>(kSeqLen), static_cast<long long>(kWindow),
      static_cast<long long>(model.parameter_count()));
  const std::int64_t batch = 16;
  nn::Dataset train = make_data(seed, std::min<std::int64_t>(steps * batch, 4096));
  nn::Trainer trainer(model, {.loss = nn::Loss::categorical_cross_entropy_with_logits(),
                              .optimizer = nn::adam({.learning_rate = nn::Schedule::warmup_cosine(
                                                         3e-3, steps / 20 + 1, steps, 1e-4)}),
                              .clip_global_norm = 1.0});
  trainer.init(seed);
  const std::int64_t per_epoch = (train.size() + batch - 1) / batch;
  trainer.fit(
      train,
      {.epochs = (steps + per_epoch - 1) / per_epoch, .max_steps = steps, .batch_size = batch});

  // ---- streaming, one frame at a time, on a fresh stream ----
  nn::Params params = trainer.state().params;
  const Tensor head_kernel = params.at("head.kernel"), head_bias = params.at("head.bias");
  params.erase("head.kernel");
  params.erase("head.bias");
  mh::Stream stream(model_options(), params);
  const std::int64_t h = head_kernel.dim(0);
  const std::int64_t stream_id = 1 << 20;  // not a training sequence
  Tensor frame(DType::f32, {1, kVocab});
  std::int64_t correct = 0, answered = 0, episodes = 0;
  std::vector<double> latency_us;
  for (std::int64_t g = 0; g < frames; ++g) {
    // Episodes of the trained length: positions past it were never seen in training.
    const std::int64_t t = g % kSeqLen, episode = stream_id + g / kSeqLen;
    if (t == 0 && g > 0) stream.reset(0);
    episodes += t == 0;
    std::fill_n(frame.data<float>(), kVocab, 0.0f);
    frame.data<float>()[token(seed, episode, t)] = 1.0f;
    const auto start = std::chrono::steady_clock::now();
    const Tensor hidden = stream.step(frame);  // [1, h]
    std::int64_t answer = 0;
    float best = -1e30f;
    for (std::int64_t c = 0; c < kVocab; ++c) {
      float z = head_bias.data<float>()[c];
      for (std::int64_t i = 0; i < h; ++i)
        z += hidden.data<float>()[i] * head_kernel.data<float>()[i * kVocab + c];
      if (z > best) best = z, answer = c;
    }
    latency_us.push_back(
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start)
            .count());
    if (t < kDelay) continue;
    correct += answer == token(seed, episode, t - kDelay);
    ++answered;
  }
  const double accuracy = static_cast<double>(correct) / static_cast<double>(answered);
  std::printf(
      "streamed %lld frames one at a time (%lld episodes of up to %lld frames, reset "
      "between them): accuracy %.2f%% over %lld answers (frames 12.. of each episode)\n",
      static_cast<long long>(frames), static_cast<long long>(episodes),
      static_cast<long long>(kSeqLen), 100 * accuracy, static_cast<long long>(answered));
  std::printf(
      "per-frame latency (step + head, batch 1, 1 thread): p50 %.1f us, p99 %.1f us, "
      "max %.1f us\n",
      percentile(latency_us, 0.5), percentile(latency_us, 0.99),
      *std::max_element(latency_us.begin(), latency_us.end()));
  return accuracy >= min_accuracy ? 0 : 1;
}
