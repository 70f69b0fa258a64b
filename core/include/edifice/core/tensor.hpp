#pragma once
/// \file
/// `Tensor`: an owning, reference-counted, 64-byte-aligned, row-major (C order, contiguous)
/// buffer with a shape and a dtype. Copies share the buffer (like a PyTorch tensor); `clone()`
/// copies the data. Element access is checked: a wrong dtype or an index out of range throws
/// edifice::Error naming both.

#include <edifice/core/dtype.hpp>
#include <edifice/core/error.hpp>
#include <edifice/core/shape.hpp>

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace edifice {

class Tensor {
 public:
  /// Alignment of every buffer, in bytes: enough for AVX-512 loads.
  static constexpr std::size_t kAlignment = 64;

  /// An empty f32 tensor of shape [0].
  Tensor();
  /// A zero-filled tensor. Every extent must be >= 0 (no dynamic extents in real data).
  Tensor(DType dtype, Shape shape);

  static Tensor zeros(DType dtype, Shape shape) { return Tensor(dtype, std::move(shape)); }
  /// A tensor whose contents are unspecified: for buffers that are about to be overwritten
  /// entirely (the JIT's outputs and arena), where zero-filling would be wasted work.
  static Tensor uninitialized(DType dtype, Shape shape);
  /// Every element set to `value` converted to the dtype.
  static Tensor full(DType dtype, Shape shape, double value);
  /// A rank-0 tensor.
  template <class T> static Tensor scalar(T value) {
    Tensor t(dtype_of<T>(), {});
    *t.data<T>() = value;
    return t;
  }
  /// A tensor holding a copy of `values`, which must have exactly numel(shape) elements.
  template <class T> static Tensor from_vector(Shape shape, const std::vector<T>& values) {
    Tensor t(dtype_of<T>(), std::move(shape));
    if (static_cast<std::int64_t>(values.size()) != t.numel())
      fail("Tensor::from_vector: {} values given for shape {} ({} elements)", values.size(),
           shape_to_string(t.shape()), t.numel());
    std::copy(values.begin(), values.end(), t.data<T>());
    return t;
  }

  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  std::int64_t rank() const { return static_cast<std::int64_t>(shape_.size()); }
  std::int64_t dim(std::int64_t axis) const;
  std::int64_t numel() const { return numel_; }
  std::size_t nbytes() const { return static_cast<std::size_t>(numel_) * dtype_size(dtype_); }

  /// Typed pointer to the first element; throws if T does not match the dtype.
  template <class T> T* data() {
    check_dtype(dtype_of<T>(), "data");
    return static_cast<T*>(raw_data());
  }
  template <class T> const T* data() const {
    check_dtype(dtype_of<T>(), "data");
    return static_cast<const T*>(raw_data());
  }
  void* raw_data() { return buffer_.get(); }
  const void* raw_data() const { return buffer_.get(); }

  /// Checked element access by multi-index.
  template <class T> T& at(std::span<const std::int64_t> index) {
    check_dtype(dtype_of<T>(), "at");
    return static_cast<T*>(raw_data())[flat_index(index)];
  }
  template <class T> const T& at(std::span<const std::int64_t> index) const {
    check_dtype(dtype_of<T>(), "at");
    return static_cast<const T*>(raw_data())[flat_index(index)];
  }
  template <class T> T& at(std::initializer_list<std::int64_t> index) {
    return at<T>(std::span<const std::int64_t>(index.begin(), index.size()));
  }
  template <class T> const T& at(std::initializer_list<std::int64_t> index) const {
    return at<T>(std::span<const std::int64_t>(index.begin(), index.size()));
  }

  /// Element `flat` (row-major) converted to double, whatever the dtype. For tests and printing.
  double get_as_double(std::int64_t flat) const;
  /// Sets element `flat` from a double, converting to the dtype.
  void set_from_double(std::int64_t flat, double value);

  /// Same data, new shape (shares the buffer). The element counts must match.
  Tensor reshape(Shape shape) const;
  /// Rows [first, first + count) of axis 0, sharing the buffer (no copy): writes through either
  /// are seen by both. Throws unless the range is inside the tensor and the view starts on a
  /// kAlignment boundary (first x the row's bytes), since kernels rely on aligned buffers.
  Tensor slice_rows(std::int64_t first, std::int64_t count) const;
  /// A deep copy.
  Tensor clone() const;
  /// A converted copy (C++ static_cast semantics per element).
  Tensor cast(DType dtype) const;

  /// True when dtype, shape and every byte are equal.
  bool bitwise_equal(const Tensor& other) const;

  /// "f32[2,3]{1, 2, 3, 4, 5, 6}", abbreviated past `max_elements`.
  std::string to_string(std::int64_t max_elements = 16) const;

 private:
  struct NoFill {};
  Tensor(DType dtype, Shape shape, NoFill);
  void check_dtype(DType wanted, const char* accessor) const;
  std::int64_t flat_index(std::span<const std::int64_t> index) const;

  DType dtype_ = DType::f32;
  Shape shape_;
  std::int64_t numel_ = 0;
  std::shared_ptr<std::byte> buffer_;
};

}  // namespace edifice
