// Edifice's side of the peer benchmark (bench/run_peer_bench.sh compares it with PyTorch and JAX
// on the same models, weights, inputs and shapes). One process per measurement:
//
//   peer_bench export DIR         initialise every case (fixed seed) and write
//   DIR/CASE.safetensors:
//                                 parameters "p.NAME", inputs, targets and our own results
//                                 (outputs; for training the loss, the parameters "p1.NAME" and
//                                 Adam's first moments "m1.NAME" after one step)
//   peer_bench time CASE DIR      time CASE on DIR's data with EDIFICE_THREADS workers
//   peer_bench mem CASE DIR       peak resident memory of a few runs of CASE in this process
//   peer_bench compile CASE CACHE compile CASE's graph with the disk cache at CACHE (run twice:
//                                 cold on an empty directory, then cached in a second process)
//   peer_bench machine            target, hardware threads and the measured FMA peak
//   peer_bench serve CASE DIR     prepare and check CASE once ("READY {json}"), then answer
//                                 each stdin line "slice SECONDS" with one time slice
//                                 ("SLICE {json}") until "quit" or end of input: the
//                                 interleaved rounds of bench/peers/run_all.py
//   peer_bench peak [ITERS] T...  the FMA peak (EDIFICE_ISA caps the ISA) on T threads, each T
//
// Every other mode prints one line "RESULT {json}" on stdout. Cases: sw_inf_b1, sw_inf_b32,
// sw_train_b32, hybrid_train_b32, window_attn.
#include <edifice/core/autodiff.hpp>
#include <edifice/jit/target.hpp>
#include <edifice/models/multi_head.hpp>
#include <edifice/nn/losses.hpp>
#include <edifice/nn/optimizers.hpp>
#include <edifice/nn/safetensors.hpp>
#include <edifice/nn/train_step.hpp>

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/fma_peak.hpp"

using namespace edifice;
namespace mh = edifice::models::multi_head;
namespace o = edifice::ops;

namespace {

// ---- the cases (shapes fixed by the benchmark's specification) ----

constexpr std::int64_t kE = 1024, kS = 60, kHeads = 4, kHeadDim = 64, kLayers = 2, kFfn = 256,
                       kWindow = 60, kLstm = 256;
constexpr std::int64_t kAttnS = 4096, kAttnW = 256;
constexpr double kLr = 1e-3, kBeta1 = 0.9, kBeta2 = 0.999, kEps = 1e-8;
constexpr std::uint64_t kSeed = 1;

enum class Kind { sw_inference, sw_train, hybrid_train, window_attention };

struct Case {
  std::string name;
  Kind kind;
  std::int64_t batch;
};

const std::vector<Case>& cases() {
  static const std::vector<Case> all = {
      {"sw_inf_b1", Kind::sw_inference, 1},       {"sw_inf_b32", Kind::sw_inference, 32},
      {"sw_train_b32", Kind::sw_train, 32},       {"hybrid_train_b32", Kind::hybrid_train, 32},
      {"window_attn", Kind::window_attention, 1},
  };
  return all;
}

const Case& find_case(const std::string& name) {
  for (const Case& c : cases())
    if (c.name == name) return c;
  std::fprintf(stderr, "peer_bench: unknown case %s\n", name.c_str());
  std::exit(2);
}

nn::Model make_model(Kind kind) {
  if (kind == Kind::hybrid_train)
    return nn::Model(mh::build_hybrid({.embed_dim = kE,
                                       .lstm_hidden = kLstm,
                                       .num_heads = kHeads,
                                       .head_dim = kHeadDim,
                                       .dropout = 0.0,
                                       .window_size = kS})
                         .output);
  return nn::Model(mh::build_sliding_window({.embed_dim = kE,
                                             .window_size = kWindow,
                                             .num_heads = kHeads,
                                             .head_dim = kHeadDim,
                                             .num_layers = kLayers,
                                             .ffn_dim = kFfn,
                                             .dropout = 0.0,
                                             .seq_len = kS})
                       .output);
}

nn::TrainStep make_step(const nn::Model& model) {
  return nn::TrainStep(
      model, {.loss = nn::Loss::mse(),
              .optimizer =
                  nn::adam({.learning_rate = kLr, .beta1 = kBeta1, .beta2 = kBeta2, .eps = kEps})});
}

// The window-attention case: out = attention(q, k, v) with the window mask, and the gradients
// of sum(out * g) with respect to q, k and v. Outputs: out, dq, dk, dv.
Graph attention_graph() {
  const Shape s = {1, kHeads, kAttnS, kHeadDim};
  auto q = o::parameter("q", DType::f32, s);
  auto k = o::parameter("k", DType::f32, s);
  auto v = o::parameter("v", DType::f32, s);
  auto g = o::parameter("g", DType::f32, s);
  o::AttentionOptions opts;
  opts.mask = o::AttentionMask::sliding_window(kAttnW);
  opts.fill = -1e9;
  Value out = o::attention(q, k, v, opts);
  Value loss = o::reduce_sum(o::mul(out, g), {0, 1, 2, 3});
  std::vector<Value> outs = {out};
  for (const Value& d : grad(loss, {q, k, v})) outs.push_back(d);
  return Graph({q, k, v, g}, outs);
}

Tensor random_tensor(const Shape& shape, std::uint32_t seed, double stddev = 1.0) {
  Tensor t(DType::f32, shape);
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0.0f, static_cast<float>(stddev));
  float* p = t.data<float>();
  for (std::int64_t i = 0; i < t.numel(); ++i) p[i] = n(rng);
  return t;
}

// ---- the data of a case, as written by `export` and read by the other modes ----

struct Data {
  nn::Params params;
  std::map<std::string, Tensor> tensors;  // everything else in the file
};

std::string case_path(const std::string& dir, const Case& c) {
  return dir + "/" + c.name + ".safetensors";
}

Data load(const std::string& dir, const Case& c) {
  nn::SafetensorsFile f = nn::load_safetensors(case_path(dir, c));
  Data d;
  for (auto& [name, t] : f.tensors) {
    if (name.rfind("p.", 0) == 0)
      d.params.emplace(name.substr(2), t);
    else
      d.tensors.emplace(name, t);
  }
  return d;
}

std::string config_json(const Case& c) {
  std::ostringstream s;
  s << "{\"case\":\"" << c.name << "\",\"batch\":" << c.batch << ",\"embed_dim\":" << kE
    << ",\"seq_len\":" << (c.kind == Kind::window_attention ? kAttnS : kS)
    << ",\"num_heads\":" << kHeads << ",\"head_dim\":" << kHeadDim << ",\"num_layers\":" << kLayers
    << ",\"ffn_dim\":" << kFfn
    << ",\"window\":" << (c.kind == Kind::window_attention ? kAttnW : kWindow)
    << ",\"lstm_hidden\":" << kLstm << ",\"lr\":" << kLr << ",\"beta1\":" << kBeta1
    << ",\"beta2\":" << kBeta2 << ",\"eps\":" << kEps
    << ",\"ln_eps\":1e-05,\"hybrid_ln_eps\":1e-06,\"mask_fill\":-1e9}";
  return s.str();
}

void export_case(const std::string& dir, const Case& c) {
  std::map<std::string, Tensor> out;
  if (c.kind == Kind::window_attention) {
    const Shape s = {1, kHeads, kAttnS, kHeadDim};
    Tensor q = random_tensor(s, 11), k = random_tensor(s, 12), v = random_tensor(s, 13),
           g = random_tensor(s, 14);
    auto exe = jit::compile(attention_graph(), {s, s, s, s});
    std::vector<Tensor> r = exe->run({q, k, v, g});
    out = {{"q", q},      {"k", k},     {"v", v},     {"g", g},
           {"out", r[0]}, {"dq", r[1]}, {"dk", r[2]}, {"dv", r[3]}};
  } else {
    nn::Model model = make_model(c.kind);
    nn::Params params = model.init(kSeed);
    for (const auto& [name, t] : params) out.emplace("p." + name, t);
    Tensor x = random_tensor({c.batch, kS, kE}, 21);
    out.emplace("x", x);
    if (c.kind == Kind::sw_inference) {
      auto [init, predict] = model.build();
      out.emplace("y", predict(params, {x}));
    } else {
      Tensor t = random_tensor({c.batch, kHeads * kHeadDim}, 22);
      out.emplace("t", t);
      nn::TrainStep step = make_step(model);
      nn::OptimizerState state = step.initial_state(params);
      nn::StepResult r = step.run(params, state, kLr, 0, {x}, t);
      out.emplace("loss", Tensor::scalar<double>(r.loss));
      for (const auto& [name, p] : params) out.emplace("p1." + name, p);
      for (const auto& [name, s] : state)
        if (name.rfind("adam.m.", 0) == 0) out.emplace("m1." + name.substr(7), s);
    }
  }
  nn::save_safetensors(case_path(dir, c), out, {{"config", config_json(c)}});
}

// ---- measurements ----

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double cpu_s() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         1e-6 * static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

// VmRSS or VmHWM of this process, in bytes.
double status_bytes(const char* key) {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind(key, 0) == 0) return 1024.0 * std::atof(line.c_str() + std::strlen(key) + 1);
  return -1;
}

double env_double(const char* name, double fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::atof(v) : fallback;
}

// Warm-up, then the median of enough single runs to fill PEER_BENCH_SECONDS (default 1.5 s),
// at least 3 (runs over 1 s) or 5, at most 2000.
struct Timing {
  double median = 0, min = 0, cpu_util = 0;
  int reps = 0;
};
Timing time_runs(const std::function<void()>& run) {
  const double target = env_double("PEER_BENCH_SECONDS", 1.5);
  run();
  double t0 = now_s();
  run();
  const double one = now_s() - t0;
  const int floor_reps = one > 1.0 ? 3 : 5;
  const int reps =
      std::clamp(static_cast<int>(std::ceil(target / std::max(one, 1e-6))), floor_reps, 2000);
  std::vector<double> times;
  const double c0 = cpu_s(), w0 = now_s();
  for (int i = 0; i < reps; ++i) {
    t0 = now_s();
    run();
    times.push_back(now_s() - t0);
  }
  const double wall = now_s() - w0, cpu = cpu_s() - c0;
  std::sort(times.begin(), times.end());
  Timing t;
  t.reps = reps;
  t.min = times.front();
  t.median = reps % 2 ? times[reps / 2] : 0.5 * (times[reps / 2 - 1] + times[reps / 2]);
  t.cpu_util = cpu / wall;
  return t;
}

// One time slice of the interleaved rounds: a warm-up run (the caches were just used by
// another framework) unless one run takes over a quarter of the slice, then runs until
// `seconds` have passed (at least one). Same rule as bench/peers/peer_bench.py.
Timing time_slice(const std::function<void()>& run, double seconds, double last_run_s) {
  if (last_run_s < 0.25 * seconds) run();
  std::vector<double> times;
  const double c0 = cpu_s(), w0 = now_s();
  do {
    const double t0 = now_s();
    run();
    times.push_back(now_s() - t0);
  } while (now_s() - w0 < seconds);
  const double wall = now_s() - w0, cpu = cpu_s() - c0;
  std::sort(times.begin(), times.end());
  const std::size_t n = times.size();
  Timing t;
  t.reps = static_cast<int>(n);
  t.min = times.front();
  t.median = n % 2 ? times[n / 2] : 0.5 * (times[n / 2 - 1] + times[n / 2]);
  t.cpu_util = cpu / wall;
  return t;
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
  double worst = 0;
  for (std::int64_t i = 0; i < a.numel(); ++i)
    worst = std::max(worst, std::abs(a.get_as_double(i) - b.get_as_double(i)));
  return worst;
}

int threads_in_use() {
  const char* v = std::getenv("EDIFICE_THREADS");
  if (v && *v) return std::atoi(v);
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

// A runnable case: `run` does one measured unit (one inference, one training step, one
// attention forward + backward); `check` compares the last result with the exported one.
struct Runner {
  std::function<void()> run;
  std::function<double()> check;  // max |ours now - ours exported|
  std::function<void()> prepare;  // compile (or load from the disk cache) before measuring
};

struct State {
  Data data;
  std::unique_ptr<nn::Model> model;
  std::unique_ptr<nn::TrainStep> step;
  nn::Model::PredictFn predict;
  nn::OptimizerState opt;
  nn::Params params;
  std::shared_ptr<const jit::Executable> exe;
  std::vector<Tensor> args, last;
  Tensor y;
  double loss = 0;
  bool first_loss_set = false;
  double first_loss = 0;
};

Runner make_runner(const Case& c, State& st) {
  Runner r;
  if (c.kind == Kind::window_attention) {
    st.args = {st.data.tensors.at("q"), st.data.tensors.at("k"), st.data.tensors.at("v"),
               st.data.tensors.at("g")};
    r.prepare = [&st] {
      std::vector<Shape> shapes;
      for (const Tensor& t : st.args) shapes.push_back(t.shape());
      st.exe = jit::compile(attention_graph(), shapes);
    };
    r.run = [&st] { st.last = st.exe->run(st.args); };
    r.check = [&st] {
      double worst = 0;
      const char* names[] = {"out", "dq", "dk", "dv"};
      for (int i = 0; i < 4; ++i)
        worst = std::max(worst, max_abs_diff(st.last[i], st.data.tensors.at(names[i])));
      return worst;
    };
    return r;
  }
  st.model = std::make_unique<nn::Model>(make_model(c.kind));
  const Tensor& x = st.data.tensors.at("x");
  if (c.kind == Kind::sw_inference) {
    st.predict = st.model->build().second;
    r.prepare = [&st, &x] {
      // Compiled (or loaded) as predict compiles it, so that predict finds it in the
      // in-process cache and from_cache can be reported.
      std::vector<Shape> shapes;
      for (const auto& [n, p] : st.data.params) shapes.push_back(p.shape());
      shapes.push_back(x.shape());
      st.exe = jit::compile(st.model->trace(nn::Mode::inference).graph, shapes);
      st.y = st.predict(st.data.params, {x});
    };
    r.run = [&st, &x] { st.y = st.predict(st.data.params, {x}); };
    r.check = [&st] { return max_abs_diff(st.y, st.data.tensors.at("y")); };
    return r;
  }
  st.step = std::make_unique<nn::TrainStep>(make_step(*st.model));
  st.params = st.data.params;
  st.opt = st.step->initial_state(st.params);
  const Tensor& t = st.data.tensors.at("t");
  r.prepare = [&st, &x, &t] {
    // The step graph compiled (or loaded) before anything is measured; the same executable is
    // then found in the in-process cache by TrainStep::run.
    nn::Params p = st.params;
    nn::OptimizerState s = st.opt;
    const Graph& g = st.step->graph(t);
    std::vector<Shape> shapes;
    for (const auto& [n, v] : p) shapes.push_back(v.shape());
    for (const auto& [n, v] : s) shapes.push_back(v.shape());
    shapes.push_back({});
    shapes.push_back({});
    shapes.push_back(x.shape());
    shapes.push_back(t.shape());
    st.exe = jit::compile(g, shapes);
  };
  r.run = [&st, &x, &t] {
    st.loss = st.step->run(st.params, st.opt, kLr, 0, {x}, t).loss;
    if (!st.first_loss_set) {
      st.first_loss = st.loss;
      st.first_loss_set = true;
    }
  };
  r.check = [&st] {
    // The first step started from the exported parameters: its loss must be the exported one.
    return std::abs(st.first_loss - st.data.tensors.at("loss").get_as_double(0));
  };
  return r;
}

void print_result(const std::string& json) {
  std::printf("RESULT %s\n", json.c_str());
  std::fflush(stdout);
}

int mode_time(const Case& c, const std::string& dir) {
  State st;
  st.data = load(dir, c);
  Runner r = make_runner(c, st);
  r.prepare();
  r.run();
  const double diff = r.check();
  Timing t = time_runs(r.run);
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "{\"framework\":\"edifice\",\"case\":\"%s\",\"threads\":%d,\"median_s\":%.9g,"
                "\"min_s\":%.9g,\"reps\":%d,\"cpu_util\":%.3f,\"max_abs_diff_vs_export\":%.3g,"
                "\"from_cache\":%s}",
                c.name.c_str(), threads_in_use(), t.median, t.min, t.reps, t.cpu_util, diff,
                st.exe && st.exe->loaded_from_cache() ? "true" : "false");
  print_result(buf);
  return 0;
}

// The worker of the interleaved rounds: one process per (case, thread count, ISA) stays
// alive for the whole case, so each slice measures a warm executable.
int mode_serve(const Case& c, const std::string& dir) {
  State st;
  st.data = load(dir, c);
  Runner r = make_runner(c, st);
  r.prepare();
  double t0 = now_s();
  r.run();
  double last = now_s() - t0;
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "READY {\"framework\":\"edifice\",\"case\":\"%s\",\"threads\":%d,\"isa\":\"%s\","
                "\"first_run_s\":%.6g,\"max_abs_diff_vs_export\":%.3g,\"from_cache\":%s}\n",
                c.name.c_str(), threads_in_use(), jit::isa_name(jit::host_target().isa).c_str(),
                last, r.check(), st.exe && st.exe->loaded_from_cache() ? "true" : "false");
  std::fputs(buf, stdout);
  std::fflush(stdout);
  std::string line;
  while (std::getline(std::cin, line) && line != "quit") {
    if (line.rfind("slice ", 0) != 0) {
      std::fprintf(stderr, "peer_bench serve: unknown command \"%s\"\n", line.c_str());
      return 2;
    }
    Timing t = time_slice(r.run, std::atof(line.c_str() + 6), last);
    last = t.median;
    std::printf("SLICE {\"median_s\":%.9g,\"min_s\":%.9g,\"reps\":%d,\"cpu_util\":%.3f}\n",
                t.median, t.min, t.reps, t.cpu_util);
    std::fflush(stdout);
  }
  return 0;
}

int mode_mem(const Case& c, const std::string& dir) {
  State st;
  st.data = load(dir, c);
  Runner r = make_runner(c, st);
  r.prepare();  // from the disk cache when the time runs have filled it
  const double before = status_bytes("VmRSS:");
  const int runs = c.kind == Kind::window_attention ? 2 : 3;
  for (int i = 0; i < runs; ++i) r.run();
  const double peak = status_bytes("VmHWM:");
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "{\"framework\":\"edifice\",\"case\":\"%s\",\"threads\":%d,\"runs\":%d,"
                "\"rss_before_bytes\":%.0f,\"peak_rss_bytes\":%.0f,\"from_cache\":%s}",
                c.name.c_str(), threads_in_use(), runs, before, peak,
                st.exe && st.exe->loaded_from_cache() ? "true" : "false");
  print_result(buf);
  return 0;
}

// The graph and input shapes each case compiles (inference graph, step graph, attention
// gradient graph), built the way the time runs build them.
int mode_compile(const Case& c, const std::string& cache_dir) {
  Graph g;
  std::vector<Shape> shapes;
  if (c.kind == Kind::window_attention) {
    g = attention_graph();
    for (const Value& in : g.inputs()) shapes.push_back(in.shape());
  } else {
    nn::Model model = make_model(c.kind);
    nn::Params params = model.init(kSeed);
    const Shape x = {c.batch, kS, kE};
    if (c.kind == Kind::sw_inference) {
      g = model.trace(nn::Mode::inference).graph;
      for (const auto& [n, p] : params) shapes.push_back(p.shape());
      shapes.push_back(x);
    } else {
      nn::TrainStep step = make_step(model);
      Tensor t(DType::f32, {c.batch, kHeads * kHeadDim});
      g = step.graph(t);
      for (const auto& [n, p] : params) shapes.push_back(p.shape());
      for (const auto& [n, s] : step.initial_state(params)) shapes.push_back(s.shape());
      shapes.push_back({});
      shapes.push_back({});
      shapes.push_back(x);
      shapes.push_back(t.shape());
    }
  }
  const double t0 = now_s();
  auto exe = jit::compile(g, shapes, {.cache_dir = cache_dir});
  const double secs = now_s() - t0;
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "{\"case\":\"%s\",\"compile_s\":%.6f,\"from_cache\":%s,\"kernels\":%zu,"
                "\"arena_bytes\":%lld}",
                c.name.c_str(), secs, exe->loaded_from_cache() ? "true" : "false",
                exe->kernels().size(), static_cast<long long>(exe->arena_bytes()));
  print_result(buf);
  return 0;
}

std::string json_escape(const std::string& s) {
  std::string out;
  for (char ch : s) {
    if (ch == '"' || ch == '\\') out += '\\';
    out += ch;
  }
  return out;
}

int mode_machine() {
  const jit::Target& target = jit::host_target();
  const int all = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const double peak1 = bench::measure_peak(target.isa, 1);
  const double peak_all = bench::measure_peak(target.isa, all);
  char buf[1024];
  std::snprintf(buf, sizeof buf,
                "{\"target\":\"%s\",\"isa\":\"%s\",\"hardware_threads\":%d,"
                "\"peak_gflops_1\":%.2f,\"peak_gflops_all\":%.2f}",
                json_escape(target.describe()).c_str(), jit::isa_name(target.isa).c_str(), all,
                peak1, peak_all);
  print_result(buf);
  return 0;
}

// The FMA peak on each of `threads` (the same loop as `machine` and gemm_bench), for the
// parallel efficiency: measured in the same rounds as the timings it divides.
int mode_peak(long iters, const std::vector<int>& threads) {
  const jit::Isa isa = jit::host_target().isa;
  std::string list;
  for (int n : threads) {
    char item[96];
    std::snprintf(item, sizeof item, "%s{\"threads\":%d,\"gflops\":%.2f}", list.empty() ? "" : ",",
                  n, bench::measure_peak(isa, n, iters));
    list += item;
  }
  print_result("{\"isa\":\"" + jit::isa_name(isa) + "\",\"peaks\":[" + list + "]}");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::string mode = argc > 1 ? argv[1] : "";
    if (mode == "export" && argc == 3) {
      std::filesystem::create_directories(argv[2]);
      for (const Case& c : cases()) {
        export_case(argv[2], c);
        std::fprintf(stderr, "peer_bench: exported %s\n", c.name.c_str());
      }
      return 0;
    }
    if (mode == "time" && argc == 4) return mode_time(find_case(argv[2]), argv[3]);
    if (mode == "mem" && argc == 4) return mode_mem(find_case(argv[2]), argv[3]);
    if (mode == "compile" && argc == 4) return mode_compile(find_case(argv[2]), argv[3]);
    if (mode == "machine" && argc == 2) return mode_machine();
    if (mode == "serve" && argc == 4) return mode_serve(find_case(argv[2]), argv[3]);
    if (mode == "peak" && argc >= 4) {
      std::vector<int> threads;
      for (int i = 3; i < argc; ++i) threads.push_back(std::max(1, std::atoi(argv[i])));
      return mode_peak(std::atol(argv[2]), threads);
    }
    std::fprintf(stderr,
                 "usage: peer_bench export DIR | time CASE DIR | serve CASE DIR | mem CASE DIR | "
                 "compile CASE CACHE_DIR | machine | peak ITERS THREADS...\n");
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "peer_bench: %s\n", e.what());
    return 1;
  }
}
