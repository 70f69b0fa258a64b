// Seeded random-graph differential testing of the JIT against the interpreter, in the spirit of
// NNSmith: every seed builds a valid random graph (elementwise unary and binary ops with
// implicit broadcasting, reductions, layout ops, take, select, dot_general/matmul with random
// batch and contracting layouts, operands transposed or not, GEMM epilogues, now and then a
// softmax or layer_norm), once in f64 and once in f32 with the same
// structure and inputs, compiles it and compares the JIT's outputs with the interpreter's.
//
// Values stay bounded and NaN-free by construction: every value carries a bound on its
// magnitude; exp, sin/cos, pow, products and contractions first squash large operands with
// tanh, and log, sqrt, rsqrt, pow's base and divisors take abs(x) + 0.5 or x * x + 0.25.
//
// Tolerance, per output, with s = max |interpreter| over the output and e the interpreter's
// own rounding error, estimated as max |f32 interpreter - f64 interpreter| on the same
// (f32-rounded) inputs, scaled by 2^-29 for f64 (the ratio of the unit roundoffs):
//   f64: |jit - interpreter| <= 1e-12 (|interpreter| + s) + 8 e + 1e-13
//   f32: |jit - interpreter| <= 2e-5 (|interpreter| + s) + 8 e + 1e-6
// so an ill-conditioned graph (a cancellation to ~0, say) loosens its own tolerance, while a
// wrong index, a missed broadcast or a dropped epilogue is off by O(s).
//
// Reproduce one seed: EDF_RANDOM_GRAPH_SEED=<seed> ./jit_tests "[random]" prints the
// graphs and results for that seed only. EDF_RANDOM_GRAPHS=<n> changes the number of seeds per
// test case. Runs never touch the disk cache (Options::disk_cache = false).
#include <edifice/core/interpreter.hpp>
#include <edifice/core/ops.hpp>
#include <edifice/jit/jit.hpp>

#include <fmt/format.h>
#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <map>
#include <numeric>
#include <optional>
#include <random>
#include <string>
#include <vector>

using namespace edifice;
namespace o = edifice::ops;

namespace {

// ---------------------------------------------------------------------------------------------
// Randomness: our own mappings of mt19937_64 words, identical on every platform.

class Rng {
 public:
  explicit Rng(std::uint64_t seed) : g_(seed) {}
  /// Uniform integer in [lo, hi].
  std::int64_t integer(std::int64_t lo, std::int64_t hi) {
    return lo + static_cast<std::int64_t>(g_() % static_cast<std::uint64_t>(hi - lo + 1));
  }
  double uniform(double lo, double hi) {
    return lo + (hi - lo) * (static_cast<double>(g_() >> 11) * 0x1.0p-53);
  }
  bool coin(double p) { return uniform(0, 1) < p; }
  template <class T>
  const T& pick(const std::vector<T>& v) {
    return v[static_cast<std::size_t>(integer(0, static_cast<std::int64_t>(v.size()) - 1))];
  }
  template <class T>
  void shuffle(std::vector<T>& v) {
    for (std::size_t i = v.size(); i > 1; --i)
      std::swap(v[i - 1],
                v[static_cast<std::size_t>(integer(0, static_cast<std::int64_t>(i) - 1))]);
  }

 private:
  std::mt19937_64 g_;
};

std::int64_t numel(const Shape& s) {
  return std::accumulate(s.begin(), s.end(), std::int64_t{1}, std::multiplies<>());
}

bool broadcastable(const Shape& a, const Shape& b) {
  for (std::size_t i = 1; i <= std::min(a.size(), b.size()); ++i) {
    std::int64_t x = a[a.size() - i], y = b[b.size() - i];
    if (x != y && x != 1 && y != 1) return false;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// The generator. The random decisions never depend on the dtype, so the f64 and the f32 graph
// of a seed have the same structure and (rounded) inputs.

struct Item {
  Value v;
  double bound;  // |every element| <= bound
};

struct Case {
  Graph graph;
  std::vector<Tensor> inputs;
  std::vector<std::string> ops;  // op kinds the generator chose, for statistics
};

class Generator {
 public:
  Generator(std::uint64_t seed, DType ft)
      : r_(seed), data_(seed ^ 0x9e3779b97f4a7c15ULL), ft_(ft) {}

  Case build() {
    int n_inputs = static_cast<int>(r_.integer(1, 3));
    for (int i = 0; i < n_inputs; ++i)
      pool_.push_back(new_param(random_shape(r_.coin(0.08) ? 0 : 1, 4)));
    int n_ops = static_cast<int>(r_.integer(3, 14));
    for (int i = 0; i < n_ops; ++i) step();
    Vals outputs = {pool_.back().v};
    if (pool_.size() > 2 && r_.coin(0.4)) outputs.push_back(r_.pick(pool_).v);
    if (r_.coin(0.1)) outputs.push_back(params_[0]);
    return Case{Graph(params_, outputs), inputs_, chosen_};
  }

 private:
  using Vals = std::vector<Value>;

  Shape random_shape(int min_rank, int max_rank, std::int64_t max_numel = 192) {
    while (true) {
      Shape s(static_cast<std::size_t>(r_.integer(min_rank, max_rank)));
      for (auto& e : s) e = r_.integer(1, 6);
      if (numel(s) <= max_numel) return s;
    }
  }

  Item new_param(const Shape& shape) {
    Value p = o::parameter(fmt::format("p{}", params_.size()), ft_, shape);
    params_.push_back(p);
    // Inputs in [-1, 1), drawn in double and rounded to f32 whatever the dtype under test.
    Tensor t(ft_, shape);
    for (std::int64_t i = 0; i < t.numel(); ++i)
      t.set_from_double(i, static_cast<double>(static_cast<float>(data_.uniform(-1, 1))));
    inputs_.push_back(t);
    return {p, 1.0};
  }

  Value new_index_param(const Shape& shape, std::int64_t n, DType dtype) {
    Value p = o::parameter(fmt::format("p{}", params_.size()), dtype, shape);
    params_.push_back(p);
    Tensor t(dtype, shape);
    for (std::int64_t i = 0; i < t.numel(); ++i)
      t.set_from_double(i, static_cast<double>(data_.integer(0, n - 1)));
    inputs_.push_back(t);
    return p;
  }

  // Recent values are picked more often (chains); older ones give values with several users.
  Item pick() { return r_.coin(0.55) ? pool_.back() : r_.pick(pool_); }

  void push(Item it, std::string what) {
    pool_.push_back(std::move(it));
    chosen_.push_back(std::move(what));
  }

  Item tame(const Item& x, double limit) {
    if (x.bound <= limit) return x;
    return {o::tanh(x.v), 1.0};
  }
  /// A value >= lo > 0 from x.
  Item positive(const Item& x, double* lo) {
    if (r_.coin(0.5)) {
      *lo = 0.5;
      return {o::abs(x.v) + 0.5, x.bound + 0.5};
    }
    Item t = tame(x, 30);
    *lo = 0.25;
    return {t.v * t.v + 0.25, t.bound * t.bound + 0.25};
  }
  /// Squash anything that grew large so products and sums stay far from overflow.
  Item keep_small(const Item& x) { return tame(x, 64); }

  void step() {
    switch (r_.integer(0, 11)) {
      case 0:
      case 1:
      case 2:
        return unary();
      case 3:
      case 4:
      case 5:
        return binary();
      case 6:
        return reduce();
      case 7:
        return layout();
      case 8:
        return layout();
      case 9:
        return dot();
      case 10:
        return combine();
      case 11:
        return gather_or_select();
    }
  }

  void unary() {
    Item x = pick();
    double lo = 0;
    if (x.v.rank() > 0 && r_.coin(0.08)) {
      // Structured ops inside random surroundings. eps 0.1 keeps layer_norm from amplifying
      // rounding noise of nearly constant rows (rstd <= 1 / sqrt(0.1)).
      if (r_.coin(0.5))
        return push({o::softmax(x.v, r_.integer(-x.v.rank(), x.v.rank() - 1)), 1.0}, "softmax");
      double n = static_cast<double>(x.v.shape().back());
      return push({o::layer_norm(x.v, 0.1), std::sqrt(n)}, "layer_norm");
    }
    switch (r_.integer(0, 12)) {
      case 0:
        return push({o::neg(x.v), x.bound}, "neg");
      case 1:
        return push({o::abs(x.v), x.bound}, "abs");
      case 2: {
        Item t = tame(x, 3);
        return push({o::exp(t.v), std::exp(t.bound)}, "exp");
      }
      case 3: {
        Item p = positive(x, &lo);
        return push({o::log(p.v), std::max(std::abs(std::log(lo)), std::log(p.bound))}, "log");
      }
      case 4: {
        Item p = positive(x, &lo);
        return push({o::sqrt(p.v), std::sqrt(p.bound)}, "sqrt");
      }
      case 5: {
        Item p = positive(x, &lo);
        return push({o::rsqrt(p.v), 1.0 / std::sqrt(lo)}, "rsqrt");
      }
      case 6:
        return push({o::tanh(x.v), 1.0}, "tanh");
      case 7:
        return push({o::sigmoid(x.v), 1.0}, "sigmoid");
      case 8:
        return push({o::erf(x.v), 1.0}, "erf");
      case 9:
        return push({o::sin(tame(x, 8).v), 1.0}, "sin");
      case 10:
        return push({o::cos(tame(x, 8).v), 1.0}, "cos");
      case 11:
        return push({o::relu(x.v), x.bound}, "relu");
      default:
        return push({o::gelu(x.v), x.bound}, "gelu");
    }
  }

  /// A value that broadcasts against `a`.
  Item partner(const Item& a) {
    std::vector<Item> candidates;
    for (const Item& it : pool_)
      if (broadcastable(it.v.shape(), a.v.shape()) && it.v.rank() <= 4) candidates.push_back(it);
    switch (r_.integer(0, 9)) {
      case 0:
      case 1:
      case 2:
        if (!candidates.empty()) return r_.pick(candidates);
        [[fallthrough]];
      case 3:
      case 4:
      case 5:
      case 6: {
        // A fresh input of a broadcastable shape: fewer leading axes, some extents 1.
        const Shape& s = a.v.shape();
        auto drop = static_cast<std::size_t>(r_.integer(0, static_cast<std::int64_t>(s.size())));
        Shape b(s.begin() + static_cast<std::ptrdiff_t>(drop), s.end());
        for (auto& e : b)
          if (r_.coin(0.35)) e = 1;
        return new_param(b);
      }
      case 7:
      case 8: {
        // A reduction of `a` kept as extent-1 axes: x - max(x), x / sum(x)...
        if (a.v.rank() == 0) return a;
        o::Axes axes = random_axes(a.v.rank(), false);
        switch (r_.integer(0, 2)) {
          case 0:
            return {o::reduce_max(a.v, axes, true), a.bound};
          case 1:
            return {o::reduce_mean(a.v, axes, true), a.bound};
          default: {
            double n = 1;
            for (auto ax : axes)
              n *= static_cast<double>(a.v.shape()[static_cast<std::size_t>(ax)]);
            return {o::reduce_sum(a.v, axes, true), a.bound * n};
          }
        }
      }
      default:
        return a;
    }
  }

  void binary() {
    Item a = keep_small(pick());
    Item b = keep_small(partner(a));
    if (r_.coin(0.5)) std::swap(a, b);
    double lo = 0;
    switch (r_.integer(0, 7)) {
      case 0:
        return push({a.v + b.v, a.bound + b.bound}, "add");
      case 1:
        return push({a.v - b.v, a.bound + b.bound}, "sub");
      case 2:
        return push({a.v * b.v, a.bound * b.bound}, "mul");
      case 3: {
        Item p = positive(b, &lo);
        return push({a.v / p.v, a.bound / lo}, "div");
      }
      case 4:
        return push({o::max(a.v, b.v), std::max(a.bound, b.bound)}, "max");
      case 5:
        return push({o::min(a.v, b.v), std::max(a.bound, b.bound)}, "min");
      case 6: {
        Item base = positive(tame(a, 3), &lo);
        Item e = tame(b, 2);
        double hi = std::max(std::pow(base.bound, e.bound), std::pow(lo, -e.bound));
        return push({o::pow(base.v, e.v), hi}, "pow");
      }
      default: {
        double c = std::round(r_.uniform(-2, 2) * 4) / 4;
        return push({a.v * c + b.v, a.bound * std::abs(c) + b.bound}, "scale-add");
      }
    }
  }

  o::Axes random_axes(std::int64_t rank, bool allow_negative) {
    std::vector<std::int64_t> all(static_cast<std::size_t>(rank));
    std::iota(all.begin(), all.end(), 0);
    r_.shuffle(all);
    o::Axes axes(all.begin(), all.begin() + r_.integer(1, rank));
    if (allow_negative)
      for (auto& ax : axes)
        if (r_.coin(0.3)) ax -= rank;
    return axes;
  }

  void reduce() {
    Item x = keep_small(pick());
    if (x.v.rank() == 0) return unary();
    o::Axes axes = random_axes(x.v.rank(), true);
    bool keep = r_.coin(0.3);
    double n = 1;
    for (auto ax : axes)
      n *=
          static_cast<double>(x.v.shape()[static_cast<std::size_t>(ax < 0 ? ax + x.v.rank() : ax)]);
    switch (r_.integer(0, 2)) {
      case 0:
        return push({o::reduce_sum(x.v, axes, keep), x.bound * n}, "reduce_sum");
      case 1:
        return push({o::reduce_max(x.v, axes, keep), x.bound}, "reduce_max");
      default:
        return push({o::reduce_mean(x.v, axes, keep), x.bound}, "reduce_mean");
    }
  }

  void layout() {
    Item x = pick();
    const Shape& s = x.v.shape();
    auto rank = static_cast<std::int64_t>(s.size());
    switch (r_.integer(0, 4)) {
      case 0: {
        // Reshape to a random factorisation of the element count.
        std::vector<std::int64_t> factors;
        std::int64_t n = numel(s);
        for (std::int64_t f = 2; n > 1;)
          if (n % f == 0) {
            factors.push_back(f);
            n /= f;
          } else {
            ++f;
          }
        r_.shuffle(factors);
        Shape t;
        for (std::int64_t f : factors)
          if (!t.empty() && r_.coin(0.5))
            t.back() *= f;
          else
            t.push_back(f);
        while (t.size() < 4 && r_.coin(0.25))
          t.insert(t.begin() + r_.integer(0, static_cast<std::int64_t>(t.size())), 1);
        if (t.size() > 4) return unary();
        return push({o::reshape(x.v, t), x.bound}, "reshape");
      }
      case 1: {
        if (rank < 2) return push({o::reshape(x.v, {numel(s), 1}), x.bound}, "reshape");
        std::vector<std::int64_t> perm(static_cast<std::size_t>(rank));
        std::iota(perm.begin(), perm.end(), 0);
        r_.shuffle(perm);
        return push({o::transpose(x.v, perm), x.bound}, "transpose");
      }
      case 2: {
        if (rank == 0) return unary();
        o::Axes start, limit, stride;
        for (std::int64_t e : s) {
          std::int64_t a = r_.integer(0, e - 1);
          start.push_back(a);
          limit.push_back(r_.integer(a + 1, e));
          stride.push_back(r_.coin(0.3) ? r_.integer(2, 3) : 1);
        }
        return push({o::slice(x.v, start, limit, stride), x.bound}, "slice");
      }
      case 3: {
        if (rank == 0) return unary();
        o::Axes low, high, interior;
        for (std::size_t a = 0; a < s.size(); ++a) {
          low.push_back(r_.integer(0, 2));
          high.push_back(r_.integer(0, 2));
          interior.push_back(r_.coin(0.2) ? 1 : 0);
        }
        double value = std::round(r_.uniform(-1, 1) * 8) / 8;
        Value p = o::pad(x.v, value, low, high, interior);
        if (numel(p.shape()) > 2048) return unary();
        return push({p, std::max(x.bound, std::abs(value))}, "pad");
      }
      default: {
        // Concat with a fresh input, with a function of x, or with a slice of x.
        if (rank == 0) return unary();
        std::int64_t axis = r_.integer(0, rank - 1);
        Vals parts = {x.v};
        double bound = x.bound;
        switch (r_.integer(0, 2)) {
          case 0: {
            Shape t = s;
            t[static_cast<std::size_t>(axis)] = r_.integer(1, 4);
            parts.push_back(new_param(t).v);
            bound = std::max(bound, 1.0);
            break;
          }
          case 1:
            parts.push_back(o::sin(tame(x, 8).v));
            break;
          default:
            parts.insert(
                parts.begin(),
                o::slice_axis(x.v, axis, 0, r_.integer(1, s[static_cast<std::size_t>(axis)])));
        }
        if (r_.coin(0.3)) parts.push_back(o::neg(x.v));
        return push({o::concat(parts, r_.coin(0.3) ? axis - rank : axis), bound}, "concat");
      }
    }
  }

  /// dot_general of a pool value with a fresh input laid out at random: batch, contracting and
  /// free axes in any order on both sides (so operands are "transposed" in every way), operands
  /// swapped, axes sometimes negative; or matmul, sometimes of explicitly transposed operands.
  void dot() {
    Item x = tame(pick(), 4);
    const Shape& s = x.v.shape();
    auto rank = static_cast<std::int64_t>(s.size());
    if (rank == 0) {
      x = new_param(random_shape(2, 3, 64));
      return push(x, "param");
    }
    if (rank >= 2 && r_.coin(0.25)) {
      // matmul: x [..., M, K] times w [K, N] or [..., K, N], w maybe built as a transpose.
      std::int64_t k = s.back(), n = r_.integer(1, 6);
      Shape batch(s.begin(), s.end() - 2);
      Shape ws = {k, n};
      if (!batch.empty() && r_.coin(0.5)) {
        ws = batch;
        ws.push_back(k);
        ws.push_back(n);
      }
      Value w;
      if (r_.coin(0.4)) {
        Shape wt = ws;
        std::swap(wt[wt.size() - 1], wt[wt.size() - 2]);
        std::vector<std::int64_t> perm(wt.size());
        std::iota(perm.begin(), perm.end(), 0);
        std::swap(perm[perm.size() - 1], perm[perm.size() - 2]);
        w = o::transpose(new_param(wt).v, perm);
      } else {
        w = new_param(ws).v;
      }
      return push({o::matmul(x.v, w), x.bound * static_cast<double>(k)}, "matmul");
    }
    std::vector<std::int64_t> axes(static_cast<std::size_t>(rank));
    std::iota(axes.begin(), axes.end(), 0);
    r_.shuffle(axes);
    std::int64_t nb = rank >= 3 ? r_.integer(0, 1) : (rank == 2 && r_.coin(0.2) ? 1 : 0);
    std::int64_t nc = r_.coin(0.1) ? 0 : r_.integer(1, std::min<std::int64_t>(2, rank - nb));
    std::int64_t nf = r_.integer(0, 2);
    if (nb + nc + nf == 0) nf = 1;
    // rhs axes: positions of its batch, contracting and free axes, shuffled.
    std::vector<std::int64_t> pos(static_cast<std::size_t>(nb + nc + nf));
    std::iota(pos.begin(), pos.end(), 0);
    r_.shuffle(pos);
    Shape ws(pos.size());
    o::DotDims d;
    std::size_t p = 0;
    double k = 1;
    for (std::int64_t i = 0; i < nb; ++i, ++p) {
      d.lhs_batch.push_back(axes[static_cast<std::size_t>(i)]);
      d.rhs_batch.push_back(pos[p]);
      ws[static_cast<std::size_t>(pos[p])] =
          s[static_cast<std::size_t>(axes[static_cast<std::size_t>(i)])];
    }
    for (std::int64_t i = nb; i < nb + nc; ++i, ++p) {
      std::int64_t ax = axes[static_cast<std::size_t>(i)];
      d.lhs_contract.push_back(ax);
      d.rhs_contract.push_back(pos[p]);
      ws[static_cast<std::size_t>(pos[p])] = s[static_cast<std::size_t>(ax)];
      k *= static_cast<double>(s[static_cast<std::size_t>(ax)]);
    }
    for (; p < pos.size(); ++p) ws[static_cast<std::size_t>(pos[p])] = r_.integer(1, 6);
    Value w = new_param(ws).v;
    if (r_.coin(0.2)) {
      for (auto& a : d.lhs_contract) a -= rank;
      for (auto& a : d.rhs_contract) a -= static_cast<std::int64_t>(ws.size());
    }
    Value out;
    if (r_.coin(0.5)) {
      out = o::dot_general(x.v, w, d);
    } else {
      out = o::dot_general(w, x.v, {d.rhs_contract, d.lhs_contract, d.rhs_batch, d.lhs_batch});
    }
    if (out.rank() > 4 || numel(out.shape()) > 4096) return unary();
    push({out, x.bound * k}, "dot_general");
    // Often a bias and an activation follow: the GEMM epilogue pattern.
    if (r_.coin(0.5)) {
      Item y = pool_.back();
      Shape bs = {y.v.rank() > 0 ? y.v.shape().back() : 1};
      Item b = new_param(bs);
      Value z = y.v + b.v;
      switch (r_.integer(0, 3)) {
        case 0:
          z = o::gelu(z);
          break;
        case 1:
          z = o::relu(z);
          break;
        case 2:
          z = o::tanh(z);
          break;
        default:
          break;
      }
      push({z, y.bound + 1}, "epilogue");
    }
  }

  /// Several values at once: the same value used by two ops, then joined.
  void combine() {
    Item x = keep_small(pick());
    Item a = {o::sin(tame(x, 8).v), 1.0};
    Item b = {o::sigmoid(x.v), 1.0};
    push({a.v * b.v + x.v, x.bound + 1}, "shared");
  }

  /// take with in-range indices, or select on a comparison of inputs (exact, so the JIT and
  /// the interpreter pick the same side).
  void gather_or_select() {
    Item x = pick();
    if (x.v.rank() > 0 && r_.coin(0.5)) {
      std::int64_t axis = r_.integer(0, x.v.rank() - 1);
      Shape is = random_shape(0, 2, 8);
      Value idx = new_index_param(is, x.v.shape()[static_cast<std::size_t>(axis)],
                                  r_.coin(0.5) ? DType::i32 : DType::i64);
      Value t = o::take(x.v, idx, r_.coin(0.3) ? axis - x.v.rank() : axis);
      if (t.rank() > 4) return unary();
      return push({t, x.bound}, "take");
    }
    Item a = new_param(x.v.shape());
    Item b = new_param(x.v.shape());
    Item y = partner(x);
    return push({o::select(o::gt(a.v, b.v), x.v, y.v), std::max(x.bound, y.bound)}, "select");
  }

  Rng r_;
  Rng data_;
  DType ft_;
  Vals params_;
  std::vector<Tensor> inputs_;
  std::vector<Item> pool_;
  std::vector<std::string> chosen_;
};

// ---------------------------------------------------------------------------------------------
// Running and comparing

jit::Options options() {
  jit::Options opt;
  opt.disk_cache = false;
  return opt;
}

std::vector<Shape> shapes_of(const std::vector<Tensor>& ts) {
  std::vector<Shape> s;
  for (const Tensor& t : ts) s.push_back(t.shape());
  return s;
}

struct Stats {
  int graphs = 0;
  int failures = 0;
  double compile_seconds = 0;
  double worst_f64 = 0, worst_f32 = 0;  // largest error / allowed, over passing graphs
  std::map<std::string, int> kernels;   // by kind
  std::map<std::string, int> ops;       // nodes by op
  int nodes = 0;
};

/// Output `k`: the largest ratio of |jit - interpreter| to the allowed error (see the top of
/// the file), with a report of the worst elements. `f32` and `f64` are the interpreter's
/// results for the two dtypes of the seed.
double excess(const Tensor& got, const Tensor& want, const Tensor& f32, const Tensor& f64,
              std::string& report) {
  const bool is_f64 = want.dtype() == DType::f64;
  double s = 0, spread = 0;
  for (std::int64_t i = 0; i < want.numel(); ++i) {
    s = std::max(s, std::abs(want.get_as_double(i)));
    spread = std::max(spread, std::abs(f32.get_as_double(i) - f64.get_as_double(i)));
  }
  // The interpreter's own rounding error at this dtype, estimated from the f32 run: rounding
  // errors scale with the unit roundoff, 2^-29 times smaller in f64.
  const double own = is_f64 ? spread * 0x1p-29 : spread;
  const double rtol = is_f64 ? 1e-12 : 2e-5;
  const double floor = is_f64 ? 1e-13 : 1e-6;
  double worst = 0;
  int shown = 0;
  for (std::int64_t i = 0; i < want.numel(); ++i) {
    double g = got.get_as_double(i), w = want.get_as_double(i);
    double allowed = rtol * (std::abs(w) + s) + 8 * own + floor;
    double err = std::abs(g - w);
    double ratio = std::isnan(g) && std::isnan(w)           ? 0
                   : !std::isfinite(g) || !std::isfinite(w) ? (g == w ? 0 : INFINITY)
                                                            : err / allowed;
    if (ratio > 1 && shown++ < 6)
      report += fmt::format("  element {}: jit {:.17g}, interpreter {:.17g} (allowed {:.3g})\n", i,
                            g, w, allowed);
    worst = std::max(worst, ratio);
  }
  report = fmt::format("  max |interpreter| {:.6g}, interpreter's estimated own error {:.3g}\n", s,
                       own) +
           report;
  return worst;
}

void check_seed(std::uint64_t seed, Stats& stats, bool verbose) {
  // The same structure in both dtypes; the f64 interpreter's result on the f32-rounded inputs
  // is the yardstick for the f32 interpreter's own error.
  Case c64 = Generator(seed, DType::f64).build();
  Case c32 = Generator(seed, DType::f32).build();
  std::vector<Tensor> interpreted64 = interpret(c64.graph, c64.inputs);
  std::vector<Tensor> interpreted32 = interpret(c32.graph, c32.inputs);
  for (const Case* c : {&c64, &c32}) {
    DType ft = c == &c64 ? DType::f64 : DType::f32;
    std::string where = fmt::format("seed {} ({}), reproduce with EDF_RANDOM_GRAPH_SEED={}", seed,
                                    dtype_name(ft), seed);
    std::string shapes;
    for (const Tensor& t : c->inputs)
      shapes += fmt::format(" {}{}", dtype_name(t.dtype()), shape_to_string(t.shape()));
    if (verbose)
      std::printf("%s\ninputs:%s\n%s\n", where.c_str(), shapes.c_str(),
                  c->graph.to_string().c_str());
    ++stats.graphs;
    const std::vector<Tensor>& want = ft == DType::f64 ? interpreted64 : interpreted32;
    std::shared_ptr<const jit::Executable> exe;
    std::vector<Tensor> got;
    try {
      auto t0 = std::chrono::steady_clock::now();
      exe = jit::compile(c->graph, shapes_of(c->inputs), options());
      stats.compile_seconds +=
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      got = exe->run(c->inputs);
    } catch (const std::exception& e) {
      ++stats.failures;
      FAIL_CHECK(where << ": the JIT threw:\n"
                       << e.what() << "\ninputs:" << shapes << "\n"
                       << c->graph.to_string());
      continue;
    }
    if (verbose) std::printf("plan:\n%s\n", exe->plan().c_str());
    for (const jit::KernelInfo& k : exe->kernels()) ++stats.kernels[k.kind];
    for (const Node* n : c->graph.nodes()) {
      ++stats.ops[std::string(op_name(n->op()))];
      ++stats.nodes;
    }
    bool ok = got.size() == want.size();
    std::string report;
    double worst = 0;
    for (std::size_t k = 0; ok && k < want.size(); ++k) {
      if (got[k].dtype() != want[k].dtype() || got[k].shape() != want[k].shape()) {
        report += fmt::format("output {}: jit {}{}, interpreter {}{}\n", k,
                              dtype_name(got[k].dtype()), shape_to_string(got[k].shape()),
                              dtype_name(want[k].dtype()), shape_to_string(want[k].shape()));
        ok = false;
        break;
      }
      std::string r;
      double e = excess(got[k], want[k], interpreted32[k], interpreted64[k], r);
      if (e > 1 || verbose)
        report += fmt::format("output {} (worst error / allowed {:.3g}):\n{}", k, e, r);
      worst = std::max(worst, e);
    }
    ok = ok && worst <= 1;
    if (verbose) std::printf("%s\n", report.c_str());
    if (!ok) {
      ++stats.failures;
      FAIL_CHECK(where << ": the JIT's results differ from the interpreter's\n"
                       << report << "inputs:" << shapes << "\n"
                       << c->graph.to_string() << "plan:\n"
                       << exe->plan());
      continue;
    }
    double& w = ft == DType::f64 ? stats.worst_f64 : stats.worst_f32;
    w = std::max(w, worst);
  }
}

std::optional<std::uint64_t> env_int(const char* name) {
  const char* v = std::getenv(name);
  if (!v || !*v) return std::nullopt;
  return std::strtoull(v, nullptr, 10);
}

void check_seeds(const std::vector<std::uint64_t>& seeds, const std::string& label, bool verbose) {
  Stats stats;
  auto t0 = std::chrono::steady_clock::now();
  for (std::uint64_t s : seeds) {
    try {
      check_seed(s, stats, verbose);
    } catch (const std::exception& e) {
      ++stats.failures;
      FAIL_CHECK("seed " << s << ": building or interpreting the graph threw (a generator bug):\n"
                         << e.what());
    }
  }
  double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  // Printed for the record; a failure above already names its seed.
  std::printf(
      "random graphs, %s: %d graphs, %d failed, %.1f s (%.1f s compiling), worst error/allowed "
      "f64 %.3g, f32 %.3g\n",
      label.c_str(), stats.graphs, stats.failures, total, stats.compile_seconds, stats.worst_f64,
      stats.worst_f32);
  std::string kernels, ops;
  for (const auto& [kind, n] : stats.kernels) kernels += fmt::format(" {} {}", n, kind);
  for (const auto& [op, n] : stats.ops) ops += fmt::format(" {}:{}", op, n);
  std::printf("  %d nodes; kernels:%s\n  ops:%s\n", stats.nodes, kernels.c_str(), ops.c_str());
  CHECK(stats.failures == 0);
}

/// Seeds [first, first + count); EDF_RANDOM_GRAPHS overrides the count. EDF_RANDOM_GRAPH_SEED
/// runs that one seed instead, verbosely, in the test case whose range starts at 0.
void run_seeds(std::uint64_t first, std::uint64_t count) {
  if (auto only = env_int("EDF_RANDOM_GRAPH_SEED")) {
    if (first == 0) check_seeds({*only}, fmt::format("seed {}", *only), true);
    return;
  }
  if (auto n = env_int("EDF_RANDOM_GRAPHS")) count = *n;
  std::vector<std::uint64_t> seeds;
  for (std::uint64_t s = first; s < first + count; ++s) seeds.push_back(s);
  check_seeds(seeds, fmt::format("seeds [{}, {})", first, first + count), false);
}

}  // namespace

// 3 x 50 seeds, each an f64 and an f32 graph: 300 graphs per run.
TEST_CASE("random graphs: JIT matches the interpreter (seeds 0-49)", "[jit][random]") {
  run_seeds(0, 50);
}
TEST_CASE("random graphs: JIT matches the interpreter (seeds 1000-1049)", "[jit][random]") {
  run_seeds(1000, 50);
}
TEST_CASE("random graphs: JIT matches the interpreter (seeds 2000-2049)", "[jit][random]") {
  run_seeds(2000, 50);
}

// Seeds that failed once, kept as regressions:
//  - 393: an output that cancels to ~1e-18 (sum of x - mean(x)); the tolerance must allow
//    rounding noise there (it once did not: a bug of this test);
//  - 1247, 2138: wrong results with EDIFICE_ISA=sse4.2 or generic (see the next test case).
TEST_CASE("random graphs: seeds that once failed", "[jit][random]") {
  if (env_int("EDF_RANDOM_GRAPH_SEED")) return;
  check_seeds({393, 1247, 2138}, "regression seeds 393, 1247, 2138", false);
}

// Minimal repro of seeds 1247 and 2138 with the ISA capped (ctest runs the [random] cases again
// with EDIFICE_ISA=sse4.2): with the cap, LLVM's SLP vectoriser still calls glibc's AVX2 vector
// math (_ZGVdN4v_exp) on a <4 x double> built by SSE code, whose ABI passes it in two xmm
// registers instead of one ymm: the upper lanes are garbage (and a real SSE-only CPU would trap).
// The JIT returned exp(0.5) = 1.6487 instead of exp(0.75) = 2.117: elements [1,0,*] were lost.
TEST_CASE("reduce_max(exp(x)) over axes {0,2} of f64[2,1,2] matches the interpreter",
          "[jit][random]") {
  auto x = o::parameter("x", DType::f64, {2, 1, 2});
  Graph g({x}, {o::reduce_max(o::exp(x), {0, 2})});
  auto in = Tensor::from_vector<double>({2, 1, 2}, {0.5, -0.25, 0.75, -1.0});
  auto got = jit::compile(g, {{2, 1, 2}}, options())->run({in});
  REQUIRE(got.size() == 1);
  CHECK(got[0].get_as_double(0) == interpret(g, {in})[0].get_as_double(0));
  // The same in f32 over axes {0,2} of [5,3,2] (sin, 8-lane AVX2 variant).
  auto y = o::parameter("y", DType::f32, {5, 3, 2});
  Graph h({y}, {o::reduce_max(o::sin(y), {0, 2})});
  Tensor t(DType::f32, {5, 3, 2});
  for (std::int64_t i = 0; i < t.numel(); ++i)
    t.set_from_double(i, std::sin(0.7 * static_cast<double>(i)));
  auto got_f32 = jit::compile(h, {{5, 3, 2}}, options())->run({t})[0];
  auto want_f32 = interpret(h, {t})[0];
  for (std::int64_t i = 0; i < 3; ++i) {
    INFO("element " << i);
    CHECK(std::abs(got_f32.get_as_double(i) - want_f32.get_as_double(i)) <= 1e-6);
  }
}
