#pragma once
// The node attributes the code generator reads, decoded in one place: the attention mask and
// its parameters, and the axis groups of a dot_general. Kernels take these views, never the
// attribute names. Free of LLVM (gemm_layout.cpp reads the dot's axes too).

#include <edifice/core/error.hpp>
#include <edifice/core/graph.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace edifice::jit {

/// Which keys a query of an attention node may attend.
enum class Mask { none, causal, window, tensor };

/// The attributes of an attention or attention_backward node.
struct AttentionAttrs {
  Mask mask = Mask::none;
  std::int64_t window = 0;        ///< keys per query under Mask::window
  std::int64_t query_offset = 0;  ///< query row i sits at position i + query_offset
  double scale = 0;               ///< 0: 1 / sqrt(head size)
  double fill = 0;                ///< the score of a masked pair
};

inline AttentionAttrs attention_attrs(const Node& n) {
  const Attributes& at = n.attrs();
  AttentionAttrs a;
  const std::string& m = at.get_string("mask");
  if (m == "none")
    a.mask = Mask::none;
  else if (m == "causal")
    a.mask = Mask::causal;
  else if (m == "window")
    a.mask = Mask::window;
  else if (m == "tensor")
    a.mask = Mask::tensor;
  else
    fail("jit: unknown attention mask kind \"{}\"", m);
  if (a.mask == Mask::window) a.window = at.get_int("window");
  if (at.has("query_offset")) a.query_offset = at.get_int("query_offset");
  a.fill = at.get_float("fill");
  a.scale = at.get_float("scale");
  return a;
}

/// The axis groups of a dot_general node (axes of the left and right operands).
struct DotDims {
  const std::vector<std::int64_t>& lhs_contract;
  const std::vector<std::int64_t>& rhs_contract;
  const std::vector<std::int64_t>& lhs_batch;
  const std::vector<std::int64_t>& rhs_batch;
};

inline DotDims dot_dims(const Node& dot) {
  const Attributes& at = dot.attrs();
  return {at.get_ints("lhs_contract"), at.get_ints("rhs_contract"), at.get_ints("lhs_batch"),
          at.get_ints("rhs_batch")};
}

}  // namespace edifice::jit
