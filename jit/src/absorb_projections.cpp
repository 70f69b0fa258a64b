// Pass: attention over projected keys and values, when few query rows are computed, is
// reassociated so that the key and value projections are never applied to every key. With
// K = H.Wk + bk and V = H.Wv + bv (head h reads columns h*hd .. h*hd + hd of Wk, Wv, bk, bv):
//
//   q_h . K_h^T = [q_h . Wk_h^T, q_h . bk_h] . [H, 1]^T     keys: H with a column of ones
//   P_h . V_h   = (P_h . H) . Wv_h + bv_h                    (each row of P_h sums to 1)
//
// so every head attends over H itself and the projections move to the query side: nh x Sq
// rows instead of Sk. A model's pruned last layer (prune_rows leaves it one query row over 60
// keys) then does about 0.25M multiply-adds instead of the 7.9M of its key and value GEMMs.
// The heads share H, so they are folded into the query axis of one attention; the causal or
// window predicate depends on a query's position, so it becomes an explicit [nh*Sq, Sk] mask
// constant (same allowed pairs, same fill).
//
// Exact in real arithmetic; in floating point the sums are reassociated, so results agree with
// the unabsorbed graph to rounding, not bit for bit (Options::absorb_projections turns it off).
// Applied only where the chain K <- reshape/transpose <- H.W + b feeds nothing but this
// attention (in a training graph the backward reads K and V, so they stay) and where it saves
// at least half of the work.
#include <edifice/core/ops.hpp>

#include <edifice/core/graph_rewrite.hpp>

#include "plan.hpp"

#include <map>
#include <optional>

namespace edifice::jit {
namespace {

using ops::AttentionMask;
using ops::AttentionOptions;
using ops::Axes;
using Uses = UseCounts;

bool is(const Value& v, Op op) {
  return v.node().op() == op;
}

// transpose[0,2,1,3](reshape[B,S,nh,hd](H . W [+ broadcast(b)])), every step used once.
struct Projection {
  Value h;                    // [B, S, Din]
  Value w;                    // [Din, nh*hd]
  std::optional<Value> bias;  // [nh*hd]
};

std::optional<Projection> match_projection(const Value& x, const Uses& uses) {
  if (!is(x, Op::transpose) || x.node().attrs().get_ints("perm") != Axes{0, 2, 1, 3} ||
      use_count(uses, x) != 1)
    return std::nullopt;
  const Value& r = x.node().inputs()[0];
  if (!is(r, Op::reshape) || use_count(uses, r) != 1) return std::nullopt;
  const Value& p = r.node().inputs()[0];
  const Shape& rs = r.shape();
  if (p.rank() != 3 || rs.size() != 4 || rs[0] != p.shape()[0] || rs[1] != p.shape()[1] ||
      rs[2] * rs[3] != p.shape()[2] || use_count(uses, p) != 1)
    return std::nullopt;
  Projection m;
  Value dot = p;
  if (is(p, Op::add)) {
    const Value &a = p.node().inputs()[0], &b = p.node().inputs()[1];
    const bool a_is_dot = is(a, Op::dot_general);
    dot = a_is_dot ? a : b;
    const Value& bias = a_is_dot ? b : a;
    if (!is(dot, Op::dot_general) || !is(bias, Op::broadcast_in_dim) ||
        bias.node().attrs().get_ints("dims") != Axes{2} || bias.node().inputs()[0].rank() != 1 ||
        use_count(uses, dot) != 1)
      return std::nullopt;
    m.bias = bias.node().inputs()[0];
  }
  if (!is(dot, Op::dot_general)) return std::nullopt;
  const DotDims d = DotDims::from(dot.node().attrs());
  if (!d.lhs_batch.empty() || !d.rhs_batch.empty() || d.lhs_contract != Axes{2} ||
      d.rhs_contract != Axes{0})
    return std::nullopt;
  m.h = dot.node().inputs()[0];
  m.w = dot.node().inputs()[1];
  if (m.h.rank() != 3 || m.w.rank() != 2 || !is_floating(m.h.dtype())) return std::nullopt;
  return m;
}

struct Match {
  const Node* attention = nullptr;
  Projection k, v;
};

std::optional<Match> match(const Node& n, const Uses& uses) {
  if (n.op() != Op::attention || n.inputs().size() != 3) return std::nullopt;
  if (AttentionAttrs::from(n.attrs()).mask == MaskKind::tensor) return std::nullopt;
  const Value &q = n.inputs()[0], &k = n.inputs()[1], &v = n.inputs()[2];
  if (q.rank() != 4 || k.rank() != 4 || v.rank() != 4) return std::nullopt;
  auto mk = match_projection(k, uses), mv = match_projection(v, uses);
  if (!mk || !mv) return std::nullopt;
  // Work in multiply-adds: the projections and the attention's two products, against the
  // absorbed form's (keys dk = Din (+1 for the bias's column) wide, values dv = Din).
  const double nh = static_cast<double>(q.shape()[1]), sq = static_cast<double>(q.shape()[2]),
               sk = static_cast<double>(k.shape()[2]), hd = static_cast<double>(q.shape()[3]),
               hdv = static_cast<double>(v.shape()[3]), din = static_cast<double>(mk->h.shape()[2]),
               dk = din + (mk->bias ? 1 : 0), dv = static_cast<double>(mv->h.shape()[2]),
               batch = static_cast<double>(q.shape()[0]);
  if (batch < 1 || sq < 1 || sk < 1 || hd < 1) return std::nullopt;
  const double direct = batch * (sk * nh * (din * hd + dv * hdv) + nh * sq * sk * (hd + hdv));
  // The query-side products run over all nh column blocks (see absorbed()); the transposed
  // key weight is packed once.
  const double absorbed =
      batch * nh * sq * (nh * hd * dk + sk * (dk + dv) + nh * dv * hdv) + nh * hd * dk;
  if (2 * absorbed > direct) return std::nullopt;
  return Match{&n, *mk, *mv};
}

// The allowed pairs of a causal or window mask for query row s (absolute position
// s + offset) of every head, as the explicit mask of the folded [nh*Sq, Sk] attention.
Value folded_mask(const AttentionAttrs& at, std::int64_t heads, std::int64_t sq, std::int64_t sk) {
  Tensor mask(DType::u8, {heads * sq, sk});
  auto* m = mask.data<std::uint8_t>();
  for (std::int64_t h = 0; h < heads; ++h)
    for (std::int64_t s = 0; s < sq; ++s)
      for (std::int64_t j = 0; j < sk; ++j) m[(h * sq + s) * sk + j] = at.allows(s, j) ? 1 : 0;
  return ops::constant(std::move(mask));
}

// x [B, nh, Sq, nh, ...] with zeros wherever the row's head (axis 1) differs from the column
// block's (axis 3): the block-diagonal part.
Value same_head_blocks(const Value& x) {
  const Shape& s = x.shape();
  Value same = ops::eq(ops::iota(s, 1, DType::i32), ops::iota(s, 3, DType::i32));
  return ops::select(same, x, ops::zeros_like(x));
}

std::vector<Value> absorbed(const Node& n, const Match& m) {
  const Value& q = n.inputs()[0];
  const AttentionAttrs at = AttentionAttrs::from(n.attrs());
  const std::int64_t batch = q.shape()[0], heads = q.shape()[1], sq = q.shape()[2],
                     hd = q.shape()[3];
  const std::int64_t sk = n.inputs()[1].shape()[2], hdv = n.inputs()[2].shape()[3];
  const std::int64_t rows = heads * sq;  // per batch entry: (h, s)

  // Query side, every head in one product with the weight read in place (the GEMM reads a
  // column block of the fused QKV weight, transposed or not, without a copy): row (h, s) of
  // the block-diagonal operand holds q[b, h, s] in columns h*hd .. h*hd + hd, zeros elsewhere,
  // so its product with Wk^T is q_h . Wk_h^T. The extra multiply-adds by zero are nh x Sq rows'
  // worth, against the Sk x Din x nh x hd of the key projection. Operands of the attention and
  // the GEMMs are produced in the shapes those kernels read (rank 3, [B, rows, ...]), so no
  // reshape has to be materialised between them.
  Value spread = ops::broadcast_in_dim(q, {batch, heads, sq, heads, hd}, {0, 1, 2, 4});
  Value block_q = ops::reshape(same_head_blocks(spread), {batch, rows, heads * hd});
  Value qk = ops::dot_general(block_q, m.k.w, {.lhs_contract = {2}, .rhs_contract = {1}});
  Value keys = m.k.h;
  if (m.k.bias) {
    Value c = ops::dot_general(block_q, *m.k.bias, {.lhs_contract = {2}, .rhs_contract = {0}});
    qk = ops::concat({qk, ops::reshape(c, {batch, rows, 1})}, 2);
    keys = ops::concat({keys, ops::full({batch, sk, 1}, 1.0, q.dtype())}, 2);
  }
  // Heads fold into the query axis of one attention over the shared keys.
  AttentionOptions options;
  options.scale = at.scale;
  options.fill = at.fill;
  if (at.mask != MaskKind::none)
    options.mask = AttentionMask::from_tensor(folded_mask(at, heads, sq, sk));
  std::vector<Value> attended = ops::attention_full(qk, keys, m.v.h, options);

  // Value side: (P_h . H) . Wv_h for every head in one product (Wv read in place), of which
  // head h keeps column block h; then + bv_h.
  Value y = ops::dot_general(attended[0], m.v.w, {.lhs_contract = {2}, .rhs_contract = {0}});
  Value out =
      ops::reduce_sum(same_head_blocks(ops::reshape(y, {batch, heads, sq, heads, hdv})), {3});
  if (m.v.bias)
    out = ops::add(out, ops::broadcast_in_dim(ops::reshape(*m.v.bias, {heads, hdv}),
                                              {batch, heads, sq, hdv}, {1, 3}));
  return {out, ops::reshape(attended[1], {batch, heads, sq})};
}

}  // namespace

Graph absorb_projections(const Graph& graph) {
  // One attention per round: the values a match refers to lie upstream of its attention, so
  // rewriting that attention alone leaves them valid.
  return rewrite_to_fixpoint(graph, [](const Graph& g) -> std::optional<Graph> {
    const Uses uses = count_uses(g);
    std::optional<Match> found;
    for (const Node* n : g.nodes())
      if ((found = match(*n, uses))) break;
    if (!found) return std::nullopt;
    return rewrite_nodes(
        g, [&](const Node& n, const std::vector<Value>&) -> std::optional<std::vector<Value>> {
          if (&n != found->attention) return std::nullopt;
          return absorbed(n, *found);
        });
  });
}

}  // namespace edifice::jit
