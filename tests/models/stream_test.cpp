// models::multi_head::Stream against the models run whole (the reference interpreter on the
// traced model): exact window, streaming band and hybrid, in f32 and f64; each equivalence also
// checks that a one-element change of a weight is detected. Then reset, streams at different
// positions, concurrent Streams and bad input.
#include <edifice/core/interpreter.hpp>
#include <edifice/models/stream.hpp>
#include <edifice/nn/init.hpp>

#include <catch2/catch.hpp>

#include "test_util.hpp"

#include <cmath>
#include <functional>
#include <thread>

using namespace edifice;
namespace mh = edifice::models::multi_head;
using edifice::test::first_line_of_error;

namespace {

// Every parameter drawn at random (biases, gammas and betas too, so a misplaced bias shows).
nn::Params random_params(const nn::Model& model, std::uint64_t seed) {
  nn::Params p;
  std::uint64_t stream = 0;
  for (const auto& info : model.parameters())
    p[info.name] = nn::initialize(nn::Initializer::uniform(0.5), info.type.shape, info.type.dtype,
                                  seed, ++stream);
  return p;
}

// frames [T, E]: frame t of one stream.
Tensor random_frames(std::int64_t t, std::int64_t e, DType dtype, std::uint64_t seed) {
  return nn::initialize(nn::Initializer::uniform(1.0), {t, e}, dtype, seed, 99);
}

// Frame t as a batch of one, [1, E].
Tensor frame_at(const Tensor& frames, std::int64_t t) {
  const std::int64_t e = frames.dim(1);
  Tensor f(frames.dtype(), {1, e});
  for (std::int64_t i = 0; i < e; ++i) f.set_from_double(i, frames.get_as_double(t * e + i));
  return f;
}

// frames[first .. last] as one sequence [1, S, E], zero rows where first < 0.
Tensor sequence(const Tensor& frames, std::int64_t first, std::int64_t last) {
  const std::int64_t e = frames.dim(1), s = last - first + 1;
  Tensor seq(frames.dtype(), {1, s, e});
  for (std::int64_t t = std::max<std::int64_t>(first, 0); t <= last; ++t)
    for (std::int64_t i = 0; i < e; ++i)
      seq.set_from_double((t - first) * e + i, frames.get_as_double(t * e + i));
  return seq;
}

// The model run whole by the reference interpreter.
Tensor reference(const nn::Layer& output, const nn::Params& params, const Tensor& input) {
  nn::TracedModel t = nn::Model(output).trace(nn::Mode::inference);
  std::vector<Tensor> args;
  for (const auto& n : t.param_names) args.push_back(params.at(n));
  args.push_back(input);
  return interpret(t.graph, args)[0];
}

// max |a - b| / max(1, max |b|).
double relative_error(const Tensor& a, const Tensor& b) {
  REQUIRE(a.shape() == b.shape());
  double diff = 0, scale = 1;
  for (std::int64_t i = 0; i < a.numel(); ++i) {
    diff = std::max(diff, std::abs(a.get_as_double(i) - b.get_as_double(i)));
    scale = std::max(scale, std::abs(b.get_as_double(i)));
  }
  return diff / scale;
}

double tolerance(DType dtype) {
  return dtype == DType::f32 ? 1e-5 : 1e-12;
}

// One element of a parameter moved by 0.05 (a copy; the original is untouched).
nn::Params perturbed(nn::Params params, const std::string& name, std::int64_t element) {
  Tensor t = params.at(name).clone();
  t.set_from_double(element, t.get_as_double(element) + 0.05);
  params[name] = t;
  return params;
}

// Steps a single stream through `frames`; at every t compares with the reference on the
// sequence `window(t)` (built by `model_at(t)`), both with `params` and with `changed` (which
// must differ somewhere by more than the tolerance).
template <class ModelAt, class Window>
void check_equivalence(mh::Stream& stream, const Tensor& frames, const nn::Params& params,
                       const nn::Params& changed, ModelAt model_at, Window window) {
  const DType dtype = frames.dtype();
  double worst = 0, changed_worst = 0;
  for (std::int64_t t = 0; t < frames.dim(0); ++t) {
    Tensor got = stream.step(frame_at(frames, t));
    const nn::Layer out = model_at(t);
    const Tensor seq = window(t);
    worst = std::max(worst, relative_error(got, reference(out, params, seq)));
    changed_worst = std::max(changed_worst, relative_error(got, reference(out, changed, seq)));
  }
  INFO("worst relative error " << worst << ", with one weight element changed " << changed_worst);
  CHECK(worst <= tolerance(dtype));
  CHECK(changed_worst > 10 * tolerance(dtype));
}

mh::SlidingWindowOptions small_sliding(DType dtype, std::int64_t seq_len, std::int64_t window) {
  return {.embed_dim = 8,
          .window_size = window,
          .num_heads = 2,
          .head_dim = 4,
          .num_layers = 2,
          .ffn_dim = 12,
          .dropout = 0,
          .seq_len = seq_len,
          .dtype = dtype};
}

mh::HybridOptions small_hybrid(DType dtype, std::int64_t seq_len) {
  return {.embed_dim = 6,
          .lstm_hidden = 5,
          .lstm_layers = 2,
          .num_heads = 2,
          .head_dim = 3,
          .dropout = 0,
          .seq_len = seq_len,
          .dtype = dtype};
}

}  // namespace

TEST_CASE("exact window: step equals predict on the last window, zero-padded at first",
          "[stream]") {
  for (DType dtype : {DType::f32, DType::f64}) {
    DYNAMIC_SECTION(dtype_name(dtype)) {
      const auto opts = small_sliding(dtype, 5, 5);
      const nn::Layer out = mh::build_sliding_window(opts).output;
      const nn::Params params = random_params(nn::Model(out), 3);
      mh::Stream stream(opts, params);
      CHECK(stream.mode() == mh::StreamMode::exact_window);
      // The cached first-layer projection is the riskiest part: change one of its weights.
      const nn::Params changed = perturbed(params, "layer_1_attn_qkv.kernel", 17);
      const Tensor frames = random_frames(16, 8, dtype, 5);
      check_equivalence(
          stream, frames, params, changed, [&](std::int64_t) { return out; },
          [&](std::int64_t t) { return sequence(frames, t - 4, t); });
    }
  }
}

TEST_CASE("exact window with seq_len > window_size (forced)", "[stream]") {
  const auto opts = small_sliding(DType::f64, 7, 3);
  const nn::Layer out = mh::build_sliding_window(opts).output;
  const nn::Params params = random_params(nn::Model(out), 4);
  mh::Stream stream(opts, params, {.mode = mh::StreamMode::exact_window});
  const Tensor frames = random_frames(12, 8, DType::f64, 6);
  check_equivalence(
      stream, frames, params, perturbed(params, "input_proj.kernel", 3),
      [&](std::int64_t) { return out; },
      [&](std::int64_t t) { return sequence(frames, t - 6, t); });
}

TEST_CASE("streaming band: step at t equals predict on frames [0, t] with the band mask",
          "[stream]") {
  for (DType dtype : {DType::f32, DType::f64}) {
    DYNAMIC_SECTION(dtype_name(dtype)) {
      const std::int64_t window = 4, seq_len = 3 * window;
      const auto opts = small_sliding(dtype, seq_len, window);
      const nn::Params params = random_params(nn::Model(mh::build_sliding_window(opts).output), 7);
      mh::Stream stream(opts, params);
      CHECK(stream.mode() == mh::StreamMode::streaming_band);
      // Past the built seq_len too: the encoding continues (compared with longer models).
      const Tensor frames = random_frames(seq_len + 4, 8, dtype, 8);
      check_equivalence(
          stream, frames, params, perturbed(params, "layer_1_attn_qkv.kernel", 40),
          [&](std::int64_t t) {
            return mh::build_sliding_window(small_sliding(dtype, t + 1, window)).output;
          },
          [&](std::int64_t t) { return sequence(frames, 0, t); });
    }
  }
}

TEST_CASE("hybrid: LSTM state carried, attention over the ring equals predict on [0, t]",
          "[stream]") {
  for (DType dtype : {DType::f32, DType::f64}) {
    DYNAMIC_SECTION(dtype_name(dtype)) {
      const std::int64_t seq_len = 6;
      const auto opts = small_hybrid(dtype, seq_len);
      const nn::Params params = random_params(nn::Model(mh::build_hybrid(opts).output), 9);
      mh::Stream stream(opts, params);
      const Tensor frames = random_frames(seq_len, 6, dtype, 10);
      check_equivalence(
          stream, frames, params, perturbed(params, "lstm_2.hidden_kernel", 11),
          [&](std::int64_t t) { return mh::build_hybrid(small_hybrid(dtype, t + 1)).output; },
          [&](std::int64_t t) { return sequence(frames, 0, t); });
    }
  }
}

TEST_CASE("hybrid MLP head", "[stream]") {
  auto opts = [](std::int64_t s) {
    return mh::HybridMlpOptions{.embed_dim = 6,
                                .lstm_hidden = 5,
                                .num_heads = 2,
                                .head_dim = 3,
                                .dropout = 0,
                                .seq_len = s,
                                .mlp_sizes = {7, 4},
                                .dtype = DType::f64};
  };
  const nn::Params params = random_params(nn::Model(mh::build_hybrid_mlp(opts(4)).output), 12);
  mh::Stream stream(opts(4), params);
  const Tensor frames = random_frames(4, 6, DType::f64, 13);
  check_equivalence(
      stream, frames, params, perturbed(params, "hybrid_attn_qkv.kernel", 2),
      [&](std::int64_t t) { return mh::build_hybrid_mlp(opts(t + 1)).output; },
      [&](std::int64_t t) { return sequence(frames, 0, t); });
}

namespace {

// frames [T, B, E] for B streams -> step t's [B, E].
Tensor batch_frame(const Tensor& frames, std::int64_t t) {
  const std::int64_t b = frames.dim(1), e = frames.dim(2);
  Tensor f(frames.dtype(), {b, e});
  for (std::int64_t i = 0; i < b * e; ++i)
    f.set_from_double(i, frames.get_as_double(t * b * e + i));
  return f;
}

// Row b of [B, H] as [1, H].
Tensor row_of(const Tensor& x, std::int64_t b) {
  const std::int64_t h = x.dim(1);
  Tensor r(x.dtype(), {1, h});
  for (std::int64_t i = 0; i < h; ++i) r.set_from_double(i, x.get_as_double(b * h + i));
  return r;
}

// A stream of each kind over the same small models (f32).
struct Kind {
  std::string name;
  std::function<mh::Stream(std::int64_t batch)> make;
  std::int64_t embed;
};

std::vector<Kind> stream_kinds() {
  const auto exact = small_sliding(DType::f32, 5, 5), band = small_sliding(DType::f32, 12, 4);
  const auto hybrid = small_hybrid(DType::f32, 6);
  const auto pe = random_params(nn::Model(mh::build_sliding_window(exact).output), 21);
  const auto pb = random_params(nn::Model(mh::build_sliding_window(band).output), 22);
  const auto ph = random_params(nn::Model(mh::build_hybrid(hybrid).output), 23);
  return {{"exact window", [=](std::int64_t b) { return mh::Stream(exact, pe, {.batch = b}); }, 8},
          {"streaming band", [=](std::int64_t b) { return mh::Stream(band, pb, {.batch = b}); }, 8},
          {"hybrid", [=](std::int64_t b) { return mh::Stream(hybrid, ph, {.batch = b}); }, 6}};
}

}  // namespace

TEST_CASE("reset starts a stream afresh", "[stream]") {
  for (const Kind& kind : stream_kinds()) {
    DYNAMIC_SECTION(kind.name) {
      mh::Stream used = kind.make(1), fresh = kind.make(1);
      const Tensor noise = random_frames(9, kind.embed, DType::f32, 30);
      for (std::int64_t t = 0; t < 9; ++t) used.step(frame_at(noise, t));
      used.reset(0);
      CHECK(used.frames_seen(0) == 0);
      const Tensor frames = random_frames(15, kind.embed, DType::f32, 31);
      // Not bitwise: the used stream's frames sit in other ring slots (another summation order).
      double worst = 0;
      for (std::int64_t t = 0; t < 15; ++t)
        worst = std::max(
            worst, relative_error(used.step(frame_at(frames, t)), fresh.step(frame_at(frames, t))));
      CHECK(worst <= 1e-6);
      CHECK(used.frames_seen(0) == 15);
    }
  }
}

TEST_CASE("B streams, each at a different position, answer as separate streams", "[stream]") {
  for (const Kind& kind : stream_kinds()) {
    DYNAMIC_SECTION(kind.name) {
      const std::int64_t b = 3, steps = 14;
      mh::Stream batched = kind.make(b);
      std::vector<mh::Stream> singles;
      for (std::int64_t i = 0; i < b; ++i) singles.push_back(kind.make(1));
      const Tensor frames =
          nn::initialize(nn::Initializer::uniform(1.0), {steps, b, kind.embed}, DType::f32, 32, 1);
      double worst = 0;
      for (std::int64_t t = 0; t < steps; ++t) {
        // Stream 1 restarts at step 3, stream 2 at steps 5 and 11.
        if (t == 3 || t == 5 || t == 11) {
          const std::int64_t s = t == 3 ? 1 : 2;
          batched.reset(s);
          singles[static_cast<std::size_t>(s)].reset(0);
        }
        const Tensor f = batch_frame(frames, t);
        const Tensor got = batched.step(f);
        for (std::int64_t i = 0; i < b; ++i)
          worst = std::max(worst,
                           relative_error(row_of(got, i),
                                          singles[static_cast<std::size_t>(i)].step(row_of(f, i))));
      }
      CHECK(worst <= 1e-6);
      CHECK(batched.frames_seen(0) == steps);
      CHECK(batched.frames_seen(1) == steps - 3);
      CHECK(batched.frames_seen(2) == steps - 11);
    }
  }
}

TEST_CASE("Streams stepped on several threads at once", "[stream]") {
  for (const Kind& kind : stream_kinds()) {
    DYNAMIC_SECTION(kind.name) {
      const int threads = 4;
      const std::int64_t steps = 40;
      std::vector<Tensor> inputs, expected, got(threads);
      for (int i = 0; i < threads; ++i) {
        inputs.push_back(random_frames(steps, kind.embed, DType::f32, 40 + i));
        mh::Stream s = kind.make(1);
        Tensor last;
        for (std::int64_t t = 0; t < steps; ++t) last = s.step(frame_at(inputs.back(), t));
        expected.push_back(last);
      }
      std::vector<mh::Stream> streams;
      for (int i = 0; i < threads; ++i) streams.push_back(kind.make(1));
      std::vector<std::thread> pool;
      for (int i = 0; i < threads; ++i)
        pool.emplace_back([&, i] {
          for (std::int64_t t = 0; t < steps; ++t)
            got[static_cast<std::size_t>(i)] = streams[static_cast<std::size_t>(i)].step(
                frame_at(inputs[static_cast<std::size_t>(i)], t));
        });
      for (auto& t : pool) t.join();
      for (int i = 0; i < threads; ++i)
        CHECK(
            got[static_cast<std::size_t>(i)].bitwise_equal(expected[static_cast<std::size_t>(i)]));
    }
  }
}

TEST_CASE("bad input is a clear error and leaves the streams unchanged", "[stream]") {
  for (const Kind& kind : stream_kinds()) {
    DYNAMIC_SECTION(kind.name) {
      mh::Stream s = kind.make(2), twin = kind.make(2);
      const Tensor frames =
          nn::initialize(nn::Initializer::uniform(1.0), {6, 2, kind.embed}, DType::f32, 50, 1);
      for (std::int64_t t = 0; t < 3; ++t) {
        s.step(batch_frame(frames, t));
        twin.step(batch_frame(frames, t));
      }
      const std::string e = std::to_string(kind.embed);
      CHECK(first_line_of_error([&] {
              s.step(Tensor(DType::f32, {1, kind.embed}));
            }) == "Stream::step: frames must be f32[2," + e +
                      "] (one frame per stream), got f32[1," + e + "]");
      CHECK(first_line_of_error([&] {
              s.step(Tensor(DType::f64, {2, kind.embed}));
            }) == "Stream::step: frames must be f32[2," + e +
                      "] (one frame per stream), got f64[2," + e + "]");
      CHECK(first_line_of_error([&] {
              s.step(Tensor(DType::f32, {2, kind.embed, 1}));
            }) == "Stream::step: frames must be f32[2," + e +
                      "] (one frame per stream), got f32[2," + e + ",1]");
      CHECK(first_line_of_error([&] { s.reset(2); }) ==
            "Stream::reset: stream index 2 is out of range [0, 2)");
      CHECK(first_line_of_error([&] { s.reset(-1); }) ==
            "Stream::reset: stream index -1 is out of range [0, 2)");
      CHECK(first_line_of_error([&] { (void)s.frames_seen(5); }) ==
            "Stream::frames_seen: stream index 5 is out of range [0, 2)");
      CHECK(s.frames_seen(0) == 3);
      for (std::int64_t t = 3; t < 6; ++t)
        CHECK(s.step(batch_frame(frames, t)).bitwise_equal(twin.step(batch_frame(frames, t))));
    }
  }
}

TEST_CASE("Stream: bad models and parameters", "[stream]") {
  const auto opts = small_sliding(DType::f32, 5, 5);
  nn::Params params = random_params(nn::Model(mh::build_sliding_window(opts).output), 60);
  CHECK(first_line_of_error([&] { mh::Stream(opts, params, {.batch = 0}); }) ==
        "Stream: batch must be >= 1, got 0");
  const auto hybrid = small_hybrid(DType::f32, 4);
  const auto hybrid_params = random_params(nn::Model(mh::build_hybrid(hybrid).output), 61);
  CHECK(first_line_of_error(
            [&] { mh::Stream(hybrid, hybrid_params, {.mode = mh::StreamMode::exact_window}); }) ==
        "Stream: a hybrid model streams one way (LSTM state carried, attention over a ring "
        "of the last seq_len outputs); mode exact_window is not available for it");
  params.erase("layer_2_ffn1.bias");
  std::string message;
  try {
    mh::Stream(opts, params);
  } catch (const Error& e) {
    message = e.what();
  }
  CHECK(message ==
        "Stream: parameters do not match the model (1 problems):\n  missing: layer_2_ffn1.bias "
        "f32[12]");
}

namespace {

// The hybrid past its seq_len, from the library's own layers (the names build_hybrid uses):
// the LSTM half over every frame so far, then the attention half over the last seq_len
// projected rows.
Tensor hybrid_reference(const mh::HybridOptions& opts, const nn::Params& params,
                        const Tensor& frames, std::int64_t t) {
  const std::int64_t s = *opts.seq_len, h = opts.num_heads * opts.head_dim;
  nn::Layer x = nn::input("state_sequence", {nn::dynamic, t + 1, *opts.embed_dim}, opts.dtype);
  x = nn::layer_norm(x, {.name = "input_ln", .epsilon = 1e-6});
  for (std::int64_t k = 1; k <= opts.lstm_layers; ++k) {
    const std::string p = "lstm_" + std::to_string(k);
    x = nn::lstm(x, opts.lstm_hidden, {.name = p}).sequence;
    x = nn::layer_norm(x, {.name = p + "_ln", .epsilon = 1e-6});
  }
  const nn::Layer proj = nn::dense(x, h, {.name = "lstm_to_attn_proj"});
  const Tensor rows = reference(proj, params, sequence(frames, 0, t));  // [1, t + 1, H]

  nn::Layer in = nn::input("projected", {nn::dynamic, s, h}, opts.dtype);
  nn::Layer a = mh::multi_head_attention(in, {.num_heads = opts.num_heads,
                                              .head_dim = opts.head_dim,
                                              .dropout = 0,
                                              .name = "hybrid_attn"});
  nn::Layer out = nn::take_index(nn::layer_norm(nn::add(in, a), {.name = "attn_norm"}), 1, -1,
                                 {.name = "last"});
  Tensor last(opts.dtype, {1, s, h});
  for (std::int64_t i = 0; i < s * h; ++i)
    last.set_from_double(i, rows.get_as_double((t + 1 - s) * h + i));
  return reference(out, params, last);
}

}  // namespace

TEST_CASE("hybrid past seq_len: the LSTM sees every frame, the attention the last seq_len",
          "[stream]") {
  const std::int64_t seq_len = 4;
  const auto opts = small_hybrid(DType::f64, seq_len);
  const nn::Params params = random_params(nn::Model(mh::build_hybrid(opts).output), 14);
  const nn::Params changed = perturbed(params, "lstm_1.hidden_kernel", 6);
  mh::Stream stream(opts, params);
  const Tensor frames = random_frames(3 * seq_len, 6, DType::f64, 15);
  double worst = 0, changed_worst = 0;
  for (std::int64_t t = 0; t < frames.dim(0); ++t) {
    const Tensor got = stream.step(frame_at(frames, t));
    if (t + 1 < seq_len) continue;
    worst = std::max(worst, relative_error(got, hybrid_reference(opts, params, frames, t)));
    changed_worst =
        std::max(changed_worst, relative_error(got, hybrid_reference(opts, changed, frames, t)));
  }
  INFO("worst " << worst << ", with one weight element changed " << changed_worst);
  CHECK(worst <= 1e-12);
  CHECK(changed_worst > 1e-10);
}
