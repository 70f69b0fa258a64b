#pragma once
/// \file
/// The training loop, in the spirit of Axon.Loop and Keras' fit:
///
///   nn::Trainer trainer(model, {.loss = nn::Loss::binary_cross_entropy(),
///                               .metrics = {nn::Metric::accuracy()},
///                               .optimizer = nn::adam({.learning_rate = 1e-2})});
///   trainer.init(42);                                  // params, optimizer state, seeds
///   nn::History h = trainer.fit(nn::Dataset(x, y), {.epochs = 100, .batch_size = 4});
///
/// Each step runs ONE compiled graph (train_step.hpp); with TrainerOptions::distributed, a
/// gradient graph per micro-shard and an update graph, over several processes
/// (distributed.hpp). The loop keeps running means of the loss
/// and metrics over the epoch (weighted by batch size), evaluates validation data at the end of
/// each epoch in inference mode, calls event handlers, applies early stopping, draws a progress
/// bar and writes a CSV log (progress.hpp). Checkpoints (checkpoint.hpp) hold the whole
/// TrainState, and a run resumed from one repeats the uninterrupted run bit for bit: the sample
/// order of epoch e depends only on (data_seed, e), the dropout key of each step only on
/// (dropout_seed, counter), and the data cursor says where in the epoch to continue.
///
/// Counting: `epoch` is 0-based in states, events, History and the CSV (as Keras' CSVLogger),
/// and shown 1-based in the progress bar ("Epoch 1/10"). `step` is the global number of
/// updates applied (the optimizer's "step"), so the first step event has step 1.

#include <edifice/nn/checkpoint.hpp>
#include <edifice/nn/distributed.hpp>
#include <edifice/nn/progress.hpp>
#include <edifice/nn/train_step.hpp>

#include <cstdint>
#include <functional>
#include <iosfwd>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace edifice::nn {

/// In-memory training data: one tensor per model input and one targets tensor, all with the
/// same leading (sample) extent. Tensors are shared, not copied.
class Dataset {
 public:
  Dataset(std::vector<Tensor> inputs, Tensor targets);
  Dataset(Tensor input, Tensor targets)
      : Dataset(std::vector<Tensor>{std::move(input)}, std::move(targets)) {}

  std::int64_t size() const { return size_; }
  const std::vector<Tensor>& inputs() const { return inputs_; }
  const Tensor& targets() const { return targets_; }

  /// A batch: copies of the rows `indices` (each in [0, size)) of every tensor, in that order.
  struct Batch {
    std::vector<Tensor> inputs;
    Tensor targets;
  };
  Batch gather(std::span<const std::int64_t> indices) const;

 private:
  std::vector<Tensor> inputs_;
  Tensor targets_;
  std::int64_t size_ = 0;
};

/// Batches per epoch: ceil(n / batch_size), or floor with `drop_last` (the last partial batch
/// is then skipped).
std::int64_t batches_per_epoch(std::int64_t n, std::int64_t batch_size, bool drop_last);

/// The sample order of epoch `epoch`: 0..n-1 without shuffling, else a permutation that depends
/// only on (seed, epoch, n): Fisher-Yates from i = n-1 down to 1 swapping i with
/// j = floor(u * (i + 1) / 2^64), u the 64-bit word (w0 << 32 | w1) of Philox-4x32-10 with key
/// `seed` and counter (i, epoch) (philox.hpp's counter_for(i, epoch)).
std::vector<std::int64_t> epoch_order(std::int64_t n, bool shuffle, std::uint64_t seed,
                                      std::int64_t epoch);

/// The i64 dropout key of a step: splitmix64(dropout_seed ^ splitmix64(counter)), bit for bit.
std::int64_t dropout_key(std::uint64_t dropout_seed, std::uint64_t counter);

/// What handlers return. `stop` ends fit() after the current event's handlers have all run.
enum class Control { proceed, stop };

/// After every training step (the state already includes it).
struct StepEvent {
  std::int64_t epoch = 0;  ///< 0-based
  std::int64_t batch = 0;  ///< 0-based index of this batch within the epoch
  std::int64_t batches_per_epoch = 0;
  std::int64_t step = 0;        ///< global step after this one (1 for the first)
  std::int64_t batch_size = 0;  ///< samples in this batch
  double loss = 0;              ///< this batch's loss
  NamedValues metrics;          ///< this batch's metrics
  NamedValues running;          ///< epoch running means so far: "loss", then metrics
  double learning_rate = 0;     ///< the rate this step used
  /// Global gradient norm before clipping; NaN unless clipping or anomaly mode is on.
  double grad_norm = 0;
  double elapsed_s = 0;  ///< training time so far (across resumes)
};

/// After every completed epoch (validation done, early stopping updated, the state already at
/// the next epoch's start, so a checkpoint saved here resumes with the next epoch).
struct EpochEvent {
  std::int64_t epoch = 0;  ///< the epoch just completed, 0-based
  std::int64_t step = 0;
  /// "loss", metrics, then "val_loss" and "val_{metric}" with validation data.
  NamedValues metrics;
  double elapsed_s = 0;
};

/// fit()'s record.
struct History {
  /// Completed epochs (0-based), one per entry of each metrics vector.
  std::vector<std::int64_t> epochs;
  /// Per completed epoch: "loss", metrics, "val_loss", "val_{metric}".
  std::map<std::string, std::vector<double>> metrics;
  /// Global step at the end.
  std::int64_t steps = 0;
  /// "epochs" (all epochs done), "max_steps", "early_stopping" or "handler".
  std::string stop_reason;
};

using StepHandler = std::function<Control(const StepEvent&)>;
using EpochHandler = std::function<Control(const EpochEvent&)>;
using CompletionHandler = std::function<void(const History&)>;

/// Stop when `monitor` stops improving (checked at each epoch end).
struct EarlyStopping {
  enum class Mode { min, max, automatic };
  /// An epoch metric name: "val_loss", "loss", "val_accuracy", ...
  std::string monitor = "val_loss";
  /// automatic: max for names containing "acc", else min (as Keras).
  Mode mode = Mode::automatic;
  /// Stop after this many consecutive epochs without improvement (0 behaves as 1).
  std::int64_t patience = 3;
  /// An improvement must beat the best by more than this (>= 0).
  double min_delta = 0.0;
};

struct TrainerOptions {
  Loss loss;
  std::vector<Metric> metrics;
  std::shared_ptr<const Optimizer> optimizer;
  /// Global-norm gradient clipping; 0 = off.
  double clip_global_norm = 0.0;
  /// NaN/Inf detection naming the op and the user's line (train_step.hpp). Slow only when it
  /// fires.
  bool anomaly_mode = false;
  jit::Options jit = {};
  /// Data-parallel training (distributed.hpp): nn::mpi() in a program started with
  /// `mpirun -np N`, or nn::single_process(); null (the default) trains with the single fused
  /// step graph. With a communicator, every rank runs the same program: fit() broadcasts rank
  /// 0's parameters and optimizer state, checks that all ranks agree on the model, options,
  /// data and loop state, and gives bit-identical results for every world size dividing
  /// distribution.micro_shards (but not the same bits as the fused step). The progress bar and
  /// the CSV log are written by rank 0 only; handlers run on every rank with the same events;
  /// save_checkpoint writes from rank 0 only. Validation and evaluate() run whole on every
  /// rank (same parameters, same values). Anomaly mode is not supported with it.
  std::shared_ptr<Communicator> distributed;
  DistributedOptions distribution = {};
};

struct FitOptions {
  /// Train until this many epochs are complete, counting epochs of earlier fit() calls and of a
  /// resumed checkpoint (so the same options finish the same run); 0 = no epoch limit.
  std::int64_t epochs = 1;
  /// Stop when the global step reaches this (absolute, like `epochs`); 0 = no limit.
  std::int64_t max_steps = 0;
  std::int64_t batch_size = 32;
  /// Reshuffle every epoch (from the state's data_seed); false keeps the dataset order.
  bool shuffle = true;
  /// Skip the last partial batch of each epoch.
  bool drop_last = false;
  /// Evaluated in inference mode at each epoch end; metrics get a "val_" prefix.
  std::optional<Dataset> validation;
  /// 0 means batch_size.
  std::int64_t validation_batch_size = 0;
  std::optional<EarlyStopping> early_stopping;

  /// Progress bar: on `progress_out` (nullptr = std::cout), in place when it is a terminal
  /// (auto-detected unless `progress_tty` says), plain lines otherwise.
  bool progress = true;
  std::ostream* progress_out = nullptr;
  std::optional<bool> progress_tty;
  ProgressOptions progress_options = {};

  /// CSV log: "" = none. Per-step rows hold each batch's own loss and metrics; per-epoch rows
  /// the epoch means and validation values. Columns: epoch, step, loss, metrics...,
  /// [val_loss, val_metrics... (per epoch, with validation)], lr, elapsed_s. A resumed run
  /// (state not at its very start) appends to an existing file with the same header.
  std::string csv_path;
  enum class CsvEvery { step, epoch };
  CsvEvery csv_every = CsvEvery::epoch;
  /// Flush the CSV every this many rows (and at each epoch end and at the end).
  std::int64_t csv_flush_every = 50;
};

class Trainer {
 public:
  Trainer(Model model, TrainerOptions options);

  /// A fresh run: parameters from model.init(seed), a zero optimizer state, the loop at its
  /// start, data_seed = splitmix64(seed ^ 1) and dropout_seed = splitmix64(seed ^ 2).
  void init(std::uint64_t seed);
  /// A fresh run from given parameters (checked against the model).
  void init(Params params, std::uint64_t seed);

  /// Trains on `data` until an epoch or step limit, a handler or early stopping stops it.
  /// Needs init() or load_checkpoint() first. Errors (including anomalies) propagate as
  /// edifice::Error after the progress line is closed and the CSV flushed; the state then
  /// holds the last completed step.
  History fit(const Dataset& data, const FitOptions& options = {});

  /// Mean loss and metrics over `data` in inference mode (batch-size weighted): "loss", metrics.
  NamedValues evaluate(const Dataset& data, std::int64_t batch_size = 32);

  /// Handlers run in the order attached; `every` filters step events to steps divisible by it.
  void on_step(StepHandler handler, std::int64_t every = 1);
  void on_epoch(EpochHandler handler);
  void on_completion(CompletionHandler handler);

  /// Saves the whole state (checkpoint.hpp) with `config_json` as the caller's configuration.
  /// Distributed: a collective call; rank 0 writes and every rank throws if the write failed.
  void save_checkpoint(const std::string& path, const std::string& config_json = "{}") const;
  /// Loads a checkpoint after checking its parameters against the model and its optimizer
  /// state against the optimizer; on any mismatch throws, listing every missing, unexpected
  /// and mismatched entry, and leaves the current state untouched.
  void load_checkpoint(const std::string& path);

  TrainState& state() { return state_; }
  const TrainState& state() const { return state_; }
  const Model& model() const { return step_.model(); }
  TrainStep& train_step() { return step_; }
  /// "loss" then the metric names: the order of running sums and values.
  std::vector<std::string> value_names() const;

 private:
  void check_data(const Dataset& data, std::int64_t batch_size, bool drop_last,
                  const char* what) const;
  NamedValues evaluate_checked(const Dataset& data, std::int64_t batch_size);

  // fit(), step by step (trainer.cpp).
  struct FitRun;
  void check_fit_options(FitRun& run) const;
  void start_fit(FitRun& run);
  void fit_loop(FitRun& run);
  bool train_batch(FitRun& run, std::int64_t batch);
  bool end_epoch(FitRun& run);
  bool early_stop(const FitRun& run, const NamedValues& values, std::string& message);
  bool leader() const { return !comm_ || comm_->rank() == 0; }

  // Data-parallel training (distributed_step.cpp).
  void start_distributed(const Dataset& data, const FitOptions& options);
  void check_ranks_agree(const Dataset& data, const FitOptions& options);
  void broadcast_state();
  StepResult distributed_step(const Dataset& data, std::span<const std::int64_t> batch,
                              double learning_rate);
  std::vector<std::byte> exchange_gradients(std::span<const std::byte> local, std::size_t leaves);

  TrainStep step_;
  std::shared_ptr<Communicator> comm_;
  DistributedOptions distribution_;
  std::optional<GradientLayout> layout_;  // packed gradients, set by start_distributed
  TrainState state_;
  bool initialised_ = false;
  std::vector<std::pair<StepHandler, std::int64_t>> step_handlers_;
  std::vector<EpochHandler> epoch_handlers_;
  std::vector<CompletionHandler> completion_handlers_;
};

}  // namespace edifice::nn
