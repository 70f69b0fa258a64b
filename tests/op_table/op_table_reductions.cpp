// Op-table entries: reductions, dot_general and the indexing ops (take, scatter_add).
#include "op_table_harness.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

namespace edifice::optable {
namespace {

enum class Reduce { sum, max, mean };

// Reduces `axes` of x (negative allowed); keepdims keeps them with extent 1.
Arr reduce_ref(const Arr& x, Reduce kind, Index axes, bool keepdims) {
  for (std::int64_t& a : axes)
    if (a < 0) a += x.rank();
  auto reduced = [&](std::size_t a) {
    return std::find(axes.begin(), axes.end(), static_cast<std::int64_t>(a)) != axes.end();
  };
  Shape s;
  for (std::size_t a = 0; a < x.shape.size(); ++a)
    if (!reduced(a))
      s.push_back(x.shape[a]);
    else if (keepdims)
      s.push_back(1);
  double init = kind == Reduce::max ? -std::numeric_limits<double>::infinity() : 0.0;
  Arr out(x.dtype, s, std::vector<double>(static_cast<std::size_t>(Arr(x.dtype, s).numel()), init));
  std::int64_t count = 1;
  for (std::int64_t a : axes) count *= x.shape[static_cast<std::size_t>(a)];
  for_each_index(x.shape, [&](const Index& i) {
    Index o;
    for (std::size_t a = 0; a < i.size(); ++a)
      if (!reduced(a))
        o.push_back(i[a]);
      else if (keepdims)
        o.push_back(0);
    double& r = out.at(o);
    r = kind == Reduce::max ? std::max(r, x.at(i)) : r + x.at(i);
  });
  if (kind == Reduce::mean)
    for (double& r : out.v) r /= static_cast<double>(count);
  return out;
}

Sample reduce_sample(Op op, std::string label, In x, Index axes, bool keepdims = false) {
  Reduce kind = op == Op::reduce_sum   ? Reduce::sum
                : op == Op::reduce_max ? Reduce::max
                                       : Reduce::mean;
  Sample s(
      std::move(label), {std::move(x)},
      [op, axes, keepdims](const Vals& in, DType) {
        switch (op) {
          case Op::reduce_sum:
            return Vals{ops::reduce_sum(in[0], axes, keepdims)};
          case Op::reduce_max:
            return Vals{ops::reduce_max(in[0], axes, keepdims)};
          default:
            return Vals{ops::reduce_mean(in[0], axes, keepdims)};
        }
      },
      [kind, axes, keepdims](const Arrs& in, DType) {
        return Arrs{reduce_ref(in[0], kind, axes, keepdims)};
      });
  return std::move(s).f32_tol(kF32Reduction);
}

OpEntry reduce_entry(Op op) {
  // reduce_max: distinct values, so no ties inside a reduced group (the gradient is split
  // between tied maxima, which finite differences cannot see).
  Domain d = op == Op::reduce_max ? distinct() : any();
  OpEntry e{op, {}, {}, {}};
  e.samples.push_back(reduce_sample(op, "[3,5] axis 1", fin({3, 5}, d), {1}));
  e.samples.push_back(reduce_sample(op, "[3,5] axis 0", fin({3, 5}, d), {0}));
  e.samples.push_back(reduce_sample(op, "[3,5] all axes to rank 0", fin({3, 5}, d), {0, 1}));
  e.samples.push_back(
      reduce_sample(op, "[2,3,4] axes 0,2 keepdims", fin({2, 3, 4}, d), {0, 2}, true));
  e.samples.push_back(reduce_sample(op, "[2,3,4] axis -1", fin({2, 3, 4}, d), {-1}));
  e.samples.push_back(reduce_sample(op, "[2,3,4] axes 2,0 unsorted", fin({2, 3, 4}, d), {2, 0}));
  e.samples.push_back(reduce_sample(op, "[1] axis 0", fin({1}, d), {0}));
  e.samples.push_back(reduce_sample(op, "[7,1] axis 1 keepdims", fin({7, 1}, d), {1}, true));
  e.samples.push_back(
      reduce_sample(op, "dynamic [?,3] bound to 4, axis 1", dyn(fin({4, 3}, d)), {1}));
  e.samples.push_back(
      reduce_sample(op, "dynamic [?,3] bound to 4, axis 0", dyn(fin({4, 3}, d)), {0}));
  if (op != Op::reduce_mean)
    e.samples.push_back(
        reduce_sample(op, "i32 [3,5] axis 1", typed(DType::i32, {3, 5}, small_ints(-50, 50)), {1}));
  return e;
}

#define EDF_REDUCE_ERRORS(fn)                                                          \
  ErrorCase{"axis out of range",                                                       \
            #fn ": axis 2 in axes [0,2] is out of range for f32[2,3] (rank 2)",        \
            [](Site& at) {                                                             \
              Value x = param(DType::f32, {2, 3});                                     \
              at = EDF_HERE, ops::fn(x, {0, 2});                                       \
            }},                                                                        \
      ErrorCase {                                                                      \
    "repeated axis", #fn ": axes [0,-2] name axis 0 of f32[2,3] twice", [](Site& at) { \
      Value x = param(DType::f32, {2, 3});                                             \
      at = EDF_HERE, ops::fn(x, {0, -2});                                              \
    }                                                                                  \
  }

void add_reduce_entries(Table& t) {
  OpEntry sum = reduce_entry(Op::reduce_sum);
  sum.errors = {EDF_REDUCE_ERRORS(reduce_sum)};
  t.push_back(std::move(sum));
  OpEntry max = reduce_entry(Op::reduce_max);
  // ops.hpp: "its gradient is shared equally between tied maxima". Finite differences cannot
  // see that, so the vjp (cotangent 1) is built into the graph and checked by value.
  max.samples.push_back(Sample(
                            "vjp splits ties equally: [3,4] of small integers, axis 1",
                            {fin({3, 4}, small_ints(0, 2))},
                            [](const Vals& in, DType) {
                              Value y = ops::reduce_max(in[0], {1});
                              return vjp({y}, {ops::full_like(y, 1.0)}, {in[0]});
                            },
                            [](const Arrs& in, DType) {
                              const Arr& x = in[0];
                              Arr g(x.dtype, x.shape);
                              for (std::int64_t r = 0; r < 3; ++r) {
                                double m = -INFINITY;
                                int ties = 0;
                                for (std::int64_t c = 0; c < 4; ++c) m = std::max(m, x.at({r, c}));
                                for (std::int64_t c = 0; c < 4; ++c) ties += x.at({r, c}) == m;
                                for (std::int64_t c = 0; c < 4; ++c)
                                  g.at({r, c}) = x.at({r, c}) == m ? 1.0 / ties : 0.0;
                              }
                              return Arrs{g};
                            })
                            .without_grad("ties are kinks; the tie rule is checked by value"));
  max.errors = {EDF_REDUCE_ERRORS(reduce_max)};
  t.push_back(std::move(max));
  OpEntry mean = reduce_entry(Op::reduce_mean);
  mean.errors = {EDF_REDUCE_ERRORS(reduce_mean)};
  mean.errors.push_back({"integer operand",
                         "reduce_mean: the operand must be floating-point (f32 or f64), got i32[3]",
                         [](Site& at) {
                           Value x = param(DType::i32, {3});
                           at = EDF_HERE, ops::reduce_mean(x, {0});
                         }});
  t.push_back(std::move(mean));
}

// ---------------------------------------------------------------------------------------------
// dot_general

/// The semantics in full: output axes are the batch axes (lhs order), then the lhs free axes,
/// then the rhs free axes; each output element sums lhs * rhs over all contracting positions.
Arr dot_general_ref(const Arr& l, const Arr& r, const ops::DotDims& d) {
  auto norm = [](Index axes, std::int64_t rank) {
    for (std::int64_t& a : axes)
      if (a < 0) a += rank;
    return axes;
  };
  Index lc = norm(d.lhs_contract, l.rank()), rc = norm(d.rhs_contract, r.rank());
  Index lb = norm(d.lhs_batch, l.rank()), rb = norm(d.rhs_batch, r.rank());
  auto free_axes = [](std::int64_t rank, const Index& c, const Index& b) {
    Index f;
    for (std::int64_t a = 0; a < rank; ++a)
      if (std::find(c.begin(), c.end(), a) == c.end() &&
          std::find(b.begin(), b.end(), a) == b.end())
        f.push_back(a);
    return f;
  };
  Index lf = free_axes(l.rank(), lc, lb), rf = free_axes(r.rank(), rc, rb);
  Shape out_shape, contract_shape;
  for (std::int64_t a : lb) out_shape.push_back(l.dim(a));
  for (std::int64_t a : lf) out_shape.push_back(l.dim(a));
  for (std::int64_t a : rf) out_shape.push_back(r.dim(a));
  for (std::int64_t a : lc) contract_shape.push_back(l.dim(a));
  Arr out(l.dtype, out_shape);
  for_each_index(out_shape, [&](const Index& o) {
    Index li(static_cast<std::size_t>(l.rank())), ri(static_cast<std::size_t>(r.rank()));
    std::size_t k = 0;
    for (std::size_t j = 0; j < lb.size(); ++j, ++k) {
      li[static_cast<std::size_t>(lb[j])] = o[k];
      ri[static_cast<std::size_t>(rb[j])] = o[k];
    }
    for (std::int64_t a : lf) li[static_cast<std::size_t>(a)] = o[k++];
    for (std::int64_t a : rf) ri[static_cast<std::size_t>(a)] = o[k++];
    double sum = 0.0;
    for_each_index(contract_shape, [&](const Index& c) {
      for (std::size_t j = 0; j < c.size(); ++j) {
        li[static_cast<std::size_t>(lc[j])] = c[j];
        ri[static_cast<std::size_t>(rc[j])] = c[j];
      }
      sum += l.at(li) * r.at(ri);
    });
    out.at(o) = sum;
  });
  return out;
}

Sample dot_sample(std::string label, In lhs, In rhs, ops::DotDims d) {
  return Sample(
             std::move(label), {std::move(lhs), std::move(rhs)},
             [d](const Vals& in, DType) { return Vals{ops::dot_general(in[0], in[1], d)}; },
             [d](const Arrs& in, DType) { return Arrs{dot_general_ref(in[0], in[1], d)}; })
      .f32_tol(kF32Reduction);
}

Sample matmul_sample(std::string label, In a, In b, ops::DotDims equivalent) {
  return Sample(
             std::move(label), {std::move(a), std::move(b)},
             [](const Vals& in, DType) { return Vals{ops::matmul(in[0], in[1])}; },
             [equivalent](const Arrs& in, DType) {
               return Arrs{dot_general_ref(in[0], in[1], equivalent)};
             })
      .f32_tol(kF32Reduction);
}

OpEntry dot_general_entry() {
  OpEntry e{Op::dot_general, {}, {}, {}};
  e.samples.push_back(
      dot_sample("matrix product [3,4].[4,5]", fin({3, 4}), fin({4, 5}), {{1}, {0}, {}, {}}));
  e.samples.push_back(
      dot_sample("batched [2,3,4].[2,4,5]", fin({2, 3, 4}), fin({2, 4, 5}), {{2}, {1}, {0}, {0}}));
  e.samples.push_back(dot_sample("lhs contracts axis 0: [4,3].[5,4]", fin({4, 3}), fin({5, 4}),
                                 {{0}, {1}, {}, {}}));
  e.samples.push_back(dot_sample("two contracting axes paired out of order: [2,3,4].[3,2,5]",
                                 fin({2, 3, 4}), fin({3, 2, 5}), {{0, 1}, {1, 0}, {}, {}}));
  e.samples.push_back(dot_sample("outer product [3].[4]", fin({3}), fin({4}), {{}, {}, {}, {}}));
  e.samples.push_back(
      dot_sample("inner product [5].[5] to rank 0", fin({5}), fin({5}), {{0}, {0}, {}, {}}));
  e.samples.push_back(dot_sample("batch axis in the middle: [3,2,4].[4,2,5]", fin({3, 2, 4}),
                                 fin({4, 2, 5}), {{2}, {0}, {1}, {1}}));
  e.samples.push_back(
      dot_sample("size-1 extents [1,1].[1,3]", fin({1, 1}), fin({1, 3}), {{1}, {0}, {}, {}}));
  e.samples.push_back(dot_sample("i32 [2,3].[3,2]", typed(DType::i32, {2, 3}, small_ints(-9, 9)),
                                 typed(DType::i32, {3, 2}, small_ints(-9, 9)), {{1}, {0}, {}, {}}));
  e.samples.push_back(dot_sample("dynamic batch [?,3,4] bound to 2 . [4,5]", dyn(fin({2, 3, 4})),
                                 fin({4, 5}), {{2}, {0}, {}, {}}));
  // ops.hpp: "Axes may be negative (counted from the end)".
  e.samples.push_back(dot_sample("negative axes: [3,4].[4,5] contracting -1 with -2", fin({3, 4}),
                                 fin({4, 5}), {{-1}, {-2}, {}, {}}));
  e.samples.push_back(
      matmul_sample("matmul [2,3,4] x [4,5]", fin({2, 3, 4}), fin({4, 5}), {{2}, {0}, {}, {}}));
  e.samples.push_back(matmul_sample("matmul [2,3,4] x [2,4,5]", fin({2, 3, 4}), fin({2, 4, 5}),
                                    {{2}, {1}, {0}, {0}}));
  e.errors.push_back({"contracting extents differ",
                      "dot_general: contracting extents differ: lhs f32[3,4] axis 1 has 4, rhs "
                      "f32[5,6] axis 0 has 5",
                      [](Site& at) {
                        Value a = param(DType::f32, {3, 4});
                        Value b = param(DType::f32, {5, 6});
                        at = EDF_HERE, ops::dot_general(a, b, {{1}, {0}, {}, {}});
                      }});
  e.errors.push_back({"batch extents differ",
                      "dot_general: batch extents differ: lhs f32[2,3,4] axis 0 has 2, rhs "
                      "f32[3,4,5] axis 0 has 3",
                      [](Site& at) {
                        Value a = param(DType::f32, {2, 3, 4});
                        Value b = param(DType::f32, {3, 4, 5});
                        at = EDF_HERE, ops::dot_general(a, b, {{2}, {1}, {0}, {0}});
                      }});
  e.errors.push_back({"dtypes differ",
                      "dot_general: lhs and rhs must have the same dtype, got f32[3,4] and "
                      "f64[4,5]",
                      [](Site& at) {
                        Value a = param(DType::f32, {3, 4});
                        Value b = param(DType::f64, {4, 5});
                        at = EDF_HERE, ops::dot_general(a, b, {{1}, {0}, {}, {}});
                      }});
  e.errors.push_back({"contracting axis out of range",
                      "dot_general: lhs contracting axis 2 is out of range for f32[3,4]",
                      [](Site& at) {
                        Value a = param(DType::f32, {3, 4});
                        Value b = param(DType::f32, {4, 5});
                        at = EDF_HERE, ops::dot_general(a, b, {{2}, {0}, {}, {}});
                      }});
  e.errors.push_back({"matmul of a vector",
                      "matmul: operands must have rank >= 2, got f32[3] and f32[3,4]",
                      [](Site& at) {
                        Value a = param(DType::f32, {3});
                        Value b = param(DType::f32, {3, 4});
                        at = EDF_HERE, ops::matmul(a, b);
                      }});
  e.errors.push_back({"matmul inner extents differ",
                      "dot_general: contracting extents differ: lhs f32[2,3] axis 1 has 3, rhs "
                      "f32[4,5] axis 0 has 4",
                      [](Site& at) {
                        Value a = param(DType::f32, {2, 3});
                        Value b = param(DType::f32, {4, 5});
                        at = EDF_HERE, ops::matmul(a, b);
                      }});
  return e;
}

// ---------------------------------------------------------------------------------------------
// take and scatter_add

// out[pre, j..., post] = x[pre, idx[j...], post].
Arr take_ref(const Arr& x, const Arr& idx, std::int64_t axis) {
  if (axis < 0) axis += x.rank();
  auto a = static_cast<std::size_t>(axis);
  Shape s(x.shape.begin(), x.shape.begin() + axis);
  s.insert(s.end(), idx.shape.begin(), idx.shape.end());
  s.insert(s.end(), x.shape.begin() + axis + 1, x.shape.end());
  Arr out(x.dtype, s);
  for_each_index(s, [&](const Index& o) {
    Index j(o.begin() + axis, o.begin() + axis + idx.rank());
    Index i(o.begin(), o.begin() + axis);
    i.push_back(static_cast<std::int64_t>(idx.at(j)));
    i.insert(i.end(), o.begin() + static_cast<std::ptrdiff_t>(a) + idx.rank(), o.end());
    out.at(o) = x.at(i);
  });
  return out;
}

Sample take_sample(std::string label, In x, In idx, std::int64_t axis) {
  return Sample(
      std::move(label), {std::move(x), std::move(idx)},
      [axis](const Vals& in, DType) { return Vals{ops::take(in[0], in[1], axis)}; },
      [axis](const Arrs& in, DType) { return Arrs{take_ref(in[0], in[1], axis)}; });
}

OpEntry take_entry() {
  OpEntry e{Op::take, {}, {}, {}};
  // Random indices repeat, so the gradient (a scatter-add) accumulates.
  e.samples.push_back(
      take_sample("rows of [5,3] by i32 [4]", fin({5, 3}), typed(DType::i32, {4}, indices(5)), 0));
  e.samples.push_back(take_sample("columns of [3,5] by i64 [2,2]", fin({3, 5}),
                                  typed(DType::i64, {2, 2}, indices(5)), 1));
  e.samples.push_back(take_sample("axis -1 of [2,3,4] by i32 [7]", fin({2, 3, 4}),
                                  typed(DType::i32, {7}, indices(4)), -1));
  e.samples.push_back(
      take_sample("rank-0 index into [5]", fin({5}), typed(DType::i32, {}, indices(5)), 0));
  e.samples.push_back(
      take_sample("[1,3] by [3] zeros", fin({1, 3}), typed(DType::i64, {3}, indices(1)), 0));
  e.samples.push_back(take_sample("i32 table [6,2] by i32 [3]",
                                  typed(DType::i32, {6, 2}, small_ints(-9, 9)),
                                  typed(DType::i32, {3}, indices(6)), 0));
  // Embedding lookup: a static table indexed by a dynamic batch of ids.
  e.samples.push_back(take_sample("table [5,2] by dynamic i32 [?,3] bound to 2", fin({5, 2}),
                                  dyn(typed(DType::i32, {2, 3}, indices(5))), 0));
  e.samples.push_back(take_sample("dynamic [?,4] bound to 3, axis 1", dyn(fin({3, 4})),
                                  typed(DType::i32, {5}, indices(4)), 1));
  e.errors.push_back(
      {"float indices", "take: indices must be i32 or i64, got f32[4]", [](Site& at) {
         Value x = param(DType::f32, {5, 3});
         Value i = param(DType::f32, {4});
         at = EDF_HERE, ops::take(x, i, 0);
       }});
  e.errors.push_back(
      {"axis out of range", "take: axis 2 is out of range for f32[5,3] (rank 2)", [](Site& at) {
         Value x = param(DType::f32, {5, 3});
         Value i = param(DType::i32, {4});
         at = EDF_HERE, ops::take(x, i, 2);
       }});
  // Index range is checked when the graph runs; the error still points at the builder call.
  e.errors.push_back(
      {"index out of range at run time",
       "interpret: take: index 5 at position [1] of the indices is out of range [0, 5)",
       [](Site& at) {
         Value x = param(DType::f32, {5, 3});
         Value i = param(DType::i32, {2});
         Value y;
         at = EDF_HERE, y = ops::take(x, i, 0);
         evaluate(Graph({x, i}, {y}),
                  {Tensor(DType::f32, {5, 3}), Tensor::from_vector<std::int32_t>({2}, {1, 5})});
       }});
  return e;
}

// out = zeros(updates[:axis] + [dim_size] + updates[axis + idx.rank:]);
// out[pre, idx[j...], post] += updates[pre, j..., post].
Arr scatter_add_ref(const Arr& idx, const Arr& upd, std::int64_t axis, std::int64_t dim_size) {
  Shape s(upd.shape.begin(), upd.shape.begin() + axis);
  s.push_back(dim_size);
  s.insert(s.end(), upd.shape.begin() + axis + idx.rank(), upd.shape.end());
  Arr out(upd.dtype, s);
  for_each_index(upd.shape, [&](const Index& u) {
    Index j(u.begin() + axis, u.begin() + axis + idx.rank());
    Index o(u.begin(), u.begin() + axis);
    o.push_back(static_cast<std::int64_t>(idx.at(j)));
    o.insert(o.end(), u.begin() + axis + idx.rank(), u.end());
    out.at(o) += upd.at(u);
  });
  return out;
}

Sample scatter_sample(std::string label, In idx, In upd, std::int64_t axis, std::int64_t dim_size) {
  return Sample(
             std::move(label), {std::move(idx), std::move(upd)},
             [axis, dim_size](const Vals& in, DType) {
               return Vals{ops::scatter_add(in[0], in[1], axis, dim_size)};
             },
             [axis, dim_size](const Arrs& in, DType) {
               return Arrs{scatter_add_ref(in[0], in[1], axis, dim_size)};
             })
      .f32_tol(kF32Reduction);
}

OpEntry scatter_add_entry() {
  OpEntry e{Op::scatter_add, {}, {}, {}};
  e.samples.push_back(scatter_sample("i32 [4] rows of [4,3] into [5,3]",
                                     typed(DType::i32, {4}, indices(5)), fin({4, 3}), 0, 5));
  e.samples.push_back(scatter_sample("i64 [2,2] into axis 1: [3,2,2] into [3,4]",
                                     typed(DType::i64, {2, 2}, indices(4)), fin({3, 2, 2}), 1, 4));
  e.samples.push_back(scatter_sample("rank-0 index: [3] into [5,3]",
                                     typed(DType::i32, {}, indices(5)), fin({3}), 0, 5));
  // Many updates into few slots: heavy accumulation.
  e.samples.push_back(
      scatter_sample("[7] into [2] (repeats)", typed(DType::i32, {7}, indices(2)), fin({7}), 0, 2));
  e.samples.push_back(
      scatter_sample("[3] into [1]", typed(DType::i64, {3}, indices(1)), fin({3, 2}), 0, 1));
  e.samples.push_back(scatter_sample("i32 updates", typed(DType::i32, {5}, indices(3)),
                                     typed(DType::i32, {5, 2}, small_ints(-9, 9)), 0, 3));
  // The transpose of take: scatter_add(i, take(x, i)) is the gradient of take.
  e.errors.push_back(
      {"float indices", "scatter_add: indices must be i32 or i64, got f32[4]", [](Site& at) {
         Value i = param(DType::f32, {4});
         Value u = param(DType::f32, {4, 3});
         at = EDF_HERE, ops::scatter_add(i, u, 0, 5);
       }});
  e.errors.push_back({"updates do not match the indices",
                      "scatter_add: updates f32[3,3] axis 0 has extent 3 but indices i32[4] axis 0 "
                      "has 4",
                      [](Site& at) {
                        Value i = param(DType::i32, {4});
                        Value u = param(DType::f32, {3, 3});
                        at = EDF_HERE, ops::scatter_add(i, u, 0, 5);
                      }});
  e.errors.push_back({"negative dim_size", "scatter_add: dim_size -2 must be >= 0", [](Site& at) {
                        Value i = param(DType::i32, {4});
                        Value u = param(DType::f32, {4, 3});
                        at = EDF_HERE, ops::scatter_add(i, u, 0, -2);
                      }});
  e.errors.push_back(
      {"negative index at run time",
       "interpret: scatter_add: index -1 at position [1] of the indices is out of "
       "range [0, 5)",
       [](Site& at) {
         Value i = param(DType::i64, {2});
         Value u = param(DType::f32, {2});
         Value y;
         at = EDF_HERE, y = ops::scatter_add(i, u, 0, 5);
         evaluate(Graph({i, u}, {y}),
                  {Tensor::from_vector<std::int64_t>({2}, {0, -1}), Tensor(DType::f32, {2})});
       }});
  return e;
}

}  // namespace

void add_reduction_and_indexing_entries(Table& t) {
  add_reduce_entries(t);
  t.push_back(dot_general_entry());
  t.push_back(take_entry());
  t.push_back(scatter_add_entry());
}

}  // namespace edifice::optable
