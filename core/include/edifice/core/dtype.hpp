#pragma once
/// \file
/// Element types. Every tensor and every graph value has exactly one; there is no implicit
/// promotion anywhere in the library (mixing dtypes is an error, `cast` is explicit).

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace edifice {

/// The element types a tensor can hold. `u8` doubles as the boolean type: comparisons and
/// masks produce u8 values that are exactly 0 or 1.
enum class DType : std::uint8_t { f32, f64, i32, i64, u8 };

inline constexpr DType kAllDTypes[] = {DType::f32, DType::f64, DType::i32, DType::i64, DType::u8};

/// Bytes per element.
constexpr std::size_t dtype_size(DType d) {
  switch (d) {
    case DType::f32: return 4;
    case DType::f64: return 8;
    case DType::i32: return 4;
    case DType::i64: return 8;
    case DType::u8: return 1;
  }
  return 0;
}

/// Short name as printed in graph dumps and error messages ("f32", "u8", ...).
constexpr std::string_view dtype_name(DType d) {
  switch (d) {
    case DType::f32: return "f32";
    case DType::f64: return "f64";
    case DType::i32: return "i32";
    case DType::i64: return "i64";
    case DType::u8: return "u8";
  }
  return "?";
}

constexpr bool is_floating(DType d) { return d == DType::f32 || d == DType::f64; }
constexpr bool is_integral(DType d) { return !is_floating(d); }

/// The C++ type stored for a DType.
template <DType D> struct dtype_traits;
template <> struct dtype_traits<DType::f32> { using type = float; };
template <> struct dtype_traits<DType::f64> { using type = double; };
template <> struct dtype_traits<DType::i32> { using type = std::int32_t; };
template <> struct dtype_traits<DType::i64> { using type = std::int64_t; };
template <> struct dtype_traits<DType::u8> { using type = std::uint8_t; };

/// The DType for a C++ element type.
template <class T> constexpr DType dtype_of();
template <> constexpr DType dtype_of<float>() { return DType::f32; }
template <> constexpr DType dtype_of<double>() { return DType::f64; }
template <> constexpr DType dtype_of<std::int32_t>() { return DType::i32; }
template <> constexpr DType dtype_of<std::int64_t>() { return DType::i64; }
template <> constexpr DType dtype_of<std::uint8_t>() { return DType::u8; }

/// Calls `f.template operator()<T>()` with T the element type of `d`, so one generic lambda
/// (`[&]<class T>() { ... }`) serves every dtype.
template <class F> decltype(auto) visit_dtype(DType d, F&& f) {
  switch (d) {
    case DType::f32: return f.template operator()<float>();
    case DType::f64: return f.template operator()<double>();
    case DType::i32: return f.template operator()<std::int32_t>();
    case DType::i64: return f.template operator()<std::int64_t>();
    case DType::u8: return f.template operator()<std::uint8_t>();
  }
  return f.template operator()<float>();  // unreachable for valid enum values
}

}  // namespace edifice
