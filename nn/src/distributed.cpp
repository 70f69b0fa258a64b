// Data-parallel training pieces that need no MPI: micro-shards, their keys, the packed gradient
// layout, the fixed summation tree and the single-process communicator (distributed.hpp).
#include <edifice/core/error.hpp>
#include <edifice/nn/distributed.hpp>
#include <edifice/nn/trainer.hpp>

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace edifice::nn {

void Communicator::allgather_buckets(std::span<const std::byte> send, std::size_t bucket_bytes,
                                     const BucketArrived& arrived) {
  const auto world = static_cast<std::size_t>(size());
  std::vector<std::byte> gathered;
  for (std::size_t offset = 0; offset < send.size(); offset += bucket_bytes) {
    const std::size_t length = std::min(bucket_bytes, send.size() - offset);
    gathered.resize(world * length);
    allgather(send.subspan(offset, length), gathered);
    arrived(offset, length, gathered);
  }
}

namespace {

class SingleProcess final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string name() const override { return "single process"; }
  void broadcast(std::span<std::byte>, int root) override {
    if (root != 0) fail("broadcast: root {} is not a rank of a single process", root);
  }
  void allgather(std::span<const std::byte> send, std::span<std::byte> recv) override {
    if (recv.size() != send.size())
      fail("allgather: {} bytes to receive for {} sent by one process", recv.size(), send.size());
    std::memcpy(recv.data(), send.data(), send.size());
  }
  [[noreturn]] void abort(const std::string& message, int code) override {
    std::fprintf(stderr, "edifice: rank 0 of 1: %s\n", message.c_str());
    std::fflush(stderr);
    std::exit(code);
  }
};

}  // namespace

std::shared_ptr<Communicator> single_process() {
  return std::make_shared<SingleProcess>();
}

std::int64_t micro_shard_key(std::uint64_t dropout_seed, std::uint64_t counter, std::int64_t m) {
  // The step's own key seeds a second draw for the micro-shard.
  return dropout_key(static_cast<std::uint64_t>(dropout_key(dropout_seed, counter)),
                     static_cast<std::uint64_t>(m));
}

SampleRange micro_shard_samples(std::int64_t n, std::int64_t micro_shards, std::int64_t m) {
  return {m * n / micro_shards, (m + 1) * n / micro_shards};
}

// ---------------------------------------------------------------------------------------------
// Packed gradients

GradientLayout::GradientLayout(const std::vector<std::string>& names,
                               const std::vector<Tensor>& like) {
  for (std::size_t i = 0; i < like.size(); ++i) {
    const DType d = like[i].dtype();
    if (d != DType::f32 && d != DType::f64)
      fail(
          "distributed training: the gradient of \"{}\" is {}; only f32 and f64 gradients can "
          "be summed",
          i < names.size() ? names[i] : std::to_string(i), dtype_name(d));
    pieces_.push_back({bytes_, like[i].nbytes(), d, like[i].shape()});
    bytes_ += (like[i].nbytes() + 7) / 8 * 8;
  }
}

namespace {

template <typename T>
void scale_into(const Tensor& g, double weight, std::byte* out) {
  const T w = static_cast<T>(weight);
  const T* src = g.data<T>();
  T* dst = reinterpret_cast<T*>(out);
  for (std::int64_t i = 0; i < g.numel(); ++i) dst[i] = src[i] * w;
}

template <typename T>
void add_elements(std::byte* dst, const std::byte* src, std::size_t bytes) {
  T* d = reinterpret_cast<T*>(dst);
  const T* s = reinterpret_cast<const T*>(src);
  for (std::size_t i = 0; i < bytes / sizeof(T); ++i) d[i] = d[i] + s[i];
}

}  // namespace

void GradientLayout::pack(const std::vector<Tensor>& grads, double weight,
                          std::span<std::byte> out) const {
  if (grads.size() != pieces_.size() || out.size() != bytes_)
    fail("GradientLayout::pack: {} gradients into {} bytes, the layout holds {} in {}",
         grads.size(), out.size(), pieces_.size(), bytes_);
  std::memset(out.data(), 0, out.size());
  for (std::size_t i = 0; i < grads.size(); ++i) {
    const Piece& p = pieces_[i];
    if (grads[i].dtype() != p.dtype || grads[i].shape() != p.shape)
      fail("GradientLayout::pack: gradient {} is {}{}, the layout has {}{}", i,
           dtype_name(grads[i].dtype()), shape_to_string(grads[i].shape()), dtype_name(p.dtype),
           shape_to_string(p.shape));
    if (p.dtype == DType::f32)
      scale_into<float>(grads[i], weight, out.data() + p.offset);
    else
      scale_into<double>(grads[i], weight, out.data() + p.offset);
  }
}

void GradientLayout::zero(std::span<std::byte> out) const {
  std::memset(out.data(), 0, out.size());
}

void GradientLayout::add(std::byte* dst, const std::byte* src, std::size_t offset,
                         std::size_t length) const {
  const std::size_t end = offset + length;
  for (const Piece& p : pieces_) {
    const std::size_t lo = std::max(p.offset, offset), hi = std::min(p.offset + p.bytes, end);
    if (lo >= hi) continue;
    if (p.dtype == DType::f32)
      add_elements<float>(dst + (lo - offset), src + (lo - offset), hi - lo);
    else
      add_elements<double>(dst + (lo - offset), src + (lo - offset), hi - lo);
  }
}

std::vector<Tensor> GradientLayout::unpack(std::span<const std::byte> packed) const {
  if (packed.size() != bytes_)
    fail("GradientLayout::unpack: {} bytes, the layout holds {}", packed.size(), bytes_);
  std::vector<Tensor> out;
  for (const Piece& p : pieces_) {
    Tensor t(p.dtype, p.shape);
    std::memcpy(t.raw_data(), packed.data() + p.offset, p.bytes);
    out.push_back(std::move(t));
  }
  return out;
}

namespace {

// Sum over leaves [lo, hi) into out; scratch[depth] is a buffer per recursion level.
void tree_sum_range(const GradientLayout& layout, const std::vector<const std::byte*>& leaves,
                    std::size_t lo, std::size_t hi, std::size_t offset, std::size_t length,
                    std::byte* out, std::vector<std::vector<std::byte>>& scratch,
                    std::size_t depth) {
  if (hi - lo == 1) {
    std::memcpy(out, leaves[lo], length);
    return;
  }
  const std::size_t mid = lo + (hi - lo) / 2;
  tree_sum_range(layout, leaves, lo, mid, offset, length, out, scratch, depth + 1);
  if (scratch.size() <= depth) scratch.resize(depth + 1);
  scratch[depth].resize(length);
  tree_sum_range(layout, leaves, mid, hi, offset, length, scratch[depth].data(), scratch,
                 depth + 1);
  layout.add(out, scratch[depth].data(), offset, length);
}

}  // namespace

void tree_sum(const GradientLayout& layout, const std::vector<const std::byte*>& leaves,
              std::size_t offset, std::size_t length, std::byte* out) {
  if (leaves.empty()) fail("tree_sum: no leaves");
  std::vector<std::vector<std::byte>> scratch;
  tree_sum_range(layout, leaves, 0, leaves.size(), offset, length, out, scratch, 0);
}

#ifndef EDIFICE_HAVE_MPI
bool mpi_available() {
  return false;
}

std::shared_ptr<Communicator> mpi(const MpiOptions&) {
  fail(
      "nn::mpi(): this build of Edifice has no MPI support (CMake found no MPI or EDIFICE_MPI "
      "is OFF); install libopenmpi-dev (scripts/setup.sh) and reconfigure, or train without "
      "TrainerOptions::distributed");
}
#endif

}  // namespace edifice::nn
