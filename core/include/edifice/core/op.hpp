#pragma once
/// \file
/// The op vocabulary of the graph IR and the attribute bag every node carries.
///
/// Tensor layouts and semantics of each op are documented at its builder in ops.hpp. The list
/// below is the single source of truth: the op-test table, the interpreter and autodiff all
/// switch over it, and the op-test harness fails when an op here has no table entry.

#include <edifice/core/dtype.hpp>
#include <edifice/core/tensor.hpp>

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace edifice {

/// What kind of computation an op is. The kind decides how passes treat it (fusion inlines
/// elementwise and layout ops; row pruning pushes slices through row-wise ops) and how the
/// interpreter and the kernels evaluate it.
enum class OpKind : std::uint8_t {
  source,       ///< no inputs: parameter, constant, iota, random_uniform
  unary,        ///< elementwise, one float operand (neg and abs: any signed type)
  binary,       ///< elementwise, two operands of identical shape and dtype
  compare,      ///< elementwise, two operands, u8 0/1 result
  select,       ///< elementwise select(pred, on_true, on_false)
  cast,         ///< elementwise dtype conversion
  layout,       ///< moves or repeats elements: broadcast, reshape, transpose, slice, pad, concat
  reduction,    ///< reduce_* over the "axes" attribute (dropped from the shape)
  contraction,  ///< dot_general
  indexing,     ///< take (gather) and scatter_add
  structured,   ///< ops kept whole, with their own gradient rules and kernels
};

// clang-format off
// X(name, kind): one entry per op, in printing order. The single source of truth for the op
// list and each op's kind: op_kind() and the is_* predicates below are generated from it.
#define EDIFICE_FOR_EACH_OP(X)                                                                     \
  X(parameter, source) X(constant, source) X(iota, source) X(random_uniform, source)               \
  X(neg, unary) X(abs, unary) X(exp, unary) X(log, unary) X(sqrt, unary) X(rsqrt, unary)           \
  X(tanh, unary) X(sigmoid, unary) X(erf, unary) X(sin, unary) X(cos, unary) X(relu, unary)        \
  X(gelu, unary)                                                                                   \
  X(add, binary) X(sub, binary) X(mul, binary) X(div, binary) X(max, binary) X(min, binary)        \
  X(pow, binary)                                                                                   \
  X(eq, compare) X(ne, compare) X(lt, compare) X(le, compare) X(gt, compare) X(ge, compare)        \
  X(select, select) X(cast, cast)                                                                  \
  X(broadcast_in_dim, layout) X(reshape, layout) X(transpose, layout) X(slice, layout)             \
  X(pad, layout) X(concat, layout)                                                                 \
  X(reduce_sum, reduction) X(reduce_max, reduction) X(reduce_mean, reduction)                      \
  X(dot_general, contraction)                                                                      \
  X(take, indexing) X(scatter_add, indexing)                                                       \
  X(softmax, structured) X(layer_norm, structured) X(layer_norm_backward, structured)              \
  X(attention, structured) X(attention_backward, structured) X(lstm_scan, structured)              \
  X(lstm_scan_backward, structured)
// clang-format on

enum class Op : std::uint8_t {
#define EDIFICE_OP_ENUM(name, kind) name,
  EDIFICE_FOR_EACH_OP(EDIFICE_OP_ENUM)
#undef EDIFICE_OP_ENUM
};

/// Every op, in declaration order.
std::span<const Op> all_ops();
/// The op's name as printed ("dot_general").
std::string_view op_name(Op op);
/// The op's kind, from the op list.
OpKind op_kind(Op op);

/// Computes each output element from the same element of its operands (unary, binary,
/// compare, select, cast): fusion inlines these, row pruning slices through them.
bool is_elementwise(Op op);
/// Moves or repeats elements without arithmetic (the layout kind).
bool is_layout(Op op);
/// Pure index remaps: each output element is one input element (broadcast, reshape,
/// transpose, slice); pad and concat also choose between inputs.
bool is_index_remap(Op op);

/// A value an attribute can hold.
using AttrValue =
    std::variant<std::int64_t, double, std::vector<std::int64_t>, std::string, DType, Tensor>;

/// Named, immutable-once-built attributes of a node (axes, shapes, epsilon, mask kind...).
/// Kept sorted by key so that printing and hashing are canonical. Asking for a missing key or
/// the wrong type is a library bug and throws edifice::Error naming the key.
class Attributes {
 public:
  Attributes() = default;
  Attributes(std::initializer_list<std::pair<std::string, AttrValue>> items);

  Attributes& set(std::string key, AttrValue value);
  bool has(std::string_view key) const;

  std::int64_t get_int(std::string_view key) const;
  double get_float(std::string_view key) const;
  const std::vector<std::int64_t>& get_ints(std::string_view key) const;
  const std::string& get_string(std::string_view key) const;
  DType get_dtype(std::string_view key) const;
  const Tensor& get_tensor(std::string_view key) const;

  const std::vector<std::pair<std::string, AttrValue>>& items() const { return items_; }

  /// "axes=[0,1] keepdims=0"; tensors print abbreviated.
  std::string to_string() const;
  /// Hash over keys and values (tensor attributes hash their bytes).
  std::uint64_t hash() const;
  bool operator==(const Attributes& other) const;

 private:
  const AttrValue& find(std::string_view key) const;
  std::vector<std::pair<std::string, AttrValue>> items_;
};

}  // namespace edifice
