// Delayed recall: "what happened exactly 12 steps ago?"
//
// Sequences of 60 random tokens (vocabulary 16, one-hot frames); the target is the token 12
// steps before the last. The default sliding-window configuration (recommended_defaults) plus
// a dense classification head learns it; chance is 1/16 = 6.25%.
//
// The run trains with a progress bar, prints the held-out accuracy, saves a checkpoint, reloads
// it in a fresh process (this program with --evaluate) and checks the accuracy is the same, and
// writes the last position's attention weights as a labelled PNG heatmap (peak at t-12) and the
// training curves (loss, accuracy, learning rate per step) next to the metrics CSV.
//
//   delayed_recall [--steps N] [--out DIR] [--seed S] [--min-accuracy A]
//                  [--mpi [--micro-shards M]]
//
// --mpi trains data-parallel over the ranks of `mpirun -np W delayed_recall --mpi` (W must
// divide M, default 4): the same global batches of 32, each split into M micro-shards, with
// bit-identical results for every W (nn/distributed.hpp). Rank 0 prints, logs and saves.
//
// Exits 1 if the held-out accuracy is below A (default 0.99) or the reloaded checkpoint gives a
// different accuracy.
//   delayed_recall --evaluate CHECKPOINT      (used by the run itself)
#include <edifice/core/philox.hpp>
#include <edifice/edifice.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

using namespace edifice;
namespace mh = edifice::models::multi_head;

namespace {

constexpr std::int64_t kSeqLen = 60, kVocab = 16, kDelay = 12;

// Tokens from a counter-based generator: the data set is a pure function of (seed, index).
std::int64_t token(std::uint64_t seed, std::int64_t sample, std::int64_t t) {
  auto c = philox::philox4x32_10(philox::counter_for(std::uint64_t(sample * kSeqLen + t), 7),
                                 philox::key_from_seed(seed));
  return c[0] % kVocab;
}

nn::Dataset make_data(std::uint64_t seed, std::int64_t n) {
  Tensor x(DType::f32, {n, kSeqLen, kVocab});
  Tensor y(DType::f32, {n, kVocab});
  for (std::int64_t i = 0; i < n; ++i) {
    for (std::int64_t t = 0; t < kSeqLen; ++t)
      x.data<float>()[(i * kSeqLen + t) * kVocab + token(seed, i, t)] = 1.0f;
    y.data<float>()[i * kVocab + token(seed, i, kSeqLen - 1 - kDelay)] = 1.0f;
  }
  return nn::Dataset(x, y);
}

struct Net {
  mh::Built built;
  nn::Layer logits;
};

// recommended_defaults() with embed_dim = the vocabulary, plus a dense head.
Net make_net() {
  mh::RecommendedDefaults d = mh::recommended_defaults();
  Net net;
  net.built = mh::build_sliding_window({.embed_dim = kVocab,
                                        .window_size = d.window_size,
                                        .num_heads = d.num_heads,
                                        .head_dim = d.head_dim,
                                        .num_layers = d.num_layers,
                                        .dropout = d.dropout,
                                        .seq_len = kSeqLen});
  net.logits = nn::dense(net.built.output, kVocab, {.name = "head"});
  return net;
}

nn::TrainerOptions trainer_options(std::int64_t total_steps,
                                   std::shared_ptr<nn::Communicator> comm = nullptr,
                                   std::int64_t micro_shards = 4) {
  return {.loss = nn::Loss::categorical_cross_entropy_with_logits(),
          .metrics = {nn::Metric::categorical_accuracy()},
          .optimizer = nn::adam({.learning_rate = nn::Schedule::warmup_cosine(
                                     1e-3, total_steps / 20, total_steps, 1e-5)}),
          .clip_global_norm = 1.0,
          .jit = {},
          .distributed = std::move(comm),
          .distribution = {.micro_shards = micro_shards}};
}

// What one rank sends per step in the gradient exchange (distributed.hpp): the packed
// gradients (or its micro-shards' when the world size is not a power of two) plus the
// micro-shards' loss and metric.
std::size_t bytes_sent_per_step(const nn::Params& params, std::int64_t micro_shards, int world) {
  std::vector<std::string> names;
  std::vector<Tensor> like;
  for (const auto& [name, t] : params) {
    names.push_back(name);
    like.push_back(t);
  }
  const std::size_t packed = nn::GradientLayout(names, like).bytes();
  const auto per_rank = static_cast<std::size_t>(micro_shards / world);
  const std::size_t leaves = (world & (world - 1)) == 0 ? 1 : per_rank;
  return leaves * packed + per_rank * 3 * sizeof(double);
}

double evaluate(nn::Trainer& trainer, const nn::Dataset& held_out) {
  for (const auto& [name, value] : trainer.evaluate(held_out, 250))
    if (name == "categorical_accuracy") return value;
  return -1;
}

// Head-averaged weights of the last layer at the last query position, one row per sample: the
// bright column should be t - 12.
void write_heatmap(const Net& net, const nn::Params& params, const nn::Dataset& data,
                   const std::string& path, std::int64_t samples) {
  nn::Model model(std::vector<nn::Layer>{net.logits, net.built.attention_weights.back()});
  Tensor x(DType::f32, {samples, kSeqLen, kVocab});
  std::copy_n(data.inputs()[0].data<float>(), x.numel(), x.data<float>());
  Tensor w = model.predict_all(params, {x})[1];  // [B, heads, S, S]
  const std::int64_t heads = w.shape()[1];
  std::vector<double> weights(std::size_t(samples * kSeqLen), 0.0);
  std::int64_t peaks_at_delay = 0;
  for (std::int64_t b = 0; b < samples; ++b) {
    double* row = weights.data() + b * kSeqLen;
    for (std::int64_t h = 0; h < heads; ++h)
      for (std::int64_t j = 0; j < kSeqLen; ++j)
        row[j] += w.at<float>({b, h, kSeqLen - 1, j}) / double(heads);
    peaks_at_delay += std::max_element(row, row + kSeqLen) - row == kSeqLen - 1 - kDelay;
  }
  nn::HeatmapOptions options{.title = "Where the last position looks (last layer, mean of " +
                                      std::to_string(heads) + " heads)",
                             .x_label = "key position, as offset from the query t",
                             .y_label = "held-out sample",
                             .colour_bar_label = "attention weight",
                             .vmin = 0.0};
  for (std::int64_t k = 0; k < kSeqLen; k += 6)  // column j holds offset t-(S-1-j)
    options.x_ticks.push_back({double(kSeqLen - 1 - k), k == 0 ? "t" : "t-" + std::to_string(k)});
  for (std::int64_t b = 0; b < samples; b += 4)
    options.y_ticks.push_back({double(b), std::to_string(b)});
  nn::write_png(path, nn::draw_heatmap(weights, static_cast<int>(samples),
                                       static_cast<int>(kSeqLen), options));
  std::printf("attention heatmap: %s (%lld of %lld samples peak at t-%lld)\n", path.c_str(),
              static_cast<long long>(peaks_at_delay), static_cast<long long>(samples),
              static_cast<long long>(kDelay));
}

int evaluate_checkpoint(const std::string& path) {
  Net net = make_net();
  nn::Trainer trainer(nn::Model(net.logits), trainer_options(1000));
  trainer.load_checkpoint(path);
  double acc = evaluate(trainer, make_data(2, 2000));
  std::printf("%.17g\n", acc);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::int64_t steps = 1000;
  std::string out = "delayed_recall_out";
  std::uint64_t seed = 1;
  double min_accuracy = 0.99;
  bool use_mpi = false;
  std::int64_t micro_shards = 4;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--evaluate") return evaluate_checkpoint(next());
    if (a == "--steps")
      steps = std::stoll(next());
    else if (a == "--out")
      out = next();
    else if (a == "--seed")
      seed = std::stoull(next());
    else if (a == "--min-accuracy")
      min_accuracy = std::stod(next());
    else if (a == "--mpi")
      use_mpi = true;
    else if (a == "--micro-shards")
      micro_shards = std::stoll(next());
    else {
      std::fprintf(stderr,
                   "usage: %s [--steps N] [--out DIR] [--seed S] [--min-accuracy A] [--mpi "
                   "[--micro-shards M]] | --evaluate CHECKPOINT\n",
                   argv[0]);
      return 2;
    }
  }
  std::shared_ptr<nn::Communicator> comm;
  try {
    if (use_mpi) comm = nn::mpi();
  } catch (const Error& e) {
    std::fprintf(stderr, "delayed_recall --mpi: %s\n", e.what());
    return 2;
  }
  const bool leader = !comm || comm->rank() == 0;
  if (leader) std::filesystem::create_directories(out);
  const std::int64_t batch = 32;
  nn::Dataset train = make_data(1, steps * batch < 20000 ? steps * batch : 20000);
  nn::Dataset held_out = make_data(2, 2000);

  Net net = make_net();
  nn::Model model(net.logits);
  if (leader)
    std::printf(
        "delayed recall: sequences of %lld one-hot tokens (vocabulary %lld), target = the "
        "token %lld steps before the last; chance %.2f%%\n%s",
        static_cast<long long>(kSeqLen), static_cast<long long>(kVocab),
        static_cast<long long>(kDelay), 100.0 / kVocab, model.summary().c_str());
  nn::Trainer trainer(model, trainer_options(steps, comm, micro_shards));
  trainer.init(seed);
  const std::int64_t per_epoch = (train.size() + batch - 1) / batch;
  const auto t0 = std::chrono::steady_clock::now();
  nn::History history = trainer.fit(train, {.epochs = (steps + per_epoch - 1) / per_epoch,
                                            .max_steps = steps,
                                            .batch_size = batch,
                                            .csv_path = out + "/metrics.csv",
                                            .csv_every = nn::FitOptions::CsvEvery::step});
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  double acc = evaluate(trainer, held_out);
  const std::string checkpoint = out + "/delayed_recall.safetensors";
  // Collective when distributed: rank 0 writes.
  trainer.save_checkpoint(checkpoint,
                          R"({"task":"delayed_recall","embed_dim":16,"window_size":60})");
  if (!leader) return acc >= min_accuracy ? 0 : 1;
  if (comm)
    std::printf(
        "%s, %d rank(s), %lld micro-shards: %lld steps in %.2f s (%.1f samples/s); gradient "
        "exchange: %zu bytes sent per rank per step\n",
        comm->name().c_str(), comm->size(), static_cast<long long>(micro_shards),
        static_cast<long long>(history.steps), seconds,
        static_cast<double>(history.steps * batch) / seconds,
        bytes_sent_per_step(trainer.state().params, micro_shards, comm->size()));
  else
    std::printf("%lld steps in %.2f s (%.1f samples/s)\n", static_cast<long long>(history.steps),
                seconds, static_cast<double>(history.steps * batch) / seconds);
  nn::plot_training_csv(out + "/metrics.csv", out + "/training_curves.png",
                        "Delayed recall: training curves");
  std::printf("training curves: %s/training_curves.png (from %s/metrics.csv)\n", out.c_str(),
              out.c_str());
  std::printf("held-out accuracy after %lld steps: %.2f%% (chance %.2f%%)\n",
              static_cast<long long>(history.steps), 100 * acc, 100.0 / kVocab);
  std::printf("checkpoint: %s\n", checkpoint.c_str());
  std::string cmd = std::string(argv[0]) + " --evaluate " + checkpoint;
  double reloaded = -1;
  if (FILE* p = ::popen(cmd.c_str(), "r")) {
    if (std::fscanf(p, "%lf", &reloaded) != 1) reloaded = -1;
    ::pclose(p);
  }
  std::printf("reloaded in a fresh process: held-out accuracy %.2f%% (%s)\n", 100 * reloaded,
              reloaded == acc ? "identical" : "DIFFERENT");
  write_heatmap(net, trainer.state().params, held_out, out + "/attention_last_position.png", 24);
  return acc >= min_accuracy && reloaded == acc ? 0 : 1;
}
