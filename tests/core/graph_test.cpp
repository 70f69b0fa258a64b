// Graph building: shape inference, error messages with the user's file:line, printing,
// hashing and specialisation of the dynamic batch extent.
#include <edifice/core/ops.hpp>

#include <catch2/catch.hpp>

#include "test_util.hpp"

using namespace edifice;
namespace o = edifice::ops;

using edifice::test::error_of;

namespace {

std::string here(int line) { return fmt::format("{}:{}", __FILE__, line); }

}  // namespace

TEST_CASE("shape inference gives output types", "[graph]") {
  auto x = o::parameter("x", DType::f32, {kDynamic, 60, 32});
  auto w = o::parameter("w", DType::f32, {32, 8});
  auto b = o::parameter("b", DType::f32, {8});
  auto y = o::matmul(x, w) + b;
  CHECK(y.type().to_string() == "f32[?,60,8]");
  auto last = o::slice_axis(y, 1, 59, 60);
  CHECK(last.type().to_string() == "f32[?,1,8]");
  CHECK(o::reduce_sum(y, {-1}, true).type().to_string() == "f32[?,60,1]");
  CHECK(o::gt(y, o::zeros_like(y)).dtype() == DType::u8);
  auto ln = o::layer_norm_full(y, std::nullopt, std::nullopt, 1e-5);
  CHECK(ln.size() == 3);
  CHECK(ln[1].type().to_string() == "f32[?,60]");
}

TEST_CASE("a shape mismatch names both shapes, the axis and the user's line", "[graph]") {
  auto a = o::parameter("a", DType::f32, {4, 3});
  auto b = o::parameter("b", DType::f32, {5});
  int line = __LINE__ + 1;
  auto msg = error_of([&] { o::add(a, b); });
  CHECK(msg == "add: cannot broadcast f32[4,3] and f32[5] together: axis -1 has extents 3 and 5\n"
               "  the op was defined at " + here(line));

  // Operators record the user's line too.
  line = __LINE__ + 1;
  msg = error_of([&] { return a * b; });
  CHECK(msg == "mul: cannot broadcast f32[4,3] and f32[5] together: axis -1 has extents 3 and 5\n"
               "  the op was defined at " + here(line));

  auto w = o::parameter("w", DType::f32, {32, 96});
  auto x = o::parameter("x", DType::f32, {4, 12, 64});
  line = __LINE__ + 1;
  msg = error_of([&] { o::matmul(x, w); });
  CHECK(msg == "dot_general: contracting extents differ: lhs f32[4,12,64] axis 2 has 64, rhs "
               "f32[32,96] axis 0 has 32\n  the op was defined at " + here(line));
}

TEST_CASE("errors inside a layer scope name the layer and where it was defined", "[graph]") {
  auto x = o::parameter("x", DType::f32, {2, 7});
  auto w = o::parameter("w", DType::f32, {8, 3});
  int line = __LINE__ + 1;
  LayerScope scope("input_proj", "dense");
  auto msg = error_of([&] { o::matmul(x, w); });
  CHECK(msg == "dot_general: contracting extents differ: lhs f32[2,7] axis 1 has 7, rhs f32[8,3] "
               "axis 0 has 8\n  in layer \"input_proj\" (dense)\n  the layer was defined at " +
                   here(line));
}

TEST_CASE("dtype mismatches are errors, not promotions", "[graph]") {
  auto a = o::parameter("a", DType::f32, {3});
  auto b = o::parameter("b", DType::f64, {3});
  auto msg = error_of([&] { o::sub(a, b); });
  CHECK(msg.substr(0, msg.find('\n')) ==
        "sub: lhs and rhs must have the same dtype, got f32[3] and f64[3]");
}

TEST_CASE("graphs print like a jaxpr and export DOT", "[graph]") {
  auto x = o::parameter("x", DType::f32, {2, 3});
  auto y = o::tanh(o::reduce_sum(x, {1}));
  Graph g({x}, {y});
  std::string text = g.to_string();
  CHECK(text.rfind("{ lambda a:f32[2,3]. let\n", 0) == 0);
  CHECK(text.find("    b:f32[2] = reduce_sum[axes=[1]] a    # graph_test.cpp:") != std::string::npos);
  CHECK(text.find("    c:f32[2] = tanh b    # graph_test.cpp:") != std::string::npos);
  CHECK(text.substr(text.size() - 11) == "  in (c) }\n");
  std::string dot = g.to_dot();
  CHECK(dot.rfind("digraph edifice {", 0) == 0);
  CHECK(dot.find("reduce_sum") != std::string::npos);
}

TEST_CASE("graph inputs must cover every parameter the outputs use", "[graph]") {
  auto x = o::parameter("x", DType::f32, {2});
  auto w = o::parameter("w", DType::f32, {2});
  auto msg = error_of([&] { Graph({x}, {x * w}); });
  CHECK(msg.rfind("Graph: the outputs depend on parameter \"w\" (f32[2]), which is not among the "
                  "graph's inputs",
                  0) == 0);
}

TEST_CASE("structural hash ignores node identity but not structure", "[graph]") {
  auto build = [](std::int64_t n, bool use_exp) {
    auto x = o::parameter("x", DType::f32, {n});
    return Graph({x}, {use_exp ? o::exp(x) : o::log(x)});
  };
  CHECK(build(3, true).hash() == build(3, true).hash());
  CHECK(build(3, true).hash() != build(4, true).hash());
  CHECK(build(3, true).hash() != build(3, false).hash());
}

TEST_CASE("specialize binds the batch extent", "[graph]") {
  auto x = o::parameter("x", DType::f32, {kDynamic, 4});
  auto y = o::reshape(x, {kDynamic, 2, 2}) * 2.0;
  Graph g({x}, {o::reduce_sum(y, {1, 2})});
  Graph s = specialize(g, {{5, 4}});
  CHECK(s.outputs()[0].type().to_string() == "f32[5]");
  CHECK(s.inputs()[0].type().to_string() == "f32[5,4]");
  CHECK(error_of([&] { specialize(g, {{5, 3}}); }) ==
        "specialize: input \"x\" has shape [5,3], the graph expects f32[?,4]");
}
