#!/usr/bin/env bash
# One command: Edifice against OpenVINO, ONNX Runtime, PyTorch and JAX on CPU, on the same
# models, weights, inputs and shapes. Sets up the peers (bench/setup_peers.sh), builds (build/,
# Release), runs every case in interleaved rounds (each peer's results are checked against ours
# before anything is timed) and writes docs/performance.md and bench/results/peer_bench.json.
# About 10-15 minutes on 2 cores.
#
#   bash bench/run_peer_bench.sh                   # everything
#   bash bench/run_peer_bench.sh --rotate-baseline # first make the current JSON the baseline
#   PEER_BENCH_CASES=sw_inf_b1,window_attn bash bench/run_peer_bench.sh   # a subset
#
# Baseline: the page compares ours with bench/results/peer_bench.baseline.json, a fixed
# reference. It changes only with --rotate-baseline (the current peer_bench.json, i.e. the
# previous run, is copied over it before measuring) or when it does not exist yet (then the
# current JSON, if any, becomes it). So reruns after a change compare against the same run.
#
# Environment: PEER_BENCH_SKIP_SETUP=1 skips the peer setup, PEER_BENCH_SKIP_BUILD=1 the build;
# PEER_BENCH_ROUNDS (default 7) and PEER_BENCH_SLICE (seconds, default 0.5) set the interleaved
# rounds; PEER_BENCH_LOCK (default /tmp/edifice-build.lock) is the lock file held during each
# build, round and measurement (empty: none).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
source bench/common/locked.sh

rotate=0
for arg in "$@"; do
  case "$arg" in
    --rotate-baseline) rotate=1 ;;
    *) echo "usage: bash bench/run_peer_bench.sh [--rotate-baseline]" >&2; exit 2 ;;
  esac
done
current=bench/results/peer_bench.json
baseline=bench/results/peer_bench.baseline.json
if [[ -f "$current" ]] && { ((rotate)) || [[ ! -f "$baseline" ]]; }; then
  cp "$current" "$baseline"
  echo "run_peer_bench: $current (the previous run) is now the baseline $baseline"
fi

if [[ "${PEER_BENCH_SKIP_SETUP:-0}" != 1 ]]; then
  bash bench/setup_peers.sh
fi

if [[ ! -f build/CMakeCache.txt ]]; then
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
fi
if [[ "${PEER_BENCH_SKIP_BUILD:-0}" != 1 ]]; then
  locked cmake --build build --target peer_bench edifice_avx2_only
fi

PEER_BENCH_LOCK="$lock" /usr/bin/python3 bench/peers/run_all.py --build build \
  --venv build/peer-venv --cases "${PEER_BENCH_CASES:-}"
