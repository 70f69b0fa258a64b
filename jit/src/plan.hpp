#pragma once
// The kernel plan: what the fusion pass decides and code generation consumes. Pure data over
// the graph IR (no LLVM), printable at every stage.

#include <edifice/core/graph.hpp>
#include <edifice/jit/jit.hpp>

#include <map>
#include <string>
#include <vector>

namespace edifice::jit {

enum class KernelKind {
  loop,    // elementwise and layout ops fused into one loop over the root's elements
  reduce,  // reduce_sum/max/mean over fused producers
  gemm,    // dot_general, optionally with an elementwise epilogue
  softmax,
  layer_norm,
  layer_norm_backward,
  attention,
  attention_backward,
  lstm_scan,
  lstm_scan_backward,
  scatter_add,
};

std::string kernel_kind_name(KernelKind kind);

/// One kernel: an anchor node computed from buffers, with producers inlined into its input
/// expressions (loop and reduce kernels) or consumers inlined into its epilogue (gemm).
struct Kernel {
  KernelKind kind = KernelKind::loop;
  std::string name;
  /// The node whose computation shapes the kernel: the reduction, the dot, the structured op,
  /// or for loop kernels the root of the expression.
  const Node* anchor = nullptr;
  /// For loop, reduce and gemm kernels: the node whose value is stored (the expression root;
  /// for a gemm with an epilogue, the last epilogue op). Equal to anchor otherwise.
  const Node* root = nullptr;
  /// Values written to buffers.
  std::vector<Value> outputs;
  /// Values read from buffers, in buffer order after the outputs.
  std::vector<Value> inputs;
  /// Nodes computed inside the kernel, topological, anchor and root included.
  std::vector<const Node*> nodes;
  /// Why the kernel ends at its root (printed in the plan).
  std::string boundary;
  /// Scratch bytes the kernel needs (shared by all its work items; see work_items.hpp). When
  /// nonzero it is passed as one more buffer after the inputs.
  std::int64_t workspace_bytes = 0;
};

/// Where a materialised value lives at run time.
struct BufferSlot {
  enum class Place { input, output, arena, constant } place = Place::arena;
  int index = 0;            // input position, output position, or -1
  std::int64_t offset = 0;  // byte offset in the arena
  std::int64_t bytes = 0;
};

struct Plan {
  Graph graph;                  // the specialised graph the plan is for
  std::vector<Kernel> kernels;  // in execution order
  /// Buffer of every materialised value (node, output index).
  std::map<std::pair<const Node*, int>, BufferSlot> buffers;
  /// Arena offset of each kernel's workspace (same order as kernels; 0 when it has none).
  std::vector<std::int64_t> workspace_offsets;
  std::int64_t arena_bytes = 0;

  const BufferSlot& slot(const Value& v) const { return buffers.at({&v.node(), v.index()}); }
  std::string to_string() const;
};

// ---- passes, one per file ----

/// Rewrites dot_general operands into the layouts the GEMM kernel reads
/// ([batch..., M, K] x [batch..., K, N], either operand possibly transposed in place).
/// Defined in canonicalize_dot.cpp.
Graph canonicalize_dot(const Graph& graph);

/// Folds transpose(dot(a, b)) into dot(b, a) where the transpose only swaps the free-axis
/// groups and nothing else reads the dot (autodiff's weight gradients). Values are unchanged.
/// Defined in fold_dot_transpose.cpp.
Graph fold_dot_transpose(const Graph& graph);

/// Pushes slices up through producers that are row-wise along the sliced axes (elementwise,
/// layout, layer_norm, softmax, dot_general, attention via query_offset, ...) when nothing
/// else needs the other rows (or splits a producer read only through disjoint slices that
/// leave elements unread), so a model returning its last position computes only that row of
/// its last layer's query path. Values are unchanged. Defined in prune_rows.cpp.
Graph prune_rows(const Graph& graph);

/// Reassociates attention over projected keys and values (K = H.Wk + bk, V = H.Wv + bv) when
/// few query rows are computed: the projections move to the query side and every head attends
/// over H. Results agree to rounding. Defined in absorb_projections.cpp.
Graph absorb_projections(const Graph& graph);

/// Records in each attention and attention_backward node which kernel computes it (attribute
/// "kernel": "tiles" or "rows"); `choice` forces one where supported. Defined in
/// choose_attention_kernels.cpp.
Graph choose_attention_kernels(const Graph& graph, AttentionKernel choice);

/// Partitions the graph into kernels. Defined in fuse.cpp.
Plan fuse(const Graph& graph);

/// Assigns every intermediate buffer an arena offset by liveness. Defined in plan_memory.cpp.
void plan_memory(Plan& plan);

}  // namespace edifice::jit
