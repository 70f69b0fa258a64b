// The JIT's own vector math (jit/src/codegen/vector_math.cpp) through compiled unary-op graphs:
// special values, and random points against long double references with the documented ULP
// bounds (f32 within 1 ULP, f64 within 2). ctest runs the [vector_math] cases again with the
// ISA capped to avx2, sse4.2 and generic: other vector widths, and multiply-adds unfused.
// Each graph runs a long input (vector body) and a short one (scalar code only).
// The last case compiles a plan with every transcendental and checks that its objects call no
// math library (no libmvec variant, no libm function).

#include <edifice/core/graph.hpp>
#include <edifice/core/ops.hpp>
#include <edifice/jit/jit.hpp>
#include <edifice/jit/target.hpp>

#include "../../jit/src/codegen/codegen.hpp"
#include "../../jit/src/plan.hpp"
#include "math_reference.hpp"

#include <catch2/catch.hpp>

#include <elf.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <set>
#include <string>
#include <vector>

using namespace edifice;
namespace o = edifice::ops;

namespace {

using test::kMathFunctions;
using test::MathFunction;
using test::ulp_error;

template <class T>
std::vector<T> special_values() {
  using L = std::numeric_limits<T>;
  return {T(0),
          -T(0),
          T(1),
          -T(1),
          T(0.5),
          T(2),
          L::infinity(),
          -L::infinity(),
          L::quiet_NaN(),
          L::min(),
          -L::min(),
          L::denorm_min(),
          -L::denorm_min(),
          L::max(),
          L::lowest(),
          L::epsilon(),
          T(88.72),
          T(-87.33),
          T(-103.9),
          T(709.78),
          T(-708.4),
          T(-745.1),
          T(-745.2),
          T(1e-10),
          T(-1e-10),
          T(19.5),
          T(-20),
          T(5.9),
          T(-3.9),
          T(0.9999),
          T(1.0001),
          T(3.5),
          T(6.1)};
}

template <class T>
std::vector<T> sample_points(const MathFunction& f, std::size_t count) {
  std::vector<T> xs = special_values<T>();
  std::mt19937_64 rng(12345);
  using Bits = std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>;
  std::uniform_real_distribution<double> uniform(f.positive ? 0 : -f.magnitude, f.magnitude);
  while (xs.size() < count) {
    T x;
    if (xs.size() % 2) {
      x = static_cast<T>(uniform(rng));  // the bulk of the range
    } else {
      x = std::bit_cast<T>(static_cast<Bits>(rng()));  // every binade, subnormals included
      if (!(std::fabs(x) <= static_cast<T>(f.magnitude))) continue;
    }
    if (f.positive) x = std::fabs(x);
    xs.push_back(x);
  }
  return xs;
}

template <class T>
void check_function(const MathFunction& f, double bound) {
  const DType d = sizeof(T) == 4 ? DType::f32 : DType::f64;
  for (std::size_t count : {std::size_t{7}, std::size_t{200003}}) {
    std::vector<T> xs = sample_points<T>(f, count);
    const auto n = static_cast<std::int64_t>(xs.size());
    auto x = o::parameter("x", d, {n});
    Graph g({x}, {f.build(x)});
    Tensor in = Tensor::from_vector<T>({n}, xs);
    Tensor out = jit::compile(g, {{n}})->run({in})[0];
    double worst = 0;
    T worst_x = 0;
    for (std::int64_t i = 0; i < n; ++i) {
      double err = ulp_error<T>(out.data<T>()[i], f.reference(xs[static_cast<std::size_t>(i)]));
      if (err > worst) worst = err, worst_x = xs[static_cast<std::size_t>(i)];
    }
    INFO(f.name << " " << dtype_name(d) << " over " << n << " points on "
                << jit::host_target().describe() << ": worst " << worst
                << " ULP at x = " << static_cast<double>(worst_x));
    CHECK(worst <= bound);
  }
}

}  // namespace

TEST_CASE("vector math: f32 exp, log, tanh, erf within 1 ULP", "[jit][vector_math]") {
  for (const MathFunction& f : kMathFunctions) check_function<float>(f, 1.0);
}

TEST_CASE("vector math: f64 exp, log, tanh, erf within 2 ULP", "[jit][vector_math]") {
  for (const MathFunction& f : kMathFunctions) check_function<double>(f, 2.0);
}

TEST_CASE("vector math: exp underflows to exactly 0 and overflows to inf; sigmoid saturates",
          "[jit][vector_math]") {
  auto x = o::parameter("x", DType::f32, {6});
  Graph g({x}, {o::exp(x), o::sigmoid(x)});
  auto in = Tensor::from_vector<float>({6}, {-1e30f, -200.f, -104.f, 89.f, 1e30f, 0.f});
  auto out = jit::compile(g, {{6}})->run({in});
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> exp_want = {0, 0, 0, inf, inf, 1};
  std::vector<float> sigmoid_want = {0, 0, 0, 1, 1, 0.5f};
  for (int i = 0; i < 6; ++i) {
    INFO("x = " << in.data<float>()[i]);
    CHECK(out[0].data<float>()[i] == exp_want[static_cast<std::size_t>(i)]);
    CHECK(out[1].data<float>()[i] == sigmoid_want[static_cast<std::size_t>(i)]);
  }
}

namespace {

// The undefined symbols of an ELF relocatable object (what it needs from outside).
std::set<std::string> undefined_symbols(const std::string& object) {
  std::set<std::string> names;
  REQUIRE(object.size() >= sizeof(Elf64_Ehdr));
  Elf64_Ehdr header;
  std::memcpy(&header, object.data(), sizeof header);
  REQUIRE(std::memcmp(header.e_ident, ELFMAG, SELFMAG) == 0);
  auto section = [&](std::size_t i) {
    Elf64_Shdr s;
    std::memcpy(&s, object.data() + header.e_shoff + i * header.e_shentsize, sizeof s);
    return s;
  };
  for (std::size_t i = 0; i < header.e_shnum; ++i) {
    Elf64_Shdr symtab = section(i);
    if (symtab.sh_type != SHT_SYMTAB) continue;
    Elf64_Shdr strtab = section(symtab.sh_link);
    for (std::size_t k = 1; k < symtab.sh_size / sizeof(Elf64_Sym); ++k) {
      Elf64_Sym sym;
      std::memcpy(&sym, object.data() + symtab.sh_offset + k * sizeof sym, sizeof sym);
      if (sym.st_shndx == SHN_UNDEF && sym.st_name != 0)
        names.insert(object.data() + strtab.sh_offset + sym.st_name);
    }
  }
  return names;
}

}  // namespace

TEST_CASE("vector math: f32 erf runs in f32 arithmetic where multiply-adds fuse",
          "[jit][vector_math]") {
  // At x = 1.00268352 the f32-arithmetic erf (vector_math::erf_f32, AVX2 and up) has its
  // largest error over all f32 inputs, 0.911 ULP, and rounds up; the f64 evaluation rounds
  // correctly. Which one ran is visible in the last bit.
  auto x = o::parameter("x", DType::f32, {1});
  Graph g({x}, {o::erf(x)});
  Tensor in = Tensor::from_vector<float>({1}, {1.00268352f});
  jit::Options options;
  options.disk_cache = false;
  const float got = jit::compile(g, {{1}}, options)->run({in})[0].data<float>()[0];
  const bool fused = jit::host_target().isa >= jit::Isa::avx2;
  INFO(jit::host_target().describe());
  CHECK(got == (fused ? 0x1.b0081ap-1f : 0x1.b00818p-1f));
}

TEST_CASE("vector math: compiled kernels call no math library", "[jit][vector_math]") {
  std::vector<Value> inputs, outputs;
  for (DType d : {DType::f32, DType::f64}) {
    auto x = o::parameter("x", d, {4, 1000});
    inputs.push_back(x);
    for (const MathFunction& f : kMathFunctions) outputs.push_back(f.build(x));
    outputs.push_back(o::sigmoid(x));
    outputs.push_back(o::gelu(x));
    outputs.push_back(o::softmax(x, -1));
  }
  Graph g = specialize(Graph(inputs, outputs), {{4, 1000}, {4, 1000}});
  jit::Plan plan = jit::fuse(g);
  jit::plan_memory(plan);
  std::set<std::string> undefined;
  for (const std::string& object : jit::compile_plan(plan, jit::host_target(), "vector_math", 1))
    undefined.merge(undefined_symbols(object));
  undefined.erase("_GLOBAL_OFFSET_TABLE_");  // the linker's, for position-independent code
  std::string listed;
  for (const std::string& s : undefined) listed += s + " ";
  INFO("undefined symbols: " << listed);
  CHECK(undefined.empty());
}
