#include <edifice/core/tensor.hpp>

#include <cstdlib>
#include <cstring>
#include <limits>

namespace edifice {
namespace {

std::shared_ptr<std::byte> allocate(std::size_t bytes, bool zero = true) {
  // Round up so aligned_alloc's size requirement holds and vector loads past a tail stay inside.
  std::size_t rounded = (bytes + Tensor::kAlignment - 1) / Tensor::kAlignment * Tensor::kAlignment;
  if (rounded == 0) rounded = Tensor::kAlignment;
  void* p = std::aligned_alloc(Tensor::kAlignment, rounded);
  if (!p) fail("Tensor: cannot allocate {} bytes", bytes);
  if (zero) std::memset(p, 0, rounded);
  return std::shared_ptr<std::byte>(static_cast<std::byte*>(p), [](std::byte* q) { std::free(q); });
}

std::int64_t checked_numel(const Shape& shape) {
  std::int64_t n = 1;
  for (auto d : shape) {
    if (d < 0)
      fail("Tensor: shape {} has a negative or dynamic extent; tensors hold concrete data",
           shape_to_string(shape));
    if (d != 0 && n > std::numeric_limits<std::int64_t>::max() / 8 / d)
      fail("Tensor: shape {} is too large", shape_to_string(shape));
    n *= d;
  }
  return n;
}

}  // namespace

Tensor::Tensor() : Tensor(DType::f32, Shape{0}) {}

Tensor::Tensor(DType dtype, Shape shape)
    : dtype_(dtype), shape_(std::move(shape)), numel_(checked_numel(shape_)) {
  buffer_ = allocate(nbytes());
}

Tensor::Tensor(DType dtype, Shape shape, NoFill)
    : dtype_(dtype), shape_(std::move(shape)), numel_(checked_numel(shape_)) {
  buffer_ = allocate(nbytes(), /*zero=*/false);
}

Tensor Tensor::uninitialized(DType dtype, Shape shape) {
  return Tensor(dtype, std::move(shape), NoFill{});
}

Tensor Tensor::full(DType dtype, Shape shape, double value) {
  Tensor t(dtype, std::move(shape));
  visit_dtype(dtype, [&]<class T>() {
    T* p = t.data<T>();
    for (std::int64_t i = 0; i < t.numel(); ++i) p[i] = static_cast<T>(value);
  });
  return t;
}

std::int64_t Tensor::dim(std::int64_t axis) const {
  int a = normalize_axis(axis, rank());
  if (a < 0)
    fail("Tensor::dim: axis {} is out of range for shape {}", axis, shape_to_string(shape_));
  return shape_[a];
}

double Tensor::get_as_double(std::int64_t flat) const {
  if (flat < 0 || flat >= numel_)
    fail("Tensor: flat index {} is out of range for shape {} ({} elements)", flat,
         shape_to_string(shape_), numel_);
  return visit_dtype(dtype_, [&]<class T>() {
    return static_cast<double>(static_cast<const T*>(raw_data())[flat]);
  });
}

void Tensor::set_from_double(std::int64_t flat, double value) {
  if (flat < 0 || flat >= numel_)
    fail("Tensor: flat index {} is out of range for shape {} ({} elements)", flat,
         shape_to_string(shape_), numel_);
  visit_dtype(dtype_,
              [&]<class T>() { static_cast<T*>(raw_data())[flat] = static_cast<T>(value); });
}

Tensor Tensor::reshape(Shape shape) const {
  Tensor t = *this;
  std::int64_t n = checked_numel(shape);
  if (n != numel_)
    fail("Tensor::reshape: cannot reshape {} ({} elements) to {} ({} elements)",
         shape_to_string(shape_), numel_, shape_to_string(shape), n);
  t.shape_ = std::move(shape);
  return t;
}

Tensor Tensor::slice_rows(std::int64_t first, std::int64_t count) const {
  if (rank() == 0) fail("Tensor::slice_rows: a rank-0 tensor has no rows");
  if (first < 0 || count < 0 || first + count > shape_[0])
    fail("Tensor::slice_rows: rows [{}, {}) are outside {} (axis 0 has {})", first, first + count,
         shape_to_string(shape_), shape_[0]);
  const std::size_t row_bytes = shape_[0] == 0 ? 0 : nbytes() / static_cast<std::size_t>(shape_[0]);
  const std::size_t offset = static_cast<std::size_t>(first) * row_bytes;
  if (offset % kAlignment != 0)
    fail("Tensor::slice_rows: rows from {} of {} start {} bytes in, not on a {}-byte boundary",
         first, shape_to_string(shape_), offset, kAlignment);
  Tensor t = *this;
  t.shape_[0] = count;
  t.numel_ = checked_numel(t.shape_);
  t.buffer_ = std::shared_ptr<std::byte>(buffer_, buffer_.get() + offset);
  return t;
}

Tensor Tensor::clone() const {
  Tensor t(dtype_, shape_);
  if (nbytes()) std::memcpy(t.raw_data(), raw_data(), nbytes());
  return t;
}

Tensor Tensor::cast(DType dtype) const {
  Tensor out(dtype, shape_);
  visit_dtype(dtype_, [&]<class S>() {
    visit_dtype(dtype, [&]<class D>() {
      const S* src = static_cast<const S*>(raw_data());
      D* dst = static_cast<D*>(out.raw_data());
      for (std::int64_t i = 0; i < numel_; ++i) dst[i] = static_cast<D>(src[i]);
    });
  });
  return out;
}

bool Tensor::bitwise_equal(const Tensor& other) const {
  return dtype_ == other.dtype_ && shape_ == other.shape_ &&
         (nbytes() == 0 || std::memcmp(raw_data(), other.raw_data(), nbytes()) == 0);
}

std::string Tensor::to_string(std::int64_t max_elements) const {
  std::string out = fmt::format("{}{}{{", dtype_name(dtype_), shape_to_string(shape_));
  std::int64_t shown = std::min(numel_, max_elements);
  for (std::int64_t i = 0; i < shown; ++i) {
    if (i) out += ", ";
    out += fmt::format("{:g}", get_as_double(i));
  }
  if (shown < numel_) out += fmt::format(", ... ({} more)", numel_ - shown);
  return out + "}";
}

void Tensor::check_dtype(DType wanted, const char* accessor) const {
  if (wanted != dtype_)
    fail("Tensor::{}: the tensor holds {} but {} was requested", accessor, dtype_name(dtype_),
         dtype_name(wanted));
}

std::int64_t Tensor::flat_index(std::span<const std::int64_t> index) const {
  if (static_cast<std::int64_t>(index.size()) != rank())
    fail("Tensor::at: {} indices given for a rank-{} tensor of shape {}", index.size(), rank(),
         shape_to_string(shape_));
  std::int64_t flat = 0;
  for (std::size_t i = 0; i < index.size(); ++i) {
    if (index[i] < 0 || index[i] >= shape_[i])
      fail("Tensor::at: index {} on axis {} is out of range for shape {}", index[i], i,
           shape_to_string(shape_));
    flat = flat * shape_[i] + index[i];
  }
  return flat;
}

}  // namespace edifice
