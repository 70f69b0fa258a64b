#pragma once
// What one unit of parallel work is for each kernel kind, shared by code generation (which
// loops over items [begin, end)) and the runtime (which splits items over threads). Every
// item is computed entirely by one thread with a fixed instruction sequence, so results do
// not depend on how items are split.

#include "plan.hpp"

namespace edifice::jit {

/// Feature columns per dgamma/dbeta work item of a layer_norm_backward kernel.
constexpr std::int64_t kLayerNormColumnBlock = 64;
/// Softmax over a non-last axis: inner positions per work item (vectorised across them).
constexpr std::int64_t kSoftmaxColumnBlock = 64;
/// Batch rows per lstm work item (each weight load serves this many rows).
constexpr std::int64_t kLstmRowBlock = 4;

/// Number of independent work items of `kernel`.
std::int64_t work_items(const Kernel& kernel);

/// Rough cost of one item in elementary operations, used to pick chunk sizes.
double work_item_cost(const Kernel& kernel);

}  // namespace edifice::jit
