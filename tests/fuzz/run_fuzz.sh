#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (apart from the g++ builds: only the parser sources
# they need, with ASan and UBSan) and runs each for a bounded time from its seed corpus.
#
#   tests/fuzz/run_fuzz.sh [SECONDS]     run each target SECONDS (default 60)
#   tests/fuzz/run_fuzz.sh --make-seeds  rewrite the committed seed corpora (corpus/)
#
# Without a clang++ that links -fsanitize=fuzzer, prints why and exits 0 (skipped).
# Build and working corpora go to $FUZZ_BUILD_DIR (default build-fuzz/); findings to
# build-fuzz/artifacts/. Exits non-zero if a target crashes, leaks or trips a sanitizer.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${FUZZ_BUILD_DIR:-$root/build-fuzz}"
mode="${1:-60}"

cxx=""
for c in ${FUZZ_CXX:-} clang++-19 clang++; do
  command -v "$c" > /dev/null 2>&1 || continue
  # libFuzzer and C++20's <source_location> (clang 15 or later with libstdc++ 12) must work.
  probe="$(mktemp -d)"
  printf '#include <source_location>\n#include <cstdint>\n#include <cstddef>\nextern "C" int LLVMFuzzerTestOneInput(const std::uint8_t*, std::size_t) { return std::source_location::current().line() > 0 ? 0 : 1; }\n' > "$probe/p.cpp"
  if "$c" -std=c++20 -fsanitize=fuzzer "$probe/p.cpp" -o "$probe/p" > /dev/null 2>&1; then
    cxx="$c"
  fi
  rm -rf "$probe"
  [ -n "$cxx" ] && break
done
if [ -z "$cxx" ]; then
  echo "fuzz: skipped: no clang++ that builds libFuzzer targets with C++20 (scripts/setup.sh" \
       "installs clang-19 and libclang-rt-19-dev)"
  exit 0
fi

# The parser and checkpoint code and what it uses of core: nothing of the JIT or LLVM.
sources=(nn/src/safetensors.cpp nn/src/checkpoint.cpp nn/src/atomic_file.cpp
         core/src/tensor.cpp core/src/shape.cpp)
flags=(-std=c++20 -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined
       -fno-sanitize-recover=undefined -I"$root/core/include" -I"$root/nn/include"
       -I"$root/jit/include")
mkdir -p "$out/obj" "$out/artifacts"
objects=()
for s in "${sources[@]}"; do
  o="$out/obj/$(echo "$s" | tr / _).o"
  if [ ! -f "$o" ] || [ "$root/$s" -nt "$o" ] || [ "$here/run_fuzz.sh" -nt "$o" ] ||
     [ -n "$(find "$root/core/include" "$root/nn/include" -newer "$o" -name '*.hpp' | head -1)" ]; then
    "$cxx" "${flags[@]}" -fsanitize=fuzzer-no-link -c "$root/$s" -o "$o"
  fi
  objects+=("$o")
done

if [ "$mode" = "--make-seeds" ]; then
  "$cxx" "${flags[@]}" "$here/make_seeds.cpp" "${objects[@]}" -lfmt -o "$out/make_seeds"
  rm -f "$here"/corpus/safetensors/* "$here"/corpus/checkpoint/*
  mkdir -p "$here/corpus/safetensors" "$here/corpus/checkpoint"
  "$out/make_seeds" "$here/corpus/safetensors" "$here/corpus/checkpoint"
  exit 0
fi

for target in safetensors checkpoint; do
  "$cxx" "${flags[@]}" -fsanitize=fuzzer "$here/${target}_fuzz.cpp" "${objects[@]}" -lfmt \
    -o "$out/${target}_fuzz"
  # New inputs go to the working corpus; the committed seeds stay as they are.
  mkdir -p "$out/corpus/$target"
  echo "fuzz: ${target}_fuzz for ${mode} s ($cxx)"
  log="$out/${target}_fuzz.log"
  if ! "$out/${target}_fuzz" -max_total_time="$mode" -rss_limit_mb=2048 -max_len=16384 \
    -print_final_stats=1 -artifact_prefix="$out/artifacts/${target}-" \
    "$out/corpus/$target" "$here/corpus/$target" > "$log" 2>&1; then
    tail -n 80 "$log"
    echo "fuzz: ${target}_fuzz FAILED (full log: $log; the input is in $out/artifacts/)"
    exit 1
  fi
  grep -E "^Done|new_units_added|peak_rss_mb" "$log" || true
  echo "fuzz: ${target}_fuzz: no crash in ${mode} s"
done
