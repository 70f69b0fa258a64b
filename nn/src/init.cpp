#include <edifice/core/philox.hpp>
#include <edifice/nn/init.hpp>

#include <cmath>
#include <numbers>
#include <vector>

namespace edifice::nn {
namespace {

// Uniform doubles in [0, 1) for element n of (seed, stream): the Philox mapping of philox.hpp.
double uniform01(std::uint64_t seed, std::uint64_t stream, std::uint64_t n) {
  auto c = philox::philox4x32_10(philox::counter_for(n, stream), philox::key_from_seed(seed));
  return philox::unit_f64(c[0], c[1]);
}

// Standard normal by Box-Muller from two uniforms of the same counter.
double standard_normal(std::uint64_t seed, std::uint64_t stream, std::uint64_t n) {
  auto c = philox::philox4x32_10(philox::counter_for(n, stream), philox::key_from_seed(seed));
  double u1 = 1.0 - philox::unit_f64(c[0], c[1]);  // (0, 1]: log is finite
  double u2 = philox::unit_f64(c[2], c[3]);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
}

std::pair<double, double> fans(const Shape& shape) {
  if (shape.empty()) return {1, 1};
  if (shape.size() == 1) return {double(shape[0]), double(shape[0])};
  double receptive = 1;
  for (std::size_t i = 0; i + 2 < shape.size(); ++i) receptive *= double(shape[i]);
  return {double(shape[shape.size() - 2]) * receptive, double(shape.back()) * receptive};
}

// rows x cols matrix with orthonormal rows (rows <= cols) or columns (rows > cols).
std::vector<double> orthogonal(std::int64_t rows, std::int64_t cols, std::uint64_t seed,
                               std::uint64_t stream) {
  const bool transpose = rows > cols;
  const std::int64_t r = transpose ? cols : rows, c = transpose ? rows : cols;
  std::vector<double> m(static_cast<std::size_t>(r * c));
  for (std::int64_t i = 0; i < r * c; ++i) m[i] = standard_normal(seed, stream, std::uint64_t(i));
  // Modified Gram-Schmidt over the r rows of length c (r <= c, so they can be independent).
  for (std::int64_t i = 0; i < r; ++i) {
    double* v = &m[i * c];
    for (std::int64_t j = 0; j < i; ++j) {
      const double* u = &m[j * c];
      double dot = 0;
      for (std::int64_t k = 0; k < c; ++k) dot += v[k] * u[k];
      for (std::int64_t k = 0; k < c; ++k) v[k] -= dot * u[k];
    }
    double norm = 0;
    for (std::int64_t k = 0; k < c; ++k) norm += v[k] * v[k];
    norm = std::sqrt(norm);
    for (std::int64_t k = 0; k < c; ++k) v[k] = norm > 0 ? v[k] / norm : 0;
  }
  if (!transpose) return m;
  std::vector<double> t(m.size());
  for (std::int64_t i = 0; i < r; ++i)
    for (std::int64_t k = 0; k < c; ++k) t[k * r + i] = m[i * c + k];
  return t;
}

}  // namespace

std::uint64_t stream_for(const std::string& name) {
  std::uint64_t h = 1469598103934665603ull;
  for (unsigned char ch : name) h = (h ^ ch) * 1099511628211ull;
  return h >> 1;
}

Tensor initialize(const Initializer& init, const Shape& shape, DType dtype, std::uint64_t seed,
                  std::uint64_t stream) {
  Tensor t(dtype, shape);
  const std::int64_t n = t.numel();
  using K = Initializer::Kind;
  switch (init.kind) {
    case K::zeros:
      break;
    case K::ones:
    case K::constant: {
      double v = init.kind == K::ones ? 1.0 : init.scale;
      for (std::int64_t i = 0; i < n; ++i) t.set_from_double(i, v);
      break;
    }
    case K::glorot_uniform:
    case K::uniform: {
      double limit = init.scale;
      if (init.kind == K::glorot_uniform) {
        auto [fan_in, fan_out] = fans(shape);
        limit = std::sqrt(6.0 / (fan_in + fan_out));
      }
      for (std::int64_t i = 0; i < n; ++i)
        t.set_from_double(i, (2.0 * uniform01(seed, stream, std::uint64_t(i)) - 1.0) * limit);
      break;
    }
    case K::lstm_bias: {
      const std::int64_t units = n / 4;
      for (std::int64_t i = units; i < 2 * units; ++i) t.set_from_double(i, init.scale);
      break;
    }
    case K::normal:
      for (std::int64_t i = 0; i < n; ++i)
        t.set_from_double(i, init.scale * standard_normal(seed, stream, std::uint64_t(i)));
      break;
    case K::orthogonal: {
      std::int64_t cols = shape.empty() ? 1 : shape.back();
      std::int64_t rows = cols == 0 ? 0 : n / cols;
      auto m = orthogonal(rows, cols, seed, stream);
      for (std::int64_t i = 0; i < n; ++i) t.set_from_double(i, init.scale * m[i]);
      break;
    }
  }
  return t;
}

}  // namespace edifice::nn
