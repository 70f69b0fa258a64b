// Pass: gives every dot_general operand a layout the GEMM kernel reads directly. Dots that
// already fit (see gemm_layout.hpp) are left alone, so the common cases (x.W, x.W^T, x^T.dy,
// batched q.k^T) need no copy; the rest get explicit transposes of their operands into
// [batch..., M..., K...] and [batch..., K..., N...].
#include <edifice/core/ops.hpp>

#include <edifice/core/graph_rewrite.hpp>
#include "gemm_layout.hpp"

#include "plan.hpp"

#include <optional>

namespace edifice::jit {
namespace {

using Axes = std::vector<std::int64_t>;

Axes iota_axes(std::size_t from, std::size_t count) {
  Axes r;
  for (std::size_t i = 0; i < count; ++i) r.push_back(static_cast<std::int64_t>(from + i));
  return r;
}

std::vector<Value> canonical_dot(const Node& n, const Value& lhs, const Value& rhs) {
  const DotDims d = DotDims::from(n.attrs());
  const Axes &lc = d.lhs_contract, &rc = d.rhs_contract, &lb = d.lhs_batch, &rb = d.rhs_batch;
  const Axes fl = d.lhs_free(lhs.rank()), fr = d.rhs_free(rhs.rank());
  // lhs -> [batch, free, contract]; rhs -> [batch, contract (paired order), free].
  Axes lperm = lb, rperm = rb;
  lperm.insert(lperm.end(), fl.begin(), fl.end());
  lperm.insert(lperm.end(), lc.begin(), lc.end());
  rperm.insert(rperm.end(), rc.begin(), rc.end());
  rperm.insert(rperm.end(), fr.begin(), fr.end());
  const std::size_t nb = lb.size(), nc = lc.size();
  Value l = ops::transpose(lhs, lperm, n.location());
  Value r = ops::transpose(rhs, rperm, n.location());
  return {ops::dot_general(
      l, r, {iota_axes(nb + fl.size(), nc), iota_axes(nb, nc), iota_axes(0, nb), iota_axes(0, nb)},
      n.location())};
}

}  // namespace

Graph canonicalize_dot(const Graph& graph) {
  return rewrite_nodes(
      graph,
      [](const Node& n, const std::vector<Value>& inputs) -> std::optional<std::vector<Value>> {
        if (n.op() != Op::dot_general || try_gemm_layout(n)) return std::nullopt;
        return canonical_dot(n, inputs[0], inputs[1]);
      });
}

}  // namespace edifice::jit
