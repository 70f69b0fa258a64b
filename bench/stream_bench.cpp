// Per-frame latency of streaming inference (models::multi_head::Stream) on the default
// sliding-window model (E 1024, window 60, 4 x 64 heads, 2 layers, FFN 256), against our own
// predict re-running the 60-frame window per frame. bench/run_stream_bench.sh runs it with the
// PyTorch peer (bench/peers/stream_peer.py) and writes the section of docs/performance.md.
//
//   stream_bench [--threads N] [--batches 1,32] [--steps N] [--idle-reps N]
//
// For every batch: per-call latency (p50, p99, max over --steps calls after a warm-up of 2
// windows) of predict on the window, the exact-window step and the streaming-band step; the
// FLOPs each compiled graph does per call (from the JIT's kernel statistics); and, at batch 1,
// the latency of the first step after the process slept 100 ms (median and max over
// --idle-reps). Before timing, the exact-window step is checked against predict on the same
// window. The last line is "RESULT {json}".
#include <edifice/models/stream.hpp>
#include <edifice/nn/init.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

using namespace edifice;
namespace mh = edifice::models::multi_head;
using Clock = std::chrono::steady_clock;

namespace {

constexpr std::int64_t kE = 1024, kWindow = 60, kHeads = 4, kHeadDim = 64, kLayers = 2, kFfn = 256;

struct Config {
  int threads = 1;
  std::vector<std::int64_t> batches = {1, 32};
  int steps = 2000;
  int idle_reps = 20;
};

struct Latency {
  double p50 = 0, p99 = 0, max = 0;  // microseconds
};

Latency summarise(std::vector<double> us) {
  std::sort(us.begin(), us.end());
  const std::size_t n = us.size();
  const std::size_t p99 = std::min(n - 1, static_cast<std::size_t>(std::ceil(0.99 * n)) - 1);
  return {us[n / 2], us[p99], us.back()};
}

double micros_since(Clock::time_point start) {
  return std::chrono::duration<double, std::micro>(Clock::now() - start).count();
}

// Times `calls` calls of `fn(i)`, each on its own.
Latency time_calls(int calls, const std::function<void(int)>& fn) {
  std::vector<double> us;
  us.reserve(static_cast<std::size_t>(calls));
  for (int i = 0; i < calls; ++i) {
    const auto start = Clock::now();
    fn(i);
    us.push_back(micros_since(start));
  }
  return summarise(us);
}

// One call after sleeping 100 ms, `reps` times: the thread pool and caches have gone cold.
Latency time_after_idle(int reps, const std::function<void(int)>& fn) {
  std::vector<double> us;
  for (int i = 0; i < reps; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    const auto start = Clock::now();
    fn(i);
    us.push_back(micros_since(start));
  }
  return summarise(us);
}

double flops_of(const jit::Executable& exe) {
  double f = 0;
  for (const auto& k : exe.kernels()) f += k.flops;
  return f;
}

// [B, E] frames, a pool of distinct ones to cycle through.
std::vector<Tensor> frame_pool(std::int64_t batch, int count) {
  std::vector<Tensor> pool;
  for (int i = 0; i < count; ++i)
    pool.push_back(nn::initialize(nn::Initializer::uniform(1.0), {batch, kE}, DType::f32, 7,
                                  static_cast<std::uint64_t>(i)));
  return pool;
}

// The window [B, 60, E] of the last 60 frames of the pool ending at frame `last`.
Tensor window_of(const std::vector<Tensor>& pool, int last) {
  const std::int64_t b = pool[0].dim(0);
  Tensor w(DType::f32, {b, kWindow, kE});
  const int n = static_cast<int>(pool.size());
  for (std::int64_t t = 0; t < kWindow; ++t) {
    const Tensor& f = pool[static_cast<std::size_t>(((last - (kWindow - 1) + t) % n + n) % n)];
    for (std::int64_t r = 0; r < b; ++r)
      std::memcpy(w.data<float>() + (r * kWindow + t) * kE, f.data<float>() + r * kE,
                  kE * sizeof(float));
  }
  return w;
}

double relative_error(const Tensor& a, const Tensor& b) {
  double diff = 0, scale = 1e-30;
  for (std::int64_t i = 0; i < a.numel(); ++i) {
    diff = std::max(diff, std::abs(a.get_as_double(i) - b.get_as_double(i)));
    scale = std::max(scale, std::abs(b.get_as_double(i)));
  }
  return diff / scale;
}

// Read bandwidth of one thread over `bytes` (the model's weights), through a JIT reduce_sum
// kernel: the median of 200 runs. A batch-1 step reads every weight once, so weight bytes over
// this is the step's floor when the weights do not stay in the core's cache.
double read_bandwidth(std::int64_t bytes, int threads) {
  const std::int64_t n = bytes / 4;
  const Value x = ops::parameter("x", DType::f32, {n});
  const Graph g({x}, {ops::reduce_sum(x, {0})});
  const auto exe = jit::compile(g, {{n}}, {.threads = threads});
  const Tensor data = Tensor::full(DType::f32, {n}, 1.0);
  (void)exe->run({data});
  const Latency l = time_calls(200, [&](int) { (void)exe->run({data}); });
  return static_cast<double>(bytes) / (l.p50 * 1e-6);
}

std::string latency_json(const Latency& l) {
  return fmt::format("{{\"p50_us\": {:.2f}, \"p99_us\": {:.2f}, \"max_us\": {:.2f}}}", l.p50, l.p99,
                     l.max);
}

// Everything measured at one batch size; returns its JSON object.
std::string run_batch(const Config& cfg, std::int64_t batch) {
  const mh::SlidingWindowOptions opts{.embed_dim = kE,
                                      .window_size = kWindow,
                                      .num_heads = kHeads,
                                      .head_dim = kHeadDim,
                                      .num_layers = kLayers,
                                      .ffn_dim = kFfn,
                                      .dropout = 0.0};
  const nn::Model model(mh::build_sliding_window(opts).output);
  const nn::Params params = model.init(1);
  const jit::Options jit{.threads = cfg.threads};
  auto [init, predict] = model.build({.jit = jit});
  (void)init;
  const nn::TracedModel traced = model.trace(nn::Mode::inference);
  std::vector<Shape> shapes;
  for (const auto& n : traced.param_names) shapes.push_back(params.at(n).shape());
  shapes.push_back({batch, kWindow, kE});
  const double predict_flops = flops_of(*jit::compile(traced.graph, shapes, jit));

  std::int64_t weight_bytes = 0;
  for (const auto& [name, t] : params) weight_bytes += static_cast<std::int64_t>(t.nbytes());
  const double bandwidth = read_bandwidth(weight_bytes, cfg.threads);
  const std::vector<Tensor> pool = frame_pool(batch, 97);
  mh::Stream exact(opts, params,
                   {.mode = mh::StreamMode::exact_window, .batch = batch, .jit = jit});
  mh::Stream band(opts, params,
                  {.mode = mh::StreamMode::streaming_band, .batch = batch, .jit = jit});
  // Warm-up: two windows; then the exact step must equal predict on the same window.
  Tensor last;
  for (int i = 0; i < 2 * kWindow; ++i) {
    last = exact.step(pool[static_cast<std::size_t>(i % 97)]);
    band.step(pool[static_cast<std::size_t>(i % 97)]);
  }
  const double check = relative_error(last, predict(params, {window_of(pool, 2 * kWindow - 1)}));
  if (check > 1e-5) {
    std::fprintf(stderr, "stream_bench: exact step differs from predict: %g\n", check);
    std::exit(1);
  }
  const std::vector<Tensor> windows = {window_of(pool, 0), window_of(pool, 1)};
  const int predict_calls = std::max(50, cfg.steps / (batch > 1 ? 20 : 4));
  const Latency p = time_calls(predict_calls, [&](int i) {
    (void)predict(params, {windows[static_cast<std::size_t>(i % 2)]});
  });
  int step = 2 * kWindow;
  auto next_frame = [&] { return pool[static_cast<std::size_t>(step++ % 97)]; };
  const int stream_calls = batch > 1 ? cfg.steps / 4 : cfg.steps;
  const Latency e = time_calls(stream_calls, [&](int) { exact.step(next_frame()); });
  const Latency b = time_calls(stream_calls, [&](int) { band.step(next_frame()); });
  std::string idle;
  if (batch == 1) {
    const Latency ie = time_after_idle(cfg.idle_reps, [&](int) { exact.step(next_frame()); });
    const Latency ib = time_after_idle(cfg.idle_reps, [&](int) { band.step(next_frame()); });
    const Latency ip = time_after_idle(cfg.idle_reps, [&](int i) {
      (void)predict(params, {windows[static_cast<std::size_t>(i % 2)]});
    });
    idle = fmt::format(", \"idle_100ms\": {{\"predict\": {}, \"exact\": {}, \"band\": {}}}",
                       latency_json(ip), latency_json(ie), latency_json(ib));
    std::printf(
        "  after 100 ms idle (median / max of %d): predict %.1f / %.1f us, exact %.1f / "
        "%.1f us, band %.1f / %.1f us\n",
        cfg.idle_reps, ip.p50, ip.max, ie.p50, ie.max, ib.p50, ib.max);
  }
  const double exact_flops = flops_of(exact.executable()) + flops_of(*exact.frame_executable());
  const double band_flops = flops_of(band.executable());
  std::printf("batch %ld, %d thread(s): exact step == predict to %.2g (relative)\n",
              static_cast<long>(batch), cfg.threads, check);
  std::printf("  %-22s %10s %10s %10s %12s\n", "per frame", "p50 us", "p99 us", "max us",
              "MFLOP/call");
  auto line = [](const char* name, const Latency& l, double f) {
    std::printf("  %-22s %10.1f %10.1f %10.1f %12.2f\n", name, l.p50, l.p99, l.max, f / 1e6);
  };
  line("predict on the window", p, predict_flops);
  line("exact-window step", e, exact_flops);
  line("streaming-band step", b, band_flops);
  std::printf("  exact / predict p50 = %.3f, band / predict p50 = %.4f\n", e.p50 / p.p50,
              b.p50 / p.p50);
  std::printf(
      "  weights %.2f MB; read bandwidth (JIT reduce_sum over as many bytes) %.1f GB/s: "
      "reading them once takes %.1f us\n",
      static_cast<double>(weight_bytes) / 1e6, bandwidth / 1e9,
      static_cast<double>(weight_bytes) / bandwidth * 1e6);
  std::fflush(stdout);
  return fmt::format(
      "{{\"batch\": {}, \"threads\": {}, \"check_rel\": {:.3g}, \"predict\": {}, \"exact\": {}, "
      "\"band\": {}, \"flops\": {{\"predict\": {:.0f}, \"exact\": {:.0f}, \"band\": {:.0f}}}, "
      "\"weight_bytes\": {}, \"read_bandwidth_bytes_per_s\": {:.4g}{}}}",
      batch, cfg.threads, check, latency_json(p), latency_json(e), latency_json(b), predict_flops,
      exact_flops, band_flops, weight_bytes, bandwidth, idle);
}

Config parse(int argc, char** argv) {
  Config cfg;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "stream_bench: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--threads") {
      cfg.threads = std::atoi(value().c_str());
    } else if (a == "--steps") {
      cfg.steps = std::atoi(value().c_str());
    } else if (a == "--idle-reps") {
      cfg.idle_reps = std::atoi(value().c_str());
    } else if (a == "--batches") {
      cfg.batches.clear();
      std::string list = value();
      for (std::size_t pos = 0; pos < list.size();) {
        std::size_t comma = list.find(',', pos);
        if (comma == std::string::npos) comma = list.size();
        cfg.batches.push_back(std::atoll(list.substr(pos, comma - pos).c_str()));
        pos = comma + 1;
      }
    } else {
      std::fprintf(stderr,
                   "usage: stream_bench [--threads N] [--batches 1,32] [--steps N] "
                   "[--idle-reps N]\n");
      std::exit(2);
    }
  }
  if (cfg.threads < 1 || cfg.steps < 100 || cfg.idle_reps < 1 || cfg.batches.empty()) {
    std::fprintf(stderr, "stream_bench: need --threads >= 1, --steps >= 100, --idle-reps >= 1\n");
    std::exit(2);
  }
  return cfg;
}

}  // namespace

int main(int argc, char** argv) {
  const Config cfg = parse(argc, argv);
  std::string json = "[";
  for (std::size_t i = 0; i < cfg.batches.size(); ++i) {
    if (i) json += ", ";
    json += run_batch(cfg, cfg.batches[i]);
  }
  std::printf("RESULT %s]\n", json.c_str());
  return 0;
}
