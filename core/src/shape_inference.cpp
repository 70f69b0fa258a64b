// Shape and dtype rules of every op: the one place that says what a valid node is.
// Messages start with the op name and name the shapes and the axis at fault; make_node adds
// the scope and the user's file:line.
#include <edifice/core/graph.hpp>
#include <edifice/core/op_attrs.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <set>

namespace edifice {
namespace {

using Types = std::vector<TensorType>;

std::string name(Op op) {
  return std::string(op_name(op));
}

std::string ext(std::int64_t d) {
  return d == kDynamic ? "?" : std::to_string(d);
}

std::string ints(const std::vector<std::int64_t>& v) {
  std::string s = "[";
  for (std::size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
  return s + "]";
}

void expect_inputs(Op op, const Types& in, std::size_t n) {
  if (in.size() != n) fail("{}: expects {} inputs, got {}", name(op), n, in.size());
}

void expect_float(Op op, const TensorType& t, std::string_view what) {
  if (!is_floating(t.dtype))
    fail("{}: {} must be floating-point (f32 or f64), got {}", name(op), what, t.to_string());
}

void expect_same_dtype(Op op, const TensorType& a, std::string_view an, const TensorType& b,
                       std::string_view bn) {
  if (a.dtype != b.dtype)
    fail("{}: {} and {} must have the same dtype, got {} and {}", name(op), an, bn, a.to_string(),
         b.to_string());
}

void expect_same_shape(Op op, const TensorType& a, std::string_view an, const TensorType& b,
                       std::string_view bn) {
  if (a.rank() != b.rank())
    fail("{}: {} {} and {} {} differ in rank ({} vs {})", name(op), an, a.to_string(), bn,
         b.to_string(), a.rank(), b.rank());
  for (std::size_t i = 0; i < a.shape.size(); ++i)
    if (a.shape[i] != b.shape[i])
      fail("{}: {} {} and {} {} differ at axis {} ({} vs {})", name(op), an, a.to_string(), bn,
           b.to_string(), i, ext(a.shape[i]), ext(b.shape[i]));
}

void expect_valid_shape(Op op, const Shape& shape, std::string_view what) {
  for (auto d : shape)
    if (d < 0 && d != kDynamic)
      fail("{}: {} {} has a negative extent", name(op), what, shape_to_string(shape));
}

// `got` must equal `want`; `why` says where the expected type comes from.
void expect_type(Op op, const TensorType& got, std::string_view what, const TensorType& want,
                 std::string_view why) {
  if (got != want)
    fail("{}: {} is {}, expected {} ({})", name(op), what, got.to_string(), want.to_string(), why);
}

int expect_axis(Op op, std::int64_t axis, const TensorType& t, std::string_view what = "axis") {
  int a = normalize_axis(axis, t.rank());
  if (a < 0)
    fail("{}: {} {} is out of range for {} (rank {})", name(op), what, axis, t.to_string(),
         t.rank());
  return a;
}

// Axes must be distinct and in range; returns them normalised and sorted.
std::vector<std::int64_t> expect_axes(Op op, const std::vector<std::int64_t>& axes,
                                      const TensorType& t, std::string_view what) {
  std::vector<std::int64_t> out;
  for (auto a : axes) {
    int n = normalize_axis(a, t.rank());
    if (n < 0)
      fail("{}: axis {} in {} {} is out of range for {} (rank {})", name(op), a, what, ints(axes),
           t.to_string(), t.rank());
    out.push_back(n);
  }
  std::sort(out.begin(), out.end());
  auto dup = std::adjacent_find(out.begin(), out.end());
  if (dup != out.end())
    fail("{}: {} {} name axis {} of {} twice", name(op), what, ints(axes), *dup, t.to_string());
  return out;
}

// Symbolic element count: static product and number of dynamic (batch) factors.
std::pair<std::int64_t, int> symbolic_numel(const Shape& s) {
  return {shape_numel(s), dynamic_count(s)};
}

Types infer_elementwise(Op op, const Types& in) {
  switch (op_kind(op)) {
    case OpKind::unary:
      expect_inputs(op, in, 1);
      if (op != Op::neg && op != Op::abs) expect_float(op, in[0], "the operand");
      if ((op == Op::neg || op == Op::abs) && in[0].dtype == DType::u8)
        fail("{}: u8 operands are unsigned; got {}", name(op), in[0].to_string());
      return {in[0]};
    case OpKind::binary:
    case OpKind::compare:
      expect_inputs(op, in, 2);
      expect_same_dtype(op, in[0], "lhs", in[1], "rhs");
      expect_same_shape(op, in[0], "lhs", in[1], "rhs");
      if (op == Op::pow) expect_float(op, in[0], "the base");
      if (op_kind(op) == OpKind::compare) return {{DType::u8, in[0].shape}};
      return {in[0]};
    default:
      break;
  }
  fail("internal error: {} is not elementwise", name(op));
}

Types infer_broadcast_in_dim(Op op, const Types& in, const Attributes& attrs) {
  expect_inputs(op, in, 1);
  const Shape& shape = attrs.get_ints("shape");
  const auto& dims = attrs.get_ints("dims");
  expect_valid_shape(op, shape, "target shape");
  if (static_cast<std::int64_t>(dims.size()) != in[0].rank())
    fail("{}: dims {} must name one output axis per input axis of {}", name(op), ints(dims),
         in[0].to_string());
  for (std::size_t i = 0; i < dims.size(); ++i) {
    if (dims[i] < 0 || dims[i] >= static_cast<std::int64_t>(shape.size()))
      fail("{}: dims[{}] = {} is out of range for target shape {}", name(op), i, dims[i],
           shape_to_string(shape));
    if (i > 0 && dims[i] <= dims[i - 1])
      fail("{}: dims {} must be strictly increasing", name(op), ints(dims));
    std::int64_t from = in[0].shape[i], to = shape[dims[i]];
    if (from != 1 && from != to)
      fail("{}: cannot broadcast {} to {}: input axis {} has extent {}, target axis {} has {}",
           name(op), in[0].to_string(), shape_to_string(shape), i, ext(from), dims[i], ext(to));
  }
  return {{in[0].dtype, shape}};
}

Types infer_reshape(Op op, const Types& in, const Attributes& attrs) {
  expect_inputs(op, in, 1);
  const Shape& shape = attrs.get_ints("shape");
  expect_valid_shape(op, shape, "target shape");
  if (symbolic_numel(shape) != symbolic_numel(in[0].shape))
    fail("{}: cannot reshape {} to {}: element counts differ", name(op), in[0].to_string(),
         shape_to_string(shape));
  return {{in[0].dtype, shape}};
}

Types infer_transpose(Op op, const Types& in, const Attributes& attrs) {
  expect_inputs(op, in, 1);
  const auto& perm = attrs.get_ints("perm");
  std::vector<std::int64_t> sorted = perm;
  std::sort(sorted.begin(), sorted.end());
  bool ok = static_cast<std::int64_t>(perm.size()) == in[0].rank();
  for (std::size_t i = 0; ok && i < sorted.size(); ++i) ok = sorted[i] == static_cast<int64_t>(i);
  if (!ok)
    fail("{}: perm {} is not a permutation of the {} axes of {}", name(op), ints(perm),
         in[0].rank(), in[0].to_string());
  Shape shape;
  for (auto p : perm) shape.push_back(in[0].shape[p]);
  return {{in[0].dtype, shape}};
}

Types infer_slice(Op op, const Types& in, const Attributes& attrs) {
  expect_inputs(op, in, 1);
  const SliceSpec spec = SliceSpec::from(attrs);
  const auto &start = spec.start, &limit = spec.limit, &stride = spec.stride;
  const auto rank = static_cast<std::size_t>(in[0].rank());
  if (start.size() != rank || limit.size() != rank || stride.size() != rank)
    fail("{}: start {}, limit {} and stride {} must each have {} entries for {}", name(op),
         ints(start), ints(limit), ints(stride), rank, in[0].to_string());
  Shape shape;
  for (std::size_t i = 0; i < rank; ++i) {
    std::int64_t n = in[0].shape[i];
    if (n == kDynamic) {
      if (start[i] != 0 || limit[i] != kDynamic || stride[i] != 1)
        fail("{}: axis {} of {} is dynamic and can only be kept whole (start 0, limit ?)", name(op),
             i, in[0].to_string());
      shape.push_back(kDynamic);
      continue;
    }
    if (stride[i] < 1) fail("{}: stride {} on axis {} must be >= 1", name(op), stride[i], i);
    if (start[i] < 0 || start[i] > limit[i] || limit[i] > n)
      fail("{}: range [{}, {}) on axis {} is invalid for {} (need 0 <= start <= limit <= {})",
           name(op), start[i], limit[i], i, in[0].to_string(), n);
    shape.push_back((limit[i] - start[i] + stride[i] - 1) / stride[i]);
  }
  return {{in[0].dtype, shape}};
}

Types infer_pad(Op op, const Types& in, const Attributes& attrs) {
  expect_inputs(op, in, 1);
  const auto& low = attrs.get_ints("low");
  const auto& high = attrs.get_ints("high");
  const auto& interior = attrs.get_ints("interior");
  const auto rank = static_cast<std::size_t>(in[0].rank());
  if (low.size() != rank || high.size() != rank || interior.size() != rank)
    fail("{}: low {}, high {} and interior {} must each have {} entries for {}", name(op),
         ints(low), ints(high), ints(interior), rank, in[0].to_string());
  Shape shape;
  for (std::size_t i = 0; i < rank; ++i) {
    if (low[i] < 0 || high[i] < 0 || interior[i] < 0)
      fail("{}: padding on axis {} must be >= 0, got low {}, high {}, interior {}", name(op), i,
           low[i], high[i], interior[i]);
    std::int64_t n = in[0].shape[i];
    if (n == kDynamic) {
      if (low[i] || high[i] || interior[i])
        fail("{}: axis {} of {} is dynamic and cannot be padded", name(op), i, in[0].to_string());
      shape.push_back(kDynamic);
      continue;
    }
    shape.push_back(low[i] + high[i] + n + std::max<std::int64_t>(n - 1, 0) * interior[i]);
  }
  return {{in[0].dtype, shape}};
}

Types infer_concat(Op op, const Types& in, const Attributes& attrs) {
  if (in.empty()) fail("{}: needs at least one input", name(op));
  int axis = expect_axis(op, attrs.get_int("axis"), in[0]);
  Shape shape = in[0].shape;
  if (shape[axis] == kDynamic)
    fail("{}: cannot concatenate along the dynamic axis {} of {}", name(op), axis,
         in[0].to_string());
  for (std::size_t k = 1; k < in.size(); ++k) {
    expect_same_dtype(op, in[0], "input 0", in[k], fmt::format("input {}", k));
    if (in[k].rank() != in[0].rank())
      fail("{}: input 0 {} and input {} {} differ in rank", name(op), in[0].to_string(), k,
           in[k].to_string());
    for (std::int64_t i = 0; i < in[0].rank(); ++i)
      if (i != axis && in[k].shape[i] != in[0].shape[i])
        fail("{}: input 0 {} and input {} {} differ at axis {} ({} vs {}); only axis {} may differ",
             name(op), in[0].to_string(), k, in[k].to_string(), i, ext(in[0].shape[i]),
             ext(in[k].shape[i]), axis);
    if (in[k].shape[axis] == kDynamic)
      fail("{}: cannot concatenate along the dynamic axis {} of {}", name(op), axis,
           in[k].to_string());
    shape[axis] += in[k].shape[axis];
  }
  return {{in[0].dtype, shape}};
}

Types infer_reduce(Op op, const Types& in, const Attributes& attrs) {
  expect_inputs(op, in, 1);
  auto axes = expect_axes(op, attrs.get_ints("axes"), in[0], "axes");
  if (op == Op::reduce_mean) expect_float(op, in[0], "the operand");
  if (op == Op::reduce_max)
    for (auto a : axes)
      if (in[0].shape[a] == 0)
        fail("{}: cannot take the maximum over the empty axis {} of {}", name(op), a,
             in[0].to_string());
  Shape shape;
  for (std::int64_t i = 0; i < in[0].rank(); ++i)
    if (!std::binary_search(axes.begin(), axes.end(), i)) shape.push_back(in[0].shape[i]);
  return {{in[0].dtype, shape}};
}

Types infer_dot_general(Op op, const Types& in, const Attributes& attrs) {
  expect_inputs(op, in, 2);
  const TensorType& l = in[0];
  const TensorType& r = in[1];
  expect_same_dtype(op, l, "lhs", r, "rhs");
  const DotDims dims = DotDims::from(attrs);
  const auto &lc = dims.lhs_contract, &rc = dims.rhs_contract;
  const auto &lb = dims.lhs_batch, &rb = dims.rhs_batch;
  if (lc.size() != rc.size())
    fail("{}: lhs_contract {} and rhs_contract {} must pair up axes (same length)", name(op),
         ints(lc), ints(rc));
  if (lb.size() != rb.size())
    fail("{}: lhs_batch {} and rhs_batch {} must pair up axes (same length)", name(op), ints(lb),
         ints(rb));
  auto check_side = [&](const TensorType& t, const std::vector<std::int64_t>& c,
                        const std::vector<std::int64_t>& b, std::string_view side) {
    std::set<std::int64_t> seen;
    for (auto a : c) {
      if (a < 0 || a >= t.rank())
        fail("{}: {} contracting axis {} is out of range for {}", name(op), side, a, t.to_string());
      if (!seen.insert(a).second) fail("{}: {} axis {} is used twice", name(op), side, a);
    }
    for (auto a : b) {
      if (a < 0 || a >= t.rank())
        fail("{}: {} batch axis {} is out of range for {}", name(op), side, a, t.to_string());
      if (!seen.insert(a).second) fail("{}: {} axis {} is used twice", name(op), side, a);
    }
  };
  check_side(l, lc, lb, "lhs");
  check_side(r, rc, rb, "rhs");
  for (std::size_t i = 0; i < lc.size(); ++i)
    if (l.shape[lc[i]] != r.shape[rc[i]])
      fail("{}: contracting extents differ: lhs {} axis {} has {}, rhs {} axis {} has {}", name(op),
           l.to_string(), lc[i], ext(l.shape[lc[i]]), r.to_string(), rc[i], ext(r.shape[rc[i]]));
  for (std::size_t i = 0; i < lb.size(); ++i)
    if (l.shape[lb[i]] != r.shape[rb[i]])
      fail("{}: batch extents differ: lhs {} axis {} has {}, rhs {} axis {} has {}", name(op),
           l.to_string(), lb[i], ext(l.shape[lb[i]]), r.to_string(), rb[i], ext(r.shape[rb[i]]));
  Shape shape;
  for (auto a : lb) shape.push_back(l.shape[a]);
  auto free_axes = [&](const TensorType& t, const std::vector<std::int64_t>& c,
                       const std::vector<std::int64_t>& b) {
    for (std::int64_t i = 0; i < t.rank(); ++i)
      if (std::find(c.begin(), c.end(), i) == c.end() &&
          std::find(b.begin(), b.end(), i) == b.end())
        shape.push_back(t.shape[i]);
  };
  free_axes(l, lc, lb);
  free_axes(r, rc, rb);
  return {{l.dtype, shape}};
}

void expect_index_dtype(Op op, const TensorType& t) {
  if (t.dtype != DType::i32 && t.dtype != DType::i64)
    fail("{}: indices must be i32 or i64, got {}", name(op), t.to_string());
}

Types infer_take(Op op, const Types& in, const Attributes& attrs) {
  expect_inputs(op, in, 2);
  expect_index_dtype(op, in[1]);
  int axis = expect_axis(op, attrs.get_int("axis"), in[0]);
  Shape shape(in[0].shape.begin(), in[0].shape.begin() + axis);
  shape.insert(shape.end(), in[1].shape.begin(), in[1].shape.end());
  shape.insert(shape.end(), in[0].shape.begin() + axis + 1, in[0].shape.end());
  return {{in[0].dtype, shape}};
}

Types infer_scatter_add(Op op, const Types& in, const Attributes& attrs) {
  expect_inputs(op, in, 2);
  const TensorType& idx = in[0];
  const TensorType& upd = in[1];
  expect_index_dtype(op, idx);
  std::int64_t axis = attrs.get_int("axis");
  std::int64_t dim_size = attrs.get_int("dim_size");
  if (dim_size < 0 && dim_size != kDynamic)
    fail("{}: dim_size {} must be >= 0", name(op), dim_size);
  if (axis < 0 || axis + idx.rank() > upd.rank())
    fail("{}: axis {} with indices {} does not fit updates {}", name(op), axis, idx.to_string(),
         upd.to_string());
  for (std::int64_t i = 0; i < idx.rank(); ++i)
    if (upd.shape[axis + i] != idx.shape[i])
      fail("{}: updates {} axis {} has extent {} but indices {} axis {} has {}", name(op),
           upd.to_string(), axis + i, ext(upd.shape[axis + i]), idx.to_string(), i,
           ext(idx.shape[i]));
  Shape shape(upd.shape.begin(), upd.shape.begin() + axis);
  shape.push_back(dim_size);
  shape.insert(shape.end(), upd.shape.begin() + axis + idx.rank(), upd.shape.end());
  return {{upd.dtype, shape}};
}

Types infer_layer_norm(Op op, const Types& in, const Attributes& attrs) {
  if (in.size() != 1 && in.size() != 3)
    fail("{}: expects x or x, gamma, beta (1 or 3 inputs), got {}", name(op), in.size());
  const TensorType& x = in[0];
  expect_float(op, x, "x");
  if (x.rank() < 1) fail("{}: x must have rank >= 1, got {}", name(op), x.to_string());
  double eps = attrs.get_float("eps");
  if (!(eps > 0)) fail("{}: eps must be > 0, got {}", name(op), eps);
  std::int64_t c = x.shape.back();
  for (std::size_t i = 1; i < in.size(); ++i) {
    std::string_view which = i == 1 ? "gamma" : "beta";
    expect_same_dtype(op, x, "x", in[i], which);
    if (in[i].shape != Shape{c})
      fail("{}: {} has shape {}; expected [{}] to match the last axis of x {}", name(op), which,
           shape_to_string(in[i].shape), ext(c), x.to_string());
  }
  Shape stats(x.shape.begin(), x.shape.end() - 1);
  return {x, {x.dtype, stats}, {x.dtype, stats}};
}

Types infer_layer_norm_backward(Op op, const Types& in, const Attributes& attrs) {
  if (in.size() != 4 && in.size() != 5)
    fail("{}: expects x, mean, rstd, dy [, gamma] (4 or 5 inputs), got {}", name(op), in.size());
  Types fwd_in = {in[0]};
  if (in.size() == 5) fwd_in = {in[0], in[4], in[4]};
  Types fwd = infer_layer_norm(op, fwd_in, attrs);
  expect_type(op, in[1], "mean", fwd[1], "x without its last axis");
  expect_type(op, in[2], "rstd", fwd[2], "x without its last axis");
  expect_same_shape(op, in[3], "dy", in[0], "x");
  expect_same_dtype(op, in[3], "dy", in[0], "x");
  if (in.size() == 5) return {in[0], in[4], in[4]};
  return {in[0]};
}

struct AttentionShapes {
  TensorType out, lse;
};

AttentionShapes check_attention(Op op, const TensorType& q, const TensorType& k,
                                const TensorType& v, const TensorType* mask,
                                const Attributes& attrs) {
  expect_float(op, q, "q");
  expect_same_dtype(op, q, "q", k, "k");
  expect_same_dtype(op, q, "q", v, "v");
  if (q.rank() < 2 || k.rank() != q.rank() || v.rank() != q.rank())
    fail("{}: q {}, k {} and v {} must have the same rank >= 2", name(op), q.to_string(),
         k.to_string(), v.to_string());
  std::int64_t r = q.rank();
  for (std::int64_t i = 0; i < r - 2; ++i)
    if (k.shape[i] != q.shape[i] || v.shape[i] != q.shape[i])
      fail("{}: batch axis {} differs: q {}, k {}, v {}", name(op), i, q.to_string(), k.to_string(),
           v.to_string());
  if (k.shape[r - 1] != q.shape[r - 1])
    fail("{}: q {} and k {} must have the same feature extent (last axis: {} vs {})", name(op),
         q.to_string(), k.to_string(), ext(q.shape[r - 1]), ext(k.shape[r - 1]));
  if (v.shape[r - 2] != k.shape[r - 2])
    fail("{}: k {} and v {} must have the same sequence extent (axis {}: {} vs {})", name(op),
         k.to_string(), v.to_string(), r - 2, ext(k.shape[r - 2]), ext(v.shape[r - 2]));
  const std::string& kind = attrs.get_string("mask");
  if (kind != "none" && kind != "causal" && kind != "window" && kind != "tensor")
    fail("{}: unknown mask kind \"{}\" (expected none, causal, window or tensor)", name(op), kind);
  const AttentionAttrs at = AttentionAttrs::from(attrs);
  if (at.mask == MaskKind::window && at.window < 1)
    fail("{}: window must be >= 1, got {}", name(op), at.window);
  if (at.query_offset < 0) fail("{}: query_offset must be >= 0, got {}", name(op), at.query_offset);
  if ((at.mask == MaskKind::tensor) != (mask != nullptr))
    fail("{}: mask kind \"{}\" {} a mask tensor input", name(op), kind,
         mask ? "does not take" : "requires");
  if (mask) {
    if (mask->dtype != DType::u8)
      fail("{}: the mask must be u8 (nonzero = attend), got {}", name(op), mask->to_string());
    std::int64_t sq = q.shape[r - 2], sk = k.shape[r - 2];
    bool ok = mask->rank() == 2 || mask->rank() == r;
    if (ok) {
      std::int64_t mr = mask->rank();
      ok = mask->shape[mr - 2] == sq && mask->shape[mr - 1] == sk;
      for (std::int64_t i = 0; ok && i < mr - 2; ++i)
        ok = mask->shape[i] == 1 || mask->shape[i] == q.shape[i];
    }
    if (!ok)
      fail(
          "{}: mask {} does not fit scores of shape {}: expected [{},{}] or rank {} with leading "
          "extents equal to q's or 1",
          name(op), mask->to_string(), shape_to_string([&] {
            Shape s(q.shape.begin(), q.shape.end() - 1);
            s.push_back(sk);
            return s;
          }()),
          ext(sq), ext(sk), r);
  }
  double scale = attrs.get_float("scale");
  if (!std::isfinite(scale) || scale == 0)
    fail("{}: scale must be finite and nonzero, got {}", name(op), scale);
  Shape out = q.shape;
  out.back() = v.shape.back();
  Shape lse(q.shape.begin(), q.shape.end() - 1);
  return {{q.dtype, out}, {q.dtype, lse}};
}

Types infer_attention(Op op, const Types& in, const Attributes& attrs) {
  if (in.size() != 3 && in.size() != 4)
    fail("{}: expects q, k, v [, mask] (3 or 4 inputs), got {}", name(op), in.size());
  auto s = check_attention(op, in[0], in[1], in[2], in.size() == 4 ? &in[3] : nullptr, attrs);
  return {s.out, s.lse};
}

Types infer_attention_backward(Op op, const Types& in, const Attributes& attrs) {
  if (in.size() != 6 && in.size() != 7)
    fail("{}: expects q, k, v [, mask], out, lse, dout (6 or 7 inputs), got {}", name(op),
         in.size());
  std::size_t o = in.size() == 7 ? 4 : 3;
  auto s = check_attention(op, in[0], in[1], in[2], in.size() == 7 ? &in[3] : nullptr, attrs);
  expect_type(op, in[o], "out", s.out, "the attention output for these q, k, v");
  expect_type(op, in[o + 1], "lse", s.lse, "q without its last axis");
  expect_type(op, in[o + 2], "dout", s.out, "the attention output for these q, k, v");
  return {in[0], in[1], in[2]};
}

// lstm_scan's operands zx [B, S, 4U], w_hh [U, 4U], h0, c0 [B, U]; returns the type of h_seq
// and c_seq [B, S, U].
TensorType infer_lstm_scan_core(Op op, const Types& in) {
  const TensorType &zx = in[0], &w_hh = in[1], &h0 = in[2], &c0 = in[3];
  expect_float(op, zx, "zx");
  for (std::size_t i = 1; i < 4; ++i)
    expect_same_dtype(op, zx, "zx", in[i], std::array{"", "w_hh", "h0", "c0"}[i]);
  if (zx.rank() != 3)
    fail("{}: zx must be [batch, seq, 4 x hidden], got {}", name(op), zx.to_string());
  if (w_hh.rank() != 2 || w_hh.shape[1] != 4 * w_hh.shape[0])
    fail("{}: w_hh has shape {}; expected [U, 4U]", name(op), shape_to_string(w_hh.shape));
  const std::int64_t u = w_hh.shape[0], batch = zx.shape[0], steps = zx.shape[1];
  if (zx.shape[2] != 4 * u)
    fail("{}: zx has shape {}; expected [{},{},{}] (batch, seq, 4 x hidden {})", name(op),
         shape_to_string(zx.shape), ext(batch), ext(steps), 4 * u, u);
  for (const auto* s : {&h0, &c0})
    if (s->shape != Shape{batch, u})
      fail("{}: {} has shape {}; expected [{},{}] (batch, hidden)", name(op),
           s == &h0 ? "h0" : "c0", shape_to_string(s->shape), ext(batch), u);
  return {zx.dtype, {batch, steps, u}};
}

Types infer_lstm_scan(Op op, const Types& in) {
  expect_inputs(op, in, 4);
  TensorType seq = infer_lstm_scan_core(op, in);
  return {seq, seq};
}

Types infer_lstm_scan_backward(Op op, const Types& in) {
  expect_inputs(op, in, 8);
  TensorType seq = infer_lstm_scan_core(op, in);
  const char* names[] = {"h_seq", "c_seq", "dh_seq", "dc_seq"};
  for (int i = 0; i < 4; ++i) expect_type(op, in[4 + i], names[i], seq, "[batch, seq, hidden]");
  return {in[0], in[2], in[3]};
}

}  // namespace

std::vector<TensorType> infer_types(Op op, const std::vector<TensorType>& in,
                                    const Attributes& attrs) {
  switch (op) {
    case Op::parameter:
      fail("{}: parameter types are given, not inferred", name(op));
    case Op::constant: {
      expect_inputs(op, in, 0);
      const Tensor& t = attrs.get_tensor("value");
      return {{t.dtype(), t.shape()}};
    }
    case Op::iota: {
      expect_inputs(op, in, 0);
      const Shape& shape = attrs.get_ints("shape");
      expect_valid_shape(op, shape, "shape");
      TensorType t{attrs.get_dtype("dtype"), shape};
      std::int64_t axis = attrs.get_int("axis");
      if (axis < 0 || axis >= t.rank())
        fail("{}: axis {} is out of range for shape {}", name(op), axis, shape_to_string(shape));
      return {t};
    }
    case Op::random_uniform: {
      expect_inputs(op, in, 1);
      if (in[0].dtype != DType::i64 || in[0].rank() != 0)
        fail("{}: the seed must be an i64 scalar, got {}", name(op), in[0].to_string());
      const Shape& shape = attrs.get_ints("shape");
      expect_valid_shape(op, shape, "shape");
      TensorType t{attrs.get_dtype("dtype"), shape};
      expect_float(op, t, "the result dtype");
      return {t};
    }
    case Op::select: {
      expect_inputs(op, in, 3);
      if (in[0].dtype != DType::u8)
        fail("{}: the predicate must be u8, got {}", name(op), in[0].to_string());
      expect_same_dtype(op, in[1], "on_true", in[2], "on_false");
      expect_same_shape(op, in[0], "pred", in[1], "on_true");
      expect_same_shape(op, in[1], "on_true", in[2], "on_false");
      return {in[1]};
    }
    case Op::cast:
      expect_inputs(op, in, 1);
      return {{attrs.get_dtype("dtype"), in[0].shape}};
    case Op::broadcast_in_dim:
      return infer_broadcast_in_dim(op, in, attrs);
    case Op::reshape:
      return infer_reshape(op, in, attrs);
    case Op::transpose:
      return infer_transpose(op, in, attrs);
    case Op::slice:
      return infer_slice(op, in, attrs);
    case Op::pad:
      return infer_pad(op, in, attrs);
    case Op::concat:
      return infer_concat(op, in, attrs);
    case Op::reduce_sum:
    case Op::reduce_max:
    case Op::reduce_mean:
      return infer_reduce(op, in, attrs);
    case Op::dot_general:
      return infer_dot_general(op, in, attrs);
    case Op::take:
      return infer_take(op, in, attrs);
    case Op::scatter_add:
      return infer_scatter_add(op, in, attrs);
    case Op::softmax: {
      expect_inputs(op, in, 1);
      expect_float(op, in[0], "the operand");
      expect_axis(op, attrs.get_int("axis"), in[0]);
      return {in[0]};
    }
    case Op::layer_norm:
      return infer_layer_norm(op, in, attrs);
    case Op::layer_norm_backward:
      return infer_layer_norm_backward(op, in, attrs);
    case Op::attention:
      return infer_attention(op, in, attrs);
    case Op::attention_backward:
      return infer_attention_backward(op, in, attrs);
    case Op::lstm_scan:
      return infer_lstm_scan(op, in);
    case Op::lstm_scan_backward:
      return infer_lstm_scan_backward(op, in);
    default:
      return infer_elementwise(op, in);
  }
}

}  // namespace edifice
