// The JIT's vector math (jit/src/codegen/vector_math.cpp): accuracy over many points, and the
// time of a unary-op graph over 10^7 elements.
//
//   vector_math_bench accuracy [f32_points [f64_points]]   max ULP error per function and dtype
//   vector_math_bench accuracy-exhaustive FUNC              f32 FUNC on all 2^32 inputs
//   vector_math_bench time FUNC DTYPE [elements [runs]]     ms per run (best and median)
//
// f32 results are measured against glibc's f64 functions (their error, under 1 f64 ULP, is
// 2^-29 of an f32 ULP), f64 results against the long double ones. Points: half random bit
// patterns (every binade, subnormals included) within the function's range, half uniform on it.
// The source compiles against main's library too (no new API), for old/new comparisons.

#include <edifice/core/graph.hpp>
#include <edifice/core/ops.hpp>
#include <edifice/jit/jit.hpp>
#include <edifice/jit/target.hpp>

#include "../tests/common/math_reference.hpp"

#include <algorithm>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

using namespace edifice;
namespace o = edifice::ops;

namespace {

using test::MathFunction;
using test::ulp_error;

// The functions of the test, and two compositions (for information: no bound is claimed).
const std::vector<MathFunction> kFunctions = [] {
  std::vector<MathFunction> v(std::begin(test::kMathFunctions), std::end(test::kMathFunctions));
  v.push_back({"sigmoid", [](const Value& x) { return o::sigmoid(x); },
               [](long double x) { return 1 / (1 + std::exp(-x)); }, 100, false});
  v.push_back({"gelu", [](const Value& x) { return o::gelu(x); },
               [](long double x) { return x / 2 * (1 + std::erf(x / std::sqrt(2.0L))); }, 10,
               false});
  return v;
}();

const MathFunction& find_function(const std::string& name) {
  for (const MathFunction& f : kFunctions)
    if (name == f.name) return f;
  std::fprintf(stderr, "unknown function %s\n", name.c_str());
  std::exit(2);
}

template <class T>
long double reference(const MathFunction& f, T x) {
  // f32: glibc's double functions; f64: the long double ones.
  if constexpr (sizeof(T) == 4)
    return static_cast<long double>(static_cast<double>(f.reference(static_cast<long double>(x))));
  return f.reference(static_cast<long double>(x));
}

struct Worst {
  double ulp = 0;
  double x = 0;
};

template <class T>
void check_chunk(const MathFunction& f, const std::vector<T>& xs, Worst& w,
                 bool f32_fast_reference) {
  const auto n = static_cast<std::int64_t>(xs.size());
  const DType d = sizeof(T) == 4 ? DType::f32 : DType::f64;
  auto x = o::parameter("x", d, {n});
  Graph g({x}, {f.build(x)});
  Tensor in = Tensor::from_vector<T>({n}, xs);
  Tensor out = jit::compile(g, {{n}})->run({in})[0];
  const T* got = out.data<T>();
  for (std::int64_t i = 0; i < n; ++i) {
    const T xi = xs[static_cast<std::size_t>(i)];
    long double want;
    if (sizeof(T) == 4 && f32_fast_reference) {
      // exp, log, tanh, erf in double directly (the long double ones are 5-10x slower).
      const double xd = static_cast<double>(xi);
      const std::string name = f.name;
      want = name == "exp"    ? std::exp(xd)
             : name == "log"  ? std::log(xd)
             : name == "tanh" ? std::tanh(xd)
             : name == "erf"  ? std::erf(xd)
                              : static_cast<double>(f.reference(xd));
    } else {
      want = reference<T>(f, xi);
    }
    const double err = ulp_error<T>(got[i], want);
    if (err > w.ulp) w = {err, static_cast<double>(xi)};
  }
}

template <class T>
Worst sample(const MathFunction& f, std::int64_t count) {
  using Bits = std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>;
  std::mt19937_64 rng(2026);
  const double magnitude =
      std::min(f.magnitude, static_cast<double>(std::numeric_limits<T>::max()));
  std::uniform_real_distribution<double> uniform(f.positive ? 0 : -magnitude, magnitude);
  Worst w;
  const std::int64_t chunk = 1 << 22;
  std::vector<T> xs;
  for (std::int64_t done = 0; done < count; done += chunk) {
    xs.clear();
    while (static_cast<std::int64_t>(xs.size()) < std::min(chunk, count - done)) {
      T x;
      if (xs.size() % 2) {
        x = static_cast<T>(uniform(rng));
      } else {
        x = std::bit_cast<T>(static_cast<Bits>(rng()));
        if (!(std::fabs(x) <= static_cast<T>(magnitude))) continue;
      }
      xs.push_back(f.positive ? std::fabs(x) : x);
    }
    check_chunk<T>(f, xs, w, true);
  }
  return w;
}

int accuracy(std::int64_t f32_points, std::int64_t f64_points) {
  std::printf("target: %s\n", jit::host_target().describe().c_str());
  std::printf("%-8s %14s %12s %14s %12s\n", "function", "f32 max ULP", "at x", "f64 max ULP",
              "at x");
  for (const MathFunction& f : kFunctions) {
    Worst a = sample<float>(f, f32_points);
    Worst b = sample<double>(f, f64_points);
    std::printf("%-8s %14.3f %12.6g %14.3f %12.6g\n", f.name, a.ulp, a.x, b.ulp, b.x);
    std::fflush(stdout);
  }
  std::printf("(%lld f32 points, %lld f64 points per function)\n",
              static_cast<long long>(f32_points), static_cast<long long>(f64_points));
  return 0;
}

int exhaustive(const MathFunction& f) {
  Worst w;
  std::vector<float> xs;
  const std::uint64_t chunk = 1u << 24;
  for (std::uint64_t start = 0; start < (std::uint64_t{1} << 32); start += chunk) {
    xs.resize(chunk);
    for (std::uint64_t i = 0; i < chunk; ++i)
      xs[i] = std::bit_cast<float>(static_cast<std::uint32_t>(start + i));
    check_chunk<float>(f, xs, w, true);
  }
  std::printf("%s f32 on all 2^32 inputs (%s): max %.3f ULP at x = %.9g\n", f.name,
              jit::host_target().describe().c_str(), w.ulp, w.x);
  return 0;
}

int time_function(const MathFunction& f, DType d, std::int64_t n, int runs) {
  auto x = o::parameter("x", d, {n});
  Graph g({x}, {f.build(x)});
  Tensor in(d, {n});
  std::mt19937 rng(7);
  std::uniform_real_distribution<double> uniform(f.positive ? 0.01 : -4, 4);
  for (std::int64_t i = 0; i < n; ++i) {
    if (d == DType::f32)
      in.data<float>()[i] = static_cast<float>(uniform(rng));
    else
      in.data<double>()[i] = uniform(rng);
  }
  auto exe = jit::compile(g, {{n}});
  exe->run({in});  // warm: arena, pages, code
  std::vector<double> ms;
  for (int r = 0; r < runs; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    exe->run({in});
    ms.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  std::printf("%s %s n=%lld %s: best %.3f ms, median %.3f ms\n", f.name,
              d == DType::f32 ? "f32" : "f64", static_cast<long long>(n),
              jit::host_target().describe().c_str(), ms.front(), ms[ms.size() / 2]);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (!args.empty() && args[0] == "accuracy") {
    std::int64_t f32_points = args.size() > 1 ? std::atoll(args[1].c_str()) : 100'000'000;
    std::int64_t f64_points = args.size() > 2 ? std::atoll(args[2].c_str()) : 10'000'000;
    return accuracy(f32_points, f64_points);
  }
  if (args.size() == 2 && args[0] == "accuracy-exhaustive")
    return exhaustive(find_function(args[1]));
  if (args.size() >= 3 && args[0] == "time") {
    DType d = args[2] == "f64" ? DType::f64 : DType::f32;
    std::int64_t n = args.size() > 3 ? std::atoll(args[3].c_str()) : 10'000'000;
    int runs = args.size() > 4 ? std::atoi(args[4].c_str()) : 20;
    return time_function(find_function(args[1]), d, n, runs);
  }
  std::fprintf(stderr,
               "usage: vector_math_bench accuracy [f32_points [f64_points]]\n"
               "       vector_math_bench accuracy-exhaustive exp|log|tanh|erf\n"
               "       vector_math_bench time FUNC f32|f64 [elements [runs]]\n");
  return 2;
}
