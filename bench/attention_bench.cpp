// Speed of the fused attention kernels on their own: forward, and forward + backward
// (gradient of sum(out * g) with respect to q, k and v), for window, causal and unmasked
// attention over [B, heads, S, hd] f32 operands, the masks given as predicates or (cases
// marked "tensor") as the same u8 [S, S] mask tensor. GFLOP/s count only the pairs the mask
// allows (2 * hd FLOPs per pair per product: 2 products forward, 5 backward), the work the
// kernels do; the arena column is the scratch memory of one run. The kernel family is
// chosen by the compiler's rule unless forced (tiles or rows).
//   attention_bench [repetitions [case-name filter [auto|tiles|rows]]]
// (a filter starting with '=' selects the case of exactly that name)
#include <edifice/core/autodiff.hpp>
#include <edifice/core/ops.hpp>
#include <edifice/jit/jit.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

using namespace edifice;
namespace o = edifice::ops;

namespace {

Tensor random_tensor(const Shape& s, std::uint64_t seed) {
  Tensor t = Tensor::uninitialized(DType::f32, s);
  float* p = t.data<float>();
  std::uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (std::int64_t i = 0; i < t.numel(); ++i) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    p[i] = static_cast<float>(static_cast<double>(x >> 11) / 9007199254740992.0 * 2 - 1);
  }
  return t;
}

double median_ms(const std::function<void()>& run, int reps) {
  run();  // warm-up
  std::vector<double> ms;
  for (int r = 0; r < reps; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    run();
    ms.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  return std::getenv("BENCH_MIN") ? ms.front() : ms[ms.size() / 2];
}

// Whether query i may attend key j.
bool allowed(std::int64_t i, std::int64_t j, std::int64_t window, bool causal) {
  if (window > 0) return j <= i && j > i - window;
  return !causal || j <= i;
}

// Query-key pairs a mask allows.
double allowed_pairs(std::int64_t s, std::int64_t window, bool causal) {
  double pairs = 0;
  for (std::int64_t i = 0; i < s; ++i) {
    std::int64_t lo = window > 0 ? std::max<std::int64_t>(0, i - window + 1) : 0;
    std::int64_t hi = causal || window > 0 ? i + 1 : s;
    pairs += static_cast<double>(hi - lo);
  }
  return pairs;
}

}  // namespace

int main(int argc, char** argv) {
  const int reps = argc > 1 ? std::atoi(argv[1]) : 10;
  struct Case {
    const char* name;
    std::int64_t batch, heads, seq, hd, window;
    bool causal;
    bool tensor = false;
  } cases[] = {
      {"window 256", 1, 4, 4096, 64, 256, false},
      {"causal", 1, 4, 4096, 64, 0, true},
      {"none", 1, 4, 1024, 64, 0, false},
      {"model: window 60, S 60", 32, 4, 60, 64, 60, false},
      {"window 16, S 60", 32, 4, 60, 64, 16, false},
      {"none, S 16", 64, 4, 16, 64, 0, false},
      {"window 128, S 128", 32, 4, 128, 64, 128, false},
      {"window 256, S 256", 8, 4, 256, 64, 256, false},
      {"window 64, S 512", 4, 4, 512, 64, 64, false},
      {"window 256, tensor", 1, 4, 4096, 64, 256, false, true},
      {"causal, tensor", 1, 4, 4096, 64, 0, true, true},
      {"none, tensor", 1, 4, 1024, 64, 0, false, true},
      {"window 60, S 60, tensor", 32, 4, 60, 64, 60, false, true},
      {"window 16, S 60, tensor", 32, 4, 60, 64, 16, false, true},
      {"none, S 16, tensor", 64, 4, 16, 64, 0, false, true},
      {"none, S 32, tensor", 64, 4, 32, 64, 0, false, true},
      {"window 128, S 128, tensor", 32, 4, 128, 64, 128, false, true},
      {"window 256, S 256, tensor", 8, 4, 256, 64, 256, false, true},
      {"window 64, S 512, tensor", 4, 4, 512, 64, 64, false, true},
      {"window 64, S 1024, tensor", 2, 4, 1024, 64, 64, false, true},
  };
  std::printf("%-26s %-18s %11s %9s %11s %9s %12s\n", "case", "B x h x S x hd", "fwd ms", "GF/s",
              "fwd+bwd ms", "GF/s", "arena bytes");
  const std::string filter = argc > 2 ? argv[2] : "";
  const std::string kernel = argc > 3 ? argv[3] : "auto";
  jit::Options options;
  options.attention_kernel = kernel == "tiles"  ? jit::AttentionKernel::tiles
                             : kernel == "rows" ? jit::AttentionKernel::rows
                                                : jit::AttentionKernel::automatic;
  for (const Case& c : cases) {
    const bool exact = !filter.empty() && filter[0] == '=';
    if (exact ? c.name != filter.substr(1) : std::string(c.name).find(filter) == std::string::npos)
      continue;
    const Shape shape = {c.batch, c.heads, c.seq, c.hd};
    auto q = o::parameter("q", DType::f32, shape);
    auto k = o::parameter("k", DType::f32, shape);
    auto v = o::parameter("v", DType::f32, shape);
    auto g = o::parameter("g", DType::f32, shape);
    const Shape mask_shape = {c.seq, c.seq};
    auto m = o::parameter("mask", DType::u8, mask_shape);
    o::AttentionOptions opt;
    opt.mask = c.tensor       ? o::AttentionMask::from_tensor(m)
               : c.window > 0 ? o::AttentionMask::sliding_window(c.window)
               : c.causal     ? o::AttentionMask::causal()
                              : o::AttentionMask::none();
    Value out = o::attention(q, k, v, opt);
    // Built whole: push_back on a braced vector of Values trips g++ 12's -Warray-bounds.
    const std::vector<Value> fparams =
        c.tensor ? std::vector<Value>{q, k, v, m} : std::vector<Value>{q, k, v};
    const std::vector<Value> bparams =
        c.tensor ? std::vector<Value>{q, k, v, g, m} : std::vector<Value>{q, k, v, g};
    Graph forward(fparams, {out});
    Value loss = o::reduce_sum(o::mul(out, g), {0, 1, 2, 3});
    Graph backward(bparams, grad(loss, {q, k, v}));
    std::vector<Tensor> in = {random_tensor(shape, 1), random_tensor(shape, 2),
                              random_tensor(shape, 3), random_tensor(shape, 4)};
    std::vector<Tensor> fin(in.begin(), in.begin() + 3);
    std::vector<Shape> fshapes = {shape, shape, shape}, bshapes = {shape, shape, shape, shape};
    if (c.tensor) {
      Tensor mask = Tensor::uninitialized(DType::u8, mask_shape);
      for (std::int64_t i = 0; i < c.seq; ++i)
        for (std::int64_t j = 0; j < c.seq; ++j)
          mask.data<std::uint8_t>()[i * c.seq + j] = allowed(i, j, c.window, c.causal) ? 1 : 0;
      fin.push_back(mask), in.push_back(mask);
      fshapes.push_back(mask_shape), bshapes.push_back(mask_shape);
    }
    auto fwd = jit::compile(forward, fshapes, options);
    auto bwd = jit::compile(backward, bshapes, options);
    const double f = median_ms([&] { fwd->run(fin); }, reps);
    const double fb = median_ms([&] { bwd->run(in); }, reps);
    const double pairs = allowed_pairs(c.seq, c.window, c.causal) *
                         static_cast<double>(c.batch * c.heads) * 2.0 * static_cast<double>(c.hd);
    char dims[64];
    std::snprintf(dims, sizeof dims, "%lldx%lldx%lldx%lld", static_cast<long long>(c.batch),
                  static_cast<long long>(c.heads), static_cast<long long>(c.seq),
                  static_cast<long long>(c.hd));
    std::printf("%-26s %-18s %11.3f %9.1f %11.3f %9.1f %12lld\n", c.name, dims, f,
                2 * pairs / f / 1e6, fb, 7 * pairs / fb / 1e6,
                static_cast<long long>(bwd->arena_bytes()));
  }
  return 0;
}
