#pragma once
// How a dot_general maps onto the GEMM kernel: C[b] (M x N) = A[b] (M x K) . B[b] (K x N) with
// batch axes leading in both operands, M, K and N each a contiguous group of axes, and either
// operand possibly stored transposed (A as K x M, B as N x K). canonicalize_dot rewrites the
// dots that do not fit.

#include <edifice/core/graph.hpp>

#include <optional>

namespace edifice::jit {

struct GemmLayout {
  std::int64_t batch = 1, m = 1, n = 1, k = 1;
  bool trans_a = false;  ///< A stored as [batch, K, M]
  bool trans_b = false;  ///< B stored as [batch, N, K]
};

/// The layout of a dot_general node, or nullopt when its axes do not fit the kernel.
std::optional<GemmLayout> try_gemm_layout(const Node& dot);
/// As above; throws for a dot that canonicalize_dot should have rewritten.
GemmLayout gemm_layout(const Node& dot);

/// A B operand the GEMM reads in place although it is a slice: a block of columns of a
/// row-major R x W matrix (slice with unit strides of the last axis only; unbatched dot; B
/// stored K x N, R = K, or N x K, R = N). The pruned last layer of a model multiplies by such
/// column blocks of the fused QKV weight (and, with absorb_projections, by their transposes);
/// reading them in place saves a copy of the block per run.
struct ColumnView {
  Value source;                 ///< the sliced R x W value
  std::int64_t offset = 0;      ///< first column
  std::int64_t row_stride = 0;  ///< W
};
/// The view of operand `input` (0: A, 1: B) of a dot, when it is one (only B qualifies).
std::optional<ColumnView> gemm_column_view(const Node& dot, std::size_t input);
/// The value the GEMM kernel of `dot` reads for operand `input`: the view's source or the
/// operand itself.
Value gemm_operand_source(const Node& dot, std::size_t input);

/// How the GEMM kernel blocks one dot for the host's vector width (the scheme is described at
/// the top of codegen/gemm.cpp). One work item computes one C tile of tile_m x tile_n for one
/// batch entry, over all of K, so items never share an output element.
struct GemmTiling {
  int lanes = 1;                        ///< lanes of one vector register for the dtype
  int registers = 16;                   ///< vector registers of the ISA
  std::int64_t mr = 1, nr = 1;          ///< micro-tile: mr rows x nr columns (nr = 2 vectors)
  std::int64_t kc = 1;                  ///< K block: packed panels hold kc steps
  std::int64_t tile_m = 1, tile_n = 1;  ///< largest C tile of an item (multiples of mr, nr)
  /// Tile i of m_tiles covers the mr-row panels [i*P/m_tiles, (i+1)*P/m_tiles) of the
  /// P = ceil(M/mr) panels (likewise for n), so tiles differ by at most one panel.
  std::int64_t m_tiles = 0, n_tiles = 0;
  std::int64_t items = 0;  ///< batch * m_tiles * n_tiles, ordered (batch, n tile, m tile)
  /// B is packed for all of K at once and reused by consecutive items of the same (batch, n
  /// tile); otherwise it is packed per K block inside each item (for very deep K).
  bool whole_k_b = true;
};

/// The tiling of a GEMM with layout `g` and element type `dtype` on the host target.
GemmTiling gemm_tiling(const GemmLayout& g, DType dtype);

}  // namespace edifice::jit
