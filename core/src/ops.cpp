// Op builders: argument sugar (broadcasting, negative axes, keepdims, default scale) on top of
// make_node, which runs the shape rules in shape_inference.cpp.
#include <edifice/core/ops.hpp>

#include <algorithm>
#include <cmath>

namespace edifice::ops {
namespace {

Value make1(Op op, std::vector<Value> inputs, Attributes attrs, const Loc& loc) {
  return make_node(op, std::move(inputs), std::move(attrs), loc)[0];
}

// Normalises axes when they are all valid; otherwise passes them through so that shape
// inference reports the bad one in its own words.
Axes normalized_axes(const Axes& axes, std::int64_t rank) {
  Axes out;
  for (auto a : axes) {
    int n = normalize_axis(a, rank);
    if (n < 0) return axes;
    out.push_back(n);
  }
  std::sort(out.begin(), out.end());
  if (std::adjacent_find(out.begin(), out.end()) != out.end()) return axes;
  return out;
}

// Normalises each axis that is in range, keeping order (for paired axis lists).
Axes normalized_in_order(const Axes& axes, std::int64_t rank) {
  Axes out;
  for (auto a : axes) {
    int n = normalize_axis(a, rank);
    out.push_back(n < 0 ? a : n);
  }
  return out;
}

std::int64_t normalized_axis(std::int64_t axis, std::int64_t rank) {
  int n = normalize_axis(axis, rank);
  return n < 0 ? axis : n;
}

std::string extent(std::int64_t d) {
  return d == kDynamic ? "?" : std::to_string(d);
}

// NumPy broadcasting of two shapes; error names both types and the axis (counted from the end).
Shape broadcast_shapes(Op op, const Value& a, const Value& b, const Loc& loc) {
  const Shape &sa = a.shape(), &sb = b.shape();
  std::size_t rank = std::max(sa.size(), sb.size());
  Shape out(rank);
  for (std::size_t i = 0; i < rank; ++i) {
    std::int64_t da = i < sa.size() ? sa[sa.size() - 1 - i] : 1;
    std::int64_t db = i < sb.size() ? sb[sb.size() - 1 - i] : 1;
    if (da != db && da != 1 && db != 1)
      fail_at(loc, fmt::format("{}: cannot broadcast {} and {} together: axis -{} has extents {} "
                               "and {}",
                               op_name(op), a.type().to_string(), b.type().to_string(), i + 1,
                               extent(da), extent(db)));
    out[rank - 1 - i] = da == 1 ? db : da;
  }
  return out;
}

Value binary(Op op, const Value& a, const Value& b, const Loc& loc) {
  if (!a.valid() || !b.valid())
    fail_at(loc, fmt::format("{}: an operand is an empty Value", op_name(op)));
  if (a.dtype() != b.dtype())
    fail_at(loc, fmt::format("{}: lhs and rhs must have the same dtype, got {} and {}", op_name(op),
                             a.type().to_string(), b.type().to_string()));
  Shape shape = broadcast_shapes(op, a, b, loc);
  return make1(op, {broadcast_to(a, shape, loc), broadcast_to(b, shape, loc)}, {}, loc);
}

Value unary(Op op, const Value& x, const Loc& loc) {
  return make1(op, {x}, {}, loc);
}

Value reduce(Op op, const Value& x, const Axes& axes, bool keepdims, const Loc& loc) {
  Axes norm = normalized_axes(axes, x.rank());
  Value r = make1(op, {x}, {{"axes", norm}}, loc);
  if (!keepdims) return r;
  Shape kept = x.shape();
  for (auto a : norm) kept[a] = 1;
  return reshape(r, kept, loc);
}

Attributes attention_attrs(const Value& q, const AttentionOptions& o) {
  double scale = o.scale;
  if (scale == 0 && q.valid() && q.rank() >= 1 && q.shape().back() > 0)
    scale = 1.0 / std::sqrt(static_cast<double>(q.shape().back()));
  return AttentionAttrs{.mask = o.mask.kind,
                        .window = o.mask.window,
                        .query_offset = o.query_offset,
                        .scale = scale,
                        .fill = o.fill}
      .to_attributes();
}

std::vector<Value> attention_inputs(const Value& q, const Value& k, const Value& v,
                                    const AttentionOptions& o) {
  std::vector<Value> in = {q, k, v};
  if (o.mask.kind == AttentionMask::Kind::tensor) in.push_back(o.mask.tensor);
  return in;
}

}  // namespace

// ---- sources ----

Value parameter(std::string name, DType dtype, Shape shape, Loc loc) {
  for (auto d : shape)
    if (d < 0 && d != kDynamic)
      fail_at(loc, fmt::format("parameter: \"{}\" has shape {} with a negative extent", name,
                               shape_to_string(shape)));
  return make_node_typed(Op::parameter, {}, {{"name", std::move(name)}}, {{dtype, shape}}, loc)[0];
}

Value constant(Tensor value, Loc loc) {
  return make1(Op::constant, {}, {{"value", value}}, loc);
}

Value scalar(double value, DType dtype, Loc loc) {
  return constant(Tensor::full(dtype, {}, value), loc);
}

Value full(Shape shape, double value, DType dtype, Loc loc) {
  for (auto d : shape)
    if (d < 0 && d != kDynamic)
      fail_at(loc, fmt::format("full: shape {} has a negative extent", shape_to_string(shape)));
  Value s = scalar(value, dtype, loc);
  if (shape.empty()) return s;
  return make1(Op::broadcast_in_dim, {s}, {{"shape", shape}, {"dims", Axes{}}}, loc);
}

Value full_like(const Value& x, double value, Loc loc) {
  return full(x.shape(), value, x.dtype(), loc);
}

Value zeros_like(const Value& x, Loc loc) {
  return full_like(x, 0.0, loc);
}

Value iota(Shape shape, std::int64_t axis, DType dtype, Loc loc) {
  std::int64_t a = normalized_axis(axis, static_cast<std::int64_t>(shape.size()));
  return make1(Op::iota, {}, {{"shape", shape}, {"axis", a}, {"dtype", dtype}}, loc);
}

Value random_uniform(const Value& seed, Shape shape, DType dtype, std::int64_t stream, Loc loc) {
  return make1(Op::random_uniform, {seed}, {{"shape", shape}, {"dtype", dtype}, {"stream", stream}},
               loc);
}

// ---- elementwise ----

Value neg(const Value& x, Loc loc) {
  return unary(Op::neg, x, loc);
}
Value abs(const Value& x, Loc loc) {
  return unary(Op::abs, x, loc);
}
Value exp(const Value& x, Loc loc) {
  return unary(Op::exp, x, loc);
}
Value log(const Value& x, Loc loc) {
  return unary(Op::log, x, loc);
}
Value sqrt(const Value& x, Loc loc) {
  return unary(Op::sqrt, x, loc);
}
Value rsqrt(const Value& x, Loc loc) {
  return unary(Op::rsqrt, x, loc);
}
Value tanh(const Value& x, Loc loc) {
  return unary(Op::tanh, x, loc);
}
Value sigmoid(const Value& x, Loc loc) {
  return unary(Op::sigmoid, x, loc);
}
Value erf(const Value& x, Loc loc) {
  return unary(Op::erf, x, loc);
}
Value sin(const Value& x, Loc loc) {
  return unary(Op::sin, x, loc);
}
Value cos(const Value& x, Loc loc) {
  return unary(Op::cos, x, loc);
}
Value relu(const Value& x, Loc loc) {
  return unary(Op::relu, x, loc);
}
Value gelu(const Value& x, Loc loc) {
  return unary(Op::gelu, x, loc);
}

Value add(const Value& a, const Value& b, Loc loc) {
  return binary(Op::add, a, b, loc);
}
Value sub(const Value& a, const Value& b, Loc loc) {
  return binary(Op::sub, a, b, loc);
}
Value mul(const Value& a, const Value& b, Loc loc) {
  return binary(Op::mul, a, b, loc);
}
Value div(const Value& a, const Value& b, Loc loc) {
  return binary(Op::div, a, b, loc);
}
Value max(const Value& a, const Value& b, Loc loc) {
  return binary(Op::max, a, b, loc);
}
Value min(const Value& a, const Value& b, Loc loc) {
  return binary(Op::min, a, b, loc);
}
Value pow(const Value& a, const Value& b, Loc loc) {
  return binary(Op::pow, a, b, loc);
}
Value eq(const Value& a, const Value& b, Loc loc) {
  return binary(Op::eq, a, b, loc);
}
Value ne(const Value& a, const Value& b, Loc loc) {
  return binary(Op::ne, a, b, loc);
}
Value lt(const Value& a, const Value& b, Loc loc) {
  return binary(Op::lt, a, b, loc);
}
Value le(const Value& a, const Value& b, Loc loc) {
  return binary(Op::le, a, b, loc);
}
Value gt(const Value& a, const Value& b, Loc loc) {
  return binary(Op::gt, a, b, loc);
}
Value ge(const Value& a, const Value& b, Loc loc) {
  return binary(Op::ge, a, b, loc);
}

Value select(const Value& pred, const Value& on_true, const Value& on_false, Loc loc) {
  if (!pred.valid() || !on_true.valid() || !on_false.valid())
    fail_at(loc, "select: an operand is an empty Value");
  if (pred.dtype() != DType::u8)
    fail_at(loc, fmt::format("select: the predicate must be u8, got {}", pred.type().to_string()));
  if (on_true.dtype() != on_false.dtype())
    fail_at(loc, fmt::format("select: on_true and on_false must have the same dtype, got {} and {}",
                             on_true.type().to_string(), on_false.type().to_string()));
  Shape shape = broadcast_shapes(Op::select, on_true, on_false, loc);
  // The predicate broadcasts against the (already broadcast) branches.
  Value branches = broadcast_to(on_true, shape, loc);
  shape = broadcast_shapes(Op::select, pred, branches, loc);
  return make1(Op::select,
               {broadcast_to(pred, shape, loc), broadcast_to(on_true, shape, loc),
                broadcast_to(on_false, shape, loc)},
               {}, loc);
}

Value cast(const Value& x, DType dtype, Loc loc) {
  if (x.valid() && x.dtype() == dtype) return x;
  return make1(Op::cast, {x}, {{"dtype", dtype}}, loc);
}

// ---- layout ----

Value broadcast_in_dim(const Value& x, Shape shape, Axes dims, Loc loc) {
  return make1(Op::broadcast_in_dim, {x}, {{"shape", shape}, {"dims", dims}}, loc);
}

Value broadcast_to(const Value& x, Shape shape, Loc loc) {
  if (x.shape() == shape) return x;
  if (x.rank() > static_cast<std::int64_t>(shape.size()))
    fail_at(loc, fmt::format("broadcast_in_dim: cannot broadcast {} to the lower-rank shape {}",
                             x.type().to_string(), shape_to_string(shape)));
  Axes dims;
  std::int64_t offset = static_cast<std::int64_t>(shape.size()) - x.rank();
  for (std::int64_t i = 0; i < x.rank(); ++i) dims.push_back(offset + i);
  return broadcast_in_dim(x, std::move(shape), std::move(dims), loc);
}

Value reshape(const Value& x, Shape shape, Loc loc) {
  if (x.valid() && x.shape() == shape) return x;
  return make1(Op::reshape, {x}, {{"shape", shape}}, loc);
}

Value transpose(const Value& x, Axes perm, Loc loc) {
  if (x.valid()) perm = normalized_in_order(perm, x.rank());
  return make1(Op::transpose, {x}, {{"perm", perm}}, loc);
}

Value slice(const Value& x, Axes start, Axes limit, Axes stride, Loc loc) {
  if (stride.empty()) stride.assign(start.size(), 1);
  return make1(Op::slice, {x},
               SliceSpec{std::move(start), std::move(limit), std::move(stride)}.to_attributes(),
               loc);
}

Value slice_axis(const Value& x, std::int64_t axis, std::int64_t start, std::int64_t limit,
                 Loc loc) {
  int a = normalize_axis(axis, x.rank());
  if (a < 0)
    fail_at(loc, fmt::format("slice: axis {} is out of range for {}", axis, x.type().to_string()));
  Axes starts(x.rank(), 0), limits = x.shape();
  starts[a] = start;
  limits[a] = limit;
  return slice(x, starts, limits, {}, loc);
}

Value pad(const Value& x, double value, Axes low, Axes high, Axes interior, Loc loc) {
  if (interior.empty()) interior.assign(low.size(), 0);
  return make1(Op::pad, {x},
               {{"low", low}, {"high", high}, {"interior", interior}, {"value", value}}, loc);
}

Value concat(const std::vector<Value>& xs, std::int64_t axis, Loc loc) {
  std::int64_t a = xs.empty() || !xs[0].valid() ? axis : normalized_axis(axis, xs[0].rank());
  return make1(Op::concat, xs, {{"axis", a}}, loc);
}

// ---- reductions ----

Value reduce_sum(const Value& x, Axes axes, bool keepdims, Loc loc) {
  return reduce(Op::reduce_sum, x, axes, keepdims, loc);
}
Value reduce_max(const Value& x, Axes axes, bool keepdims, Loc loc) {
  return reduce(Op::reduce_max, x, axes, keepdims, loc);
}
Value reduce_mean(const Value& x, Axes axes, bool keepdims, Loc loc) {
  return reduce(Op::reduce_mean, x, axes, keepdims, loc);
}

Value dot_general(const Value& lhs, const Value& rhs, DotDims d, Loc loc) {
  if (lhs.valid() && rhs.valid()) {
    d.lhs_contract = normalized_in_order(d.lhs_contract, lhs.rank());
    d.lhs_batch = normalized_in_order(d.lhs_batch, lhs.rank());
    d.rhs_contract = normalized_in_order(d.rhs_contract, rhs.rank());
    d.rhs_batch = normalized_in_order(d.rhs_batch, rhs.rank());
  }
  return make1(Op::dot_general, {lhs, rhs}, d.to_attributes(), loc);
}

Value matmul(const Value& a, const Value& b, Loc loc) {
  if (a.rank() < 2 || b.rank() < 2)
    fail_at(loc, fmt::format("matmul: operands must have rank >= 2, got {} and {}",
                             a.type().to_string(), b.type().to_string()));
  if (b.rank() == 2) return dot_general(a, b, {{a.rank() - 1}, {0}, {}, {}}, loc);
  if (b.rank() != a.rank())
    fail_at(loc, fmt::format("matmul: {} and {} must have equal rank or a rank-2 rhs",
                             a.type().to_string(), b.type().to_string()));
  Axes batch;
  for (std::int64_t i = 0; i < a.rank() - 2; ++i) batch.push_back(i);
  return dot_general(a, b, {{a.rank() - 1}, {b.rank() - 2}, batch, batch}, loc);
}

// ---- indexing ----

Value take(const Value& x, const Value& indices, std::int64_t axis, Loc loc) {
  std::int64_t a = x.valid() ? normalized_axis(axis, x.rank()) : axis;
  return make1(Op::take, {x, indices}, {{"axis", a}}, loc);
}

Value scatter_add(const Value& indices, const Value& updates, std::int64_t axis,
                  std::int64_t dim_size, Loc loc) {
  return make1(Op::scatter_add, {indices, updates}, {{"axis", axis}, {"dim_size", dim_size}}, loc);
}

// ---- structured ----

Value softmax(const Value& x, std::int64_t axis, Loc loc) {
  std::int64_t a = x.valid() ? normalized_axis(axis, x.rank()) : axis;
  return make1(Op::softmax, {x}, {{"axis", a}}, loc);
}

std::vector<Value> layer_norm_full(const Value& x, const std::optional<Value>& gamma,
                                   const std::optional<Value>& beta, double eps, Loc loc) {
  if (gamma.has_value() != beta.has_value())
    fail_at(loc, "layer_norm: gamma and beta must be given together");
  std::vector<Value> in = {x};
  if (gamma) in.insert(in.end(), {*gamma, *beta});
  return make_node(Op::layer_norm, in, {{"eps", eps}}, loc);
}

Value layer_norm(const Value& x, const Value& gamma, const Value& beta, double eps, Loc loc) {
  return layer_norm_full(x, gamma, beta, eps, loc)[0];
}

Value layer_norm(const Value& x, double eps, Loc loc) {
  return layer_norm_full(x, std::nullopt, std::nullopt, eps, loc)[0];
}

std::vector<Value> layer_norm_backward(const Value& x, const Value& mean, const Value& rstd,
                                       const Value& dy, const std::optional<Value>& gamma,
                                       double eps, Loc loc) {
  std::vector<Value> in = {x, mean, rstd, dy};
  if (gamma) in.push_back(*gamma);
  return make_node(Op::layer_norm_backward, in, {{"eps", eps}}, loc);
}

std::vector<Value> attention_full(const Value& q, const Value& k, const Value& v,
                                  const AttentionOptions& options, Loc loc) {
  return make_node(Op::attention, attention_inputs(q, k, v, options), attention_attrs(q, options),
                   loc);
}

Value attention(const Value& q, const Value& k, const Value& v, const AttentionOptions& options,
                Loc loc) {
  return attention_full(q, k, v, options, loc)[0];
}

std::vector<Value> attention_backward(const Value& q, const Value& k, const Value& v,
                                      const Value& out, const Value& lse, const Value& dout,
                                      const AttentionOptions& options, Loc loc) {
  std::vector<Value> in = attention_inputs(q, k, v, options);
  in.insert(in.end(), {out, lse, dout});
  return make_node(Op::attention_backward, in, attention_attrs(q, options), loc);
}

std::vector<Value> lstm(const Value& x, const Value& w_ih, const Value& w_hh, const Value& b,
                        const Value& h0, const Value& c0, Loc loc) {
  // The checks (and messages) of the whole layer, before any node is built, so that a wrong
  // operand is reported as the lstm's rather than as its dot_general's.
  const Value* in[] = {&x, &w_ih, &w_hh, &b, &h0, &c0};
  const char* names[] = {"x", "w_ih", "w_hh", "b", "h0", "c0"};
  for (int i = 0; i < 6; ++i)
    if (!in[i]->valid()) fail_at(loc, fmt::format("lstm: input {} is an empty Value", i));
  if (!is_floating(x.dtype()))
    fail_at(loc, fmt::format("lstm: x must be floating-point (f32 or f64), got {}",
                             x.type().to_string()));
  for (int i = 1; i < 6; ++i)
    if (in[i]->dtype() != x.dtype())
      fail_at(loc, fmt::format("lstm: x and {} must have the same dtype, got {} and {}", names[i],
                               x.type().to_string(), in[i]->type().to_string()));
  if (x.rank() != 3)
    fail_at(loc,
            fmt::format("lstm: x must be [batch, seq, features], got {}", x.type().to_string()));
  if (w_hh.rank() != 2 || w_hh.shape()[1] != 4 * w_hh.shape()[0])
    fail_at(loc, fmt::format("lstm: w_hh has shape {}; expected [U, 4U]",
                             shape_to_string(w_hh.shape())));
  const std::int64_t u = w_hh.shape()[0], features = x.shape()[2];
  if (w_ih.shape() != Shape{features, 4 * u})
    fail_at(loc, fmt::format("lstm: w_ih has shape {}; expected [{},{}] (input features {}, 4 x "
                             "hidden {})",
                             shape_to_string(w_ih.shape()), extent(features), 4 * u,
                             extent(features), u));
  if (b.shape() != Shape{4 * u})
    fail_at(loc, fmt::format("lstm: b has shape {}; expected [{}] (4 x hidden {})",
                             shape_to_string(b.shape()), 4 * u, u));
  for (const Value* s : {&h0, &c0})
    if (s->shape() != Shape{x.shape()[0], u})
      fail_at(loc, fmt::format("lstm: {} has shape {}; expected [{},{}] (batch, hidden)",
                               s == &h0 ? "h0" : "c0", shape_to_string(s->shape()),
                               extent(x.shape()[0]), u));
  // The input projection of all steps: one GEMM ([B*S, I] x [I, 4U]) with the bias added in
  // its epilogue; only h.w_hh stays inside the serial recurrence.
  const Value zx = add(dot_general(x, w_ih, {{2}, {0}, {}, {}}, loc), b, loc);
  return lstm_scan(zx, w_hh, h0, c0, loc);
}

std::vector<Value> lstm_scan(const Value& zx, const Value& w_hh, const Value& h0, const Value& c0,
                             Loc loc) {
  return make_node(Op::lstm_scan, {zx, w_hh, h0, c0}, {}, loc);
}

std::vector<Value> lstm_scan_backward(const std::vector<Value>& inputs, Loc loc) {
  return make_node(Op::lstm_scan_backward, inputs, {}, loc);
}

}  // namespace edifice::ops

namespace edifice {

Value operator+(const Value& a, Operand b) {
  return ops::add(a, b.value, b.loc);
}
Value operator-(const Value& a, Operand b) {
  return ops::sub(a, b.value, b.loc);
}
Value operator*(const Value& a, Operand b) {
  return ops::mul(a, b.value, b.loc);
}
Value operator/(const Value& a, Operand b) {
  return ops::div(a, b.value, b.loc);
}
Value operator-(Operand a) {
  return ops::neg(a.value, a.loc);
}
Value operator+(Operand a, double b) {
  return ops::add(a.value, ops::scalar(b, a.value.dtype(), a.loc), a.loc);
}
Value operator-(Operand a, double b) {
  return ops::sub(a.value, ops::scalar(b, a.value.dtype(), a.loc), a.loc);
}
Value operator*(Operand a, double b) {
  return ops::mul(a.value, ops::scalar(b, a.value.dtype(), a.loc), a.loc);
}
Value operator/(Operand a, double b) {
  return ops::div(a.value, ops::scalar(b, a.value.dtype(), a.loc), a.loc);
}
Value operator+(double a, Operand b) {
  return ops::add(ops::scalar(a, b.value.dtype(), b.loc), b.value, b.loc);
}
Value operator-(double a, Operand b) {
  return ops::sub(ops::scalar(a, b.value.dtype(), b.loc), b.value, b.loc);
}
Value operator*(double a, Operand b) {
  return ops::mul(ops::scalar(a, b.value.dtype(), b.loc), b.value, b.loc);
}
Value operator/(double a, Operand b) {
  return ops::div(ops::scalar(a, b.value.dtype(), b.loc), b.value, b.loc);
}

}  // namespace edifice
