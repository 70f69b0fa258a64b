// Philox-backed uniform sampling, plus compile-time known-answer checks of the generator.

#include <edifice/core/philox.hpp>

#include <edifice/core/error.hpp>
#include <edifice/core/tensor.hpp>

namespace edifice {
namespace {

using philox::Counter;
using philox::Key;
using philox::philox4x32_10;

// Known-answer vectors from Random123's kat_vectors (philox4x32_10). If any of these fail the
// library does not build, so a wrong generator can never ship.
static_assert(philox4x32_10(Counter{0, 0, 0, 0}, Key{0, 0}) ==
              Counter{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u});
static_assert(philox4x32_10(Counter{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu},
                            Key{0xffffffffu, 0xffffffffu}) ==
              Counter{0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu});
static_assert(philox4x32_10(Counter{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u},
                            Key{0xa4093822u, 0x299f31d0u}) ==
              Counter{0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u});

// The conversions hit both ends of [0, 1) exactly and never reach 1.
static_assert(philox::unit_f32(0) == 0.0f && philox::unit_f32(0xffffffffu) < 1.0f);
static_assert(philox::unit_f64(0, 0) == 0.0 && philox::unit_f64(0xffffffffu, 0xffffffffu) < 1.0);

}  // namespace

namespace detail {

Tensor random_uniform_tensor(DType dtype, const Shape& shape, std::uint64_t seed,
                             std::uint64_t stream) {
  if (!is_floating(dtype))
    fail("random uniform samples must be f32 or f64, not {}", dtype_name(dtype));
  Tensor out(dtype, shape);
  const Key key = philox::key_from_seed(seed);
  const auto n = static_cast<std::uint64_t>(out.numel());
  if (dtype == DType::f32) {
    float* dst = out.data<float>();
    for (std::uint64_t i = 0; i < n; ++i)
      dst[i] = philox::unit_f32(philox4x32_10(philox::counter_for(i, stream), key)[0]);
  } else {
    double* dst = out.data<double>();
    for (std::uint64_t i = 0; i < n; ++i) {
      const Counter words = philox4x32_10(philox::counter_for(i, stream), key);
      dst[i] = philox::unit_f64(words[0], words[1]);
    }
  }
  return out;
}

}  // namespace detail
}  // namespace edifice
