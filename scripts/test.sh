#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine, builds everything and runs every test twice: once in a
# Release build and once with AddressSanitizer + UndefinedBehaviorSanitizer; then runs the
# libFuzzer targets (safetensors parser, checkpoint loading) for 60 s each when clang can build
# them (skipped with a message otherwise).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

run_suite() {
  local dir="$1"; shift
  cmake -S . -B "$dir" -G Ninja "$@"
  cmake --build "$dir"
  (cd "$dir" && ctest --no-tests=error --output-on-failure --timeout 1200)
}

echo "== Release build and tests (build/)"
run_suite build -DCMAKE_BUILD_TYPE=Release

echo "== ASan + UBSan build and tests (build-asan/)"
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:strict_string_checks=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
run_suite build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DEDIFICE_SANITIZE=ON

echo "== Fuzzing: safetensors parser and checkpoint loading, 60 s each (build-fuzz/)"
bash tests/fuzz/run_fuzz.sh 60
