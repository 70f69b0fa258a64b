#!/usr/bin/env bash
# One command: Edifice against PyTorch and JAX on CPU, on the same models, weights, inputs and
# shapes. Sets up the peers (bench/setup_peers.sh), builds (build/, Release), runs every case
# (each peer's results are checked against ours before anything is timed) and writes
# docs/performance.md and bench/results/peer_bench.json. About 10-15 minutes on 2 cores.
#
#   bash bench/run_peer_bench.sh                 # everything
#   PEER_BENCH_CASES=sw_inf_b1,window_attn bash bench/run_peer_bench.sh   # a subset
#
# Environment: PEER_BENCH_SKIP_SETUP=1 skips the peer setup, PEER_BENCH_SKIP_BUILD=1 the build; PEER_BENCH_SECONDS (default 1.5)
# is the time each measurement fills; PEER_BENCH_LOCK (default /tmp/edifice-build.lock) is the
# lock file held during each build and measurement (empty: none).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
source bench/common/locked.sh

if [[ "${PEER_BENCH_SKIP_SETUP:-0}" != 1 ]]; then
  bash bench/setup_peers.sh
fi

if [[ ! -f build/CMakeCache.txt ]]; then
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
fi
if [[ "${PEER_BENCH_SKIP_BUILD:-0}" != 1 ]]; then
  locked cmake --build build --target peer_bench
fi

PEER_BENCH_LOCK="$lock" /usr/bin/python3 bench/peers/run_all.py --build build \
  --venv build/peer-venv --cases "${PEER_BENCH_CASES:-}"
