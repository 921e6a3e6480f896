"""Make the reference HTMP CDF table tests/data/htmp_cdf_g0.5_k2.npz (SPEC section 2) with mpmath.

Run from the repository root:  .venv/bin/python tests/data/make_htmp_cdf.py   (about 45 s on one core).

The CDF on the grid comes from the phase formula F(y) = (arg U(b,-a,-y-i0) - arg U(b,-a,-0)) / (pi b),
unwrapped along the grid. It is checked against mp.quad of the density formula (log f with |U(b,-a,-y)|) at a
few points, and the density's normalisation, mean and variance against E[x] = scale and
Var[x] = scale^2 gamma (1 + 2/kappa). The script stops (AssertionError) if any check fails, so a table on
disk has passed them.
"""

import datetime
import pathlib

import mpmath as mp
import numpy as np

GAMMA, KAPPA, SCALE = mp.mpf("0.5"), mp.mpf(2), mp.mpf(1)
DPS = 30
OUT = pathlib.Path(__file__).with_name("htmp_cdf_g0.5_k2.npz")

A = KAPPA / 2 * (1 / GAMMA - 1) - 1  # = 0 here: an integer a, the hard case for closed forms
B = KAPPA / 2
N_ = KAPPA / (2 * GAMMA)  # a + b + 1


def y_of(x):
    return KAPPA * x / (2 * GAMMA * SCALE)


def hyperu_below_cut(y):
    """U(b, -a, -y - i0): mpmath's principal value at -y is the limit from above, so take its conjugate."""
    u = mp.hyperu(B, -A, -y)
    assert isinstance(u, mp.mpc), "mpmath should return a complex value on the cut"
    return mp.conj(u)


def density(x):
    """f(x) of SPEC section 2."""
    if x <= 0:
        return mp.mpf(0)
    y = y_of(x)
    log_f = (mp.log(KAPPA / (2 * GAMMA * SCALE)) - mp.loggamma(B + 1) - mp.loggamma(N_)
             + A * mp.log(y) - y - 2 * mp.log(abs(mp.hyperu(B, -A, -y))))
    return mp.exp(log_f)


def cdf_by_phase(xs):
    phase0 = mp.arg(hyperu_below_cut(mp.mpf("1e-25")))
    phases = np.array([float(mp.arg(hyperu_below_cut(y_of(mp.mpf(x)))) - phase0) for x in xs])
    return np.unwrap(phases) / float(mp.pi * B)


def main():
    mp.mp.dps = DPS
    x = np.unique(np.concatenate([np.linspace(0.0, 6.0, 601), np.linspace(6.0, 30.0, 241)]))
    cdf = np.concatenate([[0.0], cdf_by_phase(x[1:])])
    assert np.all(np.diff(cdf) >= 0) and abs(cdf[-1] - 1) < 1e-12, cdf[-1]

    breaks = [0, 0.25, 1, 2, 4, 8, 30, mp.inf]
    total = mp.quad(density, breaks)
    mean = mp.quad(lambda t: t * density(t), breaks)
    second = mp.quad(lambda t: t * t * density(t), breaks)
    assert abs(total - 1) < 1e-12 and abs(mean - SCALE) < 1e-12, (total, mean)
    assert abs(second - mean**2 - SCALE**2 * GAMMA * (1 + 2 / KAPPA)) < 1e-12, second
    for x_check in (0.05, 0.3, 1.0, 2.5, 6.0):
        by_quad = mp.quad(density, [b for b in breaks if b < x_check] + [x_check])
        i = int(np.argmin(abs(x - x_check)))
        assert abs(x[i] - x_check) < 1e-12 and abs(by_quad - cdf[i]) < 1e-12, (x_check, by_quad, cdf[i])

    np.savez(OUT, x=x, cdf=cdf, gamma=float(GAMMA), kappa=float(KAPPA), scale=float(SCALE),
             made=f"{datetime.date.today()} mpmath {mp.__version__} numpy {np.__version__} dps {DPS}")
    print(f"wrote {OUT}: {x.size} points, F(30) = 1 - {1 - cdf[-1]:.1e}")


if __name__ == "__main__":
    main()
