#pragma once
/// \file
/// Data-parallel training over several processes, bit-identical at every world size:
///
///   nn::Trainer trainer(model, {.loss = ..., .optimizer = nn::adam(...),
///                               .distributed = nn::mpi()});   // started with mpirun -np N
///
/// How a step runs (Trainer::fit with TrainerOptions::distributed set):
///   - Every rank walks the same global batches (the sample order depends only on the data seed
///     and the epoch). Global batch b (N samples) is split into M = micro_shards micro-shards:
///     micro-shard m holds the batch's samples [floor(m N / M), floor((m+1) N / M)). Rank r
///     computes micro-shards r M/W .. (r+1) M/W - 1 (W = world size, which must divide M),
///     each with the same compiled gradient graph (TrainStep::gradients) and the dropout key
///     micro_shard_key(dropout_seed, step counter, m): nothing a micro-shard computes depends
///     on W.
///   - Micro-shard m's gradient is weighted by n_m / N (so a partial last batch averages right)
///     and the M weighted gradients are summed in ONE fixed binary tree: the sum over leaves
///     [lo, hi) is sum[lo, mid) + sum[mid, hi) with mid = lo + (hi - lo) / 2. When W is a power
///     of two each rank's micro-shards form a subtree: the rank sums it locally and the ranks
///     allgather their W subtree sums; otherwise every rank allgathers all its micro-shard
///     gradients and every rank sums the whole tree. Either way every rank ends with the same
///     bits, whatever W, and runs the same update graph (TrainStep::apply_gradients).
///   - The gradients travel packed in one buffer (each parameter's bytes at an 8-aligned
///     offset), cut into buckets of bucket_bytes; all buckets are posted at once
///     (MPI_Iallgather) and each is summed as soon as it arrives. (Communication cannot overlap
///     the backward pass: one compiled graph produces every gradient of a micro-shard at once.) Bytes sent per rank per step:
///     P (the packed gradient size) when W is a power of two, P M / W otherwise; received
///     (W - 1) times that. Loss and metrics of every micro-shard are allgathered too and
///     averaged in micro-shard order (so every rank logs the same values).
///
/// Checkpoints (Trainer::save_checkpoint, written by rank 0) hold the global data cursor and
/// micro_shards; a checkpoint resumes on any world size dividing the same micro_shards and
/// continues exactly as the uninterrupted run. Every rank reads the file itself (a shared file
/// system, or a copy per machine), and fit() then broadcasts rank 0's state anyway.
///
/// Fault handling: every collective waits at most timeout_s (then the rank prints an error
/// naming itself and aborts the job); an exception escaping fit() on one rank prints
/// "edifice: rank R of W failed: ..." and aborts the job (MPI_Abort), so no rank waits
/// forever on a peer. A rank killed by a signal makes mpirun end the job. At the start of every
/// fit() the ranks compare fingerprints (graph hashes, optimizer, batching, dataset, loop
/// state) and fail with an error naming the rank and what differs.

#include <edifice/core/tensor.hpp>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace edifice::nn {

/// The few collectives data-parallel training needs. Implementations: single_process() and,
/// when Edifice is built with MPI, mpi(). All calls are collective: every rank makes the same
/// calls in the same order with the same sizes.
class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  /// "MPI (Open MPI v4.1.4)", "single process".
  virtual std::string name() const = 0;
  /// Replaces `bytes` on every rank with rank `root`'s.
  virtual void broadcast(std::span<std::byte> bytes, int root) = 0;
  /// `recv` (size() * send.size() bytes) receives every rank's `send`, in rank order.
  virtual void allgather(std::span<const std::byte> send, std::span<std::byte> recv) = 0;
  /// Allgathers consecutive pieces ("buckets") of at most bucket_bytes of `send`, and calls
  /// `arrived(offset, length, gathered)` once per bucket as it completes, with `gathered`
  /// holding every rank's bytes [offset, offset + length) of its `send`, in rank order. The
  /// default runs them one after another; the MPI one posts all and reduces as they complete.
  using BucketArrived =
      std::function<void(std::size_t offset, std::size_t length, std::span<const std::byte>)>;
  virtual void allgather_buckets(std::span<const std::byte> send, std::size_t bucket_bytes,
                                 const BucketArrived& arrived);
  /// Prints `message` (prefixed "edifice: rank R of W: ") to stderr and ends every rank of the
  /// job with `code`. Never returns.
  [[noreturn]] virtual void abort(const std::string& message, int code) = 0;
};

/// A world of one process: collectives copy. Runs the data-parallel path (micro-shards, tree
/// sum) without MPI, with results bit-identical to any world size.
std::shared_ptr<Communicator> single_process();

struct MpiOptions {
  /// Longest wait for any collective before the rank aborts the job, seconds (> 0).
  double timeout_s = 300;
};

/// MPI_COMM_WORLD (duplicated). Initialises MPI (MPI_THREAD_FUNNELED) unless the program did,
/// and then finalises it at exit. Throws edifice::Error when this build has no MPI
/// (EDIFICE_MPI off at configure time).
std::shared_ptr<Communicator> mpi(const MpiOptions& options = {});
/// Whether this build has MPI support.
bool mpi_available();

/// Options of data-parallel training (TrainerOptions::distribution).
struct DistributedOptions {
  /// M: micro-shards per global batch; the world size must divide it. Results depend on M
  /// (and not on the world size), so keep it when resuming with another number of ranks.
  std::int64_t micro_shards = 4;
  /// Bucket size of the gradient exchange, bytes (rounded down to a multiple of 8, >= 8).
  std::size_t bucket_bytes = std::size_t{4} << 20;
};

/// The dropout key of micro-shard m of the step whose dropout counter is `counter`.
std::int64_t micro_shard_key(std::uint64_t dropout_seed, std::uint64_t counter, std::int64_t m);

/// The samples [first, last) of a batch of n samples that micro-shard m of M holds.
struct SampleRange {
  std::int64_t first = 0, last = 0;
};
SampleRange micro_shard_samples(std::int64_t n, std::int64_t micro_shards, std::int64_t m);

/// Gradients packed into one byte buffer: each tensor at an 8-byte aligned offset, so a bucket
/// whose size is a multiple of 8 never splits an element. Float dtypes (f32, f64) only.
class GradientLayout {
 public:
  /// From the gradient tensors' dtypes and shapes (`names` for errors).
  GradientLayout(const std::vector<std::string>& names, const std::vector<Tensor>& like);
  std::size_t bytes() const { return bytes_; }
  /// Writes weight * grads[i] into `out` (bytes() long), in each tensor's dtype.
  void pack(const std::vector<Tensor>& grads, double weight, std::span<std::byte> out) const;
  /// Zeroes `out` (an empty micro-shard).
  void zero(std::span<std::byte> out) const;
  /// dst[o, o+len) += src[o, o+len), element by element in each tensor's dtype. `dst` and
  /// `src` are views of the range only (len bytes each).
  void add(std::byte* dst, const std::byte* src, std::size_t offset, std::size_t length) const;
  /// The tensors held by a packed buffer.
  std::vector<Tensor> unpack(std::span<const std::byte> packed) const;

 private:
  struct Piece {
    std::size_t offset = 0, bytes = 0;
    DType dtype = DType::f32;
    Shape shape;
  };
  std::vector<Piece> pieces_;
  std::size_t bytes_ = 0;
};

/// The fixed tree sum over leaves [0, count) (see the file comment) of the byte range
/// [offset, offset + length) of packed gradients: leaf i is leaves[i] (a view of that range).
/// Writes the sum to `out` (length bytes).
void tree_sum(const GradientLayout& layout, const std::vector<const std::byte*>& leaves,
              std::size_t offset, std::size_t length, std::byte* out);

}  // namespace edifice::nn
