#pragma once
/// \file
/// The op-test table (in the spirit of ggml's test-backend-ops and PyTorch's OpInfo): one
/// declarative entry per op of EDIFICE_FOR_EACH_OP with samples, error cases and gradient
/// checks, and the harness that runs them against the reference interpreter and autodiff.
///
/// A sample's reference is an independent naive implementation in double written in the table
/// (never the interpreter), so the table also documents each op's semantics. For every sample
/// the harness
///   1. runs the graph in f64 and compares with the reference at tight tolerance,
///   2. runs it in f32 (inputs rounded to float, reference computed from the rounded values),
///   3. checks vjp (autodiff.hpp) in f64 against central finite differences of the interpreted
///      forward graph, for every differentiable float input.
/// Each error case builds something invalid and pins the exact first line of edifice::Error
/// and the "the op was defined at FILE:LINE" line.
///
/// Two executables register the same entries: op_table_tests (op_table.cpp: the checks above)
/// and op_table_jit_tests (op_table_jit.cpp: every sample, every gradient graph and every
/// run-time error case through the JIT, against the interpreter, at the tolerances documented
/// under "JIT tolerances" below).

#include <edifice/core/autodiff.hpp>
#include <edifice/core/error.hpp>
#include <edifice/core/graph.hpp>
#include <edifice/core/interpreter.hpp>
#include <edifice/core/op.hpp>
#include <edifice/core/ops.hpp>

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace edifice::optable {

using Vals = std::vector<Value>;
using Index = std::vector<std::int64_t>;

// ---------------------------------------------------------------------------------------------
// Reference arrays: what the naive references compute with.

/// A row-major array of doubles tagged with the dtype it stands for. References receive the
/// inputs as Arr (already rounded to the dtype under test) and return one Arr per output; the
/// dtype of an output Arr is the dtype the op must produce.
struct Arr {
  DType dtype = DType::f64;
  Shape shape;
  std::vector<double> v;

  Arr() = default;
  /// Zero-filled.
  Arr(DType d, Shape s);
  /// From values (must be numel(s) of them).
  Arr(DType d, Shape s, std::vector<double> values);

  std::int64_t numel() const { return static_cast<std::int64_t>(v.size()); }
  std::int64_t rank() const { return static_cast<std::int64_t>(shape.size()); }
  /// Extent of `axis`; negative counts from the end.
  std::int64_t dim(std::int64_t axis) const;

  double& operator[](std::int64_t flat) { return v[static_cast<std::size_t>(flat)]; }
  double operator[](std::int64_t flat) const { return v[static_cast<std::size_t>(flat)]; }

  std::int64_t flat(std::span<const std::int64_t> index) const;
  double& at(std::span<const std::int64_t> index) { return (*this)[flat(index)]; }
  double at(std::span<const std::int64_t> index) const { return (*this)[flat(index)]; }
  double& at(std::initializer_list<std::int64_t> index) {
    return at(std::span<const std::int64_t>(index.begin(), index.size()));
  }
  double at(std::initializer_list<std::int64_t> index) const {
    return at(std::span<const std::int64_t>(index.begin(), index.size()));
  }
};
using Arrs = std::vector<Arr>;

/// Calls f(index) for every multi-index of `shape`, row-major (once, with {}, for rank 0).
void for_each_index(const Shape& shape, const std::function<void(const Index&)>& f);

/// `value` as stored in `dtype`: rounded to float for f32, static_cast for integers.
double round_to(DType dtype, double value);

/// Elementwise f over one array; the output has dtype `out` (default: a's).
Arr map(const Arr& a, const std::function<double(double)>& f, std::optional<DType> out = {});
/// NumPy broadcast shape of two shapes (trailing axes aligned); asserts compatibility.
Shape broadcast_shape(const Shape& a, const Shape& b);
/// The element of `a` that NumPy broadcasting maps to output index `out_index`.
double broadcast_get(const Arr& a, const Index& out_index);
/// Elementwise f with NumPy broadcasting; the output has dtype `out` (default: a's).
Arr zip(const Arr& a, const Arr& b, const std::function<double(double, double)>& f,
        std::optional<DType> out = {});

// ---------------------------------------------------------------------------------------------
// Input specifications

/// How input values are drawn. The name shows up in failure messages.
struct Domain {
  std::string name;
  std::function<std::vector<double>(std::mt19937_64&, std::int64_t numel)> generate;
};

/// Uniform in [lo, hi).
Domain any(double lo = -2.0, double hi = 2.0);
/// Uniform in [lo, hi) with lo > 0 (log, sqrt, pow's base...).
Domain positive(double lo = 0.1, double hi = 3.0);
/// |x| uniform in [min_abs, max_abs), random sign: keeps abs/relu/div away from their kinks.
Domain away_from_zero(double min_abs = 0.2, double max_abs = 2.0);
/// All elements distinct and at least 0.2 apart, none within 0.1 of 0 (reduce_max, ties).
Domain distinct();
/// (2k + parity) / 4 + jitter in [-0.05, 0.05]: two inputs with different parity never come
/// within 0.15 of each other (max/min away from ties).
Domain lattice(int parity);
/// Integers in [lo, hi] (comparisons with ties; integer dtypes).
Domain small_ints(int lo, int hi);
/// Integers in [0, n): indices.
Domain indices(std::int64_t n);
/// u8 0/1 with P(1) = p.
Domain u8_mask(double p = 0.5);

/// One input of a sample.
struct In {
  Shape shape;
  Domain domain = any();
  /// Unset: the float dtype under test (f64, then f32). Set: always this dtype.
  std::optional<DType> dtype;
  /// Differentiate with respect to this input (float inputs only).
  bool grad = true;
  /// >= 0: the parameter is declared with kDynamic at this axis (the data stays concrete), so
  /// the graph goes through specialisation.
  int dynamic_axis = -1;
};
/// A float input of the dtype under test.
In fin(Shape shape, Domain domain = any());
/// A float input that is not differentiated (e.g. one whose perturbation would move a kink).
In fin_nograd(Shape shape, Domain domain = any());
/// An input of a fixed dtype (indices, masks, integer operands).
In typed(DType dtype, Shape shape, Domain domain);
/// `in` declared with a dynamic extent at `axis`.
In dyn(In in, int axis = 0);

// ---------------------------------------------------------------------------------------------
// Samples, error cases, entries

struct Tol {
  double rtol;
  double atol;
};
/// f64 values: references are written with the same formulas, so only rounding differs.
inline constexpr Tol kF64{1e-12, 1e-12};
/// f32 elementwise: a few ulp (float ulp is 1.2e-7) relative, plus absolute slack for results
/// near 0 that come out of cancellation (sin near pi, gelu of negative x).
inline constexpr Tol kF32Elementwise{1e-6, 1e-6};
/// f32 reductions, contractions and structured ops: accumulation order and length differ.
inline constexpr Tol kF32Reduction{1e-5, 1e-5};
/// Gradient vs central differences (PyTorch gradcheck defaults).
inline constexpr Tol kGrad{1e-3, 1e-5};
inline constexpr double kFiniteDifferenceEps = 1e-6;

/// Builds the outputs from the input values (parameters). `ft` is the float dtype under test.
using BuildFn = std::function<Vals(const Vals& in, DType ft)>;
/// Expected outputs, in double, from the input data.
using RefFn = std::function<Arrs(const Arrs& in, DType ft)>;
/// Instead of a reference: checks properties of the outputs with Catch2 assertions
/// (random_uniform's counter scheme and uniformity, which no single exact value shows).
using PropertyFn = std::function<void(const Arrs& in, const Arrs& out, DType ft)>;

struct Sample {
  std::string label;
  std::vector<In> inputs;
  BuildFn build;
  RefFn reference;
  PropertyFn property;
  /// Outputs entering the gradient loss sum_k <w_k, out_k>; empty: every float output.
  std::vector<int> grad_outputs;
  /// Non-empty: why this sample has no gradient check.
  std::string no_grad;
  Tol f64 = kF64;
  Tol f32 = kF32Elementwise;

  Sample(std::string label_, std::vector<In> inputs_, BuildFn build_, RefFn reference_)
      : label(std::move(label_)),
        inputs(std::move(inputs_)),
        build(std::move(build_)),
        reference(std::move(reference_)) {}

  Sample&& f32_tol(Tol t) && {
    f32 = t;
    return std::move(*this);
  }
  Sample&& f64_tol(Tol t) && {
    f64 = t;
    return std::move(*this);
  }
  Sample&& grad_on(std::vector<int> outputs) && {
    grad_outputs = std::move(outputs);
    return std::move(*this);
  }
  Sample&& without_grad(std::string why) && {
    no_grad = std::move(why);
    return std::move(*this);
  }
  Sample&& with_property(PropertyFn p) && {
    property = std::move(p);
    return std::move(*this);
  }

  /// True when the harness runs a gradient check for this sample.
  bool checks_gradient() const;
};

/// Where an error case calls the failing builder.
struct Site {
  const char* file = nullptr;
  int line = 0;
};
/// Use on the same line as the failing builder call: `at = EDF_HERE, ops::transpose(x, {0})`.
#define EDF_HERE (::edifice::optable::Site{__FILE__, __LINE__})

struct ErrorCase {
  std::string label;
  /// The exact first line of Error::what().
  std::string message;
  /// Builds the invalid node; records the site of the builder call in its argument.
  std::function<void(Site&)> build;
};

struct OpEntry {
  Op op;
  std::vector<Sample> samples;
  std::vector<ErrorCase> errors;
  /// Why the op has no gradient test (empty when its samples check gradients).
  std::string no_grad_reason;
};

using Table = std::vector<OpEntry>;

/// The whole table (built once). The parts live in op_table_*.cpp.
const Table& op_table();
void add_source_entries(Table& t);
void add_elementwise_entries(Table& t);
void add_layout_entries(Table& t);
void add_reduction_and_indexing_entries(Table& t);
void add_structured_entries(Table& t);

/// A fresh parameter for error cases (unique name).
Value param(DType dtype, Shape shape);

// ---------------------------------------------------------------------------------------------
// The backend under test

/// Runs a graph on tensors.
using Evaluator =
    std::function<std::vector<Tensor>(const Graph& graph, const std::vector<Tensor>& inputs)>;
/// Runs `graph` with the backend under test: interpret() by default; the JIT mode
/// (op_table_jit.cpp) installs jit::compile + run. Error cases that fail at run time (index out
/// of range, integer division by zero) call this rather than interpret(), so the same entries
/// hold both backends to them.
std::vector<Tensor> evaluate(const Graph& graph, const std::vector<Tensor>& inputs);
/// Installs `e` as the backend of evaluate(); an empty function restores interpret().
void set_evaluator(Evaluator e);

// ---------------------------------------------------------------------------------------------
// The harness (Catch2 assertions inside)

/// Interprets the sample with float dtype `ft` and compares with the reference (or runs the
/// property check).
void check_values(const OpEntry& entry, const Sample& sample, DType ft);
/// vjp vs central finite differences, f64.
void check_gradient(const OpEntry& entry, const Sample& sample);
/// Runs the error case and checks the message's first line and location line.
void check_error(const OpEntry& entry, const ErrorCase& error);
/// Checks that the error message `what` has a "  the op was defined at FILE:LINE" line
/// naming `site`.
void check_error_location(const std::string& what, const Site& site);
/// Problems that make the table incomplete (missing entry, no sample, no error case, neither
/// gradient samples nor a reason...), one string each naming the op.
std::vector<std::string> coverage_problems(const Table& table);

// ---------------------------------------------------------------------------------------------
// Pieces of the harness shared with the JIT mode (op_table_jit.cpp)

/// Seed for one random stream of a sample (inputs, cotangents): depends on the op, the label
/// and `what` only, so the f32 run sees the f64 run's inputs rounded.
std::uint64_t seed_for(const OpEntry& entry, const Sample& sample, std::string_view what);
/// The sample's input data for float dtype `ft`.
Arrs make_inputs(const OpEntry& entry, const Sample& sample, DType ft);
/// Parameters for the sample's inputs ("in0", "in1", ...; dynamic axes declared kDynamic).
Vals make_params(const Sample& sample, const Arrs& data);
/// One line per input: dtype, shape, dynamic axis, domain.
std::string describe_inputs(const Sample& sample, const Arrs& data);
Tensor to_tensor(const Arr& a);
std::vector<Tensor> to_tensors(const Arrs& as);
Arr from_tensor(const Tensor& t);
/// |got - want| <= atol + rtol |want|; NaN matches only NaN, an infinity only itself.
bool close(double got, double want, Tol tol);
/// "[i,j,...]" of flat index `flat` in `shape`.
std::string index_to_string(const Shape& shape, std::int64_t flat);
/// The demangled type of an exception.
std::string type_name(const std::exception& e);
/// A uniform double in [lo, hi) from 53 random bits (the same on every platform).
double uniform(std::mt19937_64& rng, double lo, double hi);

// ---------------------------------------------------------------------------------------------
// JIT tolerances: the JIT's results against the interpreter's, for the same inputs
//
// The interpreter computes elementwise f32 math in float with glibc's scalar libm (<= 1 ulp)
// and accumulates reductions, contractions and structured ops in double. The JIT contracts
// a * b + c into FMA, calls libmvec's vector math (<= 4 ulp) and accumulates in the element
// type, reassociated for vectorisation. A graph is compared at the tolerance of the loosest
// class among its ops, |jit - interpreter| <= atol + rtol |interpreter|:
//
//   class           ops                                        f32               f64
//   exact           parameter, constant, iota, random_uniform, bit-identical     bit-identical
//                   layout ops, take, select, cast, neg, abs,
//                   relu, max, min, comparisons
//   elementwise     add, sub, mul, div, sqrt (correctly        rtol 4 ulp,       rtol 4 ulp,
//                   rounded; only FMA contraction differs)     atol 1e-6         atol 1e-15
//   transcendental  exp, log, rsqrt, tanh, sigmoid, erf, sin,  rtol 8 ulp,       rtol 16 ulp,
//                   cos, gelu, pow (libmvec's <= 4 ulp vs      atol 1e-6         atol 4e-15
//                   libm's <= 1 ulp)
//   reduction       reduce_*, dot_general, scatter_add, the    rtol 1e-5,        rtol 1e-12,
//                   structured ops (float vs double            atol 1e-5         atol 1e-12
//                   accumulation, order)
//
// (ulp: 2^-23 for f32, 2^-52 for f64.) The absolute parts cover results near 0 that come out of
// cancellation (1 + erf(x) in gelu, 1 - tanh^2 and sums of cotangents in gradient graphs);
// inputs are O(1) in every sample. Measured over the whole table (AVX-512 host): elementwise
// bit-identical; transcendental at most 1e-7 (f32) and 9e-16 (f64) apart; reductions at most
// 3.1e-5 apart in f32 (at a value of 316, i.e. 1 ulp) and 1.2e-15 in f64.
// Integer and u8 outputs are always compared exactly.

enum class JitOpClass { exact = 0, elementwise = 1, transcendental = 2, reduction = 3 };
JitOpClass jit_op_class(Op op);
const char* jit_op_class_name(JitOpClass c);
Tol jit_tolerance(JitOpClass c, DType float_dtype);
/// The loosest class among the ops `graph` computes.
JitOpClass jit_op_class(const Graph& graph);

}  // namespace edifice::optable
