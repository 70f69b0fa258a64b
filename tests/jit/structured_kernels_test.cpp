// The structured-op kernels (softmax, layer_norm, attention, lstm and their backward ops)
// against the reference interpreter: forward outputs and gradient graphs, f32 and f64, odd
// and degenerate sizes, every attention mask kind, and bit-identical results across thread
// counts.
#include <edifice/core/autodiff.hpp>
#include <edifice/core/interpreter.hpp>
#include <edifice/core/ops.hpp>
#include <edifice/jit/jit.hpp>

#include "../../jit/src/plan.hpp"

#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>

using namespace edifice;
namespace o = edifice::ops;

namespace {

Tensor random_tensor(DType d, const Shape& shape, std::uint32_t seed, double lo = -1,
                     double hi = 1) {
  Tensor t(d, shape);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> u(lo, hi);
  for (std::int64_t i = 0; i < t.numel(); ++i) t.set_from_double(i, u(rng));
  return t;
}

// u8 mask with about `density` of its entries allowed.
Tensor random_mask(const Shape& shape, std::uint32_t seed, double density = 0.6) {
  Tensor t(DType::u8, shape);
  std::mt19937 rng(seed);
  std::bernoulli_distribution keep(density);
  for (std::int64_t i = 0; i < t.numel(); ++i) t.data<std::uint8_t>()[i] = keep(rng) ? 1 : 0;
  return t;
}

struct Tol {
  double rtol, atol;
};
Tol tol_for(DType d) {
  return d == DType::f32 ? Tol{2e-5, 2e-5} : Tol{1e-10, 1e-12};
}

// Element-wise |jit - interpreter| <= atol + rtol |interpreter|; NaN must match NaN.
void require_close(const Tensor& got, const Tensor& want, Tol tol, const std::string& what) {
  INFO(what);
  REQUIRE(got.dtype() == want.dtype());
  REQUIRE(got.shape() == want.shape());
  for (std::int64_t i = 0; i < got.numel(); ++i) {
    const double g = got.get_as_double(i), w = want.get_as_double(i);
    INFO("element " << i << ": jit " << g << " vs interpreter " << w);
    if (std::isnan(w)) {
      REQUIRE(std::isnan(g));
      continue;
    }
    if (std::isinf(w)) {
      REQUIRE(g == w);
      continue;
    }
    REQUIRE(std::abs(g - w) <= tol.atol + tol.rtol * std::abs(w));
  }
}

std::vector<Shape> shapes_of(const std::vector<Tensor>& inputs) {
  std::vector<Shape> shapes;
  for (const auto& t : inputs) shapes.push_back(t.shape());
  return shapes;
}

// Runs `g` through the JIT and the interpreter; `kind` (if not empty) must be a kernel kind
// of the compiled plan, so the structured kernel is really what is being tested.
// Attention kernels the checks compile with (the attention tests run both).
jit::AttentionKernel attention_kernel = jit::AttentionKernel::automatic;

void check(const Graph& g, const std::vector<Tensor>& inputs, Tol tol, const std::string& kind) {
  if (attention_kernel != jit::AttentionKernel::automatic) {
    // A forced kernel is really the one compiled (the pass records it in each node).
    const std::string want = attention_kernel == jit::AttentionKernel::tiles ? "tiles" : "rows";
    const Graph chosen = jit::choose_attention_kernels(g, attention_kernel);  // owns the nodes
    for (const Node* n : chosen.nodes())
      if (n->op() == Op::attention || n->op() == Op::attention_backward) {
        INFO(n->attrs().get_string("mask") << " mask");
        REQUIRE(n->attrs().get_string("kernel") == want);
      }
  }
  auto exe = jit::compile(g, shapes_of(inputs), {.attention_kernel = attention_kernel});
  if (!kind.empty()) {
    bool found = false;
    for (const auto& k : exe->kernels()) found |= k.kind == kind;
    INFO(exe->plan());
    REQUIRE(found);
  }
  const auto got = exe->run(inputs);
  const auto want = interpret(g, inputs);
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < got.size(); ++i)
    require_close(got[i], want[i], tol, "output " + std::to_string(i));
}

// sum(y_i * w_i) over the given values with fixed random weights: a scalar loss whose
// cotangents are not all equal.
Value weighted_sum(const std::vector<Value>& ys, std::vector<Value>& weight_params) {
  Value loss;
  for (std::size_t i = 0; i < ys.size(); ++i) {
    auto w = o::parameter("w" + std::to_string(i), ys[i].dtype(), ys[i].shape());
    weight_params.push_back(w);
    auto term = o::reduce_sum(ys[i] * w, [&] {
      o::Axes axes;
      for (std::int64_t a = 0; a < ys[i].rank(); ++a) axes.push_back(a);
      return axes;
    }());
    loss = loss.valid() ? loss + term : term;
  }
  return loss;
}

// Forward check, then the gradient graph (with respect to every parameter in `params`) of
// sum_i <w_i, outputs_i> through the JIT against the interpreter.
void check_with_gradient(const std::vector<Value>& params, const std::vector<Value>& outputs,
                         const std::vector<Tensor>& inputs, Tol tol, const std::string& kind,
                         const std::string& backward_kind, std::uint32_t seed) {
  check(Graph(params, outputs), inputs, tol, kind);
  std::vector<Value> weights;
  Value loss = weighted_sum(outputs, weights);
  std::vector<Value> all = params;
  all.insert(all.end(), weights.begin(), weights.end());
  std::vector<Tensor> all_inputs = inputs;
  for (const auto& w : weights) all_inputs.push_back(random_tensor(w.dtype(), w.shape(), seed++));
  std::vector<int> wrt;
  for (std::size_t i = 0; i < params.size(); ++i)
    if (is_floating(params[i].dtype())) wrt.push_back(static_cast<int>(i));
  Graph g = grad(Graph(all, {loss}), wrt, /*keep_outputs=*/true);
  check(g, all_inputs, tol, backward_kind);
}

bool bit_identical(const std::vector<Tensor>& a, const std::vector<Tensor>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (a[i].nbytes() != b[i].nbytes() ||
        std::memcmp(a[i].raw_data(), b[i].raw_data(), a[i].nbytes()) != 0)
      return false;
  return true;
}

const DType kFloatTypes[] = {DType::f32, DType::f64};

}  // namespace

// ---------------------------------------------------------------------------------------------
// softmax

TEST_CASE("softmax kernel matches the interpreter on any axis", "[jit][structured]") {
  struct Case {
    Shape shape;
    std::int64_t axis;
  };
  const Case cases[] = {{{1}, 0},          {{17}, 0},         {{1, 1}, -1},   {{3, 7}, -1},
                        {{3, 7}, 0},       {{2, 5, 3}, 1},    {{4, 3, 2}, 0}, {{2, 1, 33}, -1},
                        {{2, 3, 1, 5}, 2}, {{5, 64, 3}, -1},  {{2, 300}, -1}, {{3, 2, 70}, 1},
                        {{5, 130}, 0},     {{2, 4, 3, 64}, 1}};
  std::uint32_t seed = 1;
  for (DType d : kFloatTypes)
    for (const auto& c : cases) {
      INFO("shape " << shape_to_string(c.shape) << " axis " << c.axis << " " << dtype_name(d));
      auto x = o::parameter("x", d, c.shape);
      // Wide range: the row max must be subtracted for exp not to overflow.
      auto xt = random_tensor(d, c.shape, seed++, -60, 60);
      check_with_gradient({x}, {o::softmax(x, c.axis)}, {xt}, tol_for(d), "softmax", "", seed++);
    }
}

// ---------------------------------------------------------------------------------------------
// layer_norm

TEST_CASE("layer_norm kernels match the interpreter, with and without gamma/beta",
          "[jit][structured]") {
  const Shape shapes[] = {{1, 1}, {1}, {7}, {3, 7}, {2, 3, 65}, {130, 5}, {2, 129}, {4, 64}};
  std::uint32_t seed = 100;
  for (DType d : kFloatTypes)
    for (const auto& s : shapes)
      for (bool affine : {false, true}) {
        INFO("shape " << shape_to_string(s) << (affine ? " affine " : " plain ") << dtype_name(d));
        const std::int64_t c = s.back();
        auto x = o::parameter("x", d, s);
        std::vector<Value> params = {x};
        std::vector<Tensor> inputs = {random_tensor(d, s, seed++, -3, 5)};
        std::optional<Value> gamma, beta;
        if (affine) {
          gamma = o::parameter("gamma", d, {c});
          beta = o::parameter("beta", d, {c});
          params.push_back(*gamma);
          params.push_back(*beta);
          inputs.push_back(random_tensor(d, {c}, seed++, 0.5, 1.5));
          inputs.push_back(random_tensor(d, {c}, seed++));
        }
        auto outs = o::layer_norm_full(x, gamma, beta, 1e-5);
        // y only: the gradient is layer_norm_backward alone.
        check_with_gradient(params, {outs[0]}, inputs, tol_for(d), "layer_norm",
                            "layer_norm_backward", seed++);
        // All three outputs (mean and rstd stored in the node dtype); their gradients add
        // decomposed terms to the backward op's dx.
        check_with_gradient(params, outs, inputs, tol_for(d), "layer_norm", "layer_norm_backward",
                            seed++);
      }
}

TEST_CASE("layer_norm_backward with many rows and column blocks", "[jit][structured]") {
  for (DType d : kFloatTypes) {
    const Shape s = {3, 41, 200};  // 123 rows, 4 column blocks (the last partial)
    auto x = o::parameter("x", d, s);
    auto gamma = o::parameter("gamma", d, {200});
    auto beta = o::parameter("beta", d, {200});
    auto y = o::layer_norm(x, gamma, beta, 1e-3);
    check_with_gradient(
        {x, gamma, beta}, {y},
        {random_tensor(d, s, 7), random_tensor(d, {200}, 8, 0.5, 1.5), random_tensor(d, {200}, 9)},
        tol_for(d), "layer_norm", "layer_norm_backward", 10);
  }
}

// ---------------------------------------------------------------------------------------------
// attention

namespace {

struct AttnCase {
  std::string name;
  Shape batch;  // leading axes
  std::int64_t sq, sk, dim, dv;
  o::AttentionMask::Kind kind;
  std::int64_t window = 0;
  Shape mask_shape = {};  // tensor masks: [Sq, Sk] or q's rank with 1s
  double fill = -1e9;
  double scale = 0;
  double mask_density = 0.6;
  // Tensor masks: allowed(l, i, j) for element (i, j) of the mask's [Sq, Sk] block l (the
  // leading axes flattened) instead of a random mask.
  std::function<bool(std::int64_t, std::int64_t, std::int64_t)> pattern = {};
};

Tensor pattern_mask(const Shape& shape,
                    const std::function<bool(std::int64_t, std::int64_t, std::int64_t)>& allowed) {
  Tensor t(DType::u8, shape);
  const std::int64_t cols = shape.back(), rows = shape[shape.size() - 2];
  for (std::int64_t x = 0; x < t.numel(); ++x)
    t.data<std::uint8_t>()[x] = allowed(x / (rows * cols), x / cols % rows, x % cols) ? 1 : 0;
  return t;
}

Shape with(const Shape& batch, std::int64_t a, std::int64_t b) {
  Shape s = batch;
  s.push_back(a);
  s.push_back(b);
  return s;
}

void check_attention_with(const AttnCase& c, DType d, std::uint32_t seed, bool gradient);

// Every case through both the row and the tiled kernels.
void check_attention(const AttnCase& c, DType d, std::uint32_t seed, bool gradient = true) {
  for (auto kernel : {jit::AttentionKernel::rows, jit::AttentionKernel::tiles}) {
    INFO((kernel == jit::AttentionKernel::tiles ? "tiled kernels" : "row kernels"));
    attention_kernel = kernel;
    check_attention_with(c, d, seed, gradient);
  }
  attention_kernel = jit::AttentionKernel::automatic;
}

void check_attention_with(const AttnCase& c, DType d, std::uint32_t seed, bool gradient) {
  INFO(c.name << " " << dtype_name(d));
  auto q = o::parameter("q", d, with(c.batch, c.sq, c.dim));
  auto k = o::parameter("k", d, with(c.batch, c.sk, c.dim));
  auto v = o::parameter("v", d, with(c.batch, c.sk, c.dv));
  std::vector<Value> params = {q, k, v};
  std::vector<Tensor> inputs = {random_tensor(d, q.shape(), seed, -1.5, 1.5),
                                random_tensor(d, k.shape(), seed + 1, -1.5, 1.5),
                                random_tensor(d, v.shape(), seed + 2)};
  o::AttentionOptions opt;
  opt.fill = c.fill;
  opt.scale = c.scale;
  switch (c.kind) {
    case o::AttentionMask::Kind::none:
      opt.mask = o::AttentionMask::none();
      break;
    case o::AttentionMask::Kind::causal:
      opt.mask = o::AttentionMask::causal();
      break;
    case o::AttentionMask::Kind::window:
      opt.mask = o::AttentionMask::sliding_window(c.window);
      break;
    case o::AttentionMask::Kind::tensor: {
      auto m = o::parameter("mask", DType::u8, c.mask_shape);
      params.push_back(m);
      inputs.push_back(c.pattern ? pattern_mask(c.mask_shape, c.pattern)
                                 : random_mask(c.mask_shape, seed + 3, c.mask_density));
      opt.mask = o::AttentionMask::from_tensor(m);
      break;
    }
  }
  auto outs = o::attention_full(q, k, v, opt);
  if (!gradient) {
    check(Graph(params, outs), inputs, tol_for(d), "attention");
    return;
  }
  // out only: the gradient is attention_backward alone.
  check_with_gradient(params, {outs[0]}, inputs, tol_for(d), "attention", "attention_backward",
                      seed + 10);
  // out and lse (the lse gradient adds decomposed terms to dq and dk).
  check_with_gradient(params, outs, inputs, tol_for(d), "attention", "attention_backward",
                      seed + 20);
}

}  // namespace

TEST_CASE("attention kernels match the interpreter for every mask kind", "[jit][structured]") {
  using K = o::AttentionMask::Kind;
  const AttnCase cases[] = {
      {"none, square", {}, 5, 5, 4, 4, K::none},
      {"none, Sq != Sk, odd sizes", {2}, 3, 7, 5, 3, K::none},
      {"none, single key and query", {}, 1, 1, 1, 1, K::none},
      {"none, two batch axes, scale", {2, 3}, 4, 6, 8, 2, K::none, 0, {}, -1e9, 0.7},
      {"causal", {2}, 9, 9, 4, 5, K::causal},
      {"causal, Sq > Sk", {}, 7, 4, 3, 2, K::causal},
      {"causal, Sq < Sk", {}, 3, 8, 3, 2, K::causal},
      {"window 1", {3}, 6, 6, 4, 4, K::window, 1},
      {"window 3", {2, 2}, 11, 11, 4, 3, K::window, 3},
      {"window = S", {}, 6, 6, 4, 4, K::window, 6},
      {"window > S", {2}, 5, 5, 4, 4, K::window, 50},
      // Rows 7.. have no allowed key (i - w + 1 >= Sk): a uniform average of v.
      {"window, fully masked rows (Sq > Sk)", {}, 10, 5, 3, 2, K::window, 3},
      {"causal, fill -2 (masked keys count)", {2}, 6, 6, 4, 3, K::causal, 0, {}, -2.0},
      {"window, fill 0.5", {}, 8, 8, 3, 3, K::window, 2, {}, 0.5},
      {"window fully masked rows, fill -3", {}, 9, 4, 3, 2, K::window, 2, {}, -3.0},
      {"causal, fill -inf",
       {},
       5,
       5,
       4,
       4,
       K::causal,
       0,
       {},
       -std::numeric_limits<double>::infinity()},
      {"tensor [Sq,Sk]", {2}, 5, 5, 4, 4, K::tensor, 0, {5, 5}},
      {"tensor [Sq,Sk], Sq != Sk", {}, 3, 9, 4, 2, K::tensor, 0, {3, 9}},
      {"tensor, broadcast leading axes", {2, 3}, 4, 6, 4, 3, K::tensor, 0, {1, 3, 4, 6}},
      {"tensor, full leading axes", {2, 3}, 4, 6, 4, 3, K::tensor, 0, {2, 3, 4, 6}},
      {"tensor, leading 1 on the inner axis", {2, 3}, 4, 6, 4, 3, K::tensor, 0, {2, 1, 4, 6}},
      // Density 0.25 over 3 keys: several fully masked rows.
      {"tensor, fully masked rows", {2}, 8, 3, 4, 2, K::tensor, 0, {8, 3}, -1e9, 0, 0.25},
      {"tensor, fill -1", {}, 6, 5, 3, 3, K::tensor, 0, {6, 5}, -1.0},
      {"tensor, all masked", {}, 3, 4, 2, 2, K::tensor, 0, {3, 4}, -1e9, 0, 0.0},
      // More pairs per row than the backward's chunk of 256.
      {"none, multi-chunk", {}, 30, 300, 4, 3, K::none},
      {"causal, multi-chunk", {}, 300, 300, 3, 2, K::causal},
      {"window 270, multi-chunk", {}, 300, 290, 2, 2, K::window, 270},
      {"tensor, multi-chunk", {}, 20, 600, 3, 2, K::tensor, 0, {20, 600}},
  };
  std::uint32_t seed = 1000;
  for (DType d : kFloatTypes)
    for (const auto& c : cases) {
      check_attention(c, d, seed);
      seed += 40;
    }
}

TEST_CASE("tiled attention kernels: partial tiles, key blocks and head sizes",
          "[jit][structured]") {
  // Query tiles are 32 (f32) or 16 (f64) rows on AVX-512 and key blocks 72 keys: sizes that
  // leave partial tiles and blocks, bands that start and end inside a block, and the head
  // sizes 8, 10, 64 and 128.
  using K = o::AttentionMask::Kind;
  const AttnCase cases[] = {
      {"none, S 70, hd 8", {2}, 70, 70, 8, 8, K::none},
      {"causal, S 100, hd 10", {}, 100, 100, 10, 10, K::causal},
      {"causal, Sq 33 < Sk 150, hd 64", {}, 33, 150, 64, 64, K::causal},
      {"window 1, S 45, hd 64", {2}, 45, 45, 64, 64, K::window, 1},
      {"window 7, S 100, hd 128", {}, 100, 100, 128, 128, K::window, 7},
      {"window 64, S 150, hd 64, dv 10", {}, 150, 150, 64, 10, K::window, 64},
      {"window 200 >= S, S 130, hd 8", {}, 130, 130, 8, 8, K::window, 200},
      {"window 20, Sq 50 > Sk 30 (fully masked tail rows)", {}, 50, 30, 8, 4, K::window, 20},
  };
  std::uint32_t seed = 5000;
  for (DType d : kFloatTypes)
    for (const auto& c : cases) {
      check_attention(c, d, seed);
      seed += 40;
    }
}

TEST_CASE("single-pass tiled attention backward: chunks of keys, halos and owned dq rows",
          "[jit][structured]") {
  // Heads of at least the micro-kernel's mr (12 on AVX-512, 6 on AVX2) and 4 or more work
  // items take the single pass; a window mask over fewer than 4 batch entries splits the keys
  // into chunks of max(8 w, 256) (rounded to the tile), whose queries get the keys below the
  // chunk from halo query tiles.
  using K = o::AttentionMask::Kind;
  const AttnCase cases[] = {
      {"window 20, S 600: 3 chunks, partial tiles", {2}, 600, 600, 16, 12, K::window, 20},
      {"window 32, S 1030: 5 chunks, a last chunk of 6 keys",
       {},
       1030,
       1030,
       12,
       12,
       K::window,
       32},
      {"window 40, Sq 400 < Sk 600: 2 chunks of 320", {2}, 400, 600, 12, 16, K::window, 40},
      {"window 24, Sq 500 > Sk 300: fully masked tail rows", {2}, 500, 300, 16, 16, K::window, 24},
      {"window 1, S 300: chunks without halo", {2}, 300, 300, 12, 12, K::window, 1},
      {"window 100, S 450: one chunk per head", {2, 2}, 450, 450, 12, 12, K::window, 100},
      {"window 20, S 600, 4 heads: one chunk per head", {4}, 600, 600, 16, 12, K::window, 20},
      {"window 33, S 600, fill -2 (masked keys count)",
       {2},
       600,
       600,
       12,
       12,
       K::window,
       33,
       {},
       -2.0},
      {"causal, S 130", {4}, 130, 130, 16, 16, K::causal},
      {"causal, Sq 40 < Sk 100, fill 0.5", {4}, 40, 100, 12, 12, K::causal, 0, {}, 0.5},
      {"none, Sq 50 != Sk 90", {2, 2}, 50, 90, 12, 13, K::none},
  };
  std::uint32_t seed = 9000;
  for (DType d : kFloatTypes)
    for (const auto& c : cases) {
      check_attention(c, d, seed);
      seed += 40;
    }
}

namespace {

// A deterministic hash of (a, b, c) in [0, 1).
double hash01(std::int64_t a, std::int64_t b, std::int64_t c) {
  std::uint64_t x = static_cast<std::uint64_t>(a) * 0x9E3779B97F4A7C15ull ^
                    static_cast<std::uint64_t>(b) * 0xC2B2AE3D27D4EB4Full ^
                    static_cast<std::uint64_t>(c) * 0x165667B19E3779F9ull;
  x ^= x >> 29, x *= 0xBF58476D1CE4E5B9ull, x ^= x >> 32;
  return static_cast<double>(x >> 11) / 9007199254740992.0;
}

AttnCase tensor_case(std::string name, Shape batch, std::int64_t sq, std::int64_t sk,
                     Shape mask_shape,
                     std::function<bool(std::int64_t, std::int64_t, std::int64_t)> pattern,
                     double fill = -1e9) {
  AttnCase c{std::move(name), std::move(batch), sq, sk, 16, 8, o::AttentionMask::Kind::tensor};
  c.mask_shape = std::move(mask_shape);
  c.pattern = std::move(pattern);
  c.fill = fill;
  return c;
}

}  // namespace

TEST_CASE("tiled attention kernels with tensor masks: skipped, unmasked and mixed blocks",
          "[jit][structured]") {
  // Query tiles are 32 (f32) or 16 (f64) rows and key blocks 72 keys on AVX-512: the banded
  // masks below have blocks of zeros (skipped), of ones (no per-element test) and mixed
  // blocks, and no size is a multiple of a tile.
  using L = std::int64_t;
  auto window = [](L w) { return [w](L, L i, L j) { return j <= i && j > i - w; }; };
  const AttnCase cases[] = {
      tensor_case("window 150 as a mask, S 300", {}, 300, 300, {300, 300}, window(150)),
      tensor_case("causal as a mask, Sq 100 < Sk 170", {}, 100, 170, {100, 170},
                  [](L, L i, L j) { return j <= i + 70; }),
      tensor_case("all ones, Sq 100, Sk 140", {2}, 100, 140, {100, 140},
                  [](L, L, L) { return true; }),
      // No masked key in any row: fill -1 must not count.
      tensor_case(
          "all ones, fill -1", {}, 150, 150, {150, 150}, [](L, L, L) { return true; }, -1.0),
      // Regions of 16 x 24 on or off, elements of the on regions mostly allowed.
      tensor_case(
          "block sparse", {2}, 120, 200, {120, 200},
          [](L, L i, L j) { return hash01(i / 16, j / 24, 1) < 0.4 && hash01(i, j, 2) < 0.8; }),
      tensor_case("random, Sq 130, Sk 150", {}, 130, 150, {130, 150},
                  [](L, L i, L j) { return hash01(i, j, 3) < 0.5; }),
      // Fully masked rows (every ninth) inside a band: those tiles go to the row kernel.
      tensor_case("fully masked rows", {}, 110, 110, {110, 110},
                  [](L, L i, L j) { return i % 9 != 4 && j <= i && j > i - 80; }),
      // A fill close to the scores: masked keys count, forward and in dv.
      tensor_case("window 90 as a mask, fill -2", {}, 100, 100, {100, 100}, window(90), -2.0),
      tensor_case("all zero", {}, 70, 90, {70, 90}, [](L, L, L) { return false; }),
      // Broadcast leading axes, and masks broadcast along queries or keys.
      tensor_case("[Sq,Sk] mask, [B,nh,S,D] q", {2, 3}, 90, 110, {90, 110}, window(40)),
      tensor_case("per-head mask [1,nh,Sq,Sk]", {2, 3}, 90, 110, {1, 3, 90, 110},
                  [](L l, L i, L j) { return j <= i && j > i - 20 - 30 * l; }),
      tensor_case("per-batch mask [B,1,Sq,Sk]", {2, 3}, 90, 110, {2, 1, 90, 110},
                  [](L l, L i, L j) { return hash01(l, i / 8, j / 8) < 0.5; }),
      tensor_case("key padding per batch [B,1,Sq,Sk]", {2, 2}, 60, 150, {2, 1, 60, 150},
                  [](L l, L, L j) { return j < 140 - 60 * l; }),
      // One key: the mask's key axis broadcasts (stride 0).
      tensor_case("one key", {2}, 70, 1, {70, 1}, [](L, L i, L) { return i % 3 != 0; }),
  };
  std::uint32_t seed = 7000;
  for (DType d : kFloatTypes)
    for (const auto& c : cases) {
      check_attention(c, d, seed);
      seed += 40;
    }
}

TEST_CASE("a one-element change of a tensor mask changes the tiled kernels' result",
          "[jit][structured]") {
  // The comparison against the interpreter is sharp enough to catch one wrong mask element:
  // each mask's result matches its own interpretation and not the other's.
  for (DType d : kFloatTypes) {
    INFO(dtype_name(d));
    const Shape qs = {2, 100, 16}, vs = {2, 100, 8}, ms = {100, 100};
    auto q = o::parameter("q", d, qs);
    auto k = o::parameter("k", d, qs);
    auto v = o::parameter("v", d, vs);
    auto m = o::parameter("mask", DType::u8, ms);
    auto outs = o::attention_full(q, k, v, {o::AttentionMask::from_tensor(m), 0, -1e9});
    std::vector<Value> weights;
    Value loss = weighted_sum({outs[0]}, weights);
    Graph g = grad(Graph({q, k, v, m, weights[0]}, {loss}), {0, 1, 2}, /*keep_outputs=*/true);
    Tensor a = pattern_mask(
        ms, [](std::int64_t, std::int64_t i, std::int64_t j) { return j <= i && j > i - 60; });
    Tensor b = a.clone();
    b.data<std::uint8_t>()[70 * 100 + 40] = 0;  // query 70, key 40: a mixed block
    std::vector<Tensor> in = {random_tensor(d, qs, 1), random_tensor(d, qs, 2),
                              random_tensor(d, vs, 3), a, random_tensor(d, {2, 100, 8}, 4)};
    auto exe = jit::compile(g, shapes_of(in), {.attention_kernel = jit::AttentionKernel::tiles});
    const auto got_a = exe->run(in);
    in[3] = b;
    const auto got_b = exe->run(in);
    const auto want_b = interpret(g, in);
    in[3] = a;
    const auto want_a = interpret(g, in);
    for (std::size_t i = 0; i < got_a.size(); ++i) {
      require_close(got_a[i], want_a[i], tol_for(d), "mask a, output " + std::to_string(i));
      require_close(got_b[i], want_b[i], tol_for(d), "mask b, output " + std::to_string(i));
    }
    // Outputs: loss, dq, dk, dv. The changed pair moves the loss and query 70's gradient.
    const Tol tol = tol_for(d);
    double worst = 0;
    for (std::int64_t x = 0; x < got_a[1].numel(); ++x) {
      const double w = want_b[1].get_as_double(x);
      worst = std::max(
          worst, std::abs(got_a[1].get_as_double(x) - w) / (tol.atol + tol.rtol * std::abs(w)));
    }
    CHECK(worst > 10);
  }
}

TEST_CASE("attention with fill -inf and fully masked rows gives NaN like the interpreter",
          "[jit][structured]") {
  using K = o::AttentionMask::Kind;
  const double inf = std::numeric_limits<double>::infinity();
  for (DType d : kFloatTypes) {
    check_attention({"window, -inf", {}, 6, 3, 2, 2, K::window, 2, {}, -inf}, d, 77, false);
    check_attention({"tensor, -inf", {}, 6, 3, 2, 2, K::tensor, 0, {6, 3}, -inf, 0, 0.3}, d, 78,
                    false);
  }
}

TEST_CASE("attention with more keys than the kernel keeps on the stack", "[jit][structured]") {
  using K = o::AttentionMask::Kind;
  // Sk > 16384: the forward recomputes the scores instead of storing them.
  check_attention({"none, long", {}, 2, 17000, 2, 2, K::none}, DType::f64, 5, false);
  check_attention({"causal, long", {}, 3, 17000, 2, 2, K::causal}, DType::f32, 6, false);
  check_attention({"tensor, long", {}, 2, 16500, 2, 2, K::tensor, 0, {2, 16500}}, DType::f64, 7,
                  false);
}

// ---------------------------------------------------------------------------------------------
// lstm

TEST_CASE("lstm kernels match the interpreter", "[jit][structured]") {
  struct Case {
    std::int64_t batch, steps, in, units;
  };
  const Case cases[] = {
      {1, 1, 1, 1},
      {1, 1, 3, 2},
      {3, 1, 2, 3},
      {2, 5, 4, 3},
      {4, 7, 3, 8},
      {1, 9, 1, 5},
      {5, 3, 6, 1},
      // 4U beyond one register tile of columns, plus a tail: full and partial row blocks.
      {6, 4, 5, 20},
      {9, 2, 3, 33},
      // Several full vectors of 4U columns and of w_hh rows per dot block (backward).
      {10, 3, 4, 64}};
  std::uint32_t seed = 5000;
  for (DType d : kFloatTypes)
    for (const auto& c : cases) {
      INFO("B " << c.batch << " S " << c.steps << " I " << c.in << " U " << c.units << " "
                << dtype_name(d));
      auto x = o::parameter("x", d, {c.batch, c.steps, c.in});
      auto w_ih = o::parameter("w_ih", d, {c.in, 4 * c.units});
      auto w_hh = o::parameter("w_hh", d, {c.units, 4 * c.units});
      auto b = o::parameter("b", d, {4 * c.units});
      auto h0 = o::parameter("h0", d, {c.batch, c.units});
      auto c0 = o::parameter("c0", d, {c.batch, c.units});
      std::vector<Tensor> inputs = {
          random_tensor(d, x.shape(), seed, -2, 2), random_tensor(d, w_ih.shape(), seed + 1),
          random_tensor(d, w_hh.shape(), seed + 2), random_tensor(d, b.shape(), seed + 3),
          random_tensor(d, h0.shape(), seed + 4),   random_tensor(d, c0.shape(), seed + 5)};
      auto outs = o::lstm(x, w_ih, w_hh, b, h0, c0);
      check_with_gradient({x, w_ih, w_hh, b, h0, c0}, outs, inputs, tol_for(d), "lstm_scan",
                          "lstm_scan_backward", seed + 6);
      // Only h_seq used: dc_seq is zeros.
      check_with_gradient({x, w_ih, w_hh, b, h0, c0}, {outs[0]}, inputs, tol_for(d), "lstm_scan",
                          "lstm_scan_backward", seed + 7);
      seed += 20;
    }
}

// ---------------------------------------------------------------------------------------------
// determinism

TEST_CASE("structured kernels give bit-identical results for any thread count",
          "[jit][structured]") {
  const DType d = DType::f32;
  auto q = o::parameter("q", d, {2, 3, 33, 16});
  auto k = o::parameter("k", d, {2, 3, 29, 16});
  auto v = o::parameter("v", d, {2, 3, 29, 8});
  auto x = o::parameter("x", d, {37, 70});
  auto gamma = o::parameter("gamma", d, {70});
  auto beta = o::parameter("beta", d, {70});
  auto xs = o::parameter("xs", d, {5, 6, 7});
  auto w_ih = o::parameter("w_ih", d, {7, 12});
  auto w_hh = o::parameter("w_hh", d, {3, 12});
  auto bias = o::parameter("bias", d, {12});
  auto h0 = o::parameter("h0", d, {5, 3});
  auto c0 = o::parameter("c0", d, {5, 3});
  auto att = o::attention(q, k, v, {o::AttentionMask::sliding_window(5), 0, -1e9});
  auto ln = o::layer_norm(x, gamma, beta, 1e-5);
  auto hs = o::lstm(xs, w_ih, w_hh, bias, h0, c0)[0];
  std::vector<Value> params = {q, k, v, x, gamma, beta, xs, w_ih, w_hh, bias, h0, c0};
  Value loss = o::reduce_sum(att * att, {0, 1, 2, 3}) +
               o::reduce_sum(ln * o::softmax(ln, 0), {0, 1}) + o::reduce_sum(hs * hs, {0, 1, 2});
  std::vector<int> wrt;
  for (int i = 0; i < static_cast<int>(params.size()); ++i) wrt.push_back(i);
  Graph g = grad(Graph(params, {loss}), wrt, true);
  std::vector<Tensor> inputs;
  std::uint32_t seed = 9000;
  for (const auto& p : params) inputs.push_back(random_tensor(d, p.shape(), seed++));
  jit::Options one, many;
  one.threads = 1;
  many.threads = 3;
  auto a = jit::compile(g, shapes_of(inputs), one)->run(inputs);
  auto b = jit::compile(g, shapes_of(inputs), many)->run(inputs);
  CHECK(bit_identical(a, b));
  // And twice on the same executable.
  auto exe = jit::compile(g, shapes_of(inputs), many);
  CHECK(bit_identical(exe->run(inputs), exe->run(inputs)));
  const auto want = interpret(g, inputs);
  for (std::size_t i = 0; i < a.size(); ++i)
    require_close(a[i], want[i], {1e-4, 1e-4}, "gradient " + std::to_string(i));
}

TEST_CASE("attention with q, k and v the same value", "[jit][structured]") {
  for (DType d : kFloatTypes) {
    auto x = o::parameter("x", d, {2, 7, 5});
    auto y = o::attention(x, x, x, {o::AttentionMask::causal(), 0, -1e9});
    check_with_gradient({x}, {y}, {random_tensor(d, {2, 7, 5}, 31)}, tol_for(d), "attention",
                        "attention_backward", 32);
  }
}

TEST_CASE("the automatic attention kernel rule", "[jit][attention]") {
  // The measured rule of choose_attention_kernels.cpp, pinned: a band of 48 keys for
  // predicate and tensor masks, and never tiles for fewer query rows than a tile has.
  auto chosen = [](std::int64_t sq, std::int64_t sk, ops::AttentionMask mask) {
    Value q = o::parameter("q", DType::f32, {2, 2, sq, 16});
    Value k = o::parameter("k", DType::f32, {2, 2, sk, 16});
    Value v = o::parameter("v", DType::f32, {2, 2, sk, 16});
    std::vector<Value> in = {q, k, v};
    if (mask.kind == ops::AttentionMask::Kind::tensor) {
      mask.tensor = o::parameter("m", DType::u8, {sq, sk});
      in.push_back(mask.tensor);
    }
    ops::AttentionOptions opt;
    opt.mask = mask;
    Graph g(in, {o::attention(q, k, v, opt)});
    const Graph rewritten = jit::choose_attention_kernels(g, jit::AttentionKernel::automatic);
    for (const Node* n : rewritten.nodes())
      if (n->op() == Op::attention) return n->attrs().get_string("kernel");
    return std::string("none");
  };
  const auto tensor = ops::AttentionMask::from_tensor(Value());
  CHECK(chosen(512, 512, ops::AttentionMask::sliding_window(256)) == "tiles");
  CHECK(chosen(512, 512, ops::AttentionMask::sliding_window(64)) == "tiles");
  CHECK(chosen(512, 512, ops::AttentionMask::sliding_window(47)) == "rows");
  CHECK(chosen(60, 60, ops::AttentionMask::sliding_window(60)) == "tiles");
  CHECK(chosen(64, 64, tensor) == "tiles");
  CHECK(chosen(40, 40, tensor) == "rows");
  // A pruned or absorbed attention: a few query rows over many keys.
  CHECK(chosen(4, 60, tensor) == "rows");
  CHECK(chosen(1, 512, ops::AttentionMask::causal()) == "rows");
}
