// Pass: computes only the rows a slice keeps. A model that returns one position (take_index:
// reshape(slice(x))) needs only that row of its last layer's query path; keys and values still
// need every row. The pass rewrites slice(f(x)) into f'(slice(x)), to a fixpoint, for every f
// that is row-wise along the sliced axes, when every use of every output of f is the same
// slice (so the full f becomes dead and is dropped), or, for single-output ops, when every use
// is one of several disjoint slices that leave some elements unread (one copy of f per
// slice: the fused q/k/v projection whose q part keeps one row). Ops handled:
//  - elementwise ops (unary, binary, compare, select, cast): each operand sliced alike (an
//    operand axis of extent 1 under a wider output axis is left whole);
//  - broadcast_in_dim: operand axes that map to sliced output axes are sliced, broadcast ones
//    are not; the output shape shrinks;
//  - reshape, when the sliced axes lie in the leading axes both shapes share ([B,S,H*D] <->
//    [B,S,H,D]);
//  - transpose (the slice is permuted), concat along an unsliced axis, reductions over
//    unsliced axes;
//  - layer_norm over the last axis and softmax over an unsliced axis (layer_norm's mean and
//    rstd must be unused or sliced alike);
//  - dot_general: output batch axes slice both operands, free axes slice their operand;
//  - attention along batch axes and the query axis (stride 1): q is sliced, k and v are not,
//    a tensor mask's query axis is sliced, and causal/window masks get query_offset += start;
//    lse must be unused or sliced alike.
// A slice of a slice is composed, a slice that keeps everything is removed. Anything else
// (parameters, constants, pad, gathers, backward ops, lstm, ...) stops the slice.
#include <edifice/core/graph.hpp>
#include <edifice/core/graph_rewrite.hpp>
#include <edifice/core/op_attrs.hpp>

#include "plan.hpp"

#include <algorithm>
#include <map>
#include <optional>
#include <set>
#include <tuple>

namespace edifice::jit {
namespace {

using Key = ValueKey;

// The elements [start, start + count * stride) step stride of one axis.
struct Range {
  std::int64_t start = 0, count = 0, stride = 1;
  bool operator==(const Range&) const = default;
};
using Spec = std::vector<Range>;  // one range per axis

Range full(std::int64_t extent) {
  return {0, extent, 1};
}
bool is_full(const Range& r, std::int64_t extent) {
  return r.start == 0 && r.count == extent && (r.stride == 1 || extent <= 1);
}
bool is_full(const Spec& s, const Shape& shape) {
  for (std::size_t a = 0; a < s.size(); ++a)
    if (!is_full(s[a], shape[a])) return false;
  return true;
}
Range normalized(Range r) {
  if (r.count <= 1) r.stride = 1;
  if (r.count == 0) r.start = 0;
  return r;
}
Spec full_spec(const Shape& shape) {
  Spec s;
  for (auto n : shape) s.push_back(full(n));
  return s;
}
Shape sliced_shape(const Spec& s) {
  Shape out;
  for (const Range& r : s) out.push_back(r.count);
  return out;
}

Spec spec_of_slice(const Node& n) {
  const auto [start, limit, stride] = SliceSpec::from(n.attrs());
  Spec s;
  for (std::size_t a = 0; a < start.size(); ++a)
    s.push_back(
        normalized({start[a], (limit[a] - start[a] + stride[a] - 1) / stride[a], stride[a]}));
  return s;
}

// inner then outer: element t of the result is inner element outer.start + t * outer.stride.
Spec compose(const Spec& inner, const Spec& outer) {
  Spec s;
  for (std::size_t a = 0; a < inner.size(); ++a)
    s.push_back(normalized({inner[a].start + outer[a].start * inner[a].stride, outer[a].count,
                            inner[a].stride * outer[a].stride}));
  return s;
}

Value make_slice(const Value& x, const Spec& s, const std::source_location& loc) {
  if (is_full(s, x.shape())) return x;
  std::vector<std::int64_t> start, limit, stride;
  for (const Range& r : s) {
    start.push_back(r.start);
    limit.push_back(r.count == 0 ? r.start : r.start + (r.count - 1) * r.stride + 1);
    stride.push_back(r.stride);
  }
  return make_node(Op::slice, {x}, SliceSpec{start, limit, stride}.to_attributes(), loc)[0];
}

// Ops whose outputs after the first are rows of the first (its shape without the last axis).
bool has_row_outputs(Op op) {
  return op == Op::layer_norm || op == Op::attention;
}

// The slice of output 0 that gives slice `sk` of output k, if f is one of the ops handled.
std::optional<Spec> lift(const Node& f, int k, const Spec& sk) {
  if (k == 0) return sk;
  if (!has_row_outputs(f.op())) return std::nullopt;
  Spec s0 = sk;
  s0.push_back(full(f.outputs()[0].shape.back()));
  return s0;
}

// How to compute f's outputs sliced by s0: each input's slice (nullopt: the whole input) and
// the new attributes.
struct Pushed {
  std::vector<std::optional<Spec>> inputs;
  Attributes attrs;
};

// Input slice for an operand whose axes align with the output's (extent-1 axes broadcast).
std::optional<Spec> aligned(const Value& in, const Shape& out, const Spec& s0) {
  if (in.rank() != static_cast<std::int64_t>(out.size())) return std::nullopt;
  Spec s;
  for (std::size_t a = 0; a < out.size(); ++a) {
    const std::int64_t n = in.shape()[a];
    if (n == out[a])
      s.push_back(s0[a]);
    else if (n == 1)
      s.push_back(full(1));
    else
      return std::nullopt;
  }
  return s;
}

// Elementwise ops: every operand is sliced as the output (extent-1 axes broadcast).
std::optional<Pushed> push_elementwise(const Node& f, const Spec& s0) {
  Pushed p{{}, f.attrs()};
  for (const Value& in : f.inputs()) {
    auto s = aligned(in, f.outputs()[0].shape, s0);
    if (!s) return std::nullopt;
    p.inputs.push_back(s);
  }
  return p;
}

// Layout ops: the slice mapped back through the remap, where it stays a slice.
std::optional<Pushed> push_layout(const Node& f, const Spec& s0) {
  const Shape& out = f.outputs()[0].shape;
  const auto rank = static_cast<std::int64_t>(out.size());
  const Attributes& at = f.attrs();
  Pushed p{{}, at};
  auto sliced = [&](std::int64_t axis) { return !is_full(s0[axis], out[axis]); };
  switch (f.op()) {
    case Op::broadcast_in_dim: {
      const Value& x = f.inputs()[0];
      const auto& dims = at.get_ints("dims");
      Spec s;
      for (std::int64_t i = 0; i < x.rank(); ++i) {
        const std::int64_t n = x.shape()[i], o = dims[i];
        s.push_back(n == out[o] ? s0[o] : full(n));
      }
      p.inputs.push_back(s);
      p.attrs.set("shape", sliced_shape(s0));
      return p;
    }
    case Op::reshape: {
      const Shape& in = f.inputs()[0].shape();
      std::int64_t prefix = 0;  // leading axes both shapes share
      while (prefix < rank && prefix < static_cast<std::int64_t>(in.size()) &&
             in[prefix] == out[prefix])
        ++prefix;
      for (std::int64_t a = prefix; a < rank; ++a)
        if (sliced(a)) return std::nullopt;
      Spec s = full_spec(in);
      for (std::int64_t a = 0; a < prefix; ++a) s[a] = s0[a];
      p.inputs.push_back(s);
      p.attrs.set("shape", sliced_shape(s0));
      return p;
    }
    case Op::transpose: {
      const auto& perm = at.get_ints("perm");
      Spec s(perm.size());
      for (std::size_t i = 0; i < perm.size(); ++i) s[perm[i]] = s0[i];
      p.inputs.push_back(s);
      return p;
    }
    case Op::concat: {
      const std::int64_t axis = at.get_int("axis");
      if (sliced(axis)) return std::nullopt;
      for (const Value& in : f.inputs()) {
        Spec s = s0;
        s[axis] = full(in.shape()[axis]);
        p.inputs.push_back(s);
      }
      return p;
    }
    default:
      return std::nullopt;
  }
}

// Reductions: the kept axes sliced as the output, the reduced axes whole.
Pushed push_reduction(const Node& f, const Spec& s0) {
  const Value& x = f.inputs()[0];
  const auto& axes = f.attrs().get_ints("axes");
  std::set<std::int64_t> reduced(axes.begin(), axes.end());
  Spec s;
  std::size_t o = 0;
  for (std::int64_t a = 0; a < x.rank(); ++a)
    s.push_back(reduced.count(a) ? full(x.shape()[a]) : s0[o++]);
  return {{s}, f.attrs()};
}

// dot_general: batch axes slice both operands, free axes the operand they come from.
Pushed push_dot(const Node& f, const Spec& s0) {
  const Value &lhs = f.inputs()[0], &rhs = f.inputs()[1];
  const DotDims d = DotDims::from(f.attrs());
  Spec sl = full_spec(lhs.shape()), sr = full_spec(rhs.shape());
  std::size_t o = 0;
  for (std::size_t i = 0; i < d.lhs_batch.size(); ++i, ++o)
    sl[d.lhs_batch[i]] = sr[d.rhs_batch[i]] = s0[o];
  for (auto a : d.lhs_free(lhs.rank())) sl[a] = s0[o++];
  for (auto a : d.rhs_free(rhs.rank())) sr[a] = s0[o++];
  return {{sl, sr}, f.attrs()};
}

// attention out [..., Sq, Dv]: batch axes and a contiguous run of query rows; every key stays.
// A predicate mask keeps the rows' positions through query_offset, a tensor mask is sliced.
std::optional<Pushed> push_attention(const Node& f, const Spec& s0) {
  const Shape& out = f.outputs()[0].shape;
  const auto rank = static_cast<std::int64_t>(out.size());
  if (!is_full(s0[rank - 1], out[rank - 1])) return std::nullopt;
  const Range rows = s0[rank - 2];
  if (rows.stride != 1) return std::nullopt;
  Pushed p{{}, f.attrs()};
  const Value &q = f.inputs()[0], &k = f.inputs()[1];
  Spec sq = s0, skv = full_spec(k.shape());
  sq[rank - 1] = full(q.shape().back());
  for (std::int64_t a = 0; a < rank - 2; ++a) skv[a] = s0[a];
  p.inputs = {sq, skv, skv};
  p.inputs[2]->back() = full(f.inputs()[2].shape().back());
  const AttentionAttrs at = AttentionAttrs::from(f.attrs());
  if (at.mask == MaskKind::tensor) {
    const Value& m = f.inputs()[3];
    const std::int64_t mr = m.rank();
    Spec sm = full_spec(m.shape());
    for (std::int64_t a = 0; a < mr - 2; ++a)
      if (m.shape()[a] != 1) sm[a] = s0[rank - mr + a];
    sm[mr - 2] = m.shape()[mr - 2] == out[rank - 2] ? rows : full(m.shape()[mr - 2]);
    p.inputs.push_back(sm);
  } else if (at.is_predicate() && rows.start != 0) {
    p.attrs.set("query_offset", at.query_offset + rows.start);
  }
  return p;
}

// How to compute f's outputs sliced by s0, if f is a row-wise op the slice can pass through.
std::optional<Pushed> push_through(const Node& f, const Spec& s0) {
  const Shape& out = f.outputs()[0].shape;
  const auto rank = static_cast<std::int64_t>(out.size());
  if (is_elementwise(f.op())) return push_elementwise(f, s0);
  switch (op_kind(f.op())) {
    case OpKind::layout:
      return push_layout(f, s0);
    case OpKind::reduction:
      return push_reduction(f, s0);
    case OpKind::contraction:
      return push_dot(f, s0);
    default:
      break;
  }
  switch (f.op()) {
    case Op::softmax:
      if (!is_full(s0[f.attrs().get_int("axis")], out[f.attrs().get_int("axis")]))
        return std::nullopt;
      return Pushed{{s0}, f.attrs()};
    case Op::layer_norm: {
      if (!is_full(s0[rank - 1], out[rank - 1])) return std::nullopt;
      Pushed p{{s0}, f.attrs()};
      for (std::size_t i = 1; i < f.inputs().size(); ++i) p.inputs.push_back(std::nullopt);
      return p;
    }
    case Op::attention:
      return push_attention(f, s0);
    default:
      return std::nullopt;
  }
}

// Whether one copy of a producer per slice computes less than the whole: the slices are
// pairwise disjoint (their index ranges are apart on some axis) and together smaller.
bool split_pays(const std::vector<Spec>& specs, const Shape& shape) {
  auto size = [](const Spec& s) {
    std::int64_t n = 1;
    for (const Range& r : s) n *= r.count;
    return n;
  };
  auto apart = [](const Range& a, const Range& b) {
    if (a.count == 0 || b.count == 0) return true;
    const std::int64_t a_last = a.start + (a.count - 1) * a.stride;
    const std::int64_t b_last = b.start + (b.count - 1) * b.stride;
    return a_last < b.start || b_last < a.start;
  };
  std::int64_t total = 0;
  for (std::size_t i = 0; i < specs.size(); ++i) {
    total += size(specs[i]);
    for (std::size_t j = 0; j < i; ++j) {
      bool disjoint = false;
      for (std::size_t a = 0; a < shape.size() && !disjoint; ++a)
        disjoint = apart(specs[i][a], specs[j][a]);
      if (!disjoint) return false;
    }
  }
  return total < shape_numel(shape);
}

// One rewrite, if any applies: the values to replace.
std::optional<std::map<Key, Value>> find_rewrite(const Graph& g) {
  const std::vector<const Node*> order = g.nodes();
  const Consumers consumers = consumers_of(g);
  std::set<Key> outputs;
  for (const Value& v : g.outputs()) outputs.insert(key_of(v));

  for (const Node* s : order) {
    if (s->op() != Op::slice) continue;
    const Value& v = s->inputs()[0];
    const Node& f = v.node();
    const Spec sk = spec_of_slice(*s);
    // Empty slices are left alone (no zero-extent kernels are made).
    if (std::any_of(sk.begin(), sk.end(), [](const Range& r) { return r.count == 0; })) continue;
    if (is_full(sk, v.shape())) return std::map<Key, Value>{{key_of(s->output(0)), v}};
    if (f.op() == Op::slice) {
      std::optional<LayerScope> scope;
      enter_layer_of(scope, *s);
      return std::map<Key, Value>{
          {key_of(s->output(0)),
           make_slice(f.inputs()[0], compose(spec_of_slice(f), sk), s->location())}};
    }
    if (!lift(f, v.index(), sk)) continue;
    // Every use of every output of f must be a slice. One slice (or the same slice of a row
    // output): f is computed for it alone. Several distinct slices of a single-output f that
    // are disjoint and leave elements unread (the q, k and v columns of a fused projection
    // once q keeps one row): one copy of f per slice.
    std::vector<Spec> specs;  // distinct slices, lifted to output 0
    std::vector<std::tuple<const Node*, int, std::size_t>> uses;  // slice, output, spec
    bool all_sliced = true;
    for (int k = 0; k < f.num_outputs() && all_sliced; ++k) {
      if (outputs.count({&f, k})) all_sliced = false;
      auto it = consumers.find({&f, k});
      if (it == consumers.end()) continue;
      for (const Node* c : it->second) {
        std::optional<Spec> lifted;
        if (c->op() == Op::slice) lifted = lift(f, k, spec_of_slice(*c));
        if (!lifted) {
          all_sliced = false;
          break;
        }
        auto at = std::find(specs.begin(), specs.end(), *lifted);
        uses.push_back({c, k, static_cast<std::size_t>(at - specs.begin())});
        if (at == specs.end()) specs.push_back(*lifted);
      }
    }
    if (!all_sliced || specs.empty()) continue;
    if (specs.size() > 1 && (f.num_outputs() != 1 || !split_pays(specs, f.outputs()[0].shape)))
      continue;
    std::vector<Pushed> pushed;
    for (const Spec& spec : specs)
      if (auto p = push_through(f, spec)) pushed.push_back(std::move(*p));
    if (pushed.size() != specs.size()) continue;
    std::optional<LayerScope> scope;
    enter_layer_of(scope, f);
    std::vector<std::vector<Value>> outs;
    for (const Pushed& p : pushed) {
      std::vector<Value> inputs;
      for (std::size_t i = 0; i < f.inputs().size(); ++i) {
        const Value& in = f.inputs()[i];
        inputs.push_back(p.inputs[i] ? make_slice(in, *p.inputs[i], f.location()) : in);
      }
      outs.push_back(make_node(f.op(), inputs, p.attrs, f.location()));
    }
    std::map<Key, Value> repl;
    for (const auto& [c, k, i] : uses) repl[key_of(c->output(0))] = outs[i][k];
    return repl;
  }
  return std::nullopt;
}

}  // namespace

Graph prune_rows(const Graph& graph) {
  return rewrite_to_fixpoint(graph, [](const Graph& g) -> std::optional<Graph> {
    if (auto repl = find_rewrite(g)) return replace_values(g, *repl);
    return std::nullopt;
  });
}

}  // namespace edifice::jit
