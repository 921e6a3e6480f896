"""Partial pooling (`hteval.hierarchy.pool_kappa`) where the population posterior is hardest: layers that agree.

Run: python benchmarks/pooling_edge_cases.py
Each case gives layers whose kappa posteriors are exactly log-normal (normal quantiles of log kappa): 3 identical
layers, 2 identical layers, 5 nearly identical ones and 6 spread ones, three seeds each. Prints the grid's
self-check (how far the posterior moments of mu and tau move between the 64 x 64 and 32 x 32 grids, in posterior
sd, and the mass in the outer cells), the model-level kappa and the wall time. The funnel these cases make
(mu pinned when tau -> 0) is what NUTS failed on before the grid replaced it.
"""

from __future__ import annotations

import time

import jax
import numpy as np
from scipy import stats

jax.config.update("jax_enable_x64", True)

from hteval.hierarchy import pool_kappa  # noqa: E402


def main() -> None:
    q = stats.norm.ppf((np.arange(1200) + 0.5) / 1200)
    cases = {
        "3 identical": {f"l{i}": np.exp(0.5 + 0.1 * q) for i in range(3)},
        "2 identical": {f"l{i}": np.exp(0.5 + 0.2 * q) for i in range(2)},
        "5 close": {f"l{i}": np.exp(0.5 + 0.02 * i + 0.15 * q) for i in range(5)},
        "6 spread": {f"l{i}": np.exp(c + 0.4 * q) for i, c in enumerate([0.2, 0.8, 1.5, -0.3, 1.0, 0.5])},
    }
    for name, draws in cases.items():
        for seed in (0, 1, 2):
            start = time.perf_counter()
            p = pool_kappa(draws, seed=seed)
            median, lo, hi = p.interval(p.kappa)
            d = p.diagnostics
            print(f"{name:12s} seed {seed}: converged {d['converged']}, moment shift {d['moment_shift']:.1e} sd, "
                  f"edge mass {d['edge_mass']:.1e}, tau median {np.median(p.tau):.3f}, model-level kappa "
                  f"{median:.3f} [{lo:.3f}, {hi:.3f}], {time.perf_counter() - start:.1f} s", flush=True)


if __name__ == "__main__":
    main()
