// The JIT's GEMM kernel (register-blocked micro-kernel, packing, cache blocking, fused
// epilogue) against the reference interpreter: shapes around every blocking boundary of the
// host's tiling, transposed operand layouts, batch axes, f32/f64/integers, epilogues, and
// bit-identical results whatever the thread count.
#include <edifice/core/interpreter.hpp>
#include <edifice/core/ops.hpp>
#include <edifice/jit/jit.hpp>

#include "../../jit/src/gemm_layout.hpp"

#include <catch2/catch.hpp>

#include "test_util.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <set>

using namespace edifice;
namespace o = edifice::ops;

using edifice::test::random_tensor;

namespace {

Tensor abs_tensor(const Tensor& t) {
  Tensor r(t.dtype(), t.shape());
  for (std::int64_t i = 0; i < t.numel(); ++i) r.set_from_double(i, std::abs(t.get_as_double(i)));
  return r;
}

std::vector<Shape> shapes_of(const std::vector<Tensor>& ts) {
  std::vector<Shape> s;
  for (const auto& t : ts) s.push_back(t.shape());
  return s;
}

// A dot product's rounding error scales with sum |a_k b_k|, not with |sum a_k b_k|: compare
// each element within rtol of the same dot product over |A| and |B| (exact for integers).
void check_dot(const Graph& g, const std::vector<Tensor>& inputs, double rtol) {
  auto got = jit::compile(g, shapes_of(inputs))->run(inputs);
  auto want = interpret(g, inputs);
  std::vector<Tensor> abs_inputs;
  for (const auto& t : inputs) abs_inputs.push_back(abs_tensor(t));
  auto scale = interpret(g, abs_inputs);
  REQUIRE(got.size() == want.size());
  for (std::size_t o = 0; o < got.size(); ++o) {
    REQUIRE(got[o].dtype() == want[o].dtype());
    REQUIRE(got[o].shape() == want[o].shape());
    const bool exact = is_integral(want[o].dtype());
    for (std::int64_t i = 0; i < got[o].numel(); ++i) {
      double gv = got[o].get_as_double(i), wv = want[o].get_as_double(i);
      if (exact) {
        if (gv != wv) {
          INFO("element " << i << ": jit " << gv << " vs interpreter " << wv);
          REQUIRE(gv == wv);
        }
        continue;
      }
      double tol = rtol * (scale[o].get_as_double(i) + 1e-30);
      if (!(std::abs(gv - wv) <= tol)) {
        INFO("element " << i << ": jit " << gv << " vs interpreter " << wv << ", tolerance "
                        << tol);
        REQUIRE(std::abs(gv - wv) <= tol);
      }
    }
  }
}

// For graphs with epilogues: |jit - interpreter| <= atol + rtol |interpreter|.
void check_close(const Graph& g, const std::vector<Tensor>& inputs, double rtol, double atol,
                 const jit::Options& options = {}) {
  auto got = jit::compile(g, shapes_of(inputs), options)->run(inputs);
  auto want = interpret(g, inputs);
  REQUIRE(got.size() == want.size());
  for (std::size_t o = 0; o < got.size(); ++o) {
    REQUIRE(got[o].dtype() == want[o].dtype());
    REQUIRE(got[o].shape() == want[o].shape());
    for (std::int64_t i = 0; i < got[o].numel(); ++i) {
      double gv = got[o].get_as_double(i), wv = want[o].get_as_double(i);
      if (!(std::abs(gv - wv) <= atol + rtol * std::abs(wv))) {
        INFO("output " << o << " element " << i << ": jit " << gv << " vs interpreter " << wv);
        REQUIRE(std::abs(gv - wv) <= atol + rtol * std::abs(wv));
      }
    }
  }
}

// C = A . B with A stored [M, K] or [K, M] and B stored [K, N] or [N, K].
Graph gemm_graph(DType d, std::int64_t m, std::int64_t k, std::int64_t n, bool trans_a,
                 bool trans_b) {
  auto a = o::parameter("a", d, trans_a ? Shape{k, m} : Shape{m, k});
  auto b = o::parameter("b", d, trans_b ? Shape{n, k} : Shape{k, n});
  Value c = o::dot_general(a, b, {{trans_a ? 0 : 1}, {trans_b ? 1 : 0}, {}, {}});
  return Graph({a, b}, {c});
}

std::vector<Tensor> gemm_inputs(DType d, std::int64_t m, std::int64_t k, std::int64_t n,
                                bool trans_a, bool trans_b, std::uint32_t seed) {
  return {random_tensor(d, trans_a ? Shape{k, m} : Shape{m, k}, seed),
          random_tensor(d, trans_b ? Shape{n, k} : Shape{k, n}, seed + 1)};
}

// Extents around the blocking boundaries of `t` for an extent blocked by `unit` and `tile`.
std::vector<std::int64_t> around(std::int64_t unit, std::int64_t tile) {
  std::set<std::int64_t> s = {1,        2,        unit - 1,       unit, unit + 1, 2 * unit + 3,
                              tile - 1, tile + 1, tile + unit + 5};
  std::vector<std::int64_t> r;
  for (auto v : s)
    if (v >= 1) r.push_back(v);
  return r;
}

jit::GemmTiling host_tiling(DType d) {
  return jit::gemm_tiling(jit::GemmLayout{1, 4096, 4096, 4096, false, false}, d);
}

}  // namespace

TEST_CASE("GEMM matches the interpreter on shapes around the blocking boundaries", "[jit][gemm]") {
  const jit::GemmTiling t = host_tiling(DType::f32);
  INFO("micro-tile " << t.mr << "x" << t.nr << ", kc " << t.kc << ", tile " << t.tile_m << "x"
                     << t.tile_n);
  std::uint32_t seed = 1;
  // M and N tails with a K tail; then K around the K block with small M, N.
  for (std::int64_t m : around(t.mr, t.tile_m))
    for (std::int64_t n : {std::int64_t{1}, t.nr - 1, t.nr + 1, t.tile_n + 3}) {
      INFO("M " << m << " N " << n);
      check_dot(gemm_graph(DType::f32, m, 19, n, false, false),
                gemm_inputs(DType::f32, m, 19, n, false, false, seed++), 1e-5);
    }
  for (std::int64_t n : around(t.nr, t.tile_n)) {
    INFO("N " << n);
    check_dot(gemm_graph(DType::f32, t.mr + 1, 7, n, false, false),
              gemm_inputs(DType::f32, t.mr + 1, 7, n, false, false, seed++), 1e-5);
  }
  for (std::int64_t k : {std::int64_t{1}, std::int64_t{2}, std::int64_t{3}, t.kc - 1, t.kc,
                         t.kc + 1, 2 * t.kc + 5}) {
    INFO("K " << k);
    check_dot(gemm_graph(DType::f32, 2 * t.mr + 1, k, t.nr + 3, false, false),
              gemm_inputs(DType::f32, 2 * t.mr + 1, k, t.nr + 3, false, false, seed++), 1e-5);
  }
}

TEST_CASE("GEMM reads transposed operands in place", "[jit][gemm]") {
  const jit::GemmTiling t = host_tiling(DType::f32);
  std::uint32_t seed = 100;
  for (bool ta : {false, true})
    for (bool tb : {false, true})
      for (auto [m, k, n] :
           std::vector<std::array<std::int64_t, 3>>{{1, 1, 1},
                                                    {5, 17, 3},
                                                    // few rows: streamed B, or dot products
                                                    // along k (B as N x K), 4 rows of B at once
                                                    {3, 37, 9},
                                                    {4, 2 * t.kc + 1, 2 * t.nr},
                                                    // every B panel full: B read in place
                                                    {60, 300, 2 * t.nr},
                                                    // full panels, but rows 2 KiB apart:
                                                    // B packed (cache-set aliasing)
                                                    {30, 300, 512},
                                                    {t.mr + 1, t.kc + 3, t.nr + 1},
                                                    {t.tile_m + 7, 33, t.tile_n + 9},
                                                    {60, 300, 70}}) {
        INFO("trans_a " << ta << " trans_b " << tb << " M " << m << " K " << k << " N " << n);
        Graph g = gemm_graph(DType::f32, m, k, n, ta, tb);
        auto inputs = gemm_inputs(DType::f32, m, k, n, ta, tb, seed++);
        // No transpose kernel: the GEMM reads the operands as stored.
        auto exe = jit::compile(g, shapes_of(inputs));
        CHECK(exe->kernels().size() == 1);
        check_dot(g, inputs, 1e-5);
      }
}

TEST_CASE("GEMM handles batch axes and multi-axis M and N", "[jit][gemm]") {
  std::uint32_t seed = 200;
  SECTION("batched matmul") {
    auto a = o::parameter("a", DType::f32, {3, 13, 40});
    auto b = o::parameter("b", DType::f32, {3, 40, 35});
    Graph g({a, b}, {o::matmul(a, b)});
    check_dot(g,
              {random_tensor(DType::f32, {3, 13, 40}, seed),
               random_tensor(DType::f32, {3, 40, 35}, seed + 1)},
              1e-5);
  }
  SECTION("two batch axes, B transposed (attention scores q . k^T)") {
    auto q = o::parameter("q", DType::f32, {2, 3, 17, 8});
    auto kk = o::parameter("k", DType::f32, {2, 3, 19, 8});
    Graph g({q, kk}, {o::dot_general(q, kk, {{3}, {3}, {0, 1}, {0, 1}})});
    check_dot(g,
              {random_tensor(DType::f32, {2, 3, 17, 8}, seed),
               random_tensor(DType::f32, {2, 3, 19, 8}, seed + 1)},
              1e-5);
  }
  SECTION("x^T . dy over a batch (weight gradient layout)") {
    auto x = o::parameter("x", DType::f32, {4, 30, 9});
    auto dy = o::parameter("dy", DType::f32, {4, 30, 11});
    Graph g({x, dy}, {o::dot_general(x, dy, {{1}, {1}, {0}, {0}})});
    check_dot(g,
              {random_tensor(DType::f32, {4, 30, 9}, seed),
               random_tensor(DType::f32, {4, 30, 11}, seed + 1)},
              1e-5);
  }
  SECTION("multi-axis M and N, with an epilogue indexing them") {
    auto a = o::parameter("a", DType::f32, {2, 3, 5, 21});
    auto b = o::parameter("b", DType::f32, {21, 4, 6});
    auto bias = o::parameter("bias", DType::f32, {4, 6});
    Value c = o::dot_general(a, b, {{3}, {0}, {}, {}});  // [2, 3, 5, 4, 6]
    Graph g({a, b, bias}, {o::tanh(c + bias)});
    check_close(g,
                {random_tensor(DType::f32, {2, 3, 5, 21}, seed),
                 random_tensor(DType::f32, {21, 4, 6}, seed + 1),
                 random_tensor(DType::f32, {4, 6}, seed + 2)},
                1e-5, 1e-5);
  }
}

TEST_CASE("GEMM in f64 uses half the lanes and stays accurate", "[jit][gemm]") {
  const jit::GemmTiling t = host_tiling(DType::f64);
  std::uint32_t seed = 300;
  for (bool ta : {false, true})
    for (bool tb : {false, true})
      for (auto [m, k, n] :
           std::vector<std::array<std::int64_t, 3>>{{1, 1, 1},
                                                    {t.mr - 1, 5, t.nr - 1},
                                                    {3, 37, 9},
                                                    {30, 70, 2 * t.nr},
                                                    {t.mr + 1, t.kc + 1, t.nr + 1},
                                                    {t.tile_m + 1, 40, t.tile_n + 1},
                                                    {37, 2 * t.kc + 3, 29}}) {
        INFO("trans_a " << ta << " trans_b " << tb << " M " << m << " K " << k << " N " << n);
        check_dot(gemm_graph(DType::f64, m, k, n, ta, tb),
                  gemm_inputs(DType::f64, m, k, n, ta, tb, seed++), 1e-13);
      }
}

TEST_CASE("GEMM on integer dtypes is exact (wrapping)", "[jit][gemm]") {
  std::uint32_t seed = 400;
  for (DType d : {DType::i32, DType::i64, DType::u8})
    for (bool tb : {false, true})
      for (auto [m, k, n] :
           std::vector<std::array<std::int64_t, 3>>{{1, 1, 1}, {7, 13, 5}, {33, 70, 41}}) {
        INFO(dtype_name(d) << " trans_b " << tb << " M " << m << " K " << k << " N " << n);
        check_dot(gemm_graph(d, m, k, n, false, tb), gemm_inputs(d, m, k, n, false, tb, seed++), 0);
      }
  // Products that overflow i32 wrap as in the interpreter.
  auto a = Tensor::from_vector<std::int32_t>({1, 2}, {1 << 20, 3});
  auto b = Tensor::from_vector<std::int32_t>({2, 1}, {1 << 12, 5});
  check_dot(gemm_graph(DType::i32, 1, 2, 1, false, false), {a, b}, 0);
}

TEST_CASE("GEMM epilogues are applied before the single store", "[jit][gemm]") {
  const jit::GemmTiling t = host_tiling(DType::f32);
  const std::int64_t m = t.tile_m + 5, k = t.kc + 7, n = t.nr * 2 + 3;
  std::uint32_t seed = 500;
  auto x = o::parameter("x", DType::f32, {m, k});
  auto w = o::parameter("w", DType::f32, {k, n});
  Tensor tx = random_tensor(DType::f32, {m, k}, seed),
         tw = random_tensor(DType::f32, {k, n}, seed + 1);

  SECTION("bias add + gelu") {
    auto bias = o::parameter("bias", DType::f32, {n});
    Graph g({x, w, bias}, {o::gelu(o::matmul(x, w) + bias)});
    std::vector<Tensor> in = {tx, tw, random_tensor(DType::f32, {n}, seed + 2)};
    auto exe = jit::compile(g, shapes_of(in));
    REQUIRE(exe->kernels().size() == 1);
    CHECK(exe->kernels()[0].kind == "gemm");
    check_close(g, in, 1e-5, 1e-5 * std::sqrt(static_cast<double>(k)));
  }
  SECTION("residual add") {
    auto r = o::parameter("r", DType::f32, {m, n});
    Graph g({x, w, r}, {o::matmul(x, w) + r});
    std::vector<Tensor> in = {tx, tw, random_tensor(DType::f32, {m, n}, seed + 3)};
    REQUIRE(jit::compile(g, shapes_of(in))->kernels().size() == 1);
    check_close(g, in, 1e-5, 1e-5 * std::sqrt(static_cast<double>(k)));
  }
  SECTION("compare to a u8 output") {
    auto thr = o::parameter("thr", DType::f32, {m, n});
    Graph g({x, w, thr}, {o::gt(o::matmul(x, w), thr)});
    // Thresholds well away from the products, so rounding cannot flip a comparison.
    Tensor tt = random_tensor(DType::f32, {m, n}, seed + 4);
    auto ref = interpret(Graph({x, w}, {o::matmul(x, w)}), {tx, tw})[0];
    for (std::int64_t i = 0; i < tt.numel(); ++i) {
      double v = ref.get_as_double(i);
      tt.set_from_double(i, v + (tt.get_as_double(i) < 0 ? -0.25 : 0.25));
    }
    std::vector<Tensor> in = {tx, tw, tt};
    auto exe = jit::compile(g, shapes_of(in));
    REQUIRE(exe->kernels().size() == 1);
    auto got = exe->run(in)[0];
    REQUIRE(got.dtype() == DType::u8);
    check_close(g, in, 0, 0);
  }
  SECTION("integer epilogue") {
    auto xi = o::parameter("xi", DType::i32, {13, 9});
    auto wi = o::parameter("wi", DType::i32, {9, 37});
    auto bi = o::parameter("bi", DType::i32, {37});
    Graph g({xi, wi, bi}, {(o::matmul(xi, wi) + bi) * 3});
    check_close(
        g,
        {random_tensor(DType::i32, {13, 9}, seed + 5), random_tensor(DType::i32, {9, 37}, seed + 6),
         random_tensor(DType::i32, {37}, seed + 7)},
        0, 0);
  }
}

TEST_CASE("GEMM of an empty contraction is zero through the epilogue", "[jit][gemm]") {
  auto a = o::parameter("a", DType::f32, {5, 0});
  auto b = o::parameter("b", DType::f32, {0, 7});
  auto c = o::parameter("c", DType::f32, {7});
  Graph g({a, b, c}, {o::matmul(a, b) + c});
  check_close(
      g,
      {Tensor(DType::f32, {5, 0}), Tensor(DType::f32, {0, 7}), random_tensor(DType::f32, {7}, 9)},
      0, 0);
}

TEST_CASE("GEMM matches the interpreter on a model shape", "[jit][gemm]") {
  // 60 x 1024 x 256: small M, deep K (several K blocks), split over items for threads.
  check_dot(gemm_graph(DType::f32, 60, 1024, 256, false, false),
            gemm_inputs(DType::f32, 60, 1024, 256, false, false, 600), 1e-5);
  check_dot(gemm_graph(DType::f32, 60, 1024, 256, false, true),
            gemm_inputs(DType::f32, 60, 1024, 256, false, true, 601), 1e-5);
}

TEST_CASE("GEMM results are bit-identical with 1 and 2 threads", "[jit][gemm]") {
  std::uint32_t seed = 700;
  auto bits_equal = [](const Tensor& x, const Tensor& y) {
    return x.dtype() == y.dtype() && x.shape() == y.shape() &&
           std::memcmp(x.raw_data(), y.raw_data(), x.nbytes()) == 0;
  };
  for (auto [m, k, n] : std::vector<std::array<std::int64_t, 3>>{
           {60, 1024, 256},
           {301, 333, 97},
           {1920, 64, 768},
           {7, 5, 3},
           // B packed for all of K in 4 n tiles: the pool's chunks hold whole n tiles.
           {96, 1920, 1024}}) {
    INFO("M " << m << " K " << k << " N " << n);
    auto x = o::parameter("x", DType::f32, {m, k});
    auto w = o::parameter("w", DType::f32, {n, k});
    auto bias = o::parameter("bias", DType::f32, {n});
    Graph g({x, w, bias}, {o::gelu(o::dot_general(x, w, {{1}, {1}, {}, {}}) + bias)});
    std::vector<Tensor> in = {random_tensor(DType::f32, {m, k}, seed),
                              random_tensor(DType::f32, {n, k}, seed + 1),
                              random_tensor(DType::f32, {n}, seed + 2)};
    seed += 3;
    jit::Options one, two;
    one.threads = 1;
    two.threads = 2;
    auto r1 = jit::compile(g, shapes_of(in), one)->run(in)[0];
    auto r2 = jit::compile(g, shapes_of(in), two)->run(in)[0];
    auto r2again = jit::compile(g, shapes_of(in), two)->run(in)[0];
    CHECK(bits_equal(r1, r2));
    CHECK(bits_equal(r2, r2again));
  }
}
