#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine, builds the project and runs the main job.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build
./build/examples/graph_demo
