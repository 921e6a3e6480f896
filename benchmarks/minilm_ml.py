"""Posterior median of kappa (NUTS) against an independent maximum-likelihood fit, on the bundled MiniLM layers.

Run: python benchmarks/minilm_ml.py [--layers NAME ...] [--chains 4 --draws 1000]
The ML fit maximises the same censored iid HTMP likelihood with scipy's L-BFGS-B over (log kappa, log scale) from
a grid of starts, so it shares the density but nothing of the sampler. Prints, per layer, the posterior median and
sd of kappa, the ML kappa, and whether |median - ML| <= sd, then a count.
"""

from __future__ import annotations

import argparse
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from scipy.optimize import minimize  # noqa: E402

from hteval.densities.htmp import htmp_log_cdf, htmp_logpdf  # noqa: E402
from hteval.infer import fit  # noqa: E402
from hteval.io.bundled import bundled_checkpoint  # noqa: E402
from hteval.spectra import load_spectra  # noqa: E402


def ml_kappa(rec) -> tuple[float, float]:
    """(kappa, scale) maximising sum log f(x_i) + n_censored log F(floor) over kappa in [1e-3, 1e3]."""
    x = jnp.asarray(rec.eigenvalues)

    def nll(theta):
        kappa, scale = jnp.exp(theta[0]), jnp.exp(theta[1])
        total = jnp.sum(htmp_logpdf(x, rec.gamma, kappa, scale))
        if rec.n_censored:
            total = total + rec.n_censored * htmp_log_cdf(rec.floor, rec.gamma, kappa, scale)
        return -total

    value_and_grad = jax.jit(jax.value_and_grad(nll))

    def objective(theta):
        v, g = value_and_grad(jnp.asarray(theta))
        return float(v), np.asarray(g)

    log_mean = float(np.log(np.mean(rec.eigenvalues)))
    best = None
    for log_kappa in np.log([0.01, 0.3, 3.0, 100.0]):
        res = minimize(objective, [log_kappa, log_mean], jac=True, method="L-BFGS-B",
                       bounds=[(np.log(1e-3), np.log(1e3)), (log_mean - 10, log_mean + 10)])
        if best is None or res.fun < best.fun:
            best = res
    return float(np.exp(best.x[0])), float(np.exp(best.x[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", nargs="*", help="layer names (default: every eligible layer)")
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--draws", type=int, default=1000)
    args = parser.parse_args()
    layers = load_spectra(bundled_checkpoint(), layers=args.layers or None)
    agree = 0
    for rec in layers:
        start = time.perf_counter()
        kappa_ml, _ = ml_kappa(rec)
        result = fit(rec, model="htmp", chains=args.chains, draws=args.draws, warmup=args.draws)
        row = result.summary.loc["kappa"]
        z = abs(row["median"] - kappa_ml) / row["sd"]
        agree += z <= 1
        print(f"{rec.name:55s} gamma {rec.gamma:.3f} M {rec.M:4d} censored {rec.n_censored:3d}: median "
              f"{row['median']:.4g} sd {row['sd']:.3g} ML {kappa_ml:.4g} |diff|/sd {z:.2f} {'ok' if z <= 1 else 'MISS'}"
              f" converged {result.converged} ({time.perf_counter() - start:.0f} s)", flush=True)
    print(f"posterior median within one sd of the ML kappa: {agree}/{len(layers)} layers")


if __name__ == "__main__":
    main()
