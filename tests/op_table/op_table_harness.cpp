#include "op_table_harness.hpp"

#include <fmt/format.h>
#include <catch2/catch.hpp>

#include <cxxabi.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <map>
#include <memory>
#include <numeric>
#include <set>
#include <typeinfo>

namespace edifice::optable {

// ---------------------------------------------------------------------------------------------
// Arr and reference helpers

namespace {

std::int64_t checked_numel(const Shape& s) {
  std::int64_t n = 1;
  for (std::int64_t e : s) {
    if (e < 0) throw std::logic_error("op table: reference array with negative extent");
    n *= e;
  }
  return n;
}

}  // namespace

std::string index_to_string(const Shape& shape, std::int64_t flat) {
  Index idx(shape.size());
  for (std::size_t a = shape.size(); a-- > 0;) {
    idx[a] = flat % shape[a];
    flat /= shape[a];
  }
  return fmt::format("[{}]", fmt::join(idx, ","));
}

Arr::Arr(DType d, Shape s) : dtype(d), shape(std::move(s)) {
  v.assign(static_cast<std::size_t>(checked_numel(shape)), 0.0);
}

Arr::Arr(DType d, Shape s, std::vector<double> values)
    : dtype(d), shape(std::move(s)), v(std::move(values)) {
  if (static_cast<std::int64_t>(v.size()) != checked_numel(shape))
    throw std::logic_error("op table: Arr value count does not match its shape");
}

std::int64_t Arr::dim(std::int64_t axis) const {
  if (axis < 0) axis += rank();
  return shape.at(static_cast<std::size_t>(axis));
}

std::int64_t Arr::flat(std::span<const std::int64_t> index) const {
  if (index.size() != shape.size()) throw std::logic_error("op table: Arr index of wrong rank");
  std::int64_t f = 0;
  for (std::size_t a = 0; a < shape.size(); ++a) {
    if (index[a] < 0 || index[a] >= shape[a])
      throw std::logic_error("op table: Arr index out of range");
    f = f * shape[a] + index[a];
  }
  return f;
}

void for_each_index(const Shape& shape, const std::function<void(const Index&)>& f) {
  for (std::int64_t e : shape)
    if (e == 0) return;
  Index idx(shape.size(), 0);
  while (true) {
    f(idx);
    std::size_t a = shape.size();
    while (a > 0) {
      --a;
      if (++idx[a] < shape[a]) break;
      idx[a] = 0;
      if (a == 0) return;
    }
    if (shape.empty()) return;
  }
}

double round_to(DType dtype, double value) {
  switch (dtype) {
    case DType::f32:
      return static_cast<double>(static_cast<float>(value));
    case DType::f64:
      return value;
    case DType::i32:
      return static_cast<double>(static_cast<std::int32_t>(value));
    case DType::i64:
      return static_cast<double>(static_cast<std::int64_t>(value));
    case DType::u8:
      return static_cast<double>(static_cast<std::uint8_t>(value));
  }
  return value;
}

Arr map(const Arr& a, const std::function<double(double)>& f, std::optional<DType> out) {
  Arr r(out.value_or(a.dtype), a.shape);
  for (std::int64_t i = 0; i < a.numel(); ++i) r[i] = f(a[i]);
  return r;
}

Shape broadcast_shape(const Shape& a, const Shape& b) {
  std::size_t rank = std::max(a.size(), b.size());
  Shape out(rank, 1);
  for (std::size_t i = 0; i < rank; ++i) {
    std::int64_t ea = i < rank - a.size() ? 1 : a[i - (rank - a.size())];
    std::int64_t eb = i < rank - b.size() ? 1 : b[i - (rank - b.size())];
    if (ea != eb && ea != 1 && eb != 1)
      throw std::logic_error("op table: reference broadcast of incompatible shapes");
    out[i] = ea == 1 ? eb : ea;
  }
  return out;
}

double broadcast_get(const Arr& a, const Index& out_index) {
  std::size_t lead = out_index.size() - a.shape.size();
  Index idx(a.shape.size());
  for (std::size_t i = 0; i < a.shape.size(); ++i)
    idx[i] = a.shape[i] == 1 ? 0 : out_index[lead + i];
  return a.at(idx);
}

Arr zip(const Arr& a, const Arr& b, const std::function<double(double, double)>& f,
        std::optional<DType> out) {
  Arr r(out.value_or(a.dtype), broadcast_shape(a.shape, b.shape));
  for_each_index(r.shape,
                 [&](const Index& i) { r.at(i) = f(broadcast_get(a, i), broadcast_get(b, i)); });
  return r;
}

// ---------------------------------------------------------------------------------------------
// Domains

double uniform(std::mt19937_64& rng, double lo, double hi) {
  // 53 random bits: the same stream on every platform (unlike std::uniform_real_distribution).
  double u = static_cast<double>(rng() >> 11) * 0x1.0p-53;
  return lo + (hi - lo) * u;
}

namespace {

std::int64_t uniform_int(std::mt19937_64& rng, std::int64_t lo, std::int64_t hi) {
  return lo + static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(hi - lo + 1));
}

}  // namespace

Domain any(double lo, double hi) {
  return {fmt::format("any in [{}, {})", lo, hi), [lo, hi](std::mt19937_64& rng, std::int64_t n) {
            std::vector<double> v(static_cast<std::size_t>(n));
            for (double& x : v) x = uniform(rng, lo, hi);
            return v;
          }};
}

Domain positive(double lo, double hi) {
  Domain d = any(lo, hi);
  d.name = fmt::format("positive in [{}, {})", lo, hi);
  return d;
}

Domain away_from_zero(double min_abs, double max_abs) {
  return {fmt::format("away from 0: |x| in [{}, {})", min_abs, max_abs),
          [min_abs, max_abs](std::mt19937_64& rng, std::int64_t n) {
            std::vector<double> v(static_cast<std::size_t>(n));
            for (double& x : v) {
              x = uniform(rng, min_abs, max_abs);
              if (rng() & 1) x = -x;
            }
            return v;
          }};
}

Domain distinct() {
  return {"distinct, 0.2 apart, away from 0", [](std::mt19937_64& rng, std::int64_t n) {
            std::vector<std::int64_t> perm(static_cast<std::size_t>(n));
            std::iota(perm.begin(), perm.end(), 0);
            for (std::size_t i = perm.size(); i > 1; --i) std::swap(perm[i - 1], perm[rng() % i]);
            std::vector<double> v(static_cast<std::size_t>(n));
            for (std::size_t i = 0; i < v.size(); ++i)
              v[i] = 0.3 * static_cast<double>(perm[i] - n / 2) + 0.15 + uniform(rng, -0.04, 0.04);
            return v;
          }};
}

Domain lattice(int parity) {
  return {fmt::format("lattice (2k+{})/4 +- 0.05", parity),
          [parity](std::mt19937_64& rng, std::int64_t n) {
            std::vector<double> v(static_cast<std::size_t>(n));
            for (double& x : v)
              x = static_cast<double>(2 * uniform_int(rng, -4, 3) + parity) * 0.25 +
                  uniform(rng, -0.05, 0.05);
            return v;
          }};
}

Domain small_ints(int lo, int hi) {
  return {fmt::format("integers in [{}, {}]", lo, hi),
          [lo, hi](std::mt19937_64& rng, std::int64_t n) {
            std::vector<double> v(static_cast<std::size_t>(n));
            for (double& x : v) x = static_cast<double>(uniform_int(rng, lo, hi));
            return v;
          }};
}

Domain indices(std::int64_t count) {
  return {fmt::format("indices in [0, {})", count), [count](std::mt19937_64& rng, std::int64_t n) {
            std::vector<double> v(static_cast<std::size_t>(n));
            for (double& x : v) x = static_cast<double>(uniform_int(rng, 0, count - 1));
            return v;
          }};
}

Domain u8_mask(double p) {
  return {fmt::format("u8 mask, P(1) = {}", p), [p](std::mt19937_64& rng, std::int64_t n) {
            std::vector<double> v(static_cast<std::size_t>(n));
            for (double& x : v) x = uniform(rng, 0.0, 1.0) < p ? 1.0 : 0.0;
            return v;
          }};
}

In fin(Shape shape, Domain domain) {
  return In{std::move(shape), std::move(domain), {}, true, -1};
}

In fin_nograd(Shape shape, Domain domain) {
  return In{std::move(shape), std::move(domain), {}, false, -1};
}

In typed(DType dtype, Shape shape, Domain domain) {
  return In{std::move(shape), std::move(domain), dtype, false, -1};
}

In dyn(In in, int axis) {
  in.dynamic_axis = axis;
  return in;
}

bool Sample::checks_gradient() const {
  if (!no_grad.empty() || property) return false;
  return std::any_of(inputs.begin(), inputs.end(),
                     [](const In& in) { return !in.dtype && in.grad; });
}

Value param(DType dtype, Shape shape) {
  static int counter = 0;
  return ops::parameter(fmt::format("p{}", counter++), dtype, std::move(shape));
}

const Table& op_table() {
  static const Table table = [] {
    Table t;
    add_source_entries(t);
    add_elementwise_entries(t);
    add_layout_entries(t);
    add_reduction_and_indexing_entries(t);
    add_structured_entries(t);
    return t;
  }();
  return table;
}

// ---------------------------------------------------------------------------------------------
// Running samples

namespace {

std::uint64_t fnv1a(std::uint64_t h, std::string_view s) {
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return h;
}

Evaluator& evaluator() {
  static Evaluator e;
  return e;
}

}  // namespace

std::vector<Tensor> evaluate(const Graph& graph, const std::vector<Tensor>& inputs) {
  if (evaluator()) return evaluator()(graph, inputs);
  return interpret(graph, inputs);
}

void set_evaluator(Evaluator e) {
  evaluator() = std::move(e);
}

std::uint64_t seed_for(const OpEntry& entry, const Sample& sample, std::string_view what) {
  std::uint64_t h = 0xcbf29ce484222325ULL;
  h = fnv1a(h, op_name(entry.op));
  h = fnv1a(h, "/");
  h = fnv1a(h, sample.label);
  h = fnv1a(h, "/");
  return fnv1a(h, what);
}

Arrs make_inputs(const OpEntry& entry, const Sample& sample, DType ft) {
  Arrs data;
  for (std::size_t i = 0; i < sample.inputs.size(); ++i) {
    const In& in = sample.inputs[i];
    std::mt19937_64 rng(seed_for(entry, sample, fmt::format("input{}", i)));
    DType dtype = in.dtype.value_or(ft);
    std::vector<double> v = in.domain.generate(rng, checked_numel(in.shape));
    for (double& x : v) x = round_to(dtype, x);
    data.emplace_back(dtype, in.shape, std::move(v));
  }
  return data;
}

Tensor to_tensor(const Arr& a) {
  Tensor t(a.dtype, a.shape);
  for (std::int64_t i = 0; i < a.numel(); ++i) t.set_from_double(i, a[i]);
  return t;
}

Arr from_tensor(const Tensor& t) {
  Arr a(t.dtype(), t.shape());
  for (std::int64_t i = 0; i < t.numel(); ++i) a[i] = t.get_as_double(i);
  return a;
}

std::vector<Tensor> to_tensors(const Arrs& as) {
  std::vector<Tensor> ts;
  for (const Arr& a : as) ts.push_back(to_tensor(a));
  return ts;
}

Vals make_params(const Sample& sample, const Arrs& data) {
  Vals params;
  for (std::size_t i = 0; i < data.size(); ++i) {
    Shape declared = data[i].shape;
    int axis = sample.inputs[i].dynamic_axis;
    if (axis >= 0) declared.at(static_cast<std::size_t>(axis)) = kDynamic;
    params.push_back(ops::parameter(fmt::format("in{}", i), data[i].dtype, declared));
  }
  return params;
}

std::string describe_inputs(const Sample& sample, const Arrs& data) {
  std::string s;
  for (std::size_t i = 0; i < data.size(); ++i) {
    const In& in = sample.inputs[i];
    s += fmt::format(
        "  in{}: {}{}{} ({})\n", i, dtype_name(data[i].dtype), shape_to_string(data[i].shape),
        in.dynamic_axis >= 0 ? fmt::format(" declared dynamic at axis {}", in.dynamic_axis) : "",
        in.domain.name);
  }
  return s;
}

std::string type_name(const std::exception& e) {
  int status = 0;
  std::unique_ptr<char, void (*)(void*)> name(
      abi::__cxa_demangle(typeid(e).name(), nullptr, nullptr, &status), std::free);
  return status == 0 && name ? name.get() : typeid(e).name();
}

bool close(double got, double want, Tol tol) {
  if (std::isnan(got) || std::isnan(want)) return std::isnan(got) && std::isnan(want);
  if (std::isinf(want)) return got == want;
  return std::abs(got - want) <= tol.atol + tol.rtol * std::abs(want);
}

namespace {

/// Runs `f`; an exception becomes a test failure naming `phase`. Returns false if it threw.
template <class F>
bool attempt(const char* phase, F&& f) {
  try {
    f();
    return true;
  } catch (const std::exception& e) {
    FAIL_CHECK(phase << " threw " << type_name(e) << ":\n" << e.what());
    return false;
  }
}

/// Compares output `k`: dtype, shape (also of the built Value's inferred type) and values.
void compare_output(std::size_t k, const Value& value, const Tensor& got_tensor, const Arr& want,
                    Tol tol) {
  INFO("output " << k);
  CHECK(dtype_name(value.dtype()) == dtype_name(want.dtype));  // inferred dtype
  bool inferred_shape_ok = value.rank() == want.rank();
  for (std::size_t a = 0; inferred_shape_ok && a < want.shape.size(); ++a)
    inferred_shape_ok = value.shape()[a] == kDynamic || value.shape()[a] == want.shape[a];
  INFO("inferred type " << value.type().to_string() << ", reference shape "
                        << shape_to_string(want.shape));
  CHECK(inferred_shape_ok);
  CHECK(dtype_name(got_tensor.dtype()) == dtype_name(want.dtype));
  REQUIRE(shape_to_string(got_tensor.shape()) == shape_to_string(want.shape));
  Arr got = from_tensor(got_tensor);
  Tol t = is_floating(want.dtype) ? tol : Tol{0.0, 0.0};
  std::int64_t bad = 0;
  std::string report;
  for (std::int64_t i = 0; i < want.numel(); ++i) {
    if (close(got[i], want[i], t)) continue;
    if (++bad <= 6)
      report +=
          fmt::format("  at {}: got {:.17g}, expected {:.17g} (diff {:.3g})\n",
                      index_to_string(want.shape, i), got[i], want[i], std::abs(got[i] - want[i]));
  }
  INFO(bad << " of " << want.numel() << " elements differ beyond rtol " << t.rtol << " atol "
           << t.atol << ":\n"
           << report);
  CHECK(bad == 0);
}

std::string context(const OpEntry& entry, const Sample& sample) {
  return fmt::format("op {} sample \"{}\"", op_name(entry.op), sample.label);
}

}  // namespace

void check_values(const OpEntry& entry, const Sample& sample, DType ft) {
  INFO(context(entry, sample) << " in " << dtype_name(ft));
  Arrs data = make_inputs(entry, sample, ft);
  INFO(describe_inputs(sample, data));
  Vals params = make_params(sample, data);
  Vals outputs;
  if (!attempt("building the graph", [&] { outputs = sample.build(params, ft); })) return;
  std::vector<Tensor> inputs = to_tensors(data);
  std::vector<Tensor> results;
  if (!attempt("interpret", [&] { results = interpret(Graph(params, outputs), inputs); })) return;
  REQUIRE(results.size() == outputs.size());
  // The interpreter must not write to its inputs.
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    INFO("input " << i << " was modified by interpret");
    CHECK(inputs[i].bitwise_equal(to_tensor(data[i])));
  }
  Arrs got;
  for (const Tensor& t : results) got.push_back(from_tensor(t));
  if (sample.property) {
    attempt("property check", [&] { sample.property(data, got, ft); });
    return;
  }
  Arrs want;
  if (!attempt("reference", [&] { want = sample.reference(data, ft); })) return;
  REQUIRE(want.size() == results.size());
  Tol tol = ft == DType::f64 ? sample.f64 : sample.f32;
  for (std::size_t k = 0; k < want.size(); ++k)
    compare_output(k, outputs[k], results[k], want[k], tol);
}

void check_gradient(const OpEntry& entry, const Sample& sample) {
  INFO(context(entry, sample) << ": gradient in f64 vs central differences");
  Arrs data = make_inputs(entry, sample, DType::f64);
  INFO(describe_inputs(sample, data));
  Vals params = make_params(sample, data);
  Vals outputs;
  if (!attempt("building the graph", [&] { outputs = sample.build(params, DType::f64); })) return;

  std::vector<int> selected = sample.grad_outputs;
  if (selected.empty())
    for (std::size_t k = 0; k < outputs.size(); ++k)
      if (is_floating(outputs[k].dtype())) selected.push_back(static_cast<int>(k));
  Vals loss_outputs;
  for (int k : selected) loss_outputs.push_back(outputs.at(static_cast<std::size_t>(k)));
  std::vector<std::size_t> wrt;
  Vals wrt_values;
  for (std::size_t i = 0; i < data.size(); ++i)
    if (!sample.inputs[i].dtype && sample.inputs[i].grad) {
      wrt.push_back(i);
      wrt_values.push_back(params[i]);
    }
  INFO("loss = sum_k <w_k, outputs[k]> over outputs " << fmt::format("{}", fmt::join(selected, ","))
                                                      << " with fixed random w_k");

  Graph forward;
  std::vector<Tensor> inputs = to_tensors(data);
  std::vector<Tensor> base;
  if (!attempt("interpret (forward)", [&] {
        forward = Graph(params, loss_outputs);
        base = interpret(forward, inputs);
      }))
    return;

  // Cotangents enter as parameters so they can take the outputs' (possibly dynamic) types.
  std::mt19937_64 rng(seed_for(entry, sample, "cotangents"));
  Arrs weights;
  Vals cot_params;
  for (std::size_t k = 0; k < base.size(); ++k) {
    // Cotangents have the output's dtype (an f32 output of cast gets an f32 cotangent).
    DType dt = loss_outputs[k].dtype();
    Arr w(dt, base[k].shape());
    for (double& x : w.v) x = round_to(dt, uniform(rng, -1.0, 1.0));
    weights.push_back(std::move(w));
    cot_params.push_back(ops::parameter(fmt::format("cot{}", k), dt, loss_outputs[k].shape()));
  }
  auto loss_of = [&](const std::vector<Tensor>& outs) {
    double l = 0.0;
    for (std::size_t k = 0; k < outs.size(); ++k)
      for (std::int64_t i = 0; i < outs[k].numel(); ++i)
        l += weights[k][i] * outs[k].get_as_double(i);
    return l;
  };

  std::vector<Tensor> analytic;
  if (!attempt("vjp / interpret (gradient graph)", [&] {
        Vals grads = vjp(loss_outputs, cot_params, wrt_values);
        REQUIRE(grads.size() == wrt_values.size());
        Vals all_params = params;
        all_params.insert(all_params.end(), cot_params.begin(), cot_params.end());
        std::vector<Tensor> all_inputs = inputs;
        for (const Arr& w : weights) all_inputs.push_back(to_tensor(w));
        analytic = interpret(Graph(all_params, grads), all_inputs);
      }))
    return;
  REQUIRE(analytic.size() == wrt.size());

  for (std::size_t j = 0; j < wrt.size(); ++j) {
    std::size_t i = wrt[j];
    INFO("gradient with respect to in" << i);
    CHECK(dtype_name(analytic[j].dtype()) == dtype_name(DType::f64));
    REQUIRE(shape_to_string(analytic[j].shape()) == shape_to_string(data[i].shape));
    std::int64_t bad = 0;
    std::string report;
    for (std::int64_t e = 0; e < data[i].numel(); ++e) {
      double numeric = 0.0;
      bool ok = attempt("interpret (finite differences)", [&] {
        std::vector<Tensor> perturbed = inputs;
        perturbed[i] = inputs[i].clone();
        perturbed[i].set_from_double(e, data[i][e] + kFiniteDifferenceEps);
        double plus = loss_of(interpret(forward, perturbed));
        perturbed[i].set_from_double(e, data[i][e] - kFiniteDifferenceEps);
        double minus = loss_of(interpret(forward, perturbed));
        numeric = (plus - minus) / (2 * kFiniteDifferenceEps);
      });
      if (!ok) return;
      double got = analytic[j].get_as_double(e);
      if (close(got, numeric, kGrad)) continue;
      if (++bad <= 6)
        report += fmt::format("  at {}: vjp {:.10g}, finite differences {:.10g}\n",
                              index_to_string(data[i].shape, e), got, numeric);
    }
    INFO(bad << " of " << data[i].numel() << " elements differ beyond rtol " << kGrad.rtol
             << " atol " << kGrad.atol << ":\n"
             << report);
    CHECK(bad == 0);
  }
}

void check_error(const OpEntry& entry, const ErrorCase& error) {
  INFO("op " << op_name(entry.op) << " error case \"" << error.label << "\"");
  Site site;
  std::optional<std::string> what;
  try {
    error.build(site);
  } catch (const Error& e) {
    what = e.what();
  } catch (const std::exception& e) {
    FAIL("threw " << type_name(e) << " instead of edifice::Error:\n" << e.what());
  }
  if (!what) FAIL("no edifice::Error was thrown; expected \"" << error.message << "\"");
  INFO("full message:\n" << *what);
  CHECK(what->substr(0, what->find('\n')) == error.message);
  check_error_location(*what, site);
}

void check_error_location(const std::string& what, const Site& site) {
  std::vector<std::string> lines;
  std::size_t start = 0;
  while (start <= what.size()) {
    std::size_t end = what.find('\n', start);
    if (end == std::string::npos) end = what.size();
    lines.push_back(what.substr(start, end - start));
    start = end + 1;
  }
  REQUIRE(site.line != 0);  // the case forgot `at = EDF_HERE, builder(...)`
  const std::string prefix = "  the op was defined at ";
  std::string file = site.file;
  std::string base = file.substr(file.find_last_of('/') + 1);
  std::string suffix = fmt::format(":{}", site.line);
  bool found = false;
  for (const std::string& l : lines)
    if (l.rfind(prefix, 0) == 0) {
      found = true;
      INFO("location line \"" << l << "\", expected " << base << suffix);
      CHECK(l.find(base) != std::string::npos);
      CHECK(l.size() >= suffix.size());
      CHECK(l.compare(l.size() - std::min(l.size(), suffix.size()), suffix.size(), suffix) == 0);
    }
  INFO("expected a line starting with \"" << prefix << "\"");
  CHECK(found);
}

std::vector<std::string> coverage_problems(const Table& table) {
  std::vector<std::string> problems;
  std::map<Op, int> count;
  for (const OpEntry& e : table) ++count[e.op];
  for (Op op : all_ops()) {
    std::string name(op_name(op));
    if (count[op] == 0) {
      problems.push_back(name + ": no op-table entry");
      continue;
    }
    if (count[op] > 1) problems.push_back(name + ": more than one op-table entry");
  }
  for (const OpEntry& e : table) {
    std::string name(op_name(e.op));
    if (e.samples.empty()) problems.push_back(name + ": no sample");
    if (e.errors.empty()) problems.push_back(name + ": no error case");
    bool any_grad = false;
    std::set<std::string> labels;
    for (const Sample& s : e.samples) {
      any_grad = any_grad || s.checks_gradient();
      if (!labels.insert(s.label).second)
        problems.push_back(name + ": duplicate sample label \"" + s.label + "\"");
      if (!s.build) problems.push_back(name + ": sample \"" + s.label + "\" has no builder");
      if (!s.reference && !s.property)
        problems.push_back(name + ": sample \"" + s.label + "\" has no reference");
    }
    if (e.no_grad_reason.empty() && !any_grad)
      problems.push_back(name + ": neither gradient samples nor a reason for having none");
    std::set<std::string> error_labels;
    for (const ErrorCase& c : e.errors) {
      if (c.message.empty())
        problems.push_back(name + ": error case \"" + c.label + "\" pins no message");
      if (!error_labels.insert(c.label).second)
        problems.push_back(name + ": duplicate error label \"" + c.label + "\"");
    }
  }
  return problems;
}

// ---------------------------------------------------------------------------------------------
// JIT tolerances (the table of classes is in the header)

JitOpClass jit_op_class(Op op) {
  switch (op) {
    case Op::parameter:
    case Op::constant:
    case Op::iota:
    case Op::random_uniform:
    case Op::neg:
    case Op::abs:
    case Op::relu:
    case Op::max:
    case Op::min:
    case Op::eq:
    case Op::ne:
    case Op::lt:
    case Op::le:
    case Op::gt:
    case Op::ge:
    case Op::select:
    case Op::cast:
    case Op::broadcast_in_dim:
    case Op::reshape:
    case Op::transpose:
    case Op::slice:
    case Op::pad:
    case Op::concat:
    case Op::take:
      return JitOpClass::exact;
    case Op::add:
    case Op::sub:
    case Op::mul:
    case Op::div:
    case Op::sqrt:
      return JitOpClass::elementwise;
    case Op::exp:
    case Op::log:
    case Op::rsqrt:
    case Op::tanh:
    case Op::sigmoid:
    case Op::erf:
    case Op::sin:
    case Op::cos:
    case Op::gelu:
    case Op::pow:
      return JitOpClass::transcendental;
    case Op::reduce_sum:
    case Op::reduce_max:
    case Op::reduce_mean:
    case Op::dot_general:
    case Op::scatter_add:
    case Op::softmax:
    case Op::layer_norm:
    case Op::layer_norm_backward:
    case Op::attention:
    case Op::attention_backward:
    case Op::lstm_scan:
    case Op::lstm_scan_backward:
      return JitOpClass::reduction;
  }
  return JitOpClass::reduction;
}

const char* jit_op_class_name(JitOpClass c) {
  switch (c) {
    case JitOpClass::exact:
      return "exact";
    case JitOpClass::elementwise:
      return "elementwise";
    case JitOpClass::transcendental:
      return "transcendental";
    case JitOpClass::reduction:
      return "reduction";
  }
  return "?";
}

Tol jit_tolerance(JitOpClass c, DType float_dtype) {
  constexpr double f32_ulp = 0x1p-23, f64_ulp = 0x1p-52;
  const bool f32 = float_dtype == DType::f32;
  switch (c) {
    case JitOpClass::exact:
      return {0.0, 0.0};
    case JitOpClass::elementwise:
      return f32 ? Tol{4 * f32_ulp, 1e-6} : Tol{4 * f64_ulp, 1e-15};
    case JitOpClass::transcendental:
      return f32 ? Tol{8 * f32_ulp, 1e-6} : Tol{16 * f64_ulp, 4e-15};
    case JitOpClass::reduction:
      return f32 ? Tol{1e-5, 1e-5} : Tol{1e-12, 1e-12};
  }
  return {0.0, 0.0};
}

JitOpClass jit_op_class(const Graph& graph) {
  JitOpClass worst = JitOpClass::exact;
  for (const Node* n : graph.nodes()) worst = std::max(worst, jit_op_class(n->op()));
  return worst;
}

}  // namespace edifice::optable
