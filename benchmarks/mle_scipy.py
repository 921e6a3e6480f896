"""Maximum-likelihood fit of one layer's HTMP parameters with scipy.optimize.minimize on the public functions.

Run: python benchmarks/mle_scipy.py [--m 5000] [--starts 6] [--no-checkpoint]

The negative log-likelihood -sum log f(x | gamma, kappa, scale) (plus n_censored * log F(floor) for eigenvalues
below the floor) is minimised in (log kappa, log scale), with gamma fixed by the layer's shape:

1. a synthetic spectrum, `hteval.sample_htmp_spectrum(0, m, 0.5, 4.0, 0.02)` (one exact finite-size matrix), by
   Nelder-Mead from `--starts` starting points (up to 200 iterations each), calling `hteval.htmp_logpdf` eagerly,
   and by L-BFGS-B with the gradient of a jitted `jax.value_and_grad`;
2. the first feed-forward layer of the bundled all-MiniLM-L6-v2 checkpoint
   (`hteval.load_spectra(hteval.io.bundled_checkpoint())`), by L-BFGS-B the same way.

Prints each fit's estimates, negative log-likelihood, evaluations, wall time of the first call (compilation
included) and of the whole fit, and the process's resident memory before and after.
"""

from __future__ import annotations

import argparse
import datetime
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from scipy.optimize import minimize  # noqa: E402

import hteval  # noqa: E402
import hteval.io  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def negative_log_likelihood(x, gamma, n_censored=0, floor=0.0):
    """theta = (log kappa, log scale) -> -log L, for eager calls (each a call of the compiled program)."""

    def nll(theta):
        kappa, scale = np.exp(theta)
        value = -float(jnp.sum(hteval.htmp_logpdf(x, gamma, kappa, scale)))
        if n_censored:
            value -= n_censored * float(hteval.htmp_log_cdf(floor, gamma, kappa, scale))
        return value

    return nll


def value_and_gradient(x, gamma, n_censored=0, floor=0.0):
    """theta -> (-log L, its gradient) as numpy, one jitted program."""
    x = jnp.asarray(x)

    @jax.jit
    @jax.value_and_grad
    def nll(theta):
        kappa, scale = jnp.exp(theta[0]), jnp.exp(theta[1])
        value = -jnp.sum(hteval.htmp_logpdf(x, gamma, kappa, scale))
        if n_censored:
            value = value - n_censored * hteval.htmp_log_cdf(floor, gamma, kappa, scale)
        return value

    def numpy_nll(theta):
        value, grad = nll(jnp.asarray(theta))
        return float(value), np.asarray(grad)

    return numpy_nll


def timed_fit(label, fun, x0, **options):
    start = time.perf_counter()
    fun(np.asarray(x0, dtype=float))
    first = time.perf_counter() - start
    result = minimize(fun, x0, **options)
    total = time.perf_counter() - start
    kappa, scale = np.exp(result.x)
    print(f"  {label}: kappa = {kappa:.4f}, scale = {scale:.6g}, -log L = {result.fun:.4f}, {result.nfev} evaluations, "
          f"first call {first:.2f} s, fit {total:.2f} s ({result.message})")
    return result


def synthetic(m: int, starts: int) -> None:
    gamma, kappa, scale = 0.5, 4.0, 0.02
    x = hteval.sample_htmp_spectrum(0, m, gamma, kappa, scale)
    print(f"synthetic HTMP spectrum: m = {m}, gamma = {gamma}, true kappa = {kappa}, scale = {scale}")
    rng = np.random.default_rng(1)
    x0s = np.log([kappa, float(np.mean(x))]) + rng.normal(0.0, 1.0, (starts, 2))
    nll = negative_log_likelihood(x, gamma)
    start = time.perf_counter()
    best = min((timed_fit(f"Nelder-Mead, start {i}", nll, x0, method="Nelder-Mead",
                          options={"maxiter": 200, "xatol": 1e-6, "fatol": 1e-8}) for i, x0 in enumerate(x0s)),
               key=lambda r: r.fun)
    print(f"  {starts} Nelder-Mead starts: {time.perf_counter() - start:.2f} s, best kappa = {np.exp(best.x[0]):.4f}, "
          f"scale = {np.exp(best.x[1]):.6g}")
    timed_fit("L-BFGS-B, jitted value and gradient", value_and_gradient(x, gamma), x0s[0], jac=True,
              method="L-BFGS-B")


#: the first transformer block's feed-forward input matrix (1536 x 384)
LAYER = "encoder.layer.0.intermediate.dense.weight"


def checkpoint_layer() -> None:
    path = hteval.io.bundled_checkpoint()
    start = time.perf_counter()
    layers = hteval.load_spectra(path)
    rec = next(r for r in layers if r.name == LAYER)
    print(f"bundled checkpoint ({len(layers)} layers read in {time.perf_counter() - start:.1f} s): {rec.name}, "
          f"N x M = {rec.N} x {rec.M}, gamma = {rec.gamma:.4f}, {rec.n_eigs} eigenvalues, {rec.n_censored} censored")
    x0 = np.log([1.0, float(np.mean(rec.eigenvalues))])
    timed_fit("L-BFGS-B, jitted value and gradient",
              value_and_gradient(rec.eigenvalues, rec.gamma, rec.n_censored, rec.floor), x0, jac=True,
              method="L-BFGS-B", bounds=[(np.log(1e-3), np.log(1e3)), (None, None)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--m", type=int, default=5000)
    parser.add_argument("--starts", type=int, default=6)
    parser.add_argument("--no-checkpoint", action="store_true")
    args = parser.parse_args()
    print(f"{datetime.date.today()}, jax {jax.__version__}, {jax.devices()[0].device_kind}")
    before = rss_mb()
    synthetic(args.m, args.starts)
    if not args.no_checkpoint:
        checkpoint_layer()
    print(f"resident memory: {before:.0f} MB before the fits, {rss_mb():.0f} MB after")


if __name__ == "__main__":
    main()
