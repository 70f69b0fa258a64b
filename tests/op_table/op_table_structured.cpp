// Op-table entries: the structured ops (softmax, layer_norm, attention, lstm_scan) and their
// backward ops. The references are written out naively; they double as the documentation of
// each op's semantics.
#include "op_table_harness.hpp"

#include <algorithm>
#include <cmath>

namespace edifice::optable {
namespace {

/// b followed by rest: an index into a tensor with leading batch axes.
Index cat(const Index& b, std::initializer_list<std::int64_t> rest) {
  Index i = b;
  i.insert(i.end(), rest.begin(), rest.end());
  return i;
}

/// The leading `n` extents of a shape.
Shape lead(const Shape& s, std::size_t n) {
  return Shape(s.begin(), s.begin() + static_cast<std::ptrdiff_t>(n));
}

double sigmoid(double x) {
  return 1.0 / (1.0 + std::exp(-x));
}

// ---------------------------------------------------------------------------------------------
// softmax

Arr softmax_ref(const Arr& x, std::int64_t axis) {
  if (axis < 0) axis += x.rank();
  auto a = static_cast<std::size_t>(axis);
  Arr out(x.dtype, x.shape);
  Shape outer = x.shape;
  outer[a] = 1;
  for_each_index(outer, [&](const Index& o) {
    Index i = o;
    double m = -INFINITY, sum = 0.0;
    for (i[a] = 0; i[a] < x.shape[a]; ++i[a]) m = std::max(m, x.at(i));
    for (i[a] = 0; i[a] < x.shape[a]; ++i[a]) sum += std::exp(x.at(i) - m);
    for (i[a] = 0; i[a] < x.shape[a]; ++i[a]) out.at(i) = std::exp(x.at(i) - m) / sum;
  });
  return out;
}

Sample softmax_sample(std::string label, In x, std::int64_t axis) {
  return Sample(
             std::move(label), {std::move(x)},
             [axis](const Vals& in, DType) { return Vals{ops::softmax(in[0], axis)}; },
             [axis](const Arrs& in, DType) { return Arrs{softmax_ref(in[0], axis)}; })
      .f32_tol(kF32Reduction);
}

OpEntry softmax_entry() {
  OpEntry e{Op::softmax, {}, {}, {}};
  e.samples.push_back(softmax_sample("[3,5] last axis", fin({3, 5}, any(-3, 3)), -1));
  e.samples.push_back(softmax_sample("[3,5] axis 0", fin({3, 5}, any(-3, 3)), 0));
  e.samples.push_back(softmax_sample("[2,3,4] axis 1", fin({2, 3, 4}, any(-3, 3)), 1));
  e.samples.push_back(softmax_sample("[1] is 1", fin({1}), 0));
  e.samples.push_back(softmax_sample("[4,1] over the size-1 axis", fin({4, 1}), 1));
  // Large logits: only exp(x - max) stays finite.
  e.samples.push_back(
      softmax_sample("[2,7] large logits (needs max subtraction)", fin({2, 7}, any(700, 760)), -1));
  e.samples.push_back(softmax_sample("dynamic [?,4] bound to 3", dyn(fin({3, 4}, any(-3, 3))), -1));
  e.errors.push_back(
      {"axis out of range", "softmax: axis 2 is out of range for f32[2,3] (rank 2)", [](Site& at) {
         Value x = param(DType::f32, {2, 3});
         at = EDF_HERE, ops::softmax(x, 2);
       }});
  e.errors.push_back({"integer operand",
                      "softmax: the operand must be floating-point (f32 or f64), got i32[3]",
                      [](Site& at) {
                        Value x = param(DType::i32, {3});
                        at = EDF_HERE, ops::softmax(x);
                      }});
  return e;
}

// ---------------------------------------------------------------------------------------------
// layer_norm and layer_norm_backward

struct LayerNormStats {
  Arr mean, rstd;
};

/// Mean and rstd = 1/sqrt(population variance + eps) over the last axis.
LayerNormStats layer_norm_stats(const Arr& x, double eps) {
  Shape rows = lead(x.shape, x.shape.size() - 1);
  std::int64_t c = x.shape.back();
  LayerNormStats s{Arr(x.dtype, rows), Arr(x.dtype, rows)};
  for_each_index(rows, [&](const Index& r) {
    double mean = 0, var = 0;
    for (std::int64_t j = 0; j < c; ++j) mean += x.at(cat(r, {j}));
    mean /= static_cast<double>(c);
    for (std::int64_t j = 0; j < c; ++j) var += std::pow(x.at(cat(r, {j})) - mean, 2);
    var /= static_cast<double>(c);
    s.mean.at(r) = mean;
    s.rstd.at(r) = 1.0 / std::sqrt(var + eps);
  });
  return s;
}

/// in: x [, gamma, beta]. out: y, mean, rstd.
Arrs layer_norm_ref(const Arrs& in, double eps) {
  const Arr& x = in[0];
  LayerNormStats s = layer_norm_stats(x, eps);
  Arr y(x.dtype, x.shape);
  for_each_index(x.shape, [&](const Index& i) {
    Index r(i.begin(), i.end() - 1);
    double v = (x.at(i) - s.mean.at(r)) * s.rstd.at(r);
    if (in.size() == 3) v = v * in[1][i.back()] + in[2][i.back()];
    y.at(i) = v;
  });
  return {y, s.mean, s.rstd};
}

Sample layer_norm_sample(std::string label, Shape shape, bool affine, double eps,
                         int dynamic_axis = -1) {
  std::int64_t c = shape.back();
  std::vector<In> inputs = {fin(shape)};
  if (dynamic_axis >= 0) inputs[0] = dyn(inputs[0], dynamic_axis);
  if (affine) {
    inputs.push_back(fin({c}));
    inputs.push_back(fin({c}));
  }
  // Only y is differentiable: mean and rstd are saved for the backward op, which takes no
  // cotangent for them.
  return Sample(
             std::move(label), inputs,
             [eps](const Vals& in, DType) {
               if (in.size() == 3) return ops::layer_norm_full(in[0], in[1], in[2], eps);
               return ops::layer_norm_full(in[0], std::nullopt, std::nullopt, eps);
             },
             [eps](const Arrs& in, DType) { return layer_norm_ref(in, eps); })
      .f32_tol(kF32Reduction)
      .grad_on({0});
}

OpEntry layer_norm_entry() {
  OpEntry e{Op::layer_norm, {}, {}, {}};
  e.samples.push_back(layer_norm_sample("[3,5] with gamma, beta", {3, 5}, true, 1e-5));
  e.samples.push_back(layer_norm_sample("[3,5] without gamma, beta", {3, 5}, false, 1e-5));
  e.samples.push_back(layer_norm_sample("[2,3,4] with gamma, beta, eps 0.1", {2, 3, 4}, true, 0.1));
  e.samples.push_back(layer_norm_sample("[7] rank 1: one row", {7}, true, 1e-5));
  // One feature: x - mean = 0, so y = beta whatever x.
  e.samples.push_back(layer_norm_sample("[4,1] one feature", {4, 1}, true, 1e-5));
  e.samples.push_back(layer_norm_sample("dynamic [?,5] bound to 3", {3, 5}, true, 1e-5, 0));
  e.samples.push_back(Sample(
                          "layer_norm(x, eps) builder returns y", {fin({2, 3})},
                          [](const Vals& in, DType) { return Vals{ops::layer_norm(in[0], 1e-3)}; },
                          [](const Arrs& in, DType) { return Arrs{layer_norm_ref(in, 1e-3)[0]}; })
                          .f32_tol(kF32Reduction));
  e.errors.push_back({"gamma does not match the last axis",
                      "layer_norm: gamma has shape [4]; expected [3] to match the last axis of x "
                      "f32[2,3]",
                      [](Site& at) {
                        Value x = param(DType::f32, {2, 3});
                        Value g = param(DType::f32, {4});
                        at = EDF_HERE, ops::layer_norm(x, g, g, 1e-5);
                      }});
  e.errors.push_back(
      {"gamma without beta", "layer_norm: gamma and beta must be given together", [](Site& at) {
         Value x = param(DType::f32, {2, 3});
         Value g = param(DType::f32, {3});
         at = EDF_HERE, ops::layer_norm_full(x, g, std::nullopt, 1e-5);
       }});
  e.errors.push_back({"zero eps", "layer_norm: eps must be > 0, got 0", [](Site& at) {
                        Value x = param(DType::f32, {2, 3});
                        at = EDF_HERE, ops::layer_norm(x, 0.0);
                      }});
  e.errors.push_back({"rank 0", "layer_norm: x must have rank >= 1, got f32[]", [](Site& at) {
                        Value x = param(DType::f32, {});
                        at = EDF_HERE, ops::layer_norm(x, 1e-5);
                      }});
  return e;
}

/// in: x, dy [, gamma]. out: dx [, dgamma, dbeta].
///   xhat = (x - mean) * rstd, g = dy * gamma
///   dx = rstd * (g - mean_c(g) - xhat * mean_c(g * xhat))
///   dgamma = sum_rows dy * xhat, dbeta = sum_rows dy
Arrs layer_norm_backward_ref(const Arr& x, const Arr& dy, const Arr* gamma, double eps) {
  LayerNormStats s = layer_norm_stats(x, eps);
  std::int64_t c = x.shape.back();
  Arr dx(x.dtype, x.shape), dgamma(x.dtype, {c}), dbeta(x.dtype, {c});
  for_each_index(s.mean.shape, [&](const Index& r) {
    std::vector<double> xhat(static_cast<std::size_t>(c)), g(static_cast<std::size_t>(c));
    double mean_g = 0, mean_gx = 0;
    for (std::int64_t j = 0; j < c; ++j) {
      auto uj = static_cast<std::size_t>(j);
      xhat[uj] = (x.at(cat(r, {j})) - s.mean.at(r)) * s.rstd.at(r);
      g[uj] = dy.at(cat(r, {j})) * (gamma ? (*gamma)[j] : 1.0);
      mean_g += g[uj] / static_cast<double>(c);
      mean_gx += g[uj] * xhat[uj] / static_cast<double>(c);
      dgamma[j] += dy.at(cat(r, {j})) * xhat[uj];
      dbeta[j] += dy.at(cat(r, {j}));
    }
    for (std::int64_t j = 0; j < c; ++j) {
      auto uj = static_cast<std::size_t>(j);
      dx.at(cat(r, {j})) = s.rstd.at(r) * (g[uj] - mean_g - xhat[uj] * mean_gx);
    }
  });
  if (!gamma) return {dx};
  return {dx, dgamma, dbeta};
}

Sample layer_norm_backward_sample(std::string label, Shape shape, bool affine, double eps) {
  std::int64_t c = shape.back();
  // inputs: x, dy [, gamma, beta]; mean and rstd come from the forward op, as in a real
  // gradient graph (beta only feeds the forward).
  std::vector<In> inputs = {fin(shape), fin(shape)};
  if (affine) {
    inputs.push_back(fin({c}));
    inputs.push_back(fin({c}));
  }
  return Sample(
             std::move(label), inputs,
             [eps](const Vals& in, DType) {
               bool with_gamma = in.size() == 4;
               Vals fwd = with_gamma ? ops::layer_norm_full(in[0], in[2], in[3], eps)
                                     : ops::layer_norm_full(in[0], std::nullopt, std::nullopt, eps);
               return ops::layer_norm_backward(
                   in[0], fwd[1], fwd[2], in[1],
                   with_gamma ? std::optional<Value>(in[2]) : std::nullopt, eps);
             },
             [eps](const Arrs& in, DType) {
               return layer_norm_backward_ref(in[0], in[1], in.size() == 4 ? &in[2] : nullptr, eps);
             })
      .f32_tol(kF32Reduction);
}

const char* kBackwardNoGrad =
    "a backward op: checked through its forward op's gradient (autodiff of the forward op "
    "emits it), and its values against the analytic reference here; no second-order gradients";

OpEntry layer_norm_backward_entry() {
  OpEntry e{Op::layer_norm_backward, {}, {}, {}};
  e.no_grad_reason = kBackwardNoGrad;
  e.samples.push_back(layer_norm_backward_sample("[3,5] with gamma", {3, 5}, true, 1e-5));
  e.samples.push_back(layer_norm_backward_sample("[3,5] without gamma", {3, 5}, false, 1e-5));
  e.samples.push_back(
      layer_norm_backward_sample("[2,3,4] with gamma, eps 0.1", {2, 3, 4}, true, 0.1));
  e.samples.push_back(layer_norm_backward_sample("[7] one row", {7}, true, 1e-5));
  e.samples.push_back(layer_norm_backward_sample("[4,1] one feature", {4, 1}, true, 1e-5));
  e.errors.push_back({"dy does not match x",
                      "layer_norm_backward: dy f32[2,4] and x f32[2,3] differ at axis 1 (4 vs 3)",
                      [](Site& at) {
                        Value x = param(DType::f32, {2, 3});
                        Value m = param(DType::f32, {2});
                        Value dy = param(DType::f32, {2, 4});
                        at = EDF_HERE, ops::layer_norm_backward(x, m, m, dy, std::nullopt, 1e-5);
                      }});
  e.errors.push_back({"mean of the wrong shape",
                      "layer_norm_backward: mean is f32[3], expected f32[2] (x without its last "
                      "axis)",
                      [](Site& at) {
                        Value x = param(DType::f32, {2, 3});
                        Value m = param(DType::f32, {3});
                        Value r = param(DType::f32, {2});
                        at = EDF_HERE, ops::layer_norm_backward(x, m, r, x, std::nullopt, 1e-5);
                      }});
  return e;
}

// ---------------------------------------------------------------------------------------------
// attention and attention_backward

struct MaskSpec {
  ops::AttentionMask::Kind kind = ops::AttentionMask::Kind::none;
  std::int64_t window = 0;
  Shape tensor_shape;             // for Kind::tensor
  std::int64_t query_offset = 0;  // query row i is at position i + query_offset (predicates)
};

ops::AttentionOptions attention_options(const MaskSpec& m, double scale, const Value& mask) {
  ops::AttentionOptions o;
  switch (m.kind) {
    case ops::AttentionMask::Kind::none:
      o.mask = ops::AttentionMask::none();
      break;
    case ops::AttentionMask::Kind::causal:
      o.mask = ops::AttentionMask::causal();
      break;
    case ops::AttentionMask::Kind::window:
      o.mask = ops::AttentionMask::sliding_window(m.window);
      break;
    case ops::AttentionMask::Kind::tensor:
      o.mask = ops::AttentionMask::from_tensor(mask);
      break;
  }
  o.scale = scale;
  o.query_offset = m.query_offset;
  return o;
}

/// Everything the forward computes for one (batch, query) row.
struct AttentionRow {
  std::vector<double> p;      // softmax weights over keys
  std::vector<bool> allowed;  // mask predicate
  double lse = 0;             // log-sum-exp of the (masked, scaled) scores
};

/// q [..., Sq, D], k [..., Sk, D], v [..., Sk, Dv], mask [Sq, Sk] or [..., Sq, Sk] (leading
/// extents q's or 1). Score s_ij = scale * q_i . k_j where (i, j) is allowed, else `fill`
/// (the fill replaces the score). With p = i + query_offset: causal j <= p; window w:
/// p - w + 1 <= j <= p.
/// p = softmax_j(s), out_i = sum_j p_ij v_j, lse_i = log sum_j exp(s_ij).
struct AttentionRef {
  const Arr &q, &k, &v;
  const Arr* mask;
  MaskSpec spec;
  double scale, fill;
  std::int64_t sq, sk, d, dv;
  Shape batch;

  AttentionRef(const Arrs& in, MaskSpec s, double scale_, double fill_)
      : q(in[0]),
        k(in[1]),
        v(in[2]),
        mask(s.kind == ops::AttentionMask::Kind::tensor ? &in[3] : nullptr),
        spec(std::move(s)),
        fill(fill_) {
    sq = q.dim(-2);
    sk = k.dim(-2);
    d = q.dim(-1);
    dv = v.dim(-1);
    batch = lead(q.shape, q.shape.size() - 2);
    scale = scale_ != 0 ? scale_ : 1.0 / std::sqrt(static_cast<double>(d));
  }

  bool allowed(const Index& b, std::int64_t i, std::int64_t j) const {
    switch (spec.kind) {
      case ops::AttentionMask::Kind::none:
        return true;
      case ops::AttentionMask::Kind::causal:
        return j <= i + spec.query_offset;
      case ops::AttentionMask::Kind::window:
        return i + spec.query_offset - spec.window + 1 <= j && j <= i + spec.query_offset;
      case ops::AttentionMask::Kind::tensor: {
        if (mask->rank() == 2) return mask->at({i, j}) != 0;
        Index mi;
        for (std::size_t a = 0; a < b.size(); ++a) mi.push_back(mask->shape[a] == 1 ? 0 : b[a]);
        mi.push_back(i);
        mi.push_back(j);
        return mask->at(mi) != 0;
      }
    }
    return true;
  }

  AttentionRow row(const Index& b, std::int64_t i) const {
    AttentionRow r;
    std::vector<double> s(static_cast<std::size_t>(sk));
    double m = -INFINITY;
    for (std::int64_t j = 0; j < sk; ++j) {
      bool ok = allowed(b, i, j);
      r.allowed.push_back(ok);
      double dot = 0;
      for (std::int64_t t = 0; t < d; ++t) dot += q.at(cat(b, {i, t})) * k.at(cat(b, {j, t}));
      s[static_cast<std::size_t>(j)] = ok ? scale * dot : fill;
      m = std::max(m, s[static_cast<std::size_t>(j)]);
    }
    double sum = 0;
    for (double x : s) sum += std::exp(x - m);
    r.lse = m + std::log(sum);
    // Not exp(s - lse): with the -1e9 fill, s - lse would cancel catastrophically.
    for (double x : s) r.p.push_back(std::exp(x - m) / sum);
    return r;
  }

  /// out, lse
  Arrs forward() const {
    Shape out_shape = batch, lse_shape = batch;
    out_shape.insert(out_shape.end(), {sq, dv});
    lse_shape.push_back(sq);
    Arr out(q.dtype, out_shape), lse(q.dtype, lse_shape);
    for_each_index(batch, [&](const Index& b) {
      for (std::int64_t i = 0; i < sq; ++i) {
        AttentionRow r = row(b, i);
        lse.at(cat(b, {i})) = r.lse;
        for (std::int64_t e = 0; e < dv; ++e) {
          double acc = 0;
          for (std::int64_t j = 0; j < sk; ++j)
            acc += r.p[static_cast<std::size_t>(j)] * v.at(cat(b, {j, e}));
          out.at(cat(b, {i, e})) = acc;
        }
      }
    });
    return {out, lse};
  }

  /// dq, dk, dv for cotangent dout of out:
  ///   dv_j = sum_i p_ij dout_i; dp_ij = dout_i . v_j; ds_ij = p_ij (dp_ij - sum_j' p_ij' dp_ij')
  ///   dq_i = scale sum_j ds_ij k_j, dk_j = scale sum_i ds_ij q_i (allowed pairs only: a
  ///   masked score is the constant fill).
  Arrs backward(const Arr& dout) const {
    Arr dq(q.dtype, q.shape), dk(k.dtype, k.shape), dvv(v.dtype, v.shape);
    for_each_index(batch, [&](const Index& b) {
      for (std::int64_t i = 0; i < sq; ++i) {
        AttentionRow r = row(b, i);
        std::vector<double> dp(static_cast<std::size_t>(sk));
        double pdp = 0;
        for (std::int64_t j = 0; j < sk; ++j) {
          auto uj = static_cast<std::size_t>(j);
          for (std::int64_t e = 0; e < dv; ++e) {
            dp[uj] += dout.at(cat(b, {i, e})) * v.at(cat(b, {j, e}));
            dvv.at(cat(b, {j, e})) += r.p[uj] * dout.at(cat(b, {i, e}));
          }
          pdp += r.p[uj] * dp[uj];
        }
        for (std::int64_t j = 0; j < sk; ++j) {
          auto uj = static_cast<std::size_t>(j);
          if (!r.allowed[uj]) continue;
          double ds = r.p[uj] * (dp[uj] - pdp);
          for (std::int64_t t = 0; t < d; ++t) {
            dq.at(cat(b, {i, t})) += scale * ds * k.at(cat(b, {j, t}));
            dk.at(cat(b, {j, t})) += scale * ds * q.at(cat(b, {i, t}));
          }
        }
      }
    });
    return {dq, dk, dvv};
  }
};

std::vector<In> attention_inputs(const Shape& qs, const Shape& ks, const Shape& vs,
                                 const MaskSpec& m) {
  // Inputs kept moderate so scores stay O(1) and softmax is not saturated.
  std::vector<In> in = {fin(qs, any(-1.5, 1.5)), fin(ks, any(-1.5, 1.5)), fin(vs)};
  if (m.kind == ops::AttentionMask::Kind::tensor)
    in.push_back(typed(DType::u8, m.tensor_shape, u8_mask(0.7)));
  return in;
}

Sample attention_sample(std::string label, Shape qs, Shape ks, Shape vs, MaskSpec m,
                        double scale = 0) {
  // Only out is differentiable: lse is saved for attention_backward, which takes no
  // cotangent for it.
  return Sample(
             std::move(label), attention_inputs(qs, ks, vs, m),
             [m, scale](const Vals& in, DType) {
               return ops::attention_full(
                   in[0], in[1], in[2],
                   attention_options(m, scale, in.size() > 3 ? in[3] : Value()));
             },
             [m, scale](const Arrs& in, DType) {
               return AttentionRef(in, m, scale, -1e9).forward();
             })
      .f32_tol(kF32Reduction)
      .grad_on({0});
}

using Kind = ops::AttentionMask::Kind;

OpEntry attention_entry() {
  OpEntry e{Op::attention, {}, {}, {}};
  e.samples.push_back(
      attention_sample("no batch: q [3,4], k [5,4], v [5,2]", {3, 4}, {5, 4}, {5, 2}, {}));
  e.samples.push_back(attention_sample("batch 2, causal, Sq = Sk = 3", {2, 3, 4}, {2, 3, 4},
                                       {2, 3, 3}, {Kind::causal, 0, {}}));
  // Causal compares raw indices (j <= i): with Sq < Sk the last keys are never attended.
  e.samples.push_back(
      attention_sample("causal with Sq 3 < Sk 5", {3, 2}, {5, 2}, {5, 3}, {Kind::causal, 0, {}}));
  e.samples.push_back(
      attention_sample("sliding window 2", {2, 4, 3}, {2, 4, 3}, {2, 4, 2}, {Kind::window, 2, {}}));
  e.samples.push_back(attention_sample("window 1 attends only the diagonal", {3, 2}, {3, 2}, {3, 2},
                                       {Kind::window, 1, {}}));
  // query_offset: query row i sits at position i + off (the rows [off, off + Sq) of a longer
  // query block), as when the JIT prunes the rows nobody reads.
  e.samples.push_back(attention_sample("causal, query_offset 3: q [2,2,3] against Sk 6", {2, 2, 3},
                                       {2, 6, 3}, {2, 6, 2}, {Kind::causal, 0, {}, 3}));
  e.samples.push_back(attention_sample("window 2, query_offset 2: rows at positions 2..4", {3, 2},
                                       {6, 2}, {6, 3}, {Kind::window, 2, {}, 2}));
  e.samples.push_back(attention_sample("window 3, query_offset 5 beyond Sk 4: last keys only",
                                       {2, 2, 2}, {2, 4, 2}, {2, 4, 2}, {Kind::window, 3, {}, 5}));
  // Random masks with P(attend) = 0.7: some rows may be fully masked; those average v
  // uniformly (every score is the fill).
  e.samples.push_back(attention_sample("tensor mask [3,5]", {2, 3, 4}, {2, 5, 4}, {2, 5, 2},
                                       {Kind::tensor, 0, {3, 5}}));
  e.samples.push_back(attention_sample("tensor mask [1,2,3,4] broadcast over batch 0", {2, 2, 3, 2},
                                       {2, 2, 4, 2}, {2, 2, 4, 3},
                                       {Kind::tensor, 0, {1, 2, 3, 4}}));
  e.samples.push_back(attention_sample("tensor mask [2,1,3,4] broadcast over heads", {2, 2, 3, 2},
                                       {2, 2, 4, 2}, {2, 2, 4, 1},
                                       {Kind::tensor, 0, {2, 1, 3, 4}}));
  e.samples.push_back(attention_sample("explicit scale 0.7", {2, 3}, {4, 3}, {4, 2}, {}, 0.7));
  e.samples.push_back(attention_sample("one query, one key", {1, 3}, {1, 3}, {1, 1}, {}));
  e.samples.push_back(attention_sample("fully masked rows (all-zero mask) average v", {2, 2},
                                       {3, 2}, {3, 2}, {Kind::tensor, 0, {2, 3}}));
  // Make the last sample's mask all zero.
  e.samples.back().inputs[3].domain = u8_mask(0.0);
  e.samples.push_back(
      Sample(
          "attention() builder returns out, dynamic batch [?,3,2] bound to 2",
          {dyn(fin({2, 3, 2})), dyn(fin({2, 4, 2})), dyn(fin({2, 4, 3}))},
          [](const Vals& in, DType) {
            return Vals{ops::attention(in[0], in[1], in[2],
                                       attention_options({Kind::causal, 0, {}}, 0, Value()))};
          },
          [](const Arrs& in, DType) {
            return Arrs{AttentionRef(in, {Kind::causal, 0, {}}, 0, -1e9).forward()[0]};
          })
          .f32_tol(kF32Reduction));
  e.errors.push_back({"feature extents differ",
                      "attention: q f32[2,3,4] and k f32[2,5,3] must have the same feature extent "
                      "(last axis: 4 vs 3)",
                      [](Site& at) {
                        Value q = param(DType::f32, {2, 3, 4});
                        Value k = param(DType::f32, {2, 5, 3});
                        Value v = param(DType::f32, {2, 5, 2});
                        at = EDF_HERE, ops::attention(q, k, v);
                      }});
  e.errors.push_back({"k and v sequence extents differ",
                      "attention: k f32[5,4] and v f32[4,2] must have the same sequence extent "
                      "(axis 0: 5 vs 4)",
                      [](Site& at) {
                        Value q = param(DType::f32, {3, 4});
                        Value k = param(DType::f32, {5, 4});
                        Value v = param(DType::f32, {4, 2});
                        at = EDF_HERE, ops::attention(q, k, v);
                      }});
  e.errors.push_back(
      {"f32 mask", "attention: the mask must be u8 (nonzero = attend), got f32[3,5]", [](Site& at) {
         Value q = param(DType::f32, {3, 4});
         Value k = param(DType::f32, {5, 4});
         Value m = param(DType::f32, {3, 5});
         ops::AttentionOptions o;
         o.mask = ops::AttentionMask::from_tensor(m);
         at = EDF_HERE, ops::attention(q, k, k, o);
       }});
  e.errors.push_back({"mask of the wrong shape",
                      "attention: mask u8[4,5] does not fit scores of shape [2,3,5]: expected "
                      "[3,5] or rank 3 with leading extents equal to q's or 1",
                      [](Site& at) {
                        Value q = param(DType::f32, {2, 3, 4});
                        Value k = param(DType::f32, {2, 5, 4});
                        Value m = param(DType::u8, {4, 5});
                        ops::AttentionOptions o;
                        o.mask = ops::AttentionMask::from_tensor(m);
                        at = EDF_HERE, ops::attention(q, k, k, o);
                      }});
  e.errors.push_back({"window 0", "attention: window must be >= 1, got 0", [](Site& at) {
                        Value q = param(DType::f32, {3, 4});
                        ops::AttentionOptions o;
                        o.mask = ops::AttentionMask::sliding_window(0);
                        at = EDF_HERE, ops::attention(q, q, q, o);
                      }});
  e.errors.push_back(
      {"negative query_offset", "attention: query_offset must be >= 0, got -1", [](Site& at) {
         Value q = param(DType::f32, {3, 4});
         ops::AttentionOptions o;
         o.mask = ops::AttentionMask::causal();
         o.query_offset = -1;
         at = EDF_HERE, ops::attention(q, q, q, o);
       }});
  return e;
}

Sample attention_backward_sample(std::string label, Shape qs, Shape ks, Shape vs, MaskSpec m,
                                 double scale = 0) {
  // inputs: q, k, v [, mask], dout; out and lse come from the forward op.
  std::vector<In> inputs = attention_inputs(qs, ks, vs, m);
  Shape os = qs;
  os.back() = vs.back();
  inputs.push_back(fin(os));
  return Sample(
             std::move(label), inputs,
             [m, scale](const Vals& in, DType) {
               bool has_mask = in.size() == 5;
               auto o = attention_options(m, scale, has_mask ? in[3] : Value());
               Vals fwd = ops::attention_full(in[0], in[1], in[2], o);
               return ops::attention_backward(in[0], in[1], in[2], fwd[0], fwd[1], in.back(), o);
             },
             [m, scale](const Arrs& in, DType) {
               return AttentionRef(in, m, scale, -1e9).backward(in.back());
             })
      .f32_tol(kF32Reduction);
}

OpEntry attention_backward_entry() {
  OpEntry e{Op::attention_backward, {}, {}, {}};
  e.no_grad_reason = kBackwardNoGrad;
  e.samples.push_back(attention_backward_sample("no mask, no batch", {3, 4}, {5, 4}, {5, 2}, {}));
  e.samples.push_back(attention_backward_sample("causal, batch 2", {2, 3, 2}, {2, 3, 2}, {2, 3, 3},
                                                {Kind::causal, 0, {}}));
  e.samples.push_back(
      attention_backward_sample("window 2", {4, 3}, {4, 3}, {4, 2}, {Kind::window, 2, {}}));
  e.samples.push_back(attention_backward_sample("causal, query_offset 2", {2, 2, 3}, {2, 5, 3},
                                                {2, 5, 2}, {Kind::causal, 0, {}, 2}));
  e.samples.push_back(attention_backward_sample("window 2, query_offset 3", {3, 2}, {7, 2}, {7, 3},
                                                {Kind::window, 2, {}, 3}));
  e.samples.push_back(attention_backward_sample("tensor mask [2,1,3,4]", {2, 2, 3, 2}, {2, 2, 4, 2},
                                                {2, 2, 4, 2}, {Kind::tensor, 0, {2, 1, 3, 4}}));
  e.samples.push_back(
      attention_backward_sample("explicit scale 1.3, one query", {1, 3}, {2, 3}, {2, 2}, {}, 1.3));
  e.errors.push_back({"dout of the wrong shape",
                      "attention_backward: dout is f32[3,2], expected f32[3,3] (the attention "
                      "output for these q, k, v)",
                      [](Site& at) {
                        Value q = param(DType::f32, {3, 4});
                        Value k = param(DType::f32, {5, 4});
                        Value v = param(DType::f32, {5, 3});
                        Value out = param(DType::f32, {3, 3});
                        Value lse = param(DType::f32, {3});
                        Value dout = param(DType::f32, {3, 2});
                        at = EDF_HERE, ops::attention_backward(q, k, v, out, lse, dout, {});
                      }});
  return e;
}

// ---------------------------------------------------------------------------------------------
// lstm_scan and lstm_scan_backward (and the ops::lstm composite that emits lstm_scan)

/// The recurrence from input projections zx [B,S,4U] (x_t.w_ih + b), w_hh [U,4U], h0, c0 [B,U];
/// gate blocks i, f, g, o:
///   z = zx_t + h.w_hh; i, f, o = sigmoid; g = tanh; c' = f c + i g; h' = o tanh(c').
struct LstmRef {
  Arr zx, w_hh, h0, c0;
  std::int64_t batch, seq, u;
  // Per step t (0-based) and batch row: gates after their nonlinearity, states after the step.
  std::vector<std::vector<std::vector<double>>> gi, gf, gg, go, h, c;

  LstmRef(const Arr& zx_, const Arr& w_hh_, const Arr& h0_, const Arr& c0_)
      : zx(zx_), w_hh(w_hh_), h0(h0_), c0(c0_) {
    batch = zx.dim(0);
    seq = zx.dim(1);
    u = w_hh.dim(0);
    auto sz = [](std::int64_t n) { return static_cast<std::size_t>(n); };
    for (auto* v : {&gi, &gf, &gg, &go, &h, &c})
      v->assign(sz(seq), std::vector<std::vector<double>>(sz(batch), std::vector<double>(sz(u))));
    for (std::int64_t t = 0; t < seq; ++t)
      for (std::int64_t r = 0; r < batch; ++r) {
        std::vector<double> z(sz(4 * u));
        for (std::int64_t col = 0; col < 4 * u; ++col) {
          double acc = zx.at({r, t, col});
          for (std::int64_t k = 0; k < u; ++k) acc += h_prev(t, r, k) * w_hh.at({k, col});
          z[sz(col)] = acc;
        }
        for (std::int64_t j = 0; j < u; ++j) {
          auto T = sz(t), R = sz(r), J = sz(j);
          gi[T][R][J] = sigmoid(z[sz(j)]);
          gf[T][R][J] = sigmoid(z[sz(u + j)]);
          gg[T][R][J] = std::tanh(z[sz(2 * u + j)]);
          go[T][R][J] = sigmoid(z[sz(3 * u + j)]);
          c[T][R][J] = gf[T][R][J] * c_prev(t, r, j) + gi[T][R][J] * gg[T][R][J];
          h[T][R][J] = go[T][R][J] * std::tanh(c[T][R][J]);
        }
      }
  }
  /// in: zx, w_hh, h0, c0 (and possibly more).
  explicit LstmRef(const Arrs& in) : LstmRef(in[0], in[1], in[2], in[3]) {}

  double h_prev(std::int64_t t, std::int64_t r, std::int64_t j) const {
    return t == 0 ? h0.at({r, j})
                  : h[static_cast<std::size_t>(t - 1)][static_cast<std::size_t>(r)]
                     [static_cast<std::size_t>(j)];
  }
  double c_prev(std::int64_t t, std::int64_t r, std::int64_t j) const {
    return t == 0 ? c0.at({r, j})
                  : c[static_cast<std::size_t>(t - 1)][static_cast<std::size_t>(r)]
                     [static_cast<std::size_t>(j)];
  }

  /// h_seq, c_seq
  Arrs forward() const {
    Arr hs(zx.dtype, {batch, seq, u}), cs(zx.dtype, {batch, seq, u});
    for (std::int64_t t = 0; t < seq; ++t)
      for (std::int64_t r = 0; r < batch; ++r)
        for (std::int64_t j = 0; j < u; ++j) {
          auto T = static_cast<std::size_t>(t), R = static_cast<std::size_t>(r),
               J = static_cast<std::size_t>(j);
          hs.at({r, t, j}) = h[T][R][J];
          cs.at({r, t, j}) = c[T][R][J];
        }
    return {hs, cs};
  }

  /// Backpropagation through time with cotangents dh_seq, dc_seq of both state sequences.
  /// outputs: dzx (the gradient of every step's pre-activations), dh0, dc0.
  Arrs backward(const Arr& dh_seq, const Arr& dc_seq) const {
    Arr dzx(zx.dtype, zx.shape);
    Arr dh_next(zx.dtype, {batch, u}), dc_next(zx.dtype, {batch, u});
    for (std::int64_t t = seq - 1; t >= 0; --t) {
      Arr dh_carry(zx.dtype, {batch, u}), dc_carry(zx.dtype, {batch, u});
      for (std::int64_t r = 0; r < batch; ++r) {
        for (std::int64_t j = 0; j < u; ++j) {
          auto T = static_cast<std::size_t>(t), R = static_cast<std::size_t>(r),
               J = static_cast<std::size_t>(j);
          double i = gi[T][R][J], f = gf[T][R][J], g = gg[T][R][J], o = go[T][R][J];
          double tc = std::tanh(c[T][R][J]);
          double dh = dh_seq.at({r, t, j}) + dh_next.at({r, j});
          double dc = dc_seq.at({r, t, j}) + dc_next.at({r, j}) + dh * o * (1 - tc * tc);
          dzx.at({r, t, j}) = dc * g * i * (1 - i);
          dzx.at({r, t, u + j}) = dc * c_prev(t, r, j) * f * (1 - f);
          dzx.at({r, t, 2 * u + j}) = dc * i * (1 - g * g);
          dzx.at({r, t, 3 * u + j}) = dh * tc * o * (1 - o);
          dc_carry.at({r, j}) = dc * f;
        }
        for (std::int64_t col = 0; col < 4 * u; ++col)
          for (std::int64_t k = 0; k < u; ++k)
            dh_carry.at({r, k}) += dzx.at({r, t, col}) * w_hh.at({k, col});
      }
      dh_next = dh_carry;
      dc_next = dc_carry;
    }
    return {dzx, dh_next, dc_next};
  }
};

/// x [B,S,I].w_ih [I,4U] + b [4U]: the input projections ops::lstm feeds to lstm_scan.
Arr lstm_projection(const Arr& x, const Arr& w_ih, const Arr& b) {
  const std::int64_t batch = x.dim(0), seq = x.dim(1), feat = x.dim(2), g4 = w_ih.dim(1);
  Arr zx(x.dtype, {batch, seq, g4});
  for (std::int64_t r = 0; r < batch; ++r)
    for (std::int64_t t = 0; t < seq; ++t)
      for (std::int64_t col = 0; col < g4; ++col) {
        double acc = b[col];
        for (std::int64_t k = 0; k < feat; ++k) acc += x.at({r, t, k}) * w_ih.at({k, col});
        zx.at({r, t, col}) = acc;
      }
  return zx;
}

// Weights in [-1, 1): gates stay off saturation, so gradients are well conditioned.
std::vector<In> lstm_scan_inputs(std::int64_t batch, std::int64_t seq, std::int64_t u) {
  Domain w = any(-1, 1);
  return {fin({batch, seq, 4 * u}, w), fin({u, 4 * u}, w), fin({batch, u}, w), fin({batch, u}, w)};
}

Sample lstm_scan_sample(std::string label, std::int64_t batch, std::int64_t seq, std::int64_t u) {
  // Both outputs are differentiable (lstm_scan_backward takes cotangents for h_seq and c_seq).
  return Sample(
             std::move(label), lstm_scan_inputs(batch, seq, u),
             [](const Vals& in, DType) { return ops::lstm_scan(in[0], in[1], in[2], in[3]); },
             [](const Arrs& in, DType) { return LstmRef(in).forward(); })
      .f32_tol(kF32Reduction);
}

// The ops::lstm composite: x [B,S,I], w_ih [I,4U], w_hh, b [4U], h0, c0. Its gradient check
// covers the VJP's dot_general for dw_hh and the autodiff of the projection (dx, dw_ih, db).
Sample lstm_sample(std::string label, std::int64_t batch, std::int64_t seq, std::int64_t feat,
                   std::int64_t u) {
  Domain w = any(-1, 1);
  return Sample(
             std::move(label),
             {fin({batch, seq, feat}, w), fin({feat, 4 * u}, w), fin({u, 4 * u}, w),
              fin({4 * u}, w), fin({batch, u}, w), fin({batch, u}, w)},
             [](const Vals& in, DType) {
               return ops::lstm(in[0], in[1], in[2], in[3], in[4], in[5]);
             },
             [](const Arrs& in, DType) {
               return LstmRef(lstm_projection(in[0], in[1], in[3]), in[2], in[4], in[5]).forward();
             })
      .f32_tol(kF32Reduction);
}

OpEntry lstm_scan_entry() {
  OpEntry e{Op::lstm_scan, {}, {}, {}};
  e.samples.push_back(lstm_scan_sample("B 2, S 3, U 2", 2, 3, 2));
  e.samples.push_back(lstm_scan_sample("B 1, S 1, U 1", 1, 1, 1));
  e.samples.push_back(lstm_scan_sample("B 3, S 2, U 1", 3, 2, 1));
  e.samples.push_back(lstm_scan_sample("B 1, S 5, U 3", 1, 5, 3));
  e.samples.push_back(lstm_scan_sample("B 5, S 2, U 2 (a full and a partial row block)", 5, 2, 2));
  e.samples.push_back(lstm_scan_sample("B 2, S 0, U 2 (no steps)", 2, 0, 2));
  {
    // Dynamic batch: zx, h0 and c0 declared [?, ...].
    Sample d = lstm_scan_sample("dynamic batch ? bound to 2, S 2, U 2", 2, 2, 2);
    for (int i : {0, 2, 3}) d.inputs[static_cast<std::size_t>(i)].dynamic_axis = 0;
    e.samples.push_back(std::move(d));
  }
  e.samples.push_back(lstm_sample("ops::lstm: B 2, S 3, I 2, U 2", 2, 3, 2, 2));
  e.samples.push_back(lstm_sample("ops::lstm: B 1, S 1, I 1, U 1", 1, 1, 1, 1));
  e.samples.push_back(lstm_sample("ops::lstm: B 3, S 2, I 3, U 1", 3, 2, 3, 1));
  {
    Sample d = lstm_sample("ops::lstm: dynamic batch ? bound to 2, S 2, I 2, U 2", 2, 2, 2, 2);
    for (int i : {0, 4, 5}) d.inputs[static_cast<std::size_t>(i)].dynamic_axis = 0;
    e.samples.push_back(std::move(d));
  }
  e.errors.push_back(
      {"zx of the wrong width",
       "lstm_scan: zx has shape [2,3,6]; expected [2,3,8] (batch, seq, 4 x hidden 2)",
       [](Site& at) {
         Value zx = param(DType::f32, {2, 3, 6});
         Value w_hh = param(DType::f32, {2, 8});
         Value h0 = param(DType::f32, {2, 2});
         at = EDF_HERE, ops::lstm_scan(zx, w_hh, h0, h0);
       }});
  e.errors.push_back(
      {"w_hh not [U, 4U]", "lstm_scan: w_hh has shape [2,6]; expected [U, 4U]", [](Site& at) {
         Value zx = param(DType::f32, {2, 3, 8});
         Value w_hh = param(DType::f32, {2, 6});
         Value h0 = param(DType::f32, {2, 2});
         at = EDF_HERE, ops::lstm_scan(zx, w_hh, h0, h0);
       }});
  e.errors.push_back({"zx of rank 2",
                      "lstm_scan: zx must be [batch, seq, 4 x hidden], got f32[3,8]", [](Site& at) {
                        Value zx = param(DType::f32, {3, 8});
                        Value w_hh = param(DType::f32, {2, 8});
                        Value h0 = param(DType::f32, {3, 2});
                        at = EDF_HERE, ops::lstm_scan(zx, w_hh, h0, h0);
                      }});
  e.errors.push_back({"h0 of the wrong batch",
                      "lstm_scan: h0 has shape [3,2]; expected [2,2] (batch, hidden)",
                      [](Site& at) {
                        Value zx = param(DType::f32, {2, 3, 8});
                        Value w_hh = param(DType::f32, {2, 8});
                        Value h0 = param(DType::f32, {3, 2});
                        Value c0 = param(DType::f32, {2, 2});
                        at = EDF_HERE, ops::lstm_scan(zx, w_hh, h0, c0);
                      }});
  e.errors.push_back(
      {"u8 zx", "lstm_scan: zx must be floating-point (f32 or f64), got u8[2,3,8]", [](Site& at) {
         Value zx = param(DType::u8, {2, 3, 8});
         Value w_hh = param(DType::u8, {2, 8});
         Value h0 = param(DType::u8, {2, 2});
         at = EDF_HERE, ops::lstm_scan(zx, w_hh, h0, h0);
       }});
  e.errors.push_back({"f64 w_hh with f32 zx",
                      "lstm_scan: zx and w_hh must have the same dtype, got f32[2,3,8] and "
                      "f64[2,8]",
                      [](Site& at) {
                        Value zx = param(DType::f32, {2, 3, 8});
                        Value w_hh = param(DType::f64, {2, 8});
                        Value h0 = param(DType::f32, {2, 2});
                        at = EDF_HERE, ops::lstm_scan(zx, w_hh, h0, h0);
                      }});
  // The composite's own checks, made before it builds any node.
  e.errors.push_back({"ops::lstm: w_ih of the wrong shape",
                      "lstm: w_ih has shape [3,8]; expected [2,8] (input features 2, 4 x hidden 2)",
                      [](Site& at) {
                        Value x = param(DType::f32, {2, 3, 2});
                        Value w_ih = param(DType::f32, {3, 8});
                        Value w_hh = param(DType::f32, {2, 8});
                        Value b = param(DType::f32, {8});
                        Value h0 = param(DType::f32, {2, 2});
                        at = EDF_HERE, ops::lstm(x, w_ih, w_hh, b, h0, h0);
                      }});
  e.errors.push_back({"ops::lstm: x of rank 2",
                      "lstm: x must be [batch, seq, features], got f32[3,2]", [](Site& at) {
                        Value x = param(DType::f32, {3, 2});
                        Value w_ih = param(DType::f32, {2, 8});
                        Value w_hh = param(DType::f32, {2, 8});
                        Value b = param(DType::f32, {8});
                        Value h0 = param(DType::f32, {3, 2});
                        at = EDF_HERE, ops::lstm(x, w_ih, w_hh, b, h0, h0);
                      }});
  e.errors.push_back({"ops::lstm: c0 of the wrong batch",
                      "lstm: c0 has shape [3,2]; expected [2,2] (batch, hidden)", [](Site& at) {
                        Value x = param(DType::f32, {2, 3, 2});
                        Value w_ih = param(DType::f32, {2, 8});
                        Value w_hh = param(DType::f32, {2, 8});
                        Value b = param(DType::f32, {8});
                        Value h0 = param(DType::f32, {2, 2});
                        Value c0 = param(DType::f32, {3, 2});
                        at = EDF_HERE, ops::lstm(x, w_ih, w_hh, b, h0, c0);
                      }});
  e.errors.push_back({"ops::lstm: b of the wrong shape",
                      "lstm: b has shape [6]; expected [8] (4 x hidden 2)", [](Site& at) {
                        Value x = param(DType::f32, {2, 3, 2});
                        Value w_ih = param(DType::f32, {2, 8});
                        Value w_hh = param(DType::f32, {2, 8});
                        Value b = param(DType::f32, {6});
                        Value h0 = param(DType::f32, {2, 2});
                        at = EDF_HERE, ops::lstm(x, w_ih, w_hh, b, h0, h0);
                      }});
  e.errors.push_back({"ops::lstm: u8 x",
                      "lstm: x must be floating-point (f32 or f64), got u8[2,3,2]", [](Site& at) {
                        Value x = param(DType::u8, {2, 3, 2});
                        Value w_ih = param(DType::u8, {2, 8});
                        Value w_hh = param(DType::u8, {2, 8});
                        Value b = param(DType::u8, {8});
                        Value h0 = param(DType::u8, {2, 2});
                        at = EDF_HERE, ops::lstm(x, w_ih, w_hh, b, h0, h0);
                      }});
  e.errors.push_back({"ops::lstm: f64 w_ih with f32 x",
                      "lstm: x and w_ih must have the same dtype, got f32[2,3,2] and f64[2,8]",
                      [](Site& at) {
                        Value x = param(DType::f32, {2, 3, 2});
                        Value w_ih = param(DType::f64, {2, 8});
                        Value w_hh = param(DType::f32, {2, 8});
                        Value b = param(DType::f32, {8});
                        Value h0 = param(DType::f32, {2, 2});
                        at = EDF_HERE, ops::lstm(x, w_ih, w_hh, b, h0, h0);
                      }});
  return e;
}

Sample lstm_scan_backward_sample(std::string label, std::int64_t batch, std::int64_t seq,
                                 std::int64_t u) {
  // inputs: zx, w_hh, h0, c0, dh_seq, dc_seq; h_seq and c_seq come from the forward op.
  std::vector<In> inputs = lstm_scan_inputs(batch, seq, u);
  inputs.push_back(fin({batch, seq, u}));
  inputs.push_back(fin({batch, seq, u}));
  return Sample(
             std::move(label), inputs,
             [](const Vals& in, DType) {
               Vals fwd = ops::lstm_scan(in[0], in[1], in[2], in[3]);
               return ops::lstm_scan_backward(
                   {in[0], in[1], in[2], in[3], fwd[0], fwd[1], in[4], in[5]});
             },
             [](const Arrs& in, DType) { return LstmRef(in).backward(in[4], in[5]); })
      .f32_tol(kF32Reduction);
}

OpEntry lstm_scan_backward_entry() {
  OpEntry e{Op::lstm_scan_backward, {}, {}, {}};
  e.no_grad_reason = kBackwardNoGrad;
  e.samples.push_back(lstm_scan_backward_sample("B 2, S 3, U 2", 2, 3, 2));
  e.samples.push_back(lstm_scan_backward_sample("B 1, S 1, U 1", 1, 1, 1));
  e.samples.push_back(lstm_scan_backward_sample("B 3, S 2, U 1", 3, 2, 1));
  e.samples.push_back(
      lstm_scan_backward_sample("B 5, S 3, U 3 (a full and a partial row block)", 5, 3, 3));
  e.errors.push_back({"seven inputs", "lstm_scan_backward: expects 8 inputs, got 7", [](Site& at) {
                        Value x = param(DType::f32, {2, 3, 8});
                        at = EDF_HERE, ops::lstm_scan_backward({x, x, x, x, x, x, x});
                      }});
  e.errors.push_back(
      {"dh_seq of the wrong shape",
       "lstm_scan_backward: dh_seq is f32[2,3,4], expected f32[2,3,2] ([batch, seq, hidden])",
       [](Site& at) {
         Value zx = param(DType::f32, {2, 3, 8});
         Value w_hh = param(DType::f32, {2, 8});
         Value h0 = param(DType::f32, {2, 2});
         Value seq = param(DType::f32, {2, 3, 2});
         Value bad = param(DType::f32, {2, 3, 4});
         at = EDF_HERE, ops::lstm_scan_backward({zx, w_hh, h0, h0, seq, seq, bad, seq});
       }});
  return e;
}

}  // namespace

void add_structured_entries(Table& t) {
  t.push_back(softmax_entry());
  t.push_back(layer_norm_entry());
  t.push_back(layer_norm_backward_entry());
  t.push_back(attention_entry());
  t.push_back(attention_backward_entry());
  t.push_back(lstm_scan_entry());
  t.push_back(lstm_scan_backward_entry());
}

}  // namespace edifice::optable
