#pragma once
/// \file
/// Builders for every op of the graph IR. Each checks its operands, infers the output type and
/// returns the new value; nothing is computed until the graph is run (interpreter or JIT).
///
/// Conventions:
/// - Every builder takes a trailing `loc` that defaults to the caller's source location, so
///   shape errors point at the user's line.
/// - Operands must have the same dtype; there is no implicit promotion.
/// - The arithmetic builders (`add`, `mul`, ..., `select`) broadcast like NumPy, aligning
///   trailing axes; the IR ops they make always see identical shapes (broadcast_in_dim nodes
///   are inserted). Errors name both shapes and the axis at fault.
/// - Axes may be negative (counted from the end) wherever a builder takes an axis or a list of
///   axes: reductions, softmax, take, concat, iota, slice_axis, transpose and dot_general. The
///   IR stores them normalised. broadcast_in_dim's `dims` and scatter_add's `axis` are IR-level
///   and must be non-negative.
/// - Integer dtypes (i32, i64, u8) support the arithmetic and comparison ops: arithmetic wraps
///   around, division truncates toward zero and division by zero is a run-time error.
///   Transcendental ops, pow, softmax, layer_norm, attention and lstm need f32 or f64.
/// - Attribute keys written here are the ones the interpreter, autodiff and the JIT read.

#include <edifice/core/graph.hpp>
#include <edifice/core/op_attrs.hpp>

#include <optional>
#include <source_location>
#include <string>
#include <vector>

namespace edifice::ops {

using Loc = std::source_location;
using Axes = std::vector<std::int64_t>;

// ---------------------------------------------------------------------------------------------
// Sources

/// A graph input. attrs: name. Its position is its index in Graph::inputs.
Value parameter(std::string name, DType dtype, Shape shape, Loc loc = Loc::current());
/// A constant tensor. attrs: value.
Value constant(Tensor value, Loc loc = Loc::current());
/// A rank-0 constant of `dtype`.
Value scalar(double value, DType dtype, Loc loc = Loc::current());
/// A constant `value` broadcast to `shape` (may hold the dynamic extent).
Value full(Shape shape, double value, DType dtype, Loc loc = Loc::current());
Value full_like(const Value& x, double value, Loc loc = Loc::current());
Value zeros_like(const Value& x, Loc loc = Loc::current());
/// out[i0, i1, ...] = i_axis. attrs: shape, axis, dtype.
Value iota(Shape shape, std::int64_t axis, DType dtype, Loc loc = Loc::current());
/// Uniform samples in [0, 1) from a counter-based generator (Philox-4x32-10): element n (row
/// major) of stream `stream` with key `seed` (an i64 scalar value) depends only on (seed,
/// stream, n), never on threads or evaluation order. The exact bit mapping is documented in
/// philox.hpp. inputs: seed. attrs: shape, dtype (f32 or
/// f64), stream.
Value random_uniform(const Value& seed, Shape shape, DType dtype, std::int64_t stream,
                     Loc loc = Loc::current());

// ---------------------------------------------------------------------------------------------
// Elementwise (float dtypes; neg and abs also take signed integers)

Value neg(const Value& x, Loc loc = Loc::current());
Value abs(const Value& x, Loc loc = Loc::current());
Value exp(const Value& x, Loc loc = Loc::current());
Value log(const Value& x, Loc loc = Loc::current());
Value sqrt(const Value& x, Loc loc = Loc::current());
Value rsqrt(const Value& x, Loc loc = Loc::current());
Value tanh(const Value& x, Loc loc = Loc::current());
Value sigmoid(const Value& x, Loc loc = Loc::current());
Value erf(const Value& x, Loc loc = Loc::current());
Value sin(const Value& x, Loc loc = Loc::current());
Value cos(const Value& x, Loc loc = Loc::current());
/// max(x, 0).
Value relu(const Value& x, Loc loc = Loc::current());
/// Exact GELU: x * (1 + erf(x / sqrt(2))) / 2.
Value gelu(const Value& x, Loc loc = Loc::current());

/// Binary arithmetic with NumPy broadcasting. `max`/`min` are elementwise.
Value add(const Value& a, const Value& b, Loc loc = Loc::current());
Value sub(const Value& a, const Value& b, Loc loc = Loc::current());
Value mul(const Value& a, const Value& b, Loc loc = Loc::current());
Value div(const Value& a, const Value& b, Loc loc = Loc::current());
Value max(const Value& a, const Value& b, Loc loc = Loc::current());
Value min(const Value& a, const Value& b, Loc loc = Loc::current());
Value pow(const Value& a, const Value& b, Loc loc = Loc::current());

/// Comparisons with broadcasting; the result is u8 holding 0 or 1.
Value eq(const Value& a, const Value& b, Loc loc = Loc::current());
Value ne(const Value& a, const Value& b, Loc loc = Loc::current());
Value lt(const Value& a, const Value& b, Loc loc = Loc::current());
Value le(const Value& a, const Value& b, Loc loc = Loc::current());
Value gt(const Value& a, const Value& b, Loc loc = Loc::current());
Value ge(const Value& a, const Value& b, Loc loc = Loc::current());

/// pred ? on_true : on_false, elementwise. pred is u8 (nonzero = true); all three broadcast.
Value select(const Value& pred, const Value& on_true, const Value& on_false,
             Loc loc = Loc::current());
/// Elementwise conversion with C++ static_cast semantics for values the target can hold;
/// float-to-integer conversion of NaN or out-of-range values saturates in compiled code and is
/// unspecified in the interpreter (do not rely on it). Casting to the same dtype returns x
/// itself (no node). attrs: dtype.
Value cast(const Value& x, DType dtype, Loc loc = Loc::current());

// ---------------------------------------------------------------------------------------------
// Layout

/// out has `shape`; input axis i maps to output axis dims[i] (dims strictly increasing) and its
/// extent must be 1 or equal to shape[dims[i]]. attrs: shape, dims.
Value broadcast_in_dim(const Value& x, Shape shape, Axes dims, Loc loc = Loc::current());
/// NumPy broadcast of x to `shape` (trailing axes aligned).
Value broadcast_to(const Value& x, Shape shape, Loc loc = Loc::current());
/// Same elements in row-major order, new shape. kDynamic in `shape` stands for the batch
/// symbol, so [?,60,8] -> [?,480] is valid. attrs: shape.
Value reshape(const Value& x, Shape shape, Loc loc = Loc::current());
/// out.shape[i] = x.shape[perm[i]]. attrs: perm.
Value transpose(const Value& x, Axes perm, Loc loc = Loc::current());
/// x[start:limit:stride] per axis (stride defaults to 1). attrs: start, limit, stride.
Value slice(const Value& x, Axes start, Axes limit, Axes stride = {}, Loc loc = Loc::current());
/// x[..., start:limit, ...] on one axis.
Value slice_axis(const Value& x, std::int64_t axis, std::int64_t start, std::int64_t limit,
                 Loc loc = Loc::current());
/// Pads with `value`: `low`/`high` elements before/after each axis, `interior` between
/// elements. All counts >= 0. attrs: low, high, interior, value.
Value pad(const Value& x, double value, Axes low, Axes high, Axes interior = {},
          Loc loc = Loc::current());
/// Joins values along `axis`; all other extents and the dtype must match. attrs: axis.
Value concat(const std::vector<Value>& xs, std::int64_t axis, Loc loc = Loc::current());

// ---------------------------------------------------------------------------------------------
// Reductions and contractions

/// Sum over `axes` (distinct). keepdims keeps them as extent 1. IR attrs: axes (sorted,
/// normalised); the IR op always drops the axes, keepdims adds a reshape.
Value reduce_sum(const Value& x, Axes axes, bool keepdims = false, Loc loc = Loc::current());
/// Maximum over `axes`; its gradient is shared equally between tied maxima.
Value reduce_max(const Value& x, Axes axes, bool keepdims = false, Loc loc = Loc::current());
Value reduce_mean(const Value& x, Axes axes, bool keepdims = false, Loc loc = Loc::current());

/// Axis numbers for dot_general (defined with the other attribute views in op_attrs.hpp).
using edifice::DotDims;
/// General batched matrix product (XLA's DotGeneral): sums over the paired contracting axes,
/// pairs the batch axes. Output axes: batch axes (lhs order), then lhs free axes, then rhs free
/// axes, each in their original order. attrs: lhs_contract, rhs_contract, lhs_batch, rhs_batch.
Value dot_general(const Value& lhs, const Value& rhs, DotDims dims, Loc loc = Loc::current());
/// a [..., M, K] times b [K, N] or [..., K, N] with identical leading axes -> [..., M, N].
Value matmul(const Value& a, const Value& b, Loc loc = Loc::current());

// ---------------------------------------------------------------------------------------------
// Indexing

/// out = x indexed along `axis` by `indices` (i32 or i64): shape x[:axis] + indices + x[axis+1:].
/// An index outside [0, x.shape[axis]) is an error at run time. attrs: axis.
Value take(const Value& x, const Value& indices, std::int64_t axis, Loc loc = Loc::current());
/// The transpose of take: a zero tensor of shape updates[:axis] + [dim_size] +
/// updates[axis + indices.rank:] into which each update is added at its index. An index outside
/// [0, dim_size) is an error at run time. inputs: indices, updates. attrs: axis (>= 0), dim_size.
Value scatter_add(const Value& indices, const Value& updates, std::int64_t axis,
                  std::int64_t dim_size, Loc loc = Loc::current());

// ---------------------------------------------------------------------------------------------
// Structured ops

/// exp(x - max) / sum(exp(x - max)) along `axis`. attrs: axis (normalised).
Value softmax(const Value& x, std::int64_t axis = -1, Loc loc = Loc::current());

/// Layer normalisation over the last axis with population variance:
/// y = (x - mean) * rsqrt(var + eps) [* gamma + beta]. gamma and beta have shape [C] (C = last
/// extent). outputs: y, mean, rstd (the last two of shape x[:-1], kept for the gradient).
/// inputs: x or x, gamma, beta. attrs: eps.
std::vector<Value> layer_norm_full(const Value& x, const std::optional<Value>& gamma,
                                   const std::optional<Value>& beta, double eps,
                                   Loc loc = Loc::current());
Value layer_norm(const Value& x, const Value& gamma, const Value& beta, double eps,
                 Loc loc = Loc::current());
/// Without learnable parameters (used for QK layer norm).
Value layer_norm(const Value& x, double eps, Loc loc = Loc::current());
/// inputs: x, mean, rstd, dy [, gamma]. outputs: dx, and with gamma also dgamma, dbeta.
/// `eps` is the forward's, carried so the node states the layer it differentiates (the
/// computation itself uses the saved rstd).
std::vector<Value> layer_norm_backward(const Value& x, const Value& mean, const Value& rstd,
                                       const Value& dy, const std::optional<Value>& gamma,
                                       double eps, Loc loc = Loc::current());

/// Which (query i, key j) pairs may attend. Index predicates, not tensors, so the compiler can
/// skip whole tiles: causal is j <= i; window w (>= 1) is i - w + 1 <= j <= i. Indices are
/// aligned at the start (query i and key i are the same position, as in Edifice), not at the
/// end as in KV-cache decoding. A tensor mask is u8 (nonzero = allowed) of shape [Sq, Sk], or
/// of q's rank [..., Sq, Sk] with leading extents equal to q's or 1.
struct AttentionMask {
  using Kind = MaskKind;  // the IR's one mask enum (op_attrs.hpp)
  Kind kind = Kind::none;
  std::int64_t window = 0;
  Value tensor;

  static AttentionMask none() { return {}; }
  static AttentionMask causal() { return {Kind::causal, 0, {}}; }
  static AttentionMask sliding_window(std::int64_t w) { return {Kind::window, w, {}}; }
  static AttentionMask from_tensor(Value mask) { return {Kind::tensor, 0, std::move(mask)}; }
};

struct AttentionOptions {
  AttentionMask mask;
  /// Multiplies q.k; 0 means 1/sqrt(D).
  double scale = 0.0;
  /// The score given to masked pairs before softmax. Edifice uses -1e9 (a fully masked row then
  /// averages uniformly); -infinity gives NaN for such rows.
  double fill = -1e9;
  /// Query row i sits at absolute position i + query_offset (>= 0) for the causal and window
  /// predicates (causal: j <= i + off; window w: i + off - w + 1 <= j <= i + off), so a slice of
  /// the query rows [off, off + Sq) attends exactly as those rows did. Tensor masks ignore it
  /// (their [Sq, Sk] block is explicit). Stored as the attribute query_offset when nonzero.
  std::int64_t query_offset = 0;
};

/// softmax(mask(q.k^T * scale)) . v over the last two axes; leading axes are batch axes.
/// q [..., Sq, D], k [..., Sk, D], v [..., Sk, Dv] -> out [..., Sq, Dv] and lse [..., Sq] (the
/// row log-sum-exp, kept for the gradient). inputs: q, k, v [, mask]. attrs: mask ("none",
/// "causal", "window", "tensor"), window, scale, fill, and query_offset when nonzero (absent
/// means 0).
std::vector<Value> attention_full(const Value& q, const Value& k, const Value& v,
                                  const AttentionOptions& options, Loc loc = Loc::current());
Value attention(const Value& q, const Value& k, const Value& v,
                const AttentionOptions& options = {}, Loc loc = Loc::current());
/// inputs: q, k, v [, mask], out, lse, dout (attrs as the forward). outputs: dq, dk, dv.
std::vector<Value> attention_backward(const Value& q, const Value& k, const Value& v,
                                      const Value& out, const Value& lse, const Value& dout,
                                      const AttentionOptions& options, Loc loc = Loc::current());

/// One LSTM layer. x [B, S, I], w_ih [I, 4U], w_hh [U, 4U], b [4U], h0 and c0 [B, U]. Gate
/// columns are i, f, g, o in blocks of U:
///   z = x_t.w_ih + h.w_hh + b; i, f, o = sigmoid(z_i, z_f, z_o); g = tanh(z_g)
///   c' = f*c + i*g; h' = o*tanh(c')
/// outputs: h_seq [B, S, U] and c_seq [B, S, U] (the states after each step). A composite: the
/// input projection of every step at once, zx = x.w_ih + b (dot_general and add, [B, S, 4U]),
/// then lstm_scan(zx, w_hh, h0, c0) for the recurrence.
std::vector<Value> lstm(const Value& x, const Value& w_ih, const Value& w_hh, const Value& b,
                        const Value& h0, const Value& c0, Loc loc = Loc::current());
/// The LSTM recurrence run as a scan over time (not unrolled), from precomputed input
/// projections zx [B, S, 4U] (x_t.w_ih + b): z = zx_t + h.w_hh, then the gates as in lstm.
/// w_hh [U, 4U], h0 and c0 [B, U]. outputs: h_seq, c_seq [B, S, U].
std::vector<Value> lstm_scan(const Value& zx, const Value& w_hh, const Value& h0, const Value& c0,
                             Loc loc = Loc::current());
/// Backward through time of lstm_scan. inputs: zx, w_hh, h0, c0, h_seq, c_seq, dh_seq, dc_seq.
/// outputs: dzx [B, S, 4U] (the gradient of the pre-activations z, which is also zx's), dh0,
/// dc0. The weight gradient dw_hh = sum over (b, t) of h_{t-1}^T dz_t is left to a dot_general
/// (see the lstm_scan rule in autodiff.cpp).
std::vector<Value> lstm_scan_backward(const std::vector<Value>& inputs, Loc loc = Loc::current());

}  // namespace edifice::ops

namespace edifice {

/// An operand of the arithmetic operators. Converting a Value to it records the source
/// location of the conversion, which is the user's expression, so `a + b` with mismatched
/// shapes reports the user's line although operators cannot take a defaulted location.
struct Operand {
  Operand(const Value& v, std::source_location l = std::source_location::current())
      : value(v), loc(l) {}
  Value value;
  std::source_location loc;
};

// Operators on values (broadcasting); a double operand becomes a constant of the other's dtype.
Value operator+(const Value& a, Operand b);
Value operator-(const Value& a, Operand b);
Value operator*(const Value& a, Operand b);
Value operator/(const Value& a, Operand b);
Value operator-(Operand a);
Value operator+(Operand a, double b);
Value operator-(Operand a, double b);
Value operator*(Operand a, double b);
Value operator/(Operand a, double b);
Value operator+(double a, Operand b);
Value operator-(double a, Operand b);
Value operator*(double a, Operand b);
Value operator/(double a, Operand b);

}  // namespace edifice
