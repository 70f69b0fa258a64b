#!/usr/bin/env bash
# Installs the build tree into a temporary prefix and builds and runs a consumer project that
# uses find_package(edifice CONFIG) and links edifice::edifice.
set -euo pipefail
build_dir="$1"
source_dir="$2"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cmake --install "$build_dir" --prefix "$work/prefix" > "$work/install.log"
cmake -S "$source_dir/tests/consumer" -B "$work/build" -G Ninja \
  -DCMAKE_PREFIX_PATH="$work/prefix" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_CXX_FLAGS="${EDIFICE_CONSUMER_FLAGS:-}" -DCMAKE_EXE_LINKER_FLAGS="${EDIFICE_CONSUMER_FLAGS:-}" > "$work/configure.log"
cmake --build "$work/build" > "$work/build.log"
"$work/build/consumer"
