"""The figures and the page of the peer benchmark: the cases and their targets, the summary
derived from the interleaved rounds that run_all.py measured (medians, per-round ratios,
parallel efficiency, % of peak, the comparison with the baseline JSON), and
docs/performance.md. Nothing here measures; `run_all.py --from-json FILE` re-renders a page.
"""

import json
import os
import re
import statistics

E, S, NH, HD, L, F, W, U = 1024, 60, 4, 64, 2, 256, 60, 256
H = NH * HD
AS, AW = 4096, 256

INFERENCE_PEERS = ("openvino", "onnxruntime", "torch", "jax")
TRAINING_PEERS = ("torch", "jax")
LABEL = {"edifice": "Edifice", "torch": "PyTorch", "jax": "JAX", "onnxruntime": "ONNX Runtime",
         "openvino": "OpenVINO"}

# speedup: ours / the best of `peers` (same round); peak: fraction of the measured FMA peak at
# N threads; efficiency: parallel efficiency 1 -> N threads (issue 12).
CASES = [
    {"id": "sw_inf_b1", "kind": "inference", "name": "sliding-window model, inference, batch 1",
     "shape": "B 1, E 1024, S 60, nh 4, hd 64, L 2, FFN 256, window 60",
     "peers": INFERENCE_PEERS, "speedup": 1.5, "peak": None, "efficiency": None},
    {"id": "sw_inf_b32", "kind": "inference", "name": "sliding-window model, inference, batch 32",
     "shape": "B 32, same model", "peers": INFERENCE_PEERS, "speedup": 1.5, "peak": None,
     "efficiency": 0.9},
    {"id": "sw_train_b32", "kind": "training",
     "name": "sliding-window model, training step (fwd, bwd, Adam), MSE",
     "shape": "B 32, same model", "peers": TRAINING_PEERS, "speedup": 2.0, "peak": 0.75,
     "efficiency": 0.9},
    {"id": "hybrid_train_b32", "kind": "training",
     "name": "hybrid LSTM + attention model, training step, MSE",
     "shape": "B 32, E 1024, S 60, LSTM U 256, nh 4, hd 64", "peers": TRAINING_PEERS,
     "speedup": 1.5, "peak": None, "efficiency": 0.9},
    {"id": "window_attn", "kind": "attention", "name": "window attention alone, forward + backward",
     "shape": "B 1, S 4096, window 256, nh 4, hd 64, f32", "peers": TRAINING_PEERS,
     "speedup": 20.0, "peak": 0.5, "efficiency": None},
]
CASE = {c["id"]: c for c in CASES}
MEM_CASES = {"sw_train_b32": 0.5, "hybrid_train_b32": None, "window_attn": 0.1}
# A case counts as slower than the baseline when its median is more than this fraction above
# the baseline's (timings of two separate runs are not interleaved; see the page).
BASELINE_TOLERANCE = 0.05


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


def ours_key(isa, native_isa, threads, n):
    """The worker key of ours: "edifice" (native ISA, N threads), "edifice@1",
    "edifice_avx2", "edifice_avx2@1"."""
    key = "edifice" if isa == native_isa else "edifice_" + isa
    return key if threads == n else key + "@1"


def fmt_ms(s):
    if s is None:
        return "n/a"
    ms = s * 1e3
    return "%.3g ms" % ms if ms < 100 else "%.0f ms" % ms


def fmt_baseline(si):
    """The comparison with the baseline scaled by the FMA peaks, the raw time ratio in brackets."""
    if "vs_baseline" not in si:
        return si["baseline"]
    return "%s (raw %s)" % (fmt_x(si["vs_baseline"]), fmt_x(si["vs_baseline_raw"]))


def fmt_mb(b):
    return "n/a" if b is None else "%.0f MB" % (b / 2**20)


def fmt_x(v):
    return "n/a" if v is None else "%.2fx" % v


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def round_ratios(num, den):
    """num[r] / den[r] for each round where both were measured."""
    return [a / b for a, b in zip(num, den) if a and b]


def per_round_ratio(num, den):
    """The median over rounds of num[r] / den[r]."""
    return median(round_ratios(num, den))


def fmt_range(values):
    """ "(lowest-highest)" of per-round ratios, or "" for fewer than two."""
    return " (%.2f-%.2f)" % (min(values), max(values)) if len(values or []) > 1 else ""


def yes_no(v):
    return {True: "yes", False: "**NOT met**", None: "n/a"}[v]


def versions(report, python):
    """Each framework's version, as its workers reported it."""
    out = {"python": python}
    for e in report["cases"].values():
        for w in e["workers"].values():
            if w["framework"] != "edifice" and w.get("ready") and "version" in w["ready"]:
                out.setdefault(w["framework"], w["ready"]["version"])
    return out


# ---- the baseline ----


def load_baseline(path, report):
    """Our median per case and ISA from the baseline JSON (this format, or the earlier one with
    one process per thread count), and whether it was measured on this CPU model."""
    if not os.path.exists(path):
        return None
    with open(path) as f:
        b = json.load(f)
    bm, m = b.get("machine", {}), report["machine"]
    ours, peaks = {}, {}
    for cid, e in b.get("cases", {}).items():
        if b.get("format") == 2:
            ours[cid] = {isa: si.get("ours_s") for isa, si in e["summary"]["isa"].items()}
            peaks[cid] = {isa: si.get("peak_n_gflops")
                          for isa, si in e["summary"]["isa"].items()}
        else:
            n = bm.get("cores")
            t = [x["median_s"] for x in e.get("runs", {}).get("edifice", [])
                 if x and x.get("threads") == n and "median_s" in x]
            ours[cid] = {bm.get("edifice_isa"): t[0] if t else None}
    return {"file": os.path.relpath(path, os.path.dirname(os.path.dirname(os.path.dirname(
                os.path.abspath(__file__))))),
            "date_utc": b.get("date_utc"), "cpu_model": bm.get("cpu_model"),
            "cores": bm.get("cores"), "commit": (b.get("git") or {}).get("commit"),
            "same_machine": (bm.get("cpu_model"), bm.get("cores")) == (m["cpu_model"],
                                                                      m["cores"]),
            "ours": ours, "peaks": peaks}


# ---- the summary ----


def slice_times(e, key):
    w = e["workers"].get(key)
    if not w:
        return []
    return [s["median_s"] if s else None for s in w["slices"]]


def peer_rounds(e, fw, rounds, isa=None):
    """Per round, the framework's fastest setting (PyTorch: N or 1 threads); isa None: the
    native workers, "avx2": those under the AVX2-only CPUID shim."""
    series = [slice_times(e, k) for k, w in e["workers"].items()
              if w["framework"] == fw and w.get("isa") == isa]
    out = []
    for r in range(rounds):
        vals = [s[r] for s in series if r < len(s) and s[r]]
        out.append(min(vals) if vals else None)
    return out


def peer_status(e, fw, isa=None):
    ws = [w for w in e["workers"].values() if w["framework"] == fw and w.get("isa") == isa]
    if not ws:
        return "not run"
    if any(w["error"] == "FAILED (correctness)" for w in ws):
        return "FAILED (correctness)"
    if all(w["error"] for w in ws) or not any(w.get("ready") for w in ws):
        return "error"
    return "ok"


def best_rounds(c, peers, rounds):
    """Per round, the fastest of the case's peers."""
    return [min([peers[fw][r] for fw in c["peers"] if fw in peers and peers[fw][r]] or [None],
                key=lambda v: v if v is not None else float("inf"))
            for r in range(rounds)]


def capped_isa(report, isa):
    """Whether the peers of this ISA's rows ran under the AVX2-only CPUID shim: our non-native
    (AVX2) rows on a machine where the shim worked."""
    m = report["machine"]
    return isa != m["isas_measured"][0] and bool(m.get("avx2_peers_capped"))


def summarise_isa(report, cid, e, isa, peers, native_peers=None):
    """Our figures at `isa` against `peers` (per-round series); with native_peers (the AVX2 rows
    against capped peers) also the stricter ratio against the best native peer."""
    m, c = report["machine"], CASE[cid]
    n = report["settings"]["threads"]
    native = m["isas_measured"][0]
    t_n = slice_times(e, ours_key(isa, native, n, n))
    t_1 = slice_times(e, ours_key(isa, native, 1, n)) if n > 1 else []
    peaks = [(p or {}).get(isa) or {} for p in e["peaks"]]
    p_n = [p.get(str(n)) for p in peaks]
    p_1 = [p.get("1") for p in peaks]
    si = {"ours_s": median(t_n), "ours_1_s": median(t_1),
          "peak_n_gflops": median(p_n), "peak_1_gflops": median(p_1)}
    si["vs"] = {fw: per_round_ratio(peers[fw], t_n) for fw in peers}
    si["vs_best_rounds"] = round_ratios(best_rounds(c, peers, len(t_n)), t_n)
    if native_peers is not None:
        si["vs_best_native"] = median(round_ratios(best_rounds(c, native_peers, len(t_n)), t_n))
    si["vs_best"] = median(si["vs_best_rounds"])
    si["speedup_met"] = None if si["vs_best"] is None else si["vs_best"] >= c["speedup"]
    if si["ours_s"] and si["peak_n_gflops"]:
        si["gflops"] = e["flops"] / si["ours_s"] / 1e9
        si["percent_of_peak"] = 100 * si["gflops"] / si["peak_n_gflops"]
    si["peak_met"] = (None if c["peak"] is None or "percent_of_peak" not in si
                      else si["percent_of_peak"] >= 100 * c["peak"])
    if t_1:
        si["thread_speedup"] = per_round_ratio(t_1, t_n)
        si["peak_ratio"] = per_round_ratio(p_n, p_1)
        eff = [(a / b) / (pn / p1) for a, b, pn, p1 in zip(t_1, t_n, p_n, p_1)
               if a and b and pn and p1]
        si["efficiency"] = median(eff)
    si["efficiency_met"] = (None if c["efficiency"] is None or si.get("efficiency") is None
                            else si["efficiency"] >= c["efficiency"])
    b = report.get("baseline")
    base = (b or {}).get("ours", {}).get(cid, {}).get(isa)
    if b is None or base is None:
        si["baseline"] = "no baseline"
    elif not b["same_machine"]:
        si["baseline"] = "different machine"
    elif si["ours_s"]:
        si["baseline"] = "measured"
        # Same CPU model, but a VM's clock differs between runs: the FMA peak, measured in
        # both runs, scales the baseline to this run's machine speed.
        si["vs_baseline_raw"] = base / si["ours_s"]
        base_peak = b.get("peaks", {}).get(cid, {}).get(isa)
        scale = (base_peak / si["peak_n_gflops"] if base_peak and si.get("peak_n_gflops")
                 else 1.0)
        si["vs_baseline"] = si["vs_baseline_raw"] * scale
        si["not_slower_met"] = si["vs_baseline"] >= 1 / (1 + BASELINE_TOLERANCE)
    return si


def summarise_peers(e, fws, rounds, isa):
    """Per framework (workers of `isa`: None native, "avx2" capped): the median of its
    per-round fastest setting, its status and settings; and the per-round series."""
    series = {fw: peer_rounds(e, fw, rounds, isa) for fw in fws}
    out = {}
    for fw in fws:
        settings = {k: median(slice_times(e, k)) for k, w in e["workers"].items()
                    if w["framework"] == fw and w.get("isa") == isa}
        if not settings:
            continue
        fastest = min((k for k in settings if settings[k]), key=settings.get, default=None)
        out[fw] = {"median_s": median(series[fw]), "status": peer_status(e, fw, isa),
                   "settings": settings,
                   "fastest_threads": fastest and e["workers"][fastest]["threads"]}
    return out, {fw: series[fw] for fw in out}


def summarise(report):
    """Adds the derived figures to each case (`summary`): per peer its median time and status,
    per ISA of ours the per-round ratios, efficiency, % of peak and the baseline comparison."""
    for cid, e in report["cases"].items():
        rounds = max([len(w["slices"]) for w in e["workers"].values()] or [0])
        fws = sorted({w["framework"] for w in e["workers"].values()} - {"edifice"})
        s = {"isa": {}}
        s["peers"], native_rounds = summarise_peers(e, fws, rounds, None)
        for isa in report["machine"]["isas_measured"]:
            # Our AVX2 rows on an AVX-512 machine: against the peers under the AVX2-only shim
            # where they ran (the emulated AVX2 machine), else against the native peers.
            if capped_isa(report, isa):
                peers_s, rounds_s = summarise_peers(e, fws, rounds, isa)
                si = summarise_isa(report, cid, e, isa, rounds_s, native_peers=native_rounds)
            else:
                peers_s = s["peers"]
                si = summarise_isa(report, cid, e, isa, native_rounds)
            si["peers"] = peers_s
            s["isa"][isa] = si
        if "memory" in e:
            mem = e["memory"]
            o, t = mem.get("edifice", {}), mem.get("torch", {})
            ratio = None
            if "peak_rss_bytes" in o and "peak_rss_bytes" in t:
                ratio = o["peak_rss_bytes"] / t["peak_rss_bytes"]
            s["memory_ratio_vs_torch"] = ratio
            tgt = MEM_CASES.get(cid)
            s["memory_target_met"] = None if (ratio is None or tgt is None) else ratio <= tgt
        e["summary"] = s


# ---- the page ----


def write_markdown(path, text):
    """Writes the page, keeping the sections other tools own: every block from a line
    "<!-- NAME: begin ... -->" to "<!-- NAME: end -->" (streaming, thread scaling, ...)."""
    if os.path.exists(path):
        old = open(path).read()
        blocks = re.findall(r"<!-- ([\w-]+): begin.*?<!-- \1: end -->", old, flags=re.S)
        for name in blocks:
            match = re.search(r"<!-- %s: begin.*?<!-- %s: end -->" % (re.escape(name),
                                                                     re.escape(name)),
                              old, flags=re.S)
            text = text.rstrip("\n") + "\n\n" + match.group(0) + "\n"
    with open(path, "w") as f:
        f.write(text)


def isa_label(report, isa):
    native = report["machine"]["isas_measured"][0]
    return "%s%s" % (isa.upper().replace("AVX512", "AVX-512"),
                     "" if isa == native else " (`EDIFICE_ISA=%s`%s)" % (
                         isa, "; peers capped too" if capped_isa(report, isa) else ""))


def machine_section(r, w):
    m, v, g = r["machine"], r["versions"], r.get("git", {})
    n = r["settings"]["threads"]
    w("## Machine\n")
    w("| | |\n|---|---|")
    w("| CPU | %s (`/proc/cpuinfo`), %s hardware threads |" % (m["cpu_model"], m["cores"]))
    w("| ISA | %s; Edifice JIT target: %s |" % (
        ("AVX-512 (%s)" % " ".join(m["avx512_flags"])) if m["avx512"] else
        "no AVX-512 (AVX2 or less)", m["edifice_target"]))
    for isa in m["isas_measured"]:
        p1 = median([c["summary"]["isa"][isa]["peak_1_gflops"] for c in r["cases"].values()])
        pn = median([c["summary"]["isa"][isa]["peak_n_gflops"] for c in r["cases"].values()])
        w("| measured f32 FMA peak, %s | %s GFLOP/s on 1 thread, %s on %d threads (median of "
          "every round; bench/common/fma_peak.hpp) |" % (
              isa_label(r, isa), "%.1f" % p1 if p1 else "n/a", "%.1f" % pn if pn else "n/a", n))
    w("| PyTorch | %s (Debian python3-torch, /usr/bin/python3; matmuls go to Debian's "
      "OpenBLAS) |" % v.get("torch", "n/a"))
    w("| JAX | %s |" % (("%s (pip, CPU, build/peer-venv)" % v["jax"]) if v.get("jax")
                         else "not installed: JAX columns skipped"))
    w("| ONNX Runtime | %s |" % (("%s (pip, CPUExecutionProvider, build/peer-venv)"
                                  % v["onnxruntime"]) if v.get("onnxruntime") else "not run"))
    w("| OpenVINO | %s |" % (("%s (pip, CPU plugin, build/peer-venv)" % v["openvino"])
                              if v.get("openvino") else "not run"))
    w("| Python | %s |" % v.get("python"))
    w("| Linux | %s |" % m["kernel"])
    w("| Edifice source | commit %s%s |\n" % (
        (g.get("commit") or "unknown")[:12],
        " with uncommitted changes" if g.get("uncommitted_changes") else ""))


def targets_section(r, w):
    n = r["settings"]["threads"]
    w("## Targets (issue 12)\n")
    w("Computed from this run's numbers; \"best peer\" is, per round, the fastest of the listed "
      "frameworks (any of their thread settings), and the ratio is the median over rounds "
      "(in brackets: the lowest and highest round).\n")
    w("| target | ISA | measured | met |\n|---|---|---|---|")
    for cid, e in r["cases"].items():
        c, s = CASE[cid], e["summary"]
        peers = " / ".join(LABEL[p] for p in c["peers"])
        for isa, si in s["isa"].items():
            lab = isa_label(r, isa)
            w("| %s: >= %gx faster than the best of %s | %s | %s%s | %s |" % (
                e["name"], c["speedup"], peers, lab, fmt_x(si["vs_best"]),
                fmt_range(si.get("vs_best_rounds")), yes_no(si["speedup_met"])))
            if c["peak"]:
                pct = si.get("percent_of_peak")
                w("| %s: >= %.0f%% of the FMA peak (%d threads) | %s | %s | %s |" % (
                    e["name"], 100 * c["peak"], n, lab, "%.0f%%" % pct if pct else "n/a",
                    yes_no(si["peak_met"])))
            if c["efficiency"]:
                eff = si.get("efficiency")
                w("| %s: parallel efficiency 1 -> %d threads >= %g | %s | %s | %s |" % (
                    e["name"], n, c["efficiency"], lab, "%.2f" % eff if eff else "n/a",
                    yes_no(si["efficiency_met"])))
            w("| %s: not slower than the baseline | %s | %s | %s |" % (
                e["name"], lab, fmt_baseline(si), yes_no(si.get("not_slower_met"))))
        if MEM_CASES.get(cid):
            mr = s.get("memory_ratio_vs_torch")
            w("| %s: peak resident memory <= %g x PyTorch's | - | %s | %s |" % (
                e["name"], MEM_CASES[cid], fmt_x(mr), yes_no(s.get("memory_target_met"))))
    w("")


def capped_evidence(r):
    """What the capped peers reported of the CPU they saw: numpy's AVX-512F detection in every
    capped worker, and the kernels OpenVINO chose natively and capped."""
    seen, kinds = set(), {}
    for e in r["cases"].values():
        for w in e["workers"].values():
            ready = w.get("ready") or {}
            if w["framework"] == "edifice" or not ready:
                continue
            if w.get("isa"):
                seen.add(ready.get("cpu_has_avx512"))
            if "primitive_types" in ready:
                kinds.setdefault(w.get("isa") or "native", set()).update(ready["primitive_types"])
    return seen, {k: sorted(v) for k, v in kinds.items()}


def speed_section(r, w, isa):
    n = r["settings"]["threads"]
    capped = capped_isa(r, isa)
    w("### Ours at %s\n" % isa_label(r, isa))
    if capped:
        w("The peers' columns are their runs under `build/bench/libedifice_avx2_only.so` "
          "(every library sees an AVX2-only CPU); the last column compares ours at AVX2 with "
          "the best peer at AVX-512, the stricter figure.\n")
    w("| case | ours (%d thr) | OpenVINO | ONNX Runtime | PyTorch (thr) | JAX | vs OpenVINO | "
      "vs ONNX Runtime | vs PyTorch | vs JAX | vs best peer | target | met | ours GFLOP/s "
      "(nominal) | %% of peak | vs baseline |%s" % (n, " vs best AVX-512 peer |" if capped
                                                   else ""))
    w("|---" * (17 if capped else 16) + "|")
    for cid, e in r["cases"].items():
        s, si = e["summary"], e["summary"]["isa"][isa]

        def peer(fw):
            p = si.get("peers", s["peers"]).get(fw)
            if p is None:
                return "-"
            if p["status"] != "ok":
                return p["status"]
            txt = fmt_ms(p["median_s"])
            return txt + (" (%s)" % p["fastest_threads"] if fw == "torch" else "")

        base = fmt_baseline(si)
        w("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | >= %gx | %s | %s | %s | %s |"
          % (cid, fmt_ms(si["ours_s"]), peer("openvino"), peer("onnxruntime"), peer("torch"),
             peer("jax"), *[fmt_x(si["vs"].get(fw)) if fw in si["vs"] else "-"
                            for fw in ("openvino", "onnxruntime", "torch", "jax")],
             fmt_x(si["vs_best"]) + fmt_range(si.get("vs_best_rounds")), CASE[cid]["speedup"],
             yes_no(si["speedup_met"]),
             "%.1f" % si["gflops"] if si.get("gflops") else "n/a",
             "%.0f%%" % si["percent_of_peak"] if si.get("percent_of_peak") else "n/a", base)
          + (" %s |" % fmt_x(si.get("vs_best_native")) if capped else ""))
    w("")


def efficiency_section(r, w):
    n = r["settings"]["threads"]
    w("## Parallel efficiency (1 -> %d threads)\n" % n)
    w("Ours at `EDIFICE_THREADS=1` and `=%d`, interleaved in the same rounds as everything "
      "else, and the FMA peak at 1 and %d threads measured in every round (`peer_bench peak`). "
      "Efficiency = (t1 / t%d) / (peak_%d / peak_1), the median of the per-round values: 1.0 "
      "means the second thread adds as much as the FMA units it brings (on a machine whose "
      "hardware threads share a core, peak_%d / peak_1 is near 1 and so is the ideal "
      "speed-up).\n" % (n, n, n, n, n))
    w("| case | ISA | t1 | t%d | speed-up t1 / t%d | peak_%d / peak_1 | efficiency | target | "
      "met |" % (n, n, n))
    w("|---|---|---|---|---|---|---|---|---|")
    for cid, e in r["cases"].items():
        for isa, si in e["summary"]["isa"].items():
            eff = si.get("efficiency")
            tgt = CASE[cid]["efficiency"]
            w("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                cid, isa_label(r, isa), fmt_ms(si["ours_1_s"]), fmt_ms(si["ours_s"]),
                fmt_x(si.get("thread_speedup")),
                "%.2f" % si["peak_ratio"] if si.get("peak_ratio") else "n/a",
                "%.2f" % eff if eff else "n/a", ">= %g" % tgt if tgt else "-",
                yes_no(si["efficiency_met"]) if tgt else "-"))
    w("")


def correctness_section(r, w):
    w("## Correctness (checked before timing)\n")
    w("Each peer first runs the case on Edifice's exported weights and inputs and compares with "
      "Edifice's results; a peer that disagrees is reported FAILED and never timed. Inference "
      "and attention: max |peer - ours| / max |ours| <= 1e-4 per output. Training: loss "
      "relative 1e-4, and every updated parameter after one Adam step within 1e-4 |p| + 1e-4 lr "
      "plus a slack for Adam's g / (|g| + eps) where the gradient is at f32 noise level (see "
      "`check_training` in bench/peers/peer_bench.py; the count of elements that needed it is "
      "shown). Ours: max |result - exported result| (training: the first step's loss; the export "
      "ran at the native ISA, so the AVX2 workers differ by rounding).\n")
    fws = ("torch", "jax", "onnxruntime", "openvino")
    w("| case | ours (max abs diff per worker) | %s |" % " | ".join(LABEL[f] for f in fws))
    w("|---|---|---|---|---|---|")
    for cid, e in r["cases"].items():
        ours = ", ".join("%s %.1e" % (k, w_["ready"]["max_abs_diff_vs_export"])
                         for k, w_ in e["workers"].items()
                         if w_["framework"] == "edifice" and w_.get("ready"))
        cells = []
        for fw in fws:
            ws = [x for x in e["workers"].values() if x["framework"] == fw]
            x = next((x for x in ws if x.get("ready") and "errors" in x["ready"]), None)
            if not ws:
                cells.append("-")
            elif x is None:
                cells.append("error: %s" % (ws[0]["error"] or "?")[:120])
            else:
                err = x["ready"]["errors"]
                if "loss_rel_err" in err:
                    txt = "loss %.1e, params worst %.2f of tol, %d slack elements" % (
                        err["loss_rel_err"], err["param_worst_err_over_tol"],
                        err["adam_slack_elements"])
                else:
                    txt = ", ".join("%s %.1e" % kv for kv in err.items())
                cells.append(("ok: " if x["ready"]["correct"] else "**FAILED**: ") + txt)
        w("| %s | %s | %s |" % (cid, ours or "n/a", " | ".join(cells)))
    w("")


def memory_section(r, w):
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
        mem, s = e["memory"], e["summary"]
        cells = []
        for fw in ("edifice", "torch", "jax"):
            x = mem.get(fw)
            if not x or "peak_rss_bytes" not in x:
                cells += ["n/a", "n/a"]
            else:
                cells += [fmt_mb(x["peak_rss_bytes"]),
                          fmt_mb(x["peak_rss_bytes"] - x["rss_before_bytes"])]
        tgt = MEM_CASES.get(cid)
        ratio = s.get("memory_ratio_vs_torch")
        w("| %s | %s | %s | %s | %s |" % (
            cid, " | ".join(cells), "%.2f" % ratio if ratio is not None else "n/a",
            "<= %g" % tgt if tgt else "-",
            yes_no(s.get("memory_target_met")) if tgt else "-"))
    w("")


def compile_section(r, w):
    w("## Edifice compile times\n")
    w("Cold: `jit::compile` of the case's graph (inference graph, whole training-step graph with "
      "Adam, or attention gradient graph) in a fresh process with an empty `EDIFICE_CACHE_DIR`; "
      "cached: the same in a second process that finds the objects in that directory.\n")
    w("| case | kernels | cold | cached |\n|---|---|---|---|")
    for cid, e in r["cases"].items():
        cold, warm = e["compile"]["cold"], e["compile"]["cached"]
        w("| %s | %s | %s | %s%s |" % (
            cid, cold.get("kernels", "n/a"), fmt_ms(cold.get("compile_s")),
            fmt_ms(warm.get("compile_s")), "" if warm.get("from_cache") else " (cache MISS)"))
    w("")


def method_section(r, w):
    st, n = r["settings"], r["settings"]["threads"]
    b = r.get("baseline")
    w("## How it is measured\n")
    w("- Interleaved rounds: per case every framework and setting runs in its own long-lived "
      "worker (ours: `peer_bench serve`; peers: `peer_bench.py serve`) that loads, compiles and "
      "checks once; then %d rounds, each asking every worker in turn for a %g s time slice (one "
      "warm-up run unless a run takes over a quarter of the slice, then runs until the slice is "
      "over, at least one) and measuring the FMA peak at 1 and %d threads. Each worker's time "
      "is the median of its slice medians; each ratio is the median over rounds of the ratio "
      "of the two slices of the same round, so drift of the machine within minutes (up to 2x "
      "on these VMs) cancels. Every round holds /tmp/edifice-build.lock (no build runs during "
      "it); the 1-minute load average before each round is in the JSON." % (
          st["rounds"], st["slice_s"], n))
    w("- Same model, weights, inputs and shapes everywhere: `build/bench/peer_bench export` "
      "initialises each model with seed 1 (dropout 0), draws inputs and targets, and writes "
      "them with Edifice's results as safetensors; the peers read those files and map our "
      "parameter names (`{layer}.{param}`, dense kernels [in, out]) onto their models. "
      "PyTorch: `nn.Linear`, `nn.LayerNorm`, `nn.LSTM` (its second bias held at zero and "
      "frozen), masked matmul/softmax/matmul attention (no fused SDPA in torch 1.13), "
      "`torch.optim.Adam`. JAX: `jax.jit`, `jax.nn.dot_product_attention` (window via "
      "`local_window_size=(w-1, 0)`, causal via `is_causal`), `lax.scan` LSTM, "
      "`jax.value_and_grad` and a hand-written Adam with PyTorch's formulas, parameters "
      "donated.")
    w("- ONNX Runtime and OpenVINO (inference cases): the PyTorch model built on our weights is "
      "exported with `torch.onnx.export` (opset 17, static input shape of the case, weights as "
      "initializers); ONNX Runtime runs it on the CPU execution provider with every graph "
      "optimisation, %d intra-op threads and sequential execution; OpenVINO reads the same "
      "file and compiles it for CPU with `INFERENCE_PRECISION_HINT=f32`, "
      "`PERFORMANCE_HINT=LATENCY`, `INFERENCE_NUM_THREADS=%d` (one synchronous request). Both "
      "outputs are checked against ours before timing. (On CPUs with AMX or AVX512-BF16 "
      "OpenVINO's default CPU precision is bf16; the hint keeps it at f32 like every other "
      "framework here.)" % (n, n))
    w("- Threads: ours with `EDIFICE_THREADS=%d` (the ratios) and `=1` (efficiency). PyTorch "
      "with `torch.set_num_threads(n)` and `OPENBLAS_NUM_THREADS=n` for n = %d and 1 (its time "
      "per round is the faster of the two; the thread count shown is the faster median). JAX "
      "with its defaults." % (n, n))
    if len(r["machine"]["isas_measured"]) > 1:
        w("- AVX-512 machine: ours is also measured capped to AVX2 (`EDIFICE_ISA=avx2`, "
          "separate workers in the same rounds, ratios against the peers of the same round, "
          "efficiency against the AVX2 FMA peak).")
    if r["machine"].get("avx2_peers_capped"):
        seen, kinds = capped_evidence(r)
        w("- AVX2 rows on this AVX-512 machine: the peers run a second time under the AVX2-only "
          "CPUID shim (`bench/common/avx2_only_shim.cpp`, LD_PRELOAD): Linux's CPUID faulting "
          "traps every CPUID instruction and answers it with AVX-512, AMX, AVX-VNNI and AVX10 "
          "cleared, so oneDNN, OpenVINO's own kernels, MLAS (ONNX Runtime's and OpenVINO's "
          "GEMMs), OpenBLAS, ATen, XLA and numpy all dispatch as on an AVX2 CPU "
          "(`ONEDNN_MAX_CPU_ISA` alone would leave OpenVINO's MLAS GEMMs at AVX-512). Check: "
          "numpy in every capped worker saw AVX-512F = %s; OpenVINO's kernels natively: %s; "
          "capped: %s." % (
              " / ".join(str(x) for x in sorted(seen, key=str)) or "n/a",
              ", ".join(kinds.get("native", [])) or "n/a",
              ", ".join(kinds.get("avx2", [])) or "n/a"))
    w("- FLOPs (one count per case, used for every framework): GEMMs 2 M N K; attention's "
      "q.k^T and p.v only over the (query, key) pairs the mask allows; backward = 2 x the "
      "forward GEMMs, minus the input gradient of the first dense layer of the sliding-window "
      "model; softmax, layer norm, GELU, LSTM gates and Adam are not counted. %% of peak divides "
      "ours at %d threads by the FMA peak at %d threads of the same ISA. Edifice's row pruning "
      "and projection absorption (`EDIFICE_PRUNE=0`, `EDIFICE_ABSORB=0` turn them off) skip "
      "work this count includes, so its nominal GFLOP/s may exceed the machine's peak." % (n, n))
    if b:
        w("- Baseline: `%s` (measured %s on %s, %s threads, commit %s). The vs baseline column "
          "is the baseline's median over this run's (higher = faster now), multiplied by the "
          "baseline's FMA peak over this run's (same ISA and thread count), as a time scales "
          "with the clock: the same VM type runs at different clocks from day to day, and the "
          "peak tracks it; the unscaled ratio is in brackets. \"Slower\" means "
          "more than %.0f%% slower after scaling; the two runs are not interleaved, so a miss should be "
          "confirmed by a rerun. A baseline from a different CPU model or core count is not "
          "compared (\"different machine\"). `bash bench/run_peer_bench.sh --rotate-baseline` "
          "copies the current JSON to the baseline before measuring; without it the baseline "
          "stays fixed." % (b["file"], b["date_utc"], b["cpu_model"], b["cores"],
                            (b["commit"] or "?")[:12], 100 * BASELINE_TOLERANCE))
    else:
        w("- Baseline: none (bench/results/peer_bench.baseline.json is missing).")


def markdown(r):
    out = []
    w = out.append
    w("# Performance: Edifice against OpenVINO, ONNX Runtime, PyTorch and JAX on CPU\n")
    w("Generated by `bash bench/run_peer_bench.sh` on %s (%s s); do not edit by hand. The same "
      "figures, with every round's slices, are in `bench/results/peer_bench.json`.\n" % (
          r["date_utc"], r["wall_seconds"]))
    machine_section(r, w)
    targets_section(r, w)
    w("## Speed\n")
    w("Median time of one run (one inference, one training step, one attention forward + "
      "backward) over %d interleaved rounds; ratio columns: the peer's time over ours, median "
      "of the per-round ratios (higher = Edifice faster).\n" % r["settings"]["rounds"])
    for isa in r["machine"]["isas_measured"]:
        speed_section(r, w, isa)
    efficiency_section(r, w)
    correctness_section(r, w)
    memory_section(r, w)
    compile_section(r, w)
    method_section(r, w)
    notes = []
    for cid, e in r["cases"].items():
        for k, x in e["workers"].items():
            if x["error"] and x["error"] != "FAILED (correctness)":
                notes.append("- %s, %s: %s" % (cid, k, x["error"][:300]))
        if "error" in e.get("onnx_export", {}):
            notes.append("- %s, ONNX export: %s" % (cid, e["onnx_export"]["error"][:300]))
    if notes:
        w("\n## Errors during this run\n")
        out.extend(notes)
    return "\n".join(out) + "\n"
