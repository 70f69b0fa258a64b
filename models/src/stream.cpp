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

// One query row per stream over its ring of earlier keys/values and its own new key/value:
// q, k, v [B, H]; rings [B, nh, R, hd] (head-major, so the attention reads them in place);
// mask u8 [B, 1, 1, R] (1 = the slot is inside the stream's window). The ring is attended
// alone (giving its row log-sum-exp) and the new key merged in by the softmax identity
//   out = (e^(lse - m) out_ring + e^(s - m) v) / (e^(lse - m) + e^(s - m)),  m = max(lse, s)
// so nothing copies the ring to append a row. A ring with no visible slot (a stream's first
// frame) has lse near -1e9 (the masked fill) and drops out: out = v, as in the model.
Value attend_row(const Value& q, const Value& k, const Value& v, const Value& ring_k,
                 const Value& ring_v, const Value& mask, std::int64_t nh, std::int64_t hd) {
  const std::int64_t b = q.dim(0), h = q.dim(1), r = ring_k.dim(2);
  auto heads = [&](const Value& x) { return o::reshape(x, {b, nh, 1, hd}); };
  const Value qh = heads(q), kh = heads(k), vh = heads(v);
  const Value full_mask = o::broadcast_to(mask, {b, nh, 1, r});
  auto ring = o::attention_full(
      qh, ring_k, ring_v, {.mask = o::AttentionMask::from_tensor(full_mask), .fill = kMaskFill});
  const Value lse = o::reshape(ring[1], {b, nh, 1, 1});
  const Value score = o::mul(o::reduce_sum(o::mul(qh, kh), {3}, true),
                             o::scalar(1.0 / std::sqrt(static_cast<double>(hd)), q.dtype()));
  const Value m = o::max(lse, score);
  const Value e_ring = o::exp(o::sub(lse, m)), e_new = o::exp(o::sub(score, m));
  const Value out =
      o::div(o::add(o::mul(ring[0], e_ring), o::mul(vh, e_new)), o::add(e_ring, e_new));
  return o::reshape(out, {b, h});
}

// Post-LN feed-forward half of a sliding-window layer (x is already norm1's output).
Value feed_forward(StepBuilder& g, const Value& x, const std::string& p) {
  Value f = g.dense(o::gelu(g.dense(x, p + "_ffn1")), p + "_ffn2");
  return g.layer_norm(o::add(x, f), p + "_norm2", 1e-5);
}

}  // namespace

// ---- the state and the per-step bookkeeping ----

// One compiled graph and the tensors it runs on (graph order; state is updated in place).
struct Program {
  Graph graph;
  std::shared_ptr<const jit::Executable> exe;
  std::vector<Tensor> inputs;

  void compile(StepBuilder& g, std::vector<Value> outputs, const jit::Options& options) {
    graph = Graph(g.inputs(), std::move(outputs));
    inputs = std::move(g.tensors());
    std::vector<Shape> shapes;
    for (const Tensor& t : inputs) shapes.push_back(t.shape());
    exe = jit::compile(graph, shapes, options);
  }
};

struct Stream::Impl {
  StreamMode mode = StreamMode::exact_window;
  std::int64_t batch = 1, embed = 0, ring_len = 0;
  DType dtype = DType::f32;
  // The step graph; in exact-window mode the frame's own rows come from `frame_rows` first
  // (they must be in the ring before the window is read in time order).
  Program main;
  std::optional<Program> frame_rows;
  std::size_t frames_input = 0;  // of frame_rows if present, else of main
  // A row appended to a ring of main each step: the ring's input index and the output of
  // frame_rows (if present, else of main) that gives the row.
  struct RingLink {
    std::size_t input, output;
  };
  std::vector<RingLink> rings;
  // Exact window: each new row [B, W] is stored twice, at rows n mod S and n mod S + S of a
  // [2S, P] buffer (P = B * W rounded up to whole 64-byte lines), so the last S rows in time
  // order are always the contiguous rows [(n + 1) mod S, +S): main reads them through a view,
  // with no gather. `link.input` is main's input index, `link.output` frame_rows' output.
  struct TimeRing {
    RingLink link;
    std::int64_t width;
    Tensor storage;
  };
  std::vector<TimeRing> time_rings;
  // State replaced each step (LSTM h, c): main's input index and output index.
  std::vector<RingLink> carried;
  // band / hybrid: u8 [B, 1, 1, R], which ring slots each stream sees, and the window span.
  std::optional<std::size_t> mask_input;
  std::int64_t span = 0;
  // band: f64 [B, 1], each stream's current position (the step computes its encoding).
  std::optional<std::size_t> position_input;
  std::int64_t steps = 0;
  std::vector<std::int64_t> start;  // the step at which each stream began

  Program& frame_program() { return frame_rows ? *frame_rows : main; }
  void check_stream(std::int64_t b, const char* fn) const;
  void prepare_step();
  void write_rows(const std::vector<Tensor>& outputs);
  void clear_stream(std::int64_t b);
  Tensor step(const Tensor& frames);
};

void Stream::Impl::check_stream(std::int64_t b, const char* fn) const {
  if (b < 0 || b >= batch)
    fail("Stream::{}: stream index {} is out of range [0, {})", fn, b, batch);
}

// Fills the per-step inputs (window order, slot mask, positions) for step `steps`.
void Stream::Impl::prepare_step() {
  const std::int64_t n = steps, r = ring_len;
  // With this frame at rows n mod S and n mod S + S, rows (n + 1) mod S + i hold frame
  // n - S + 1 + i for i in [0, S).
  for (TimeRing& ring : time_rings)
    main.inputs[ring.link.input] = ring.storage.slice_rows((n + 1) % r, r);
  if (mask_input) {
    auto* mask = main.inputs[*mask_input].data<std::uint8_t>();
    for (std::int64_t b = 0; b < batch; ++b)
      for (std::int64_t s = 0; s < r; ++s) {
        // Slot s holds frame n - d (d in [1, R]); it is visible when it is one of the span - 1
        // frames before this one and the stream had begun by then.
        const std::int64_t d = ((n - s) % r + r - 1) % r + 1;
        mask[b * r + s] = d <= span - 1 && n - d >= start[static_cast<std::size_t>(b)];
      }
  }
  if (position_input) {
    auto* position = main.inputs[*position_input].data<double>();
    for (std::int64_t b = 0; b < batch; ++b)
      position[b] = static_cast<double>(n - start[static_cast<std::size_t>(b)]);
  }
}

// Copies each new row [B, G * D] into slot `steps mod R` of its ring ([B, R, D] or, head-major,
// [B, G, R, D]).
void Stream::Impl::write_rows(const std::vector<Tensor>& outputs) {
  const std::int64_t slot = steps % ring_len;
  const std::size_t esize = dtype_size(dtype);
  for (TimeRing& ring : time_rings) {
    const Tensor& row = outputs[ring.link.output];
    const std::size_t bytes = static_cast<std::size_t>(batch * ring.width) * esize;
    for (std::int64_t copy : {slot, slot + ring_len})
      std::memcpy(ring.storage.slice_rows(copy, 1).raw_data(), row.raw_data(), bytes);
  }
  for (const RingLink& link : rings) {
    Tensor& ring = main.inputs[link.input];
    const Tensor& row = outputs[link.output];
    const std::int64_t groups = ring.rank() == 4 ? ring.dim(1) : 1, d = ring.dim(-1);
    const std::size_t bytes = static_cast<std::size_t>(d) * esize;
    auto* dst = static_cast<std::byte*>(ring.raw_data());
    const auto* src = static_cast<const std::byte*>(row.raw_data());
    for (std::int64_t b = 0; b < batch; ++b)
      for (std::int64_t g = 0; g < groups; ++g)
        std::memcpy(
            dst + static_cast<std::size_t>(((b * groups + g) * ring_len + slot) * d) * esize,
            src + static_cast<std::size_t>((b * groups + g) * d) * esize, bytes);
  }
}

Tensor Stream::Impl::step(const Tensor& frames) {
  const Shape want{batch, embed};
  if (frames.dtype() != dtype || frames.shape() != want)
    fail("Stream::step: frames must be {}{} (one frame per stream), got {}{}", dtype_name(dtype),
         shape_to_string(want), dtype_name(frames.dtype()), shape_to_string(frames.shape()));
  Program& fp = frame_program();
  fp.inputs[frames_input] = frames;
  struct Release {  // the caller's frames are not kept alive past the call
    Tensor& slot;
    ~Release() { slot = Tensor(); }
  } release{fp.inputs[frames_input]};
  prepare_step();
  if (frame_rows) write_rows(frame_rows->exe->run(frame_rows->inputs));
  std::vector<Tensor> outputs = main.exe->run(main.inputs);
  if (!frame_rows) write_rows(outputs);
  for (const RingLink& link : carried) main.inputs[link.input] = outputs[link.output];
  ++steps;
  return outputs[0];
}

// Zeroes stream b's rings and carried state: a zero frame's x W_in and x W_in W_qkv are exactly
// zero (the exact window's padding); band and hybrid rings are masked by `start` anyway.
void Stream::Impl::clear_stream(std::int64_t b) {
  auto zero_rows = [&](Tensor& t) {
    const std::size_t bytes = t.nbytes() / static_cast<std::size_t>(batch);
    std::memset(static_cast<std::byte*>(t.raw_data()) + static_cast<std::size_t>(b) * bytes, 0,
                bytes);
  };
  for (const RingLink& link : rings) zero_rows(main.inputs[link.input]);
  for (const RingLink& link : carried) zero_rows(main.inputs[link.input]);
  for (TimeRing& ring : time_rings) {
    const std::size_t bytes = static_cast<std::size_t>(ring.width) * dtype_size(dtype);
    for (std::int64_t row = 0; row < 2 * ring_len; ++row)
      std::memset(static_cast<std::byte*>(ring.storage.slice_rows(row, 1).raw_data()) +
                      static_cast<std::size_t>(b) * bytes,
                  0, bytes);
  }
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

// Exact window, in two graphs. `frame`: the new frame's x W_in ([B, H]) and x W_in W_qkv
// ([B, 3H]), which the Stream writes into its rings. `window`: the first layer's rows from those
// rings in time order plus the per-position terms; every later layer runs on the whole window,
// and the JIT's row pruning leaves the last layer one row.
void exact_window_graphs(const nn::Model& model, const nn::Params& params, Stream::Impl& st,
                         const SlidingDims& m, const jit::Options& options) {
  const DType dt = st.dtype;
  const std::int64_t b = st.batch;
  StepBuilder f(model, params, dt);
  st.frames_input = f.add("frames", Tensor(dt, {b, m.e}));
  const Value xw =
      o::dot_general(f.input(st.frames_input), f.param("input_proj.kernel"), {{1}, {0}, {}, {}});
  const Value u = o::dot_general(xw, f.param("layer_1_attn_qkv.kernel"), {{1}, {0}, {}, {}});
  st.frame_rows.emplace();
  st.frame_rows->compile(f, {xw, u}, options);

  StepBuilder g(model, params, dt);
  // A time-ordered ring of rows [B, width]: the graph reads its window [S, P] as [B, S, width].
  auto window = [&](const char* name, std::int64_t width, std::size_t frame_output) {
    const std::int64_t lane = static_cast<std::int64_t>(Tensor::kAlignment / dtype_size(dt));
    const std::int64_t pitch = (b * width + lane - 1) / lane * lane;
    Tensor storage(dt, {2 * m.s, pitch});
    const std::size_t input = g.add(name, storage.slice_rows(0, m.s));
    st.time_rings.push_back({{input, frame_output}, width, std::move(storage)});
    const Value rows = o::slice_axis(g.input(input), 1, 0, b * width);
    return o::transpose(o::reshape(rows, {m.s, b, width}), {1, 0, 2});
  };
  const Value window_xw = window("ring_input_proj", m.h, 0);
  const Value window_u = window("ring_layer_1_qkv", 3 * m.h, 1);
  const std::size_t position_term =
      g.add("layer_1_qkv_position_term", qkv_position_term(g, m.s, m.h));
  Value x = o::add(o::add(window_xw, g.param("input_proj.bias")),
                   o::constant(positional_table(dt, m.s, m.h)));
  // Added per q/k/v slice rather than before the split, so that each sum is computed where its
  // head-split copy reads it instead of materialising [B, S, 3H] first.
  const auto parts = split_qkv(window_u, m.h), terms = split_qkv(g.input(position_term), m.h);
  std::array<Value, 3> first_qkv;
  for (std::size_t i = 0; i < 3; ++i) first_qkv[i] = o::add(parts[i], terms[i]);
  for (std::int64_t l = 1; l <= m.layers; ++l) {
    const std::string p = fmt::format("layer_{}", l);
    auto [q, k, v] = l == 1 ? first_qkv : split_qkv(g.dense(x, p + "_attn_qkv"), m.h);
    Value a = merge_heads(o::attention(
        split_heads(q, m.nh, m.hd), split_heads(k, m.nh, m.hd), split_heads(v, m.nh, m.hd),
        {.mask = o::AttentionMask::sliding_window(m.w), .fill = kMaskFill}));
    x = g.layer_norm(o::add(x, a), p + "_norm1", 1e-5);
    x = feed_forward(g, x, p);
  }
  st.main.compile(g, {o::reshape(o::slice_axis(x, 1, m.s - 1, m.s), {b, m.h})}, options);
}

// The fused QKV dense `qkv_layer` of the rows x [B, H], then each row attending over its
// stream's ring of earlier keys/values (inputs "{ring}_ring_k" and "{ring}_ring_v",
// [B, nh, R, hd]) and its own; the new k and v rows are appended to `outputs` for the rings.
Value ring_attention(StepBuilder& g, Stream::Impl& st, const Value& x, const std::string& qkv_layer,
                     const std::string& ring, std::int64_t nh, std::int64_t hd,
                     std::vector<Value>& outputs) {
  const Shape shape{st.batch, nh, st.ring_len, hd};
  const std::size_t ring_k = g.add(ring + "_ring_k", Tensor(g.dtype(), shape));
  const std::size_t ring_v = g.add(ring + "_ring_v", Tensor(g.dtype(), shape));
  auto [q, k, v] = split_qkv(g.dense(x, qkv_layer), nh * hd);
  st.rings.push_back({ring_k, outputs.size()});
  outputs.push_back(k);
  st.rings.push_back({ring_v, outputs.size()});
  outputs.push_back(v);
  return attend_row(q, k, v, g.input(ring_k), g.input(ring_v), g.input(*st.mask_input), nh, hd);
}

// Streaming band: one row per stream through every layer, attending over a ring of the last
// window_size key/value rows of that layer.
std::vector<Value> band_graph(StepBuilder& g, Stream::Impl& st, const SlidingDims& m) {
  const DType dt = g.dtype();
  const std::int64_t b = st.batch, r = m.w;
  st.frames_input = g.add("frames", Tensor(dt, {b, m.e}));
  st.position_input = g.add("position", Tensor(DType::f64, {b, 1}));
  st.mask_input = g.add("ring_mask", Tensor(DType::u8, {b, 1, 1, r}));
  st.span = m.w;
  // PE[p, d] = sin(p / (1 + 0.01 d)) in f64, rounded to the model's dtype, as the builder's
  // table (which holds only the built seq_len positions; a stream goes on past them).
  Tensor divisor(DType::f64, {1, m.h});
  for (std::int64_t d = 0; d < m.h; ++d)
    divisor.set_from_double(d, 1.0 + 0.01 * static_cast<double>(d));
  Value pe = o::cast(o::sin(o::div(o::broadcast_to(g.input(*st.position_input), {b, m.h}),
                                   o::broadcast_to(o::constant(divisor), {b, m.h}))),
                     dt);
  Value x = o::add(g.dense(g.input(st.frames_input), "input_proj"), pe);
  std::vector<Value> outputs = {Value()};
  for (std::int64_t l = 1; l <= m.layers; ++l) {
    const std::string p = fmt::format("layer_{}", l);
    Value a = ring_attention(g, st, x, p + "_attn_qkv", p, m.nh, m.hd, outputs);
    x = g.layer_norm(o::add(x, a), p + "_norm1", 1e-5);
    x = feed_forward(g, x, p);
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
  const std::int64_t b = st.batch, r = m.s;
  st.frames_input = g.add("frames", Tensor(dt, {b, m.e}));
  st.mask_input = g.add("ring_mask", Tensor(DType::u8, {b, 1, 1, r}));
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
  Value a = ring_attention(g, st, proj, "hybrid_attn_qkv", "hybrid_attn", m.nh, m.hd, outputs);
  a = g.dense(a, "hybrid_attn_output");
  x = g.layer_norm(o::add(proj, a), "attn_norm", 1e-5);
  for (std::size_t i = 0; i < m.mlp_sizes.size(); ++i)
    x = o::relu(g.dense(x, fmt::format("hybrid_mlp_{}", i)));
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
  st.start.assign(static_cast<std::size_t>(st.batch), 0);
  const nn::Model whole(built.output);
  if (st.mode == StreamMode::exact_window) {
    st.ring_len = m.s;
    exact_window_graphs(whole, params, st, m, options.jit);
  } else {
    st.ring_len = m.w;
    StepBuilder g(whole, params, model.dtype);
    std::vector<Value> outputs = band_graph(g, st, m);
    st.main.compile(g, std::move(outputs), options.jit);
  }
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
  if (options.mode == StreamMode::exact_window)
    fail(
        "Stream: a hybrid model streams one way (LSTM state carried, attention over a ring of "
        "the last seq_len outputs); mode exact_window is not available for it");
  st.mode = StreamMode::streaming_band;
  st.ring_len = m.s;
  st.start.assign(static_cast<std::size_t>(st.batch), 0);
  StepBuilder g(nn::Model(built.output), params, model.dtype);
  std::vector<Value> outputs = hybrid_graph(g, st, m);
  st.main.compile(g, std::move(outputs), options.jit);
}

}  // namespace

Stream::Stream(const HybridOptions& model, const nn::Params& params, StreamOptions options)
    : impl_(std::make_unique<Impl>()) {
  init_hybrid(*impl_, build_hybrid(model), model, {}, params, options);
}

Stream::Stream(const HybridMlpOptions& model, const nn::Params& params, StreamOptions options)
    : impl_(std::make_unique<Impl>()) {
  init_hybrid(*impl_, build_hybrid_mlp(model), model.hybrid(), model.mlp_sizes, params, options);
}

Stream::~Stream() = default;
Stream::Stream(Stream&&) noexcept = default;
Stream& Stream::operator=(Stream&&) noexcept = default;

Tensor Stream::step(const Tensor& frames) {
  return impl_->step(frames);
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
  return *impl_->main.exe;
}

const jit::Executable* Stream::frame_executable() const {
  return impl_->frame_rows ? impl_->frame_rows->exe.get() : nullptr;
}

const Graph& Stream::step_graph() const {
  return impl_->main.graph;
}

}  // namespace edifice::models::multi_head
