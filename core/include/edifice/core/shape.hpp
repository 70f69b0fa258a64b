#pragma once
/// \file
/// Shapes are plain vectors of extents. At graph-build time one extent may be left dynamic
/// (`kDynamic`, printed "?"): it stands for the batch size, one symbol shared by the whole
/// graph, and is bound to a concrete value when the graph is specialised for real inputs.

#include <cstdint>
#include <string>
#include <vector>

namespace edifice {

using Shape = std::vector<std::int64_t>;

/// Marks the dynamic (batch) extent. Every dynamic extent in one graph is the same symbol.
inline constexpr std::int64_t kDynamic = -1;

/// "[4,?,64]".
std::string shape_to_string(const Shape& shape);

/// Number of elements; a dynamic extent counts as 1 (see `dynamic_count`).
std::int64_t shape_numel(const Shape& shape);

/// How many extents are dynamic.
int dynamic_count(const Shape& shape);

bool is_static(const Shape& shape);

/// Row-major strides in elements.
std::vector<std::int64_t> row_major_strides(const Shape& shape);

/// Maps a possibly negative axis into [0, rank); returns -1 when out of range.
int normalize_axis(std::int64_t axis, std::int64_t rank);

}  // namespace edifice
