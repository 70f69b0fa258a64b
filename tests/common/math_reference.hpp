#pragma once
// What the vector math test (tests/jit/vector_math_test.cpp) and bench/vector_math_bench.cpp
// share: the functions under test with their long double references and ranges, and the error
// of a result in units in the last place.

#include <edifice/core/graph.hpp>
#include <edifice/core/ops.hpp>

#include <algorithm>
#include <cmath>
#include <limits>

namespace edifice::test {

struct MathFunction {
  const char* name;
  Value (*build)(const Value&);
  long double (*reference)(long double);
  double magnitude;  // random points: |x| below this (and random bit patterns within it)
  bool positive;     // domain x > 0 (log)
};

inline const MathFunction kMathFunctions[] = {
    {"exp", [](const Value& x) { return ops::exp(x); }, [](long double x) { return std::exp(x); },
     760, false},
    {"log", [](const Value& x) { return ops::log(x); }, [](long double x) { return std::log(x); },
     1e300, true},
    {"tanh", [](const Value& x) { return ops::tanh(x); },
     [](long double x) { return std::tanh(x); }, 30, false},
    {"erf", [](const Value& x) { return ops::erf(x); }, [](long double x) { return std::erf(x); },
     8, false},
};

/// The error of `got` in units in the last place of T at the exact value `want`; 0 when both
/// are the same special value (NaN, inf, zero of the same sign), 1e300 on any other mismatch
/// there.
template <class T>
double ulp_error(T got, long double want) {
  const T rounded = static_cast<T>(want);
  if (std::isnan(want) || std::isnan(got)) return std::isnan(want) && std::isnan(got) ? 0 : 1e300;
  if (std::isinf(rounded) || std::isinf(got) || rounded == 0 || got == 0) {
    if (got == rounded && std::signbit(got) == std::signbit(rounded)) return 0;
    if (std::isinf(got) || std::isinf(rounded)) return 1e300;
  }
  int e = 0;
  std::frexp(static_cast<double>(want), &e);
  constexpr int digits = std::numeric_limits<T>::digits;
  constexpr int min_exp = std::numeric_limits<T>::min_exponent - digits;  // the subnormal ulp
  const long double ulp = std::ldexp(1.0L, std::max(e - digits, min_exp));
  return static_cast<double>(std::fabs(static_cast<long double>(got) - want) / ulp);
}

}  // namespace edifice::test
