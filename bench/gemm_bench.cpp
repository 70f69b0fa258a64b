// GEMM benchmark: the JIT's f32 GEMM (jit::compile on a dot_general graph) against OpenBLAS
// sgemm and the machine's measured FMA peak, single thread and all threads, in one run.
//
//   ./build/bench/gemm_bench [FILTER [1]]   (run it alone: timings are wall-clock; FILTER
//                                            keeps the rows whose label contains it, 1 runs
//                                            single-threaded only)
//
// Results are checked against OpenBLAS before anything is timed. An unfiltered run ends with
// the products of one sw_train_b32 training step together: the % of peak that step could reach
// if they ran as fast as here alone and nothing else took time (issue 12's 75% target).
#include <edifice/core/ops.hpp>
#include <edifice/jit/jit.hpp>
#include <edifice/jit/target.hpp>

#include <cblas.h>

#include "common/fma_peak.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

using namespace edifice;
using edifice::bench::measure_peak;
namespace o = edifice::ops;

namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Best GFLOP/s over 7 batches of >= 60 ms each.
double time_gflops(double flops, const std::function<void()>& run) {
  run();
  run();
  int reps = 1;
  for (;;) {
    auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < reps; ++i) run();
    if (seconds_since(start) >= 0.06) break;
    reps *= 2;
  }
  double best = 0;
  for (int batch = 0; batch < 7; ++batch) {
    auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < reps; ++i) run();
    best = std::max(best, flops * reps / seconds_since(start) / 1e9);
  }
  return best;
}

Tensor random_tensor(const Shape& shape, std::uint32_t seed) {
  Tensor t(DType::f32, shape);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1, 1);
  float* p = t.data<float>();
  for (std::int64_t i = 0; i < t.numel(); ++i) p[i] = u(rng);
  return t;
}

struct Case {
  const char* label;
  std::int64_t m, k, n;
  bool trans_b;          // B stored as N x K (x . W^T)
  bool trans_a = false;  // A stored as K x M (a weight gradient dy^T . x)
  int in_train_step = 0;  // how often one sw_train_b32 step runs this product (see below)
};

// The training step's products at all threads: their FLOPs and the time they take at the best
// GFLOP/s each library reached on them alone.
struct StepTotals {
  double flops = 0, jit_seconds = 0, blas_seconds = 0;
  void add(const Case& c, double flops_of_one, double jit_gf, double blas_gf) {
    const double f = c.in_train_step * flops_of_one;
    flops += f;
    jit_seconds += f / (jit_gf * 1e9);
    blas_seconds += f / (blas_gf * 1e9);
  }
};

}  // namespace

int main(int argc, char** argv) {
  const std::string filter = argc > 1 ? argv[1] : "";
  const bool single_only = argc > 2 && std::string(argv[2]) == "1";
  const jit::Target& target = jit::host_target();
  const int all = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  std::printf("host: %s, %d hardware threads, OpenBLAS %s\n", target.describe().c_str(), all,
              OPENBLAS_VERSION);
  const double peak1 = measure_peak(target.isa, 1);
  const double peak_all = measure_peak(target.isa, all);
  std::printf("measured f32 FMA peak: %.1f GFLOP/s on 1 core, %.1f GFLOP/s on %d cores\n\n", peak1,
              peak_all, all);

  const std::vector<Case> cases = {
      {"square 256", 256, 256, 256, false},
      {"square 512", 512, 512, 512, false},
      {"square 1024", 1024, 1024, 1024, false},
      {"model 1920x1024x256", 1920, 1024, 256, false, false, 1},
      {"model 1920x256x768", 1920, 256, 768, false, false, 2},
      {"model 60x1024x256", 60, 1024, 256, false},
      {"model 1920x1024x256 B^T", 1920, 1024, 256, true},
      // The training step's weight gradients: dW[in, out] = x^T . dy over the 1920 rows.
      {"grad 256x1920x1024 A^T", 256, 1920, 1024, false, true},
      {"grad 256x1920x256 A^T", 256, 1920, 256, false, true, 4},
      {"train 1920x256x256", 1920, 256, 256, false, false, 4},
      {"train 1920x256x256 B^T", 1920, 256, 256, true, false, 4},
      {"grad 1024x1920x256 A^T", 1024, 1920, 256, false, true, 1},
      {"train 1920x768x256 B^T", 1920, 768, 256, true, false, 2},
      {"grad 256x1920x768 A^T", 256, 1920, 768, false, true, 2},
  };
  // in_train_step: how often one sw_train_b32 step (B 32 x S 60 = 1920 rows, E 1024, 2 layers
  // of QKV 256 -> 768 and FFN 256 -> 256 -> 256) runs the product, as peer_report.py counts
  // them: the input projection forward and its weight gradient, and each layer's three
  // products forward, input gradient (B^T) and weight gradient (A^T). The attention's band
  // products (4% of the step's FLOPs) are left out.
  std::printf("%-26s %3s | %9s %9s | %7s %7s | %8s\n", "M x K x N", "thr", "JIT GF/s", "BLAS GF/s",
              "JIT %pk", "BLAS %pk", "JIT/BLAS");
  std::printf("%s\n", std::string(85, '-').c_str());
  bool all_agree = true;
  StepTotals step;
  for (const Case& c : cases) {
    if (std::string(c.label).find(filter) == std::string::npos) continue;
    Shape a_shape = c.trans_a ? Shape{c.k, c.m} : Shape{c.m, c.k};
    auto a = o::parameter("a", DType::f32, a_shape);
    Shape b_shape = c.trans_b ? Shape{c.n, c.k} : Shape{c.k, c.n};
    auto b = o::parameter("b", DType::f32, b_shape);
    Value y = c.trans_a   ? o::dot_general(a, b, {{0}, {0}, {}, {}})
              : c.trans_b ? o::dot_general(a, b, {{1}, {1}, {}, {}})
                          : o::matmul(a, b);
    Graph graph({a, b}, {y});
    Tensor ta = random_tensor(a_shape, 1), tb = random_tensor(b_shape, 2);
    Tensor want(DType::f32, {c.m, c.n});
    const double flops = 2.0 * static_cast<double>(c.m * c.n * c.k);
    auto blas = [&] {
      cblas_sgemm(CblasRowMajor, c.trans_a ? CblasTrans : CblasNoTrans,
                  c.trans_b ? CblasTrans : CblasNoTrans, static_cast<int>(c.m),
                  static_cast<int>(c.n), static_cast<int>(c.k), 1.0f, ta.data<float>(),
                  static_cast<int>(c.trans_a ? c.m : c.k), tb.data<float>(),
                  static_cast<int>(c.trans_b ? c.k : c.n), 0.0f, want.data<float>(),
                  static_cast<int>(c.n));
    };
    for (int threads : {1, all}) {
      jit::Options options;
      options.threads = threads;
      options.disk_cache = false;
      auto exe = jit::compile(graph, {ta.shape(), tb.shape()}, options);
      openblas_set_num_threads(threads);
      blas();
      // Check before timing: |jit - blas| within a few ulps of the sum of |a||b| terms.
      Tensor got = exe->run({ta, tb})[0];
      double worst = 0;
      for (std::int64_t i = 0; i < got.numel(); ++i)
        worst = std::max(
            worst, std::abs(static_cast<double>(got.data<float>()[i]) - want.data<float>()[i]));
      const bool agree = worst <= 1e-5 * static_cast<double>(c.k);
      all_agree &= agree;
      // OpenBLAS workers spin for a while after each call: let them go to sleep before the
      // JIT is timed, or they take a core from it.
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
      const double jit_gf = time_gflops(flops, [&] { exe->run({ta, tb}); });
      const double blas_gf = time_gflops(flops, blas);
      const double peak = threads == 1 ? peak1 : peak_all;
      std::printf("%-26s %3d | %9.1f %9.1f | %6.1f%% %6.1f%% | %7.2fx%s\n", c.label, threads,
                  jit_gf, blas_gf, 100 * jit_gf / peak, 100 * blas_gf / peak, jit_gf / blas_gf,
                  agree ? "" : "  RESULTS DIFFER");
      if (threads == all && c.in_train_step > 0) step.add(c, flops, jit_gf, blas_gf);
      if (all == 1 || single_only) break;
    }
  }
  if (step.flops > 0 && filter.empty() && !single_only) {
    // The best % of peak a training step could reach if its products ran at their speed alone
    // and everything else (attention, norms, GELU, Adam) took no time.
    const double jit_gf = step.flops / step.jit_seconds / 1e9;
    const double blas_gf = step.flops / step.blas_seconds / 1e9;
    std::printf("%-26s %3d | %9.1f %9.1f | %6.1f%% %6.1f%% | %7.2fx\n", "sw_train_b32 products",
                all, jit_gf, blas_gf, 100 * jit_gf / peak_all, 100 * blas_gf / peak_all,
                jit_gf / blas_gf);
  }
  std::printf("\nJIT time includes run(): output allocation and dispatch, as a user sees it.\n");
  return all_agree ? 0 : 1;
}
