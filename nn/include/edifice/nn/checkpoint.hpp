#pragma once
/// \file
/// Training checkpoints and plain parameter files, both safetensors files written atomically
/// (write_file_atomically: a crash mid-save leaves the previous file intact).
///
/// A training checkpoint is ONE file holding everything a resumed run needs to repeat the
/// uninterrupted run bit for bit:
///
///   tensor                     dtype/shape   contents
///   "params/{name}"            as the param  every parameter
///   "optimizer/{name}"         as the state  every optimizer state entry, incl. "optimizer/step"
///                                            (i64 scalar: updates applied = the global step)
///   "loop/epoch"               i64 []        current epoch, 0-based (= epochs completed)
///   "loop/cursor"              i64 []        batches of the current epoch already trained on
///                                            (global batches: with data-parallel training the
///                                            same on every rank, so a checkpoint written with
///                                            N ranks resumes with M; distributed.hpp)
///   "loop/data_seed"           i64 []        shuffling key (a u64 stored bit for bit)
///   "loop/dropout_seed"        i64 []        dropout key seed (u64 bit for bit)
///   "loop/dropout_counter"     i64 []        dropout keys drawn so far (u64 bit for bit)
///   "loop/running_sums"        f64 [1+M]     the epoch's batch-size-weighted sums of the loss
///                                            and M metrics so far
///   "loop/running_count"       f64 []        samples summed so far in the epoch
///   "loop/early_stopping_best" f64 []        best monitored value (NaN: none yet)
///   "loop/early_stopping_wait" i64 []        epochs without improvement
///   "loop/elapsed_s"           f64 []        training time so far, seconds (for logs only)
///
/// and `__metadata__` (string map):
///   "format"          "edifice.training_checkpoint"
///   "format_version"  "1"
///   "config"          the caller's JSON text (e.g. the model configuration), validated
///   "parameters"      JSON list of {"name", "dtype", "shape"} of every parameter
///   "optimizer"       the optimizer's hyper-parameters as JSON (Optimizer::config_json)
///   "step", "epoch", "cursor"  copies of the tensors above, for people reading the header
///   "micro_shards"    micro-shards per batch, written by data-parallel training only
///
/// The safetensors writer adds the per-tensor checksums (safetensors.hpp) to `__metadata__`, and
/// loading verifies them: a flipped byte anywhere in the data gives an error naming the tensor.
///
/// Loading validates the file (safetensors checks, then every entry above present with its
/// dtype and shape, no unknown tensor) before anything is returned; Trainer::load_checkpoint
/// additionally checks the parameters and optimizer state against its model and optimizer and
/// replaces its state only when everything matches (nothing is ever half-loaded).

#include <edifice/nn/model.hpp>
#include <edifice/nn/optimizers.hpp>

#include <cstdint>
#include <limits>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace edifice::nn {

/// Where the training loop is, and every random state it uses.
struct LoopState {
  /// Current epoch, 0-based: the number of epochs completed.
  std::int64_t epoch = 0;
  /// Batches of the current epoch already trained on (the data cursor).
  std::int64_t cursor = 0;
  /// Key of the shuffling: epoch e's sample order depends only on (data_seed, e, dataset size).
  std::uint64_t data_seed = 0;
  /// Dropout (and any train-mode randomness): the step's key is a hash of (dropout_seed,
  /// dropout_counter), and the counter advances by one per step.
  std::uint64_t dropout_seed = 0;
  std::uint64_t dropout_counter = 0;
  /// The current epoch's sums of loss and metrics weighted by batch size, and the samples seen,
  /// so the epoch means continue across a resume.
  std::vector<double> running_sums;
  double running_count = 0;
  /// Early stopping: the best monitored value (NaN before the first) and the number of
  /// consecutive epochs without improvement.
  double early_stopping_best = std::numeric_limits<double>::quiet_NaN();
  std::int64_t early_stopping_wait = 0;
  /// Seconds of training so far, across resumes (logs only; not part of exactness).
  double elapsed_s = 0;
};

/// Everything a training run carries from one step to the next.
struct TrainState {
  Params params;
  /// Includes "step" (i64 scalar): the global step.
  OptimizerState optimizer;
  LoopState loop;

  /// The optimizer's "step" (0 when there is none yet).
  std::int64_t step() const;
};

/// What the caller adds to a checkpoint's metadata.
struct CheckpointMetadata {
  /// Any JSON text (an object is usual): the model configuration. Must parse as JSON.
  std::string config = "{}";
  /// Optimizer::config_json(); empty to omit.
  std::string optimizer;
  /// Data-parallel training's micro-shards per batch (distributed.hpp); 0 to omit. The
  /// trainer refuses to resume a checkpoint with another count (the run would differ).
  std::int64_t micro_shards = 0;
};

/// Writes `state` to `path` as one safetensors file, atomically.
void save_checkpoint(const std::string& path, const TrainState& state,
                     const CheckpointMetadata& metadata = {});

/// Reads and validates a checkpoint written by save_checkpoint. `metadata`, if given, receives
/// the file's __metadata__ map. Errors start with the path and name the entry at fault.
TrainState load_checkpoint(const std::string& path,
                           std::map<std::string, std::string>* metadata = nullptr);

/// Same, from the bytes of a checkpoint file held in memory; errors start with `source_name`.
TrainState parse_checkpoint(std::string_view bytes, std::string_view source_name = "<memory>",
                            std::map<std::string, std::string>* metadata = nullptr);

/// Plain parameter files: one tensor per parameter, named as the parameter (no prefix), with
/// `metadata` as __metadata__. Atomic like checkpoints.
void save_params(const std::string& path, const Params& params,
                 const std::map<std::string, std::string>& metadata = {});

/// Reads a parameter file, or the "params/" entries of a training checkpoint (prefix removed).
/// `metadata`, if given, receives the __metadata__ map.
Params load_params(const std::string& path, std::map<std::string, std::string>* metadata = nullptr);

/// Same, checked against `model`: throws edifice::Error listing every missing, unexpected and
/// mismatched (name, dtype, shape) parameter (nn::check_params) instead of returning a partial
/// set. (Inline: the checkpoint code itself needs nothing of models, so the fuzz targets link
/// without the JIT.)
inline Params load_params(const std::string& path, const Model& model) {
  Params params = load_params(path);
  check_params(model.parameters(), params, path);
  return params;
}

}  // namespace edifice::nn
