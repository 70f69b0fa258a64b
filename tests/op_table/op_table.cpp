// The op-test table: Catch2 registration (one test case per op of EDIFICE_FOR_EACH_OP, one
// section per sample / dtype / gradient / error case) and the coverage rule. The entries live
// in op_table_{sources,elementwise,layout,reductions,structured}.cpp, the harness in
// op_table_harness.cpp; op_table_jit.cpp runs the same entries through the JIT.
#include "op_table_harness.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <map>

namespace edifice::optable {
namespace {

const OpEntry* find_entry(Op op) {
  for (const OpEntry& e : op_table())
    if (e.op == op) return &e;
  return nullptr;
}

void run_entry(Op op) {
  const OpEntry* entry = find_entry(op);
  if (!entry)
    FAIL("op " << op_name(op)
               << " has no op-table entry: add one in tests/op_table/op_table_*.cpp");
  for (const Sample& s : entry->samples) {
    DYNAMIC_SECTION("sample: " << s.label) {
      SECTION("f64 values") {
        check_values(*entry, s, DType::f64);
      }
      SECTION("f32 values") {
        check_values(*entry, s, DType::f32);
      }
      if (entry->no_grad_reason.empty() && s.checks_gradient()) {
        SECTION("f64 gradient") {
          check_gradient(*entry, s);
        }
      }
    }
  }
  for (const ErrorCase& c : entry->errors) {
    DYNAMIC_SECTION("error: " << c.label) {
      check_error(*entry, c);
    }
  }
}

}  // namespace

// One Catch2 test case per op of the IR, generated from the op list itself: an op added to
// op.hpp gets a test case that fails until the table has an entry for it.
#define EDF_OP_TEST_CASE(name, kind) \
  TEST_CASE(#name, "[ops]") {  \
    run_entry(Op::name);       \
  }
EDIFICE_FOR_EACH_OP(EDF_OP_TEST_CASE)
#undef EDF_OP_TEST_CASE

TEST_CASE("every op has a complete table entry", "[ops][coverage]") {
  std::vector<std::string> problems = coverage_problems(op_table());
  for (const std::string& p : problems) FAIL_CHECK(p);
  CHECK(problems.empty());
}

}  // namespace edifice::optable
