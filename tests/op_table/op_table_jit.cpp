// The op-test table through the JIT (the op_table_jit_tests executable): the same entries as
// op_table_tests (op_table_{sources,elementwise,layout,reductions,structured}.cpp), a different
// registration. For every op of EDIFICE_FOR_EACH_OP one test case
//   1. compiles every sample's graph with jit::compile and compares the JIT's outputs with the
//      interpreter's for the same inputs, in f64 and in f32 (tolerances: the op classes
//      documented in op_table_harness.hpp; integer outputs exactly); property samples also run
//      their property check on the JIT's outputs;
//   2. compiles the gradient graph (vjp with cotangent parameters, as check_gradient builds it)
//      of every gradient-checked sample, in f64 and in f32, and compares it likewise;
//   3. runs every run-time error case (those that call evaluate(): index out of range, integer
//      division by zero) with the JIT as the backend: it must throw edifice::Error whose first
//      line starts with the op's name and names the kernel, followed by the op's location line.
// Coverage rule: the test case fails naming the op and the sample if any of its samples (values
// in either dtype, or gradient graph) or run-time error cases did not run through the JIT, e.g.
// because compilation threw.
#include "op_table_harness.hpp"

#include <edifice/jit/jit.hpp>

#include <fmt/format.h>
#include <catch2/catch.hpp>

#include <cmath>
#include <optional>

namespace edifice::optable {
namespace {

jit::Options jit_options() {
  jit::Options o;
  o.disk_cache = false;  // never touch ~/.cache from tests
  return o;
}

std::vector<Shape> shapes_of(const std::vector<Tensor>& ts) {
  std::vector<Shape> shapes;
  for (const Tensor& t : ts) shapes.push_back(t.shape());
  return shapes;
}

std::string first_line(const std::string& s) {
  return s.substr(0, s.find('\n'));
}

/// What happened to one unit of coverage (a sample in one dtype, a gradient graph, an error
/// case). `ran` means the JIT compiled and ran it (whether or not the values matched: a
/// mismatch is a failure of its own).
struct Outcome {
  bool ran = false;
  std::string why_not;  // when !ran
};

Outcome not_run(std::string why) {
  return Outcome{false, std::move(why)};
}

/// Compiles and runs `graph`; failures (exceptions) become test failures and a not-run outcome.
std::optional<std::vector<Tensor>> run_jit(const Graph& graph, const std::vector<Tensor>& inputs,
                                           Outcome& outcome) {
  std::shared_ptr<const jit::Executable> exe;
  try {
    exe = jit::compile(graph, shapes_of(inputs), jit_options());
  } catch (const std::exception& e) {
    FAIL_CHECK("jit::compile threw " << type_name(e) << ":\n" << e.what());
    outcome = not_run("jit::compile threw: " + first_line(e.what()));
    return std::nullopt;
  }
  try {
    return exe->run(inputs);
  } catch (const std::exception& e) {
    FAIL_CHECK("Executable::run threw " << type_name(e) << ":\n"
                                        << e.what() << "\nplan:\n"
                                        << exe->plan());
    outcome = not_run("Executable::run threw: " + first_line(e.what()));
    return std::nullopt;
  }
}

/// JIT output `k` against the interpreter's: dtype, shape and values within `tol` (floats) or
/// exactly (integers). Non-fatal: reports and returns.
void compare(const std::string& what, const Tensor& got, const Tensor& want, Tol tol) {
  INFO(what);
  CHECK(dtype_name(got.dtype()) == dtype_name(want.dtype()));
  CHECK(shape_to_string(got.shape()) == shape_to_string(want.shape()));
  if (got.dtype() != want.dtype() || got.shape() != want.shape()) return;
  Tol t = is_floating(want.dtype()) ? tol : Tol{0.0, 0.0};
  std::int64_t bad = 0;
  std::string report;
  for (std::int64_t i = 0; i < want.numel(); ++i) {
    double g = got.get_as_double(i), w = want.get_as_double(i);
    if (close(g, w, t)) continue;
    if (++bad <= 6)
      report += fmt::format("  at {}: jit {:.17g}, interpreter {:.17g} (diff {:.3g})\n",
                            index_to_string(want.shape(), i), g, w, std::abs(g - w));
  }
  INFO(bad << " of " << want.numel() << " elements differ beyond rtol " << t.rtol << " atol "
           << t.atol << ":\n"
           << report);
  CHECK(bad == 0);
}

/// The JIT against the interpreter on `graph`: both run on `inputs`; the JIT must not write to
/// them. Returns the JIT's outputs when it ran.
std::optional<std::vector<Tensor>> check_graph(const Graph& graph,
                                               const std::vector<Tensor>& inputs, DType ft,
                                               Outcome& outcome) {
  std::vector<Tensor> want;
  try {
    want = interpret(graph, inputs);
  } catch (const std::exception& e) {
    FAIL_CHECK("interpret threw " << type_name(e) << ":\n" << e.what());
    outcome = not_run("the interpreter threw: " + first_line(e.what()));
    return std::nullopt;
  }
  std::vector<Tensor> pristine;
  for (const Tensor& t : inputs) pristine.push_back(t.clone());
  auto got = run_jit(graph, inputs, outcome);
  if (!got) return std::nullopt;
  outcome.ran = true;
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    INFO("input " << i << " was modified by the JIT");
    CHECK(inputs[i].bitwise_equal(pristine[i]));
  }
  CHECK(got->size() == want.size());
  if (got->size() != want.size()) return got;
  JitOpClass cls = jit_op_class(graph);
  for (std::size_t k = 0; k < want.size(); ++k) {
    // f32 tolerances when the sample's float dtype or this output is f32 (casts mix them).
    bool f32 = ft == DType::f32 || want[k].dtype() == DType::f32;
    Tol tol = jit_tolerance(cls, f32 ? DType::f32 : DType::f64);
    compare(fmt::format("output {} (tolerance class: {})", k, jit_op_class_name(cls)), (*got)[k],
            want[k], tol);
  }
  return got;
}

std::string context(const OpEntry& entry, const Sample& sample) {
  return fmt::format("op {} sample \"{}\"", op_name(entry.op), sample.label);
}

Outcome check_jit_values(const OpEntry& entry, const Sample& sample, DType ft) {
  INFO(context(entry, sample) << " in " << dtype_name(ft) << ": JIT vs interpreter");
  Arrs data = make_inputs(entry, sample, ft);
  INFO(describe_inputs(sample, data));
  Vals params = make_params(sample, data);
  Vals outputs;
  Graph graph;
  try {
    outputs = sample.build(params, ft);
    graph = Graph(params, outputs);
  } catch (const std::exception& e) {
    FAIL_CHECK("building the graph threw " << type_name(e) << ":\n" << e.what());
    return not_run("building the graph threw: " + first_line(e.what()));
  }
  INFO("graph:\n" << graph.to_string());
  Outcome outcome;
  auto got = check_graph(graph, to_tensors(data), ft, outcome);
  if (got && sample.property) {
    Arrs got_arrs;
    for (const Tensor& t : *got) got_arrs.push_back(from_tensor(t));
    INFO("property check on the JIT's outputs");
    try {
      sample.property(data, got_arrs, ft);
    } catch (const std::exception& e) {
      FAIL_CHECK("the property check threw " << type_name(e) << ":\n" << e.what());
    }
  }
  return outcome;
}

/// The gradient graph check_gradient builds (vjp of sum_k <w_k, out_k> with the cotangents as
/// parameters), in dtype `ft`, through the JIT and the interpreter.
Outcome check_jit_gradient(const OpEntry& entry, const Sample& sample, DType ft) {
  INFO(context(entry, sample) << ": gradient graph in " << dtype_name(ft)
                              << ", JIT vs interpreter");
  Arrs data = make_inputs(entry, sample, ft);
  INFO(describe_inputs(sample, data));
  Vals params = make_params(sample, data);
  Graph graph;
  std::vector<Tensor> inputs = to_tensors(data);
  try {
    Vals outputs = sample.build(params, ft);
    std::vector<int> selected = sample.grad_outputs;
    if (selected.empty())
      for (std::size_t k = 0; k < outputs.size(); ++k)
        if (is_floating(outputs[k].dtype())) selected.push_back(static_cast<int>(k));
    Vals loss_outputs, wrt, cot_params;
    for (int k : selected) loss_outputs.push_back(outputs.at(static_cast<std::size_t>(k)));
    for (std::size_t i = 0; i < data.size(); ++i)
      if (!sample.inputs[i].dtype && sample.inputs[i].grad) wrt.push_back(params[i]);
    std::mt19937_64 rng(seed_for(entry, sample, "cotangents"));
    for (std::size_t k = 0; k < loss_outputs.size(); ++k) {
      // Declared like the output (possibly dynamic), bound by the data like the inputs.
      DType dt = loss_outputs[k].dtype();
      cot_params.push_back(ops::parameter(fmt::format("cot{}", k), dt, loss_outputs[k].shape()));
    }
    std::vector<Tensor> forward = interpret(Graph(params, loss_outputs), inputs);
    for (std::size_t k = 0; k < forward.size(); ++k) {
      DType dt = loss_outputs[k].dtype();
      Arr w(dt, forward[k].shape());
      for (double& x : w.v) x = round_to(dt, uniform(rng, -1.0, 1.0));
      inputs.push_back(to_tensor(w));
    }
    Vals grads = vjp(loss_outputs, cot_params, wrt);
    Vals all_params = params;
    all_params.insert(all_params.end(), cot_params.begin(), cot_params.end());
    graph = Graph(all_params, grads);
  } catch (const std::exception& e) {
    FAIL_CHECK("building the gradient graph threw " << type_name(e) << ":\n" << e.what());
    return not_run("building the gradient graph threw: " + first_line(e.what()));
  }
  INFO("gradient graph:\n" << graph.to_string());
  Outcome outcome;
  check_graph(graph, inputs, ft, outcome);
  return outcome;
}

/// Runs an error case with the JIT behind evaluate(). Cases that never call evaluate() fail
/// while building the graph, before any backend: they are op_table_tests' business, and the
/// outcome is nullopt.
std::optional<Outcome> check_jit_error(const OpEntry& entry, const ErrorCase& error) {
  INFO("op " << op_name(entry.op) << " error case \"" << error.label << "\" through the JIT");
  bool called = false, compiled = false;
  std::string plan;
  set_evaluator([&](const Graph& g, const std::vector<Tensor>& in) {
    called = true;
    auto exe = jit::compile(g, shapes_of(in), jit_options());
    compiled = true;
    plan = exe->plan();
    return exe->run(in);
  });
  Site site;
  std::optional<std::string> what;
  std::string other;
  try {
    error.build(site);
  } catch (const Error& e) {
    what = e.what();
  } catch (const std::exception& e) {
    other = type_name(e) + ": " + e.what();
  }
  set_evaluator({});
  if (!called) return std::nullopt;
  if (!compiled) {
    FAIL_CHECK("jit::compile threw: " << (what ? *what : other));
    return not_run("jit::compile threw: " + first_line(what ? *what : other));
  }
  INFO("plan:\n" << plan);
  if (!other.empty()) {
    FAIL_CHECK("threw " << other << " instead of edifice::Error");
    return Outcome{true, {}};
  }
  if (!what) {
    FAIL_CHECK("the JIT ran without an error; the interpreter says \"" << error.message << "\"");
    return Outcome{true, {}};
  }
  INFO("full message:\n" << *what << "\ninterpreter's first line: " << error.message);
  std::string line = first_line(*what);
  std::string prefix = std::string(op_name(entry.op)) + ": ";
  CHECK(line.rfind(prefix, 0) == 0);  // names the op
  CHECK(line.find("(kernel ") != std::string::npos);
  check_error_location(*what, site);
  return Outcome{true, {}};
}

void run_jit_entry(Op op) {
  const OpEntry* entry = nullptr;
  for (const OpEntry& e : op_table())
    if (e.op == op) entry = &e;
  if (!entry)
    FAIL("op " << op_name(op)
               << " has no op-table entry: add one in tests/op_table/op_table_*.cpp");
  std::vector<std::string> missing;
  int ran = 0;
  auto note = [&](const Outcome& o, const std::string& what) {
    if (o.ran)
      ++ran;
    else
      missing.push_back(what + ": " + o.why_not);
  };
  for (const Sample& s : entry->samples) {
    for (DType ft : {DType::f64, DType::f32})
      note(check_jit_values(*entry, s, ft),
           fmt::format("sample \"{}\" ({} values)", s.label, dtype_name(ft)));
    if (entry->no_grad_reason.empty() && s.checks_gradient())
      for (DType ft : {DType::f64, DType::f32})
        note(check_jit_gradient(*entry, s, ft),
             fmt::format("sample \"{}\" ({} gradient graph)", s.label, dtype_name(ft)));
  }
  for (const ErrorCase& c : entry->errors)
    if (auto o = check_jit_error(*entry, c)) note(*o, fmt::format("error case \"{}\"", c.label));
  // The coverage rule.
  for (const std::string& m : missing)
    FAIL_CHECK(op_name(op) << ": " << m << " (not run through the JIT)");
  INFO(op_name(op) << ": " << missing.size() << " of " << missing.size() + ran
                   << " JIT runs did not happen");
  CHECK(missing.empty());
}

}  // namespace

// One test case per op of the IR, generated from the op list: an op added to op.hpp gets a JIT
// test case that fails until the table has an entry whose samples run through the JIT.
#define EDF_OP_JIT_TEST_CASE(name, kind) \
  TEST_CASE(#name, "[ops][jit]") { \
    run_jit_entry(Op::name);       \
  }
EDIFICE_FOR_EACH_OP(EDF_OP_JIT_TEST_CASE)
#undef EDF_OP_JIT_TEST_CASE

}  // namespace edifice::optable
