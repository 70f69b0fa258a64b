// An LD_PRELOAD library that shows the process an AVX2-only x86-64 CPU on an AVX-512 machine:
// the CPUID instruction is made to fault (Linux's ARCH_SET_CPUID, on CPUs with CPUID faulting,
// /proc/cpuinfo flag "cpuid_fault"), and the fault handler runs the real CPUID with the AVX-512,
// AMX, AVX-VNNI and AVX10 bits cleared. Every library that dispatches on CPUID then takes the
// path it would take on an AVX2 machine: oneDNN and OpenVINO's own kernels, ONNX Runtime's and
// OpenVINO's MLAS, OpenBLAS, PyTorch's ATen, XLA's LLVM, numpy. (Environment variables such as
// ONEDNN_MAX_CPU_ISA cap only some of them: OpenVINO's MLAS GEMMs ignore it.) Used by
// bench/peers/run_all.py for the peers of the AVX2 rows; never linked into Edifice.
//
//   LD_PRELOAD=build/bench/libedifice_avx2_only.so python3 ...
//
// glibc chose its own string functions before this library loads; GLIBC_TUNABLES caps those.
// The setting is per thread, inherited by threads and forks, reset by execve (LD_PRELOAD then
// applies it again). Without CPUID faulting the constructor says so and changes nothing.
#include <asm/prctl.h>
#include <cpuid.h>
#include <signal.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>

namespace {

constexpr std::uint32_t bit(int n) {
  return 1u << n;
}

// CPUID.(EAX=7,ECX=0): AVX512F, DQ, IFMA, PF, ER, CD, BW, VL (EBX); VBMI, VBMI2, VNNI, BITALG,
// VPOPCNTDQ (ECX); 4VNNIW, 4FMAPS, VP2INTERSECT, AMX-BF16, AVX512-FP16, AMX-TILE, AMX-INT8 (EDX).
constexpr std::uint32_t kLeaf7Ebx =
    bit(16) | bit(17) | bit(21) | bit(26) | bit(27) | bit(28) | bit(30) | bit(31);
constexpr std::uint32_t kLeaf7Ecx = bit(1) | bit(6) | bit(11) | bit(12) | bit(14);
constexpr std::uint32_t kLeaf7Edx =
    bit(2) | bit(3) | bit(8) | bit(22) | bit(23) | bit(24) | bit(25);
// CPUID.(EAX=7,ECX=1): AVX-VNNI, AVX512-BF16, AMX-FP16 (EAX); AVX10 (EDX).
constexpr std::uint32_t kLeaf7Sub1Eax = bit(4) | bit(5) | bit(21);
constexpr std::uint32_t kLeaf7Sub1Edx = bit(19);
// CPUID.(EAX=0xD,ECX=0): the XSAVE components opmask, ZMM_Hi256, Hi16_ZMM, AMX tiles.
constexpr std::uint32_t kLeafDEax = bit(5) | bit(6) | bit(7) | bit(17) | bit(18);

bool cpuid_faults(bool on) {
  return syscall(SYS_arch_prctl, ARCH_SET_CPUID, on ? 0 : 1) == 0;
}

void masked_cpuid(std::uint32_t leaf, std::uint32_t sub, std::uint32_t r[4]) {
  __cpuid_count(leaf, sub, r[0], r[1], r[2], r[3]);
  if (leaf == 7 && sub == 0) {
    r[1] &= ~kLeaf7Ebx, r[2] &= ~kLeaf7Ecx, r[3] &= ~kLeaf7Edx;
  } else if (leaf == 7 && sub == 1) {
    r[0] &= ~kLeaf7Sub1Eax, r[3] &= ~kLeaf7Sub1Edx;
  } else if (leaf == 0xD && sub == 0) {
    r[0] &= ~kLeafDEax;
  } else if (leaf == 0x24) {  // AVX10 description
    r[0] = r[1] = r[2] = r[3] = 0;
  }
}

// A faulting CPUID arrives as SIGSEGV with si_code SI_KERNEL (a #GP) at the instruction 0F A2:
// run it unmasked, clear the bits, write the registers and step over it. Anything else gets
// the default action (the fault repeats and the process dies as it would have).
void on_segv(int, siginfo_t* info, void* context) {
  auto* uc = static_cast<ucontext_t*>(context);
  greg_t* g = uc->uc_mcontext.gregs;
  const auto* ip = reinterpret_cast<const unsigned char*>(g[REG_RIP]);
  if (info->si_code != SI_KERNEL || ip[0] != 0x0F || ip[1] != 0xA2) {
    signal(SIGSEGV, SIG_DFL);
    return;
  }
  std::uint32_t r[4];
  cpuid_faults(false);
  masked_cpuid(static_cast<std::uint32_t>(g[REG_RAX]), static_cast<std::uint32_t>(g[REG_RCX]), r);
  cpuid_faults(true);
  g[REG_RAX] = r[0], g[REG_RBX] = r[1], g[REG_RCX] = r[2], g[REG_RDX] = r[3];
  g[REG_RIP] += 2;
}

__attribute__((constructor)) void install() {
  struct sigaction sa = {};
  sa.sa_sigaction = on_segv;
  sa.sa_flags = SA_SIGINFO;
  sigemptyset(&sa.sa_mask);
  if (sigaction(SIGSEGV, &sa, nullptr) != 0 || !cpuid_faults(true)) {
    std::fprintf(stderr, "avx2_only_shim: CPUID faulting unavailable; the CPU is not masked\n");
    if (std::getenv("AVX2_ONLY_SHIM_REQUIRED")) std::_Exit(3);
  }
}

}  // namespace
