// Checks bench's AVX2-only CPUID shim (avx2_only_shim.cpp): run under LD_PRELOAD of the shim
// (the ctest avx2_only_shim does), it executes CPUID and compares with what the kernel reports
// in /proc/cpuinfo. Prints "ok: ..." when AVX-512F and AMX are hidden while AVX2 and FMA stay
// visible, or when there is nothing to check (no AVX-512 on this CPU, or no CPUID faulting for
// the shim to use); "FAIL: ..." and exit 1 otherwise.
#include <cpuid.h>

#include <cstdio>
#include <fstream>
#include <set>
#include <sstream>
#include <string>

namespace {

std::set<std::string> proc_cpuinfo_flags() {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("flags", 0) != 0) continue;
    std::istringstream words(line.substr(line.find(':') + 1));
    std::set<std::string> flags;
    for (std::string w; words >> w;) flags.insert(w);
    return flags;
  }
  return {};
}

}  // namespace

int main() {
  const std::set<std::string> flags = proc_cpuinfo_flags();
  if (!flags.count("avx512f")) {
    std::printf("ok: this CPU has no AVX-512, nothing to hide\n");
    return 0;
  }
  if (!flags.count("cpuid_fault")) {
    std::printf("ok: no CPUID faulting on this CPU, the shim cannot act (it says so)\n");
    return 0;
  }
  unsigned a = 0, b = 0, c = 0, d = 0;
  __cpuid_count(7, 0, a, b, c, d);
  const bool avx512f = b & (1u << 16), avx2 = b & (1u << 5), amx_tile = d & (1u << 24);
  __cpuid(1, a, b, c, d);
  const bool fma = c & (1u << 12);
  if (avx512f || amx_tile || !avx2 || !fma) {
    std::printf(
        "FAIL: CPUID under the shim: avx512f %d amx-tile %d avx2 %d fma %d (want 0 0 1 1)\n",
        avx512f, amx_tile, avx2, fma);
    return 1;
  }
  std::printf("ok: CPUID under the shim hides AVX-512F and AMX, keeps AVX2 and FMA\n");
  return 0;
}
