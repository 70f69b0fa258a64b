// The training loop: batching and counter-based shuffling, running means, validation, handlers,
// early stopping, progress and CSV output, checkpoints of the whole state.
#include <edifice/core/philox.hpp>
#include <edifice/nn/trainer.hpp>

#include <chrono>
#include <cmath>
#include <cstring>
#include <iostream>

namespace edifice::nn {
namespace {

std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

std::string type_string(const Tensor& t) {
  return fmt::format("{}{}", dtype_name(t.dtype()), shape_to_string(t.shape()));
}

std::string current_exception_text() {
  try {
    throw;
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "an exception that is not a std::exception";
  }
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Data

Dataset::Dataset(std::vector<Tensor> inputs, Tensor targets)
    : inputs_(std::move(inputs)), targets_(std::move(targets)) {
  if (inputs_.empty()) fail("Dataset: needs at least one input tensor");
  if (targets_.rank() < 1)
    fail("Dataset: targets must have a leading sample axis, got {}", type_string(targets_));
  size_ = targets_.dim(0);
  for (std::size_t i = 0; i < inputs_.size(); ++i) {
    if (inputs_[i].rank() < 1 || inputs_[i].dim(0) != size_)
      fail(
          "Dataset: input {} is {} but the targets {} hold {} samples (the leading extents must "
          "agree)",
          i, type_string(inputs_[i]), type_string(targets_), size_);
  }
}

Dataset::Batch Dataset::gather(std::span<const std::int64_t> indices) const {
  auto rows = [&](const Tensor& t) {
    Shape shape = t.shape();
    shape[0] = static_cast<std::int64_t>(indices.size());
    Tensor out(t.dtype(), shape);
    const std::size_t row = size_ > 0 ? t.nbytes() / static_cast<std::size_t>(size_) : 0;
    auto* dst = static_cast<std::byte*>(out.raw_data());
    const auto* src = static_cast<const std::byte*>(t.raw_data());
    for (std::size_t k = 0; k < indices.size(); ++k) {
      const std::int64_t i = indices[k];
      if (i < 0 || i >= size_)
        fail("Dataset::gather: index {} is out of range for {} samples", i, size_);
      std::memcpy(dst + k * row, src + static_cast<std::size_t>(i) * row, row);
    }
    return out;
  };
  Batch b;
  for (const Tensor& t : inputs_) b.inputs.push_back(rows(t));
  b.targets = rows(targets_);
  return b;
}

std::int64_t batches_per_epoch(std::int64_t n, std::int64_t batch_size, bool drop_last) {
  if (batch_size < 1) fail("batch_size must be >= 1, got {}", batch_size);
  return drop_last ? n / batch_size : (n + batch_size - 1) / batch_size;
}

std::vector<std::int64_t> epoch_order(std::int64_t n, bool shuffle, std::uint64_t seed,
                                      std::int64_t epoch) {
  std::vector<std::int64_t> order(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) order[static_cast<std::size_t>(i)] = i;
  if (!shuffle) return order;
  const philox::Key key = philox::key_from_seed(seed);
  for (std::int64_t i = n - 1; i >= 1; --i) {
    const philox::Counter w = philox::philox4x32_10(
        philox::counter_for(static_cast<std::uint64_t>(i), static_cast<std::uint64_t>(epoch)), key);
    const std::uint64_t u = (std::uint64_t{w[0]} << 32) | w[1];
    const auto j = static_cast<std::int64_t>(
        (static_cast<unsigned __int128>(u) * static_cast<std::uint64_t>(i + 1)) >> 64);
    std::swap(order[static_cast<std::size_t>(i)], order[static_cast<std::size_t>(j)]);
  }
  return order;
}

std::int64_t dropout_key(std::uint64_t dropout_seed, std::uint64_t counter) {
  return static_cast<std::int64_t>(splitmix64(dropout_seed ^ splitmix64(counter)));
}

// ---------------------------------------------------------------------------------------------
// Trainer

Trainer::Trainer(Model model, TrainerOptions options)
    : step_(std::move(model),
            TrainStepOptions{std::move(options.loss), std::move(options.metrics),
                             std::move(options.optimizer), options.clip_global_norm,
                             options.anomaly_mode, std::move(options.jit)}),
      comm_(std::move(options.distributed)),
      distribution_(options.distribution) {}

std::vector<std::string> Trainer::value_names() const {
  std::vector<std::string> names = {"loss"};
  for (const std::string& m : step_.metric_names()) names.push_back(m);
  return names;
}

void Trainer::init(std::uint64_t seed) {
  init(model().init(seed), seed);
}

void Trainer::init(Params params, std::uint64_t seed) {
  check_params(model().parameters(), params, "Trainer::init");
  TrainState s;
  s.optimizer = step_.initial_state(params);
  s.params = std::move(params);
  s.loop.data_seed = splitmix64(seed ^ 1);
  s.loop.dropout_seed = splitmix64(seed ^ 2);
  s.loop.running_sums.assign(value_names().size(), 0.0);
  state_ = std::move(s);
  initialised_ = true;
}

void Trainer::on_step(StepHandler handler, std::int64_t every) {
  if (!handler) fail("Trainer::on_step: the handler is empty");
  if (every < 1) fail("Trainer::on_step: every must be >= 1, got {}", every);
  step_handlers_.emplace_back(std::move(handler), every);
}

void Trainer::on_epoch(EpochHandler handler) {
  if (!handler) fail("Trainer::on_epoch: the handler is empty");
  epoch_handlers_.push_back(std::move(handler));
}

void Trainer::on_completion(CompletionHandler handler) {
  if (!handler) fail("Trainer::on_completion: the handler is empty");
  completion_handlers_.push_back(std::move(handler));
}

void Trainer::check_data(const Dataset& data, std::int64_t batch_size, bool drop_last,
                         const char* what) const {
  const Model& m = model();
  const auto& layers = m.inputs();
  if (data.inputs().size() != layers.size())
    fail("{}: the data has {} input tensors, the model has {} inputs", what, data.inputs().size(),
         layers.size());
  for (std::size_t i = 0; i < layers.size(); ++i) {
    const Tensor& t = data.inputs()[i];
    const TensorType& want = layers[i].type();
    const std::string& name = m.layer_name(layers[i]);
    bool ok = t.dtype() == want.dtype && t.rank() == want.rank();
    for (std::int64_t a = 1; ok && a < t.rank(); ++a)
      ok = want.shape[a] == kDynamic || want.shape[a] == t.dim(a);
    if (!ok)
      fail(
          "{}: input \"{}\" of the data is {}, the model takes {} (the leading axis is the "
          "samples)",
          what, name, type_string(t), want.to_string());
    const std::int64_t fixed = want.shape.empty() ? kDynamic : want.shape[0];
    if (fixed != kDynamic && (fixed != batch_size || (!drop_last && data.size() % batch_size != 0)))
      fail(
          "{}: the model's input \"{}\" has a fixed batch of {} ({}), so batches must all hold "
          "exactly {} samples; got batch_size {} for {} samples{}",
          what, name, fixed, want.to_string(), fixed, batch_size, data.size(),
          drop_last ? "" : " (drop_last would skip a partial batch)");
  }
  // Class-index targets: the one-hot in the loss would silently drop an out-of-range index.
  const Tensor& y = data.targets();
  const Layer& out = m.outputs()[0];
  if ((y.dtype() == DType::i32 || y.dtype() == DType::i64) && out.rank() == y.rank() + 1 &&
      out.shape().back() != kDynamic) {
    const std::int64_t classes = out.shape().back();
    for (std::int64_t i = 0; i < y.numel(); ++i) {
      const double c = y.get_as_double(i);
      if (c < 0 || c >= static_cast<double>(classes))
        fail(
            "{}: target class index {} (element {} of the targets) is out of range for the "
            "model's {} classes",
            what, static_cast<std::int64_t>(c), i, classes);
    }
  }
}

NamedValues Trainer::evaluate(const Dataset& data, std::int64_t batch_size) {
  if (!initialised_) fail("Trainer::evaluate: call init() or load_checkpoint() first");
  if (batch_size < 1) fail("evaluate: batch_size must be >= 1, got {}", batch_size);
  check_data(data, batch_size, false, "evaluate");
  return evaluate_checked(data, batch_size);
}

NamedValues Trainer::evaluate_checked(const Dataset& data, std::int64_t batch_size) {
  const std::vector<std::string> names = value_names();
  std::vector<double> sums(names.size(), 0.0);
  const std::int64_t n = data.size();
  const std::vector<std::int64_t> order = epoch_order(n, false, 0, 0);
  for (std::int64_t begin = 0; begin < n; begin += batch_size) {
    const std::int64_t end = std::min(begin + batch_size, n);
    auto batch = data.gather(std::span(order).subspan(static_cast<std::size_t>(begin),
                                                      static_cast<std::size_t>(end - begin)));
    StepResult r = step_.evaluate(state_.params, batch.inputs, batch.targets);
    const auto w = static_cast<double>(end - begin);
    sums[0] += r.loss * w;
    for (std::size_t i = 0; i < r.metrics.size(); ++i) sums[1 + i] += r.metrics[i] * w;
  }
  NamedValues out;
  for (std::size_t i = 0; i < names.size(); ++i)
    out.emplace_back(names[i], n > 0 ? sums[i] / static_cast<double>(n) : NAN);
  return out;
}

// The state of one fit() call: its options checked, the logs it writes and where it stands.
struct Trainer::FitRun {
  const Dataset& data;
  const FitOptions& options;
  std::int64_t n = 0, bs = 0, vbs = 0, nb = 0;  // samples, batch sizes, batches per epoch
  std::vector<std::string> names;               // loss, metrics
  std::vector<std::string> epoch_names;         // names, then val_ names with validation
  bool maximise = false;                        // early stopping's direction
  std::optional<ProgressBar> bar;
  bool bar_open = false;
  std::optional<CsvLogger> csv;
  bool csv_steps = false;
  const Schedule* schedule = nullptr;
  std::chrono::steady_clock::time_point t0 = std::chrono::steady_clock::now();
  double elapsed0 = 0;
  std::vector<std::int64_t> order;  // this epoch's sample order
  std::int64_t order_epoch = -1;
  History history;
  std::string reason;  // why the run stopped

  double elapsed() const { return elapsed0 + seconds_since(t0); }
  NamedValues running(const LoopState& loop) const {
    NamedValues v;
    for (std::size_t i = 0; i < names.size(); ++i)
      v.emplace_back(names[i],
                     loop.running_count > 0 ? loop.running_sums[i] / loop.running_count : NAN);
    return v;
  }
  std::string title(std::int64_t epoch) const {
    return options.epochs > 0 ? fmt::format("Epoch {}/{}", epoch + 1, options.epochs)
                              : fmt::format("Epoch {}", epoch + 1);
  }
};

void Trainer::check_fit_options(FitRun& run) const {
  const FitOptions& options = run.options;
  if (!initialised_) fail("fit: call init() or load_checkpoint() first");
  if (options.epochs < 0) fail("fit: epochs must be >= 0, got {}", options.epochs);
  if (options.max_steps < 0) fail("fit: max_steps must be >= 0, got {}", options.max_steps);
  if (options.epochs == 0 && options.max_steps == 0)
    fail("fit: give a number of epochs or max_steps (both are 0: no end)");
  run.bs = options.batch_size;
  if (run.bs < 1) fail("fit: batch_size must be >= 1, got {}", run.bs);
  run.vbs = options.validation_batch_size > 0 ? options.validation_batch_size : run.bs;
  check_data(run.data, run.bs, options.drop_last, "fit");
  if (options.validation) check_data(*options.validation, run.vbs, false, "fit (validation data)");
  run.n = run.data.size();
  run.nb = batches_per_epoch(run.n, run.bs, options.drop_last);
  if (run.nb == 0)
    fail("fit: the dataset has {} samples, not one batch of {}{}", run.n, run.bs,
         options.drop_last ? " (drop_last skips the partial batch)" : "");
  run.names = value_names();
  run.epoch_names = run.names;
  if (options.validation)
    for (const std::string& name : run.names) run.epoch_names.push_back("val_" + name);
  if (options.early_stopping) {
    const EarlyStopping& es = *options.early_stopping;
    if (std::find(run.epoch_names.begin(), run.epoch_names.end(), es.monitor) ==
        run.epoch_names.end())
      fail("fit: early stopping monitors \"{}\", but the epochs log only: {}", es.monitor,
           fmt::join(run.epoch_names, ", "));
    if (!(es.min_delta >= 0))
      fail("fit: early stopping min_delta must be >= 0, got {}", es.min_delta);
    if (es.patience < 0) fail("fit: early stopping patience must be >= 0, got {}", es.patience);
    run.maximise =
        es.mode == EarlyStopping::Mode::max ||
        (es.mode == EarlyStopping::Mode::automatic && es.monitor.find("acc") != std::string::npos);
  }
}

// Checks the loop state against this run (a checkpoint's cursor and running sums), then opens
// the progress bar and the CSV log.
void Trainer::start_fit(FitRun& run) {
  LoopState& loop = state_.loop;
  const std::vector<std::string>& names = run.names;
  if (loop.running_sums.size() != names.size()) {
    if (loop.cursor > 0)
      fail(
          "fit: the state is in the middle of an epoch with running sums for {} values, but "
          "this trainer tracks {} (loss and metrics)",
          loop.running_sums.size(), names.size());
    loop.running_sums.assign(names.size(), 0.0);
    loop.running_count = 0;
  }
  if (loop.cursor > run.nb)
    fail(
        "fit: the state's data cursor is at batch {} but an epoch has {} batches (was the "
        "checkpoint made with another dataset size, batch_size or drop_last?)",
        loop.cursor, run.nb);
  const FitOptions& options = run.options;
  if (comm_) start_distributed(run.data, options);
  if (options.progress && leader()) {
    std::ostream& out = options.progress_out ? *options.progress_out : std::cout;
    run.bar.emplace(out, options.progress_tty.value_or(is_terminal(out)), options.progress_options);
  }
  const bool fresh = state_.step() == 0 && loop.epoch == 0 && loop.cursor == 0;
  run.csv_steps = options.csv_every == FitOptions::CsvEvery::step;
  if (!options.csv_path.empty() && leader()) {
    std::vector<std::string> cols = run.csv_steps ? names : run.epoch_names;
    cols.push_back("lr");
    cols.push_back("elapsed_s");
    run.csv.emplace(options.csv_path, cols, !fresh, options.csv_flush_every);
  }
  run.schedule = &step_.options().optimizer->learning_rate();
  run.t0 = std::chrono::steady_clock::now();
  run.elapsed0 = loop.elapsed_s;
}

// One optimizer step on batch `b` of the epoch; returns whether a handler asked to stop.
bool Trainer::train_batch(FitRun& run, std::int64_t b) {
  LoopState& loop = state_.loop;
  const std::int64_t begin = b * run.bs, end = std::min(begin + run.bs, run.n);
  const auto indices = std::span(run.order).subspan(static_cast<std::size_t>(begin),
                                                    static_cast<std::size_t>(end - begin));
  // Distributed steps gather only their own micro-shards.
  const Dataset::Batch batch = comm_ ? Dataset::Batch{} : run.data.gather(indices);
  const std::int64_t step = state_.step();
  const double lr = (*run.schedule)(step);
  const std::int64_t key = dropout_key(loop.dropout_seed, loop.dropout_counter);
  StepResult r =
      comm_ ? distributed_step(run.data, indices, lr)
            : step_.run(
                  state_.params, state_.optimizer, lr, key, batch.inputs, batch.targets,
                  fmt::format("training step {} (epoch {}, batch {})", step + 1, loop.epoch, b));
  ++loop.dropout_counter;
  ++loop.cursor;
  const auto w = static_cast<double>(end - begin);
  loop.running_sums[0] += r.loss * w;
  for (std::size_t i = 0; i < r.metrics.size(); ++i) loop.running_sums[1 + i] += r.metrics[i] * w;
  loop.running_count += w;
  loop.elapsed_s = run.elapsed();

  StepEvent ev;
  ev.epoch = loop.epoch;
  ev.batch = b;
  ev.batches_per_epoch = run.nb;
  ev.step = state_.step();
  ev.batch_size = end - begin;
  ev.loss = r.loss;
  for (std::size_t i = 0; i < r.metrics.size(); ++i)
    ev.metrics.emplace_back(run.names[1 + i], r.metrics[i]);
  ev.running = run.running(loop);
  ev.learning_rate = lr;
  ev.grad_norm = r.grad_norm;
  ev.elapsed_s = loop.elapsed_s;
  if (run.bar) run.bar->update(loop.cursor, ev.running);
  if (run.csv && run.csv_steps) {
    std::vector<double> row = {r.loss};
    row.insert(row.end(), r.metrics.begin(), r.metrics.end());
    row.push_back(lr);
    row.push_back(ev.elapsed_s);
    run.csv->row(loop.epoch, ev.step, row);
  }
  bool stop = false;
  for (auto& [handler, every] : step_handlers_)
    if (ev.step % every == 0 && handler(ev) == Control::stop) stop = true;
  return stop;
}

// Whether early stopping ends the run after an epoch whose logged values are `values`; updates
// the best value and the wait count in the loop state, and says why in `message`.
bool Trainer::early_stop(const FitRun& run, const NamedValues& values, std::string& message) {
  if (!run.options.early_stopping) return false;
  LoopState& loop = state_.loop;
  const EarlyStopping& es = *run.options.early_stopping;
  double v = NAN;
  for (const auto& [name, x] : values)
    if (name == es.monitor) v = x;
  const double best = loop.early_stopping_best;
  const bool improved = std::isnan(best)
                            ? !std::isnan(v)
                            : (run.maximise ? v > best + es.min_delta : v < best - es.min_delta);
  if (improved) {
    loop.early_stopping_best = v;
    loop.early_stopping_wait = 0;
    return false;
  }
  if (++loop.early_stopping_wait < std::max<std::int64_t>(es.patience, 1)) return false;
  message = fmt::format(
      "Early stopping after epoch {}: {} did not improve for {} epoch{} (best {})", loop.epoch + 1,
      es.monitor, loop.early_stopping_wait, loop.early_stopping_wait == 1 ? "" : "s",
      format_metric(loop.early_stopping_best));
  return true;
}

// Epoch end: validation, logs, early stopping, then the state moves to the next epoch.
// Returns whether the run stops here (run.reason says why).
bool Trainer::end_epoch(FitRun& run) {
  LoopState& loop = state_.loop;
  NamedValues values = run.running(loop);
  if (run.options.validation)
    for (auto& [name, v] : evaluate_checked(*run.options.validation, run.vbs))
      values.emplace_back("val_" + name, v);
  if (run.bar) run.bar->finish(values);
  run.bar_open = false;
  const std::int64_t done_epoch = loop.epoch;
  run.history.epochs.push_back(done_epoch);
  for (const auto& [name, v] : values) run.history.metrics[name].push_back(v);
  if (run.csv && !run.csv_steps) {
    std::vector<double> row;
    for (const auto& [name, v] : values) row.push_back(v);
    row.push_back((*run.schedule)(std::max<std::int64_t>(state_.step() - 1, 0)));
    row.push_back(run.elapsed());
    run.csv->row(done_epoch, state_.step(), row);
  }
  if (run.csv) run.csv->flush();

  std::string early_message;
  const bool early = early_stop(run, values, early_message);
  ++loop.epoch;
  loop.cursor = 0;
  std::fill(loop.running_sums.begin(), loop.running_sums.end(), 0.0);
  loop.running_count = 0;
  loop.elapsed_s = run.elapsed();

  EpochEvent ev{done_epoch, state_.step(), values, loop.elapsed_s};
  bool handler_stop = false;
  for (auto& handler : epoch_handlers_)
    if (handler(ev) == Control::stop) handler_stop = true;
  if (early) {
    if (run.bar) run.bar->message(early_message);
    run.reason = "early_stopping";
    return true;
  }
  if (handler_stop) run.reason = "handler";
  return handler_stop;
}

// Trains until a limit, a handler or early stopping ends the run (run.reason says which).
void Trainer::fit_loop(FitRun& run) {
  LoopState& loop = state_.loop;
  const FitOptions& options = run.options;
  auto step_limit = [&] { return options.max_steps > 0 && state_.step() >= options.max_steps; };
  while (true) {
    if (options.epochs > 0 && loop.epoch >= options.epochs) {
      run.reason = "epochs";
      return;
    }
    if (step_limit()) {
      run.reason = "max_steps";
      return;
    }
    if (run.order_epoch != loop.epoch) {
      run.order = epoch_order(run.n, options.shuffle, loop.data_seed, loop.epoch);
      run.order_epoch = loop.epoch;
    }
    if (run.bar) {
      run.bar->start(run.title(loop.epoch), run.nb, loop.cursor);
      run.bar_open = true;
    }
    while (loop.cursor < run.nb) {
      const bool limit = step_limit();
      if (limit || train_batch(run, loop.cursor)) {
        run.reason = limit ? "max_steps" : "handler";
        if (run.bar) run.bar->finish(run.running(loop));
        run.bar_open = false;
        return;
      }
    }
    if (end_epoch(run)) return;
  }
}

History Trainer::fit(const Dataset& data, const FitOptions& options) {
  FitRun run{data, options};
  check_fit_options(run);
  start_fit(run);
  try {
    fit_loop(run);
  } catch (...) {
    // Other ranks would wait for this one in their next collective: end the job.
    if (comm_ && comm_->size() > 1) comm_->abort("fit failed: " + current_exception_text(), 1);
    // Leave the terminal and the log usable, then report.
    state_.loop.elapsed_s = run.elapsed();
    if (run.bar && run.bar_open) run.bar->finish(run.running(state_.loop));
    if (run.csv) {
      try {
        run.csv->flush();
      } catch (...) {
      }
    }
    throw;
  }
  run.history.steps = state_.step();
  run.history.stop_reason = run.reason;
  if (run.csv) run.csv->flush();
  for (auto& handler : completion_handlers_) handler(run.history);
  return run.history;
}

void Trainer::save_checkpoint(const std::string& path, const std::string& config_json) const {
  if (!initialised_) fail("Trainer::save_checkpoint: nothing to save; call init() first");
  const CheckpointMetadata metadata{config_json, step_.options().optimizer->config_json(),
                                    comm_ ? distribution_.micro_shards : 0};
  if (!comm_ || comm_->size() == 1) {
    nn::save_checkpoint(path, state_, metadata);
    return;
  }
  // Rank 0 writes; every rank learns whether it worked (and waits for the file to exist).
  std::string error;
  if (comm_->rank() == 0) {
    try {
      nn::save_checkpoint(path, state_, metadata);
    } catch (const std::exception& e) {
      error = e.what();
    }
  }
  std::uint64_t length = error.size();
  comm_->broadcast(std::as_writable_bytes(std::span(&length, 1)), 0);
  error.resize(length);
  comm_->broadcast(std::as_writable_bytes(std::span(error.data(), error.size())), 0);
  if (!error.empty()) fail("save_checkpoint (written by rank 0): {}", error);
}

void Trainer::load_checkpoint(const std::string& path) {
  std::map<std::string, std::string> metadata;
  TrainState s = nn::load_checkpoint(path, &metadata);
  if (auto it = metadata.find("micro_shards");
      comm_ && it != metadata.end() && it->second != std::to_string(distribution_.micro_shards))
    fail(
        "{}: the checkpoint was trained with {} micro-shards per batch, this trainer uses {}; "
        "resume with the same micro_shards (any world size dividing it) to continue the same "
        "run",
        path, it->second, distribution_.micro_shards);
  check_params(model().parameters(), s.params, path);
  check_optimizer_state(step_.initial_state(s.params), s.optimizer, path);
  const std::size_t values = value_names().size();
  if (s.loop.running_sums.size() != values) {
    if (s.loop.cursor > 0)
      fail(
          "{}: the checkpoint is in the middle of an epoch with running sums for {} values, "
          "but this trainer tracks {} (loss and metrics)",
          path, s.loop.running_sums.size(), values);
    s.loop.running_sums.assign(values, 0.0);
    s.loop.running_count = 0;
  }
  state_ = std::move(s);
  initialised_ = true;
}

}  // namespace edifice::nn
