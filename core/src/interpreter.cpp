// The reference interpreter: every op of the IR as plain loops over row-major multi-indices.
// It is the oracle the JIT is tested against, so each op is written to be checked by reading,
// not to be fast.
//
// Numeric policy:
// - Elementwise ops compute in the element type T (float math in float for f32).
// - Sums and dot products (reduce_sum/mean, dot_general, scatter_add, softmax, layer_norm,
//   attention, lstm_scan and the backward ops) accumulate in double for both float dtypes: for f64
//   that is T itself, for f32 it keeps the oracle's own rounding far below the tolerances the
//   JIT is compared with. Results are rounded to T once, when stored. The recurrent and
//   normalisation ops store their states (h, c, mean, rstd) in T, and their backward ops read
//   those stored values, exactly as a compiled graph would.
// - Integer arithmetic wraps (two's complement, computed in the unsigned type), so overflow is
//   never undefined behaviour; integer division truncates toward zero, x / 0 is an error and
//   MIN / -1 wraps to MIN.
// - Float max/min and reduce_max propagate NaN.

#include <edifice/core/interpreter.hpp>

#include <edifice/core/error.hpp>
#include <edifice/core/op.hpp>
#include <edifice/core/op_attrs.hpp>

#include <edifice/core/philox.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

namespace edifice {
namespace {

using Index = std::vector<std::int64_t>;
using Strides = std::vector<std::int64_t>;

template <class T>
using Acc = std::conditional_t<std::is_floating_point_v<T>, double, std::uint64_t>;

// ---------------------------------------------------------------------------------------------
// Multi-index helpers

// Calls f(index) for every multi-index of `shape` in row-major order: once for rank 0, never
// when an extent is 0.
template <class F>
void for_each_index(const Shape& shape, F&& f) {
  for (std::int64_t e : shape)
    if (e <= 0) return;
  Index idx(shape.size(), 0);
  for (;;) {
    f(std::as_const(idx));
    int a = static_cast<int>(shape.size()) - 1;
    while (a >= 0 && ++idx[a] == shape[a]) idx[a--] = 0;
    if (a < 0) return;
  }
}

std::int64_t offset_of(const Index& idx, const Strides& strides) {
  std::int64_t off = 0;
  for (std::size_t a = 0; a < idx.size(); ++a) off += idx[a] * strides[a];
  return off;
}

std::int64_t extent_product(const Shape& shape, std::size_t begin, std::size_t end) {
  std::int64_t n = 1;
  for (std::size_t a = begin; a < end; ++a) n *= shape[a];
  return n;
}

std::string format_index(const Index& idx) {
  std::string s = "[";
  for (std::size_t a = 0; a < idx.size(); ++a) s += (a ? "," : "") + std::to_string(idx[a]);
  return s + "]";
}

Index unravel(std::int64_t flat, const Shape& shape) {
  Index idx(shape.size(), 0);
  for (std::size_t a = shape.size(); a-- > 0;) {
    idx[a] = flat % shape[a];
    flat /= shape[a];
  }
  return idx;
}

int axis_index(std::int64_t axis, std::int64_t rank) {
  const int a = normalize_axis(axis, rank);
  if (a < 0) fail("axis {} is out of range for rank {}", axis, rank);
  return a;
}

std::vector<int> axis_list(const std::vector<std::int64_t>& axes, std::int64_t rank) {
  std::vector<int> out;
  for (std::int64_t a : axes) out.push_back(axis_index(a, rank));
  return out;
}

// `key` when present and non-empty, else `rank` copies of `fallback` (optional stride/interior).
std::vector<std::int64_t> ints_or(const Attributes& attrs, const char* key, std::int64_t rank,
                                  std::int64_t fallback) {
  if (attrs.has(key) && !attrs.get_ints(key).empty()) return attrs.get_ints(key);
  return std::vector<std::int64_t>(static_cast<std::size_t>(rank), fallback);
}

// out[i] = x[base + sum_a i[a] * src_strides[a]] for every multi-index i of out_shape. Stride 0
// broadcasts, permuted strides transpose, scaled strides plus a base slice.
Tensor gather(const Tensor& x, const Shape& out_shape, const Strides& src_strides,
              std::int64_t base) {
  Tensor out(x.dtype(), out_shape);
  visit_dtype(x.dtype(), [&]<class T>() {
    const T* src = x.data<T>();
    T* dst = out.data<T>();
    std::int64_t n = 0;
    for_each_index(out_shape,
                   [&](const Index& i) { dst[n++] = src[base + offset_of(i, src_strides)]; });
  });
  return out;
}

// out[base + sum_a i[a] * dst_strides[a]] = x[i] for every multi-index i of x (pad, concat).
void scatter_into(Tensor& out, const Tensor& x, const Strides& dst_strides, std::int64_t base) {
  visit_dtype(x.dtype(), [&]<class T>() {
    const T* src = x.data<T>();
    T* dst = out.data<T>();
    std::int64_t n = 0;
    for_each_index(x.shape(),
                   [&](const Index& i) { dst[base + offset_of(i, dst_strides)] = src[n++]; });
  });
}

// Calls f.template operator()<T>() for f32/f64, fails for integer dtypes.
template <class F>
decltype(auto) visit_float(DType d, F&& f) {
  if (d == DType::f32) return f.template operator()<float>();
  if (d == DType::f64) return f.template operator()<double>();
  fail("only defined for f32 and f64, not {}", dtype_name(d));
}

// Index tensors (take, scatter_add) are i32 or i64; read them as i64.
std::vector<std::int64_t> read_indices(const Tensor& t) {
  std::vector<std::int64_t> v(static_cast<std::size_t>(t.numel()));
  if (t.dtype() == DType::i32)
    std::copy_n(t.data<std::int32_t>(), v.size(), v.begin());
  else if (t.dtype() == DType::i64)
    std::copy_n(t.data<std::int64_t>(), v.size(), v.begin());
  else
    fail("indices must be i32 or i64, not {}", dtype_name(t.dtype()));
  return v;
}

void check_indices(const std::vector<std::int64_t>& indices, const Shape& indices_shape,
                   std::int64_t extent) {
  for (std::size_t n = 0; n < indices.size(); ++n)
    if (indices[n] < 0 || indices[n] >= extent)
      fail("index {} at position {} of the indices is out of range [0, {})", indices[n],
           format_index(unravel(static_cast<std::int64_t>(n), indices_shape)), extent);
}

double sigmoid_d(double z) {
  return 1.0 / (1.0 + std::exp(-z));
}

// ---------------------------------------------------------------------------------------------
// Elementwise

template <class T>
T wrap_neg(T x) {
  using U = std::make_unsigned_t<T>;
  return static_cast<T>(U{0} - static_cast<U>(x));
}

template <class T>
T unary_value(Op op, T x) {
  if constexpr (std::is_floating_point_v<T>) {
    switch (op) {
      case Op::neg:
        return -x;
      case Op::abs:
        return std::abs(x);
      case Op::exp:
        return std::exp(x);
      case Op::log:
        return std::log(x);
      case Op::sqrt:
        return std::sqrt(x);
      case Op::rsqrt:
        return T(1) / std::sqrt(x);
      case Op::tanh:
        return std::tanh(x);
      case Op::sigmoid:
        return T(1) / (T(1) + std::exp(-x));
      case Op::erf:
        return std::erf(x);
      case Op::sin:
        return std::sin(x);
      case Op::cos:
        return std::cos(x);
      case Op::relu:
        return x < T(0) ? T(0) : x;  // NaN passes through
      case Op::gelu:
        return x * (T(1) + std::erf(x / std::sqrt(T(2)))) / T(2);
      default:
        break;
    }
  } else {
    if (op == Op::neg) return wrap_neg(x);
    if (op == Op::abs) {
      if constexpr (std::is_signed_v<T>) return x < 0 ? wrap_neg(x) : x;
      return x;
    }
  }
  fail("only defined for f32 and f64, not {}", dtype_name(dtype_of<T>()));
}

template <class T>
T binary_value(Op op, T a, T b) {
  if constexpr (std::is_floating_point_v<T>) {
    switch (op) {
      case Op::add:
        return a + b;
      case Op::sub:
        return a - b;
      case Op::mul:
        return a * b;
      case Op::div:
        return a / b;
      case Op::max:
        return std::isnan(a) || std::isnan(b) ? a + b : std::max(a, b);
      case Op::min:
        return std::isnan(a) || std::isnan(b) ? a + b : std::min(a, b);
      case Op::pow:
        return std::pow(a, b);
      default:
        break;
    }
  } else {
    using U = std::make_unsigned_t<T>;
    switch (op) {
      case Op::add:
        return static_cast<T>(static_cast<U>(a) + static_cast<U>(b));
      case Op::sub:
        return static_cast<T>(static_cast<U>(a) - static_cast<U>(b));
      case Op::mul:
        return static_cast<T>(static_cast<U>(a) * static_cast<U>(b));
      case Op::div:
        if constexpr (std::is_signed_v<T>)
          if (a == std::numeric_limits<T>::min() && b == T(-1)) return a;
        return static_cast<T>(a / b);  // b != 0 was checked by the caller
      case Op::max:
        return std::max(a, b);
      case Op::min:
        return std::min(a, b);
      default:
        break;
    }
  }
  fail("only defined for f32 and f64, not {}", dtype_name(dtype_of<T>()));
}

template <class T>
bool compare_value(Op op, T a, T b) {
  switch (op) {
    case Op::eq:
      return a == b;
    case Op::ne:
      return a != b;
    case Op::lt:
      return a < b;
    case Op::le:
      return a <= b;
    case Op::gt:
      return a > b;
    case Op::ge:
      return a >= b;
    default:
      break;
  }
  fail("{} is not a comparison", op_name(op));
}

Tensor eval_unary(Op op, const Tensor& x) {
  Tensor out(x.dtype(), x.shape());
  visit_dtype(x.dtype(), [&]<class T>() {
    const T* a = x.data<T>();
    T* o = out.data<T>();
    for (std::int64_t n = 0; n < x.numel(); ++n) o[n] = unary_value(op, a[n]);
  });
  return out;
}

Tensor eval_binary(Op op, const Tensor& x, const Tensor& y) {
  Tensor out(x.dtype(), x.shape());
  visit_dtype(x.dtype(), [&]<class T>() {
    const T* a = x.data<T>();
    const T* b = y.data<T>();
    T* o = out.data<T>();
    if constexpr (std::is_integral_v<T>)
      if (op == Op::div)
        for (std::int64_t n = 0; n < y.numel(); ++n)
          if (b[n] == T(0))
            fail("integer division by zero at element {} of the divisor",
                 format_index(unravel(n, y.shape())));
    for (std::int64_t n = 0; n < x.numel(); ++n) o[n] = binary_value(op, a[n], b[n]);
  });
  return out;
}

Tensor eval_compare(Op op, const Tensor& x, const Tensor& y) {
  Tensor out(DType::u8, x.shape());
  std::uint8_t* o = out.data<std::uint8_t>();
  visit_dtype(x.dtype(), [&]<class T>() {
    const T* a = x.data<T>();
    const T* b = y.data<T>();
    for (std::int64_t n = 0; n < x.numel(); ++n) o[n] = compare_value(op, a[n], b[n]) ? 1 : 0;
  });
  return out;
}

Tensor eval_select(const Tensor& pred, const Tensor& on_true, const Tensor& on_false) {
  Tensor out(on_true.dtype(), on_true.shape());
  const std::uint8_t* p = pred.data<std::uint8_t>();
  visit_dtype(on_true.dtype(), [&]<class T>() {
    const T* t = on_true.data<T>();
    const T* f = on_false.data<T>();
    T* o = out.data<T>();
    for (std::int64_t n = 0; n < out.numel(); ++n) o[n] = p[n] != 0 ? t[n] : f[n];
  });
  return out;
}

// ---------------------------------------------------------------------------------------------
// Sources

Tensor eval_iota(const Node& node) {
  const Shape& shape = node.outputs()[0].shape;
  const int axis =
      axis_index(node.attrs().get_int("axis"), static_cast<std::int64_t>(shape.size()));
  Tensor out(node.attrs().get_dtype("dtype"), shape);
  visit_dtype(out.dtype(), [&]<class T>() {
    T* o = out.data<T>();
    std::int64_t n = 0;
    for_each_index(shape, [&](const Index& i) { o[n++] = static_cast<T>(i[axis]); });
  });
  return out;
}

Tensor eval_random_uniform(const Node& node, const Tensor& seed) {
  if (seed.numel() != 1) fail("the seed must be a scalar");
  const auto seed_bits = static_cast<std::uint64_t>(seed.cast(DType::i64).data<std::int64_t>()[0]);
  const auto stream = static_cast<std::uint64_t>(node.attrs().get_int("stream"));
  return detail::random_uniform_tensor(node.attrs().get_dtype("dtype"), node.outputs()[0].shape,
                                       seed_bits, stream);
}

// ---------------------------------------------------------------------------------------------
// Layout

Tensor eval_broadcast_in_dim(const Node& node, const Tensor& x) {
  const Shape& out_shape = node.outputs()[0].shape;
  const std::vector<std::int64_t>& dims = node.attrs().get_ints("dims");
  const Strides xs = row_major_strides(x.shape());
  Strides src(out_shape.size(), 0);  // axes x lacks, and x's extent-1 axes, repeat
  for (std::size_t i = 0; i < dims.size(); ++i)
    if (x.shape()[i] != 1) src[static_cast<std::size_t>(dims[i])] = xs[i];
  return gather(x, out_shape, src, 0);
}

Tensor eval_transpose(const Node& node, const Tensor& x) {
  const std::vector<int> perm = axis_list(node.attrs().get_ints("perm"), x.rank());
  const Strides xs = row_major_strides(x.shape());
  Shape out_shape;
  Strides src;
  for (int p : perm) {
    out_shape.push_back(x.shape()[p]);
    src.push_back(xs[p]);
  }
  return gather(x, out_shape, src, 0);
}

Tensor eval_slice(const Node& node, const Tensor& x) {
  const SliceSpec spec = SliceSpec::from(node.attrs());
  const auto &start = spec.start, &stride = spec.stride;
  const Strides xs = row_major_strides(x.shape());
  Strides src(xs.size());
  std::int64_t base = 0;
  for (std::size_t a = 0; a < xs.size(); ++a) {
    base += start[a] * xs[a];
    src[a] = stride[a] * xs[a];
  }
  // out extent a = ceil((limit - start) / stride), as inferred.
  return gather(x, node.outputs()[0].shape, src, base);
}

Tensor eval_pad(const Node& node, const Tensor& x) {
  const Shape& out_shape = node.outputs()[0].shape;
  const auto& low = node.attrs().get_ints("low");
  const auto interior = ints_or(node.attrs(), "interior", x.rank(), 0);
  Tensor out = Tensor::full(x.dtype(), out_shape, node.attrs().get_float("value"));
  const Strides os = row_major_strides(out_shape);
  Strides dst(os.size());
  std::int64_t base = 0;
  for (std::size_t a = 0; a < os.size(); ++a) {
    base += low[a] * os[a];
    dst[a] = (interior[a] + 1) * os[a];  // element i lands at low + i * (interior + 1)
  }
  scatter_into(out, x, dst, base);
  return out;
}

Tensor eval_concat(const Node& node, const std::vector<Tensor>& xs) {
  const Shape& out_shape = node.outputs()[0].shape;
  const int axis =
      axis_index(node.attrs().get_int("axis"), static_cast<std::int64_t>(out_shape.size()));
  Tensor out(node.outputs()[0].dtype, out_shape);
  const Strides os = row_major_strides(out_shape);
  std::int64_t start = 0;
  for (const Tensor& x : xs) {
    scatter_into(out, x, os, start * os[axis]);
    start += x.shape()[axis];
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Reductions and contractions

Tensor eval_reduce(const Node& node, const Tensor& x) {
  const Op op = node.op();
  const Shape& out_shape = node.outputs()[0].shape;
  std::vector<bool> reduced(x.shape().size(), false);
  for (int a : axis_list(node.attrs().get_ints("axes"), x.rank())) reduced[a] = true;
  // Each input element goes to the output offset of its index with the reduced axes dropped.
  const Strides os = row_major_strides(out_shape);
  Strides to_out(x.shape().size(), 0);
  std::int64_t count = 1;
  for (std::size_t a = 0, k = 0; a < reduced.size(); ++a) {
    if (reduced[a])
      count *= x.shape()[a];
    else
      to_out[a] = os.at(k++);
  }
  Tensor out(x.dtype(), out_shape);
  visit_dtype(x.dtype(), [&]<class T>() {
    const T* src = x.data<T>();
    T* dst = out.data<T>();
    const auto m = static_cast<std::size_t>(out.numel());
    std::int64_t n = 0;
    if (op == Op::reduce_max) {
      T lowest = std::numeric_limits<T>::lowest();
      if constexpr (std::is_floating_point_v<T>) lowest = -std::numeric_limits<T>::infinity();
      std::vector<T> best(m, lowest);
      for_each_index(x.shape(), [&](const Index& i) {
        T& b = best[static_cast<std::size_t>(offset_of(i, to_out))];
        const T v = src[n++];
        bool replace = v > b;
        if constexpr (std::is_floating_point_v<T>) replace = replace || std::isnan(v);
        if (replace) b = v;
      });
      std::copy(best.begin(), best.end(), dst);
      return;
    }
    std::vector<Acc<T>> sum(m, Acc<T>(0));
    for_each_index(x.shape(), [&](const Index& i) {
      sum[static_cast<std::size_t>(offset_of(i, to_out))] += static_cast<Acc<T>>(src[n++]);
    });
    for (std::size_t o = 0; o < m; ++o) {
      if (op == Op::reduce_sum) {
        dst[o] = static_cast<T>(sum[o]);
      } else if constexpr (std::is_floating_point_v<T>) {
        dst[o] = static_cast<T>(sum[o] / static_cast<double>(count));
      } else {
        if (count == 0) fail("mean of zero integer elements");
        dst[o] = static_cast<T>(static_cast<std::int64_t>(sum[o]) / count);  // truncates
      }
    }
  });
  return out;
}

Tensor eval_dot_general(const Node& node, const Tensor& lhs, const Tensor& rhs) {
  const DotDims dims = DotDims::from(node.attrs());
  const std::vector<int> lc = axis_list(dims.lhs_contract, lhs.rank());
  const std::vector<int> rc = axis_list(dims.rhs_contract, rhs.rank());
  const std::vector<int> lb = axis_list(dims.lhs_batch, lhs.rank());
  const std::vector<int> rb = axis_list(dims.rhs_batch, rhs.rank());
  auto free_axes = [](std::int64_t rank, const std::vector<int>& c, const std::vector<int>& b) {
    std::vector<int> f;
    for (int a = 0; a < rank; ++a)
      if (std::find(c.begin(), c.end(), a) == c.end() &&
          std::find(b.begin(), b.end(), a) == b.end())
        f.push_back(a);
    return f;
  };
  const std::vector<int> lf = free_axes(lhs.rank(), lc, lb);
  const std::vector<int> rf = free_axes(rhs.rank(), rc, rb);
  Shape contract_shape;
  for (int a : lc) contract_shape.push_back(lhs.shape()[a]);
  const Strides ls = row_major_strides(lhs.shape()), rs = row_major_strides(rhs.shape());

  const Shape& out_shape = node.outputs()[0].shape;
  Tensor out(lhs.dtype(), out_shape);
  visit_dtype(lhs.dtype(), [&]<class T>() {
    const T* l = lhs.data<T>();
    const T* r = rhs.data<T>();
    T* o = out.data<T>();
    std::int64_t n = 0;
    Index li(lhs.shape().size()), ri(rhs.shape().size());
    for_each_index(out_shape, [&](const Index& oi) {
      // Output axes: batch (lhs order), lhs free, rhs free.
      std::size_t p = 0;
      for (std::size_t k = 0; k < lb.size(); ++k, ++p) li[lb[k]] = ri[rb[k]] = oi[p];
      for (int a : lf) li[a] = oi[p++];
      for (int a : rf) ri[a] = oi[p++];
      Acc<T> sum(0);
      for_each_index(contract_shape, [&](const Index& ci) {
        for (std::size_t k = 0; k < lc.size(); ++k) li[lc[k]] = ri[rc[k]] = ci[k];
        sum +=
            static_cast<Acc<T>>(l[offset_of(li, ls)]) * static_cast<Acc<T>>(r[offset_of(ri, rs)]);
      });
      o[n++] = static_cast<T>(sum);
    });
  });
  return out;
}

// ---------------------------------------------------------------------------------------------
// Indexing

// out[pre, idx, post] = x[pre, indices[idx], post].
Tensor eval_take(const Node& node, const Tensor& x, const Tensor& indices) {
  const int axis = axis_index(node.attrs().get_int("axis"), x.rank());
  const std::vector<std::int64_t> ind = read_indices(indices);
  check_indices(ind, indices.shape(), x.shape()[axis]);
  const Shape& out_shape = node.outputs()[0].shape;
  const auto r = static_cast<std::size_t>(indices.rank());
  const Strides xs = row_major_strides(x.shape()), is = row_major_strides(indices.shape());
  Tensor out(x.dtype(), out_shape);
  visit_dtype(x.dtype(), [&]<class T>() {
    const T* src = x.data<T>();
    T* dst = out.data<T>();
    std::int64_t n = 0;
    Index xi(x.shape().size());
    for_each_index(out_shape, [&](const Index& oi) {
      std::int64_t flat_ind = 0;
      for (std::size_t k = 0; k < r; ++k) flat_ind += oi[axis + k] * is[k];
      for (int a = 0; a < axis; ++a) xi[a] = oi[a];
      xi[axis] = ind[static_cast<std::size_t>(flat_ind)];
      for (std::size_t a = axis + 1; a < xi.size(); ++a) xi[a] = oi[a - 1 + r];
      dst[n++] = src[offset_of(xi, xs)];
    });
  });
  return out;
}

// out = zeros(updates[:axis] + [dim_size] + updates[axis + r:]);
// out[pre, indices[idx], post] += updates[pre, idx, post].
Tensor eval_scatter_add(const Node& node, const Tensor& indices, const Tensor& updates) {
  const Shape& out_shape = node.outputs()[0].shape;
  const int axis =
      axis_index(node.attrs().get_int("axis"), static_cast<std::int64_t>(out_shape.size()));
  const std::int64_t dim_size = node.attrs().get_int("dim_size");
  const std::vector<std::int64_t> ind = read_indices(indices);
  check_indices(ind, indices.shape(), dim_size);
  const auto r = static_cast<std::size_t>(indices.rank());
  const Strides os = row_major_strides(out_shape), is = row_major_strides(indices.shape());
  Tensor out(updates.dtype(), out_shape);
  visit_dtype(updates.dtype(), [&]<class T>() {
    const T* src = updates.data<T>();
    std::vector<Acc<T>> acc(static_cast<std::size_t>(out.numel()), Acc<T>(0));
    std::int64_t n = 0;
    Index oi(out_shape.size());
    for_each_index(updates.shape(), [&](const Index& ui) {
      std::int64_t flat_ind = 0;
      for (std::size_t k = 0; k < r; ++k) flat_ind += ui[axis + k] * is[k];
      for (int a = 0; a < axis; ++a) oi[a] = ui[a];
      oi[axis] = ind[static_cast<std::size_t>(flat_ind)];
      for (std::size_t a = axis + 1; a < oi.size(); ++a) oi[a] = ui[a - 1 + r];
      acc[static_cast<std::size_t>(offset_of(oi, os))] += static_cast<Acc<T>>(src[n++]);
    });
    T* dst = out.data<T>();
    for (std::size_t o = 0; o < acc.size(); ++o) dst[o] = static_cast<T>(acc[o]);
  });
  return out;
}

// ---------------------------------------------------------------------------------------------
// softmax and layer norm

Tensor eval_softmax(const Node& node, const Tensor& x) {
  const auto axis = static_cast<std::size_t>(axis_index(node.attrs().get_int("axis"), x.rank()));
  // Element (o, j, i) of the rows along `axis` is at o * n * inner + j * inner + i.
  const std::int64_t outer = extent_product(x.shape(), 0, axis), n = x.shape()[axis],
                     inner = extent_product(x.shape(), axis + 1, x.shape().size());
  Tensor out(x.dtype(), x.shape());
  visit_float(x.dtype(), [&]<class T>() {
    const T* src = x.data<T>();
    T* dst = out.data<T>();
    for (std::int64_t o = 0; o < outer; ++o)
      for (std::int64_t i = 0; i < inner; ++i) {
        auto at = [&](std::int64_t j) { return o * n * inner + j * inner + i; };
        double m = -std::numeric_limits<double>::infinity();
        for (std::int64_t j = 0; j < n; ++j) m = std::max(m, static_cast<double>(src[at(j)]));
        double sum = 0;
        for (std::int64_t j = 0; j < n; ++j) sum += std::exp(static_cast<double>(src[at(j)]) - m);
        for (std::int64_t j = 0; j < n; ++j)
          dst[at(j)] = static_cast<T>(std::exp(static_cast<double>(src[at(j)]) - m) / sum);
      }
  });
  return out;
}

// inputs x [..., C] [, gamma [C], beta [C]]; outputs y, mean, rstd.
std::vector<Tensor> eval_layer_norm(const Node& node, const std::vector<Tensor>& in) {
  const Tensor& x = in[0];
  const bool affine = in.size() == 3;
  const double eps = node.attrs().get_float("eps");
  const std::int64_t c = x.shape().back(),
                     rows = extent_product(x.shape(), 0, x.shape().size() - 1);
  Tensor y(x.dtype(), x.shape());
  Tensor mean(x.dtype(), node.outputs()[1].shape), rstd(x.dtype(), node.outputs()[2].shape);
  visit_float(x.dtype(), [&]<class T>() {
    const T* src = x.data<T>();
    const T* gamma = affine ? in[1].data<T>() : nullptr;
    const T* beta = affine ? in[2].data<T>() : nullptr;
    for (std::int64_t r = 0; r < rows; ++r) {
      const T* row = src + r * c;
      double mu = 0, var = 0;
      for (std::int64_t j = 0; j < c; ++j) mu += row[j];
      mu /= static_cast<double>(c);
      for (std::int64_t j = 0; j < c; ++j) var += (row[j] - mu) * (row[j] - mu);
      var /= static_cast<double>(c);  // population variance
      const double rs = 1.0 / std::sqrt(var + eps);
      mean.data<T>()[r] = static_cast<T>(mu);
      rstd.data<T>()[r] = static_cast<T>(rs);
      for (std::int64_t j = 0; j < c; ++j) {
        double v = (row[j] - mu) * rs;
        if (affine) v = v * gamma[j] + beta[j];
        y.data<T>()[r * c + j] = static_cast<T>(v);
      }
    }
  });
  return {y, mean, rstd};
}

// With xh = (x - mean) * rstd and g = dy * gamma (or dy), differentiating mean and rstd too:
//   dx = rstd * (g - mean_C(g) - xh * mean_C(g * xh))
//   dgamma = sum over rows of dy * xh, dbeta = sum over rows of dy.
std::vector<Tensor> eval_layer_norm_backward(const Node& node, const std::vector<Tensor>& in) {
  const Tensor &x = in[0], &mean = in[1], &rstd = in[2], &dy = in[3];
  const bool affine = in.size() == 5;
  const std::int64_t c = x.shape().back(),
                     rows = extent_product(x.shape(), 0, x.shape().size() - 1);
  Tensor dx(x.dtype(), x.shape());
  std::vector<Tensor> outs;
  visit_float(x.dtype(), [&]<class T>() {
    const T* gamma = affine ? in[4].data<T>() : nullptr;
    std::vector<double> dgamma(static_cast<std::size_t>(c), 0.0), dbeta(dgamma);
    std::vector<double> xh(dgamma.size()), g(dgamma.size());
    for (std::int64_t r = 0; r < rows; ++r) {
      const T* xr = x.data<T>() + r * c;
      const T* dyr = dy.data<T>() + r * c;
      const double mu = mean.data<T>()[r], rs = rstd.data<T>()[r];
      double mean_g = 0, mean_gxh = 0;
      for (std::int64_t j = 0; j < c; ++j) {
        xh[j] = (xr[j] - mu) * rs;
        g[j] = affine ? static_cast<double>(dyr[j]) * gamma[j] : static_cast<double>(dyr[j]);
        mean_g += g[j];
        mean_gxh += g[j] * xh[j];
        dgamma[j] += dyr[j] * xh[j];
        dbeta[j] += dyr[j];
      }
      mean_g /= static_cast<double>(c);
      mean_gxh /= static_cast<double>(c);
      for (std::int64_t j = 0; j < c; ++j)
        dx.data<T>()[r * c + j] = static_cast<T>(rs * (g[j] - mean_g - xh[j] * mean_gxh));
    }
    outs.push_back(dx);
    if (affine) {
      Tensor dg(x.dtype(), node.outputs()[1].shape), db(x.dtype(), node.outputs()[2].shape);
      for (std::int64_t j = 0; j < c; ++j) {
        dg.data<T>()[j] = static_cast<T>(dgamma[j]);
        db.data<T>()[j] = static_cast<T>(dbeta[j]);
      }
      outs.push_back(dg);
      outs.push_back(db);
    }
  });
  return outs;
}

// ---------------------------------------------------------------------------------------------
// Attention

// Sizes, scale and mask of one attention node; q [..., Sq, D], k [..., Sk, D], v [..., Sk, Dv].
struct AttentionSetup : AttentionAttrs {
  Shape batch_shape;
  std::int64_t batch = 1, sq = 0, sk = 0, d = 0, dv = 0;
  const Tensor* mask_tensor = nullptr;
  Strides mask_strides;  // per q axis (batch axes, then Sq, Sk); 0 where the mask broadcasts

  AttentionSetup(const Node& node, const Tensor& q, const Tensor& k, const Tensor& v,
                 const Tensor* mask_input)
      : AttentionAttrs(AttentionAttrs::from(node.attrs())) {
    const std::size_t r = q.shape().size();
    batch_shape.assign(q.shape().begin(), q.shape().end() - 2);
    batch = extent_product(batch_shape, 0, batch_shape.size());
    sq = q.shape()[r - 2];
    d = q.shape()[r - 1];
    sk = k.shape()[r - 2];
    dv = v.shape()[r - 1];
    // 0 means the default 1/sqrt(D), in case the builder stored the option as given.
    if (scale == 0.0) scale = 1.0 / std::sqrt(static_cast<double>(d));
    if (Shape(k.shape().begin(), k.shape().end() - 2) != batch_shape ||
        Shape(v.shape().begin(), v.shape().end() - 2) != batch_shape)
      fail("q, k and v must have the same batch axes");
    if (mask == MaskKind::tensor) {
      // The mask's axes align with q's trailing axes; extent 1 broadcasts.
      mask_tensor = mask_input;
      const Strides ms = row_major_strides(mask_tensor->shape());
      const std::size_t mr = mask_tensor->shape().size();
      if (mr < 2 || mr > r) fail("bad mask rank {}", mr);
      mask_strides.assign(r, 0);
      for (std::size_t a = 0; a < mr; ++a)
        if (mask_tensor->shape()[a] != 1) mask_strides[r - mr + a] = ms[a];
    }
  }

  // Offset of the mask's [Sq, Sk] block for batch multi-index b.
  std::int64_t mask_base(const Index& b) const {
    std::int64_t off = 0;
    if (mask == MaskKind::tensor)
      for (std::size_t a = 0; a < b.size(); ++a) off += b[a] * mask_strides[a];
    return off;
  }

  bool allowed(std::int64_t base, std::int64_t i, std::int64_t j) const {
    if (mask != MaskKind::tensor) return allows(i, j);
    const std::size_t r = mask_strides.size();
    return mask_tensor
               ->data<std::uint8_t>()[base + i * mask_strides[r - 2] + j * mask_strides[r - 1]] !=
           0;
  }

  // Scaled scores of query row i against every key; masked ones are replaced by `fill`.
  template <class T>
  void scores(const T* q, const T* k, std::int64_t base, std::int64_t i,
              std::vector<double>& s) const {
    s.assign(static_cast<std::size_t>(sk), 0.0);
    for (std::int64_t j = 0; j < sk; ++j) {
      double dot = 0;
      for (std::int64_t e = 0; e < d; ++e)
        dot += static_cast<double>(q[i * d + e]) * static_cast<double>(k[j * d + e]);
      s[j] = allowed(base, i, j) ? dot * scale : fill;
    }
  }
};

// Calls f(batch flat index, mask base) for every batch entry.
template <class F>
void for_each_batch(const AttentionSetup& at, F&& f) {
  std::int64_t b = 0;
  for_each_index(at.batch_shape, [&](const Index& bi) { f(b++, at.mask_base(bi)); });
}

// outputs out [..., Sq, Dv] and lse [..., Sq] (log-sum-exp of the filled, scaled scores).
std::vector<Tensor> eval_attention(const Node& node, const std::vector<Tensor>& in) {
  const Tensor &q = in[0], &k = in[1], &v = in[2];
  const AttentionSetup at(node, q, k, v, in.size() > 3 ? &in[3] : nullptr);
  Tensor out(q.dtype(), node.outputs()[0].shape), lse(q.dtype(), node.outputs()[1].shape);
  visit_float(q.dtype(), [&]<class T>() {
    std::vector<double> s, acc;
    for_each_batch(at, [&](std::int64_t b, std::int64_t base) {
      const T* qb = q.data<T>() + b * at.sq * at.d;
      const T* kb = k.data<T>() + b * at.sk * at.d;
      const T* vb = v.data<T>() + b * at.sk * at.dv;
      T* ob = out.data<T>() + b * at.sq * at.dv;
      for (std::int64_t i = 0; i < at.sq; ++i) {
        at.scores(qb, kb, base, i, s);
        double m = -std::numeric_limits<double>::infinity(), sum = 0;
        for (double x : s) m = std::max(m, x);
        for (double x : s) sum += std::exp(x - m);
        acc.assign(static_cast<std::size_t>(at.dv), 0.0);
        for (std::int64_t j = 0; j < at.sk; ++j) {
          const double p = std::exp(s[j] - m) / sum;
          for (std::int64_t e = 0; e < at.dv; ++e) acc[e] += p * vb[j * at.dv + e];
        }
        for (std::int64_t e = 0; e < at.dv; ++e) ob[i * at.dv + e] = static_cast<T>(acc[e]);
        lse.data<T>()[b * at.sq + i] = static_cast<T>(m + std::log(sum));
      }
    });
  });
  return {out, lse};
}

// inputs q, k, v [, mask], out, lse, dout; outputs dq, dk, dv. With P = exp(S - lse):
//   dV = P^T.dout, dP = dout.V^T, dS = P * (dP - rowsum(dout * out)) (0 where masked, since
//   those scores were replaced by a constant), dQ = dS.K * scale, dK = dS^T.Q * scale.
std::vector<Tensor> eval_attention_backward(const Node& node, const std::vector<Tensor>& in) {
  const bool has_mask = AttentionAttrs::from(node.attrs()).mask == MaskKind::tensor;
  const std::size_t o = has_mask ? 4 : 3;
  const Tensor &q = in[0], &k = in[1], &v = in[2];
  const Tensor &out = in[o], &lse = in[o + 1], &dout = in[o + 2];
  const AttentionSetup at(node, q, k, v, has_mask ? &in[3] : nullptr);
  Tensor dq(q.dtype(), q.shape()), dk(k.dtype(), k.shape()), dv(v.dtype(), v.shape());
  visit_float(q.dtype(), [&]<class T>() {
    std::vector<double> gq(static_cast<std::size_t>(q.numel()), 0.0);
    std::vector<double> gk(static_cast<std::size_t>(k.numel()), 0.0);
    std::vector<double> gv(static_cast<std::size_t>(v.numel()), 0.0);
    std::vector<double> s;
    for_each_batch(at, [&](std::int64_t b, std::int64_t base) {
      const std::int64_t qo = b * at.sq * at.d, ko = b * at.sk * at.d, vo = b * at.sk * at.dv,
                         oo = b * at.sq * at.dv;
      const T* qb = q.data<T>() + qo;
      const T* kb = k.data<T>() + ko;
      const T* vb = v.data<T>() + vo;
      const T* ob = out.data<T>() + oo;
      const T* gob = dout.data<T>() + oo;
      for (std::int64_t i = 0; i < at.sq; ++i) {
        at.scores(qb, kb, base, i, s);
        const double row_lse = lse.data<T>()[b * at.sq + i];
        double delta = 0;  // rowsum(dout * out)
        for (std::int64_t e = 0; e < at.dv; ++e)
          delta += static_cast<double>(gob[i * at.dv + e]) * ob[i * at.dv + e];
        for (std::int64_t j = 0; j < at.sk; ++j) {
          const double p = std::exp(s[j] - row_lse);
          double dp = 0;
          for (std::int64_t e = 0; e < at.dv; ++e) {
            dp += static_cast<double>(gob[i * at.dv + e]) * vb[j * at.dv + e];
            gv[vo + j * at.dv + e] += p * gob[i * at.dv + e];
          }
          const double ds = at.allowed(base, i, j) ? p * (dp - delta) : 0.0;
          for (std::int64_t e = 0; e < at.d; ++e) {
            gq[qo + i * at.d + e] += ds * at.scale * kb[j * at.d + e];
            gk[ko + j * at.d + e] += ds * at.scale * qb[i * at.d + e];
          }
        }
      }
    });
    std::copy(gq.begin(), gq.end(), dq.data<T>());
    std::copy(gk.begin(), gk.end(), dk.data<T>());
    std::copy(gv.begin(), gv.end(), dv.data<T>());
  });
  return {dq, dk, dv};
}

// ---------------------------------------------------------------------------------------------
// LSTM

struct LstmSizes {
  std::int64_t batch, steps, units;
};

LstmSizes lstm_sizes(const Tensor& zx, const Tensor& h0) {
  return {zx.shape()[0], zx.shape()[1], h0.shape()[1]};
}

// The activated gates i, f, g, o (4U, in blocks of U) for one batch row and step:
// z = zx_t + h.w_hh; i, f, o = sigmoid; g = tanh.
template <class T>
void lstm_gates(const LstmSizes& n, const T* zx_t, const T* h, const T* w_hh,
                std::vector<double>& gates) {
  const std::int64_t g4 = 4 * n.units;
  gates.assign(static_cast<std::size_t>(g4), 0.0);
  for (std::int64_t col = 0; col < g4; ++col) {
    double z = zx_t[col];
    for (std::int64_t u = 0; u < n.units; ++u) z += static_cast<double>(h[u]) * w_hh[u * g4 + col];
    gates[col] = col / n.units == 2 ? std::tanh(z) : sigmoid_d(z);
  }
}

// inputs zx [B,S,4U], w_hh [U,4U], h0 [B,U], c0 [B,U]; outputs h_seq, c_seq.
std::vector<Tensor> eval_lstm_scan(const Node& node, const std::vector<Tensor>& in) {
  const Tensor &zx = in[0], &w_hh = in[1], &h0 = in[2], &c0 = in[3];
  const LstmSizes n = lstm_sizes(zx, h0);
  Tensor h_seq(zx.dtype(), node.outputs()[0].shape), c_seq(zx.dtype(), node.outputs()[1].shape);
  visit_float(zx.dtype(), [&]<class T>() {
    const std::int64_t un = n.units;
    std::vector<double> gates;
    for (std::int64_t b = 0; b < n.batch; ++b)
      for (std::int64_t t = 0; t < n.steps; ++t) {
        // The state carried between steps is the stored (rounded) T value, as in the backward.
        const T* h = t == 0 ? h0.data<T>() + b * un : h_seq.data<T>() + (b * n.steps + t - 1) * un;
        const T* c = t == 0 ? c0.data<T>() + b * un : c_seq.data<T>() + (b * n.steps + t - 1) * un;
        lstm_gates(n, zx.data<T>() + (b * n.steps + t) * 4 * un, h, w_hh.data<T>(), gates);
        T* h_out = h_seq.data<T>() + (b * n.steps + t) * un;
        T* c_out = c_seq.data<T>() + (b * n.steps + t) * un;
        for (std::int64_t u = 0; u < un; ++u) {
          const double ig = gates[u], fg = gates[un + u], gg = gates[2 * un + u],
                       og = gates[3 * un + u];
          c_out[u] = static_cast<T>(fg * c[u] + ig * gg);
          h_out[u] = static_cast<T>(og * std::tanh(static_cast<double>(c_out[u])));
        }
      }
  });
  return {h_seq, c_seq};
}

// inputs zx, w_hh, h0, c0, h_seq, c_seq, dh_seq, dc_seq; outputs dzx, dh0, dc0.
// Backprop through time, from the last step:
//   dh = dh_seq[t] + dh_next;  dc = dc_seq[t] + dc_next + dh * o * (1 - tanh(c_t)^2)
//   do = dh * tanh(c_t), di = dc * g, dg = dc * i, df = dc * c_{t-1}
//   dz = (di i(1-i), df f(1-f), dg (1-g^2), do o(1-o)) = dzx_t
//   dh_next = dz.w_hh^T, dc_next = dc * f.
std::vector<Tensor> eval_lstm_scan_backward(const Node&, const std::vector<Tensor>& in) {
  const Tensor &zx = in[0], &w_hh = in[1], &h0 = in[2], &c0 = in[3];
  const Tensor &h_seq = in[4], &c_seq = in[5], &dh_seq = in[6], &dc_seq = in[7];
  const LstmSizes n = lstm_sizes(zx, h0);
  Tensor dzx(zx.dtype(), zx.shape()), dh0(h0.dtype(), h0.shape()), dc0(c0.dtype(), c0.shape());
  visit_float(zx.dtype(), [&]<class T>() {
    const std::int64_t un = n.units, g4 = 4 * un;
    auto zeros = [](std::int64_t count) {
      return std::vector<double>(static_cast<std::size_t>(count), 0.0);
    };
    std::vector<double> gates, dz(static_cast<std::size_t>(g4));
    const T* wh = w_hh.data<T>();
    for (std::int64_t b = 0; b < n.batch; ++b) {
      std::vector<double> dh_next = zeros(un), dc_next = zeros(un);
      for (std::int64_t t = n.steps - 1; t >= 0; --t) {
        const std::int64_t st = (b * n.steps + t) * un;  // offset of step t in the [B,S,U] arrays
        const T* h_prev = t == 0 ? h0.data<T>() + b * un : h_seq.data<T>() + st - un;
        const T* c_prev = t == 0 ? c0.data<T>() + b * un : c_seq.data<T>() + st - un;
        lstm_gates(n, zx.data<T>() + (b * n.steps + t) * g4, h_prev, wh, gates);
        std::vector<double> dc_prev = zeros(un);
        for (std::int64_t u = 0; u < un; ++u) {
          const double ig = gates[u], fg = gates[un + u], gg = gates[2 * un + u],
                       og = gates[3 * un + u];
          const double tc = std::tanh(static_cast<double>(c_seq.data<T>()[st + u]));
          const double dh = dh_seq.data<T>()[st + u] + dh_next[u];
          const double dc = dc_seq.data<T>()[st + u] + dc_next[u] + dh * og * (1 - tc * tc);
          dz[u] = dc * gg * ig * (1 - ig);
          dz[un + u] = dc * c_prev[u] * fg * (1 - fg);
          dz[2 * un + u] = dc * ig * (1 - gg * gg);
          dz[3 * un + u] = dh * tc * og * (1 - og);
          dc_prev[u] = dc * fg;
        }
        // The stored (rounded) dz is what the compiled kernel carries on from, too.
        T* dz_out = dzx.data<T>() + (b * n.steps + t) * g4;
        for (std::int64_t col = 0; col < g4; ++col) dz_out[col] = static_cast<T>(dz[col]);
        std::vector<double> dh_prev = zeros(un);
        for (std::int64_t v = 0; v < un; ++v)
          for (std::int64_t col = 0; col < g4; ++col)
            dh_prev[v] += static_cast<double>(dz_out[col]) * wh[v * g4 + col];
        dh_next = std::move(dh_prev);
        dc_next = std::move(dc_prev);
      }
      for (std::int64_t u = 0; u < un; ++u) {
        dh0.data<T>()[b * un + u] = static_cast<T>(dh_next[u]);
        dc0.data<T>()[b * un + u] = static_cast<T>(dc_next[u]);
      }
    }
  });
  return {dzx, dh0, dc0};
}

// ---------------------------------------------------------------------------------------------
// Dispatch

// Evaluates one non-parameter node on its input tensors.
std::vector<Tensor> evaluate(const Node& node, const std::vector<Tensor>& in) {
  const Attributes& at = node.attrs();
  switch (op_kind(node.op())) {
    case OpKind::unary:
      return {eval_unary(node.op(), in.at(0))};
    case OpKind::binary:
      return {eval_binary(node.op(), in.at(0), in.at(1))};
    case OpKind::compare:
      return {eval_compare(node.op(), in.at(0), in.at(1))};
    case OpKind::reduction:
      return {eval_reduce(node, in.at(0))};
    default:
      break;
  }
  switch (node.op()) {
    case Op::parameter:
      fail("parameter nodes are bound from the inputs");
    case Op::constant:
      return {at.get_tensor("value").clone()};
    case Op::iota:
      return {eval_iota(node)};
    case Op::random_uniform:
      return {eval_random_uniform(node, in.at(0))};

    case Op::select:
      return {eval_select(in.at(0), in.at(1), in.at(2))};
    case Op::cast:
      return {in.at(0).cast(at.get_dtype("dtype"))};

    case Op::broadcast_in_dim:
      return {eval_broadcast_in_dim(node, in.at(0))};
    case Op::reshape:
      return {in.at(0).clone().reshape(node.outputs()[0].shape)};
    case Op::transpose:
      return {eval_transpose(node, in.at(0))};
    case Op::slice:
      return {eval_slice(node, in.at(0))};
    case Op::pad:
      return {eval_pad(node, in.at(0))};
    case Op::concat:
      return {eval_concat(node, in)};

    case Op::dot_general:
      return {eval_dot_general(node, in.at(0), in.at(1))};

    case Op::take:
      return {eval_take(node, in.at(0), in.at(1))};
    case Op::scatter_add:
      return {eval_scatter_add(node, in.at(0), in.at(1))};

    case Op::softmax:
      return {eval_softmax(node, in.at(0))};
    case Op::layer_norm:
      return eval_layer_norm(node, in);
    case Op::layer_norm_backward:
      return eval_layer_norm_backward(node, in);
    case Op::attention:
      return eval_attention(node, in);
    case Op::attention_backward:
      return eval_attention_backward(node, in);
    case Op::lstm_scan:
      return eval_lstm_scan(node, in);
    case Op::lstm_scan_backward:
      return eval_lstm_scan_backward(node, in);
    default:
      break;  // evaluated by kind above
  }
  fail("unknown op {}", static_cast<int>(node.op()));
}

// Count, dtype, rank and static extents of every input; dynamic extents must agree. Returns
// whether the graph needs specialising.
bool check_inputs(const Graph& graph, const std::vector<Tensor>& inputs) {
  const auto& params = graph.inputs();
  if (params.size() != inputs.size())
    fail("interpret: the graph takes {} input{}, {} given", params.size(),
         params.size() == 1 ? "" : "s", inputs.size());
  bool dynamic = false;
  std::int64_t bound = kDynamic;  // the batch extent, once an input binds it
  std::size_t bound_by = 0;
  for (std::size_t i = 0; i < params.size(); ++i) {
    const TensorType& want = params[i].type();
    const Tensor& got = inputs[i];
    if (got.dtype() != want.dtype)
      fail("interpret: input \"{}\" has dtype {}, the graph expects {}", input_name(params[i]),
           dtype_name(got.dtype()), want.to_string());
    bool ok = got.rank() == want.rank();
    for (std::size_t a = 0; ok && a < want.shape.size(); ++a)
      ok = want.shape[a] == kDynamic || want.shape[a] == got.shape()[a];
    if (!ok)
      fail("interpret: input \"{}\" has shape {}, the graph expects {}", input_name(params[i]),
           shape_to_string(got.shape()), want.to_string());
    for (std::size_t a = 0; a < want.shape.size(); ++a) {
      if (want.shape[a] != kDynamic) continue;
      dynamic = true;
      if (bound == kDynamic) {
        bound = got.shape()[a];
        bound_by = i;
      } else if (got.shape()[a] != bound) {
        fail(
            "interpret: input \"{}\" has shape {}, the graph expects {} with ? = {} (bound by "
            "input \"{}\")",
            input_name(params[i]), shape_to_string(got.shape()), want.to_string(), bound,
            input_name(params[bound_by]));
      }
    }
  }
  if (!dynamic)
    for (const Node* node : graph.nodes())
      for (const TensorType& t : node->outputs())
        if (!is_static(t.shape)) return true;  // let specialize report what cannot be bound
  return dynamic;
}

}  // namespace

std::vector<Tensor> interpret(const Graph& graph_in, const std::vector<Tensor>& inputs) {
  const bool dynamic = check_inputs(graph_in, inputs);
  Graph graph = graph_in;
  if (dynamic) {
    std::vector<Shape> shapes;
    for (const Tensor& t : inputs) shapes.push_back(t.shape());
    graph = specialize(graph_in, shapes);
  }

  std::unordered_map<const Node*, std::size_t> input_position;
  for (std::size_t i = 0; i < graph.inputs().size(); ++i)
    input_position[&graph.inputs()[i].node()] = i;

  std::unordered_map<const Node*, std::vector<Tensor>> values;
  for (const Node* node : graph.nodes()) {
    std::vector<Tensor> outs;
    if (node->op() == Op::parameter) {
      const auto it = input_position.find(node);
      if (it == input_position.end())
        fail("interpret: parameter \"{}\" is not an input of the graph",
             node->attrs().has("name") ? node->attrs().get_string("name") : "");
      outs = {inputs[it->second]};
    } else {
      std::vector<Tensor> args;
      for (const Value& v : node->inputs()) args.push_back(values.at(&v.node()).at(v.index()));
      try {
        outs = evaluate(*node, args);
      } catch (const Error& e) {
        throw Error(
            fmt::format("interpret: {}: {}{}", op_name(node->op()), e.what(), where(*node)));
      }
    }
    // Every result must have the type shape inference gave the node: a mismatch is a bug here
    // or there, and would otherwise surface far away.
    bool ok = outs.size() == node->outputs().size();
    for (std::size_t k = 0; ok && k < outs.size(); ++k)
      ok = outs[k].dtype() == node->outputs()[k].dtype &&
           outs[k].shape() == node->outputs()[k].shape;
    if (!ok) {
      std::string got;
      for (const Tensor& t : outs)
        got += (got.empty() ? "" : ", ") + std::string(dtype_name(t.dtype())) +
               shape_to_string(t.shape());
      std::string want;
      for (const TensorType& t : node->outputs())
        want += (want.empty() ? "" : ", ") + t.to_string();
      throw Error(fmt::format("interpret: internal error: {} produced ({}) but its type is ({}){}",
                              op_name(node->op()), got, want, where(*node)));
    }
    values.emplace(node, std::move(outs));
  }

  std::vector<Tensor> results;
  for (const Value& v : graph.outputs()) {
    Tensor t = values.at(&v.node()).at(v.index());
    // An output that is an input passed through must not alias the caller's buffer.
    for (const Tensor& x : inputs)
      if (x.raw_data() == t.raw_data() && t.numel() > 0) {
        t = t.clone();
        break;
      }
    results.push_back(t);
  }
  return results;
}

}  // namespace edifice
