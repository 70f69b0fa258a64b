#!/usr/bin/env python3
"""Fits the polynomial coefficients of jit/src/codegen/vector_math.cpp.

Chebyshev fits (near-minimax) with mpmath (Debian: python3-mpmath), printed lowest degree first
as C++ arrays together with each fit's maximum absolute error. Not run by the build: the
printed arrays are pasted into vector_math.cpp; rerun this to check or change them.
"""

import mpmath as mp

mp.mp.dps = 60


def fit(name, f, a, b, n, center=0):
    c, err = mp.chebyfit(lambda t: f(t + center), [a - center, b - center], n, error=True)
    c = list(reversed(c))
    where = " in t = x - %s" % center if center else ""
    print("// %s on [%s, %s]%s, %d terms, max abs error %s" %
          (name, mp.nstr(a, 6), mp.nstr(b, 6), where, n, mp.nstr(err, 3)))
    print("constexpr double k%s[] = {%s};" % (name, ", ".join(repr(float(v)) for v in c)))


# exp: (e^r - 1 - r) / r^2 on |r| <= ln2/2 (widened a little for rounding in the reduction).
h = mp.log(2) / 2 * mp.mpf("1.0005")
P = lambda r: (mp.exp(r) - 1 - r) / r**2 if r != 0 else mp.mpf(1) / 2
fit("ExpF64", P, -h, h, 11)
fit("ExpF32", P, -h, h, 7)

# log: (2 atanh(s) - 2s) / s^3 in w = s^2, s = f / (2 + f), 1 + f in [sqrt2/2, sqrt2).
w = ((mp.sqrt(2) - 1) / (mp.sqrt(2) + 1))**2 * mp.mpf("1.0005")
def L(w):
    if w == 0:
        return mp.mpf(2) / 3
    s = mp.sqrt(w)
    return (2 * mp.atanh(s) - 2 * s) / s / w
fit("LogF64", L, 0, w, 7)
fit("LogF32", L, 0, w, 4)

# tanh (f64, |x| <= 0.36): (tanh(x) - x) / x^3 in w = x^2.
T = lambda w: (mp.tanh(mp.sqrt(w)) - mp.sqrt(w)) / mp.sqrt(w)**3 if w != 0 else mp.mpf(-1) / 3
fit("TanhSmallF64", T, 0, mp.mpf("0.36")**2, 9)

# erf: erf(x) / x in w = x^2 on [0, 1]; erfc(x) e^(x^2) per interval above.
def E(w):
    if w == 0:
        return 2 / mp.sqrt(mp.pi)
    x = mp.sqrt(w)
    return mp.erf(x) / x
fit("ErfSmallF64", E, 0, 1, 12)
fit("ErfSmallF32", E, 0, 1, 7)
G = lambda x: mp.erfc(x) * mp.exp(x * x)
fit("ErfcF64[0]", G, 1, 2, 16, mp.mpf("1.5"))
fit("ErfcF64[1]", G, 2, 3.5, 16, mp.mpf("2.75"))
fit("ErfcF64[2]", G, 3.5, 6, 16, mp.mpf("4.75"))
fit("ErfcF32", G, 1, 4, 12, mp.mpf("2.5"))


# erf_f32 (f32 arithmetic): every coefficient an f32. Least squares on Chebyshev nodes, relative
# to `scale`; the lowest unrounded coefficient is rounded to f32 and the higher ones refitted
# to what is left, so the rounding of each is absorbed by the others.
def to_f32(v):
    import struct
    return struct.unpack("f", struct.pack("f", float(v)))[0]


def fit_f32(name, f, a, b, n, center, scale):
    nodes = 150
    ts = [a - center + (b - a) * (1 - mp.cos(mp.pi * (k + mp.mpf(0.5)) / nodes)) / 2
          for k in range(nodes)]
    vals = [f(t + center) for t in ts]
    cs = []
    for i in range(n):
        A = mp.matrix(nodes, n - i)
        rhs = mp.matrix(nodes, 1)
        for k, t in enumerate(ts):
            w = 1 / scale(t + center)
            rhs[k] = (vals[k] - sum(c * t**j for j, c in enumerate(cs))) * w
            for j in range(n - i):
                A[k, j] = t**(i + j) * w
        cs.append(to_f32(mp.qr_solve(A, rhs)[0][0]))
    err = max(abs(sum(c * t**j for j, c in enumerate(cs)) - v) / scale(t + center)
              for t, v in zip(ts, vals))
    print("// %s on [%s, %s] in t = x - %s, %d f32 terms, max relative error %s" %
          (name, mp.nstr(a, 6), mp.nstr(b, 6), mp.nstr(center, 6), n, mp.nstr(err, 3)))
    print("constexpr float k%s[] = {%s};" % (name, ", ".join("%.9gf" % c for c in cs)))


# erf(x)/x - 1 in w = x^2 around 0.5 (relative to erf(x)/x), and erfc(x) e^(x^2) on [1, 4].
fit_f32("ErfSmallF32Arith", lambda w: E(w) - 1, 0, 1, 7, mp.mpf("0.5"), E)
fit_f32("ErfcF32Arith", G, 1, 4, 12, mp.mpf("2.5"), G)
