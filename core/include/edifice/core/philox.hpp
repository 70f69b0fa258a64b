#pragma once
/// \file
/// Philox-4x32-10 (Salmon, Moraes, Dror, Shaw: "Parallel Random Numbers: As Easy as 1, 2, 3",
/// SC 2011), the counter-based generator behind `random_uniform`. The
/// interpreter uses it now and the JIT must generate exactly the same words, so everything
/// here is constexpr and free of library types except the tensor-filling helper at the end.
///
/// Mapping used by Edifice for element n (row-major) of stream `stream` under key `seed`:
///   key     = (seed & 0xffffffff, seed >> 32)
///   counter = (n & 0xffffffff, n >> 32, stream & 0xffffffff, stream >> 32)
///   f32     = (word0 >> 8) * 2^-24
///   f64     = (((uint64)word0 << 32 | word1) >> 11) * 2^-53
/// Both conversions are exact and land in [0, 1).

#include <edifice/core/dtype.hpp>
#include <edifice/core/shape.hpp>

#include <array>
#include <cstdint>

namespace edifice::philox {

using Counter = std::array<std::uint32_t, 4>;
using Key = std::array<std::uint32_t, 2>;

inline constexpr std::uint32_t kMultiplier0 = 0xD2511F53u;
inline constexpr std::uint32_t kMultiplier1 = 0xCD9E8D57u;
inline constexpr std::uint32_t kKeyBump0 = 0x9E3779B9u;  // golden ratio
inline constexpr std::uint32_t kKeyBump1 = 0xBB67AE85u;  // sqrt(3) - 1
inline constexpr int kRounds = 10;

/// One S-box round, as Random123's _philox4x32round.
constexpr Counter philox_round(const Counter& c, const Key& k) {
  const std::uint64_t p0 = std::uint64_t{kMultiplier0} * c[0];
  const std::uint64_t p1 = std::uint64_t{kMultiplier1} * c[2];
  const auto hi0 = static_cast<std::uint32_t>(p0 >> 32), lo0 = static_cast<std::uint32_t>(p0);
  const auto hi1 = static_cast<std::uint32_t>(p1 >> 32), lo1 = static_cast<std::uint32_t>(p1);
  return {hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0};
}

/// The full 10-round bijection; the key is bumped between rounds (9 bumps).
constexpr Counter philox4x32_10(Counter c, Key k) {
  for (int r = 0; r < kRounds; ++r) {
    if (r > 0) {
      k[0] += kKeyBump0;
      k[1] += kKeyBump1;
    }
    c = philox_round(c, k);
  }
  return c;
}

constexpr Key key_from_seed(std::uint64_t seed) {
  return {static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32)};
}

constexpr Counter counter_for(std::uint64_t element, std::uint64_t stream) {
  return {static_cast<std::uint32_t>(element), static_cast<std::uint32_t>(element >> 32),
          static_cast<std::uint32_t>(stream), static_cast<std::uint32_t>(stream >> 32)};
}

/// 24 random bits: every value is an exact float in [0, 1).
constexpr float unit_f32(std::uint32_t word0) {
  return static_cast<float>(word0 >> 8) * 0x1p-24f;
}

/// 53 random bits: every value is an exact double in [0, 1).
constexpr double unit_f64(std::uint32_t word0, std::uint32_t word1) {
  const std::uint64_t bits = (std::uint64_t{word0} << 32) | word1;
  return static_cast<double>(bits >> 11) * 0x1p-53;
}

}  // namespace edifice::philox

namespace edifice {
class Tensor;
namespace detail {

/// A tensor of `shape` (static) filled with the uniform samples above; dtype f32 or f64.
/// Defined in random.cpp; the interpreter's `random_uniform` and JIT tests share it.
Tensor random_uniform_tensor(DType dtype, const Shape& shape, std::uint64_t seed,
                             std::uint64_t stream);

}  // namespace detail
}  // namespace edifice
