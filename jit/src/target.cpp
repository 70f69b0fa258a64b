// Host CPU detection for code generation. LLVM's answer is trusted only as far as CPUID and
// XCR0 (the register state the OS saves) confirm it.
#include <edifice/core/error.hpp>
#include <edifice/jit/target.hpp>

#include <llvm/ADT/StringMap.h>
#include <llvm/TargetParser/Host.h>

#include <cpuid.h>
#include <algorithm>
#include <cstdlib>
#include <map>

namespace edifice::jit {
namespace {

struct CpuidFeatures {
  bool sse42 = false, avx = false, avx2 = false, fma = false, avx512f = false, avx512bw = false,
       avx512dq = false, avx512vl = false;
};

std::uint64_t read_xcr0() {
  std::uint32_t lo = 0, hi = 0;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (static_cast<std::uint64_t>(hi) << 32) | lo;
}

CpuidFeatures query_cpuid() {
  CpuidFeatures f;
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  f.sse42 = c & (1u << 20);
  bool osxsave = c & (1u << 27);
  bool avx_bit = c & (1u << 28);
  f.fma = c & (1u << 12);
  std::uint64_t xcr0 = osxsave ? read_xcr0() : 0;
  bool os_avx = (xcr0 & 0x6) == 0x6;       // XMM and YMM state
  bool os_avx512 = (xcr0 & 0xe6) == 0xe6;  // plus opmask, ZMM_Hi256, Hi16_ZMM
  f.avx = avx_bit && os_avx;
  f.fma = f.fma && f.avx;
  if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
    f.avx2 = f.avx && (b & (1u << 5));
    f.avx512f = os_avx512 && (b & (1u << 16));
    f.avx512dq = os_avx512 && (b & (1u << 17));
    f.avx512bw = os_avx512 && (b & (1u << 30));
    f.avx512vl = os_avx512 && (b & (1u << 31));
  }
  return f;
}

Isa parse_isa(const std::string& s) {
  if (s == "avx512") return Isa::avx512;
  if (s == "avx2") return Isa::avx2;
  if (s == "sse4.2") return Isa::sse42;
  if (s == "generic") return Isa::generic;
  fail("EDIFICE_ISA={} is not one of avx512, avx2, sse4.2, generic", s);
}

// Features that belong to levels above `isa`, which must be turned off.
bool above(const std::string& feature, Isa isa) {
  auto starts = [&](std::string_view p) { return feature.rfind(p, 0) == 0; };
  bool avx512_family = starts("avx512") || starts("amx") || starts("avx10") || feature == "evex512";
  if (isa < Isa::avx512 && avx512_family) return true;
  bool avx_family = starts("avx") || feature == "fma" || feature == "fma4" || feature == "f16c" ||
                    feature == "xop" || feature == "vaes" || feature == "vpclmulqdq";
  if (isa < Isa::avx2 && avx_family) return true;
  bool sse4_family = feature == "sse4.1" || feature == "sse4.2" || feature == "ssse3" ||
                     feature == "sse3" || feature == "popcnt" || feature == "sse4a" ||
                     feature == "aes" || feature == "pclmul" || feature == "sha";
  return isa < Isa::sse42 && sse4_family;
}

}  // namespace

std::string isa_name(Isa isa) {
  switch (isa) {
    case Isa::generic:
      return "generic";
    case Isa::sse42:
      return "sse4.2";
    case Isa::avx2:
      return "avx2";
    case Isa::avx512:
      return "avx512";
  }
  return "?";
}

std::string Target::describe() const {
  std::string s = fmt::format("{} {} ({} x f32 lanes)", cpu, isa_name(isa), f32_lanes());
  if (capped) s += fmt::format(", capped by EDIFICE_ISA from host {}", host_cpu);
  if (!corrections.empty()) {
    s += ", CPUID denied:";
    for (const auto& c : corrections) s += " " + c;
  }
  return s;
}

Target detect_target(const std::string& isa_cap) {
  Target t;
  t.triple = llvm::sys::getProcessTriple();
  t.host_cpu = llvm::sys::getHostCPUName().str();
  std::map<std::string, bool> features;
  for (const auto& entry : llvm::sys::getHostCPUFeatures())
    features[entry.getKey().str()] = entry.getValue();

  // Cross-check what matters for code generation against CPUID/XCR0.
  CpuidFeatures cpuid = query_cpuid();
  const std::pair<const char*, bool> confirmed[] = {
      {"sse4.2", cpuid.sse42},      {"avx", cpuid.avx},           {"avx2", cpuid.avx2},
      {"fma", cpuid.fma},           {"avx512f", cpuid.avx512f},   {"avx512bw", cpuid.avx512bw},
      {"avx512dq", cpuid.avx512dq}, {"avx512vl", cpuid.avx512vl},
  };
  for (auto [name, ok] : confirmed)
    if (features[name] && !ok) {
      features[name] = false;
      t.corrections.push_back(name);
    }
  Isa host = Isa::generic;
  if (features["sse4.2"]) host = Isa::sse42;
  if (features["avx2"] && features["fma"]) host = Isa::avx2;
  if (features["avx512f"] && features["avx512bw"] && features["avx512dq"] && features["avx512vl"])
    host = Isa::avx512;
  t.isa = host;
  if (!isa_cap.empty()) t.isa = std::min(host, parse_isa(isa_cap));
  t.capped = t.isa < host;
  // A corrected or capped host gets a generic CPU model so no implied feature sneaks back in.
  static const char* kLevelCpu[] = {"x86-64", "x86-64-v2", "x86-64-v3", "x86-64-v4"};
  t.cpu = (t.capped || !t.corrections.empty()) ? kLevelCpu[static_cast<int>(t.isa)] : t.host_cpu;
  std::string fs;
  for (auto& [name, on] : features) {
    bool enabled = on && !above(name, t.isa);
    fs += (fs.empty() ? "" : ",") + std::string(enabled ? "+" : "-") + name;
  }
  t.features = fs;
  t.vector_bytes = t.isa == Isa::avx512 ? 64 : t.isa == Isa::avx2 ? 32 : 16;
  return t;
}

namespace {
thread_local const Target* scoped_target = nullptr;
}  // namespace

const Target& codegen_target() {
  return scoped_target ? *scoped_target : host_target();
}

CodegenTargetScope::CodegenTargetScope(const Target& target) : previous_(scoped_target) {
  scoped_target = &target;
}

CodegenTargetScope::~CodegenTargetScope() {
  scoped_target = previous_;
}

const Target& host_target() {
  static const Target target = [] {
    const char* cap = std::getenv("EDIFICE_ISA");
    return detect_target(cap ? cap : "");
  }();
  return target;
}

}  // namespace edifice::jit
