"""Time of the HTMP log-density plus its gradient over many eigenvalues, next to jax.scipy.special.gammaln.

Run: python benchmarks/bench_density.py [--n 100000] [--repeats 20]
Prints the warm, jitted wall time of value+gradient (in kappa and scale) of sum(log f) for one layer-sized call,
the time of gammaln on the same array in the same run, their ratio, and the one-off cost of building the
per-gamma contour table.
"""

from __future__ import annotations

import argparse
import platform
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.scipy.special import gammaln  # noqa: E402

from hteval.densities.htmp import htmp_logpdf  # noqa: E402
from hteval.sampling import sample_htmp_spectrum  # noqa: E402
from hteval.special.htmp_table import htmp_table, kappa_table  # noqa: E402


def _best_of(fn, repeats):
    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--gamma", type=float, default=0.5)
    args = parser.parse_args()

    start = time.perf_counter()
    htmp_table(args.gamma)
    kappa_table(args.gamma)
    build = time.perf_counter() - start
    x = jnp.asarray(np.concatenate([sample_htmp_spectrum(seed, 1000, args.gamma, 2.0) for seed in
                                    range(args.n // 1000 + 1)])[: args.n])

    # x is an argument, not a closure constant, so that XLA cannot fold any of the work at compile time
    value_and_grad = jax.jit(jax.value_and_grad(
        lambda k, sc, xs: jnp.sum(htmp_logpdf(xs, args.gamma, k, sc)), argnums=(0, 1)))
    t_htmp = _best_of(lambda: value_and_grad(2.0, 1.0, x), args.repeats)
    gammaln_sum = jax.jit(lambda xs: jnp.sum(gammaln(xs)))
    t_gammaln = _best_of(lambda: gammaln_sum(x), args.repeats)
    print(f"device: {jax.devices()[0].device_kind} ({platform.processor() or platform.machine()}), "
          f"{args.n} eigenvalues, gamma = {args.gamma}")
    print(f"contour + kappa table build (once per gamma): {build:.2f} s")
    print(f"htmp_logpdf value+grad (kappa, scale): {t_htmp * 1e3:.2f} ms")
    print(f"gammaln value:                         {t_gammaln * 1e3:.2f} ms")
    print(f"ratio:                                 {t_htmp / t_gammaln:.1f}")


if __name__ == "__main__":
    main()
