"""The peers' side of bench/run_peer_bench.sh: the benchmark's models written in PyTorch and in
JAX the way a user would, run on the weights, inputs and targets Edifice exported
(build/bench/peer_bench export DIR), checked against Edifice's results, then timed; and the
inference engines users deploy with (ONNX Runtime, OpenVINO) running the PyTorch model
exported to ONNX.

    python peer_bench.py torch|jax time|mem|serve CASE DATA_DIR [--threads N]
    python peer_bench.py torch export-onnx CASE DATA_DIR OUT.onnx     (inference cases)
    python peer_bench.py onnxruntime|openvino time|serve CASE DATA_DIR --onnx FILE [--threads N]

PyTorch runs under /usr/bin/python3 (Debian's python3-torch); JAX, ONNX Runtime and OpenVINO
in build/peer-venv. One process per measurement ("time", "mem": the last stdout line is
"RESULT {json}") or per framework and case ("serve": checks once and prints "READY {json}",
then answers each stdin line "slice SECONDS" with "SLICE {json}" until "quit"; the interleaved
rounds of run_all.py). Benchmark-only: nothing in Edifice depends on this file.

What the models compute (read from models/src/multi_head.cpp and nn/src/layers.cpp):
  sliding window: input_proj dense (kernel [in, out]) -> + PE[p, d] = sin(p / (1 + 0.01 d))
    (computed in f64, rounded to f32) -> 2 x [fused QKV dense to 3H, split q|k|v, heads
    [B, nh, S, hd], scores q.k^T / sqrt(hd), window mask i-w+1 <= j <= i (masked scores -1e9),
    softmax, . v, merge heads (no output projection, as the original) -> residual -> layer norm
    (eps 1e-5) -> dense F -> exact (erf) GELU -> dense H -> residual -> layer norm (eps 1e-5)]
    -> last position. Dropout is 0 in the benchmark (identity in every mode).
  hybrid: layer norm (eps 1e-6) -> LSTM (gates i, f, g, o; input_kernel [E, 4U],
    hidden_kernel [U, 4U], one bias [4U], zero initial state) -> layer norm (eps 1e-6) ->
    dense H -> causal self-attention (fused QKV, output dense) -> residual -> layer norm
    (eps 1e-5) -> last position.
  training: MSE (mean over all elements) against the targets, Adam with PyTorch's formulas
    (lr 1e-3, betas 0.9/0.999, eps 1e-8).
"""

import functools
import json
import math
import os
import resource
import struct
import sys
import time

import numpy as np

# ---- safetensors (read-only; the format is an 8-byte little-endian header length, a JSON
# header, then the raw little-endian data) ----

_DTYPES = {"F32": np.float32, "F64": np.float64, "I32": np.int32, "I64": np.int64, "U8": np.uint8}


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n].decode("utf-8"))
    data = memoryview(raw)[8 + n :]
    meta = header.pop("__metadata__", {})
    tensors = {}
    for name, e in header.items():
        b, end = e["data_offsets"]
        a = np.frombuffer(data[b:end], dtype=np.dtype(_DTYPES[e["dtype"]]).newbyteorder("<"))
        tensors[name] = a.reshape(e["shape"]).copy()
    return tensors, meta


def load_case(data_dir, case):
    tensors, meta = read_safetensors(os.path.join(data_dir, case + ".safetensors"))
    cfg = json.loads(meta["config"])
    params = {k[2:]: v for k, v in tensors.items() if k.startswith("p.")}
    return cfg, params, tensors


def positional_encoding(s, d, scale=0.01):
    p = np.arange(s, dtype=np.float64)[:, None]
    j = np.arange(d, dtype=np.float64)[None, :]
    return np.sin(p / (1.0 + scale * j)).astype(np.float32)


def window_mask(s, w):
    i = np.arange(s)[:, None]
    j = np.arange(s)[None, :]
    return (j <= i) & (j >= i - w + 1)


def kind_of(case):
    if case.startswith("sw_inf"):
        return "sw_inference"
    if case.startswith("sw_train"):
        return "sw_train"
    if case.startswith("hybrid_train"):
        return "hybrid_train"
    return "window_attention"


# ---- comparisons ----


def rel_inf(got, want):
    """max |got - want| / max |want| (normwise relative error in the max norm)."""
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    return float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-30))


REL_TOL = 1e-4


def check_outputs(pairs):
    """pairs: name -> (got, want). Each must satisfy rel_inf <= REL_TOL."""
    errs = {k: rel_inf(g, w) for k, (g, w) in pairs.items()}
    return all(e <= REL_TOL for e in errs.values()), errs


def check_training(loss, want_loss, new_params, want_params, want_m, old_params, lr, eps):
    """Loss: relative 1e-4. Updated parameters, elementwise:
        |p - p_ours| <= 1e-4 |p_ours| + 1e-4 lr + adam_slack
    After one Adam step from zero moments the update is u(g) = -lr g / (|g| + eps): it saturates
    at -lr sign(g) for |g| >> eps = 1e-8 but is steep for |g| near eps, and for a gradient that
    is mathematically zero (e.g. the key bias of attention: it shifts every score of a row
    equally and cancels in the softmax) it turns f32 rounding noise into a step of up to +-lr
    with an arbitrary sign. The slack propagates a gradient error of e_g = 1e-5 max|g| of the
    tensor (f32 accumulation noise; we see about 2e-7 max|g|) through u:
        adam_slack = min(2 lr, lr eps e_g / (max(|g| - e_g, 0) + eps)^2)
    with g = m1 / (1 - beta1) our gradient (Adam's first moment after one step). For |g| well
    above e_g the slack is negligible. Elements where the slack was needed are counted."""
    loss_err = abs(loss - want_loss) / max(abs(want_loss), 1e-30)
    worst = 0.0
    worst_name = ""
    slack_used = 0
    bad = 0
    for name, want in want_params.items():
        got = np.asarray(new_params[name], dtype=np.float64)
        want = want.astype(np.float64)
        g = want_m[name].astype(np.float64) / 0.1
        e_g = 1e-5 * np.max(np.abs(g))
        base = 1e-4 * np.abs(want) + 1e-4 * lr
        slack = np.minimum(2 * lr, lr * eps * e_g / (np.maximum(np.abs(g) - e_g, 0) + eps) ** 2)
        diff = np.abs(got - want)
        viol = diff > base + slack
        slack_used += int(np.count_nonzero((diff > base) & ~viol))
        bad += int(np.count_nonzero(viol))
        if os.environ.get("PEER_BENCH_DEBUG") and np.any(viol):
            for ix in np.argwhere(viol)[:5]:
                ix = tuple(ix)
                print("DEBUG", name, ix, "g_ours", g[ix], "max|g|", np.max(np.abs(g)), "p_ours",
                      want[ix], "p_peer", got[ix], "old", old_params[name][ix], file=sys.stderr)
        r = float(np.max(diff / (base + slack)))
        if r > worst:
            worst, worst_name = r, name
    ok = loss_err <= REL_TOL and bad == 0
    return ok, {
        "loss_rel_err": loss_err,
        "param_worst_err_over_tol": worst,
        "param_worst": worst_name,
        "param_violations": bad,
        "adam_slack_elements": slack_used,
    }


# ---- measurement helpers ----


def status_bytes(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return 1024.0 * float(line.split()[1])
    return -1.0


def cpu_s():
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def time_runs(run):
    """Warm-up, then the median of enough single runs to fill PEER_BENCH_SECONDS (default 1.5),
    at least 3 (runs over 1 s) or 5, at most 2000. Same rule as peer_bench.cpp."""
    target = float(os.environ.get("PEER_BENCH_SECONDS", "1.5"))
    run()
    t0 = time.perf_counter()
    run()
    one = time.perf_counter() - t0
    reps = min(max(int(math.ceil(target / max(one, 1e-6))), 3 if one > 1.0 else 5), 2000)
    times = []
    c0, w0 = cpu_s(), time.perf_counter()
    for _ in range(reps):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    wall, cpu = time.perf_counter() - w0, cpu_s() - c0
    times.sort()
    med = times[reps // 2] if reps % 2 else 0.5 * (times[reps // 2 - 1] + times[reps // 2])
    return {"median_s": med, "min_s": times[0], "reps": reps, "cpu_util": cpu / wall}


def time_slice(run, seconds, last_run_s):
    """One time slice of the interleaved rounds: a warm-up run (another framework just used
    the caches) unless one run takes over a quarter of the slice, then runs until `seconds`
    have passed (at least one). Same rule as peer_bench.cpp's time_slice."""
    if last_run_s < 0.25 * seconds:
        run()
    times = []
    c0, w0 = cpu_s(), time.perf_counter()
    while True:
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
        if time.perf_counter() - w0 >= seconds:
            break
    wall, cpu = time.perf_counter() - w0, cpu_s() - c0
    return {"median_s": float(np.median(times)), "min_s": min(times), "reps": len(times),
            "cpu_util": cpu / wall}


# ---- PyTorch ----


def torch_runner(case, cfg, params, tensors, threads):
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    kind = kind_of(case)
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))

    if kind == "window_attention":
        S, w = cfg["seq_len"], cfg["window"]
        hd = cfg["head_dim"]
        q, k, v, g = (t(tensors[n]).requires_grad_(n != "g") for n in ("q", "k", "v", "g"))
        mask = t(window_mask(S, w))
        scale = 1.0 / math.sqrt(hd)
        res = {}

        def run():
            for a in (q, k, v):
                a.grad = None
            scores = torch.matmul(q, k.transpose(-2, -1)) * scale
            scores = scores.masked_fill(~mask, -1e9)
            out = torch.matmul(torch.softmax(scores, dim=-1), v)
            (out * g).sum().backward()
            res["out"] = out

        def check():
            return check_outputs(
                {
                    "out": (res["out"].detach().numpy(), tensors["out"]),
                    "dq": (q.grad.numpy(), tensors["dq"]),
                    "dk": (k.grad.numpy(), tensors["dk"]),
                    "dv": (v.grad.numpy(), tensors["dv"]),
                }
            )

        return run, check

    H = cfg["num_heads"] * cfg["head_dim"]
    nh, hd = cfg["num_heads"], cfg["head_dim"]
    S = cfg["seq_len"]

    def linear(name):
        kern = params[name + ".kernel"]
        lin = torch.nn.Linear(kern.shape[0], kern.shape[1])
        with torch.no_grad():
            lin.weight.copy_(t(kern.T))
            lin.bias.copy_(t(params[name + ".bias"]))
        return lin

    def norm(name, eps):
        ln = torch.nn.LayerNorm(params[name + ".gamma"].shape[0], eps=eps)
        with torch.no_grad():
            ln.weight.copy_(t(params[name + ".gamma"]))
            ln.bias.copy_(t(params[name + ".beta"]))
        return ln

    def attention(qkv, mask):
        B = qkv.shape[0]
        q, k, v = qkv.split(H, dim=-1)
        q = q.view(B, S, nh, hd).transpose(1, 2)
        k = k.view(B, S, nh, hd).transpose(1, 2)
        v = v.view(B, S, nh, hd).transpose(1, 2)
        scores = torch.matmul(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(hd))
        scores = scores.masked_fill(~mask, -1e9)
        a = torch.matmul(torch.softmax(scores, dim=-1), v)
        return a.transpose(1, 2).reshape(B, S, H)

    # (our parameter name, torch parameter, transposed?) for the training comparisons
    mapping = []

    if kind in ("sw_inference", "sw_train"):

        class SlidingWindow(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.input_proj = linear("input_proj")
                self.register_buffer("pe", t(positional_encoding(S, H)))
                self.register_buffer("mask", t(window_mask(S, cfg["window"])))
                self.layers = torch.nn.ModuleList()
                for l in range(1, cfg["num_layers"] + 1):
                    p = "layer_%d" % l
                    m = torch.nn.Module()
                    m.qkv = linear(p + "_attn_qkv")
                    m.norm1 = norm(p + "_norm1", cfg["ln_eps"])
                    m.ffn1 = linear(p + "_ffn1")
                    m.ffn2 = linear(p + "_ffn2")
                    m.norm2 = norm(p + "_norm2", cfg["ln_eps"])
                    self.layers.append(m)

            def forward(self, x):
                h = self.input_proj(x) + self.pe
                for m in self.layers:
                    h = m.norm1(h + attention(m.qkv(h), self.mask))
                    h = m.norm2(h + m.ffn2(F.gelu(m.ffn1(h))))
                return h[:, -1, :]

        model = SlidingWindow()
        mapping.append(("input_proj", model.input_proj))
        for l, m in enumerate(model.layers, 1):
            p = "layer_%d" % l
            for suffix, mod in (("_attn_qkv", m.qkv), ("_ffn1", m.ffn1), ("_ffn2", m.ffn2),
                                ("_norm1", m.norm1), ("_norm2", m.norm2)):
                mapping.append((p + suffix, mod))
    else:

        class Hybrid(torch.nn.Module):
            def __init__(self):
                super().__init__()
                e = params["input_ln.gamma"].shape[0]
                u = params["lstm_1.hidden_kernel"].shape[0]
                self.input_ln = norm("input_ln", cfg["hybrid_ln_eps"])
                self.lstm = torch.nn.LSTM(e, u, batch_first=True)
                with torch.no_grad():
                    self.lstm.weight_ih_l0.copy_(t(params["lstm_1.input_kernel"].T))
                    self.lstm.weight_hh_l0.copy_(t(params["lstm_1.hidden_kernel"].T))
                    self.lstm.bias_ih_l0.copy_(t(params["lstm_1.bias"]))
                    self.lstm.bias_hh_l0.zero_()
                # Ours has one LSTM bias; torch's second one stays zero and is not trained.
                self.lstm.bias_hh_l0.requires_grad_(False)
                self.lstm_ln = norm("lstm_1_ln", cfg["hybrid_ln_eps"])
                self.proj = linear("lstm_to_attn_proj")
                self.qkv = linear("hybrid_attn_qkv")
                self.out = linear("hybrid_attn_output")
                self.attn_norm = norm("attn_norm", cfg["ln_eps"])
                self.register_buffer("mask", t(window_mask(S, S)))

            def forward(self, x):
                h, _ = self.lstm(self.input_ln(x))
                p = self.proj(self.lstm_ln(h))
                a = self.out(attention(self.qkv(p), self.mask))
                return self.attn_norm(p + a)[:, -1, :]

        model = Hybrid()
        for name, mod in (("input_ln", model.input_ln), ("lstm_1_ln", model.lstm_ln),
                          ("lstm_to_attn_proj", model.proj), ("hybrid_attn_qkv", model.qkv),
                          ("hybrid_attn_output", model.out), ("attn_norm", model.attn_norm)):
            mapping.append((name, mod))

    def ours_from_torch():
        out = {}
        for name, mod in mapping:
            if isinstance(mod, torch.nn.Linear):
                out[name + ".kernel"] = mod.weight.detach().numpy().T
                out[name + ".bias"] = mod.bias.detach().numpy()
            else:
                out[name + ".gamma"] = mod.weight.detach().numpy()
                out[name + ".beta"] = mod.bias.detach().numpy()
        if kind == "hybrid_train":
            out["lstm_1.input_kernel"] = model.lstm.weight_ih_l0.detach().numpy().T
            out["lstm_1.hidden_kernel"] = model.lstm.weight_hh_l0.detach().numpy().T
            out["lstm_1.bias"] = model.lstm.bias_ih_l0.detach().numpy()
        return out

    x = t(tensors["x"])
    if kind == "sw_inference":
        model.eval()
        res = {}

        def run():
            with torch.no_grad():
                res["y"] = model(x)

        def check():
            return check_outputs({"y": (res["y"].numpy(), tensors["y"])})

        run.model = model  # for export-onnx
        return run, check

    target = t(tensors["t"])
    opt = torch.optim.Adam(
        [p for p in model.parameters() if p.requires_grad],
        lr=cfg["lr"], betas=(cfg["beta1"], cfg["beta2"]), eps=cfg["eps"])
    model.train()
    res = {}
    old = {k: v.copy() for k, v in ours_from_torch().items()}

    def run():
        opt.zero_grad(set_to_none=True)
        loss = F.mse_loss(model(x), target)
        loss.backward()
        opt.step()
        if "loss" not in res:
            res["loss"] = float(loss.detach())
            res["params"] = {k: v.copy() for k, v in ours_from_torch().items()}

    def check():
        want_params = {k[3:]: v for k, v in tensors.items() if k.startswith("p1.")}
        want_m = {k[3:]: v for k, v in tensors.items() if k.startswith("m1.")}
        return check_training(res["loss"], float(tensors["loss"]), res["params"], want_params,
                              want_m, old, cfg["lr"], cfg["eps"])

    return run, check


# ---- JAX ----


def jax_runner(case, cfg, params, tensors, threads):
    import jax
    import jax.numpy as jnp

    kind = kind_of(case)
    if kind == "window_attention":
        S, w, hd = cfg["seq_len"], cfg["window"], cfg["head_dim"]
        # jax.nn.dot_product_attention takes [B, T, N, H]; ours is [B, N, T, H].
        q, k, v, g = (jnp.asarray(tensors[n].transpose(0, 2, 1, 3)) for n in ("q", "k", "v", "g"))

        def attend(q, k, v):
            return jax.nn.dot_product_attention(q, k, v, scale=1.0 / math.sqrt(hd),
                                                local_window_size=(w - 1, 0))

        @jax.jit
        def fwd_bwd(q, k, v, g):
            def loss(q, k, v):
                out = attend(q, k, v)
                return jnp.sum(out * g), out

            (_, out), grads = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(q, k, v)
            return out, grads

        res = {}

        def run():
            res["r"] = jax.block_until_ready(fwd_bwd(q, k, v, g))

        def check():
            out, (dq, dk, dv) = res["r"]
            tr = lambda a: np.asarray(a).transpose(0, 2, 1, 3)
            return check_outputs({"out": (tr(out), tensors["out"]), "dq": (tr(dq), tensors["dq"]),
                                  "dk": (tr(dk), tensors["dk"]), "dv": (tr(dv), tensors["dv"])})

        def compile_():
            fwd_bwd.lower(q, k, v, g).compile()

        return run, check, compile_

    nh, hd, S = cfg["num_heads"], cfg["head_dim"], cfg["seq_len"]
    H = nh * hd
    pe = jnp.asarray(positional_encoding(S, H))

    def dense(P, name, x):
        return x @ P[name + ".kernel"] + P[name + ".bias"]

    def layer_norm(P, name, x, eps):
        m = jnp.mean(x, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x - m), axis=-1, keepdims=True)
        return (x - m) * jax.lax.rsqrt(var + eps) * P[name + ".gamma"] + P[name + ".beta"]

    def attention(qkv, **mask):
        B = qkv.shape[0]
        q, k, v = (qkv[..., i * H:(i + 1) * H].reshape(B, S, nh, hd) for i in range(3))
        a = jax.nn.dot_product_attention(q, k, v, scale=1.0 / math.sqrt(hd), **mask)
        return a.reshape(B, S, H)

    def lstm(x, wi, wh, b):
        B = x.shape[0]
        U = wh.shape[0]
        xi = x @ wi + b  # every step's input projection in one GEMM

        def cell(carry, xt):
            h, c = carry
            z = xt + h @ wh
            i, f, g, o = jnp.split(z, 4, axis=-1)
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            h = jax.nn.sigmoid(o) * jnp.tanh(c)
            return (h, c), h

        zeros = jnp.zeros((B, U), x.dtype)
        _, hs = jax.lax.scan(cell, (zeros, zeros), jnp.swapaxes(xi, 0, 1))
        return jnp.swapaxes(hs, 0, 1)

    if kind in ("sw_inference", "sw_train"):
        w = cfg["window"]

        def model(P, x):
            h = dense(P, "input_proj", x) + pe
            for l in range(1, cfg["num_layers"] + 1):
                p = "layer_%d" % l
                a = attention(dense(P, p + "_attn_qkv", h), local_window_size=(w - 1, 0))
                h = layer_norm(P, p + "_norm1", h + a, cfg["ln_eps"])
                f = dense(P, p + "_ffn2", jax.nn.gelu(dense(P, p + "_ffn1", h), approximate=False))
                h = layer_norm(P, p + "_norm2", h + f, cfg["ln_eps"])
            return h[:, -1, :]
    else:

        def model(P, x):
            h = layer_norm(P, "input_ln", x, cfg["hybrid_ln_eps"])
            h = lstm(h, P["lstm_1.input_kernel"], P["lstm_1.hidden_kernel"], P["lstm_1.bias"])
            h = layer_norm(P, "lstm_1_ln", h, cfg["hybrid_ln_eps"])
            p = dense(P, "lstm_to_attn_proj", h)
            a = dense(P, "hybrid_attn_output", attention(dense(P, "hybrid_attn_qkv", p),
                                                         is_causal=True))
            return layer_norm(P, "attn_norm", p + a, cfg["ln_eps"])[:, -1, :]

    P = {k: jnp.asarray(v) for k, v in params.items()}
    x = jnp.asarray(tensors["x"])
    if kind == "sw_inference":
        predict = jax.jit(model)
        res = {}

        def run():
            res["y"] = jax.block_until_ready(predict(P, x))

        def check():
            return check_outputs({"y": (np.asarray(res["y"]), tensors["y"])})

        def compile_():
            predict.lower(P, x).compile()

        return run, check, compile_

    target = jnp.asarray(tensors["t"])
    lr, b1, b2, eps = cfg["lr"], cfg["beta1"], cfg["beta2"], cfg["eps"]

    def loss_fn(P, x, t):
        d = model(P, x) - t
        return jnp.mean(d * d)

    # Adam with PyTorch's formulas (torch.optim.Adam, single-tensor path); parameters and
    # moments are donated (updated in place), as a careful JAX user writes it.
    @functools.partial(jax.jit, donate_argnums=(0, 1, 2))
    def train_step(P, m, v, step, x, t):
        loss, g = jax.value_and_grad(loss_fn)(P, x, t)
        step = step + 1
        bc1 = 1 - b1 ** step
        bc2 = 1 - b2 ** step
        m = jax.tree_util.tree_map(lambda m, g: b1 * m + (1 - b1) * g, m, g)
        v = jax.tree_util.tree_map(lambda v, g: b2 * v + (1 - b2) * g * g, v, g)
        P = jax.tree_util.tree_map(
            lambda p, m, v: p - (lr / bc1) * m / (jnp.sqrt(v) / jnp.sqrt(bc2) + eps), P, m, v)
        return P, m, v, step, loss

    st = {
        "P": P,
        "m": {k: jnp.zeros_like(a) for k, a in P.items()},
        "v": {k: jnp.zeros_like(a) for k, a in P.items()},
        "step": jnp.asarray(0.0, jnp.float32),
    }
    res = {}

    def run():
        P, m, v, step, loss = train_step(st["P"], st["m"], st["v"], st["step"], x, target)
        jax.block_until_ready(loss)
        st.update(P=P, m=m, v=v, step=step)
        if "loss" not in res:
            res["loss"] = float(loss)
            res["params"] = {k: np.asarray(a) for k, a in P.items()}

    def check():
        want_params = {k[3:]: v for k, v in tensors.items() if k.startswith("p1.")}
        want_m = {k[3:]: v for k, v in tensors.items() if k.startswith("m1.")}
        return check_training(res["loss"], float(tensors["loss"]), res["params"], want_params,
                              want_m, params, lr, eps)

    def compile_():
        train_step.lower(st["P"], st["m"], st["v"], st["step"], x, target).compile()

    return run, check, compile_


# ---- ONNX: the PyTorch model exported, run by ONNX Runtime and OpenVINO ----

ONNX_OPSET = 17


def export_onnx(case, cfg, params, tensors, out_path):
    """Exports the PyTorch sliding-window model built on our weights (torch_runner's model) to
    ONNX with the case's static input shape; the weights are initializers of the file."""
    import torch

    if kind_of(case) != "sw_inference":
        raise SystemExit("export-onnx: only the inference cases are exported (got %s)" % case)
    run, _ = torch_runner(case, cfg, params, tensors, 1)
    model = run.model.eval()
    x = torch.from_numpy(np.ascontiguousarray(tensors["x"]))
    with torch.no_grad():
        torch.onnx.export(model, (x,), out_path, input_names=["x"], output_names=["y"],
                          opset_version=ONNX_OPSET, do_constant_folding=True)
    return {"onnx": out_path, "opset": ONNX_OPSET, "bytes": os.path.getsize(out_path),
            "torch_version": torch.__version__}


def onnxruntime_runner(onnx_path, tensors, threads):
    """ONNX Runtime, CPU execution provider, every graph optimisation, `threads` intra-op
    threads (one inter-op: the graph runs sequentially)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])
    feed = {"x": np.ascontiguousarray(tensors["x"])}
    res = {}

    def run():
        res["y"] = sess.run(None, feed)[0]

    def check():
        return check_outputs({"y": (res["y"], tensors["y"])})

    info = {"version": ort.__version__, "providers": sess.get_providers()}
    return run, check, info


def openvino_runner(onnx_path, tensors, threads):
    """OpenVINO reading the ONNX file, CPU plugin, f32 inference precision, latency hint,
    `threads` inference threads; one synchronous infer request."""
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(core.read_model(onnx_path), "CPU", {
        "INFERENCE_PRECISION_HINT": "f32",
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_NUM_THREADS": str(threads),
    })
    req = compiled.create_infer_request()
    x = np.ascontiguousarray(tensors["x"])
    res = {}

    def run():
        req.infer({0: x})
        res["y"] = req.get_output_tensor(0).data

    def check():
        return check_outputs({"y": (np.array(res["y"]), tensors["y"])})

    kinds = {}  # the kernels OpenVINO chose (e.g. jit_avx2_f32, brgemm_avx512_f32, gemm_mlas_f32)
    for op in compiled.get_runtime_model().get_ops():
        rt = op.get_rt_info()
        if "primitiveType" in rt:
            kind = rt["primitiveType"].astype(str)
            kinds[kind] = kinds.get(kind, 0) + 1
    info = {"version": ov.get_version(), "primitive_types": kinds,
            "properties": {k: str(compiled.get_property(k)) for k in (
                "INFERENCE_PRECISION_HINT", "PERFORMANCE_HINT", "INFERENCE_NUM_THREADS",
                "NUM_STREAMS")}}
    return run, check, info


# ---- main ----


def serve(run, check, result):
    """The worker of the interleaved rounds: checks once, then answers time slices."""
    t0 = time.perf_counter()
    run()
    last = time.perf_counter() - t0
    result["first_run_s"] = last
    ok, errs = check()
    result["correct"] = bool(ok)
    result["errors"] = errs
    print("READY " + json.dumps(result), flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            break
        if cmd[0] != "slice" or len(cmd) != 2:
            raise SystemExit("peer_bench.py serve: unknown command %r" % line)
        if not ok:
            raise SystemExit("peer_bench.py serve: refusing to time a run that failed its check")
        r = time_slice(run, float(cmd[1]), last)
        last = r["median_s"]
        print("SLICE " + json.dumps(r), flush=True)


def cpu_has_avx512():
    """Whether this process sees AVX-512F, as numpy's CPU dispatch detected it (False under
    bench's AVX2-only CPUID shim on an AVX-512 machine)."""
    core = getattr(np, "_core", None) or np.core
    return bool(core._multiarray_umath.__cpu_features__.get("AVX512F"))


def option(args, name, convert=str, default=None):
    """Removes "--name VALUE" from args and returns VALUE (converted), or the default."""
    if name not in args:
        return default
    i = args.index(name)
    value = convert(args[i + 1])
    del args[i:i + 2]
    return value


def main():
    args = sys.argv[1:]
    threads = option(args, "--threads", int, 0)
    onnx_path = option(args, "--onnx")
    if args[1:2] == ["export-onnx"]:
        _, _, case, data_dir, out_path = args
        cfg, params, tensors = load_case(data_dir, case)
        print("RESULT " + json.dumps(export_onnx(case, cfg, params, tensors, out_path)),
              flush=True)
        return
    framework, mode, case, data_dir = args
    cfg, params, tensors = load_case(data_dir, case)
    result = {"framework": framework, "case": case, "cpu_has_avx512": cpu_has_avx512()}
    if framework in ("onnxruntime", "openvino"):
        threads = threads or os.cpu_count()
        make = onnxruntime_runner if framework == "onnxruntime" else openvino_runner
        run, check, info = make(onnx_path, tensors, threads)
        compile_ = lambda: None
        result.update(info)
        result["threads"] = threads
    elif framework == "torch":
        import torch

        threads = threads or os.cpu_count()
        run, check = torch_runner(case, cfg, params, tensors, threads)
        compile_ = lambda: None
        result["version"] = torch.__version__
        result["threads"] = threads
    else:
        import jax

        run, check, compile_ = jax_runner(case, cfg, params, tensors, threads)
        result["version"] = jax.__version__
        result["threads"] = threads or os.cpu_count()
        result["xla_flags"] = os.environ.get("XLA_FLAGS", "")
    del params
    if mode == "serve":
        serve(run, check, result)
        return
    if mode == "time":
        t0 = time.perf_counter()
        run()  # the first run compiles (JAX) and gives the results that are checked
        result["first_run_s"] = time.perf_counter() - t0
        ok, errs = check()
        result["correct"] = bool(ok)
        result["errors"] = errs
        if ok:
            result.update(time_runs(run))
    elif mode == "mem":
        # Compiled (JAX) before the baseline, as Edifice's executable is loaded before its own.
        compile_()
        result["rss_before_bytes"] = status_bytes("VmRSS:")
        runs = 2 if kind_of(case) == "window_attention" else 3
        for _ in range(runs):
            run()
        result["runs"] = runs
        result["peak_rss_bytes"] = status_bytes("VmHWM:")
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
