#pragma once
/// \file
/// xtensor views of a Tensor, for code that prefers array expressions to index loops (the
/// reference interpreter). Kept out of tensor.hpp because xtensor headers are slow to compile.

#include <edifice/core/tensor.hpp>

#include <xtensor/xadapt.hpp>

namespace edifice {

/// A mutable xtensor view (no copy) of `t`'s elements with t's shape. T must match the dtype.
template <class T> auto xt_view(Tensor& t) {
  std::vector<std::size_t> shape(t.shape().begin(), t.shape().end());
  return xt::adapt(t.data<T>(), static_cast<std::size_t>(t.numel()), xt::no_ownership(), shape);
}

/// A read-only xtensor view (no copy) of `t`'s elements.
template <class T> auto xt_view(const Tensor& t) {
  std::vector<std::size_t> shape(t.shape().begin(), t.shape().end());
  return xt::adapt(t.data<T>(), static_cast<std::size_t>(t.numel()), xt::no_ownership(), shape);
}

}  // namespace edifice
