#!/usr/bin/env bash
# Streaming inference latency (models::multi_head::Stream) against our predict on the window and
# PyTorch re-running the window per frame; writes bench/results/stream_bench.json and the
# "Streaming inference" section of docs/performance.md. A few minutes on 2 cores.
#
#   bash bench/run_stream_bench.sh
#
# PyTorch is Debian's python3-torch for /usr/bin/python3 (bench/setup_peers.sh installs it);
# without it only our figures are reported. Environment: PEER_BENCH_SKIP_BUILD=1 skips the
# build; PEER_BENCH_LOCK (default /tmp/edifice-build.lock) is held per build and measurement.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
source bench/common/locked.sh
if [[ ! -f build/CMakeCache.txt ]]; then
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
fi
if [[ "${PEER_BENCH_SKIP_BUILD:-0}" != 1 ]]; then
  locked cmake --build build --target stream_bench peer_bench
fi
PEER_BENCH_LOCK="$lock" /usr/bin/python3 bench/peers/run_stream.py --build build "$@"
