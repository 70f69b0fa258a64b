#pragma once
// What one unit of parallel work is for each kernel kind, shared by code generation (which
// loops over items [begin, end)) and the runtime (which splits items over threads). Every
// item is computed entirely by one thread with a fixed instruction sequence, so results do
// not depend on how items are split.

#include "gemm_layout.hpp"
#include "plan.hpp"

#include <edifice/jit/jit.hpp>

#include <vector>

namespace edifice::jit {

/// Feature columns per dgamma/dbeta work item of a layer_norm_backward kernel.
constexpr std::int64_t kLayerNormColumnBlock = 64;
/// Softmax over a non-last axis: inner positions per work item (vectorised across them).
constexpr std::int64_t kSoftmaxColumnBlock = 64;
/// Batch rows per lstm work item (each weight load serves this many rows).
constexpr std::int64_t kLstmRowBlock = 4;
/// Reductions over leading axes only ([rows, C] -> [C], e.g. a bias gradient): output columns
/// per work item, so each item streams whole rows instead of one strided column.
constexpr std::int64_t kReduceColumnBlock = 64;

/// Whether a reduction's axes are exactly its input's leading axes 0..k-1, with at least one
/// axis kept (the column-blocked reduce kernel).
bool reduces_leading_axes(const Node& reduce);

/// Heads wider than this (D or Dv) run the row attention kernel: the tiled kernels keep
/// O(NR (D + Dv + 64)) elements on the stack.
constexpr std::int64_t kMaxTiledHeadDim = 1024;

/// The tiling of the fused attention kernels of an attention or attention_backward node: the
/// GEMM micro-kernel of its element type (its nr lanes are the query or key tile).
GemmTiling attention_tiling(const Node& attention);
/// Whether the tiled kernels can compute attention node `n` (not for no keys or heads wider
/// than kMaxTiledHeadDim).
bool tiles_supported(const Node& attention);
/// Query rows per work item of an attention kernel: attention_tiling(n).nr when the node's
/// "kernel" attribute (set by choose_attention_kernels) is "tiles", else 1 (the row kernel).
std::int64_t attention_query_tile(const Node& attention);

/// Keys per work item of the single-pass tiled attention_backward (a multiple of the tile's
/// nr keys), or 0 where the tiled backward runs its two passes (query tiles, then key tiles).
/// The single pass (codegen/attention_tile_kernels.cpp) applies to window, causal and unmasked
/// attention with D and Dv of at least the micro-kernel's mr rows; a window mask splits each
/// batch entry's keys into chunks of 8 windows (at least 256 keys), other masks keep them whole.
/// Fewer than 4 items in all (too few to share between threads) keep the two passes.
std::int64_t attention_backward_chunk(const Node& attention_backward);

/// Number of independent work items of `kernel`.
std::int64_t work_items(const Kernel& kernel);

/// Rough cost of one item in elementary operations, used to pick chunk sizes.
double work_item_cost(const Kernel& kernel);

/// Items per unit of the thread pool's chunks (chunks hold whole units): for a GEMM whose B is
/// packed for all of K, the m tiles of one n tile, so a chunk packs each of its B panels once
/// (chunks of a few items each packed their panel again: a 1920 x 256 copy for the LSTM weight
/// gradient of hybrid_train_b32), where the n tiles still give each of `threads` workers two
/// units; else 1.
std::int64_t work_item_grain(const Kernel& kernel, int threads);

/// Tasks the runtime splits `items` work items of `kernel` into, for `threads` workers: one
/// for small kernels (below ~32k elementary operations a thread hand-off costs more than it
/// saves), else one per worker, at most one per item.
int choose_tasks(const Kernel& kernel, std::int64_t items, int threads);

/// Kernel statistics (Executable::kernels) of every kernel of `plan`.
std::vector<KernelInfo> describe_kernels(const Plan& plan);

}  // namespace edifice::jit
