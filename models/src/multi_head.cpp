// Edifice.Attention.MultiHead in C++: see multi_head.hpp and docs/models.md.
#include <edifice/models/multi_head.hpp>

#include <cmath>
#include <limits>

namespace edifice::models::multi_head {
namespace {

namespace o = edifice::ops;
constexpr double kMaskFill = -1e9;  // the original's finite fill for masked scores

void require(bool ok, const Loc& loc, const std::string& message) {
  if (!ok) fail_at(loc, message);
}

std::int64_t required_embed_dim(const std::optional<std::int64_t>& embed_dim, const char* fn,
                                const Loc& loc) {
  require(embed_dim.has_value(), loc, fmt::format("{}: embed_dim is required", fn));
  require(*embed_dim >= 1, loc, fmt::format("{}: embed_dim must be >= 1, got {}", fn, *embed_dim));
  return *embed_dim;
}

void check_positive(std::int64_t v, const char* what, const char* fn, const Loc& loc) {
  require(v >= 1, loc, fmt::format("{}: {} must be >= 1, got {}", fn, what, v));
}

void check_float_dtype(DType dtype, const char* fn, const Loc& loc) {
  require(dtype == DType::f32 || dtype == DType::f64, loc,
          fmt::format("{}: dtype must be f32 or f64, got {}", fn, dtype_name(dtype)));
}

void check_dropout(double rate, const char* fn, const Loc& loc) {
  require(rate >= 0 && rate < 1, loc,
          fmt::format("{}: dropout must be in [0, 1), got {}", fn, rate));
}

std::int64_t resolve_seq_len(const std::optional<std::int64_t>& seq_len, std::int64_t window,
                             const char* fn, const Loc& loc) {
  std::int64_t s = seq_len.value_or(window);
  require(s != nn::dynamic, loc,
          fmt::format("{}: seq_len cannot be dynamic (the batch is the only dynamic extent; build "
                      "one model per sequence length)",
                      fn));
  check_positive(s, "seq_len", fn, loc);
  return s;
}

// [B, S, H] -> [B, nh, S, hd] and back.
Value split_heads(const Value& x, std::int64_t nh, std::int64_t hd) {
  Shape s = x.shape();
  return o::transpose(o::reshape(x, {s[0], s[1], nh, hd}), {0, 2, 1, 3});
}
Value merge_heads(const Value& x) {
  Shape s = x.shape();  // [B, nh, S, hd]
  return o::reshape(o::transpose(x, {0, 2, 1, 3}), {s[0], s[2], s[1] * s[3]});
}

// Rotate-half RoPE over the last axis of [.., S, hd], base 10000, angle p * theta_j.
Value apply_rope(const Value& x) {
  const std::int64_t s = x.dim(-2), hd = x.dim(-1), half = hd / 2;
  Tensor cos_t(x.dtype(), {s, half}), sin_t(x.dtype(), {s, half});
  for (std::int64_t p = 0; p < s; ++p)
    for (std::int64_t j = 0; j < half; ++j) {
      double theta = std::pow(10000.0, -2.0 * static_cast<double>(j) / static_cast<double>(hd));
      cos_t.set_from_double(p * half + j, std::cos(static_cast<double>(p) * theta));
      sin_t.set_from_double(p * half + j, std::sin(static_cast<double>(p) * theta));
    }
  Value c = o::constant(cos_t), sn = o::constant(sin_t);
  Value x1 = o::slice_axis(x, -1, 0, half), x2 = o::slice_axis(x, -1, half, 2 * half);
  return o::concat({o::sub(o::mul(x1, c), o::mul(x2, sn)), o::add(o::mul(x1, sn), o::mul(x2, c))},
                   -1);
}

// How the per-head attention is computed inside a compute layer.
struct AttentionPlan {
  enum class Kind { standard, chunked, memory_efficient } kind = Kind::standard;
  std::int64_t chunk_size = kDefaultChunkSize;
  // Mask: none, causal, window w (predicates) or an explicit [S, S] tensor.
  o::AttentionMask::Kind mask = o::AttentionMask::Kind::none;
  std::int64_t window = 0;
  std::optional<Tensor> mask_tensor;
};

// The [S, S] mask tensor of a plan (for the attention weights readout).
Tensor plan_mask(const AttentionPlan& p, std::int64_t s) {
  if (p.mask_tensor) return *p.mask_tensor;
  if (p.mask == o::AttentionMask::Kind::window) return window_mask(s, p.window);
  if (p.mask == o::AttentionMask::Kind::causal) return causal_mask(s);
  return Tensor::full(DType::u8, {s, s}, 1);
}

Value attend(const Value& q, const Value& k, const Value& v, const AttentionPlan& p) {
  switch (p.kind) {
    case AttentionPlan::Kind::memory_efficient:
      return memory_efficient_attention(
          q, k, v,
          {.chunk_size = p.chunk_size,
           .causal = p.mask != o::AttentionMask::Kind::none,
           .window = p.mask == o::AttentionMask::Kind::window ? p.window : 0});
    case AttentionPlan::Kind::chunked:  // the same fused op (see chunked_attention)
    case AttentionPlan::Kind::standard: {
      o::AttentionOptions opts{.fill = kMaskFill};
      if (p.mask_tensor)
        opts.mask = o::AttentionMask::from_tensor(o::constant(*p.mask_tensor));
      else if (p.mask == o::AttentionMask::Kind::window)
        opts.mask = o::AttentionMask::sliding_window(p.window);
      else if (p.mask == o::AttentionMask::Kind::causal)
        opts.mask = o::AttentionMask::causal();
      return o::attention(q, k, v, opts);
    }
  }
  return {};
}

// softmax(mask(q.k^T / sqrt(hd))) per head: [B, nh, S, S], for inspection.
Value attention_weights(const Value& q, const Value& k, const AttentionPlan& p) {
  const std::int64_t s = q.dim(-2);
  Value scores = o::dot_general(q, k, {{3}, {3}, {0, 1}, {0, 1}});
  scores = o::mul(scores, o::scalar(1.0 / std::sqrt(static_cast<double>(q.dim(-1))), q.dtype()));
  Value mask = o::constant(plan_mask(p, s));
  scores = o::select(mask, scores, o::full_like(scores, kMaskFill));
  return o::softmax(scores, -1);
}

struct ComputeSpec {
  std::int64_t num_heads, head_dim;
  bool qk_layernorm = false, rope = false;
  AttentionPlan plan;
};

// "{name}_compute": split the fused QKV, per-head attention, merge. A second output holds the
// attention weights when asked for.
std::vector<nn::Layer> attention_compute(const nn::Layer& qkv, const ComputeSpec& spec,
                                         bool want_weights, const std::string& name,
                                         const Loc& loc) {
  return nn::custom_multi(
      "attention_compute", {qkv}, {},
      [spec, want_weights](const std::vector<Value>& in, const auto&, const auto&) {
        const Value& x = in[0];
        const std::int64_t h = spec.num_heads * spec.head_dim;
        Value q = split_heads(o::slice_axis(x, -1, 0, h), spec.num_heads, spec.head_dim);
        Value k = split_heads(o::slice_axis(x, -1, h, 2 * h), spec.num_heads, spec.head_dim);
        Value v = split_heads(o::slice_axis(x, -1, 2 * h, 3 * h), spec.num_heads, spec.head_dim);
        if (spec.qk_layernorm) {
          q = qk_layer_norm(q);
          k = qk_layer_norm(k);
        }
        if (spec.rope) {
          q = apply_rope(q);
          k = apply_rope(k);
        }
        std::vector<Value> outs = {merge_heads(attend(q, k, v, spec.plan))};
        if (want_weights) outs.push_back(attention_weights(q, k, spec.plan));
        return outs;
      },
      {.name = name + "_compute",
       .description = fmt::format("heads={}, head_dim={}", spec.num_heads, spec.head_dim)},
      loc);
}

AttentionPlan::Kind plan_kind(bool chunked, bool memory_efficient) {
  if (memory_efficient) return AttentionPlan::Kind::memory_efficient;
  return chunked ? AttentionPlan::Kind::chunked : AttentionPlan::Kind::standard;
}

}  // namespace

// ---- masks and tensor functions ----

Tensor causal_mask(std::int64_t seq_len) {
  return window_mask(seq_len, seq_len);
}

Tensor window_mask(std::int64_t seq_len, std::int64_t window_size) {
  if (seq_len < 0) fail("window_mask: seq_len must be >= 0, got {}", seq_len);
  Tensor m(DType::u8, {seq_len, seq_len});
  for (std::int64_t i = 0; i < seq_len; ++i)
    for (std::int64_t j = 0; j < seq_len; ++j)
      m.data<std::uint8_t>()[i * seq_len + j] = j <= i && j >= i - window_size + 1;
  return m;
}

Value qk_layer_norm(const Value& t, Loc loc) {
  return o::layer_norm(t, 1e-6, loc);
}

Value scaled_dot_product_attention(const Value& q, const Value& k, const Value& v,
                                   const SdpaOptions& options, Loc loc) {
  o::AttentionOptions opts{.scale = 1.0 / std::sqrt(static_cast<double>(k.dim(-1))),
                           .fill = kMaskFill};
  if (options.mask.valid()) opts.mask = o::AttentionMask::from_tensor(options.mask);
  return o::attention(q, k, v, opts, loc);
}

// Both "chunked" paths of the original are one fused attention op here: the JIT's attention
// kernels already work in query tiles and key blocks with O(S) scratch memory (see
// jit/src/codegen/attention_tile_kernels.cpp), so chunking in the graph would only add slicing.
// chunk_size is validated for compatibility and otherwise does not change the computation.
Value chunked_attention(const Value& q, const Value& k, const Value& v,
                        const ChunkedAttentionOptions& options, Loc loc) {
  require(options.chunk_size >= 1, loc,
          fmt::format("chunked_attention: chunk_size must be >= 1, got {}", options.chunk_size));
  return scaled_dot_product_attention(q, k, v, {.mask = options.mask}, loc);
}

Value memory_efficient_attention(const Value& q, const Value& k, const Value& v,
                                 const MemoryEfficientAttentionOptions& options, Loc loc) {
  require(options.chunk_size >= 1, loc,
          fmt::format("memory_efficient_attention: chunk_size must be >= 1, got {}",
                      options.chunk_size));
  require(options.window >= 0, loc,
          fmt::format("memory_efficient_attention: window must be >= 0, got {}", options.window));
  // Masked scores are -inf (a row with no allowed key is NaN, as in the original's 0/0).
  o::AttentionOptions opts{.scale = 1.0 / std::sqrt(static_cast<double>(q.dim(-1))),
                           .fill = -std::numeric_limits<double>::infinity()};
  if (options.window > 0)
    opts.mask = o::AttentionMask::sliding_window(options.window);
  else if (options.causal)
    opts.mask = o::AttentionMask::causal();
  return o::attention(q, k, v, opts, loc);
}

// ---- layers ----

nn::Layer add_positional_encoding(const nn::Layer& input, const PositionalEncodingOptions& options,
                                  Loc loc) {
  require(input.rank() == 3 && input.shape()[1] != nn::dynamic, loc,
          fmt::format("add_positional_encoding: the input must be [batch, seq, features] with a "
                      "concrete seq, got {}",
                      input.type().to_string()));
  const std::int64_t s = input.shape()[1], d = input.shape()[2];
  Tensor pe(input.dtype(), {s, d});
  for (std::int64_t p = 0; p < s; ++p)
    for (std::int64_t j = 0; j < d; ++j)
      pe.set_from_double(p * d + j, std::sin(static_cast<double>(p) /
                                             (1.0 + options.scale * static_cast<double>(j))));
  return nn::custom(
      "positional_encoding", {input}, {},
      [pe](const std::vector<Value>& in, const auto&, const auto&) {
        return o::add(in[0], o::constant(pe));
      },
      {.name = options.name, .description = fmt::format("scale={:g}", options.scale)}, loc);
}

nn::Layer self_attention(const nn::Layer& input, const SelfAttentionOptions& opt, Loc loc) {
  const char* fn = "self_attention";
  check_positive(opt.hidden_size, "hidden_size", fn, loc);
  check_positive(opt.num_heads, "num_heads", fn, loc);
  require(opt.hidden_size % opt.num_heads == 0, loc,
          fmt::format("{}: hidden_size {} is not divisible by num_heads {}", fn, opt.hidden_size,
                      opt.num_heads));
  const std::int64_t hd = opt.hidden_size / opt.num_heads;
  require(!opt.rope || hd % 2 == 0, loc,
          fmt::format("{}: rope needs an even head_dim, got {}", fn, hd));
  check_positive(opt.chunk_size, "chunk_size", fn, loc);
  check_dropout(opt.dropout, fn, loc);
  nn::Layer qkv = nn::dense(input, 3 * opt.hidden_size, {.name = opt.name + "_qkv"}, loc);
  ComputeSpec spec{opt.num_heads,
                   hd,
                   opt.qk_layernorm,
                   opt.rope,
                   {plan_kind(opt.chunked, opt.memory_efficient), opt.chunk_size,
                    opt.causal ? o::AttentionMask::Kind::causal : o::AttentionMask::Kind::none, 0,
                    std::nullopt}};
  auto compute = attention_compute(qkv, spec, opt.weights != nullptr, opt.name, loc);
  if (opt.weights) opt.weights->push_back(compute[1]);
  nn::Layer out = nn::dense(compute[0], opt.hidden_size, {.name = opt.name + "_output"}, loc);
  return nn::dropout(out, {.name = opt.name + "_dropout", .rate = opt.dropout}, loc);
}

nn::Layer multi_head_attention(const nn::Layer& input, const MultiHeadAttentionOptions& opt,
                               Loc loc) {
  check_positive(opt.num_heads, "num_heads", "multi_head_attention", loc);
  check_positive(opt.head_dim, "head_dim", "multi_head_attention", loc);
  return self_attention(input,
                        {.hidden_size = opt.num_heads * opt.head_dim,
                         .num_heads = opt.num_heads,
                         .dropout = opt.dropout,
                         .causal = opt.causal,
                         .qk_layernorm = opt.qk_layernorm,
                         .rope = opt.rope,
                         .chunked = opt.chunked,
                         .memory_efficient = opt.memory_efficient,
                         .chunk_size = opt.chunk_size,
                         .name = opt.name,
                         .weights = opt.weights},
                        loc);
}

nn::Layer sliding_window_attention(const nn::Layer& input, const SlidingWindowAttentionOptions& opt,
                                   Loc loc) {
  const char* fn = "sliding_window_attention";
  check_positive(opt.window_size, "window_size", fn, loc);
  check_positive(opt.num_heads, "num_heads", fn, loc);
  check_positive(opt.head_dim, "head_dim", fn, loc);
  check_positive(opt.chunk_size, "chunk_size", fn, loc);
  const std::int64_t h = opt.num_heads * opt.head_dim;
  if (opt.mask) {
    const std::int64_t s = input.rank() == 3 ? input.shape()[1] : -1;
    require(opt.mask->dtype() == DType::u8 && opt.mask->shape() == Shape{s, s}, loc,
            fmt::format("{}: mask must be u8[{},{}] for sequence length {}, got {}{}", fn, s, s, s,
                        dtype_name(opt.mask->dtype()), shape_to_string(opt.mask->shape())));
  }
  nn::Layer qkv = nn::dense(input, 3 * h, {.name = opt.name + "_qkv"}, loc);
  ComputeSpec spec{opt.num_heads,
                   opt.head_dim,
                   opt.qk_layernorm,
                   false,
                   {plan_kind(opt.chunked, opt.memory_efficient), opt.chunk_size,
                    o::AttentionMask::Kind::window, opt.window_size, opt.mask}};
  auto compute = attention_compute(qkv, spec, opt.weights != nullptr, opt.name, loc);
  if (opt.weights) opt.weights->push_back(compute[1]);
  return compute[0];
}

// ---- models ----

Built build_sliding_window(const SlidingWindowOptions& opt, Loc loc) {
  const char* fn = "build_sliding_window";
  const std::int64_t e = required_embed_dim(opt.embed_dim, fn, loc);
  check_positive(opt.window_size, "window_size", fn, loc);
  check_positive(opt.num_heads, "num_heads", fn, loc);
  check_positive(opt.head_dim, "head_dim", fn, loc);
  check_positive(opt.num_layers, "num_layers", fn, loc);
  check_positive(opt.ffn_dim, "ffn_dim", fn, loc);
  check_dropout(opt.dropout, fn, loc);
  check_float_dtype(opt.dtype, fn, loc);
  const std::int64_t s = resolve_seq_len(opt.seq_len, opt.window_size, fn, loc);
  const std::int64_t h = opt.num_heads * opt.head_dim;
  Built built;
  built.input = nn::input("state_sequence", {nn::dynamic, s, e}, opt.dtype, loc);
  nn::Layer x = nn::dense(built.input, h, {.name = "input_proj"}, loc);
  x = add_positional_encoding(x, {.name = "pos_encoding"}, loc);
  for (std::int64_t l = 1; l <= opt.num_layers; ++l) {
    const std::string p = fmt::format("layer_{}", l);
    nn::Layer a = sliding_window_attention(x,
                                           {.window_size = opt.window_size,
                                            .num_heads = opt.num_heads,
                                            .head_dim = opt.head_dim,
                                            .name = p + "_attn",
                                            .weights = &built.attention_weights},
                                           loc);
    x = nn::layer_norm(nn::add(x, a, {.name = p + "_residual1"}, loc), {.name = p + "_norm1"}, loc);
    nn::Layer f = nn::dense(x, opt.ffn_dim, {.name = p + "_ffn1"}, loc);
    f = nn::gelu(f, {}, loc);
    f = nn::dense(f, h, {.name = p + "_ffn2"}, loc);
    f = nn::dropout(f, {.rate = opt.dropout}, loc);
    x = nn::layer_norm(nn::add(x, f, {.name = p + "_residual2"}, loc), {.name = p + "_norm2"}, loc);
  }
  built.output = nn::take_index(x, 1, -1, {.name = "last_position"}, loc);
  return built;
}

Built build(const BuildOptions& opt, Loc loc) {
  std::int64_t head_dim = opt.head_dim;
  if (opt.hidden_size) {
    check_positive(opt.num_heads, "num_heads", "build", loc);
    require(*opt.hidden_size % opt.num_heads == 0, loc,
            fmt::format("build: hidden_size {} is not divisible by num_heads {}", *opt.hidden_size,
                        opt.num_heads));
    head_dim = *opt.hidden_size / opt.num_heads;
  }
  return build_sliding_window({.embed_dim = opt.embed_dim,
                               .window_size = opt.window_size,
                               .num_heads = opt.num_heads,
                               .head_dim = head_dim,
                               .num_layers = opt.num_layers,
                               .ffn_dim = opt.ffn_dim,
                               .dropout = opt.dropout,
                               .seq_len = opt.seq_len,
                               .dtype = opt.dtype},
                              loc);
}

Built build_hybrid(const HybridOptions& opt, Loc loc) {
  const char* fn = "build_hybrid";
  const std::int64_t e = required_embed_dim(opt.embed_dim, fn, loc);
  check_positive(opt.lstm_hidden, "lstm_hidden", fn, loc);
  check_positive(opt.lstm_layers, "lstm_layers", fn, loc);
  check_positive(opt.num_heads, "num_heads", fn, loc);
  check_positive(opt.head_dim, "head_dim", fn, loc);
  check_positive(opt.window_size, "window_size", fn, loc);
  check_dropout(opt.dropout, fn, loc);
  const std::int64_t s = resolve_seq_len(opt.seq_len, opt.window_size, fn, loc);
  Built built;
  check_float_dtype(opt.dtype, "build_hybrid", loc);
  built.input = nn::input("state_sequence", {nn::dynamic, s, e}, opt.dtype, loc);
  nn::Layer x = nn::layer_norm(built.input, {.name = "input_ln", .epsilon = 1e-6}, loc);
  for (std::int64_t k = 1; k <= opt.lstm_layers; ++k) {
    x = nn::lstm(x, opt.lstm_hidden, {.name = fmt::format("lstm_{}", k)}, loc).sequence;
    x = nn::layer_norm(x, {.name = fmt::format("lstm_{}_ln", k), .epsilon = 1e-6}, loc);
    if (opt.dropout > 0 && k < opt.lstm_layers)
      x = nn::dropout(x, {.name = fmt::format("recurrent_dropout_{}", k), .rate = opt.dropout},
                      loc);
  }
  nn::Layer proj = nn::dense(x, opt.num_heads * opt.head_dim, {.name = "lstm_to_attn_proj"}, loc);
  nn::Layer attn = multi_head_attention(proj,
                                        {.num_heads = opt.num_heads,
                                         .head_dim = opt.head_dim,
                                         .dropout = opt.dropout,
                                         .causal = true,
                                         .name = "hybrid_attn",
                                         .weights = &built.attention_weights},
                                        loc);
  x = nn::layer_norm(nn::add(proj, attn, {.name = "attn_residual"}, loc), {.name = "attn_norm"},
                     loc);
  built.output = nn::take_index(x, 1, -1, {.name = "hybrid_last"}, loc);
  return built;
}

Built build_hybrid_mlp(const HybridMlpOptions& opt, Loc loc) {
  for (auto size : opt.mlp_sizes)
    check_positive(size, "every mlp_sizes entry", "build_hybrid_mlp", loc);
  Built built = build_hybrid(opt.hybrid(), loc);
  nn::Layer x = built.output;
  for (std::size_t i = 0; i < opt.mlp_sizes.size(); ++i) {
    x = nn::dense(x, opt.mlp_sizes[i], {.name = fmt::format("hybrid_mlp_{}", i)}, loc);
    x = nn::relu(x, {}, loc);
    x = nn::dropout(x, {.rate = opt.dropout}, loc);
  }
  built.output = x;
  return built;
}

RecommendedDefaults recommended_defaults() {
  return {};
}

std::int64_t output_size(const OutputSizeOptions& opt) {
  if (opt.mlp_sizes && !opt.mlp_sizes->empty()) return opt.mlp_sizes->back();
  if (opt.hidden_size) {
    if (opt.num_heads < 1 || *opt.hidden_size % opt.num_heads != 0)
      fail("output_size: hidden_size {} is not divisible by num_heads {}", *opt.hidden_size,
           opt.num_heads);
    return *opt.hidden_size;
  }
  return opt.num_heads * opt.head_dim;
}

}  // namespace edifice::models::multi_head
