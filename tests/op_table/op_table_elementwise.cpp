// Op-table entries: elementwise unary and binary arithmetic, comparisons, select and cast.
#include "op_table_harness.hpp"

#include <cmath>

namespace edifice::optable {
namespace {

using Unary = std::function<Value(const Value&)>;
using Binary = std::function<Value(const Value&, const Value&)>;
using F1 = std::function<double(double)>;
using F2 = std::function<double(double, double)>;

/// The standard shapes of an elementwise unary op: rank 0, size 1, odd sizes, rank 3 with a
/// size-1 axis and a dynamic batch.
std::vector<Sample> unary_samples(const Unary& build, const F1& f, const Domain& dom) {
  auto b = [build](const Vals& in, DType) { return Vals{build(in[0])}; };
  auto r = [f](const Arrs& in, DType) { return Arrs{map(in[0], f)}; };
  return {Sample("rank 0", {fin({}, dom)}, b, r),
          Sample("[1]", {fin({1}, dom)}, b, r),
          Sample("[7]", {fin({7}, dom)}, b, r),
          Sample("[3,5]", {fin({3, 5}, dom)}, b, r),
          Sample("[2,1,3]", {fin({2, 1, 3}, dom)}, b, r),
          Sample("dynamic [?,3] bound to 4", {dyn(fin({4, 3}, dom))}, b, r)};
}

/// Integer samples for neg/abs (C++ integer semantics; values far from overflow).
void add_integer_unary_samples(OpEntry& e, const Unary& build, const F1& f) {
  auto b = [build](const Vals& in, DType) { return Vals{build(in[0])}; };
  auto r = [f](const Arrs& in, DType) { return Arrs{map(in[0], f)}; };
  e.samples.push_back(Sample("i32 [7]", {typed(DType::i32, {7}, small_ints(-50, 50))}, b, r));
  e.samples.push_back(Sample("i64 [2,3]", {typed(DType::i64, {2, 3}, small_ints(-50, 50))}, b, r));
}

OpEntry unary_entry(Op op, const Unary& build, const F1& f, const Domain& dom) {
  OpEntry e{op, unary_samples(build, f, dom), {}, {}};
  return e;
}

// Error cases have to call the builder on the line that records the site, so they are made
// by macros (a macro's __LINE__ and default source_location both are its invocation line).
#define EDF_FLOAT_ONLY_ERROR(fn)                                                            \
  ErrorCase {                                                                               \
    "integer operand", #fn ": the operand must be floating-point (f32 or f64), got i32[3]", \
        [](Site& at) {                                                                      \
          Value x = param(DType::i32, {3});                                                 \
          at = EDF_HERE, ops::fn(x);                                                        \
        }                                                                                   \
  }

#define EDF_BROADCAST_ERROR(fn)                                                               \
  ErrorCase {                                                                                 \
    "shapes [2,3] and [4,3] do not broadcast",                                                \
        #fn ": cannot broadcast f32[2,3] and f32[4,3] together: axis -2 has extents 2 and 4", \
        [](Site& at) {                                                                        \
          Value a = param(DType::f32, {2, 3});                                                \
          Value b = param(DType::f32, {4, 3});                                                \
          at = EDF_HERE, ops::fn(a, b);                                                       \
        }                                                                                     \
  }

#define EDF_DTYPE_ERROR(fn)                                                                  \
  ErrorCase {                                                                                \
    "f32 with f64", #fn ": lhs and rhs must have the same dtype, got f32[2,3] and f64[2,3]", \
        [](Site& at) {                                                                       \
          Value a = param(DType::f32, {2, 3});                                               \
          Value b = param(DType::f64, {2, 3});                                               \
          at = EDF_HERE, ops::fn(a, b);                                                      \
        }                                                                                    \
  }

void add_unary_entries(Table& t) {
  // neg and abs also take signed integers; u8 is rejected (unsigned).
  {
    OpEntry e = unary_entry(
        Op::neg, [](const Value& x) { return ops::neg(x); }, [](double x) { return -x; }, any());
    add_integer_unary_samples(
        e, [](const Value& x) { return ops::neg(x); }, [](double x) { return -x; });
    e.errors.push_back({"u8 operand", "neg: u8 operands are unsigned; got u8[3]", [](Site& at) {
                          Value x = param(DType::u8, {3});
                          at = EDF_HERE, ops::neg(x);
                        }});
    t.push_back(std::move(e));
  }
  {
    // Kink at 0: values stay at least 0.2 away.
    OpEntry e = unary_entry(
        Op::abs, [](const Value& x) { return ops::abs(x); }, [](double x) { return std::abs(x); },
        away_from_zero());
    add_integer_unary_samples(
        e, [](const Value& x) { return ops::abs(x); }, [](double x) { return std::abs(x); });
    e.errors.push_back({"u8 operand", "abs: u8 operands are unsigned; got u8[3]", [](Site& at) {
                          Value x = param(DType::u8, {3});
                          at = EDF_HERE, ops::abs(x);
                        }});
    t.push_back(std::move(e));
  }
  struct FloatUnary {
    Op op;
    Unary build;
    F1 f;
    Domain dom;
    ErrorCase error;
  };
  std::vector<FloatUnary> float_unary = {
      {Op::exp, [](const Value& x) { return ops::exp(x); }, [](double x) { return std::exp(x); },
       any(), EDF_FLOAT_ONLY_ERROR(exp)},
      {Op::log, [](const Value& x) { return ops::log(x); }, [](double x) { return std::log(x); },
       positive(), EDF_FLOAT_ONLY_ERROR(log)},
      {Op::sqrt, [](const Value& x) { return ops::sqrt(x); }, [](double x) { return std::sqrt(x); },
       positive(), EDF_FLOAT_ONLY_ERROR(sqrt)},
      {Op::rsqrt, [](const Value& x) { return ops::rsqrt(x); },
       [](double x) { return 1.0 / std::sqrt(x); }, positive(), EDF_FLOAT_ONLY_ERROR(rsqrt)},
      {Op::tanh, [](const Value& x) { return ops::tanh(x); }, [](double x) { return std::tanh(x); },
       any(-3, 3), EDF_FLOAT_ONLY_ERROR(tanh)},
      {Op::sigmoid, [](const Value& x) { return ops::sigmoid(x); },
       [](double x) { return 1.0 / (1.0 + std::exp(-x)); }, any(-4, 4),
       EDF_FLOAT_ONLY_ERROR(sigmoid)},
      {Op::erf, [](const Value& x) { return ops::erf(x); }, [](double x) { return std::erf(x); },
       any(), EDF_FLOAT_ONLY_ERROR(erf)},
      {Op::sin, [](const Value& x) { return ops::sin(x); }, [](double x) { return std::sin(x); },
       any(-4, 4), EDF_FLOAT_ONLY_ERROR(sin)},
      {Op::cos, [](const Value& x) { return ops::cos(x); }, [](double x) { return std::cos(x); },
       any(-4, 4), EDF_FLOAT_ONLY_ERROR(cos)},
      // Kink at 0: values stay at least 0.2 away.
      {Op::relu, [](const Value& x) { return ops::relu(x); },
       [](double x) { return x > 0 ? x : 0.0; }, away_from_zero(), EDF_FLOAT_ONLY_ERROR(relu)},
      // Exact (erf) GELU, not the tanh approximation.
      {Op::gelu, [](const Value& x) { return ops::gelu(x); },
       [](double x) { return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0))); }, any(-3, 3),
       EDF_FLOAT_ONLY_ERROR(gelu)},
  };
  for (FloatUnary& u : float_unary) {
    OpEntry e = unary_entry(u.op, u.build, u.f, u.dom);
    e.errors.push_back(std::move(u.error));
    t.push_back(std::move(e));
  }
}

// ---------------------------------------------------------------------------------------------
// Binary arithmetic (NumPy broadcasting in the builders)

std::vector<Sample> binary_samples(const Binary& build, const F2& f, const Domain& da,
                                   const Domain& db) {
  auto b = [build](const Vals& in, DType) { return Vals{build(in[0], in[1])}; };
  auto r = [f](const Arrs& in, DType ft) {
    return Arrs{zip(in[0], in[1], [f, ft](double x, double y) { return round_to(ft, f(x, y)); })};
  };
  return {Sample("[3,5] with [3,5]", {fin({3, 5}, da), fin({3, 5}, db)}, b, r),
          Sample("[1] with [1]", {fin({1}, da), fin({1}, db)}, b, r),
          Sample("rank 0 with [5]", {fin({}, da), fin({5}, db)}, b, r),
          Sample("[3,1] with [1,4]: both broadcast", {fin({3, 1}, da), fin({1, 4}, db)}, b, r),
          Sample("[2,3,4] with [4]: rank broadcast", {fin({2, 3, 4}, da), fin({4}, db)}, b, r),
          Sample("[7] with [2,1,7]", {fin({7}, da), fin({2, 1, 7}, db)}, b, r),
          Sample("dynamic [?,3] bound to 4 with [3]", {dyn(fin({4, 3}, da)), fin({3}, db)}, b, r)};
}

/// Integer samples: C++ integer arithmetic, values small enough never to overflow.
void add_integer_binary_samples(OpEntry& e, const Binary& build, const F2& f, const Domain& db) {
  auto b = [build](const Vals& in, DType) { return Vals{build(in[0], in[1])}; };
  auto r = [f](const Arrs& in, DType) { return Arrs{zip(in[0], in[1], f)}; };
  e.samples.push_back(
      Sample("i32 [7] with [7]",
             {typed(DType::i32, {7}, small_ints(-30, 30)), typed(DType::i32, {7}, db)}, b, r));
  e.samples.push_back(
      Sample("i64 [2,3] with [3]",
             {typed(DType::i64, {2, 3}, small_ints(-30, 30)), typed(DType::i64, {3}, db)}, b, r));
}

/// x op x: both operands are the same value, so its gradient is the sum of both partials.
void add_self_sample(OpEntry& e, const Binary& build, const F2& f, const Domain& dom) {
  e.samples.push_back(Sample(
      "same value on both sides", {fin({5}, dom)},
      [build](const Vals& in, DType) { return Vals{build(in[0], in[0])}; },
      [f](const Arrs& in, DType ft) {
        return Arrs{map(in[0], [f, ft](double x) { return round_to(ft, f(x, x)); })};
      }));
}

double trunc_div(double a, double b) {
  return std::trunc(a / b);
}

void add_binary_entries(Table& t) {
  {
    Binary bf = [](const Value& x, const Value& y) { return ops::add(x, y); };
    F2 f = [](double x, double y) { return x + y; };
    OpEntry e{Op::add, binary_samples(bf, f, any(), any()), {}, {}};
    add_self_sample(e, bf, f, any());
    add_integer_binary_samples(e, bf, f, small_ints(-30, 30));
    e.errors.push_back(EDF_BROADCAST_ERROR(add));
    e.errors.push_back(EDF_DTYPE_ERROR(add));
    // The operators report the user's expression too (Operand records the location).
    e.errors.push_back({"operator+ with mismatched shapes",
                        "add: cannot broadcast f32[2] and f32[3] together: axis -1 has extents 2 "
                        "and 3",
                        [](Site& at) {
                          Value a = param(DType::f32, {2});
                          Value b = param(DType::f32, {3});
                          at = EDF_HERE, a + b;
                        }});
    t.push_back(std::move(e));
  }
  {
    Binary bf = [](const Value& x, const Value& y) { return ops::sub(x, y); };
    F2 f = [](double x, double y) { return x - y; };
    OpEntry e{Op::sub, binary_samples(bf, f, any(), any()), {}, {}};
    add_integer_binary_samples(e, bf, f, small_ints(-30, 30));
    e.errors.push_back(EDF_BROADCAST_ERROR(sub));
    e.errors.push_back(EDF_DTYPE_ERROR(sub));
    t.push_back(std::move(e));
  }
  {
    Binary bf = [](const Value& x, const Value& y) { return ops::mul(x, y); };
    F2 f = [](double x, double y) { return x * y; };
    OpEntry e{Op::mul, binary_samples(bf, f, any(), any()), {}, {}};
    add_self_sample(e, bf, f, any());
    add_integer_binary_samples(e, bf, f, small_ints(-30, 30));
    e.errors.push_back(EDF_BROADCAST_ERROR(mul));
    e.errors.push_back(EDF_DTYPE_ERROR(mul));
    t.push_back(std::move(e));
  }
  {
    // Divisor away from 0; integer division truncates toward zero.
    Binary bf = [](const Value& x, const Value& y) { return ops::div(x, y); };
    F2 f = [](double x, double y) { return x / y; };
    OpEntry e{Op::div, binary_samples(bf, f, any(), away_from_zero()), {}, {}};
    add_self_sample(e, bf, f, away_from_zero());
    {
      Binary bi = bf;
      auto bb = [bi](const Vals& in, DType) { return Vals{bi(in[0], in[1])}; };
      auto r = [](const Arrs& in, DType) { return Arrs{zip(in[0], in[1], trunc_div)}; };
      e.samples.push_back(Sample(
          "i32 [7] truncates toward zero",
          {typed(DType::i32, {7}, small_ints(-30, 30)), typed(DType::i32, {7}, small_ints(1, 7))},
          bb, r));
      e.samples.push_back(Sample("i64 [2,3] by negative divisors",
                                 {typed(DType::i64, {2, 3}, small_ints(-30, 30)),
                                  typed(DType::i64, {3}, small_ints(-7, -1))},
                                 bb, r));
    }
    e.errors.push_back(EDF_BROADCAST_ERROR(div));
    e.errors.push_back(EDF_DTYPE_ERROR(div));
    e.errors.push_back(
        {"integer division by zero at run time",
         "interpret: div: integer division by zero at element [1] of the divisor", [](Site& at) {
           Value a = param(DType::i32, {3});
           Value b = param(DType::i32, {3});
           Value y;
           at = EDF_HERE, y = ops::div(a, b);
           evaluate(Graph({a, b}, {y}), {Tensor::from_vector<std::int32_t>({3}, {4, 5, 6}),
                                         Tensor::from_vector<std::int32_t>({3}, {2, 0, 3})});
         }});
    t.push_back(std::move(e));
  }
  {
    // Operands on interleaved lattices: never within 0.15 of a tie (the kink).
    Binary bf = [](const Value& x, const Value& y) { return ops::max(x, y); };
    F2 f = [](double x, double y) { return std::max(x, y); };
    OpEntry e{Op::max, binary_samples(bf, f, lattice(0), lattice(1)), {}, {}};
    add_integer_binary_samples(e, bf, f, small_ints(-30, 30));
    e.errors.push_back(EDF_BROADCAST_ERROR(max));
    e.errors.push_back(EDF_DTYPE_ERROR(max));
    t.push_back(std::move(e));
  }
  {
    Binary bf = [](const Value& x, const Value& y) { return ops::min(x, y); };
    F2 f = [](double x, double y) { return std::min(x, y); };
    OpEntry e{Op::min, binary_samples(bf, f, lattice(1), lattice(0)), {}, {}};
    add_integer_binary_samples(e, bf, f, small_ints(-30, 30));
    e.errors.push_back(EDF_BROADCAST_ERROR(min));
    e.errors.push_back(EDF_DTYPE_ERROR(min));
    t.push_back(std::move(e));
  }
  {
    // Positive base (the gradient with respect to the exponent needs log(base)).
    Binary bf = [](const Value& x, const Value& y) { return ops::pow(x, y); };
    F2 f = [](double x, double y) { return std::pow(x, y); };
    OpEntry e{Op::pow, binary_samples(bf, f, positive(0.2, 3.0), any()), {}, {}};
    add_self_sample(e, bf, f, positive(0.2, 3.0));
    e.errors.push_back(EDF_BROADCAST_ERROR(pow));
    e.errors.push_back(EDF_DTYPE_ERROR(pow));
    e.errors.push_back({"integer base",
                        "pow: the base must be floating-point (f32 or f64), got i32[3]",
                        [](Site& at) {
                          Value a = param(DType::i32, {3});
                          Value b = param(DType::i32, {3});
                          at = EDF_HERE, ops::pow(a, b);
                        }});
    t.push_back(std::move(e));
  }
}

// ---------------------------------------------------------------------------------------------
// Comparisons

void add_compare_entry(Table& t, Op op, const Binary& build,
                       const std::function<bool(double, double)>& f, ErrorCase broadcast_error,
                       ErrorCase dtype_error) {
  auto b = [build](const Vals& in, DType) { return Vals{build(in[0], in[1])}; };
  auto r = [f](const Arrs& in, DType) {
    return Arrs{zip(
        in[0], in[1], [f](double x, double y) { return f(x, y) ? 1.0 : 0.0; }, DType::u8)};
  };
  OpEntry e{op, {}, {}, {}};
  e.no_grad_reason = "comparisons produce u8 and are piecewise constant";
  // Small integers stored as floats: plenty of ties, so equality is exercised.
  e.samples.push_back(Sample("ties: [3,5] with [3,5]",
                             {fin({3, 5}, small_ints(-2, 2)), fin({3, 5}, small_ints(-2, 2))}, b,
                             r));
  e.samples.push_back(Sample("[3,1] with [1,4]: both broadcast",
                             {fin({3, 1}, small_ints(-2, 2)), fin({1, 4}, small_ints(-2, 2))}, b,
                             r));
  e.samples.push_back(Sample("rank 0 with [5]", {fin({}), fin({5})}, b, r));
  e.samples.push_back(Sample(
      "[1] with [1], same value", {fin({1})},
      [build](const Vals& in, DType) { return Vals{build(in[0], in[0])}; },
      [f](const Arrs& in, DType) {
        return Arrs{map(
            in[0], [f](double x) { return f(x, x) ? 1.0 : 0.0; }, DType::u8)};
      }));
  e.samples.push_back(
      Sample("i32 [7]",
             {typed(DType::i32, {7}, small_ints(-3, 3)), typed(DType::i32, {7}, small_ints(-3, 3))},
             b, r));
  e.samples.push_back(Sample(
      "u8 [2,3] with [3]",
      {typed(DType::u8, {2, 3}, small_ints(0, 3)), typed(DType::u8, {3}, small_ints(0, 3))}, b, r));
  e.samples.push_back(Sample("dynamic [?,3] bound to 2 with [3]",
                             {dyn(fin({2, 3}, small_ints(-1, 1))), fin({3}, small_ints(-1, 1))}, b,
                             r));
  e.errors.push_back(std::move(broadcast_error));
  e.errors.push_back(std::move(dtype_error));
  t.push_back(std::move(e));
}

void add_compare_entries(Table& t) {
  add_compare_entry(
      t, Op::eq, [](const Value& a, const Value& b) { return ops::eq(a, b); },
      [](double a, double b) { return a == b; }, EDF_BROADCAST_ERROR(eq), EDF_DTYPE_ERROR(eq));
  add_compare_entry(
      t, Op::ne, [](const Value& a, const Value& b) { return ops::ne(a, b); },
      [](double a, double b) { return a != b; }, EDF_BROADCAST_ERROR(ne), EDF_DTYPE_ERROR(ne));
  add_compare_entry(
      t, Op::lt, [](const Value& a, const Value& b) { return ops::lt(a, b); },
      [](double a, double b) { return a < b; }, EDF_BROADCAST_ERROR(lt), EDF_DTYPE_ERROR(lt));
  add_compare_entry(
      t, Op::le, [](const Value& a, const Value& b) { return ops::le(a, b); },
      [](double a, double b) { return a <= b; }, EDF_BROADCAST_ERROR(le), EDF_DTYPE_ERROR(le));
  add_compare_entry(
      t, Op::gt, [](const Value& a, const Value& b) { return ops::gt(a, b); },
      [](double a, double b) { return a > b; }, EDF_BROADCAST_ERROR(gt), EDF_DTYPE_ERROR(gt));
  add_compare_entry(
      t, Op::ge, [](const Value& a, const Value& b) { return ops::ge(a, b); },
      [](double a, double b) { return a >= b; }, EDF_BROADCAST_ERROR(ge), EDF_DTYPE_ERROR(ge));
}

// ---------------------------------------------------------------------------------------------
// select and cast

Arrs select_ref(const Arrs& in, DType) {
  const Arr &p = in[0], &a = in[1], &b = in[2];
  Arr out(a.dtype, broadcast_shape(p.shape, broadcast_shape(a.shape, b.shape)));
  for_each_index(out.shape, [&](const Index& i) {
    out.at(i) = broadcast_get(p, i) != 0 ? broadcast_get(a, i) : broadcast_get(b, i);
  });
  return {out};
}

Vals select_build(const Vals& in, DType) {
  return {ops::select(in[0], in[1], in[2])};
}

OpEntry select_entry() {
  OpEntry e{Op::select, {}, {}, {}};
  e.samples.push_back(Sample("[3,4] all the same shape",
                             {typed(DType::u8, {3, 4}, u8_mask()), fin({3, 4}), fin({3, 4})},
                             select_build, select_ref));
  e.samples.push_back(Sample("pred [3,1], on_true [3,4], on_false [4]",
                             {typed(DType::u8, {3, 1}, u8_mask()), fin({3, 4}), fin({4})},
                             select_build, select_ref));
  e.samples.push_back(Sample("rank 0 pred with [5]",
                             {typed(DType::u8, {}, u8_mask()), fin({5}), fin({5})}, select_build,
                             select_ref));
  e.samples.push_back(Sample("pred [2,3] broadcasts the values [1]",
                             {typed(DType::u8, {2, 3}, u8_mask()), fin({1}), fin({1})},
                             select_build, select_ref));
  // Nonzero means true, not only 1.
  e.samples.push_back(Sample("u8 predicate values 0..3",
                             {typed(DType::u8, {7}, small_ints(0, 3)), fin({7}), fin({7})},
                             select_build, select_ref));
  e.samples.push_back(
      Sample("i32 values",
             {typed(DType::u8, {2, 3}, u8_mask()), typed(DType::i32, {2, 3}, small_ints(-9, 9)),
              typed(DType::i32, {2, 3}, small_ints(-9, 9))},
             select_build, select_ref));
  e.samples.push_back(Sample("dynamic [?,3] bound to 4",
                             {dyn(typed(DType::u8, {4, 3}, u8_mask())), dyn(fin({4, 3})), fin({3})},
                             select_build, select_ref));
  e.errors.push_back(
      {"f32 predicate", "select: the predicate must be u8, got f32[2,3]", [](Site& at) {
         Value p = param(DType::f32, {2, 3});
         Value a = param(DType::f32, {2, 3});
         at = EDF_HERE, ops::select(p, a, a);
       }});
  e.errors.push_back({"on_true and on_false of different dtypes",
                      "select: on_true and on_false must have the same dtype, got f32[2,3] and "
                      "f64[2,3]",
                      [](Site& at) {
                        Value p = param(DType::u8, {2, 3});
                        Value a = param(DType::f32, {2, 3});
                        Value b = param(DType::f64, {2, 3});
                        at = EDF_HERE, ops::select(p, a, b);
                      }});
  e.errors.push_back({"values do not broadcast",
                      "select: cannot broadcast f32[2,3] and f32[2,2] together: axis -1 has "
                      "extents 3 and 2",
                      [](Site& at) {
                        Value p = param(DType::u8, {2, 3});
                        Value a = param(DType::f32, {2, 3});
                        Value b = param(DType::f32, {2, 2});
                        at = EDF_HERE, ops::select(p, a, b);
                      }});
  // Not pinned: a predicate that does not broadcast with the values is reported as
  // "cannot broadcast u8[3] and u8[2,2]", naming a u8[2,2] value that does not exist (the
  // values are f32[2,2]); reported to the lead.
  return e;
}

OpEntry cast_entry() {
  OpEntry e{Op::cast, {}, {}, {}};
  auto to = [](DType d) {
    return [d](const Vals& in, DType) { return Vals{ops::cast(in[0], d)}; };
  };
  // static_cast semantics: float to integer truncates toward zero.
  auto ref_to = [](DType d) {
    return [d](const Arrs& in, DType) {
      return Arrs{map(
          in[0], [d](double x) { return round_to(d, x); }, d)};
    };
  };
  const char* float_to_int = "an integer result has no gradient";
  e.samples.push_back(
      Sample("float [3,5] to i32", {fin({3, 5}, any(-9, 9))}, to(DType::i32), ref_to(DType::i32))
          .without_grad(float_to_int));
  e.samples.push_back(
      Sample("float [7] to i64", {fin({7}, any(-9, 9))}, to(DType::i64), ref_to(DType::i64))
          .without_grad(float_to_int));
  // Only nonnegative values: a negative float to u8 is undefined behaviour in C++.
  e.samples.push_back(Sample("float [2,3] to u8 (values in [0, 9))", {fin({2, 3}, any(0, 9))},
                             to(DType::u8), ref_to(DType::u8))
                          .without_grad(float_to_int));
  e.samples.push_back(Sample(
      "i32 [7] to float", {typed(DType::i32, {7}, small_ints(-1000, 1000))},
      [](const Vals& in, DType ft) { return Vals{ops::cast(in[0], ft)}; },
      [](const Arrs& in, DType ft) {
        return Arrs{map(
            in[0], [](double x) { return x; }, ft)};
      }));
  e.samples.push_back(Sample(
      "u8 mask [3,1] to float", {typed(DType::u8, {3, 1}, u8_mask())},
      [](const Vals& in, DType ft) { return Vals{ops::cast(in[0], ft)}; },
      [](const Arrs& in, DType ft) {
        return Arrs{map(
            in[0], [](double x) { return x; }, ft)};
      }));
  e.samples.push_back(Sample("i64 [2,2] to i32", {typed(DType::i64, {2, 2}, small_ints(-9, 9))},
                             to(DType::i32), ref_to(DType::i32)));
  // Float to float. |x| < 1e-3 keeps f32 rounding (ulp ~1e-10) far below the finite-difference
  // step, so the f64 gradient check through an f32 value is meaningful.
  e.samples.push_back(Sample("float [3,5] to f32, |x| < 1e-3", {fin({3, 5}, any(-1e-3, 1e-3))},
                             to(DType::f32), ref_to(DType::f32)));
  e.samples.push_back(Sample(
      "float [7] to f32 and back to f64, |x| < 1e-3", {fin({7}, any(-1e-3, 1e-3))},
      [](const Vals& in, DType) {
        return Vals{ops::cast(ops::cast(in[0], DType::f32), DType::f64)};
      },
      [](const Arrs& in, DType) {
        return Arrs{map(
            in[0], [](double x) { return round_to(DType::f32, x); }, DType::f64)};
      }));
  e.samples.push_back(Sample("float [2,3] to f64, wide values", {fin({2, 3}, any(-100, 100))},
                             to(DType::f64), ref_to(DType::f64)));
  e.errors.push_back({"empty Value", "cast: input 0 is an empty Value",
                      [](Site& at) { at = EDF_HERE, ops::cast(Value(), DType::f32); }});
  return e;
}

}  // namespace

void add_elementwise_entries(Table& t) {
  add_unary_entries(t);
  add_binary_entries(t);
  add_compare_entries(t);
  t.push_back(select_entry());
  t.push_back(cast_entry());
}

}  // namespace edifice::optable
