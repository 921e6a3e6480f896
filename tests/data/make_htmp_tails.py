"""Make tests/data/htmp_tails.npz: mpmath reference values of log F (far below the bulk) and log(1 - F) (far
above it) for the HTMP law, where the phase formula alone cannot resolve them.

Run from the repository root:  .venv/bin/python tests/data/make_htmp_tails.py   (about a minute).

Lower tail: F = G / (pi b) with G = -arg U(b, -a, -y + i0) at 60 digits (G is the principal value there: the
script checks 0 < G < pi/2). Upper tail: 1 - F = int_s^inf f by mp.quad of the density formula in s at 30 digits.
"""

import pathlib

import mpmath as mp
import numpy as np

OUT = pathlib.Path(__file__).with_name("htmp_tails.npz")


def log_f(g, k, s):
    b = k / 2
    a = b * (1 / g - 1) - 1
    n = k / (2 * g)
    y = n * s
    return (mp.log(n) - mp.loggamma(b + 1) - mp.loggamma(n) + a * mp.log(y) - y
            - 2 * mp.log(abs(mp.hyperu(b, -a, -y))))


def log_cdf_lower(g, k, s):
    with mp.workdps(60):
        g, k, s = mp.mpf(g), mp.mpf(k), mp.mpf(s)
        # G = pi b - arg I = -arg U(b, -a, -y + i0), mpmath's value on the cut being the limit from above
        phase = -mp.arg(mp.hyperu(k / 2, -(k / 2 * (1 / g - 1) - 1), -k * s / (2 * g)))
        assert 0 < phase < mp.pi / 2, (g, k, s, phase)
        return float(mp.log(phase / (mp.pi * k / 2)))


def log_sf_upper(g, k, s):
    with mp.workdps(30):
        g, k, s = mp.mpf(g), mp.mpf(k), mp.mpf(s)
        step = 2 * g / k  # 1 / n: the decay length of the upper tail
        cuts = [s + c * step for c in (0, 1, 5, 40, 400, 10000)]
        return float(mp.log(mp.quad(lambda t: mp.exp(log_f(g, k, t)), cuts)))


def main():
    rows = []
    for g in (0.25, 0.5, 0.9, 1.0):
        lo = (1 - g ** 0.5) ** 2
        for k in (0.01, 0.3, 2.0, 40.0, 400.0):
            lower = [1e-14, 1e-6] + ([1e-3 * lo, 0.1 * lo, 0.5 * lo, 0.9 * lo] if lo > 1e-6 else [])
            for s in lower:
                if g == 1.0 and k == 400.0:
                    continue  # F(1e-6) ~ 0.05: G > pi/2, not a tail
                rows.append((g, k, s, -1, log_cdf_lower(g, k, s)))
            if k == 400.0:
                continue  # the quad reference needs too many digits there
            hi = (1 + g ** 0.5) ** 2
            for s in (1.2 * hi, 2 * hi, 30.0, 300.0):
                rows.append((g, k, s, +1, log_sf_upper(g, k, s)))
    table = np.array(rows)
    np.savez(OUT, gamma=table[:, 0], kappa=table[:, 1], s=table[:, 2], direction=table[:, 3], log_mass=table[:, 4])
    print(f"{len(rows)} reference values -> {OUT}")


if __name__ == "__main__":
    main()
