// Streaming inference for the multi_head models: see stream.hpp. The step graphs mirror the
// builders in multi_head.cpp op for op (same association of sums where it matters), so a
// step agrees with predict to rounding.
#include <edifice/models/stream.hpp>

#include <array>
#include <cmath>
#include <cstring>
#include <map>

namespace edifice::models::multi_head {
namespace {

namespace o = edifice::ops;
constexpr double kMaskFill = -1e9;  // the builders' fill for masked scores

// The positional encoding of multi_head.cpp: PE[p, d] = sin(p / (1 + 0.01 d)).
double positional_encoding(std::int64_t p, std::int64_t d) {
  return std::sin(static_cast<double>(p) / (1.0 + 0.01 * static_cast<double>(d)));
}

// Builds a step graph: graph inputs (with their tensors) are added as they are first used.
class StepBuilder {
 public:
  StepBuilder(const nn::Model& model, const nn::Params& params, DType dtype)
      : params_(params), dtype_(dtype) {
    nn::check_params(model.parameters(), params, "Stream");
  }

  DType dtype() const { return dtype_; }

  // A model parameter, as a graph input.
  Value param(const std::string& name) {
    auto it = values_.find(name);
    if (it != values_.end()) return it->second;
    Value v = add_input(name, params_.at(name));
    values_[name] = v;
    return v;
  }
  // A non-parameter input (frames, state, masks); returns its index in inputs().
  std::size_t add(const std::string& name, Tensor initial) {
    add_input(name, std::move(initial));
    return inputs_.size() - 1;
  }
  Value input(std::size_t index) const { return inputs_[index]; }
  const Tensor& tensor_of(const std::string& param_name) const { return params_.at(param_name); }
  std::vector<Tensor>& tensors() { return tensors_; }
  const std::vector<Value>& inputs() const { return inputs_; }

  Value dense(const Value& x, const std::string& name) {
    Value y = o::dot_general(x, param(name + ".kernel"), {{x.rank() - 1}, {0}, {}, {}});
    return o::add(y, param(name + ".bias"));
  }
  Value layer_norm(const Value& x, const std::string& name, double eps) {
    return o::layer_norm(x, param(name + ".gamma"), param(name + ".beta"), eps);
  }

 private:
  Value add_input(const std::string& name, Tensor t) {
    Value v = o::parameter(name, t.dtype(), t.shape());
    inputs_.push_back(v);
    tensors_.push_back(std::move(t));
    return v;
  }

  const nn::Params& params_;
  DType dtype_;
  std::map<std::string, Value> values_;
  std::vector<Value> inputs_;
  std::vector<Tensor> tensors_;
};

// [B, S, nh*hd] -> [B, nh, S, hd] and back (as multi_head.cpp).
Value split_heads(const Value& x, std::int64_t nh, std::int64_t hd) {
  Shape s = x.shape();
  return o::transpose(o::reshape(x, {s[0], s[1], nh, hd}), {0, 2, 1, 3});
}
Value merge_heads(const Value& x) {
  Shape s = x.shape();
  return o::reshape(o::transpose(x, {0, 2, 1, 3}), {s[0], s[2], s[1] * s[3]});
}

// q, k, v [B, S, 3H] sliced from a fused QKV row block.
std::array<Value, 3> split_qkv(const Value& qkv, std::int64_t h) {
  return {o::slice_axis(qkv, -1, 0, h), o::slice_axis(qkv, -1, h, 2 * h),
          o::slice_axis(qkv, -1, 2 * h, 3 * h)};
}

// One query row per stream over its ring of keys/values plus the new row: q, k, v [B, H],
// rings [B, R, H], mask u8 [B, 1, 1, R + 1] (1 = the slot is inside the stream's window).
Value attend_row(const Value& q, const Value& k, const Value& v, const Value& ring_k,
                 const Value& ring_v, const Value& mask, std::int64_t nh, std::int64_t hd) {
  const std::int64_t b = q.dim(0), h = q.dim(1);
  auto rows = [&](const Value& x) { return o::reshape(x, {b, 1, h}); };
  Value keys = split_heads(o::concat({ring_k, rows(k)}, 1), nh, hd);
  Value values = split_heads(o::concat({ring_v, rows(v)}, 1), nh, hd);
  Value query = split_heads(rows(q), nh, hd);
  Value full_mask = o::broadcast_to(mask, {b, nh, 1, keys.dim(2)});
  o::AttentionOptions opts{.mask = o::AttentionMask::from_tensor(full_mask), .fill = kMaskFill};
  return o::reshape(merge_heads(o::attention(query, keys, values, opts)), {b, h});
}

// Post-LN feed-forward half of a sliding-window layer (x is already norm1's output).
Value feed_forward(StepBuilder& g, const Value& x, const std::string& p) {
  Value f = g.dense(o::gelu(g.dense(x, p + "_ffn1")), p + "_ffn2");
  return g.layer_norm(o::add(x, f), p + "_norm2", 1e-5);
}

}  // namespace

// ---- the state and the per-step bookkeeping ----

struct Stream::Impl {
  StreamMode mode = StreamMode::exact_window;
  std::int64_t batch = 1, embed = 0, ring_len = 0;
  DType dtype = DType::f32;
  Graph graph;
  std::shared_ptr<const jit::Executable> exe;
  std::vector<Tensor> inputs;  // graph order; state tensors are updated in place
  std::size_t frames_input = 0;
  // Rows appended to a ring each step: the ring's input index and the output giving the row.
  struct RingLink {
    std::size_t input, output;
  };
  std::vector<RingLink> rings;
  // State replaced each step (LSTM h, c): input index, output index.
  std::vector<RingLink> carried;
  // exact window: i64 [S] time order of the window's rows in concat(ring, new row).
  std::optional<std::size_t> order_input;
  // band / hybrid: u8 [B, 1, 1, R + 1] validity of each ring slot, and the window span.
  std::optional<std::size_t> mask_input;
  std::int64_t span = 0;
  // band: f [B, H] positional encoding of each stream's current position.
  std::optional<std::size_t> pe_input;
  Tensor pe_table;  // [S, H]: positions below the built seq_len
  std::int64_t steps = 0;
  std::vector<std::int64_t> start;  // the step at which each stream began

  void finish(StepBuilder& g, std::vector<Value> outputs, const jit::Options& jit_options);
  void check_stream(std::int64_t b, const char* fn) const;
  void prepare_step();
  void write_rows(const std::vector<Tensor>& outputs);
  void clear_stream(std::int64_t b);
};

void Stream::Impl::finish(StepBuilder& g, std::vector<Value> outputs,
                          const jit::Options& jit_options) {
  graph = Graph(g.inputs(), std::move(outputs));
  inputs = std::move(g.tensors());
  std::vector<Shape> shapes;
  for (const Tensor& t : inputs) shapes.push_back(t.shape());
  exe = jit::compile(graph, shapes, jit_options);
  start.assign(static_cast<std::size_t>(batch), 0);
}

void Stream::Impl::check_stream(std::int64_t b, const char* fn) const {
  if (b < 0 || b >= batch)
    fail("Stream::{}: stream index {} is out of range [0, {})", fn, b, batch);
}

// Fills the per-step inputs (window order, slot mask, positional encoding) for step `steps`.
void Stream::Impl::prepare_step() {
  const std::int64_t n = steps, r = ring_len;
  if (order_input) {
    // Window position i < S - 1 is frame n - S + 1 + i, kept in ring slot (n + 1 + i) mod S;
    // the last position is the new row (index S of the concatenation).
    auto* order = inputs[*order_input].data<std::int64_t>();
    for (std::int64_t i = 0; i + 1 < r; ++i) order[i] = (n + 1 + i) % r;
    order[r - 1] = r;
  }
  if (mask_input) {
    auto* mask = inputs[*mask_input].data<std::uint8_t>();
    for (std::int64_t b = 0; b < batch; ++b) {
      std::uint8_t* row = mask + b * (r + 1);
      for (std::int64_t s = 0; s < r; ++s) {
        // Slot s holds frame n - d (d in [1, R]); it is visible when it is one of the span - 1
        // frames before this one and the stream had begun by then.
        const std::int64_t d = ((n - s) % r + r - 1) % r + 1;
        row[s] = d <= span - 1 && n - d >= start[static_cast<std::size_t>(b)];
      }
      row[r] = 1;
    }
  }
  if (pe_input) {
    Tensor& pe = inputs[*pe_input];
    const std::int64_t h = pe.dim(1), esize = static_cast<std::int64_t>(dtype_size(dtype));
    for (std::int64_t b = 0; b < batch; ++b) {
      const std::int64_t p = n - start[static_cast<std::size_t>(b)];
      auto* dst = static_cast<std::byte*>(pe.raw_data()) + b * h * esize;
      if (p < pe_table.dim(0)) {
        std::memcpy(dst, static_cast<const std::byte*>(pe_table.raw_data()) + p * h * esize,
                    static_cast<std::size_t>(h * esize));
      } else {
        for (std::int64_t d = 0; d < h; ++d)
          pe.set_from_double(b * h + d, positional_encoding(p, d));
      }
    }
  }
}

void Stream::Impl::write_rows(const std::vector<Tensor>& outputs) {
  const std::int64_t slot = steps % ring_len;
  for (const RingLink& link : rings) {
    Tensor& ring = inputs[link.input];
    const Tensor& row = outputs[link.output];
    const std::size_t bytes = row.nbytes() / static_cast<std::size_t>(batch);
    for (std::int64_t b = 0; b < batch; ++b)
      std::memcpy(
          static_cast<std::byte*>(ring.raw_data()) +
              static_cast<std::size_t>(b * ring_len + slot) * bytes,
          static_cast<const std::byte*>(row.raw_data()) + static_cast<std::size_t>(b) * bytes,
          bytes);
  }
  for (const RingLink& link : carried) inputs[link.input] = outputs[link.output];
}

// Zeroes stream b's rings and carried state: a zero frame's x W_in and x W_in W_qkv are exactly
// zero (the exact window's padding); band and hybrid rings are masked by `start` anyway.
void Stream::Impl::clear_stream(std::int64_t b) {
  auto zero_rows = [&](Tensor& t) {
    const std::size_t bytes = t.nbytes() / static_cast<std::size_t>(batch);
    std::memset(static_cast<std::byte*>(t.raw_data()) + static_cast<std::size_t>(b) * bytes, 0,
                bytes);
  };
  for (const RingLink& link : rings) zero_rows(inputs[link.input]);
  for (const RingLink& link : carried) zero_rows(inputs[link.input]);
  start[static_cast<std::size_t>(b)] = steps;
}

// ---- step graphs ----

namespace {

struct SlidingDims {
  std::int64_t e, h, nh, hd, s, w, layers;
};

// PE [S, H] in the model's dtype.
Tensor positional_table(DType dtype, std::int64_t s, std::int64_t h) {
  Tensor pe(dtype, {s, h});
  for (std::int64_t p = 0; p < s; ++p)
    for (std::int64_t d = 0; d < h; ++d) pe.set_from_double(p * h + d, positional_encoding(p, d));
  return pe;
}

// The first layer's per-position q/k/v term (b_in + PE_p) W_qkv + b_qkv [S, 3H], summed in double
// once (the frame's own term x W_in W_qkv comes from the ring).
Tensor qkv_position_term(StepBuilder& g, std::int64_t s, std::int64_t h) {
  const Tensor& b_in = g.tensor_of("input_proj.bias");
  const Tensor& w = g.tensor_of("layer_1_attn_qkv.kernel");
  const Tensor& b_qkv = g.tensor_of("layer_1_attn_qkv.bias");
  Tensor out(g.dtype(), {s, 3 * h});
  std::vector<double> row(static_cast<std::size_t>(h)), acc(static_cast<std::size_t>(3 * h));
  for (std::int64_t p = 0; p < s; ++p) {
    for (std::int64_t d = 0; d < h; ++d)
      row[static_cast<std::size_t>(d)] = b_in.get_as_double(d) + positional_encoding(p, d);
    for (std::int64_t j = 0; j < 3 * h; ++j)
      acc[static_cast<std::size_t>(j)] = b_qkv.get_as_double(j);
    for (std::int64_t d = 0; d < h; ++d)
      for (std::int64_t j = 0; j < 3 * h; ++j)
        acc[static_cast<std::size_t>(j)] +=
            row[static_cast<std::size_t>(d)] * w.get_as_double(d * 3 * h + j);
    for (std::int64_t j = 0; j < 3 * h; ++j)
      out.set_from_double(p * 3 * h + j, acc[static_cast<std::size_t>(j)]);
  }
  return out;
}

// Exact window: the first layer's rows come from rings of x W_in ([B, S, H]) and x W_in W_qkv
// ([B, S, 3H]); every later layer runs on the whole window, and the JIT's row pruning leaves
// the last layer one row.
std::vector<Value> exact_window_graph(StepBuilder& g, Stream::Impl& st, const SlidingDims& m) {
  const DType dt = g.dtype();
  const std::int64_t b = st.batch;
  st.frames_input = g.add("frames", Tensor(dt, {b, m.e}));
  const std::size_t ring_xw = g.add("ring_input_proj", Tensor(dt, {b, m.s, m.h}));
  const std::size_t ring_u = g.add("ring_layer_1_qkv", Tensor(dt, {b, m.s, 3 * m.h}));
  st.order_input = g.add("window_order", Tensor(DType::i64, {m.s}));
  const std::size_t position_term =
      g.add("layer_1_qkv_position_term", qkv_position_term(g, m.s, m.h));
  const Value frames = g.input(st.frames_input);
  Value xw = o::dot_general(frames, g.param("input_proj.kernel"), {{1}, {0}, {}, {}});
  Value u = o::dot_general(xw, g.param("layer_1_attn_qkv.kernel"), {{1}, {0}, {}, {}});
  auto window = [&](std::size_t ring, const Value& row) {
    Value all = o::concat({g.input(ring), o::reshape(row, {b, 1, row.dim(1)})}, 1);
    return o::take(all, g.input(*st.order_input), 1);
  };
  Value x = o::add(o::add(window(ring_xw, xw), g.param("input_proj.bias")),
                   o::constant(positional_table(dt, m.s, m.h)));
  Value qkv = o::add(window(ring_u, u), g.input(position_term));
  for (std::int64_t l = 1; l <= m.layers; ++l) {
    const std::string p = fmt::format("layer_{}", l);
    if (l > 1) qkv = g.dense(x, p + "_attn_qkv");
    auto [q, k, v] = split_qkv(qkv, m.h);
    Value a = merge_heads(o::attention(
        split_heads(q, m.nh, m.hd), split_heads(k, m.nh, m.hd), split_heads(v, m.nh, m.hd),
        {.mask = o::AttentionMask::sliding_window(m.w), .fill = kMaskFill}));
    x = g.layer_norm(o::add(x, a), p + "_norm1", 1e-5);
    x = feed_forward(g, x, p);
  }
  st.rings = {{ring_xw, 1}, {ring_u, 2}};
  return {o::reshape(o::slice_axis(x, 1, m.s - 1, m.s), {b, m.h}), xw, u};
}

// Streaming band: one row per stream through every layer, attending over a ring of the last
// window_size key/value rows of that layer.
std::vector<Value> band_graph(StepBuilder& g, Stream::Impl& st, const SlidingDims& m) {
  const DType dt = g.dtype();
  const std::int64_t b = st.batch, r = m.w;
  st.frames_input = g.add("frames", Tensor(dt, {b, m.e}));
  st.pe_input = g.add("position_encoding", Tensor(dt, {b, m.h}));
  st.mask_input = g.add("ring_mask", Tensor(DType::u8, {b, 1, 1, r + 1}));
  st.span = m.w;
  Value x = o::add(g.dense(g.input(st.frames_input), "input_proj"), g.input(*st.pe_input));
  std::vector<Value> outputs = {Value()};
  for (std::int64_t l = 1; l <= m.layers; ++l) {
    const std::string p = fmt::format("layer_{}", l);
    const std::size_t ring_k = g.add(p + "_ring_k", Tensor(dt, {b, r, m.h}));
    const std::size_t ring_v = g.add(p + "_ring_v", Tensor(dt, {b, r, m.h}));
    auto [q, k, v] = split_qkv(g.dense(x, p + "_attn_qkv"), m.h);
    Value a =
        attend_row(q, k, v, g.input(ring_k), g.input(ring_v), g.input(*st.mask_input), m.nh, m.hd);
    x = g.layer_norm(o::add(x, a), p + "_norm1", 1e-5);
    x = feed_forward(g, x, p);
    st.rings.push_back({ring_k, outputs.size()});
    outputs.push_back(k);
    st.rings.push_back({ring_v, outputs.size()});
    outputs.push_back(v);
  }
  outputs[0] = x;
  return outputs;
}

struct HybridDims {
  std::int64_t e, u, lstm_layers, nh, hd, s;
  std::vector<std::int64_t> mlp_sizes;
};

// Hybrid: the LSTMs step once from their carried h/c, the attention attends over a ring of the
// last seq_len projected LSTM outputs' keys and values.
std::vector<Value> hybrid_graph(StepBuilder& g, Stream::Impl& st, const HybridDims& m) {
  const DType dt = g.dtype();
  const std::int64_t b = st.batch, r = m.s, h = m.nh * m.hd;
  st.frames_input = g.add("frames", Tensor(dt, {b, m.e}));
  st.mask_input = g.add("ring_mask", Tensor(DType::u8, {b, 1, 1, r + 1}));
  st.span = m.s;
  std::vector<Value> outputs = {Value()};
  Value x = g.layer_norm(g.input(st.frames_input), "input_ln", 1e-6);
  for (std::int64_t k = 1; k <= m.lstm_layers; ++k) {
    const std::string p = fmt::format("lstm_{}", k);
    const std::size_t h_in = g.add(p + "_h", Tensor(dt, {b, m.u}));
    const std::size_t c_in = g.add(p + "_c", Tensor(dt, {b, m.u}));
    auto hc =
        o::lstm(o::reshape(x, {b, 1, x.dim(1)}), g.param(p + ".input_kernel"),
                g.param(p + ".hidden_kernel"), g.param(p + ".bias"), g.input(h_in), g.input(c_in));
    Value h_new = o::reshape(hc[0], {b, m.u}), c_new = o::reshape(hc[1], {b, m.u});
    st.carried.push_back({h_in, outputs.size()});
    outputs.push_back(h_new);
    st.carried.push_back({c_in, outputs.size()});
    outputs.push_back(c_new);
    x = g.layer_norm(h_new, p + "_ln", 1e-6);
  }
  Value proj = g.dense(x, "lstm_to_attn_proj");
  const std::size_t ring_k = g.add("hybrid_attn_ring_k", Tensor(dt, {b, r, h}));
  const std::size_t ring_v = g.add("hybrid_attn_ring_v", Tensor(dt, {b, r, h}));
  auto [q, k, v] = split_qkv(g.dense(proj, "hybrid_attn_qkv"), h);
  Value a =
      attend_row(q, k, v, g.input(ring_k), g.input(ring_v), g.input(*st.mask_input), m.nh, m.hd);
  a = g.dense(a, "hybrid_attn_output");
  x = g.layer_norm(o::add(proj, a), "attn_norm", 1e-5);
  for (std::size_t i = 0; i < m.mlp_sizes.size(); ++i)
    x = o::relu(g.dense(x, fmt::format("hybrid_mlp_{}", i)));
  st.rings.push_back({ring_k, outputs.size()});
  outputs.push_back(k);
  st.rings.push_back({ring_v, outputs.size()});
  outputs.push_back(v);
  outputs[0] = x;
  return outputs;
}

}  // namespace

// ---- Stream ----

namespace {

std::int64_t check_batch(const StreamOptions& options) {
  if (options.batch < 1) fail("Stream: batch must be >= 1, got {}", options.batch);
  return options.batch;
}

}  // namespace

Stream::Stream(const SlidingWindowOptions& model, const nn::Params& params, StreamOptions options)
    : impl_(std::make_unique<Impl>()) {
  const Built built = build_sliding_window(model);
  const SlidingDims m{*model.embed_dim, model.num_heads * model.head_dim, model.num_heads,
                      model.head_dim,   built.input.shape()[1],           model.window_size,
                      model.num_layers};
  Impl& st = *impl_;
  st.batch = check_batch(options);
  st.embed = m.e;
  st.dtype = model.dtype;
  st.mode = options.mode;
  if (st.mode == StreamMode::automatic)
    st.mode = m.s > m.w ? StreamMode::streaming_band : StreamMode::exact_window;
  StepBuilder g(nn::Model(built.output), params, model.dtype);
  std::vector<Value> outputs;
  if (st.mode == StreamMode::exact_window) {
    st.ring_len = m.s;
    outputs = exact_window_graph(g, st, m);
  } else {
    st.ring_len = m.w;
    st.pe_table = positional_table(model.dtype, m.s, m.h);
    outputs = band_graph(g, st, m);
  }
  st.finish(g, std::move(outputs), options.jit);
}

namespace {

void init_hybrid(Stream::Impl& st, const Built& built, const HybridOptions& model,
                 std::vector<std::int64_t> mlp_sizes, const nn::Params& params,
                 const StreamOptions& options) {
  const HybridDims m{*model.embed_dim, model.lstm_hidden,      model.lstm_layers,   model.num_heads,
                     model.head_dim,   built.input.shape()[1], std::move(mlp_sizes)};
  st.batch = check_batch(options);
  st.embed = m.e;
  st.dtype = model.dtype;
  st.mode = StreamMode::streaming_band;
  st.ring_len = m.s;
  StepBuilder g(nn::Model(built.output), params, model.dtype);
  std::vector<Value> outputs = hybrid_graph(g, st, m);
  st.finish(g, std::move(outputs), options.jit);
}

}  // namespace

Stream::Stream(const HybridOptions& model, const nn::Params& params, StreamOptions options)
    : impl_(std::make_unique<Impl>()) {
  init_hybrid(*impl_, build_hybrid(model), model, {}, params, options);
}

Stream::Stream(const HybridMlpOptions& model, const nn::Params& params, StreamOptions options)
    : impl_(std::make_unique<Impl>()) {
  const HybridOptions hybrid{.embed_dim = model.embed_dim,
                             .lstm_hidden = model.lstm_hidden,
                             .lstm_layers = model.lstm_layers,
                             .num_heads = model.num_heads,
                             .head_dim = model.head_dim,
                             .dropout = model.dropout,
                             .window_size = model.window_size,
                             .seq_len = model.seq_len,
                             .dtype = model.dtype};
  init_hybrid(*impl_, build_hybrid_mlp(model), hybrid, model.mlp_sizes, params, options);
}

Stream::~Stream() = default;
Stream::Stream(Stream&&) noexcept = default;
Stream& Stream::operator=(Stream&&) noexcept = default;

Tensor Stream::step(const Tensor& frames) {
  Impl& st = *impl_;
  const Shape want{st.batch, st.embed};
  if (frames.dtype() != st.dtype || frames.shape() != want)
    fail("Stream::step: frames must be {}{} (one frame per stream), got {}{}", dtype_name(st.dtype),
         shape_to_string(want), dtype_name(frames.dtype()), shape_to_string(frames.shape()));
  st.inputs[st.frames_input] = frames;
  st.prepare_step();
  std::vector<Tensor> outputs = st.exe->run(st.inputs);
  st.inputs[st.frames_input] = Tensor();  // not kept alive past the call
  st.write_rows(outputs);
  ++st.steps;
  return outputs[0];
}

void Stream::reset(std::int64_t stream) {
  impl_->check_stream(stream, "reset");
  impl_->clear_stream(stream);
}

void Stream::reset_all() {
  for (std::int64_t b = 0; b < impl_->batch; ++b) impl_->clear_stream(b);
}

std::int64_t Stream::batch() const {
  return impl_->batch;
}

std::int64_t Stream::frames_seen(std::int64_t stream) const {
  impl_->check_stream(stream, "frames_seen");
  return impl_->steps - impl_->start[static_cast<std::size_t>(stream)];
}

StreamMode Stream::mode() const {
  return impl_->mode;
}

const jit::Executable& Stream::executable() const {
  return *impl_->exe;
}

const Graph& Stream::step_graph() const {
  return impl_->graph;
}

}  // namespace edifice::models::multi_head
