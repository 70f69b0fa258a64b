// Compile-time benchmark: the cold compile of a 2-layer transformer-sized training graph
// (forward, backward and the loss: the sliding-window model at E 1024, S 60, nh 4, hd 64,
// F 256) and the warm start of a second process that finds it in the disk cache.
//
//   compile_bench              cold compile in this process, then runs itself again to time
//                              the warm start from the disk cache
#include <edifice/core/autodiff.hpp>
#include <edifice/models/multi_head.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <unistd.h>

using namespace edifice;
namespace mh = edifice::models::multi_head;

namespace {

Graph training_graph() {
  auto built = mh::build_sliding_window({.embed_dim = 1024});
  nn::Model model(built.output);
  nn::TracedModel t = model.trace(nn::Mode::train);
  Value out = t.graph.outputs()[0];
  Value loss = ops::reduce_mean(ops::mul(out, out), {0, 1});
  std::vector<Value> params(t.graph.inputs().begin(),
                            t.graph.inputs().begin() + static_cast<std::ptrdiff_t>(t.param_names.size()));
  std::vector<Value> outs = {loss};
  for (const Value& g : grad(loss, params)) outs.push_back(g);
  return Graph(t.graph.inputs(), outs);
}

double compile_seconds(const std::string& cache_dir, bool* from_cache, std::size_t* kernels) {
  Graph g = training_graph();
  std::vector<Shape> shapes;
  for (const Value& in : g.inputs()) {
    Shape s = in.shape();
    for (auto& d : s)
      if (d == kDynamic) d = 32;
    shapes.push_back(s);
  }
  auto start = std::chrono::steady_clock::now();
  auto exe = jit::compile(g, shapes, {.cache_dir = cache_dir});
  double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  *from_cache = exe->loaded_from_cache();
  *kernels = exe->kernels().size();
  return t;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 3 && std::string(argv[1]) == "--warm") {
    bool cached = false;
    std::size_t kernels = 0;
    double t = compile_seconds(argv[2], &cached, &kernels);
    std::printf("%.6f %d\n", t, cached ? 1 : 0);
    return 0;
  }
  auto dir = std::filesystem::temp_directory_path() / ("edifice-compile-bench-" + std::to_string(::getpid()));
  bool cached = false;
  std::size_t kernels = 0;
  double cold = compile_seconds(dir.string(), &cached, &kernels);
  std::string cmd = std::string(argv[0]) + " --warm " + dir.string();
  FILE* p = ::popen(cmd.c_str(), "r");
  double warm = -1;
  int hit = 0;
  if (p) {
    if (std::fscanf(p, "%lf %d", &warm, &hit) != 2) warm = -1;
    ::pclose(p);
  }
  std::filesystem::remove_all(dir);
  std::printf("compile bench: sliding-window model E1024 S60 nh4 hd64 L2 F256, batch 32, "
              "forward + backward graph, %zu kernels\n",
              kernels);
  std::printf("  cold compile (this process, empty disk cache): %8.1f ms   target <= 1000 ms\n",
              cold * 1e3);
  std::printf("  warm start (second process, disk cache %s):      %8.1f ms   target <= 50 ms\n",
              hit ? "hit " : "MISS", warm * 1e3);
  return 0;
}
