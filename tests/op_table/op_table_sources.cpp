// Op-table entries: the source ops (parameter, constant, iota, random_uniform).
#include "op_table_harness.hpp"

#include <catch2/catch.hpp>

#include <array>
#include <cmath>

namespace edifice::optable {

// ---------------------------------------------------------------------------------------------
// Sources

namespace {

Vals identity_build(const Vals& in, DType) {
  return in;
}
Arrs identity_ref(const Arrs& in, DType) {
  return in;
}

/// A tensor of dtype `dtype` holding `values` (converted like Tensor::set_from_double).
Tensor tensor_of(DType dtype, Shape shape, const std::vector<double>& values) {
  Tensor t(dtype, std::move(shape));
  for (std::size_t i = 0; i < values.size(); ++i)
    t.set_from_double(static_cast<std::int64_t>(i), values[i]);
  return t;
}

Arr arr_of(DType dtype, Shape shape, std::vector<double> values) {
  for (double& v : values) v = round_to(dtype, v);
  return Arr(dtype, std::move(shape), std::move(values));
}

OpEntry parameter_entry() {
  OpEntry e{Op::parameter, {}, {}, {}};
  e.no_grad_reason =
      "a graph input: nothing to differentiate inside it; gradients with respect to "
      "parameters are what every other entry's gradient check computes";
  e.samples.push_back(Sample("f[3,5] passes through", {fin({3, 5})}, identity_build, identity_ref));
  e.samples.push_back(Sample("rank 0", {fin({})}, identity_build, identity_ref));
  e.samples.push_back(Sample("size 1 [1,1]", {fin({1, 1})}, identity_build, identity_ref));
  e.samples.push_back(
      Sample("i32[7]", {typed(DType::i32, {7}, small_ints(-9, 9))}, identity_build, identity_ref));
  e.samples.push_back(
      Sample("i64 and u8 mask",
             {typed(DType::i64, {2, 3}, small_ints(-9, 9)), typed(DType::u8, {5}, u8_mask())},
             identity_build, identity_ref));
  e.samples.push_back(
      Sample("dynamic batch [?,3] bound to 4", {dyn(fin({4, 3}))}, identity_build, identity_ref));
  // The same input returned twice and inputs in reverse order: outputs are values, not slots.
  e.samples.push_back(Sample(
      "outputs reorder and repeat inputs", {fin({2}), fin({3})},
      [](const Vals& in, DType) {
        return Vals{in[1], in[0], in[1]};
      },
      [](const Arrs& in, DType) {
        return Arrs{in[1], in[0], in[1]};
      }));
  e.errors.push_back(
      {"negative extent", "parameter: \"x\" has shape [2,-3] with a negative extent", [](Site& at) {
         at = EDF_HERE, ops::parameter("x", DType::f32, {2, -3});
       }});
  return e;
}

OpEntry constant_entry() {
  OpEntry e{Op::constant, {}, {}, {}};
  e.no_grad_reason = "a constant has no inputs to differentiate";
  static const std::vector<double> six = {0.5, -1.25, 3.0078125, 1e-3, -7.0, 2.2};
  e.samples.push_back(Sample(
      "float [2,3]", {},
      [](const Vals&, DType ft) {
        return Vals{ops::constant(tensor_of(ft, {2, 3}, six))};
      },
      [](const Arrs&, DType ft) {
        return Arrs{arr_of(ft, {2, 3}, six)};
      }));
  e.samples.push_back(Sample(
      "i32 [6] and u8 [3]", {},
      [](const Vals&, DType) {
        return Vals{ops::constant(tensor_of(DType::i32, {6}, {3, -1, 0, 7, -100000, 42})),
                    ops::constant(tensor_of(DType::u8, {3}, {0, 1, 255}))};
      },
      [](const Arrs&, DType) {
        return Arrs{arr_of(DType::i32, {6}, {3, -1, 0, 7, -100000, 42}),
                    arr_of(DType::u8, {3}, {0, 1, 255})};
      }));
  e.samples.push_back(Sample(
      "scalar(2.5) is rank 0", {}, [](const Vals&, DType ft) { return Vals{ops::scalar(2.5, ft)}; },
      [](const Arrs&, DType ft) { return Arrs{arr_of(ft, {}, {2.5})}; }));
  e.samples.push_back(Sample(
      "full([2,1,3], -0.75)", {},
      [](const Vals&, DType ft) {
        return Vals{ops::full({2, 1, 3}, -0.75, ft)};
      },
      [](const Arrs&, DType ft) {
        return Arrs{Arr(ft, {2, 1, 3}, std::vector<double>(6, -0.75))};
      }));
  // full_like / zeros_like of a dynamic input: the constant takes the bound batch extent.
  e.samples.push_back(Sample(
      "full_like and zeros_like of dynamic [?,2] bound to 3", {dyn(fin({3, 2}))},
      [](const Vals& in, DType) {
        return Vals{ops::full_like(in[0], 1.5), ops::zeros_like(in[0])};
      },
      [](const Arrs& in, DType ft) {
        return Arrs{Arr(ft, in[0].shape, std::vector<double>(6, 1.5)), Arr(ft, in[0].shape)};
      }));
  // Adding a constant to an input: the constant's values reach the consumer unchanged.
  e.samples.push_back(Sample(
      "x + constant", {fin({2, 3})},
      [](const Vals& in, DType ft) {
        return Vals{ops::add(in[0], ops::constant(tensor_of(ft, {2, 3}, six)))};
      },
      [](const Arrs& in, DType ft) {
        Arr c = arr_of(ft, {2, 3}, six);
        return Arrs{zip(in[0], c, [ft](double a, double b) { return round_to(ft, a + b); })};
      }));
  // ops::full is the constant builder users call with shapes; a bad shape is reported by the
  // broadcast it expands to.
  e.errors.push_back(
      {"full with a negative extent", "full: shape [2,-3] has a negative extent", [](Site& at) {
         at = EDF_HERE, ops::full({2, -3}, 1.0, DType::f32);
       }});
  return e;
}

OpEntry iota_entry() {
  OpEntry e{Op::iota, {}, {}, {}};
  e.no_grad_reason = "an index generator without inputs";
  auto ref = [](Shape shape, int axis, std::optional<DType> dtype) {
    return [=](const Arrs&, DType ft) {
      Arr out(dtype.value_or(ft), shape);
      for_each_index(shape, [&](const Index& i) { out.at(i) = static_cast<double>(i[axis]); });
      return Arrs{out};
    };
  };
  e.samples.push_back(Sample(
      "float [3,4] axis 1", {},
      [](const Vals&, DType ft) {
        return Vals{ops::iota({3, 4}, 1, ft)};
      },
      ref({3, 4}, 1, {})));
  e.samples.push_back(Sample(
      "i32 [3,4] axis 0", {},
      [](const Vals&, DType) {
        return Vals{ops::iota({3, 4}, 0, DType::i32)};
      },
      ref({3, 4}, 0, DType::i32)));
  e.samples.push_back(Sample(
      "i64 [7]", {}, [](const Vals&, DType) { return Vals{ops::iota({7}, 0, DType::i64)}; },
      ref({7}, 0, DType::i64)));
  e.samples.push_back(Sample(
      "u8 [1,5]", {},
      [](const Vals&, DType) {
        return Vals{ops::iota({1, 5}, 1, DType::u8)};
      },
      ref({1, 5}, 1, DType::u8)));
  e.samples.push_back(Sample(
      "negative axis -2 of [2,3,1]", {},
      [](const Vals&, DType ft) {
        return Vals{ops::iota({2, 3, 1}, -2, ft)};
      },
      ref({2, 3, 1}, 1, {})));
  e.errors.push_back(
      {"axis out of range", "iota: axis 2 is out of range for shape [3,4]", [](Site& at) {
         at = EDF_HERE, ops::iota({3, 4}, 2, DType::f32);
       }});
  e.errors.push_back({"negative extent", "iota: shape [-2] has a negative extent",
                      [](Site& at) { at = EDF_HERE, ops::iota({-2}, 0, DType::i32); }});
  return e;
}

// Philox-4x32-10 written out again from the paper (Salmon et al., SC 2011) and Random123,
// independently of core/include/edifice/core/philox.hpp, plus the mapping philox.hpp documents:
//   key = (seed lo, seed hi), counter = (n lo, n hi, stream lo, stream hi),
//   f32 = (w0 >> 8) * 2^-24, f64 = ((w0 << 32 | w1) >> 11) * 2^-53.
using Words = std::array<std::uint32_t, 4>;

Words philox_reference(Words c, std::uint32_t k0, std::uint32_t k1) {
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
    std::uint64_t p0 = 0xD2511F53ull * c[0], p1 = 0xCD9E8D57ull * c[2];
    c = {static_cast<std::uint32_t>(p1 >> 32) ^ c[1] ^ k0, static_cast<std::uint32_t>(p1),
         static_cast<std::uint32_t>(p0 >> 32) ^ c[3] ^ k1, static_cast<std::uint32_t>(p0)};
  }
  return c;
}

/// Guards the reference itself with Random123's known-answer vectors.
void check_philox_reference() {
  auto kat = [](Words c, std::uint32_t k0, std::uint32_t k1, Words want) {
    if (philox_reference(c, k0, k1) != want)
      throw std::logic_error("op table: the test's own Philox fails a known-answer vector");
  };
  kat({0, 0, 0, 0}, 0, 0, {0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u});
  kat({0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}, 0xffffffffu, 0xffffffffu,
      {0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu});
  kat({0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}, 0xa4093822u, 0x299f31d0u,
      {0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u});
}

Arr uniform_reference(DType ft, const Shape& shape, std::int64_t seed, std::int64_t stream) {
  check_philox_reference();
  auto key = static_cast<std::uint64_t>(seed);
  auto st = static_cast<std::uint64_t>(stream);
  Arr out(ft, shape);
  for (std::int64_t n = 0; n < out.numel(); ++n) {
    auto un = static_cast<std::uint64_t>(n);
    Words w =
        philox_reference({static_cast<std::uint32_t>(un), static_cast<std::uint32_t>(un >> 32),
                          static_cast<std::uint32_t>(st), static_cast<std::uint32_t>(st >> 32)},
                         static_cast<std::uint32_t>(key), static_cast<std::uint32_t>(key >> 32));
    out[n] = ft == DType::f32
                 ? static_cast<double>(w[0] >> 8) * 0x1p-24
                 : static_cast<double>(((std::uint64_t{w[0]} << 32) | w[1]) >> 11) * 0x1p-53;
  }
  return out;
}

Sample uniform_sample(std::string label, Domain seed, Shape shape, std::int64_t stream) {
  return Sample(
      std::move(label), {typed(DType::i64, {}, std::move(seed))},
      [shape, stream](const Vals& in, DType ft) {
        return Vals{ops::random_uniform(in[0], shape, ft, stream)};
      },
      [shape, stream](const Arrs& in, DType ft) {
        return Arrs{uniform_reference(ft, shape, static_cast<std::int64_t>(in[0][0]), stream)};
      });
}

// Beyond the exact values: the contract's properties (range, counter scheme, streams, seeds,
// rough uniformity), which hold whatever the word-to-float mapping.
void check_uniform(const Arr& a, DType ft) {
  CHECK(dtype_name(a.dtype) == dtype_name(ft));
  for (std::int64_t i = 0; i < a.numel(); ++i) {
    INFO("element " << i << " = " << a[i]);
    REQUIRE(a[i] >= 0.0);
    REQUIRE(a[i] < 1.0);
  }
}

std::int64_t count_equal(const Arr& a, const Arr& b, std::int64_t n) {
  std::int64_t same = 0;
  for (std::int64_t i = 0; i < n; ++i) same += a[i] == b[i];
  return same;
}

OpEntry random_uniform_entry() {
  OpEntry e{Op::random_uniform, {}, {}, {}};
  e.no_grad_reason = "samples are not a differentiable function of the (i64) seed";
  In seed = typed(DType::i64, {}, small_ints(0, 1000));
  e.samples.push_back(
      uniform_sample("exact values: [3,5], stream 0", small_ints(0, 1000), {3, 5}, 0));
  e.samples.push_back(uniform_sample("exact values: [7], stream 7", small_ints(0, 1000), {7}, 7));
  // Negative seeds use all 64 key bits; a stream above 2^32 uses the counter's last word.
  e.samples.push_back(uniform_sample("exact values: negative seed, stream 2^32 + 5",
                                     small_ints(-3, -1), {2, 3}, (std::int64_t{1} << 32) + 5));
  e.samples.push_back(uniform_sample("exact values: rank 0", small_ints(0, 1000), {}, 1));
  e.samples.push_back(
      Sample(
          "1000 samples: range, counter scheme, streams, seeds", {seed},
          [](const Vals& in, DType ft) {
            Value other_seed = ops::constant(Tensor::scalar<std::int64_t>(123456789));
            return Vals{ops::random_uniform(in[0], {1000}, ft, 0),
                        ops::random_uniform(in[0], {40, 25}, ft, 0),
                        ops::random_uniform(in[0], {7}, ft, 0),
                        ops::random_uniform(in[0], {1000}, ft, 1),
                        ops::random_uniform(other_seed, {1000}, ft, 0),
                        ops::random_uniform(in[0], {1000}, ft, 0)};
          },
          nullptr)
          .with_property([](const Arrs&, const Arrs& out, DType ft) {
            for (const Arr& a : out) check_uniform(a, ft);
            // Element n depends only on (seed, stream, n): the shape does not matter.
            CHECK(count_equal(out[0], out[1], 1000) == 1000);
            CHECK(count_equal(out[0], out[2], 7) == 7);
            // Same node twice: same values (no hidden state).
            CHECK(count_equal(out[0], out[5], 1000) == 1000);
            // Another stream or another seed: a different sequence.
            CHECK(count_equal(out[0], out[3], 1000) < 10);
            CHECK(count_equal(out[0], out[4], 1000) < 10);
            // Uniformity, loosely: mean within ~5.5 sd, deciles within ~5 sd of 100.
            double mean = 0;
            std::vector<int> deciles(10, 0);
            for (double x : out[0].v) {
              mean += x / 1000.0;
              ++deciles[static_cast<std::size_t>(std::min(9.0, std::floor(x * 10)))];
            }
            CHECK(std::abs(mean - 0.5) < 0.05);
            for (int d : deciles) {
              INFO("decile counts " << Catch::Detail::stringify(deciles));
              CHECK(d > 50);
              CHECK(d < 150);
            }
          }));
  e.samples.push_back(Sample(
                          "rank 0 and [1] agree", {seed},
                          [](const Vals& in, DType ft) {
                            return Vals{ops::random_uniform(in[0], {}, ft, 3),
                                        ops::random_uniform(in[0], {1}, ft, 3)};
                          },
                          nullptr)
                          .with_property([](const Arrs&, const Arrs& out, DType ft) {
                            check_uniform(out[0], ft);
                            CHECK(out[0].shape == Shape{});
                            CHECK(out[0][0] == out[1][0]);
                          }));
  e.errors.push_back(
      {"f32 seed", "random_uniform: the seed must be an i64 scalar, got f32[]", [](Site& at) {
         Value s = param(DType::f32, {});
         at = EDF_HERE, ops::random_uniform(s, {4}, DType::f32, 0);
       }});
  e.errors.push_back(
      {"integer result dtype",
       "random_uniform: the result dtype must be floating-point (f32 or f64), got i32[4]",
       [](Site& at) {
         Value s = param(DType::i64, {});
         at = EDF_HERE, ops::random_uniform(s, {4}, DType::i32, 0);
       }});
  return e;
}

}  // namespace

void add_source_entries(Table& t) {
  t.push_back(parameter_entry());
  t.push_back(constant_entry());
  t.push_back(iota_entry());
  t.push_back(random_uniform_entry());
}

}  // namespace edifice::optable
