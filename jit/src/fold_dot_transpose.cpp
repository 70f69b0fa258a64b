// Pass: folds a transpose that swaps a dot's free-axis groups into the dot, by swapping its
// operands: transpose(dot(a, b)) = dot(b, a) when the transpose moves b's free axes before
// a's (batch axes staying first). Autodiff produces this for every weight gradient, dW =
// transpose(dot(dy, x)) (JAX's rule, which leaves the fold to the compiler): without the fold
// each optimizer kernel reads its gradient with a strided gather, and the input projection's
// gradient is the poorly shaped 256 x 1920 x 1024 product instead of 1024 x 1920 x 256 (B read
// in place). Every element is the same sum over k in the same order, so values are unchanged.
#include <edifice/core/graph_rewrite.hpp>
#include <edifice/core/op_attrs.hpp>
#include <edifice/core/ops.hpp>

#include "gemm_layout.hpp"
#include "plan.hpp"

#include <optional>

namespace edifice::jit {
namespace {

using Axes = std::vector<std::int64_t>;

// The permutation that turns dot(a, b)'s [batch, a free, b free] into [batch, b free, a free].
Axes swapping_perm(std::size_t batch, std::size_t a_free, std::size_t b_free) {
  Axes perm;
  for (std::size_t i = 0; i < batch; ++i) perm.push_back(static_cast<std::int64_t>(i));
  for (std::size_t i = 0; i < b_free; ++i)
    perm.push_back(static_cast<std::int64_t>(batch + a_free + i));
  for (std::size_t i = 0; i < a_free; ++i) perm.push_back(static_cast<std::int64_t>(batch + i));
  return perm;
}

}  // namespace

Graph fold_dot_transpose(const Graph& graph) {
  const UseCounts uses = count_uses(graph);
  return rewrite_nodes(
      graph,
      [&](const Node& n, const std::vector<Value>& inputs) -> std::optional<std::vector<Value>> {
        if (n.op() != Op::transpose || n.inputs()[0].node().op() != Op::dot_general) {
          return std::nullopt;
        }
        // A dot read elsewhere too would be computed twice.
        if (use_count(uses, n.inputs()[0]) != 1) return std::nullopt;
        const Node& dot = inputs[0].node();
        const DotDims d = DotDims::from(dot.attrs());
        const Value& a = dot.inputs()[0];
        const Value& b = dot.inputs()[1];
        const std::size_t a_free = d.lhs_free(a.rank()).size();
        const std::size_t b_free = d.rhs_free(b.rank()).size();
        if (n.attrs().get_ints("perm") != swapping_perm(d.lhs_batch.size(), a_free, b_free))
          return std::nullopt;
        Value swapped = ops::dot_general(
            b, a, {d.rhs_contract, d.lhs_contract, d.rhs_batch, d.lhs_batch}, n.location());
        // Only where the GEMM reads the swapped operands in place (else canonicalize_dot
        // would add the copies the fold saves).
        if (!try_gemm_layout(swapped.node())) return std::nullopt;
        return std::vector<Value>{swapped};
      });
}

}  // namespace edifice::jit
