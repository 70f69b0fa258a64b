// Reference interpreter: hand-computed values for the ops with tricky indexing, finite-difference
// checks of the three hand-written backward ops, Philox known answers and input validation.
// The exhaustive per-op table lives in tests/op_table.

#include <catch2/catch.hpp>

#include <edifice/core/interpreter.hpp>
#include <edifice/core/ops.hpp>

#include <edifice/core/philox.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

using namespace edifice;
using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;

namespace {

std::vector<double> values_of(const Tensor& t) {
  std::vector<double> v;
  for (std::int64_t i = 0; i < t.numel(); ++i) v.push_back(t.get_as_double(i));
  return v;
}

void require_values(const Tensor& t, const std::vector<double>& expected, double margin = 1e-6) {
  REQUIRE(t.numel() == static_cast<std::int64_t>(expected.size()));
  for (std::size_t i = 0; i < expected.size(); ++i) {
    INFO("element " << i);
    REQUIRE(t.get_as_double(static_cast<std::int64_t>(i)) == Approx(expected[i]).margin(margin));
  }
}

// Deterministic, irregular test data in (-1, 1).
Tensor wavy(DType dtype, Shape shape, double phase) {
  Tensor t(dtype, std::move(shape));
  for (std::int64_t i = 0; i < t.numel(); ++i)
    t.set_from_double(i, 0.9 * std::sin(1.7 * static_cast<double>(i) + phase));
  return t;
}

double weighted_sum(const std::vector<Tensor>& outs, const std::vector<Tensor>& weights) {
  double s = 0;
  for (std::size_t k = 0; k < weights.size(); ++k)
    for (std::int64_t i = 0; i < outs[k].numel(); ++i)
      s += outs[k].get_as_double(i) * weights[k].get_as_double(i);
  return s;
}

// Central differences of sum_k <outputs_k, weights_k> with respect to inputs[which].
std::vector<double> numeric_grad(const Graph& g, std::vector<Tensor> inputs,
                                 const std::vector<Tensor>& weights, std::size_t which) {
  const double h = 1e-6;
  inputs[which] = inputs[which].clone();  // the caller's tensor shares its buffer
  Tensor& x = inputs[which];
  std::vector<double> grad;
  for (std::int64_t i = 0; i < x.numel(); ++i) {
    const double orig = x.get_as_double(i);
    x.set_from_double(i, orig + h);
    const double up = weighted_sum(interpret(g, inputs), weights);
    x.set_from_double(i, orig - h);
    const double down = weighted_sum(interpret(g, inputs), weights);
    x.set_from_double(i, orig);
    grad.push_back((up - down) / (2 * h));
  }
  return grad;
}

}  // namespace

TEST_CASE("philox4x32_10 matches the Random123 known-answer vectors", "[interpreter]") {
  using philox::Counter;
  using philox::Key;
  CHECK(philox::philox4x32_10(Counter{0, 0, 0, 0}, Key{0, 0}) ==
        Counter{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u});
  CHECK(philox::philox4x32_10(Counter{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu},
                              Key{0xffffffffu, 0xffffffffu}) ==
        Counter{0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu});
  CHECK(philox::philox4x32_10(Counter{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u},
                              Key{0xa4093822u, 0x299f31d0u}) ==
        Counter{0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u});
}

TEST_CASE("random_uniform: element n of stream s under seed k is Philox(n, s; k)",
          "[interpreter]") {
  const Value seed = ops::parameter("seed", DType::i64, {});
  const Graph g({seed}, {ops::random_uniform(seed, {2, 3}, DType::f32, 0),
                         ops::random_uniform(seed, {2, 3}, DType::f64, 0),
                         ops::random_uniform(seed, {2, 3}, DType::f64, 7)});

  // Seed 0, element 0: the all-zero known-answer vector.
  auto out = interpret(g, {Tensor::scalar<std::int64_t>(0)});
  CHECK(out[0].data<float>()[0] == static_cast<float>(0x6627e8 * 0x1p-24));
  CHECK(out[1].data<double>()[0] == static_cast<double>((0x6627e8d5e169c58dull >> 11)) * 0x1p-53);

  const std::uint64_t key = 0x299f31d0a4093822ull;
  out = interpret(g, {Tensor::scalar<std::int64_t>(static_cast<std::int64_t>(key))});
  for (std::uint64_t n = 0; n < 6; ++n) {
    const auto w0 = philox::philox4x32_10(philox::counter_for(n, 0), philox::key_from_seed(key));
    const auto w7 = philox::philox4x32_10(philox::counter_for(n, 7), philox::key_from_seed(key));
    CHECK(out[0].data<float>()[n] == philox::unit_f32(w0[0]));
    CHECK(out[1].data<double>()[n] == philox::unit_f64(w0[0], w0[1]));
    CHECK(out[2].data<double>()[n] == philox::unit_f64(w7[0], w7[1]));
    CHECK((out[1].data<double>()[n] >= 0.0 && out[1].data<double>()[n] < 1.0));
  }
  CHECK(philox::key_from_seed(0x0123456789abcdefull) == philox::Key{0x89abcdefu, 0x01234567u});
  CHECK(philox::counter_for(0x0123456789abcdefull, 0xfedcba9876543210ull) ==
        philox::Counter{0x89abcdefu, 0x01234567u, 0x76543210u, 0xfedcba98u});
}

TEST_CASE("dot_general: batch axes first, then lhs free, then rhs free", "[interpreter]") {
  SECTION("plain matrix product") {
    const Value a = ops::parameter("a", DType::f32, {2, 3});
    const Value b = ops::parameter("b", DType::f32, {3, 2});
    const Graph g({a, b}, {ops::dot_general(a, b, {{1}, {0}, {}, {}})});
    const auto out = interpret(g, {Tensor::from_vector<float>({2, 3}, {1, 2, 3, 4, 5, 6}),
                                   Tensor::from_vector<float>({3, 2}, {1, 0, 0, 1, 1, 1})});
    CHECK(out[0].shape() == Shape{2, 2});
    require_values(out[0], {4, 5, 10, 11});
  }
  SECTION("batch axis in the middle of rhs, contraction first") {
    // lhs [B=2, M=2, K=3], rhs [K=3, B=2, N=1].
    const Value a = ops::parameter("a", DType::f64, {2, 2, 3});
    const Value b = ops::parameter("b", DType::f64, {3, 2, 1});
    const Graph g({a, b}, {ops::dot_general(a, b, {{2}, {0}, {0}, {1}})});
    const auto out = interpret(
        g, {Tensor::from_vector<double>({2, 2, 3}, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}),
            // rhs[:, 0, 0] = (1, 0, -1), rhs[:, 1, 0] = (2, 1, 0)
            Tensor::from_vector<double>({3, 2, 1}, {1, 2, 0, 1, -1, 0})});
    CHECK(out[0].shape() == Shape{2, 2, 1});
    require_values(out[0], {1 - 3, 4 - 6, 14 + 8, 20 + 11});
  }
}

TEST_CASE("transpose, slice with stride, pad with interior", "[interpreter]") {
  SECTION("transpose [2,1,3] by (2,0,1)") {
    const Value x = ops::parameter("x", DType::i32, {2, 1, 3});
    const Graph g({x}, {ops::transpose(x, {2, 0, 1})});
    const auto out =
        interpret(g, {Tensor::from_vector<std::int32_t>({2, 1, 3}, {0, 1, 2, 3, 4, 5})});
    CHECK(out[0].shape() == Shape{3, 2, 1});
    require_values(out[0], {0, 3, 1, 4, 2, 5});
  }
  SECTION("slice [3,4] rows 0:3:2, columns 1:4:2") {
    const Value x = ops::parameter("x", DType::f32, {3, 4});
    const Graph g({x}, {ops::slice(x, {0, 1}, {3, 4}, {2, 2})});
    std::vector<float> v(12);
    for (int i = 0; i < 12; ++i) v[i] = static_cast<float>(i);
    const auto out = interpret(g, {Tensor::from_vector<float>({3, 4}, v)});
    CHECK(out[0].shape() == Shape{2, 2});
    require_values(out[0], {1, 3, 9, 11});
  }
  SECTION("slice [10] 1:8:3") {
    const Value x = ops::parameter("x", DType::i64, {10});
    const Graph g({x}, {ops::slice(x, {1}, {8}, {3})});
    const auto out =
        interpret(g, {Tensor::from_vector<std::int64_t>({10}, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9})});
    require_values(out[0], {1, 4, 7});
  }
  SECTION("pad 1-D: low 1, high 2, interior 1") {
    const Value x = ops::parameter("x", DType::f32, {3});
    const Graph g({x}, {ops::pad(x, 0.0, {1}, {2}, {1})});
    const auto out = interpret(g, {Tensor::from_vector<float>({3}, {1, 2, 3})});
    require_values(out[0], {0, 1, 0, 2, 0, 3, 0, 0});
  }
  SECTION("pad 2-D: interior on rows only, value -1") {
    const Value x = ops::parameter("x", DType::f64, {2, 2});
    const Graph g({x}, {ops::pad(x, -1.0, {0, 1}, {1, 0}, {1, 0})});
    const auto out = interpret(g, {Tensor::from_vector<double>({2, 2}, {1, 2, 3, 4})});
    CHECK(out[0].shape() == Shape{4, 3});
    require_values(out[0], {-1, 1, 2, -1, -1, -1, -1, 3, 4, -1, -1, -1});
  }
}

TEST_CASE("reductions drop the reduced axes; take and scatter_add", "[interpreter]") {
  const Value x = ops::parameter("x", DType::f32, {2, 3, 2});
  const Graph g({x},
                {ops::reduce_sum(x, {0, 2}), ops::reduce_max(x, {-1}), ops::reduce_mean(x, {1})});
  std::vector<float> v(12);
  for (int i = 0; i < 12; ++i) v[i] = static_cast<float>(i);  // x[a,b,c] = 6a + 2b + c
  const auto out = interpret(g, {Tensor::from_vector<float>({2, 3, 2}, v)});
  require_values(out[0], {14, 22, 30});
  require_values(out[1], {1, 3, 5, 7, 9, 11});
  require_values(out[2], {2, 3, 8, 9});

  const Value t = ops::parameter("t", DType::f32, {3, 2});
  const Value idx = ops::parameter("idx", DType::i64, {3});
  const Graph g2({t, idx}, {ops::take(t, idx, 0), ops::scatter_add(idx, t, 0, 4)});
  const auto out2 = interpret(g2, {Tensor::from_vector<float>({3, 2}, {1, 2, 3, 4, 5, 6}),
                                   Tensor::from_vector<std::int64_t>({3}, {2, 0, 2})});
  require_values(out2[0], {5, 6, 1, 2, 5, 6});
  CHECK(out2[1].shape() == Shape{4, 2});
  require_values(out2[1], {3, 4, 0, 0, 1 + 5, 2 + 6, 0, 0});
}

TEST_CASE("softmax subtracts the max and normalises", "[interpreter]") {
  const Value x = ops::parameter("x", DType::f32, {2, 3});
  const Graph g({x}, {ops::softmax(x, -1), ops::softmax(x, 0)});
  const auto out = interpret(g, {Tensor::from_vector<float>({2, 3}, {1, 2, 3, 1000, 1000, 1000})});
  require_values(out[0], {0.0900306, 0.2447285, 0.6652410, 1. / 3, 1. / 3, 1. / 3});
  for (int r = 0; r < 2; ++r) {
    double sum = 0;
    for (int j = 0; j < 3; ++j) sum += out[0].get_as_double(r * 3 + j);
    CHECK(sum == Approx(1.0).margin(1e-6));
  }
  require_values(out[1], {0, 0, 0, 1, 1, 1});  // exp(-999) underflows to 0
}

TEST_CASE("layer_norm of [1,2,3,4]", "[interpreter]") {
  const Value x = ops::parameter("x", DType::f32, {1, 4});
  const Value gamma = ops::parameter("gamma", DType::f32, {4});
  const Value beta = ops::parameter("beta", DType::f32, {4});
  const auto plain = ops::layer_norm_full(x, std::nullopt, std::nullopt, 1e-6);
  const Graph g({x, gamma, beta},
                {plain[0], plain[1], plain[2], ops::layer_norm(x, gamma, beta, 1e-6)});
  const auto out = interpret(g, {Tensor::from_vector<float>({1, 4}, {1, 2, 3, 4}),
                                 Tensor::from_vector<float>({4}, {1, 2, 1, 1}),
                                 Tensor::from_vector<float>({4}, {0, 0, 1, 0})});
  require_values(out[0], {-1.341640, -0.447213, 0.447213, 1.341640});
  require_values(out[1], {2.5});
  require_values(out[2], {0.894427});  // 1 / sqrt(1.25 + 1e-6)
  require_values(out[3], {-1.341640, -0.894427, 1.447213, 1.341640});
}

TEST_CASE("layer_norm_backward matches finite differences", "[interpreter]") {
  const double eps = 1e-5;
  const Value x = ops::parameter("x", DType::f64, {3, 4});
  const Value gamma = ops::parameter("gamma", DType::f64, {4});
  const Value beta = ops::parameter("beta", DType::f64, {4});
  const auto fwd = ops::layer_norm_full(x, gamma, beta, eps);
  const Graph forward({x, gamma, beta}, {fwd[0], fwd[1], fwd[2]});

  const Value mean = ops::parameter("mean", DType::f64, {3});
  const Value rstd = ops::parameter("rstd", DType::f64, {3});
  const Value dy = ops::parameter("dy", DType::f64, {3, 4});
  const Graph backward({x, mean, rstd, dy, gamma},
                       ops::layer_norm_backward(x, mean, rstd, dy, gamma, eps));
  const Graph backward_plain({x, mean, rstd, dy},
                             ops::layer_norm_backward(x, mean, rstd, dy, std::nullopt, eps));
  const auto plain = ops::layer_norm_full(x, std::nullopt, std::nullopt, eps);
  const Graph forward_plain({x}, {plain[0]});

  const std::vector<Tensor> in = {wavy(DType::f64, {3, 4}, 0.3), wavy(DType::f64, {4}, 1.1),
                                  wavy(DType::f64, {4}, 2.0)};
  const Tensor w = wavy(DType::f64, {3, 4}, 0.7);
  const Tensor zero3 = Tensor::zeros(DType::f64, {3});
  const auto y = interpret(forward, in);
  const auto grads = interpret(backward, {in[0], y[1], y[2], w, in[1]});
  const std::vector<Tensor> weights = {w, zero3, zero3};  // the loss sees y only
  for (std::size_t k = 0; k < 3; ++k) {
    INFO("gradient of input " << k);
    require_values(grads[k], numeric_grad(forward, in, weights, k), 1e-6);
  }
  const auto dx_plain = interpret(backward_plain, {in[0], y[1], y[2], w});
  REQUIRE(dx_plain.size() == 1);
  require_values(dx_plain[0], numeric_grad(forward_plain, {in[0]}, {w}, 0), 1e-6);
}

TEST_CASE("attention with constant q = k = 0.1 and v = 0.5 averages to 0.5", "[interpreter]") {
  const std::int64_t s = 4, d = 3;
  const double score = 0.01 * d / std::sqrt(static_cast<double>(d));  // default scale 1/sqrt(D)
  // Tensor mask: row 0 sees key 0, row 1 keys 0 and 3, row 2 everything, row 3 nothing.
  const std::vector<std::uint8_t> bits = {1, 0, 0, 0, 1, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0};
  struct Case {
    const char* name;
    ops::AttentionMask mask;
    std::vector<double> lse;
  };
  const double l = score;
  const double filled = -1e9 + std::log(4.0);  // a fully masked row: every score is the fill
  for (DType dtype : {DType::f32, DType::f64}) {
    const Value q = ops::parameter("q", dtype, {2, s, d});
    const Value k = ops::parameter("k", dtype, {2, s, d});
    const Value v = ops::parameter("v", dtype, {2, s, 2});
    const Value m = ops::parameter("m", DType::u8, {s, s});
    const std::vector<Case> cases = {
        {"none",
         ops::AttentionMask::none(),
         {l + std::log(4.), l + std::log(4.), l + std::log(4.), l + std::log(4.)}},
        {"causal",
         ops::AttentionMask::causal(),
         {l, l + std::log(2.), l + std::log(3.), l + std::log(4.)}},
        {"window",
         ops::AttentionMask::sliding_window(2),
         {l, l + std::log(2.), l + std::log(2.), l + std::log(2.)}},
        {"tensor",
         ops::AttentionMask::from_tensor(m),
         {l, l + std::log(2.), l + std::log(4.), filled}},
    };
    for (const Case& c : cases) {
      INFO("mask " << c.name << ", dtype " << dtype_name(dtype));
      ops::AttentionOptions opt;
      opt.mask = c.mask;
      const auto outs = ops::attention_full(q, k, v, opt);
      const Graph g({q, k, v, m}, {outs[0], outs[1]});
      const auto r =
          interpret(g, {Tensor::full(dtype, {2, s, d}, 0.1), Tensor::full(dtype, {2, s, d}, 0.1),
                        Tensor::full(dtype, {2, s, 2}, 0.5),
                        Tensor::from_vector<std::uint8_t>({s, s}, bits)});
      require_values(r[0], std::vector<double>(2 * s * 2, 0.5));
      std::vector<double> lse = c.lse;
      lse.insert(lse.end(), c.lse.begin(), c.lse.end());  // both batch entries
      REQUIRE(r[1].numel() == static_cast<std::int64_t>(lse.size()));
      for (std::size_t i = 0; i < lse.size(); ++i) {
        // Near -1e9 an f32 has a spacing of 64.
        const double margin = dtype == DType::f32 && lse[i] < -1e8 ? 64.0 : 1e-6;
        CHECK(r[1].get_as_double(static_cast<std::int64_t>(i)) == Approx(lse[i]).margin(margin));
      }
    }
  }
}

TEST_CASE("attention masks: window equals its explicit tensor; masks broadcast", "[interpreter]") {
  const std::int64_t s = 5, w = 2;
  const Value q = ops::parameter("q", DType::f64, {2, s, 3});
  const Value k = ops::parameter("k", DType::f64, {2, s, 3});
  const Value v = ops::parameter("v", DType::f64, {2, s, 2});
  const Value m2 = ops::parameter("m2", DType::u8, {s, s});
  const Value m3 = ops::parameter("m3", DType::u8, {1, s, s});
  const Value mb = ops::parameter("mb", DType::u8, {2, s, s});
  auto run = [&](ops::AttentionMask mask) {
    ops::AttentionOptions opt;
    opt.mask = std::move(mask);
    opt.scale = 0.8;
    const auto outs = ops::attention_full(q, k, v, opt);
    std::vector<std::uint8_t> window(s * s), causal(s * s);
    for (std::int64_t i = 0; i < s; ++i)
      for (std::int64_t j = 0; j < s; ++j) {
        window[i * s + j] = j <= i && j >= i - w + 1;
        causal[i * s + j] = j <= i;
      }
    std::vector<std::uint8_t> per_batch = causal;  // batch 0 causal, batch 1 window
    per_batch.insert(per_batch.end(), window.begin(), window.end());
    return interpret(
        Graph({q, k, v, m2, m3, mb}, {outs[0], outs[1]}),
        {wavy(DType::f64, {2, s, 3}, 0.1), wavy(DType::f64, {2, s, 3}, 0.9),
         wavy(DType::f64, {2, s, 2}, 1.7), Tensor::from_vector<std::uint8_t>({s, s}, window),
         Tensor::from_vector<std::uint8_t>({1, s, s}, window),
         Tensor::from_vector<std::uint8_t>({2, s, s}, per_batch)});
  };
  const auto by_window = run(ops::AttentionMask::sliding_window(w));
  const auto by_causal = run(ops::AttentionMask::causal());
  for (const auto& tensor_run :
       {run(ops::AttentionMask::from_tensor(m2)), run(ops::AttentionMask::from_tensor(m3))})
    for (int o = 0; o < 2; ++o) require_values(tensor_run[o], values_of(by_window[o]), 1e-12);
  CHECK_FALSE(values_of(by_window[0]) == values_of(by_causal[0]));  // the mask matters here

  const auto mixed = run(ops::AttentionMask::from_tensor(mb));
  for (int o = 0; o < 2; ++o) {
    const auto got = values_of(mixed[o]), c = values_of(by_causal[o]), wv = values_of(by_window[o]);
    const std::size_t half = got.size() / 2;
    for (std::size_t i = 0; i < got.size(); ++i)
      CHECK(got[i] == Approx(i < half ? c[i] : wv[i]).margin(1e-12));
  }
}

TEST_CASE("attention_backward matches finite differences", "[interpreter]") {
  const std::int64_t sq = 3, sk = 4, d = 2, dv = 3;
  const Value q = ops::parameter("q", DType::f64, {2, sq, d});
  const Value k = ops::parameter("k", DType::f64, {2, sk, d});
  const Value v = ops::parameter("v", DType::f64, {2, sk, dv});
  const Value m = ops::parameter("m", DType::u8, {sq, sk});
  const Value out = ops::parameter("out", DType::f64, {2, sq, dv});
  const Value lse = ops::parameter("lse", DType::f64, {2, sq});
  const Value dout = ops::parameter("dout", DType::f64, {2, sq, dv});
  // Row 1 of the tensor mask is fully masked: its output is the mean of v, independent of q, k.
  const Tensor mask =
      Tensor::from_vector<std::uint8_t>({sq, sk}, {1, 0, 1, 1, 0, 0, 0, 0, 0, 1, 1, 0});
  const std::vector<Tensor> in = {wavy(DType::f64, {2, sq, d}, 0.2),
                                  wavy(DType::f64, {2, sk, d}, 1.3),
                                  wavy(DType::f64, {2, sk, dv}, 2.1), mask};
  const Tensor w = wavy(DType::f64, {2, sq, dv}, 0.5);

  const std::vector<std::pair<const char*, ops::AttentionMask>> masks = {
      {"none", ops::AttentionMask::none()},
      {"causal", ops::AttentionMask::causal()},
      {"window", ops::AttentionMask::sliding_window(2)},
      {"tensor", ops::AttentionMask::from_tensor(m)}};
  for (const auto& [name, mask_kind] : masks) {
    INFO("mask " << name);
    ops::AttentionOptions opt;
    opt.mask = mask_kind;
    opt.scale = 0.7;
    const auto fwd = ops::attention_full(q, k, v, opt);
    const Graph forward({q, k, v, m}, {fwd[0], fwd[1]});
    const Graph backward({q, k, v, m, out, lse, dout},
                         ops::attention_backward(q, k, v, out, lse, dout, opt));
    const auto f = interpret(forward, in);
    const auto grads = interpret(backward, {in[0], in[1], in[2], in[3], f[0], f[1], w});
    const std::vector<Tensor> weights = {w, Tensor::zeros(DType::f64, {2, sq})};
    for (std::size_t i = 0; i < 3; ++i) {
      INFO("gradient of input " << i);
      require_values(grads[i], numeric_grad(forward, in, weights, i), 1e-6);
    }
  }
}

TEST_CASE("lstm: one step by hand", "[interpreter]") {
  const Value x = ops::parameter("x", DType::f64, {1, 1, 1});
  const Value w_ih = ops::parameter("w_ih", DType::f64, {1, 4});
  const Value w_hh = ops::parameter("w_hh", DType::f64, {1, 4});
  const Value b = ops::parameter("b", DType::f64, {4});
  const Value h0 = ops::parameter("h0", DType::f64, {1, 1});
  const Value c0 = ops::parameter("c0", DType::f64, {1, 1});
  const Graph g({x, w_ih, w_hh, b, h0, c0}, ops::lstm(x, w_ih, w_hh, b, h0, c0));
  const auto out = interpret(
      g, {Tensor::from_vector<double>({1, 1, 1}, {1.0}),
          Tensor::from_vector<double>({1, 4}, {0.5, -0.5, 0.3, 0.2}),
          Tensor::from_vector<double>({1, 4}, {0.1, 0.2, -0.3, 0.4}),
          Tensor::from_vector<double>({4}, {0.0, 0.1, 0.2, -0.1}),
          Tensor::from_vector<double>({1, 1}, {0.5}), Tensor::from_vector<double>({1, 1}, {0.25})});
  // z = x.w_ih + h0.w_hh + b = (0.55, -0.3, 0.35, 0.3)
  // i = sigmoid(0.55) = 0.634136, f = sigmoid(-0.3) = 0.425557, g = tanh(0.35) = 0.336376,
  // o = sigmoid(0.3) = 0.574443; c = f * 0.25 + i * g = 0.319697; h = o * tanh(c) = 0.177637
  require_values(out[0], {0.1776366});
  require_values(out[1], {0.3196971});
}

TEST_CASE("lstm_scan_backward matches finite differences", "[interpreter]") {
  const std::int64_t bsz = 2, steps = 3, u = 2;
  const std::vector<Shape> shapes = {{bsz, steps, 4 * u}, {u, 4 * u}, {bsz, u}, {bsz, u}};
  std::vector<Value> params;
  std::vector<Tensor> in;
  for (std::size_t i = 0; i < shapes.size(); ++i) {
    params.push_back(ops::parameter("p" + std::to_string(i), DType::f64, shapes[i]));
    in.push_back(wavy(DType::f64, shapes[i], 0.37 * static_cast<double>(i)));
  }
  const Graph forward(params, ops::lstm_scan(params[0], params[1], params[2], params[3]));
  std::vector<Value> bw_params = params;
  for (const char* name : {"h_seq", "c_seq", "dh_seq", "dc_seq"})
    bw_params.push_back(ops::parameter(name, DType::f64, {bsz, steps, u}));
  const Graph backward(bw_params, ops::lstm_scan_backward(bw_params));

  const Tensor dh = wavy(DType::f64, {bsz, steps, u}, 0.4);
  const Tensor dc = wavy(DType::f64, {bsz, steps, u}, 1.9);
  const auto f = interpret(forward, in);
  std::vector<Tensor> bw_in = in;
  for (const Tensor& t : {f[0], f[1], dh, dc}) bw_in.push_back(t);
  const auto grads = interpret(backward, bw_in);
  REQUIRE(grads.size() == 3);  // dzx, dh0, dc0 (dw_hh is a dot_general of the VJP rule)
  const std::size_t of_input[] = {0, 2, 3};
  for (std::size_t i = 0; i < 3; ++i) {
    INFO("gradient of input " << of_input[i]);
    require_values(grads[i], numeric_grad(forward, in, {dh, dc}, of_input[i]), 1e-6);
  }
}

TEST_CASE("interpret validates its inputs", "[interpreter]") {
  const Value x = ops::parameter("x", DType::f32, {4, 3});
  const Value w = ops::parameter("w", DType::f32, {3});
  const Graph g({x, w}, {x + w});
  const Tensor good_x = Tensor::zeros(DType::f32, {4, 3});
  const Tensor good_w = Tensor::zeros(DType::f32, {3});

  CHECK_THROWS_WITH(interpret(g, {good_x}), "interpret: the graph takes 2 inputs, 1 given");
  CHECK_THROWS_WITH(interpret(g, {good_x, Tensor::zeros(DType::f64, {3})}),
                    "interpret: input \"w\" has dtype f64, the graph expects f32[3]");
  CHECK_THROWS_WITH(interpret(g, {Tensor::zeros(DType::f32, {4, 5}), good_w}),
                    "interpret: input \"x\" has shape [4,5], the graph expects f32[4,3]");
  CHECK_THROWS_WITH(interpret(g, {Tensor::zeros(DType::f32, {12}), good_w}),
                    "interpret: input \"x\" has shape [12], the graph expects f32[4,3]");
  CHECK(interpret(g, {good_x, good_w})[0].shape() == Shape{4, 3});

  const Value a = ops::parameter("a", DType::f32, {kDynamic, 3});
  const Value b = ops::parameter("b", DType::f32, {kDynamic, 3});
  const Graph dyn({a, b}, {a + b});
  CHECK_THROWS_WITH(
      interpret(dyn, {Tensor::zeros(DType::f32, {2, 3}), Tensor::zeros(DType::f32, {5, 3})}),
      "interpret: input \"b\" has shape [5,3], the graph expects f32[?,3] with "
      "? = 2 (bound by input \"a\")");
  CHECK_THROWS_WITH(
      interpret(dyn, {Tensor::zeros(DType::f32, {2, 4}), Tensor::zeros(DType::f32, {2, 3})}),
      "interpret: input \"a\" has shape [2,4], the graph expects f32[?,3]");
}

TEST_CASE("dynamic batch extents are bound from the inputs", "[interpreter]") {
  const Value a = ops::parameter("a", DType::f32, {kDynamic, 3});
  const Graph g({a}, {ops::reduce_sum(a, {1})});
  const auto out = interpret(g, {Tensor::from_vector<float>({2, 3}, {1, 2, 3, 4, 5, 6})});
  CHECK(out[0].shape() == Shape{2});
  require_values(out[0], {6, 15});
}

TEST_CASE("run-time errors name the value and the op's location", "[interpreter]") {
  const Value x = ops::parameter("x", DType::f32, {5});
  const Value idx = ops::parameter("idx", DType::i32, {2, 2});
  const Graph g({x, idx}, {ops::take(x, idx, 0)});
  CHECK_THROWS_WITH(
      interpret(g, {Tensor::zeros(DType::f32, {5}),
                    Tensor::from_vector<std::int32_t>({2, 2}, {0, 4, 7, 1})}),
      StartsWith(
          "interpret: take: index 7 at position [1,0] of the indices is out of range [0, 5)") &&
          Contains("the op was defined at") && Contains("interpreter_test.cpp"));
  CHECK_THROWS_WITH(interpret(g, {Tensor::zeros(DType::f32, {5}),
                                  Tensor::from_vector<std::int32_t>({2, 2}, {0, -1, 2, 1})}),
                    StartsWith("interpret: take: index -1 at position [0,1] of the indices is out "
                               "of range [0, 5)"));

  const Value n = ops::parameter("n", DType::i32, {3});
  const Value dd = ops::parameter("d", DType::i32, {3});
  const Graph gd({n, dd}, {ops::div(n, dd), ops::add(n, dd)});
  CHECK_THROWS_WITH(interpret(gd, {Tensor::from_vector<std::int32_t>({3}, {1, 2, 3}),
                                   Tensor::from_vector<std::int32_t>({3}, {1, 1, 0})}),
                    StartsWith("interpret: div: integer division by zero at element [2] of the "
                               "divisor"));
  // Integer arithmetic wraps and division truncates toward zero.
  const std::int32_t big = std::numeric_limits<std::int32_t>::max();
  const auto out = interpret(gd, {Tensor::from_vector<std::int32_t>({3}, {-7, big, 7}),
                                  Tensor::from_vector<std::int32_t>({3}, {2, 1, -2})});
  CHECK(values_of(out[0]) == std::vector<double>{-3, big, -3});
  CHECK(values_of(out[1]) == std::vector<double>{-5, std::numeric_limits<std::int32_t>::min(), 5});
}

TEST_CASE("an output that is an input is returned as a copy", "[interpreter]") {
  const Value x = ops::parameter("x", DType::f32, {2});
  const Tensor t = Tensor::from_vector<float>({2}, {1, 2});
  const auto out = interpret(Graph({x}, {x}), {t});
  CHECK(out[0].raw_data() != t.raw_data());
  CHECK(out[0].bitwise_equal(t));
}
