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

// X(name): one entry per op, in printing order.
#define EDIFICE_FOR_EACH_OP(X)                                                                     \
  /* sources */                                                                                    \
  X(parameter) X(constant) X(iota) X(random_uniform)                                               \
  /* elementwise unary */                                                                          \
  X(neg) X(abs) X(exp) X(log) X(sqrt) X(rsqrt) X(tanh) X(sigmoid) X(erf) X(sin) X(cos) X(relu)      \
  X(gelu)                                                                                          \
  /* elementwise binary (operands of identical shape and dtype) */                                 \
  X(add) X(sub) X(mul) X(div) X(max) X(min) X(pow)                                                 \
  /* comparisons, producing u8 0/1 */                                                              \
  X(eq) X(ne) X(lt) X(le) X(gt) X(ge)                                                              \
  /* other elementwise */                                                                          \
  X(select) X(cast)                                                                                \
  /* layout */                                                                                     \
  X(broadcast_in_dim) X(reshape) X(transpose) X(slice) X(pad) X(concat)                            \
  /* reductions and contractions */                                                                \
  X(reduce_sum) X(reduce_max) X(reduce_mean) X(dot_general)                                        \
  /* indexing */                                                                                   \
  X(take) X(scatter_add)                                                                           \
  /* structured ops with their own gradient rules */                                               \
  X(softmax) X(layer_norm) X(layer_norm_backward) X(attention) X(attention_backward)              \
  X(lstm_scan) X(lstm_scan_backward)

enum class Op : std::uint8_t {
#define EDIFICE_OP_ENUM(name) name,
  EDIFICE_FOR_EACH_OP(EDIFICE_OP_ENUM)
#undef EDIFICE_OP_ENUM
};

/// Every op, in declaration order.
std::span<const Op> all_ops();
/// The op's name as printed ("dot_general").
std::string_view op_name(Op op);

enum class OpKind { source, unary, binary, compare, other };
OpKind op_kind(Op op);

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
