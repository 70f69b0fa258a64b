#include <edifice/core/shape.hpp>

#include <fmt/format.h>

namespace edifice {

std::string shape_to_string(const Shape& shape) {
  std::string out = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) out += ",";
    out += shape[i] == kDynamic ? std::string("?") : std::to_string(shape[i]);
  }
  return out + "]";
}

std::int64_t shape_numel(const Shape& shape) {
  std::int64_t n = 1;
  for (auto d : shape) n *= d == kDynamic ? 1 : d;
  return n;
}

int dynamic_count(const Shape& shape) {
  int n = 0;
  for (auto d : shape) n += d == kDynamic;
  return n;
}

bool is_static(const Shape& shape) {
  return dynamic_count(shape) == 0;
}

std::vector<std::int64_t> row_major_strides(const Shape& shape) {
  std::vector<std::int64_t> strides(shape.size(), 1);
  for (std::size_t i = shape.size(); i-- > 1;) strides[i - 1] = strides[i] * shape[i];
  return strides;
}

int normalize_axis(std::int64_t axis, std::int64_t rank) {
  if (axis < -rank || axis >= rank) return -1;
  return static_cast<int>(axis < 0 ? axis + rank : axis);
}

}  // namespace edifice
