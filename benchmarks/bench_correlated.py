"""Cost of the correlated Marchenko-Pastur model (issue 4): its density's value and gradient, and one fit.

Run: python benchmarks/bench_correlated.py [--m 384] [--nu 1.0] [--gamma 0.5] [--chains 2 --draws 500]
Prints the device, the milliseconds per value-and-gradient of the log-likelihood over m eigenvalues of a
W = X Sigma^(1/2) spectrum (t_i ~ i^-nu), then the wall time (compilation included), convergence and nu's
posterior of one fit of the model to that spectrum.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp

jax.config.update("jax_enable_x64", True)

from hteval.densities.correlated_mp import correlated_mp_logpdf  # noqa: E402
from hteval.infer import fit  # noqa: E402
from hteval.sampling import sample_correlated_spectrum  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--m", type=int, default=384)
    parser.add_argument("--nu", type=float, default=1.0)
    parser.add_argument("--gamma", type=float, default=0.5)
    parser.add_argument("--chains", type=int, default=2)
    parser.add_argument("--draws", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), JAX {jax.__version__}")
    x = sample_correlated_spectrum(round(args.m / args.gamma), args.m, args.nu, seed=1)
    value_and_grad = jax.jit(jax.value_and_grad(
        lambda p: jnp.sum(correlated_mp_logpdf(x, args.gamma, p[0], p[1], args.m))))
    p = jnp.array([args.nu, 1.0])
    start = time.perf_counter()
    jax.block_until_ready(value_and_grad(p))
    compiled = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(args.repeats):
        jax.block_until_ready(value_and_grad(p))
    per_call = (time.perf_counter() - start) / args.repeats
    print(f"value and gradient over {args.m} eigenvalues: {1e3 * per_call:.2f} ms ({compiled:.1f} s to compile)")
    start = time.perf_counter()
    result = fit(x, gamma=args.gamma, model="correlated-mp", chains=args.chains, draws=args.draws,
                 warmup=args.draws, seed=0)
    wall = time.perf_counter() - start
    row = result.summary.loc["nu"]
    steps = float(result.data["sample_stats"]["n_steps"].mean())
    print(f"fit, {args.chains} x {args.draws} draws after {args.draws}: {wall:.1f} s, {steps:.1f} leapfrog steps a "
          f"draw, converged {result.converged} {result.diagnostics['reasons']}")
    print(f"nu = {args.nu}: median {row['median']:.3f}, 90% [{row['ci_low']:.3f}, {row['ci_high']:.3f}], "
          f"ess_bulk {row['ess_bulk']:.0f}")


if __name__ == "__main__":
    main()
