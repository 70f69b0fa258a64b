// jit_cache_probe CACHE_DIR: compiles cache_test_graph.hpp's graph with the disk cache in
// CACHE_DIR, runs it and prints one line
//   loaded_from_cache=<0|1> checksum=<FNV-1a of every output byte, hex>
// cache_test.cpp runs it twice to check that a second process compiles nothing.
#include "cache_test_graph.hpp"

#include <edifice/jit/jit.hpp>

#include <cstdint>
#include <cstdio>
#include <exception>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s CACHE_DIR\n", argv[0]);
    return 2;
  }
  try {
    edifice::jit::Options options;
    options.cache_dir = argv[1];
    auto inputs = edifice::cache_test::make_inputs(5);
    std::vector<edifice::Shape> shapes;
    for (const auto& t : inputs) shapes.push_back(t.shape());
    auto exe = edifice::jit::compile(edifice::cache_test::make_graph(), shapes, options);
    std::uint64_t h = 1469598103934665603ull;
    for (const auto& t : exe->run(inputs)) {
      const auto* p = static_cast<const unsigned char*>(t.raw_data());
      for (std::size_t i = 0; i < t.nbytes(); ++i) h = (h ^ p[i]) * 1099511628211ull;
    }
    std::printf("loaded_from_cache=%d checksum=%016llx\n", exe->loaded_from_cache() ? 1 : 0,
                static_cast<unsigned long long>(h));
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "jit_cache_probe: %s\n", e.what());
    return 1;
  }
}
