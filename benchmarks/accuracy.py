"""Max absolute error of htmp_logpdf against the mpmath reference values of ../shared/reference.

Run: python benchmarks/accuracy.py   (about 4 minutes: one contour table per distinct gamma)
"""

from __future__ import annotations

import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from hteval.densities.htmp import htmp_logpdf  # noqa: E402

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"


def max_error(ref) -> float:
    """Max |log f - reference| over a reference table (keys gamma, kappa, scale, x, logpdf).

    Each gamma builds its contour table once. A gamma with several (kappa, scale) gets one compiled program with
    kappa and scale traced; a gamma with one is evaluated eagerly (compiling would cost more than it saves).
    """
    worst = 0.0
    for g in np.unique(ref["gamma"]):
        rows = ref["gamma"] == g
        params = np.stack([ref["kappa"][rows], ref["scale"][rows]], 1)
        logpdf = lambda x, k, sc, g=float(g): htmp_logpdf(x, g, k, sc)  # noqa: E731
        if len(np.unique(params, axis=0)) > 1:
            logpdf = jax.jit(logpdf)
        for k, sc in np.unique(params, axis=0):
            m = rows & (ref["kappa"] == k) & (ref["scale"] == sc)
            got = np.asarray(logpdf(jnp.asarray(ref["x"][m]), k, sc))
            worst = max(worst, float(np.max(np.abs(got - ref["logpdf"][m]))))
    return worst


def main() -> None:
    for name in ("htmp_logpdf_reference.npz", "htmp_logpdf_reference_square.npz"):
        d = np.load(REFERENCE / name)
        start = time.perf_counter()
        worst = max_error(d)
        print(f"{name}: {len(d['x'])} points, max |error of log f| = {worst:.2e} "
              f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
