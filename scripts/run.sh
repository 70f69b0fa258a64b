#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine, builds the project and runs the main job.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build --target delayed_recall
# The main job: train the default sliding-window model on delayed recall, check the held-out
# accuracy, checkpoint and reload it in a fresh process, and draw the attention heatmap.
mkdir -p out
./build/examples/delayed_recall --out out/delayed_recall
