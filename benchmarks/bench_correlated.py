"""Cost of the correlated Marchenko-Pastur model: its density's value and gradient, and one fit.

Run: python benchmarks/bench_correlated.py [--m 384] [--nu 1.0] [--gamma 0.5] [--chains 4 --draws 1000]
                                           [--sampler nuts] [--skip-gradient]
Prints the device, the milliseconds per value-and-gradient of the log-likelihood over m eigenvalues of a
W = X Sigma^(1/2) spectrum (t_i ~ i^-nu; what NUTS pays per leapfrog step), then the wall time (compilation
included), convergence and nu's posterior of one fit of the model to that spectrum, with its posterior predictive
spectra and KS p-value as a comparison computes them. The default sampler draws exactly (quadrature); with
--sampler nuts the warm-up is as long as the draws. Run it in a fresh process: times include compilation.
"""

from __future__ import annotations

import time

START = time.perf_counter()

import argparse  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

jax.config.update("jax_enable_x64", True)

from hteval.densities.correlated_mp import correlated_mp_logpdf  # noqa: E402
from hteval.infer import fit  # noqa: E402
from hteval.predictive import add_posterior_predictive, ks_pvalue  # noqa: E402
from hteval.sampling import sample_correlated_spectrum  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--m", type=int, default=384)
    parser.add_argument("--nu", type=float, default=1.0)
    parser.add_argument("--gamma", type=float, default=0.5)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--sampler", default="auto", help="auto (exact draws) or nuts")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--skip-gradient", action="store_true", help="time the fit only (a cold process)")
    args = parser.parse_args()
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), JAX {jax.__version__}")
    x = sample_correlated_spectrum(round(args.m / args.gamma), args.m, args.nu, seed=1)
    if not args.skip_gradient:
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
                 warmup=args.draws, seed=0, sampler=args.sampler)
    wall = time.perf_counter() - start
    row = result.summary.loc["nu"]
    how = result.settings["sampler"].split(":")[0]
    if how == "NUTS":
        how += f", {float(result.data['sample_stats']['n_steps'].mean()):.1f} leapfrog steps a draw"
    else:
        how += f", {result.diagnostics['quadrature']}"
    print(f"fit, {args.chains} x {args.draws} draws: {wall:.1f} s ({how}), converged {result.converged} "
          f"{result.diagnostics['reasons']}")
    print(f"nu = {args.nu}: median {row['median']:.3f}, 90% [{row['ci_low']:.3f}, {row['ci_high']:.3f}], "
          f"ess_bulk {row['ess_bulk']:.0f}")
    start = time.perf_counter()
    add_posterior_predictive(result, 100, 0)
    p_value = ks_pvalue(result, 200, 0)
    end = time.perf_counter()
    print(f"predictive spectra and KS p-value ({p_value:.3f}): {end - start:.1f} s; fit and checks "
          f"{end - start + wall:.1f} s (process: {end - START:.1f} s)")


if __name__ == "__main__":
    main()
