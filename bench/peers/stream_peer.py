"""PyTorch's side of bench/run_stream_bench.sh: the user's alternative to a streaming runtime,
re-running the sliding-window model on the last 60 frames for every new frame.

    python stream_peer.py CASE DATA_DIR [--threads N] [--frames N] [--idle-reps N]

CASE is sw_inf_b1 or sw_inf_b32 of the peer benchmark (build/bench/peer_bench export DIR
writes their weights, input and our output). The model is peer_bench.py's PyTorch model; it is
first checked against our exported output, then each frame slides the window by one (numpy,
in place: the tensor PyTorch reads shares the array) and runs the model. Reports p50, p99 and
max per-frame latency, and the latency of the first frame after 100 ms idle. The last stdout
line is "RESULT {json}". Benchmark-only: nothing in Edifice depends on this file.
"""

import argparse
import json
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peer_bench  # noqa: E402


def latency(us):
    us = sorted(us)
    n = len(us)
    return {"p50_us": us[n // 2], "p99_us": us[min(n - 1, math.ceil(0.99 * n) - 1)],
            "max_us": us[-1]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("case", choices=["sw_inf_b1", "sw_inf_b32"])
    ap.add_argument("data_dir")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--frames", type=int, default=400)
    ap.add_argument("--idle-reps", type=int, default=10)
    args = ap.parse_args()

    import torch

    cfg, params, tensors = peer_bench.load_case(args.data_dir, args.case)
    run, check = peer_bench.torch_runner(args.case, cfg, params, tensors, args.threads)
    run()
    ok, errs = check()
    x = tensors["x"]  # [B, S, E]; the model's input tensor shares this array
    rng = np.random.default_rng(7)
    frames = rng.uniform(-1, 1, size=(97, x.shape[0], x.shape[2])).astype(np.float32)

    def step(i):
        x[:, :-1] = x[:, 1:].copy()
        x[:, -1] = frames[i % len(frames)]
        run()

    for i in range(2 * x.shape[1]):
        step(i)
    us = []
    for i in range(args.frames):
        t0 = time.perf_counter()
        step(i)
        us.append(1e6 * (time.perf_counter() - t0))
    idle = []
    for i in range(args.idle_reps):
        time.sleep(0.1)
        t0 = time.perf_counter()
        step(i)
        idle.append(1e6 * (time.perf_counter() - t0))
    result = {"case": args.case, "threads": args.threads, "correct": ok, "errors": errs,
              "per_frame": latency(us), "idle_100ms": latency(idle),
              "version": torch.__version__}
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
