"""Runs every case of the peer benchmark and writes docs/performance.md and
bench/results/peer_bench.json. Called by bench/run_peer_bench.sh (which sets up the peers and
builds first); see that script for the one command.

Every measurement is its own process (ours: build/bench/peer_bench; peers:
bench/peers/peer_bench.py), run while holding the lock file PEER_BENCH_LOCK (default
/tmp/edifice-build.lock, shared with builds so that no build runs during a measurement; empty
disables it). The lock is taken per measurement, never across the whole run.
"""

import argparse
import datetime
import fcntl
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PEER = os.path.join(ROOT, "bench", "peers", "peer_bench.py")
SYSTEM_PY = "/usr/bin/python3"

# ---- the cases ----

E, S, NH, HD, L, F, W, U = 1024, 60, 4, 64, 2, 256, 60, 256
H = NH * HD
AS, AW = 4096, 256

CASES = [
    {"id": "sw_inf_b1", "name": "sliding-window model, inference, batch 1",
     "shape": "B 1, E 1024, S 60, nh 4, hd 64, L 2, FFN 256, window 60", "target": 4.0},
    {"id": "sw_inf_b32", "name": "sliding-window model, inference, batch 32",
     "shape": "B 32, same model", "target": 2.0},
    {"id": "sw_train_b32", "name": "sliding-window model, training step (fwd, bwd, Adam), MSE",
     "shape": "B 32, same model", "target": 2.0},
    {"id": "hybrid_train_b32", "name": "hybrid LSTM + attention model, training step, MSE",
     "shape": "B 32, E 1024, S 60, LSTM U 256, nh 4, hd 64", "target": 1.5},
    {"id": "window_attn", "name": "window attention alone, forward + backward",
     "shape": "B 1, S 4096, window 256, nh 4, hd 64, f32", "target": 20.0},
]
MEM_CASES = {"sw_train_b32": 0.5, "hybrid_train_b32": None, "window_attn": 0.1}


def band_pairs(s, w):
    """(query, key) pairs a window-w causal mask allows over s positions."""
    return sum(min(i + 1, w) for i in range(s))


def flops(case_id):
    """Analytic FLOPs of one run: GEMMs as 2 M N K; attention's two GEMMs (q.k^T and p.v) only
    over the allowed (query, key) pairs; softmax, layer norm, GELU, LSTM gates and Adam not
    counted. Backward = 2 x forward GEMMs (one for the input gradient, one for the weight
    gradient), except the input gradient of the first dense layer, which no one needs."""
    if case_id.startswith("sw_"):
        b = 1 if case_id == "sw_inf_b1" else 32
        proj = 2 * b * S * E * H
        layer = 2 * b * S * H * 3 * H + 2 * b * S * H * F + 2 * b * S * F * H
        attn = 2 * 2 * band_pairs(S, W) * HD * NH * b
        fwd = proj + L * (layer + attn)
        return fwd if "inf" in case_id else 3 * fwd - proj
    if case_id.startswith("hybrid"):
        b = 32
        lstm = 2 * b * S * E * 4 * U + 2 * b * S * U * 4 * U
        dense = 2 * b * S * U * H + 2 * b * S * H * 3 * H + 2 * b * S * H * H
        attn = 2 * 2 * band_pairs(S, S) * HD * NH * b
        # The LSTM's input gradient is needed (the input layer norm has parameters).
        return 3 * (lstm + dense + attn)
    # window attention: forward q.k^T, p.v; backward dv, dp, dq, dk: 6 band GEMMs.
    return 6 * 2 * band_pairs(AS, AW) * HD * NH


# ---- running measurements ----


class Lock:
    def __init__(self, path):
        self.path = path
        self.f = None

    def __enter__(self):
        if self.path:
            self.f = open(self.path, "a")
            fcntl.flock(self.f, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        if self.f:
            fcntl.flock(self.f, fcntl.LOCK_UN)
            self.f.close()


def run(cmd, env_extra, lock, timeout=900, what=""):
    env = dict(os.environ)
    env.update(env_extra)
    t0 = time.time()
    with Lock(lock):
        load = os.getloadavg()[0]
        try:
            p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            print("  %-48s TIMEOUT after %d s" % (what, timeout), flush=True)
            return {"error": "timeout after %d s" % timeout}
    dt = time.time() - t0
    result = None
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT "):])
    if p.returncode != 0 or result is None:
        tail = (p.stderr or p.stdout).strip().splitlines()[-5:]
        print("  %-48s FAILED (exit %d): %s" % (what, p.returncode, " | ".join(tail)), flush=True)
        return {"error": "exit %d: %s" % (p.returncode, " | ".join(tail))}
    result["loadavg_1min_before"] = load
    summary = ""
    if "median_s" in result:
        summary = "median %.4g s x%d, cpu %.2f" % (result["median_s"], result["reps"],
                                                   result.get("cpu_util", 0))
    if "correct" in result and not result["correct"]:
        summary = "FAILED correctness %s" % json.dumps(result["errors"])
    if "peak_rss_bytes" in result:
        summary = "peak %.0f MB (before %.0f MB)" % (result["peak_rss_bytes"] / 2**20,
                                                     result["rss_before_bytes"] / 2**20)
    if "compile_s" in result:
        summary = "%.3f s (from cache: %s)" % (result["compile_s"], result["from_cache"])
    print("  %-48s %s  [%.0f s]" % (what, summary, dt), flush=True)
    return result


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_state():
    """The commit measured and whether the working tree had changes (read-only git calls)."""
    try:
        head = subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip() != ""
        return {"commit": head, "uncommitted_changes": dirty}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "uncommitted_changes": None}


def fmt_ms(s):
    if s is None:
        return "n/a"
    ms = s * 1e3
    return "%.3g ms" % ms if ms < 100 else "%.0f ms" % ms


def fmt_mb(b):
    return "n/a" if b is None else "%.0f MB" % (b / 2**20)


def best(results):
    """The fastest correct timing among `results` (dicts), or None."""
    ok = [r for r in results if r and "median_s" in r]
    return min(ok, key=lambda r: r["median_s"]) if ok else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--venv", default=os.path.join(ROOT, "build", "peer-venv"))
    ap.add_argument("--markdown", default=os.path.join(ROOT, "docs", "performance.md"))
    ap.add_argument("--json", default=os.path.join(ROOT, "bench", "results", "peer_bench.json"))
    ap.add_argument("--cases", default="", help="comma-separated case ids (default: all)")
    ap.add_argument("--from-json", default="",
                    help="only re-render the markdown from a JSON report (no measurements)")
    args = ap.parse_args()
    if args.from_json:
        with open(args.from_json) as f:
            report = json.load(f)
        summarise(report)
        write_markdown(args.markdown, markdown(report))
        return

    lock = os.environ.get("PEER_BENCH_LOCK", "/tmp/edifice-build.lock")
    ours = os.path.join(args.build, "bench", "peer_bench")
    jax_py = os.path.join(args.venv, "bin", "python")
    have_jax = os.path.exists(jax_py) and subprocess.run(
        [jax_py, "-c", "import jax"], capture_output=True).returncode == 0
    cases = [c for c in CASES if not args.cases or c["id"] in args.cases.split(",")]
    started = time.time()

    work = tempfile.mkdtemp(prefix="edifice-peer-bench-")
    data = os.path.join(work, "data")
    cache = os.path.join(work, "cache")
    os.makedirs(cache, mode=0o700)
    ours_env = {"EDIFICE_CACHE_DIR": cache}
    # A private copy of our binary: a build that relinks build/bench/peer_bench between two
    # measurements (other work in the same tree) cannot mix two versions in one report.
    shutil.copy2(ours, os.path.join(work, "peer_bench"))
    ours = os.path.join(work, "peer_bench")
    report = {"cases": {}, "notes": []}
    try:
        print("machine", flush=True)
        machine = run([ours, "machine"], {}, lock, what="FMA peak")
        if "error" in machine:
            sys.exit("peer_bench machine failed: %s" % machine["error"])
        print("export (Edifice initialises the models and writes weights, inputs, results)",
              flush=True)
        with Lock(lock):
            subprocess.run([ours, "export", data], env={**os.environ, **ours_env}, check=True)

        torch_version = jax_version = None
        for c in cases:
            cid = c["id"]
            print(cid, flush=True)
            entry = {"name": c["name"], "shape": c["shape"], "target_speedup_vs_torch": c["target"],
                     "flops": flops(cid)}
            # Compile times: cold (empty cache directory), then cached (a second process).
            cdir = os.path.join(work, "compile-" + cid)
            os.makedirs(cdir, mode=0o700)
            cold = run([ours, "compile", cid, cdir], {}, lock, what="compile cold")
            warm = run([ours, "compile", cid, cdir], {}, lock, what="compile cached")
            shutil.rmtree(cdir, ignore_errors=True)
            entry["compile"] = {"cold": cold, "cached": warm}

            timings = {"edifice": [], "torch": [], "jax": []}
            for n in (2, 1):
                timings["edifice"].append(run([ours, "time", cid, data],
                                              {**ours_env, "EDIFICE_THREADS": str(n)}, lock,
                                              what="edifice %d thr" % n))
            for n in (2, 1):
                r = run([SYSTEM_PY, PEER, "torch", "time", cid, data, "--threads", str(n)],
                        {"OPENBLAS_NUM_THREADS": str(n), "OMP_NUM_THREADS": str(n)}, lock,
                        what="pytorch %d thr" % n)
                timings["torch"].append(r)
                torch_version = r.get("version", torch_version)
            if have_jax:
                for label, flags in (("default", ""), ("1", "--xla_cpu_multi_thread_eigen=false "
                                                          "intra_op_parallelism_threads=1")):
                    env = {"XLA_FLAGS": flags} if flags else {}
                    # XLA's CPU runtime does not always honour those flags: the single-thread
                    # run is also pinned to one core.
                    pin = ["taskset", "-c", "0"] if flags and shutil.which("taskset") else []
                    r = run(pin + [jax_py, PEER, "jax", "time", cid, data], env, lock,
                            what="jax %s thr" % label)
                    if flags and "threads" in r:
                        r["threads"] = 1
                    timings["jax"].append(r)
                    jax_version = r.get("version", jax_version)
            entry["runs"] = timings

            if cid in MEM_CASES:
                mem = {"edifice": run([ours, "mem", cid, data], ours_env, lock,
                                      what="memory edifice"),
                       "torch": run([SYSTEM_PY, PEER, "torch", "mem", cid, data],
                                    {"OPENBLAS_NUM_THREADS": "2"}, lock, what="memory pytorch")}
                if have_jax:
                    mem["jax"] = run([jax_py, PEER, "jax", "mem", cid, data], {}, lock,
                                     what="memory jax")
                entry["memory"] = mem
                entry["memory_target_vs_torch"] = MEM_CASES[cid]
            report["cases"][cid] = entry
    finally:
        shutil.rmtree(work, ignore_errors=True)

    report["machine"] = {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "edifice_target": machine.get("target"),
        "edifice_isa": machine.get("isa"),
        "fma_peak_gflops_1_thread": machine.get("peak_gflops_1"),
        "fma_peak_gflops_all_threads": machine.get("peak_gflops_all"),
        "kernel": platform.release(),
    }
    report["versions"] = {"torch": torch_version, "jax": jax_version if have_jax else None,
                          "python": platform.python_version()}
    report["git"] = git_state()
    report["date_utc"] = datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M UTC")
    report["wall_seconds"] = round(time.time() - started, 1)
    report["have_jax"] = have_jax
    summarise(report)
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(report, f, indent=1)
        f.write("\n")
    write_markdown(args.markdown, markdown(report))
    print("wrote %s and %s (%.0f s)" % (args.markdown, args.json, time.time() - started))


def write_markdown(path, text):
    """Writes the page, keeping the sections other tools own: every block from a line
    "<!-- NAME: begin ... -->" to "<!-- NAME: end -->" (streaming, thread scaling, ...)."""
    if os.path.exists(path):
        old = open(path).read()
        blocks = re.findall(r"<!-- ([\w-]+): begin.*?<!-- \1: end -->", old, flags=re.S)
        for name in blocks:
            match = re.search(r"<!-- %s: begin.*?<!-- %s: end -->" % (re.escape(name), re.escape(name)),
                              old, flags=re.S)
            text = text.rstrip("\n") + "\n\n" + match.group(0) + "\n"
    with open(path, "w") as f:
        f.write(text)


def summarise(report):
    """Adds the derived figures (best times, ratios, met, GFLOP/s) to each case."""
    m = report["machine"]
    for cid, e in report["cases"].items():
        runs = e["runs"]
        s = {}
        ob = best(runs["edifice"])
        tb = best([r for r in runs["torch"] if r.get("correct")])
        jb = best([r for r in runs["jax"] if r.get("correct")])
        s["edifice_best_s"] = ob and ob["median_s"]
        s["edifice_best_threads"] = ob and ob["threads"]
        for fw, b in (("torch", tb), ("jax", jb)):
            s[fw + "_best_s"] = b and b["median_s"]
            s[fw + "_best_threads"] = b and b["threads"]
            checked = [r for r in runs[fw] if r and "correct" in r]
            s[fw + "_status"] = ("not run" if not runs[fw] else
                                 "error" if not checked else
                                 "FAILED (correctness)" if not all(r["correct"] for r in checked)
                                 else "ok")
            s["speedup_vs_" + fw] = (b["median_s"] / ob["median_s"]) if (b and ob) else None
        sp = s["speedup_vs_torch"]
        s["target_met"] = None if sp is None else sp >= e["target_speedup_vs_torch"]
        if ob:
            gf = e["flops"] / ob["median_s"] / 1e9
            peak = (m["fma_peak_gflops_1_thread"] if ob["threads"] == 1
                    else m["fma_peak_gflops_all_threads"])
            s["edifice_gflops"] = gf
            s["edifice_percent_of_peak"] = 100 * gf / peak if peak else None
        for fw, b in (("torch", tb), ("jax", jb)):
            s[fw + "_gflops"] = e["flops"] / b["median_s"] / 1e9 if b else None
        if "memory" in e:
            mem = e["memory"]
            o, t = mem.get("edifice", {}), mem.get("torch", {})
            ratio = None
            if "peak_rss_bytes" in o and "peak_rss_bytes" in t:
                ratio = o["peak_rss_bytes"] / t["peak_rss_bytes"]
            s["memory_ratio_vs_torch"] = ratio
            tgt = e.get("memory_target_vs_torch")
            s["memory_target_met"] = None if (ratio is None or tgt is None) else ratio <= tgt
        e["summary"] = s


def markdown(r):
    m = r["machine"]
    out = []
    w = out.append
    w("# Performance: Edifice against PyTorch and JAX on CPU\n")
    w("Generated by `bash bench/run_peer_bench.sh` on %s (%s s); do not edit by hand. The same "
      "figures are in `bench/results/peer_bench.json`.\n" % (r["date_utc"], r["wall_seconds"]))
    w("## Machine\n")
    w("| | |\n|---|---|")
    w("| CPU | %s (`/proc/cpuinfo`), %s hardware threads |" % (m["cpu_model"], m["cores"]))
    w("| Edifice JIT target | %s |" % m["edifice_target"])
    w("| measured f32 FMA peak | %.1f GFLOP/s on 1 thread, %.1f GFLOP/s on %s threads "
      "(bench/common/fma_peak.hpp, as gemm_bench) |" % (
          m["fma_peak_gflops_1_thread"] or 0, m["fma_peak_gflops_all_threads"] or 0, m["cores"]))
    w("| PyTorch | %s (Debian python3-torch, /usr/bin/python3; matmuls go to Debian's OpenBLAS) |"
      % (r["versions"]["torch"] or "n/a"))
    w("| JAX | %s |" % (("%s (pip, CPU, in build/peer-venv)" % r["versions"]["jax"])
                         if r["have_jax"] else "not installed: JAX columns skipped"))
    g = r.get("git", {})
    w("| Linux | %s |" % m["kernel"])
    w("| Edifice source | commit %s%s |\n" % (
        (g.get("commit") or "unknown")[:12],
        " with uncommitted changes" if g.get("uncommitted_changes") else ""))

    w("## Targets\n")
    w("| target | measured | met |\n|---|---|---|")
    yn = {True: "yes", False: "**no**", None: "n/a"}
    for cid, e in r["cases"].items():
        s = e["summary"]
        sp = s["speedup_vs_torch"]
        w("| %s: >= %gx faster than PyTorch | %s | %s |" % (
            e["name"], e["target_speedup_vs_torch"], "%.2fx" % sp if sp is not None else "n/a",
            yn[s["target_met"]]))
        if e.get("memory_target_vs_torch"):
            mr = s.get("memory_ratio_vs_torch")
            w("| %s: peak resident memory <= %g x PyTorch's | %s | %s |" % (
                e["name"], e["memory_target_vs_torch"], "%.2fx" % mr if mr is not None else "n/a",
                yn[s.get("memory_target_met")]))
    w("")
    w("## Speed\n")
    w("Median wall time of one run (one inference, one training step, one attention forward + "
      "backward) after warm-up; each figure is the median of as many runs as fill about 1.5 s "
      "(at least 3 or 5). \"Best\" is the faster of the two thread settings; the ratio columns "
      "are the peer's best time over ours (higher = Edifice faster).\n")
    w("| case | shape | ours 2 thr | ours 1 thr | PyTorch best (thr) | JAX best (thr) | "
      "vs PyTorch | target | met | vs JAX | ours GFLOP/s (nominal) | % of peak (nominal) |")
    w("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for cid, e in r["cases"].items():
        s = e["summary"]
        ours = {x.get("threads"): x for x in e["runs"]["edifice"] if x and "median_s" in x}

        def peer(fw):
            if s[fw + "_status"] == "not run":
                return "not run"
            if s[fw + "_status"] != "ok" and s[fw + "_best_s"] is None:
                return s[fw + "_status"]
            txt = "%s (%s)" % (fmt_ms(s[fw + "_best_s"]), s[fw + "_best_threads"])
            if s[fw + "_status"] != "ok":
                txt += " " + s[fw + "_status"]
            return txt

        def ratio(fw):
            v = s["speedup_vs_" + fw]
            return "%.2fx" % v if v is not None else "n/a"

        met = {True: "yes", False: "**no**", None: "n/a"}[s["target_met"]]
        w("| %s | %s | %s | %s | %s | %s | %s | >= %gx | %s | %s | %s | %s |" % (
            e["name"], e["shape"], fmt_ms(ours.get(2, {}).get("median_s")),
            fmt_ms(ours.get(1, {}).get("median_s")), peer("torch"), peer("jax"), ratio("torch"),
            e["target_speedup_vs_torch"], met, ratio("jax"),
            "%.1f" % s["edifice_gflops"] if s.get("edifice_gflops") else "n/a",
            "%.0f%%" % s["edifice_percent_of_peak"] if s.get("edifice_percent_of_peak") else "n/a"))
    w("")
    w("GFLOP/s at each framework's best, from one nominal FLOP count per case (see How it is "
      "measured):\n")
    w("| case | FLOPs per run | ours | PyTorch | JAX |\n|---|---|---|---|---|")
    for cid, e in r["cases"].items():
        s = e["summary"]
        g = lambda v: "%.1f" % v if v else "n/a"
        w("| %s | %.3g | %s | %s | %s |" % (cid, e["flops"], g(s.get("edifice_gflops")),
                                            g(s.get("torch_gflops")), g(s.get("jax_gflops"))))
    w("")

    w("## Correctness (checked before timing)\n")
    w("Each peer first runs the case on Edifice's exported weights and inputs and compares with "
      "Edifice's results; a case that disagrees is reported FAILED and its time is not used for "
      "a ratio. Inference and attention: max |peer - ours| / max |ours| <= 1e-4 per output. "
      "Training: loss relative 1e-4, and every updated parameter after one Adam step within "
      "1e-4 |p| + 1e-4 lr plus a slack for Adam's g / (|g| + eps) where the gradient is at f32 "
      "noise level (see `check_training` in bench/peers/peer_bench.py; the count of elements "
      "that needed it is shown).\n")
    w("| case | PyTorch | JAX |\n|---|---|---|")
    for cid, e in r["cases"].items():
        cells = []
        for fw in ("torch", "jax"):
            rs = [x for x in e["runs"][fw] if x]
            if not rs:
                cells.append("not run")
                continue
            x = next((x for x in rs if "errors" in x), None)
            if x is None:
                cells.append("error: %s" % rs[0].get("error", "?")[:120])
                continue
            err = x["errors"]
            if "loss_rel_err" in err:
                txt = ("loss %.1e, params worst %.2f of tol, %d slack elements" % (
                    err["loss_rel_err"], err["param_worst_err_over_tol"],
                    err["adam_slack_elements"]))
            else:
                txt = ", ".join("%s %.1e" % kv for kv in err.items())
            cells.append(("ok: " if x["correct"] else "**FAILED**: ") + txt)
        w("| %s | %s | %s |" % (cid, cells[0], cells[1]))
    w("")

    w("## Peak resident memory\n")
    w("Each measurement is a fresh process that loads the data, compiles (Edifice: from the disk "
      "cache the timing runs filled; JAX: `jit(...).lower(...).compile()`), reads VmRSS "
      "(\"before\"), runs 3 training steps (2 attention runs) and reads VmHWM (\"peak\", the "
      "high-water mark of the whole process, including imports and compilation). The ratio uses "
      "the absolute peaks.\n")
    w("| case | ours peak | ours peak - before | PyTorch peak | PyTorch peak - before | "
      "JAX peak | JAX peak - before | ours / PyTorch (peak) | target | met |")
    w("|---|---|---|---|---|---|---|---|---|---|")
    for cid, e in r["cases"].items():
        if "memory" not in e:
            continue
        mem = e["memory"]
        s = e["summary"]
        cells = []
        for fw in ("edifice", "torch", "jax"):
            x = mem.get(fw)
            if not x or "peak_rss_bytes" not in x:
                cells += ["n/a", "n/a"]
            else:
                cells += [fmt_mb(x["peak_rss_bytes"]),
                          fmt_mb(x["peak_rss_bytes"] - x["rss_before_bytes"])]
        tgt = e.get("memory_target_vs_torch")
        ratio = s.get("memory_ratio_vs_torch")
        w("| %s | %s | %s | %s | %s |" % (
            cid, " | ".join(cells), "%.2f" % ratio if ratio is not None else "n/a",
            "<= %g" % tgt if tgt else "-",
            {True: "yes", False: "**no**", None: "-"}[s.get("memory_target_met")]))
    w("")

    w("## Edifice compile times\n")
    w("Cold: `jit::compile` of the case's graph (inference graph, whole training-step graph with "
      "Adam, or attention gradient graph) in a fresh process with an empty `EDIFICE_CACHE_DIR`; "
      "cached: the same in a second process that finds the objects in that directory.\n")
    w("| case | kernels | cold | cached |\n|---|---|---|---|")
    for cid, e in r["cases"].items():
        c = e["compile"]
        cold, warm = c["cold"], c["cached"]
        w("| %s | %s | %s | %s%s |" % (
            cid, cold.get("kernels", "n/a"),
            fmt_ms(cold.get("compile_s")), fmt_ms(warm.get("compile_s")),
            "" if warm.get("from_cache") else " (cache MISS)"))
    w("")

    w("## How it is measured\n")
    w("- Same model, weights, inputs and shapes everywhere: `build/bench/peer_bench export` "
      "initialises each model with seed 1 (dropout 0), draws inputs and targets, and writes "
      "them with Edifice's results as safetensors; the peers read those files (a small numpy "
      "reader) and map our parameter names (`{layer}.{param}`, dense kernels [in, out]) onto "
      "their models. PyTorch: `nn.Linear`, `nn.LayerNorm`, `nn.LSTM` (its second bias held at "
      "zero and frozen), masked matmul/softmax/matmul attention (no fused SDPA in torch 1.13), "
      "`torch.optim.Adam`. JAX: `jax.jit`, `jax.nn.dot_product_attention` (window via "
      "`local_window_size=(w-1, 0)`, causal via `is_causal`), `lax.scan` LSTM, "
      "`jax.value_and_grad` and a hand-written Adam with PyTorch's formulas, parameters donated.")
    w("- Adam: lr 1e-3, betas (0.9, 0.999), eps 1e-8 in all three. Loss: mean squared error "
      "over all elements against random targets.")
    w("- Threads: ours with `EDIFICE_THREADS=2` and `=1` (one process each). PyTorch with "
      "`torch.set_num_threads(n)` and `OPENBLAS_NUM_THREADS=n` (Debian's torch calls OpenBLAS "
      "for matmuls, whose thread pool `set_num_threads` does not control), n = 2 and 1. JAX "
      "with its defaults and with `XLA_FLAGS=\"--xla_cpu_multi_thread_eigen=false "
      "intra_op_parallelism_threads=1\"` plus `taskset -c 0` (the flags alone left it using more than one core). The JSON holds each run's CPU utilisation (CPU time "
      "/ wall time), which shows how many cores it really used.")
    w("- FLOPs (one count per case, used for every framework): GEMMs 2 M N K; attention's "
      "q.k^T and p.v only over the (query, key) pairs the mask allows (the window band; the "
      "peers' dense attention computes the full S x S product and does more work than "
      "counted); backward = 2 x the forward GEMMs, minus the input gradient of the first dense "
      "layer of the sliding-window model (nobody needs it); softmax, layer norm, GELU, LSTM "
      "gates and Adam are not counted. % of peak divides ours by the measured FMA peak for "
      "the thread count of our best run. Edifice's row pruning (`jit::Options::prune_rows`, "
      "on by default, `EDIFICE_PRUNE=0` turns it off) skips rows whose results are never read "
      "(the model outputs only the last position), and inference graphs then attend the last "
      "layer's one query row over the unprojected keys (`jit::Options::absorb_projections`, "
      "`EDIFICE_ABSORB=0` turns it off), so Edifice executes fewer FLOPs than this count "
      "(batch-1 inference about 0.07 GFLOP of the 0.11 counted); its GFLOP/s is this count "
      "over its time, not a hardware counter, and may exceed the machine's peak.")
    loads = [x.get("loadavg_1min_before", 0) for e in r["cases"].values()
             for fw in ("edifice", "torch", "jax") for x in e["runs"][fw] if x]
    w("- Timings are wall-clock on a shared machine; every measurement holds "
      "/tmp/edifice-build.lock so no build runs during it, but other load is possible (the "
      "1-minute load average before the measurements of this run was %.1f to %.1f on %s "
      "hardware threads; each run's value is in the JSON). Re-run "
      "`bash bench/run_peer_bench.sh` after changes; it rewrites this page." % (
          min(loads or [0]), max(loads or [0]), m["cores"]))
    slower = []
    for cid, e in r["cases"].items():
        for fw, label in (("edifice", "Edifice"), ("torch", "PyTorch"), ("jax", "JAX")):
            by = {x.get("threads"): x.get("median_s") for x in e["runs"][fw]
                  if x and "median_s" in x}
            if by.get(1) and by.get(2) and by[2] > by[1]:
                slower.append("%s on %s (%s vs %s)" % (label, cid, fmt_ms(by[2]), fmt_ms(by[1])))
    if slower:
        w("- Two threads were slower than one for: %s." % "; ".join(slower))
    notes = []
    for cid, e in r["cases"].items():
        for fw in ("edifice", "torch", "jax"):
            for x in e["runs"][fw]:
                if x and "error" in x:
                    notes.append("- %s, %s: %s" % (cid, fw, x["error"][:300]))
    if notes:
        w("\n## Errors during this run\n")
        out.extend(notes)
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main()
