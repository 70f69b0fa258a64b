// Reverse-mode autodiff as a graph transformation.
//
// vjp() walks the nodes the outputs depend on in reverse topological order, keeping one
// cotangent per (node, output index), and asks each node's VJP rule (input_cotangents below, one
// case per op) for the cotangents of its inputs. The rules build ordinary graph nodes with the
// ops:: builders, so a gradient is just more graph: it can be printed, interpreted and compiled.
// Gradient nodes carry the forward node's source location and layer scope, so an error in a
// gradient points at the user's line.

#include <edifice/core/autodiff.hpp>
#include <edifice/core/graph_rewrite.hpp>
#include <edifice/core/ops.hpp>

#include <algorithm>
#include <cmath>
#include <map>
#include <numbers>
#include <optional>
#include <set>
#include <unordered_set>
#include <utility>

namespace edifice {
namespace {

using ops::Axes;
using ops::Loc;

// The ops:: builders bound to one source location (the forward node's), so that every gradient
// node is attributed to the op it differentiates. Plain operators (a * b) would record this file.
struct Emit {
  Loc loc;

  Value c(double v, const Value& like) const { return ops::scalar(v, like.dtype(), loc); }
  Value zeros_like(const Value& x) const { return ops::zeros_like(x, loc); }
  Value full_like(const Value& x, double v) const { return ops::full_like(x, v, loc); }
  Value add(const Value& a, const Value& b) const { return ops::add(a, b, loc); }
  Value sub(const Value& a, const Value& b) const { return ops::sub(a, b, loc); }
  Value mul(const Value& a, const Value& b) const { return ops::mul(a, b, loc); }
  Value div(const Value& a, const Value& b) const { return ops::div(a, b, loc); }
  Value pow(const Value& a, const Value& b) const { return ops::pow(a, b, loc); }
  Value neg(const Value& x) const { return ops::neg(x, loc); }
  Value exp(const Value& x) const { return ops::exp(x, loc); }
  Value log(const Value& x) const { return ops::log(x, loc); }
  Value sin(const Value& x) const { return ops::sin(x, loc); }
  Value cos(const Value& x) const { return ops::cos(x, loc); }
  Value erf(const Value& x) const { return ops::erf(x, loc); }
  Value eq(const Value& a, const Value& b) const { return ops::eq(a, b, loc); }
  Value gt(const Value& a, const Value& b) const { return ops::gt(a, b, loc); }
  Value ge(const Value& a, const Value& b) const { return ops::ge(a, b, loc); }
  Value lt(const Value& a, const Value& b) const { return ops::lt(a, b, loc); }
  Value le(const Value& a, const Value& b) const { return ops::le(a, b, loc); }
  Value select(const Value& p, const Value& t, const Value& f) const {
    return ops::select(p, t, f, loc);
  }
  Value cast(const Value& x, DType d) const { return ops::cast(x, d, loc); }
  // A u8 predicate as 0/1 in the dtype of `like`.
  Value as_float(const Value& pred, const Value& like) const { return cast(pred, like.dtype()); }
  Value bcast(const Value& x, const Shape& shape, const Axes& dims) const {
    return ops::broadcast_in_dim(x, shape, dims, loc);
  }
  Value reshape(const Value& x, const Shape& shape) const {
    return x.shape() == shape ? x : ops::reshape(x, shape, loc);
  }
  Value transpose(const Value& x, const Axes& perm) const {
    for (std::size_t i = 0; i < perm.size(); ++i)
      if (perm[i] != static_cast<std::int64_t>(i)) return ops::transpose(x, perm, loc);
    return x;  // identity permutation: no node
  }
  Value reduce_sum(const Value& x, const Axes& axes) const {
    return axes.empty() ? x : ops::reduce_sum(x, axes, false, loc);
  }
  Value dot(const Value& a, const Value& b, const ops::DotDims& dims) const {
    return ops::dot_general(a, b, dims, loc);
  }
};

Axes iota_axes(std::int64_t begin, std::int64_t end) {
  Axes out;
  for (std::int64_t i = begin; i < end; ++i) out.push_back(i);
  return out;
}

bool contains(const Axes& axes, std::int64_t a) {
  return std::find(axes.begin(), axes.end(), a) != axes.end();
}

// Axes of [0, rank) that are in neither list, ascending.
Axes remaining_axes(std::int64_t rank, const Axes& a, const Axes& b) {
  Axes out;
  for (std::int64_t i = 0; i < rank; ++i)
    if (!contains(a, i) && !contains(b, i)) out.push_back(i);
  return out;
}

Axes argsort(const Axes& v) {
  Axes idx = iota_axes(0, static_cast<std::int64_t>(v.size()));
  std::stable_sort(idx.begin(), idx.end(), [&](auto i, auto j) { return v[i] < v[j]; });
  return idx;
}

// Axes of a rank-`rank` value that survive a reduction over `axes`.
Axes kept_axes(std::int64_t rank, const Axes& axes) {
  return remaining_axes(rank, axes, {});
}

// Broadcasts `g`, the cotangent of a reduction of x over `axes`, back to x's shape.
Value unreduce(const Emit& e, const Value& g, const Value& x, const Axes& axes) {
  return e.bcast(g, x.shape(), kept_axes(x.rank(), axes));
}

// The number of elements reduced over `axes`: a scalar constant, or when an extent is dynamic
// a runtime count of the reduced shape (the batch size is unknown until the graph runs).
Value reduced_count(const Emit& e, const Value& x, const Axes& axes) {
  double n = 1;
  for (auto a : axes) {
    if (x.shape()[a] == kDynamic) return e.reduce_sum(e.full_like(x, 1.0), axes);
    n *= static_cast<double>(x.shape()[a]);
  }
  return e.c(n, x);
}

// JAX's _dot_general_transpose_lhs: the cotangent of x, the lhs of dot_general(x, y) (or, with
// swap_ans, its rhs, whose free axes then come last in the product). It is g contracted with y
// over y's free axes and batched over the batch axes, which yields x's axes in the order
// (batch, x free, x contracting in y's contracting order); a transpose restores x's order.
Value dot_transpose(const Emit& e, const Value& g, const Value& x, const Value& y,
                    const Axes& x_contract, const Axes& y_contract, const Axes& x_batch,
                    const Axes& y_batch, bool swap_ans) {
  const Axes x_kept = remaining_axes(x.rank(), x_contract, x_batch);
  const Axes y_kept = remaining_axes(y.rank(), y_contract, y_batch);
  const auto nb = static_cast<std::int64_t>(x_batch.size());
  const auto nx = static_cast<std::int64_t>(x_kept.size());
  const auto ny = static_cast<std::int64_t>(y_kept.size());
  const Axes ans_batch = iota_axes(0, nb);
  const Axes ans_y = swap_ans ? iota_axes(nb, nb + ny) : iota_axes(nb + nx, nb + nx + ny);
  const Value prod = e.dot(g, y, {ans_y, y_kept, ans_batch, y_batch});

  Axes order = x_batch;  // which x axis each axis of `prod` is
  order.insert(order.end(), x_kept.begin(), x_kept.end());
  for (auto i : argsort(y_contract)) order.push_back(x_contract[i]);
  return e.transpose(prod, argsort(order));
}

Value dot_general_grad(const Emit& e, const Node& node, const Value& g, int which) {
  const DotDims d = DotDims::from(node.attrs());
  const Value& lhs = node.inputs()[0];
  const Value& rhs = node.inputs()[1];
  if (which == 0)
    return dot_transpose(e, g, lhs, rhs, d.lhs_contract, d.rhs_contract, d.lhs_batch, d.rhs_batch,
                         false);
  return dot_transpose(e, g, rhs, lhs, d.rhs_contract, d.lhs_contract, d.rhs_batch, d.lhs_batch,
                       true);
}

// Sums g over the axes broadcast_in_dim created or stretched, then restores x's shape.
Value broadcast_grad(const Emit& e, const Node& node, const Value& g) {
  const Value& x = node.inputs()[0];
  const Shape& out_shape = node.outputs()[0].shape;
  const Axes& dims = node.attrs().get_ints("dims");
  Axes sum_axes;
  for (std::int64_t j = 0; j < static_cast<std::int64_t>(out_shape.size()); ++j) {
    auto it = std::find(dims.begin(), dims.end(), j);
    if (it == dims.end()) {
      sum_axes.push_back(j);
    } else if (x.shape()[it - dims.begin()] == 1 && out_shape[j] != 1) {
      sum_axes.push_back(j);  // an extent-1 axis stretched (possibly to the dynamic extent)
    }
  }
  return e.reshape(e.reduce_sum(g, sum_axes), x.shape());
}

// The cotangent of x[start:limit:stride] is g scattered back: zero padding before, between
// (stride - 1) and after the taken elements.
Value slice_grad(const Emit& e, const Node& node, const Value& g) {
  const Value& x = node.inputs()[0];
  const Shape& in = x.shape();
  const Shape& out = node.outputs()[0].shape;
  const SliceSpec spec = SliceSpec::from(node.attrs());
  const Axes &start = spec.start, &stride = spec.stride;
  Axes low(in.size()), high(in.size()), interior(in.size());
  for (std::size_t i = 0; i < in.size(); ++i) {
    if (out[i] == 0) return e.zeros_like(x);
    low[i] = start[i];
    interior[i] = stride[i] - 1;
    // Shape inference only allows whole slices (start 0, stride 1) of the dynamic axis.
    high[i] = in[i] == kDynamic ? 0 : in[i] - (start[i] + (out[i] - 1) * stride[i] + 1);
  }
  return ops::pad(g, 0.0, low, high, interior, e.loc);
}

// The cotangent of pad(x) is the slice of g holding x's elements. The pad value is an attribute
// and gets no gradient.
Value pad_grad(const Emit& e, const Node& node, const Value& g) {
  const Value& x = node.inputs()[0];
  const Shape& in = x.shape();
  const Attributes& a = node.attrs();
  const Axes& low = a.get_ints("low");
  const Axes& interior = a.get_ints("interior");
  Axes start(in.size()), limit(in.size()), stride(in.size());
  for (std::size_t i = 0; i < in.size(); ++i) {
    if (in[i] == 0) return e.zeros_like(x);
    start[i] = low[i];
    stride[i] = interior[i] + 1;
    if (in[i] == kDynamic) {
      limit[i] = kDynamic;  // unpadded dynamic axis (shape inference rejects anything else)
    } else {
      limit[i] = low[i] + (in[i] - 1) * stride[i] + 1;
    }
  }
  return ops::slice(g, start, limit, stride, e.loc);
}

// ---- structured ops ---------------------------------------------------------------------------

// The attention mask as data: `x` [..., Sq, Sk] with disallowed pairs replaced by `fill`.
Value apply_attention_mask(const Emit& e, const Node& node, const Value& x, double fill) {
  const AttentionAttrs at = AttentionAttrs::from(node.attrs());
  if (at.mask == MaskKind::none) return x;
  const Value fill_v = e.c(fill, x);
  if (at.mask == MaskKind::tensor) return e.select(node.inputs()[3], x, fill_v);
  const Shape qk = {x.dim(-2), x.dim(-1)};
  Value i = ops::iota(qk, 0, x.dtype(), e.loc);        // query index
  const Value j = ops::iota(qk, 1, x.dtype(), e.loc);  // key index
  if (at.query_offset != 0)  // query row i sits at position i + query_offset
    i = e.add(i, e.c(static_cast<double>(at.query_offset), i));
  if (at.mask == MaskKind::causal) return e.select(e.le(j, i), x, fill_v);
  const Value d = e.sub(i, j);  // window: allowed 0 <= i - j < window
  const auto w = static_cast<double>(at.window);
  return e.select(e.ge(d, e.c(0, d)), e.select(e.lt(d, e.c(w, d)), x, fill_v), fill_v);
}

ops::AttentionOptions attention_options(const Node& node) {
  const AttentionAttrs at = AttentionAttrs::from(node.attrs());
  ops::AttentionOptions o;
  o.mask.kind = at.mask;
  if (at.mask == MaskKind::window) o.mask.window = at.window;
  if (at.mask == MaskKind::tensor) o.mask.tensor = node.inputs()[3];
  o.scale = at.scale;
  o.fill = at.fill;
  o.query_offset = at.query_offset;
  return o;
}

// Cotangent of lse = logsumexp_j(S_ij), S = mask(scale * q.k^T): dS_ij = P_ij * dlse_i with
// P = exp(S - lse) the attention weights; masked pairs are constants and get nothing. Then
// dq = scale * dS.k and dk = scale * dS^T.q. Built from primitives: the fused backward op only
// takes dout.
std::pair<Value, Value> attention_lse_grad(const Emit& e, const Node& node, const Value& dlse) {
  const Value& q = node.inputs()[0];
  const Value& k = node.inputs()[1];
  const Value lse = node.output(1);
  const std::int64_t r = q.rank();
  const Axes batch = iota_axes(0, r - 2);
  const AttentionAttrs at = AttentionAttrs::from(node.attrs());
  double scale = at.scale;
  if (scale == 0.0) scale = 1.0 / std::sqrt(static_cast<double>(q.dim(-1)));

  const Value s = e.mul(e.dot(q, k, {{r - 1}, {r - 1}, batch, batch}), e.c(scale, q));
  const Shape& s_shape = s.shape();  // [..., Sq, Sk]
  const Axes rows = iota_axes(0, r - 1);
  const Value masked = apply_attention_mask(e, node, s, at.fill);
  const Value p = e.exp(e.sub(masked, e.bcast(lse, s_shape, rows)));
  Value ds = e.mul(p, e.bcast(dlse, s_shape, rows));
  ds = e.mul(apply_attention_mask(e, node, ds, 0.0), e.c(scale, ds));
  const Value dq = e.dot(ds, k, {{r - 1}, {r - 2}, batch, batch});
  const Value dk = e.dot(ds, q, {{r - 2}, {r - 2}, batch, batch});
  return {dq, dk};
}

// layer_norm's auxiliary outputs are functions of x alone: mean = sum(x)/C and
// rstd = (var + eps)^(-1/2) with var = sum((x - mean)^2)/C, so
// dx = dmean/C - drstd * rstd^3 * (x - mean)/C  (the mean term of dvar/dx sums to zero).
Value layer_norm_stats_grad(const Emit& e, const Node& node, const Value& dmean,
                            const Value& drstd) {
  const Value& x = node.inputs()[0];
  const Axes rows = iota_axes(0, x.rank() - 1);
  const Value c = reduced_count(e, x, {x.rank() - 1});
  Value dx;
  if (dmean.valid()) dx = e.bcast(e.div(dmean, c), x.shape(), rows);
  if (drstd.valid()) {
    const Value rstd = node.output(2);
    const Value coef = e.div(e.mul(drstd, e.mul(rstd, e.mul(rstd, rstd))), c);
    const Value centred = e.sub(x, e.bcast(node.output(1), x.shape(), rows));
    const Value term = e.neg(e.mul(e.bcast(coef, x.shape(), rows), centred));
    dx = dx.valid() ? e.add(dx, term) : term;
  }
  return dx;
}

// ---- the rules ----------------------------------------------------------------------------------

// The cotangents of `node`'s inputs given those of its outputs (`ct`, invalid where none flowed;
// at least one is valid). Only inputs with want[i] need an entry; an invalid entry means no
// contribution (a zero gradient), e.g. gamma when only layer_norm's mean is used.
// The cotangents of each op's inputs, given the cotangents `ct` of its outputs (ct[0] is g;
// absent ones are invalid Values) and which inputs need one (`want`); one function per op kind.
struct Cotangents {
  const Node& node;
  const std::vector<Value>& ct;
  const std::vector<bool>& want;
  const Emit e{node.location()};
  std::vector<Value> d = std::vector<Value>(node.inputs().size());

  const Value& x(std::size_t i) const { return node.inputs()[i]; }

  // Elementwise unary ops.
  void unary_op() {
    const Value& g = ct[0];
    const Value y = node.output(0);
    // dx = g * f'(x).
    auto unary = [&](const Value& dydx) { d[0] = e.mul(g, dydx); };
    switch (node.op()) {
      case Op::neg:
        d[0] = e.neg(g);
        break;
      case Op::abs: {
        // sign(x), which is 0 at 0 (as in JAX).
        const Value zero = e.c(0, x(0));
        unary(e.sub(e.as_float(e.gt(x(0), zero), g), e.as_float(e.lt(x(0), zero), g)));
        break;
      }
      case Op::exp:
        unary(y);
        break;
      case Op::log:
        d[0] = e.div(g, x(0));
        break;
      case Op::sqrt:
        d[0] = e.div(g, e.mul(e.c(2, y), y));
        break;
      case Op::rsqrt:
        unary(e.mul(e.c(-0.5, y), e.mul(y, e.mul(y, y))));
        break;  // -x^(-3/2) / 2
      case Op::tanh:
        unary(e.sub(e.c(1, y), e.mul(y, y)));
        break;
      case Op::sigmoid:
        unary(e.mul(y, e.sub(e.c(1, y), y)));
        break;
      case Op::erf:
        unary(e.mul(e.c(2 / std::sqrt(std::numbers::pi), y), e.exp(e.neg(e.mul(x(0), x(0))))));
        break;
      case Op::sin:
        unary(e.cos(x(0)));
        break;
      case Op::cos:
        unary(e.neg(e.sin(x(0))));
        break;
      case Op::relu:
        d[0] = e.select(e.gt(x(0), e.c(0, y)), g, e.c(0, g));
        break;
      case Op::gelu: {
        // d/dx x*Phi(x) = Phi(x) + x*phi(x), Phi/phi the standard normal cdf/pdf.
        const Value& v = x(0);
        const Value cdf =
            e.mul(e.c(0.5, v), e.add(e.c(1, v), e.erf(e.mul(v, e.c(1 / std::numbers::sqrt2, v)))));
        const Value pdf = e.mul(e.c(1 / std::sqrt(2 * std::numbers::pi), v),
                                e.exp(e.mul(e.c(-0.5, v), e.mul(v, v))));
        unary(e.add(cdf, e.mul(v, pdf)));
        break;
      }

      default:
        break;
    }
  }

  // Elementwise binary ops, select and cast.
  void binary_op() {
    const Value& g = ct[0];
    const Value y = node.output(0);
    switch (node.op()) {
      case Op::add:
        d = {g, g};
        break;
      case Op::sub:
        d[0] = g;
        if (want[1]) d[1] = e.neg(g);
        break;
      case Op::mul:
        if (want[0]) d[0] = e.mul(g, x(1));
        if (want[1]) d[1] = e.mul(g, x(0));
        break;
      case Op::div: {
        const Value g_over_b = e.div(g, x(1));
        d[0] = g_over_b;
        if (want[1]) d[1] = e.neg(e.mul(g_over_b, y));  // -g*a/b^2 = -(g/b)*(a/b)
        break;
      }
      case Op::max:
      case Op::min: {
        // The winner takes g; tied operands split it 0.5/0.5 (JAX's balanced_eq).
        const bool is_max = node.op() == Op::max;
        const Value& a = x(0);
        const Value& b = x(1);
        const Value half_tie = e.mul(e.c(0.5, g), e.as_float(e.eq(a, b), g));
        const Value a_wins = e.as_float(is_max ? e.gt(a, b) : e.lt(a, b), g);
        const Value b_wins = e.as_float(is_max ? e.lt(a, b) : e.gt(a, b), g);
        if (want[0]) d[0] = e.mul(g, e.add(a_wins, half_tie));
        if (want[1]) d[1] = e.mul(g, e.add(b_wins, half_tie));
        break;
      }
      case Op::pow: {
        const Value& a = x(0);
        const Value& b = x(1);
        // d/da = b*a^(b-1), taken as 0 where b == 0 (else 0^-1 would give 0*inf = NaN at a = 0).
        if (want[0]) {
          const Value da = e.mul(b, e.pow(a, e.sub(b, e.c(1, b))));
          d[0] = e.mul(g, e.select(e.eq(b, e.c(0, b)), e.c(0, da), da));
        }
        if (want[1]) d[1] = e.mul(g, e.mul(e.log(a), y));  // d/db = log(a)*a^b
        break;
      }

      case Op::select:  // inputs: pred (no gradient), on_true, on_false
        if (want[1]) d[1] = e.select(x(0), g, e.c(0, g));
        if (want[2]) d[2] = e.select(x(0), e.c(0, g), g);
        break;
      case Op::cast:
        // Only float -> float casts get here: integer values never carry cotangents.
        d[0] = x(0).dtype() == g.dtype() ? g : e.cast(g, x(0).dtype());
        break;

      default:
        break;
    }
  }

  // Layout ops: the cotangent moved back where the element came from.
  void layout_op() {
    const Value& g = ct[0];
    const Value y = node.output(0);
    const auto& in = node.inputs();
    switch (node.op()) {
      case Op::broadcast_in_dim:
        d[0] = broadcast_grad(e, node, g);
        break;
      case Op::reshape:
        d[0] = e.reshape(g, x(0).shape());
        break;
      case Op::transpose:
        d[0] = e.transpose(g, argsort(node.attrs().get_ints("perm")));
        break;
      case Op::slice:
        d[0] = slice_grad(e, node, g);
        break;
      case Op::pad:
        d[0] = pad_grad(e, node, g);
        break;
      case Op::concat: {
        const std::int64_t axis = normalize_axis(node.attrs().get_int("axis"), y.rank());
        std::int64_t offset = 0;
        for (std::size_t i = 0; i < in.size(); ++i) {
          const std::int64_t n = x(i).shape()[axis];
          if (want[i]) d[i] = ops::slice_axis(g, axis, offset, offset + n, e.loc);
          offset += n;
        }
        break;
      }

      default:
        break;
    }
  }

  // Reductions, dot_general, gather and scatter.
  void reduction_or_indexing_op() {
    const Value& g = ct[0];
    const Value y = node.output(0);
    switch (node.op()) {
      case Op::reduce_sum:
        d[0] = unreduce(e, g, x(0), node.attrs().get_ints("axes"));
        break;
      case Op::reduce_mean: {
        const Axes& axes = node.attrs().get_ints("axes");
        d[0] = unreduce(e, e.div(g, reduced_count(e, x(0), axes)), x(0), axes);
        break;
      }
      case Op::reduce_max: {
        // g goes to the elements equal to the max, shared equally between ties.
        const Axes& axes = node.attrs().get_ints("axes");
        const Value is_max = e.as_float(e.eq(x(0), unreduce(e, y, x(0), axes)), g);
        const Value share = e.div(g, e.reduce_sum(is_max, axes));
        d[0] = e.mul(is_max, unreduce(e, share, x(0), axes));
        break;
      }
      case Op::dot_general:
        if (want[0]) d[0] = dot_general_grad(e, node, g, 0);
        if (want[1]) d[1] = dot_general_grad(e, node, g, 1);
        break;

      case Op::take: {  // inputs: x, indices
        const std::int64_t axis = normalize_axis(node.attrs().get_int("axis"), x(0).rank());
        d[0] = ops::scatter_add(x(1), g, axis, x(0).shape()[axis], e.loc);
        break;
      }
      case Op::scatter_add:  // inputs: indices, updates
        if (want[1])
          d[1] = ops::take(g, x(0), normalize_axis(node.attrs().get_int("axis"), y.rank()), e.loc);
        break;

      default:
        break;
    }
  }

  // softmax and layer_norm.
  void softmax_or_layer_norm() {
    const Value& g = ct[0];
    const Value y = node.output(0);
    const auto& in = node.inputs();
    switch (node.op()) {
      case Op::softmax: {
        // dx = y * (g - sum(g * y, axis)).
        const Axes axis = {node.attrs().get_int("axis")};
        const Value dot = unreduce(e, e.reduce_sum(e.mul(g, y), axis), y, axis);
        d[0] = e.mul(y, e.sub(g, dot));
        break;
      }
      case Op::layer_norm: {  // inputs: x [, gamma, beta]; outputs: y, mean, rstd
        const bool affine = in.size() == 3;
        if (ct[0].valid()) {
          const std::optional<Value> gamma = affine ? std::optional<Value>(x(1)) : std::nullopt;
          const auto r = ops::layer_norm_backward(x(0), node.output(1), node.output(2), ct[0],
                                                  gamma, node.attrs().get_float("eps"), e.loc);
          d[0] = r[0];
          if (affine) d[1] = r[1], d[2] = r[2];
        }
        if (want[0] && (ct[1].valid() || ct[2].valid())) {
          const Value extra = layer_norm_stats_grad(e, node, ct[1], ct[2]);
          d[0] = d[0].valid() ? e.add(d[0], extra) : extra;
        }
        break;
      }
      default:
        break;
    }
  }

  // attention: the fused backward op for out, primitives for lse.
  void attention() {
    switch (node.op()) {
      case Op::attention: {  // inputs: q, k, v [, mask]; outputs: out, lse
        if (ct[0].valid()) {
          const auto r = ops::attention_backward(x(0), x(1), x(2), node.output(0), node.output(1),
                                                 ct[0], attention_options(node), e.loc);
          d[0] = r[0], d[1] = r[1], d[2] = r[2];
        }
        if (ct[1].valid() && (want[0] || want[1])) {
          const auto [dq, dk] = attention_lse_grad(e, node, ct[1]);
          d[0] = d[0].valid() ? e.add(d[0], dq) : dq;
          d[1] = d[1].valid() ? e.add(d[1], dk) : dk;
        }
        break;
      }
      default:
        break;
    }
  }

  // lstm_scan: the serial part is lstm_scan_backward, dw_hh one GEMM.
  void lstm_scan() {
    const auto& in = node.inputs();
    switch (node.op()) {
      case Op::lstm_scan: {  // inputs: zx, w_hh, h0, c0; outputs: h_seq, c_seq
        // The serial part (dz per step, dh carried through w_hh^T) is lstm_scan_backward; the
        // weight gradient is one GEMM over every (batch, step): dw_hh = sum h_{t-1}^T dz_t, with
        // h_{t-1} = concat(h0, h_seq[:, :-1]) along the sequence axis.
        std::vector<Value> args(in.begin(), in.end());
        args.push_back(node.output(0));
        args.push_back(node.output(1));
        for (int i = 0; i < 2; ++i)
          args.push_back(ct[i].valid() ? ct[i] : e.zeros_like(node.output(i)));
        const auto r = ops::lstm_scan_backward(args, e.loc);
        d[0] = r[0], d[2] = r[1], d[3] = r[2];
        if (want[1]) {
          const Value& h0 = x(2);
          const Value& h_seq = node.output(0);
          const std::int64_t steps = h_seq.shape()[1];
          Value h_prev = e.reshape(h0, {h0.shape()[0], 1, h0.shape()[1]});
          if (steps > 1)
            h_prev =
                ops::concat({h_prev, ops::slice_axis(h_seq, 1, 0, steps - 1, e.loc)}, 1, e.loc);
          d[1] = steps == 0 ? e.zeros_like(x(1)) : e.dot(h_prev, r[0], {{0, 1}, {0, 1}, {}, {}});
        }
        break;
      }

      default:
        break;
    }
  }
};

std::vector<Value> input_cotangents(const Node& node, const std::vector<Value>& ct,
                                    const std::vector<bool>& want) {
  Cotangents c{node, ct, want};
  switch (op_kind(node.op())) {
    // Leaves, random numbers (nothing to seed) and u8 comparisons carry no gradient.
    case OpKind::source:
    case OpKind::compare:
      break;
    case OpKind::unary:
      c.unary_op();
      break;
    case OpKind::binary:
    case OpKind::select:
    case OpKind::cast:
      c.binary_op();
      break;
    case OpKind::layout:
      c.layout_op();
      break;
    case OpKind::reduction:
    case OpKind::contraction:
    case OpKind::indexing:
      c.reduction_or_indexing_op();
      break;
    case OpKind::structured:
      if (node.op() == Op::softmax || node.op() == Op::layer_norm)
        c.softmax_or_layer_norm();
      else if (node.op() == Op::attention)
        c.attention();
      else if (node.op() == Op::lstm_scan)
        c.lstm_scan();
      else
        fail_at(node.location(),
                fmt::format("{}: second-order gradients are not supported", op_name(node.op())));
      break;
  }
  return std::move(c.d);
}

}  // namespace

std::vector<Value> vjp(const std::vector<Value>& outputs, const std::vector<Value>& cotangents,
                       const std::vector<Value>& wrt) {
  if (outputs.size() != cotangents.size())
    fail("vjp: {} outputs but {} cotangents", outputs.size(), cotangents.size());
  for (std::size_t i = 0; i < outputs.size(); ++i) {
    if (!outputs[i].valid()) fail("vjp: output {} is an empty Value", i);
    if (!cotangents[i].valid()) fail("vjp: cotangent {} is an empty Value", i);
    if (outputs[i].type() != cotangents[i].type())
      fail("vjp: cotangent {} has type {} but output {} has type {}", i,
           cotangents[i].type().to_string(), i, outputs[i].type().to_string());
  }
  std::set<ValueKey> wrt_keys;
  for (std::size_t i = 0; i < wrt.size(); ++i) {
    if (!wrt[i].valid()) fail("vjp: wrt value {} is an empty Value", i);
    if (!is_floating(wrt[i].dtype()))
      fail(
          "vjp: cannot differentiate with respect to wrt value {} of type {}: integer-typed "
          "values have no gradient\n  the value was defined at {}",
          i, wrt[i].type().to_string(), format_location(wrt[i].node().location()));
    wrt_keys.insert(key_of(wrt[i]));
  }

  // A value carries a gradient toward `wrt` if it is float and is in wrt or computed from one.
  // Everything else gets no cotangent, so no dead gradient nodes are built (and no rule is
  // asked for a gradient nobody wants).
  const std::vector<const Node*> order = topological_order(outputs);
  std::unordered_set<const Node*> live;
  auto needs_grad = [&](const Value& v) {
    return is_floating(v.dtype()) && (wrt_keys.count(key_of(v)) || live.count(&v.node()));
  };
  for (const Node* node : order)
    for (const Value& v : node->inputs())
      if (needs_grad(v)) {
        live.insert(node);
        break;
      }

  std::map<ValueKey, Value> cotangent;
  auto accumulate = [&](const Value& v, const Value& ct, const Loc& loc) {
    auto [it, inserted] = cotangent.try_emplace(key_of(v), ct);
    if (!inserted) it->second = ops::add(it->second, ct, loc);
  };
  for (std::size_t i = 0; i < outputs.size(); ++i)
    if (needs_grad(outputs[i]))
      accumulate(outputs[i], cotangents[i], cotangents[i].node().location());

  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    const Node& node = **it;
    if (!live.count(&node)) continue;
    std::vector<Value> ct(node.num_outputs());
    bool any = false;
    for (int i = 0; i < node.num_outputs(); ++i) {
      auto found = cotangent.find({&node, i});
      if (found != cotangent.end()) ct[i] = found->second, any = true;
    }
    if (!any) continue;
    std::vector<bool> want;
    for (const Value& v : node.inputs()) want.push_back(needs_grad(v));

    // Gradient nodes belong to the forward node's layer (Node keeps only the layer's name, so
    // the kind is given as the differentiated op).
    std::optional<LayerScope> scope;
    if (!node.scope().empty())
      scope.emplace(node.scope(), fmt::format("gradient of {}", op_name(node.op())),
                    node.location());
    const std::vector<Value> d = input_cotangents(node, ct, want);
    for (std::size_t i = 0; i < node.inputs().size(); ++i) {
      if (!want[i]) continue;
      const Value& v = node.inputs()[i];
      if (!d[i].valid()) continue;
      if (d[i].type() != v.type())
        fail("autodiff: the {} rule gave a gradient of type {} for input {} of type {}",
             op_name(node.op()), d[i].type().to_string(), i, v.type().to_string());
      accumulate(v, d[i], node.location());
    }
  }

  std::vector<Value> result;
  for (const Value& w : wrt) {
    auto found = cotangent.find(key_of(w));
    result.push_back(found != cotangent.end() ? found->second
                                              : ops::zeros_like(w, w.node().location()));
  }
  return result;
}

std::vector<Value> grad(const Value& scalar_output, const std::vector<Value>& wrt) {
  if (!scalar_output.valid()) fail("grad: the output is an empty Value");
  if (scalar_output.rank() != 0 || !is_floating(scalar_output.dtype()))
    fail("grad: the output must be a rank-0 float value, got {}", scalar_output.type().to_string());
  const Value seed = ops::scalar(1.0, scalar_output.dtype(), scalar_output.node().location());
  return vjp({scalar_output}, {seed}, wrt);
}

Graph grad(const Graph& graph, const std::vector<int>& wrt, bool keep_outputs) {
  if (graph.outputs().size() != 1)
    fail("grad: the graph must have exactly one output, it has {}", graph.outputs().size());
  std::vector<Value> wrt_values;
  for (int i : wrt) {
    if (i < 0 || i >= static_cast<int>(graph.inputs().size()))
      fail("grad: wrt index {} is out of range for a graph with {} inputs", i,
           graph.inputs().size());
    wrt_values.push_back(graph.inputs()[i]);
  }
  std::vector<Value> outs;
  if (keep_outputs) outs.push_back(graph.outputs()[0]);
  for (Value& g : grad(graph.outputs()[0], wrt_values)) outs.push_back(std::move(g));
  return Graph(graph.inputs(), std::move(outs));
}

}  // namespace edifice
