"""Runs every case of the peer benchmark and writes docs/performance.md and
bench/results/peer_bench.json. Called by bench/run_peer_bench.sh (which sets up the peers and
builds first); see that script for the one command.

Timings are interleaved: per case, one worker process per framework and setting (ours at N and
1 threads, also capped to AVX2 on an AVX-512 machine; PyTorch at N and 1 threads; JAX; ONNX
Runtime and OpenVINO for inference) is started, checked against our exported results, and
then asked for one fixed time slice each, in rounds A B C ... A B C ..., so that the machine's
drift hits every framework alike; the FMA peak at 1 and N threads is measured in every round
too. Ratios are the median of the per-round ratios (peer_report.py).

Every round (and every other measurement: compile times, memory, the workers' start-up) holds
the lock file PEER_BENCH_LOCK (default /tmp/edifice-build.lock, shared with builds, so no build
runs during a measurement; empty disables it); the lock is never held across the whole run.
"""

import argparse
import datetime
import fcntl
import json
import os
import platform
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peer_report  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PEER = os.path.join(ROOT, "bench", "peers", "peer_bench.py")
SYSTEM_PY = "/usr/bin/python3"
CASES = peer_report.CASES
PEAK_ITERS = "50000000"  # FMA loop iterations per thread and repetition (~0.1 s)


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


def clean_env(extra):
    """The environment of a measured process: ours, without inherited Edifice thread or ISA
    settings (each worker sets its own), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in ("EDIFICE_THREADS", "EDIFICE_ISA")}
    env.update(extra)
    return env


def run(cmd, env_extra, lock, timeout=900, what=""):
    """One process, one "RESULT {json}" line (compile times, memory, the machine)."""
    t0 = time.time()
    with Lock(lock):
        try:
            p = subprocess.run(cmd, env=clean_env(env_extra), capture_output=True, text=True,
                               timeout=timeout)
        except subprocess.TimeoutExpired:
            print("  %-40s TIMEOUT after %d s" % (what, timeout), flush=True)
            return {"error": "timeout after %d s" % timeout}
    result = None
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT "):])
    if p.returncode != 0 or result is None:
        tail = (p.stderr or p.stdout).strip().splitlines()[-5:]
        print("  %-40s FAILED (exit %d): %s" % (what, p.returncode, " | ".join(tail)), flush=True)
        return {"error": "exit %d: %s" % (p.returncode, " | ".join(tail))}
    summary = ""
    if "peak_rss_bytes" in result:
        summary = "peak %.0f MB (before %.0f MB)" % (result["peak_rss_bytes"] / 2**20,
                                                     result["rss_before_bytes"] / 2**20)
    if "compile_s" in result:
        summary = "%.3f s (from cache: %s)" % (result["compile_s"], result["from_cache"])
    print("  %-40s %s  [%.0f s]" % (what, summary, time.time() - t0), flush=True)
    return result


class Worker:
    """A long-lived measuring process (peer_bench serve / peer_bench.py serve): prints
    "READY {json}" after its check, then "SLICE {json}" for each "slice SECONDS" it is sent."""

    def __init__(self, key, framework, isa, threads, cmd, env):
        self.key, self.framework, self.isa, self.threads = key, framework, isa, threads
        self.ready = None
        self.error = None
        self.slices = []
        self.stderr = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(cmd, env=clean_env(env), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.stderr, text=True,
                                     bufsize=1)
        self.lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _expect(self, tag, timeout):
        deadline = time.time() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(deadline - time.time(), 0.01))
            except queue.Empty:
                return self._fail("no %s line after %.0f s" % (tag, timeout))
            if line is None:
                return self._fail("exited (%s) before %s" % (self.proc.wait(), tag))
            if line.startswith(tag + " "):
                return json.loads(line[len(tag) + 1:])

    def _fail(self, why):
        self.stderr.seek(0)
        tail = self.stderr.read().strip().splitlines()[-4:]
        self.error = "%s: %s" % (why, " | ".join(tail))
        self.close()
        return None

    def wait_ready(self, timeout):
        self.ready = self._expect("READY", timeout)
        if self.ready is not None and self.ready.get("correct") is False:
            self.error = "FAILED (correctness)"
            self.close()
        return self.ready

    def active(self):
        return self.error is None and self.ready is not None

    def slice(self, seconds, timeout):
        if not self.active():
            self.slices.append(None)
            return None
        self.proc.stdin.write("slice %g\n" % seconds)
        self.proc.stdin.flush()
        r = self._expect("SLICE", timeout)
        self.slices.append(r)
        return r

    def close(self):
        try:
            if self.proc.poll() is None:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()

    def record(self):
        return {"framework": self.framework, "isa": self.isa, "threads": self.threads,
                "ready": self.ready, "error": self.error, "slices": self.slices}


def make_workers(case, ctx):
    """The interleaved workers of one case: ours at N and 1 threads for every ISA measured,
    and the peers: PyTorch at N and 1 threads, JAX with its defaults, and (inference) ONNX
    Runtime and OpenVINO at N threads on the ONNX export; on an AVX-512 machine the peers run
    twice, natively and under the AVX2-only CPUID shim (keys "NAME_avx2"), the peers of our
    AVX2 rows."""
    cid, n, data = case["id"], ctx["threads"], ctx["data"]
    counts = [n, 1] if n > 1 else [1]
    workers = []
    for isa in ctx["isas"]:
        for t in counts:
            env = {"EDIFICE_CACHE_DIR": ctx["cache"], "EDIFICE_THREADS": str(t)}
            if isa != ctx["isas"][0]:
                env["EDIFICE_ISA"] = isa
            workers.append(Worker(peer_report.ours_key(isa, ctx["isas"][0], t, n), "edifice",
                                  isa, t, [ctx["ours"], "serve", cid, data], env))
    peer_isas = [(None, "", {})] + ([("avx2", "_avx2", ctx["avx2_shim_env"])]
                                    if ctx.get("avx2_shim_env") else [])
    for isa, suffix, shim_env in peer_isas:
        for t in counts:
            workers.append(Worker("torch" + suffix + ("" if t == n else "@1"), "torch", isa, t,
                                  [SYSTEM_PY, PEER, "torch", "serve", cid, data, "--threads",
                                   str(t)],
                                  dict(shim_env, OPENBLAS_NUM_THREADS=str(t),
                                       OMP_NUM_THREADS=str(t))))
        if ctx["have_jax"]:
            workers.append(Worker("jax" + suffix, "jax", isa, n,
                                  [ctx["venv_py"], PEER, "jax", "serve", cid, data], shim_env))
        if case["kind"] == "inference" and ctx["have_onnx"] and ctx.get("onnx", {}).get(cid):
            for fw in ("onnxruntime", "openvino"):
                workers.append(Worker(fw + suffix, fw, isa, n,
                                      [ctx["venv_py"], PEER, fw, "serve", cid, data, "--onnx",
                                       ctx["onnx"][cid], "--threads", str(n)], shim_env))
    return workers


def avx2_shim_env(build):
    """The environment that runs a peer as on an AVX2-only CPU (bench/common/avx2_only_shim.cpp:
    CPUID faulting hides AVX-512 and AMX from every library; GLIBC_TUNABLES does the same for
    glibc's own string functions), or None where the shim is not built or the CPU lacks CPUID
    faulting (then the AVX2 rows compare with the native peers, and the page says so)."""
    shim = os.path.join(build, "bench", "libedifice_avx2_only.so")
    env = {"LD_PRELOAD": shim, "AVX2_ONLY_SHIM_REQUIRED": "1",
           "GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX512F,-AVX512VL,-AVX512BW,-AVX512DQ,-AVX512CD"}
    if not os.path.exists(shim):
        return None
    probe = subprocess.run([SYSTEM_PY, "-c", "import sys; sys.path.insert(0, %r); import "
                            "peer_bench; print(peer_bench.cpu_has_avx512())"
                            % os.path.dirname(PEER)], env=clean_env(env), capture_output=True,
                           text=True)
    return env if probe.returncode == 0 and probe.stdout.strip() == "False" else None


def measure_peaks(ctx):
    """The FMA peak at 1 and N threads for each ISA measured (one process each)."""
    out = {}
    for isa in ctx["isas"]:
        env = clean_env({} if isa == ctx["isas"][0] else {"EDIFICE_ISA": isa})
        p = subprocess.run([ctx["ours"], "peak", PEAK_ITERS, "1", str(ctx["threads"])], env=env,
                           capture_output=True, text=True, timeout=300)
        res = next((json.loads(l[7:]) for l in p.stdout.splitlines() if l.startswith("RESULT ")),
                   None)
        out[isa] = ({str(x["threads"]): x["gflops"] for x in res["peaks"]} if res else None)
    return out


def interleaved(case, ctx, lock):
    """Starts the case's workers, checks them, and runs the rounds. Returns the records."""
    print("  starting workers", flush=True)
    t0 = time.time()
    with Lock(lock):
        workers = make_workers(case, ctx)
        for w in workers:
            w.wait_ready(timeout=900)
    for w in workers:
        extra = w.error or ("ok" if w.ready else "?")
        print("    %-22s %s" % (w.key, extra[:160]), flush=True)
    print("  started in %.0f s; %d rounds of %g s slices" % (time.time() - t0, ctx["rounds"],
                                                            ctx["slice"]), flush=True)
    peaks = []
    try:
        for r in range(ctx["rounds"]):
            t0 = time.time()
            with Lock(lock):
                load = os.getloadavg()[0]
                for w in workers:
                    w.slice(ctx["slice"], timeout=600)
                peaks.append(measure_peaks(ctx))
            line = ", ".join("%s %s" % (w.key, peer_report.fmt_ms(w.slices[-1]["median_s"]))
                             for w in workers if w.slices and w.slices[-1])
            print("  round %d [%.0f s, load %.1f]: %s" % (r + 1, time.time() - t0, load, line),
                  flush=True)
            for w in workers:
                if w.slices and w.slices[-1]:
                    w.slices[-1]["loadavg_1min_before"] = load
    finally:
        for w in workers:
            w.close()
    return {w.key: w.record() for w in workers}, peaks


def export_onnx(case, ctx, lock):
    out = os.path.join(ctx["work"], case["id"] + ".onnx")
    r = run([SYSTEM_PY, PEER, "torch", "export-onnx", case["id"], ctx["data"], out], {}, lock,
            what="export to ONNX (PyTorch model)")
    if "error" not in r:
        ctx.setdefault("onnx", {})[case["id"]] = out
    return r


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return line.split(":", 1)[1].split()
    except OSError:
        pass
    return []


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


def venv_has(py, module):
    return os.path.exists(py) and subprocess.run([py, "-c", "import " + module],
                                                 capture_output=True).returncode == 0


def measure_case(c, ctx, lock):
    cid = c["id"]
    print(cid, flush=True)
    entry = {"name": c["name"], "shape": c["shape"], "flops": peer_report.flops(cid)}
    cdir = os.path.join(ctx["work"], "compile-" + cid)
    os.makedirs(cdir, mode=0o700)
    cold = run([ctx["ours"], "compile", cid, cdir], {}, lock, what="compile cold")
    warm = run([ctx["ours"], "compile", cid, cdir], {}, lock, what="compile cached")
    shutil.rmtree(cdir, ignore_errors=True)
    entry["compile"] = {"cold": cold, "cached": warm}
    if c["kind"] == "inference" and ctx["have_onnx"]:
        entry["onnx_export"] = export_onnx(c, ctx, lock)
    entry["workers"], entry["peaks"] = interleaved(c, ctx, lock)
    if cid in peer_report.MEM_CASES:
        data, ours_env = ctx["data"], {"EDIFICE_CACHE_DIR": ctx["cache"]}
        mem = {"edifice": run([ctx["ours"], "mem", cid, data], ours_env, lock,
                              what="memory edifice"),
               "torch": run([SYSTEM_PY, PEER, "torch", "mem", cid, data],
                            {"OPENBLAS_NUM_THREADS": str(ctx["threads"])}, lock,
                            what="memory pytorch")}
        if ctx["have_jax"]:
            mem["jax"] = run([ctx["venv_py"], PEER, "jax", "mem", cid, data], {}, lock,
                             what="memory jax")
        entry["memory"] = mem
    return entry


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--venv", default=os.path.join(ROOT, "build", "peer-venv"))
    ap.add_argument("--markdown", default=os.path.join(ROOT, "docs", "performance.md"))
    ap.add_argument("--json", default=os.path.join(ROOT, "bench", "results", "peer_bench.json"))
    ap.add_argument("--baseline",
                    default=os.path.join(ROOT, "bench", "results", "peer_bench.baseline.json"))
    ap.add_argument("--cases", default="", help="comma-separated case ids (default: all)")
    ap.add_argument("--from-json", default="",
                    help="only re-derive the summary of a JSON report and re-render the "
                    "markdown from it (no measurements)")
    args = ap.parse_args()
    if args.from_json:
        with open(args.from_json) as f:
            report = json.load(f)
        # Reload the baseline this report was compared with (for fields added since), but
        # never a different one that has rotated into its place.
        stored, again = report.get("baseline"), peer_report.load_baseline(args.baseline, report)
        if stored and again and (again["date_utc"], again["commit"]) == (stored["date_utc"],
                                                                          stored["commit"]):
            report["baseline"] = again
        peer_report.summarise(report)
        with open(args.from_json, "w") as f:  # the derived figures, as the page shows them
            json.dump(report, f, indent=1)
            f.write("\n")
        peer_report.write_markdown(args.markdown, peer_report.markdown(report))
        return

    lock = os.environ.get("PEER_BENCH_LOCK", "/tmp/edifice-build.lock")
    venv_py = os.path.join(args.venv, "bin", "python")
    cases = [c for c in CASES if not args.cases or c["id"] in args.cases.split(",")]
    started = time.time()
    work = tempfile.mkdtemp(prefix="edifice-peer-bench-")
    ctx = {"work": work, "data": os.path.join(work, "data"), "cache": os.path.join(work, "cache"),
           "venv_py": venv_py, "threads": os.cpu_count() or 1,
           "have_jax": venv_has(venv_py, "jax"),
           "have_onnx": venv_has(venv_py, "onnxruntime") and venv_has(venv_py, "openvino"),
           "rounds": max(int(os.environ.get("PEER_BENCH_ROUNDS", "7")), 1),
           "slice": float(os.environ.get("PEER_BENCH_SLICE", "0.5"))}
    os.makedirs(ctx["cache"], mode=0o700)
    # A private copy of our binary: a build that relinks build/bench/peer_bench between two
    # measurements (other work in the same tree) cannot mix two versions in one report.
    ctx["ours"] = os.path.join(work, "peer_bench")
    shutil.copy2(os.path.join(args.build, "bench", "peer_bench"), ctx["ours"])
    report = {"format": 2, "cases": {}}
    try:
        print("machine", flush=True)
        machine = run([ctx["ours"], "machine"], {}, lock, what="target and FMA peak")
        if "error" in machine:
            sys.exit("peer_bench machine failed: %s" % machine["error"])
        # On an AVX-512 machine ours is also measured capped to AVX2 (EDIFICE_ISA=avx2).
        ctx["isas"] = [machine["isa"]] + (["avx2"] if machine["isa"] == "avx512" else [])
        ctx["avx2_shim_env"] = avx2_shim_env(args.build) if len(ctx["isas"]) > 1 else None
        if len(ctx["isas"]) > 1:
            print("  peers of the AVX2 rows: %s" % (
                "under the AVX2-only CPUID shim" if ctx["avx2_shim_env"] else
                "native (AVX2-only shim unavailable: not built or no CPUID faulting)"),
                flush=True)
        print("export (Edifice initialises the models and writes weights, inputs, results)",
              flush=True)
        with Lock(lock):
            subprocess.run([ctx["ours"], "export", ctx["data"]],
                           env=clean_env({"EDIFICE_CACHE_DIR": ctx["cache"]}), check=True)
        for c in cases:
            report["cases"][c["id"]] = measure_case(c, ctx, lock)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    flags = cpu_flags()
    report["machine"] = {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "avx512": "avx512f" in flags,
        "avx512_flags": sorted(f for f in flags if f.startswith("avx512")),
        "amx_flags": sorted(f for f in flags if f.startswith("amx")),
        "edifice_target": machine.get("target"),
        "edifice_isa": machine.get("isa"),
        "isas_measured": ctx["isas"],
        "avx2_peers_capped": bool(ctx.get("avx2_shim_env")),
        "fma_peak_gflops_1_thread": machine.get("peak_gflops_1"),
        "fma_peak_gflops_all_threads": machine.get("peak_gflops_all"),
        "kernel": platform.release(),
    }
    report["settings"] = {"rounds": ctx["rounds"], "slice_s": ctx["slice"],
                          "threads": ctx["threads"], "peak_iters": int(PEAK_ITERS)}
    report["versions"] = peer_report.versions(report, platform.python_version())
    report["git"] = git_state()
    report["date_utc"] = datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M UTC")
    report["wall_seconds"] = round(time.time() - started, 1)
    report["have_jax"] = ctx["have_jax"]
    report["have_onnx"] = ctx["have_onnx"]
    report["baseline"] = peer_report.load_baseline(args.baseline, report)
    peer_report.summarise(report)
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(report, f, indent=1)
        f.write("\n")
    peer_report.write_markdown(args.markdown, peer_report.markdown(report))
    print("wrote %s and %s (%.0f s)" % (args.markdown, args.json, time.time() - started))


if __name__ == "__main__":
    main()
