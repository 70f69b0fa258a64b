#pragma once
/// \file
/// The JIT: compiles a graph (forward, gradient, or both) into native code for the host CPU.
///
///   auto exe = jit::compile(graph, {{32, 60, 1024}});   // specialised to these input shapes
///   std::vector<Tensor> out = exe->run(inputs);
///
/// or `jit::Function f(graph); f(inputs)`, which compiles for the shapes of each call's inputs
/// (through compile, so executables are shared with every other caller).
///
/// Compiled executables are cached twice. In the process: up to 128 executables, least recently
/// used dropped first, keyed by the graph's hash, the input shapes, the host CPU and its
/// features, and every option (threads, disk cache and its directory, prune_rows,
/// absorb_projections, attention_kernel; the environment variables resolved). On disk: one
/// object file per specialised graph, keyed by the hash of the graph after shape binding and
/// the rewrite passes, the target (triple, CPU, features) and a hash of the JIT's own sources.
///
/// Environment (every variable the JIT reads):
///   EDIFICE_THREADS     worker count (Options::threads = 0)
///   EDIFICE_ISA         cap on the instruction set: avx512|avx2|sse4.2|generic
///   EDIFICE_CACHE=0     no disk cache; EDIFICE_CACHE_DIR, else $XDG_CACHE_HOME/edifice, else
///                       $HOME/.cache/edifice: its directory (Options::cache_dir empty)
///   EDIFICE_PRUNE=0     no row pruning (Options::prune_rows)
///   EDIFICE_ABSORB=0    no projection absorption (Options::absorb_projections)
///   EDIFICE_DUMP        comma list of graph, plan, ir, opt-ir, asm, timing, or all: print each
///                       lowering stage, to files in EDIFICE_DUMP_DIR if set, else to stderr
///   EDIFICE_PROFILE=1   time every kernel; each executable prints its profile to stderr when
///                       destroyed

#include <edifice/core/graph.hpp>
#include <edifice/core/tensor.hpp>

#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace edifice::jit {

/// Which kernels compute attention (see Options::attention_kernel).
enum class AttentionKernel {
  automatic,  ///< the measured rule of choose_attention_kernels.cpp
  tiles,      ///< the tiled (flash) kernels wherever they apply
  rows,       ///< the row kernels everywhere
};

struct Options {
  /// Worker threads; 0 means EDIFICE_THREADS if set, else every hardware thread.
  int threads = 0;
  /// Reuse and store compiled objects in the on-disk cache (EDIFICE_CACHE=0 turns it off).
  bool disk_cache = true;
  /// Cache directory; empty means EDIFICE_CACHE_DIR, else $XDG_CACHE_HOME/edifice, else
  /// ~/.cache/edifice.
  std::string cache_dir;
  /// Compute only the rows that are read: slices (e.g. a model's last position) are pushed up
  /// through row-wise producers, so the last layer computes one query row (outputs are
  /// unchanged). EDIFICE_PRUNE=0 turns it off too; for tests and comparisons.
  bool prune_rows = true;
  /// Where few query rows attend over projected keys and values (a pruned last layer), move
  /// the key and value projections to the query side instead of projecting every key: the sums
  /// are reassociated, so results agree to rounding, not bitwise. EDIFICE_ABSORB=0 turns it off
  /// too; for tests and comparisons.
  bool absorb_projections = true;
  /// Attention kernels: the tiled (flash) kernels where they are faster, or forced either way
  /// (for tests and comparisons; results agree to rounding).
  AttentionKernel attention_kernel = AttentionKernel::automatic;
};

/// The row-pruning pass behind Options::prune_rows, for callers that transform a graph before
/// differentiating it: nn::TrainStep prunes its forward pass, so that autodiff never builds
/// the backward of rows nothing reads (a model's non-last positions in its last layer).
/// Values are unchanged; dynamic (batch) extents are kept.
Graph prune_rows(const Graph& graph);
/// Whether row pruning is on for these options (Options::prune_rows and not EDIFICE_PRUNE=0).
bool prune_rows_enabled(const Options& options);

/// Per-kernel statistics, from the fusion plan.
struct KernelInfo {
  std::string name;  ///< "k3_loop", "k4_gemm", ...
  std::string kind;  ///< loop, reduce, gemm, softmax, layer_norm, attention, lstm_scan, ...
  std::vector<std::string> ops;  ///< ops computed inside, in order
  double flops = 0;  ///< floating-point operations per run (estimated: 1 per elementwise op)
  double bytes = 0;  ///< bytes read from and written to buffers per run
};

class Program;  // internal: the plan, the memory plan and the linked code

/// A graph compiled for fixed input shapes. Thread-safe to run concurrently.
class Executable {
 public:
  explicit Executable(std::shared_ptr<Program> program);
  ~Executable();

  /// Runs on `inputs` (dtypes and shapes exactly as compiled). Same inputs give bit-identical
  /// outputs, whatever the thread count.
  std::vector<Tensor> run(const std::vector<Tensor>& inputs) const;

  const std::vector<KernelInfo>& kernels() const;
  /// The fusion plan: one block per kernel with the ops inside and why it ends there.
  std::string plan() const;
  /// One line per kernel: name, ops fused, FLOPs, bytes.
  std::string summary() const;
  /// True when the code came from the disk cache (nothing was compiled).
  bool loaded_from_cache() const;
  /// Seconds spent compiling (or loading from the disk cache).
  double compile_seconds() const;
  /// Bytes of the arena one run allocates for intermediate values (outputs not included).
  std::int64_t arena_bytes() const;
  /// The largest single intermediate value in the arena, in bytes (e.g. a score matrix).
  std::int64_t largest_intermediate_bytes() const;

 private:
  std::shared_ptr<Program> program_;
};

/// Compiles `graph` for inputs of `input_shapes` (binding its dynamic batch extent). Uses the
/// in-process cache and the disk cache (keys in the file comment above).
std::shared_ptr<const Executable> compile(const Graph& graph,
                                          const std::vector<Shape>& input_shapes,
                                          const Options& options = {});

/// A graph and its options, called like a function: each call compiles (or finds in the
/// in-process cache that compile shares) the executable for its inputs' shapes and runs it.
/// Holds no executables of its own.
class Function {
 public:
  explicit Function(Graph graph, Options options = {});
  /// Runs on `inputs`; throws edifice::Error when their count differs from the graph's.
  std::vector<Tensor> operator()(const std::vector<Tensor>& inputs) const;
  /// compile(graph(), input_shapes, options).
  std::shared_ptr<const Executable> executable(const std::vector<Shape>& input_shapes) const;
  const Graph& graph() const { return graph_; }

 private:
  Graph graph_;
  Options options_;
};

}  // namespace edifice::jit
