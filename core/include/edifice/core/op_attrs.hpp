#pragma once
/// \file
/// Typed views of the attribute bags of the ops whose attributes are read in several places
/// (shape inference, the interpreter, autodiff, the compiler's passes and kernels). Each view
/// is decoded once from a node's Attributes (`from`) and encoded back (`to_attributes`, the
/// canonical bag the builders in ops.hpp store), so attribute names and defaults live here and
/// nowhere else.

#include <edifice/core/op.hpp>

#include <cstdint>
#include <string_view>
#include <vector>

namespace edifice {

/// Which pairs (query row i, key j) an attention may use. The predicates are index rules the
/// compiler can skip whole tiles with; `tensor` is an explicit u8 [.., Sq, Sk] input.
enum class MaskKind : std::uint8_t {
  none,    ///< every pair
  causal,  ///< j <= i + query_offset
  window,  ///< i + query_offset - window < j <= i + query_offset
  tensor,  ///< the mask input (nonzero = allowed), the attention's fourth input
};

/// "none", "causal", "window", "tensor" (the attribute value and what printing shows).
std::string_view mask_kind_name(MaskKind kind);
/// The inverse of mask_kind_name; an unknown name throws edifice::Error listing the valid ones.
MaskKind parse_mask_kind(std::string_view name);

/// attention and attention_backward. Attributes: mask (string), window, scale, fill, and
/// query_offset only when nonzero (absent means 0).
struct AttentionAttrs {
  MaskKind mask = MaskKind::none;
  std::int64_t window = 0;        ///< the window predicate's width (>= 1)
  std::int64_t query_offset = 0;  ///< query row i sits at position i + query_offset
  double scale = 0;               ///< multiplies q.k (the builders store 1/sqrt(D) for 0)
  double fill = -1e9;             ///< the score of a disallowed pair, before softmax

  static AttentionAttrs from(const Attributes& attrs);
  Attributes to_attributes() const;

  /// Causal or window: an index rule (query_offset applies), no mask input.
  bool is_predicate() const { return mask == MaskKind::causal || mask == MaskKind::window; }
  /// Whether query row `i` may attend key `j` under the none/causal/window rule (a tensor
  /// mask's answer is in its input, not here).
  bool allows(std::int64_t i, std::int64_t j) const {
    const std::int64_t pos = i + query_offset;
    if (mask == MaskKind::causal) return j <= pos;
    if (mask == MaskKind::window) return j <= pos && pos - j < window;
    return true;
  }
};

/// dot_general's axis numbers (XLA's DotGeneral): the paired contracting and batch axes.
/// Attributes: lhs_contract, rhs_contract, lhs_batch, rhs_batch.
struct DotDims {
  std::vector<std::int64_t> lhs_contract, rhs_contract, lhs_batch, rhs_batch;

  static DotDims from(const Attributes& attrs);
  Attributes to_attributes() const;

  /// The lhs (rhs) axes that are neither contracted nor batch axes, in order: after the batch
  /// axes, the result's axes are the lhs free axes, then the rhs free axes.
  std::vector<std::int64_t> lhs_free(std::int64_t lhs_rank) const;
  std::vector<std::int64_t> rhs_free(std::int64_t rhs_rank) const;
};

/// slice: element i of axis a of the result is element start[a] + i * stride[a] of the
/// input, for start[a] + i * stride[a] < limit[a]. Attributes: start, limit, stride (all ones
/// when absent).
struct SliceSpec {
  std::vector<std::int64_t> start, limit, stride;

  static SliceSpec from(const Attributes& attrs);
  Attributes to_attributes() const;
};

}  // namespace edifice
