#!/usr/bin/env bash
# Installs every build and test dependency from Debian 12's own archive.
# Idempotent: packages already present are left as they are.
set -euo pipefail

packages=(
  build-essential cmake ninja-build ccache pkg-config
  llvm-19-dev libzstd-dev
  libxtensor-dev xtl-dev libxsimd-dev
  libfmt-dev catch2 nlohmann-json3-dev
  libxxhash-dev zlib1g-dev  # safetensors checksums (xxHash64); PNG compression for plots
  clang-19 libclang-rt-19-dev  # libFuzzer targets (tests/fuzz), run by scripts/test.sh
  libopenblas-dev  # bench/gemm_bench compares the JIT GEMM with OpenBLAS
  libopenmpi-dev openmpi-bin  # data-parallel training over MPI (nn::mpi()) and its tests
  gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user  # export tests: aarch64 artifacts under qemu
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  echo "setup: installing ${missing[*]}"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup: all packages present"
fi
