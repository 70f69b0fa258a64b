#pragma once
// Helpers shared by the test suites: error messages, random tensors, closeness.

#include <edifice/core/error.hpp>
#include <edifice/core/tensor.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>

namespace edifice::test {

/// The message of the edifice::Error that f() throws, or "<no error>".
std::string error_of(auto&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}

/// The first line of error_of(f): the message without the "where" lines after it.
std::string first_line_of_error(auto&& f) {
  const std::string s = error_of(f);
  return s.substr(0, s.find('\n'));
}

inline bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

/// Uniform in [lo, hi) for float dtypes; integers in [-9, 9] ([0, 18] for u8) otherwise.
/// The same seed gives the same tensor.
inline Tensor random_tensor(DType d, const Shape& shape, std::uint32_t seed, double lo = -1.0,
                            double hi = 1.0) {
  Tensor t(d, shape);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> u(lo, hi);
  std::uniform_int_distribution<int> small(-9, 9);
  for (std::int64_t i = 0; i < t.numel(); ++i) {
    if (is_floating(d))
      t.set_from_double(i, u(rng));
    else
      t.set_from_double(i, d == DType::u8 ? small(rng) + 9 : small(rng));
  }
  return t;
}

/// The largest |a_i - b_i|; the shapes must agree.
inline double max_abs_diff(const Tensor& a, const Tensor& b) {
  REQUIRE(a.shape() == b.shape());
  double m = 0;
  for (std::int64_t i = 0; i < a.numel(); ++i)
    m = std::max(m, std::abs(a.get_as_double(i) - b.get_as_double(i)));
  return m;
}

}  // namespace edifice::test
