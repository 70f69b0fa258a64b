#pragma once
/// \file
/// The C++ counterpart of Edifice.Attention.MultiHead (Edifice v0.2.0): sliding-window
/// multi-head attention models and hybrid LSTM + attention models for temporal sequences.
///
/// Options mirror the Elixir keyword lists and their defaults; builders return the output
/// layer (wrap it in nn::Model). Observable behaviour follows the original (op order, post-LN,
/// exact GELU, fused QKV, sine-only positional encoding, rotate-half RoPE, parameter-free QK
/// layer norm, boolean masks with the causal window j in [i-w+1, i], parameter names), except
/// where the original is wrong: docs/models.md lists every divergence.
///
///   auto out = models::multi_head::build_sliding_window({.embed_dim = 1024});
///   nn::Model model(out);

#include <edifice/nn/layers.hpp>
#include <edifice/nn/model.hpp>

#include <optional>
#include <string>
#include <vector>

namespace edifice::models::multi_head {

using Loc = std::source_location;

// ---- module constants (used wherever an option is left out) ----
inline constexpr std::int64_t kDefaultNumHeads = 4;
inline constexpr std::int64_t kDefaultHeadDim = 64;
inline constexpr std::int64_t kDefaultWindowSize = 60;
inline constexpr double kDefaultDropout = 0.1;
inline constexpr std::int64_t kDefaultNumLayers = 2;
inline constexpr std::int64_t kDefaultFfnDim = 256;
inline constexpr std::int64_t kDefaultChunkSize = 32;
inline constexpr std::int64_t kDefaultLstmHidden = 256;

// ---- model builders ----

/// Options of build_sliding_window. The input layer is "state_sequence" [batch, seq_len, E].
struct SlidingWindowOptions {
  std::optional<std::int64_t> embed_dim;  ///< required
  std::int64_t window_size = kDefaultWindowSize;
  std::int64_t num_heads = kDefaultNumHeads;
  std::int64_t head_dim = kDefaultHeadDim;
  std::int64_t num_layers = kDefaultNumLayers;
  std::int64_t ffn_dim = kDefaultFfnDim;
  double dropout = kDefaultDropout;
  /// Defaults to window_size; nn::dynamic makes the sequence length dynamic.
  std::optional<std::int64_t> seq_len;
  /// Element type of the input and of every parameter: f32, or f64 (e.g. for gradient checks).
  DType dtype = DType::f32;
};

/// Options of build (the registry entry): as build_sliding_window plus hidden_size, which
/// sets head_dim = hidden_size / num_heads (and must divide evenly).
struct BuildOptions {
  std::optional<std::int64_t> embed_dim;
  std::optional<std::int64_t> hidden_size;
  std::int64_t window_size = kDefaultWindowSize;
  std::int64_t num_heads = kDefaultNumHeads;
  std::int64_t head_dim = kDefaultHeadDim;
  std::int64_t num_layers = kDefaultNumLayers;
  std::int64_t ffn_dim = kDefaultFfnDim;
  double dropout = kDefaultDropout;
  std::optional<std::int64_t> seq_len;
  /// Element type of the input and of every parameter: f32, or f64 (e.g. for gradient checks).
  DType dtype = DType::f32;
};

struct HybridOptions {
  std::optional<std::int64_t> embed_dim;  ///< required
  std::int64_t lstm_hidden = kDefaultLstmHidden;
  std::int64_t lstm_layers = 1;
  std::int64_t num_heads = kDefaultNumHeads;
  std::int64_t head_dim = kDefaultHeadDim;
  double dropout = kDefaultDropout;
  std::int64_t window_size = kDefaultWindowSize;  ///< only the default of seq_len
  std::optional<std::int64_t> seq_len;
  /// Element type of the input and of every parameter: f32, or f64 (e.g. for gradient checks).
  DType dtype = DType::f32;
};

struct HybridMlpOptions {
  std::optional<std::int64_t> embed_dim;
  std::int64_t lstm_hidden = kDefaultLstmHidden;
  std::int64_t lstm_layers = 1;
  std::int64_t num_heads = kDefaultNumHeads;
  std::int64_t head_dim = kDefaultHeadDim;
  double dropout = kDefaultDropout;
  std::int64_t window_size = kDefaultWindowSize;
  std::optional<std::int64_t> seq_len;
  std::vector<std::int64_t> mlp_sizes = {256, 256};
  /// Element type of the input and of every parameter: f32, or f64 (e.g. for gradient checks).
  DType dtype = DType::f32;

  /// The options of the hybrid model under the MLP head (everything but mlp_sizes).
  HybridOptions hybrid() const {
    return {.embed_dim = embed_dim,
            .lstm_hidden = lstm_hidden,
            .lstm_layers = lstm_layers,
            .num_heads = num_heads,
            .head_dim = head_dim,
            .dropout = dropout,
            .window_size = window_size,
            .seq_len = seq_len,
            .dtype = dtype};
  }
};

/// What a model builder returns: the output layer and, for inspection, each attention layer's
/// weights [batch, heads, S, S] after softmax (rows sum to 1, masked entries exactly 0).
struct Built {
  nn::Layer output;
  std::vector<nn::Layer> attention_weights;
  /// Input layer ("state_sequence").
  nn::Layer input;
};

/// Post-LN transformer encoder over a causal window; output [batch, num_heads * head_dim] from
/// the last position.
Built build_sliding_window(const SlidingWindowOptions& options, Loc loc = Loc::current());
/// Delegates to build_sliding_window (hidden_size overrides head_dim).
Built build(const BuildOptions& options, Loc loc = Loc::current());
/// Input layer norm, stacked LSTMs, projection, causal multi-head self-attention, residual +
/// layer norm; output [batch, num_heads * head_dim] from the last position.
Built build_hybrid(const HybridOptions& options, Loc loc = Loc::current());
/// build_hybrid followed by Dense -> ReLU -> Dropout for each of mlp_sizes.
Built build_hybrid_mlp(const HybridMlpOptions& options, Loc loc = Loc::current());

/// [window_size: 60, num_heads: 4, head_dim: 64, num_layers: 2, dropout: 0.1].
struct RecommendedDefaults {
  std::int64_t window_size = kDefaultWindowSize;
  std::int64_t num_heads = kDefaultNumHeads;
  std::int64_t head_dim = kDefaultHeadDim;
  std::int64_t num_layers = kDefaultNumLayers;
  double dropout = kDefaultDropout;
};
RecommendedDefaults recommended_defaults();

struct OutputSizeOptions {
  std::int64_t num_heads = kDefaultNumHeads;
  std::int64_t head_dim = kDefaultHeadDim;
  std::optional<std::int64_t> hidden_size;
  std::optional<std::vector<std::int64_t>> mlp_sizes;
};
/// The width of a model's output: the last of mlp_sizes if given, else num_heads * head_dim
/// with head_dim = hidden_size / num_heads when hidden_size is given. (The original ignores
/// hidden_size and mlp_sizes; see docs/models.md.)
std::int64_t output_size(const OutputSizeOptions& options = {});

// ---- layer builders ----

struct SelfAttentionOptions {
  std::int64_t hidden_size = 256;
  std::int64_t num_heads = 1;
  double dropout = kDefaultDropout;
  bool causal = true;
  bool qk_layernorm = false;
  bool rope = false;
  bool chunked = false;
  bool memory_efficient = false;
  std::int64_t chunk_size = kDefaultChunkSize;
  std::string name = "self_attn";
  /// If set, receives the attention weights layer [batch, heads, S, S].
  std::vector<nn::Layer>* weights = nullptr;
};
/// Fused QKV dense ("{name}_qkv"), per-head attention ("{name}_compute"), output dense
/// ("{name}_output") and dropout ("{name}_dropout"). Output [batch, S, hidden_size].
nn::Layer self_attention(const nn::Layer& input, const SelfAttentionOptions& options = {},
                         Loc loc = Loc::current());

struct MultiHeadAttentionOptions {
  std::int64_t num_heads = kDefaultNumHeads;
  std::int64_t head_dim = kDefaultHeadDim;
  double dropout = kDefaultDropout;
  bool causal = true;
  bool qk_layernorm = false;
  bool rope = false;
  bool chunked = false;
  bool memory_efficient = false;
  std::int64_t chunk_size = kDefaultChunkSize;
  std::string name = "self_attn";
  std::vector<nn::Layer>* weights = nullptr;
};
/// self_attention with hidden_size = num_heads * head_dim.
nn::Layer multi_head_attention(const nn::Layer& input,
                               const MultiHeadAttentionOptions& options = {},
                               Loc loc = Loc::current());

struct SlidingWindowAttentionOptions {
  std::int64_t window_size = kDefaultWindowSize;
  std::int64_t num_heads = kDefaultNumHeads;
  std::int64_t head_dim = kDefaultHeadDim;
  /// A precomputed u8 [S, S] mask (1 = attend); default: the causal window.
  std::optional<Tensor> mask;
  bool qk_layernorm = false;
  bool chunked = false;
  bool memory_efficient = false;
  std::int64_t chunk_size = kDefaultChunkSize;
  std::string name = "window_attn";
  std::vector<nn::Layer>* weights = nullptr;
};
/// Fused QKV dense ("{name}_qkv") and windowed attention ("{name}_compute"), with no output
/// projection and no dropout, as in the original. Output [batch, S, num_heads * head_dim].
nn::Layer sliding_window_attention(const nn::Layer& input,
                                   const SlidingWindowAttentionOptions& options = {},
                                   Loc loc = Loc::current());

struct PositionalEncodingOptions {
  double scale = 0.01;
  std::string name = "pos_enc";
};
/// x + PE with PE[p, d] = sin(p / (1 + scale * d)) (sine only, as the original).
nn::Layer add_positional_encoding(const nn::Layer& input,
                                  const PositionalEncodingOptions& options = {},
                                  Loc loc = Loc::current());

// ---- tensor functions (graph level, on values [batch, S, D] or [batch, heads, S, D]) ----

struct SdpaOptions {
  /// u8 mask, [Sq, Sk] or the scores' full shape; invalid = no mask.
  Value mask;
};
/// softmax(q.k^T / sqrt(D)) . v with masked scores set to -1e9 (D from k's last axis).
Value scaled_dot_product_attention(const Value& q, const Value& k, const Value& v,
                                   const SdpaOptions& options = {}, Loc loc = Loc::current());

struct ChunkedAttentionOptions {
  std::int64_t chunk_size = kDefaultChunkSize;
  Value mask;
};
/// The same result as scaled_dot_product_attention. The original computes it over query
/// chunks so that only chunk x Sk scores exist at a time; here it is the same fused attention
/// op, whose JIT kernels never hold more than a tile of scores (O(S) scratch), so chunk_size
/// (>= 1) does not change the computation.
Value chunked_attention(const Value& q, const Value& k, const Value& v,
                        const ChunkedAttentionOptions& options = {}, Loc loc = Loc::current());

struct MemoryEfficientAttentionOptions {
  std::int64_t chunk_size = kDefaultChunkSize;
  bool causal = false;
  /// Causal window (>= 1); 0 = none. The original drops the window on this path; we keep it.
  std::int64_t window = 0;
};
/// Online-softmax attention over key/value chunks (Rabe & Staats) in the original; here the
/// fused attention op with a causal or window predicate mask, whose tiled JIT kernel is that
/// online softmax over key blocks (and skips the blocks outside the band). Masked scores are
/// -inf; chunk_size (>= 1) does not change the computation.
Value memory_efficient_attention(const Value& q, const Value& k, const Value& v,
                                 const MemoryEfficientAttentionOptions& options = {},
                                 Loc loc = Loc::current());

/// (t - mean) / sqrt(var + 1e-6) over the last axis, no learnable parameters.
Value qk_layer_norm(const Value& t, Loc loc = Loc::current());

/// u8 [S, S], 1 where j <= i.
Tensor causal_mask(std::int64_t seq_len);
/// u8 [S, S], 1 where i - w + 1 <= j <= i.
Tensor window_mask(std::int64_t seq_len, std::int64_t window_size);

}  // namespace edifice::models::multi_head
