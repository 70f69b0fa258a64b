// The data-parallel training step of nn::Trainer (distributed.hpp): the start-of-fit agreement
// check and state broadcast, micro-shard gradients, their fixed-tree sum across ranks, and the
// replicated update.
#include <edifice/nn/trainer.hpp>

#include <bit>
#include <cmath>
#include <cstring>

namespace edifice::nn {
namespace {

// FNV-1a over bytes: a fingerprint, not a security measure.
class Fingerprint {
 public:
  Fingerprint& bytes(const void* data, std::size_t n) {
    const auto* p = static_cast<const unsigned char*>(data);
    for (std::size_t i = 0; i < n; ++i) h_ = (h_ ^ p[i]) * 0x100000001B3ull;
    return *this;
  }
  template <typename T>
  Fingerprint& add(const T& v) {
    return bytes(&v, sizeof v);
  }
  Fingerprint& add(const std::string& s) {
    add(s.size());
    return bytes(s.data(), s.size());
  }
  Fingerprint& add(const Tensor& t) {
    add(static_cast<int>(t.dtype()));
    for (std::int64_t d : t.shape()) add(d);
    return bytes(t.raw_data(), t.nbytes());
  }
  std::uint64_t value() const { return h_; }

 private:
  std::uint64_t h_ = 0xCBF29CE484222325ull;
};

// What the ranks must agree on, each with what a difference means.
struct AgreementItem {
  const char* what;
  std::uint64_t hash;
};

}  // namespace

void Trainer::start_distributed(const Dataset& data, const FitOptions& options) {
  const std::int64_t micro = distribution_.micro_shards, world = comm_->size();
  if (micro < 1) fail("fit (distributed): micro_shards must be >= 1, got {}", micro);
  if (micro % world != 0)
    fail(
        "fit (distributed): the world size {} does not divide micro_shards {} (each rank takes "
        "micro_shards / world size micro-shards of every batch; choose micro_shards as a "
        "multiple of every world size you use, e.g. 4 for 1, 2 and 4 ranks)",
        world, micro);
  if (distribution_.bucket_bytes < 8)
    fail("fit (distributed): bucket_bytes must be >= 8, got {}", distribution_.bucket_bytes);
  if (step_.options().anomaly_mode)
    fail("fit (distributed): anomaly mode is not supported in data-parallel training");
  for (const Layer& in : model().inputs())
    if (in.rank() == 0 || in.shape()[0] != kDynamic)
      fail(
          "fit (distributed): the model's input \"{}\" is {}; data-parallel training splits "
          "every batch into micro-shards, so it needs a dynamic batch axis",
          model().layer_name(in), in.type().to_string());
  check_ranks_agree(data, options);
  broadcast_state();
  std::vector<Tensor> like;
  for (const auto& [name, t] : state_.params) like.push_back(t);
  layout_.emplace(step_.param_names(), like);
}

// Allgathers fingerprints of everything the ranks must share and throws on every rank, with
// the same message, naming the first rank and the items that differ from rank 0.
void Trainer::check_ranks_agree(const Dataset& data, const FitOptions& options) {
  const TrainStepOptions& so = step_.options();
  Fingerprint schedule;
  for (std::int64_t s : {0, 1, 10, 100, 1000, 10000, 100000})
    schedule.add(so.optimizer->learning_rate()(s));
  Fingerprint dataset;
  for (const Tensor& t : data.inputs()) dataset.add(t);
  dataset.add(data.targets());
  const LoopState& l = state_.loop;
  const std::vector<AgreementItem> items = {
      {"the model, loss and metrics (gradient graph hash)",
       step_.gradient_graph(data.targets()).hash()},
      {"the optimizer or clipping (update graph hash and hyper-parameters)",
       Fingerprint()
           .add(step_.update_graph().hash())
           .add(so.optimizer->config_json())
           .add(so.clip_global_norm)
           .value()},
      {"the learning-rate schedule", schedule.value()},
      {"micro_shards", Fingerprint().add(distribution_.micro_shards).value()},
      {"the batching (batch_size, shuffle, drop_last)",
       Fingerprint().add(options.batch_size).add(options.shuffle).add(options.drop_last).value()},
      {"the stopping options (epochs, max_steps)",
       Fingerprint().add(options.epochs).add(options.max_steps).value()},
      {"the training data (size or contents)", dataset.value()},
      {"the loop state (step, epoch, data cursor or seeds: another checkpoint or init seed?)",
       Fingerprint()
           .add(state_.step())
           .add(l.epoch)
           .add(l.cursor)
           .add(l.data_seed)
           .add(l.dropout_seed)
           .add(l.dropout_counter)
           .value()},
  };
  std::vector<std::uint64_t> mine;
  for (const AgreementItem& item : items) mine.push_back(item.hash);
  std::vector<std::uint64_t> all(mine.size() * static_cast<std::size_t>(comm_->size()));
  comm_->allgather(std::as_bytes(std::span(mine)), std::as_writable_bytes(std::span(all)));
  for (int r = 1; r < comm_->size(); ++r) {
    std::vector<std::string> differ;
    for (std::size_t i = 0; i < items.size(); ++i)
      if (all[static_cast<std::size_t>(r) * items.size() + i] != all[i])
        differ.push_back(items[i].what);
    if (!differ.empty())
      fail(
          "fit (distributed): rank {} of {} does not match rank 0 in {}; every rank must build "
          "the same model, options, data and state",
          r, comm_->size(), fmt::join(differ, "; "));
  }
}

// Rank 0's parameters and optimizer state replace every other rank's.
void Trainer::broadcast_state() {
  std::vector<Tensor*> tensors;
  for (auto& [name, t] : state_.params) tensors.push_back(&t);
  for (auto& [name, t] : state_.optimizer) tensors.push_back(&t);
  std::size_t total = 0;
  for (const Tensor* t : tensors) total += t->nbytes();
  std::vector<std::byte> bytes(total);
  std::size_t at = 0;
  for (const Tensor* t : tensors) {
    std::memcpy(bytes.data() + at, t->raw_data(), t->nbytes());
    at += t->nbytes();
  }
  comm_->broadcast(bytes, 0);
  at = 0;
  for (Tensor* t : tensors) {
    // A fresh tensor: the old buffer may be shared with the caller's copies.
    Tensor fresh(t->dtype(), t->shape());
    std::memcpy(fresh.raw_data(), bytes.data() + at, t->nbytes());
    at += t->nbytes();
    *t = std::move(fresh);
  }
}

// `local` holds this rank's `leaves` packed gradient buffers (one: its subtree's sum). Returns
// the fixed-tree sum over every rank's leaves, in rank order, identical on every rank.
std::vector<std::byte> Trainer::exchange_gradients(std::span<const std::byte> local,
                                                   std::size_t leaves) {
  const GradientLayout& layout = *layout_;
  const std::size_t P = layout.bytes(), world = static_cast<std::size_t>(comm_->size());
  const std::size_t bucket = std::max<std::size_t>(distribution_.bucket_bytes / 8 * 8, 8);
  std::vector<std::byte> sum(P);
  if (leaves == 1) {
    // One subtree sum per rank: each bucket is summed as soon as it arrives.
    comm_->allgather_buckets(
        local, bucket,
        [&](std::size_t offset, std::size_t length, std::span<const std::byte> gathered) {
          std::vector<const std::byte*> parts;
          for (std::size_t r = 0; r < world; ++r) parts.push_back(gathered.data() + r * length);
          tree_sum(layout, parts, offset, length, sum.data() + offset);
        });
    return sum;
  }
  // Every micro-shard's gradient: gather them all, then sum the whole tree.
  const std::size_t per_rank = leaves * P;
  std::vector<std::byte> all(world * per_rank);
  comm_->allgather_buckets(
      local, bucket,
      [&](std::size_t offset, std::size_t length, std::span<const std::byte> gathered) {
        for (std::size_t r = 0; r < world; ++r)
          std::memcpy(all.data() + r * per_rank + offset, gathered.data() + r * length, length);
      });
  std::vector<const std::byte*> parts;
  for (std::size_t m = 0; m < world * leaves; ++m) parts.push_back(all.data() + m * P);
  tree_sum(layout, parts, 0, P, sum.data());
  return sum;
}

// One global batch (`batch`: its sample indices): this rank's micro-shards, the exchange, the
// update. Loss and metrics are the n_m / N weighted sums over all micro-shards in order.
StepResult Trainer::distributed_step(const Dataset& data, std::span<const std::int64_t> batch,
                                     double learning_rate) {
  const GradientLayout& layout = *layout_;
  const std::int64_t micro = distribution_.micro_shards, world = comm_->size();
  const std::int64_t per_rank = micro / world, first = comm_->rank() * per_rank;
  const auto n = static_cast<std::int64_t>(batch.size());
  const std::size_t P = layout.bytes(), values = 2 + step_.metric_names().size();
  std::vector<std::byte> leaves(static_cast<std::size_t>(per_rank) * P);
  std::vector<double> mine(static_cast<std::size_t>(per_rank) * values, 0.0);
  for (std::int64_t j = 0; j < per_rank; ++j) {
    const std::int64_t m = first + j;
    const SampleRange range = micro_shard_samples(n, micro, m);
    const auto leaf = std::span(leaves).subspan(static_cast<std::size_t>(j) * P, P);
    double* v = &mine[static_cast<std::size_t>(j) * values];
    v[0] = static_cast<double>(range.last - range.first);
    if (range.last == range.first) {
      layout.zero(leaf);
      continue;
    }
    Dataset::Batch b = data.gather(batch.subspan(
        static_cast<std::size_t>(range.first), static_cast<std::size_t>(range.last - range.first)));
    GradientResult g = step_.gradients(
        state_.params, micro_shard_key(state_.loop.dropout_seed, state_.loop.dropout_counter, m),
        b.inputs, b.targets);
    layout.pack(g.grads, v[0] / static_cast<double>(n), leaf);
    v[1] = g.values.loss;
    for (std::size_t i = 0; i < g.values.metrics.size(); ++i) v[2 + i] = g.values.metrics[i];
  }
  std::vector<std::byte> sum;
  if ((world & (world - 1)) == 0) {
    // This rank's micro-shards are one subtree of the fixed tree: sum it here.
    std::vector<const std::byte*> parts;
    for (std::int64_t j = 0; j < per_rank; ++j)
      parts.push_back(leaves.data() + static_cast<std::size_t>(j) * P);
    std::vector<std::byte> subtree(P);
    if (P > 0) tree_sum(layout, parts, 0, P, subtree.data());
    sum = exchange_gradients(subtree, 1);
  } else {
    sum = exchange_gradients(leaves, static_cast<std::size_t>(per_rank));
  }
  std::vector<double> all(mine.size() * static_cast<std::size_t>(world));
  comm_->allgather(std::as_bytes(std::span(mine)), std::as_writable_bytes(std::span(all)));

  StepResult r;
  r.grad_norm =
      step_.apply_gradients(state_.params, state_.optimizer, learning_rate, layout.unpack(sum));
  r.metrics.assign(values - 2, 0.0);
  for (std::int64_t m = 0; m < micro; ++m) {
    const double* v = &all[static_cast<std::size_t>(m) * values];
    const double w = v[0] / static_cast<double>(n);
    if (v[0] == 0) continue;
    r.loss += w * v[1];
    for (std::size_t i = 0; i < r.metrics.size(); ++i) r.metrics[i] += w * v[2 + i];
  }
  return r;
}

}  // namespace edifice::nn
