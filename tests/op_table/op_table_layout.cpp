// Op-table entries: layout ops (broadcast_in_dim, reshape, transpose, slice, pad, concat).
#include "op_table_harness.hpp"

namespace edifice::optable {
namespace {

// out[o] = x[i] with i[k] = o[dims[k]], or 0 where x's extent is 1.
Arr broadcast_in_dim_ref(const Arr& x, const Shape& shape, const Index& dims) {
  Arr out(x.dtype, shape);
  for_each_index(shape, [&](const Index& o) {
    Index i(x.shape.size());
    for (std::size_t k = 0; k < i.size(); ++k)
      i[k] = x.shape[k] == 1 ? 0 : o[static_cast<std::size_t>(dims[k])];
    out.at(o) = x.at(i);
  });
  return out;
}

Sample bcast(std::string label, In x, Shape shape, Index dims) {
  return Sample(
      std::move(label), {std::move(x)},
      [shape, dims](const Vals& in, DType) {
        return Vals{ops::broadcast_in_dim(in[0], shape, dims)};
      },
      [shape, dims](const Arrs& in, DType) {
        return Arrs{broadcast_in_dim_ref(in[0], shape, dims)};
      });
}

OpEntry broadcast_in_dim_entry() {
  OpEntry e{Op::broadcast_in_dim, {}, {}, {}};
  e.samples.push_back(bcast("[3] to [2,3] on axis 1", fin({3}), {2, 3}, {1}));
  e.samples.push_back(bcast("[3] to [3,4] on axis 0", fin({3}), {3, 4}, {0}));
  e.samples.push_back(bcast("[3,1] to [3,5]: size-1 axis expands", fin({3, 1}), {3, 5}, {0, 1}));
  e.samples.push_back(bcast("rank 0 to [2,3]", fin({}), {2, 3}, {}));
  e.samples.push_back(bcast("[1] to [1]", fin({1}), {1}, {0}));
  e.samples.push_back(bcast("[2,3] to [2,5,3] on axes 0,2", fin({2, 3}), {2, 5, 3}, {0, 2}));
  e.samples.push_back(bcast("i32 [1,3] to [2,4,3]", typed(DType::i32, {1, 3}, small_ints(-9, 9)),
                            {2, 4, 3}, {0, 2}));
  // broadcast_to: NumPy alignment of trailing axes.
  e.samples.push_back(Sample(
      "broadcast_to [3,1] -> [2,3,4]", {fin({3, 1})},
      [](const Vals& in, DType) {
        return Vals{ops::broadcast_to(in[0], {2, 3, 4})};
      },
      [](const Arrs& in, DType) {
        return Arrs{broadcast_in_dim_ref(in[0], {2, 3, 4}, {1, 2})};
      }));
  e.errors.push_back({"extent neither 1 nor the target's",
                      "broadcast_in_dim: cannot broadcast f32[3] to [2,4]: input axis 0 has "
                      "extent 3, target axis 1 has 4",
                      [](Site& at) {
                        Value x = param(DType::f32, {3});
                        at = EDF_HERE, ops::broadcast_in_dim(x, {2, 4}, {1});
                      }});
  e.errors.push_back({"dims not increasing",
                      "broadcast_in_dim: dims [1,0] must be strictly increasing", [](Site& at) {
                        Value x = param(DType::f32, {3, 3});
                        at = EDF_HERE, ops::broadcast_in_dim(x, {3, 3}, {1, 0});
                      }});
  e.errors.push_back({"one dim for a rank-2 input",
                      "broadcast_in_dim: dims [0] must name one output axis per input axis of "
                      "f32[2,3]",
                      [](Site& at) {
                        Value x = param(DType::f32, {2, 3});
                        at = EDF_HERE, ops::broadcast_in_dim(x, {2, 3}, {0});
                      }});
  e.errors.push_back({"dim out of range",
                      "broadcast_in_dim: dims[0] = 2 is out of range for target shape [2,3]",
                      [](Site& at) {
                        Value x = param(DType::f32, {3});
                        at = EDF_HERE, ops::broadcast_in_dim(x, {2, 3}, {2});
                      }});
  return e;
}

Sample reshape_sample(std::string label, In x, Shape to) {
  // The reference is the same row-major data under the new shape, with the dynamic extent
  // bound from the element count.
  return Sample(
      std::move(label), {std::move(x)},
      [to](const Vals& in, DType) { return Vals{ops::reshape(in[0], to)}; },
      [to](const Arrs& in, DType) {
        Shape s = to;
        std::int64_t known = 1;
        for (std::int64_t d : s)
          if (d != kDynamic) known *= d;
        for (std::int64_t& d : s)
          if (d == kDynamic) d = in[0].numel() / known;
        return Arrs{Arr(in[0].dtype, s, in[0].v)};
      });
}

OpEntry reshape_entry() {
  OpEntry e{Op::reshape, {}, {}, {}};
  e.samples.push_back(reshape_sample("[2,3] to [3,2]", fin({2, 3}), {3, 2}));
  e.samples.push_back(reshape_sample("[6] to [1,6,1]", fin({6}), {1, 6, 1}));
  e.samples.push_back(reshape_sample("[2,3,5] to [5,6]", fin({2, 3, 5}), {5, 6}));
  e.samples.push_back(reshape_sample("rank 0 to [1,1]", fin({}), {1, 1}));
  e.samples.push_back(reshape_sample("[1,1] to rank 0", fin({1, 1}), {}));
  e.samples.push_back(
      reshape_sample("i32 [7] to [7,1]", typed(DType::i32, {7}, small_ints(-9, 9)), {7, 1}));
  e.samples.push_back(
      reshape_sample("dynamic [?,3,2] bound to 4 to [?,6]", dyn(fin({4, 3, 2})), {kDynamic, 6}));
  e.errors.push_back({"element counts differ",
                      "reshape: cannot reshape f32[2,3] to [4,2]: element counts differ",
                      [](Site& at) {
                        Value x = param(DType::f32, {2, 3});
                        at = EDF_HERE, ops::reshape(x, {4, 2});
                      }});
  e.errors.push_back(
      {"negative extent", "reshape: target shape [-2,-3] has a negative extent", [](Site& at) {
         Value x = param(DType::f32, {2, 3});
         at = EDF_HERE, ops::reshape(x, {-2, -3});
       }});
  return e;
}

Sample transpose_sample(std::string label, In x, Index perm) {
  return Sample(
      std::move(label), {std::move(x)},
      [perm](const Vals& in, DType) { return Vals{ops::transpose(in[0], perm)}; },
      [perm](const Arrs& in, DType) {
        const Arr& src = in[0];
        Shape s;
        for (std::int64_t p : perm) s.push_back(src.shape[static_cast<std::size_t>(p)]);
        Arr out(src.dtype, s);
        // out[o] = x[i] with i[perm[k]] = o[k].
        for_each_index(s, [&](const Index& o) {
          Index i(o.size());
          for (std::size_t k = 0; k < o.size(); ++k) i[static_cast<std::size_t>(perm[k])] = o[k];
          out.at(o) = src.at(i);
        });
        return Arrs{out};
      });
}

OpEntry transpose_entry() {
  OpEntry e{Op::transpose, {}, {}, {}};
  e.samples.push_back(transpose_sample("[3,5] perm [1,0]", fin({3, 5}), {1, 0}));
  e.samples.push_back(transpose_sample("[2,3,4] perm [2,0,1]", fin({2, 3, 4}), {2, 0, 1}));
  e.samples.push_back(transpose_sample("[2,3,4] perm [1,2,0]", fin({2, 3, 4}), {1, 2, 0}));
  e.samples.push_back(transpose_sample("[1,5] perm [1,0]", fin({1, 5}), {1, 0}));
  e.samples.push_back(transpose_sample("[7] perm [0]", fin({7}), {0}));
  e.samples.push_back(transpose_sample("rank 0, empty perm", fin({}), {}));
  e.samples.push_back(
      transpose_sample("u8 [2,3] perm [1,0]", typed(DType::u8, {2, 3}, u8_mask()), {1, 0}));
  e.samples.push_back(
      transpose_sample("dynamic [?,3] bound to 2, perm [1,0]", dyn(fin({2, 3})), {1, 0}));
  e.errors.push_back({"repeated axis",
                      "transpose: perm [0,0] is not a permutation of the 2 axes of f32[2,3]",
                      [](Site& at) {
                        Value x = param(DType::f32, {2, 3});
                        at = EDF_HERE, ops::transpose(x, {0, 0});
                      }});
  e.errors.push_back({"perm of the wrong length",
                      "transpose: perm [1,0,2] is not a permutation of the 2 axes of f32[2,3]",
                      [](Site& at) {
                        Value x = param(DType::f32, {2, 3});
                        at = EDF_HERE, ops::transpose(x, {1, 0, 2});
                      }});
  return e;
}

Arr slice_ref(const Arr& x, const Index& start, const Index& limit, Index stride) {
  if (stride.empty()) stride.assign(start.size(), 1);
  Shape s;
  for (std::size_t a = 0; a < start.size(); ++a)
    s.push_back((limit[a] - start[a] + stride[a] - 1) / stride[a]);
  Arr out(x.dtype, s);
  for_each_index(s, [&](const Index& o) {
    Index i(o.size());
    for (std::size_t a = 0; a < o.size(); ++a) i[a] = start[a] + o[a] * stride[a];
    out.at(o) = x.at(i);
  });
  return out;
}

Sample slice_sample(std::string label, In x, Index start, Index limit, Index stride = {}) {
  return Sample(
      std::move(label), {std::move(x)},
      [=](const Vals& in, DType) { return Vals{ops::slice(in[0], start, limit, stride)}; },
      [=](const Arrs& in, DType) { return Arrs{slice_ref(in[0], start, limit, stride)}; });
}

OpEntry slice_entry() {
  OpEntry e{Op::slice, {}, {}, {}};
  e.samples.push_back(slice_sample("[7] 1:6:2", fin({7}), {1}, {6}, {2}));
  e.samples.push_back(slice_sample("[5,4] [1:4, 0:3]", fin({5, 4}), {1, 0}, {4, 3}));
  e.samples.push_back(slice_sample("[3,5] [0:3:2, 1:5:3]", fin({3, 5}), {0, 1}, {3, 5}, {2, 3}));
  e.samples.push_back(slice_sample("[3,5] whole", fin({3, 5}), {0, 0}, {3, 5}));
  e.samples.push_back(slice_sample("[2,3,5] one element", fin({2, 3, 5}), {1, 2, 4}, {2, 3, 5}));
  e.samples.push_back(slice_sample("[5] empty range 2:2", fin({5}), {2}, {2}));
  e.samples.push_back(slice_sample("[1] 0:1", fin({1}), {0}, {1}));
  e.samples.push_back(
      slice_sample("i64 [7] 0:7:3", typed(DType::i64, {7}, small_ints(-9, 9)), {0}, {7}, {3}));
  e.samples.push_back(Sample(
      "slice_axis(x, -1, 1, 3) of [3,5]", {fin({3, 5})},
      [](const Vals& in, DType) { return Vals{ops::slice_axis(in[0], -1, 1, 3)}; },
      [](const Arrs& in, DType) {
        return Arrs{slice_ref(in[0], {0, 1}, {3, 3}, {})};
      }));
  // A dynamic axis can only be kept whole; slice_axis on another axis does that.
  e.samples.push_back(Sample(
      "slice_axis on axis 1 of dynamic [?,5] bound to 3", {dyn(fin({3, 5}))},
      [](const Vals& in, DType) { return Vals{ops::slice_axis(in[0], 1, 2, 5)}; },
      [](const Arrs& in, DType) {
        return Arrs{slice_ref(in[0], {0, 2}, {3, 5}, {})};
      }));
  e.errors.push_back({"limit past the extent",
                      "slice: range [1, 5) on axis 1 is invalid for f32[2,3] (need 0 <= start <= "
                      "limit <= 3)",
                      [](Site& at) {
                        Value x = param(DType::f32, {2, 3});
                        at = EDF_HERE, ops::slice(x, {0, 1}, {2, 5});
                      }});
  e.errors.push_back({"start after limit",
                      "slice: range [3, 1) on axis 0 is invalid for f32[5] (need 0 <= start <= "
                      "limit <= 5)",
                      [](Site& at) {
                        Value x = param(DType::f32, {5});
                        at = EDF_HERE, ops::slice(x, {3}, {1});
                      }});
  e.errors.push_back({"zero stride", "slice: stride 0 on axis 0 must be >= 1", [](Site& at) {
                        Value x = param(DType::f32, {5});
                        at = EDF_HERE, ops::slice(x, {0}, {5}, {0});
                      }});
  e.errors.push_back({"wrong number of starts",
                      "slice: start [0], limit [2] and stride [1] must each have 2 entries for "
                      "f32[2,3]",
                      [](Site& at) {
                        Value x = param(DType::f32, {2, 3});
                        at = EDF_HERE, ops::slice(x, {0}, {2});
                      }});
  return e;
}

Arr pad_ref(const Arr& x, double value, const Index& low, const Index& high, Index interior) {
  if (interior.empty()) interior.assign(low.size(), 0);
  Shape s;
  for (std::size_t a = 0; a < low.size(); ++a) {
    std::int64_t n = x.shape[a];
    s.push_back(low[a] + high[a] + n + (n > 0 ? (n - 1) * interior[a] : 0));
  }
  Arr out(x.dtype, s,
          std::vector<double>(static_cast<std::size_t>(Arr(x.dtype, s).numel()),
                              round_to(x.dtype, value)));
  // x[i] lands at low + i * (interior + 1).
  for_each_index(x.shape, [&](const Index& i) {
    Index o(i.size());
    for (std::size_t a = 0; a < i.size(); ++a) o[a] = low[a] + i[a] * (interior[a] + 1);
    out.at(o) = x.at(i);
  });
  return out;
}

Sample pad_sample(std::string label, In x, double value, Index low, Index high,
                  Index interior = {}) {
  return Sample(
      std::move(label), {std::move(x)},
      [=](const Vals& in, DType) { return Vals{ops::pad(in[0], value, low, high, interior)}; },
      [=](const Arrs& in, DType) { return Arrs{pad_ref(in[0], value, low, high, interior)}; });
}

OpEntry pad_entry() {
  OpEntry e{Op::pad, {}, {}, {}};
  e.samples.push_back(pad_sample("[3] low 1 high 2 with 0.5", fin({3}), 0.5, {1}, {2}));
  e.samples.push_back(pad_sample("[2,3] low [0,1] high [1,0] interior [1,2]", fin({2, 3}), -1.0,
                                 {0, 1}, {1, 0}, {1, 2}));
  e.samples.push_back(
      pad_sample("[1] interior 3 (no effect on one element)", fin({1}), 2.0, {0}, {1}, {3}));
  e.samples.push_back(pad_sample("[3,5] no padding", fin({3, 5}), 0.0, {0, 0}, {0, 0}));
  e.samples.push_back(
      pad_sample("[2,1,3] all axes", fin({2, 1, 3}), 0.25, {1, 0, 2}, {0, 1, 1}, {2, 0, 1}));
  e.samples.push_back(pad_sample("i32 [4] interior 1 with 7",
                                 typed(DType::i32, {4}, small_ints(-9, 9)), 7.0, {2}, {0}, {1}));
  e.samples.push_back(
      pad_sample("dynamic [?,2] bound to 3, pad axis 1", dyn(fin({3, 2})), 0.0, {0, 1}, {0, 2}));
  e.errors.push_back({"negative low",
                      "pad: padding on axis 0 must be >= 0, got low -1, high 0, interior 0",
                      [](Site& at) {
                        Value x = param(DType::f32, {3});
                        at = EDF_HERE, ops::pad(x, 0.0, {-1}, {0});
                      }});
  e.errors.push_back({"counts for one axis of two",
                      "pad: low [1], high [1] and interior [0] must each have 2 entries for "
                      "f32[2,3]",
                      [](Site& at) {
                        Value x = param(DType::f32, {2, 3});
                        at = EDF_HERE, ops::pad(x, 0.0, {1}, {1});
                      }});
  return e;
}

Arr concat_ref(const Arrs& xs, int axis) {
  Shape s = xs[0].shape;
  auto a = static_cast<std::size_t>(axis < 0 ? axis + xs[0].rank() : axis);
  s[a] = 0;
  for (const Arr& x : xs) s[a] += x.shape[a];
  Arr out(xs[0].dtype, s);
  std::int64_t offset = 0;
  for (const Arr& x : xs) {
    for_each_index(x.shape, [&](const Index& i) {
      Index o = i;
      o[a] += offset;
      out.at(o) = x.at(i);
    });
    offset += x.shape[a];
  }
  return out;
}

Sample concat_sample(std::string label, std::vector<In> xs, int axis) {
  return Sample(
      std::move(label), std::move(xs),
      [axis](const Vals& in, DType) { return Vals{ops::concat(in, axis)}; },
      [axis](const Arrs& in, DType) { return Arrs{concat_ref(in, axis)}; });
}

OpEntry concat_entry() {
  OpEntry e{Op::concat, {}, {}, {}};
  e.samples.push_back(concat_sample("[2,3] and [2,1] on axis 1", {fin({2, 3}), fin({2, 1})}, 1));
  e.samples.push_back(
      concat_sample("[1,3], [2,3], [1,3] on axis 0", {fin({1, 3}), fin({2, 3}), fin({1, 3})}, 0));
  e.samples.push_back(
      concat_sample("[2,2,3] and [2,2,1] on axis -1", {fin({2, 2, 3}), fin({2, 2, 1})}, -1));
  e.samples.push_back(concat_sample("a single [5]", {fin({5})}, 0));
  e.samples.push_back(
      concat_sample("[2,0] and [2,3]: an empty part", {fin({2, 0}), fin({2, 3})}, 1));
  e.samples.push_back(concat_sample(
      "i32 [3] and [4]",
      {typed(DType::i32, {3}, small_ints(-9, 9)), typed(DType::i32, {4}, small_ints(-9, 9))}, 0));
  e.samples.push_back(concat_sample("dynamic [?,2] and [?,3] bound to 3 on axis 1",
                                    {dyn(fin({3, 2})), dyn(fin({3, 3}))}, 1));
  e.samples.push_back(Sample(
      "the same value twice", {fin({2, 2})},
      [](const Vals& in, DType) {
        return Vals{ops::concat({in[0], in[0]}, 0)};
      },
      [](const Arrs& in, DType) {
        return Arrs{concat_ref({in[0], in[0]}, 0)};
      }));
  e.errors.push_back({"other extents differ",
                      "concat: input 0 f32[2,3] and input 1 f32[3,3] differ at axis 0 (2 vs 3); "
                      "only axis 1 may differ",
                      [](Site& at) {
                        Value a = param(DType::f32, {2, 3});
                        Value b = param(DType::f32, {3, 3});
                        at = EDF_HERE, ops::concat({a, b}, 1);
                      }});
  e.errors.push_back({"dtypes differ",
                      "concat: input 0 and input 1 must have the same dtype, got f32[2,3] and "
                      "f64[2,3]",
                      [](Site& at) {
                        Value a = param(DType::f32, {2, 3});
                        Value b = param(DType::f64, {2, 3});
                        at = EDF_HERE, ops::concat({a, b}, 0);
                      }});
  e.errors.push_back(
      {"axis out of range", "concat: axis 2 is out of range for f32[2,3] (rank 2)", [](Site& at) {
         Value a = param(DType::f32, {2, 3});
         at = EDF_HERE, ops::concat({a, a}, 2);
       }});
  e.errors.push_back({"no inputs", "concat: needs at least one input",
                      [](Site& at) { at = EDF_HERE, ops::concat({}, 0); }});
  return e;
}

}  // namespace

void add_layout_entries(Table& t) {
  t.push_back(broadcast_in_dim_entry());
  t.push_back(reshape_entry());
  t.push_back(transpose_entry());
  t.push_back(slice_entry());
  t.push_back(pad_entry());
  t.push_back(concat_entry());
}

}  // namespace edifice::optable
