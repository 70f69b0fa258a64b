#pragma once
/// \file
/// Streaming inference for the multi_head models: one frame in, one answer out.
///
/// A Stream holds B independent streams (an agent per row) and the state each one needs
/// between frames: per-layer ring buffers of key/value rows (or of the input projections),
/// LSTM h/c, and each stream's frame count. `step(frames [B, E])` appends one frame to every
/// stream and returns the model's answer [B, H] for each; `reset(b)` starts stream b afresh
/// (an episode boundary).
///
///   multi_head::SlidingWindowOptions m{.embed_dim = 1024};
///   multi_head::Stream stream(m, params);          // exact window (seq_len == window_size)
///   Tensor answer = stream.step(frame);             // [1, 256], equals predict on the window
///
/// The step is an ordinary graph (frames, state and parameters in; the answer and the new
/// per-frame rows out) compiled by jit::compile, so it runs the JIT's kernels; the Stream then
/// copies the new rows into its rings (in exact-window mode a first small graph gives the
/// frame's rows, which go into the rings before the window graph reads them). Key/value rings
/// are head-major [B, heads, R, head_dim], so the attention reads them in place. Two modes:
///
/// - exact window: step returns what `predict` returns on the last seq_len frames, positions
///   numbered inside that window. A fresh (or reset) stream behaves as if it had seen seq_len
///   zero frames before its first frame, so its first answers equal `predict` on the window
///   zero-padded at the front. Cached per frame: x W_in and x W_in W_qkv (the first layer's
///   q/k/v are those plus a per-position constant (b_in + PE_i) W_qkv + b_qkv, computed once);
///   the remaining per-frame work is the first layers' attention and feed-forward over the
///   window and the last layer's last row (see docs/performance.md for the measured share).
/// - streaming band: positions are absolute (frame t of a stream is position t) and each
///   frame attends to itself and the previous window_size - 1 frames of its stream, through a
///   ring of window_size key/value rows per layer: O(window) work per layer per frame. step at
///   frame t equals `predict` on frames [0, t] of the model built with seq_len t + 1 (the band
///   mask is the model's), for every t; past the built seq_len the positional encoding simply
///   continues (sin(p / (1 + 0.01 d)) is defined for every p).
///
/// Hybrid models (build_hybrid, build_hybrid_mlp): the LSTM state is carried across steps and
/// the attention runs over a ring of the last seq_len projected LSTM outputs; step at frame
/// t < seq_len equals `predict` on frames [0, t] of the model built with seq_len t + 1.
///
/// Threads: one Stream must not be stepped from two threads at once; distinct Streams may run
/// concurrently. StreamOptions::jit.threads defaults to 1, so a step runs on the calling thread
/// and never wakes pool workers (for large batches a larger count may pay off).

#include <edifice/jit/jit.hpp>
#include <edifice/models/multi_head.hpp>
#include <edifice/nn/model.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace edifice::models::multi_head {

enum class StreamMode {
  automatic,       ///< streaming_band when seq_len > window_size, else exact_window
  exact_window,    ///< positions re-numbered inside the last seq_len frames (as predict)
  streaming_band,  ///< absolute positions, attention over the last window_size frames
};

struct StreamOptions {
  /// Hybrid models have one streaming form (automatic or streaming_band; exact_window is an
  /// error).
  StreamMode mode = StreamMode::automatic;
  /// Number of independent streams B (rows of every step).
  std::int64_t batch = 1;
  /// How the step graph is compiled; one thread by default (see the file comment).
  jit::Options jit = {.threads = 1};
};

class Stream {
 public:
  /// A stream of a build_sliding_window model with these options and its parameters (checked
  /// by name and shape against the model's).
  Stream(const SlidingWindowOptions& model, const nn::Params& params, StreamOptions options = {});
  /// A stream of a build_hybrid model.
  Stream(const HybridOptions& model, const nn::Params& params, StreamOptions options = {});
  /// A stream of a build_hybrid_mlp model.
  Stream(const HybridMlpOptions& model, const nn::Params& params, StreamOptions options = {});
  ~Stream();
  Stream(Stream&&) noexcept;
  Stream& operator=(Stream&&) noexcept;

  /// Appends frames[b] to stream b for every b; returns the answers [B, H]. A frame of the
  /// wrong dtype or shape is an error that leaves every stream unchanged.
  Tensor step(const Tensor& frames);
  /// Starts stream b afresh (no frames seen); the other streams are untouched.
  void reset(std::int64_t stream);
  /// Starts every stream afresh.
  void reset_all();

  std::int64_t batch() const;
  /// Frames stream b has seen since it was made or reset.
  std::int64_t frames_seen(std::int64_t stream) const;
  /// The mode in use (never automatic).
  StreamMode mode() const;
  /// The compiled step (for its kernels, FLOPs and plan); in exact-window mode the window part.
  const jit::Executable& executable() const;
  /// Exact-window mode: the compiled first part of a step (the frame's x W_in and
  /// x W_in W_qkv rows); null in the other modes.
  const jit::Executable* frame_executable() const;
  /// The step graph (the window part in exact-window mode): inputs are the parameters it
  /// reads, then frames and state; outputs are the answer and the new per-frame rows.
  const Graph& step_graph() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace edifice::models::multi_head
