#pragma once
/// \file
/// Parameter initialisers, computed on the host from counter-based random numbers
/// (Philox-4x32-10): the value of a parameter depends only on (seed, stream, shape).

#include <edifice/core/tensor.hpp>
#include <edifice/nn/layer.hpp>

#include <cstdint>

namespace edifice::nn {

/// glorot_uniform: U(-l, l), l = sqrt(6 / (fan_in + fan_out)), fans from the last two axes
/// (times the product of the others); a vector has fan_in = fan_out = its length.
/// normal: N(0, scale^2) by Box-Muller. uniform: U(-scale, scale). orthogonal: a random
/// orthogonal matrix (Gram-Schmidt on a normal matrix, rows or columns orthonormal, whichever
/// fits) times the gain, over the last axis against the rest flattened.
Tensor initialize(const Initializer& init, const Shape& shape, DType dtype, std::uint64_t seed,
                  std::uint64_t stream);

/// A stable 63-bit stream number for a name (FNV-1a).
std::uint64_t stream_for(const std::string& name);

}  // namespace edifice::nn
