"""Wall time of comparing every ensemble model on one 384-eigenvalue layer, per model and in total.

Run: python benchmarks/bench_compare.py [--m 384] [--models mp,htmp,...] [--chains 4 --draws 1000] [--sampler nuts]
The spectrum is an exact finite-size HTMP sample (kappa 2, gamma 0.5). Times include compilation (run it in a
fresh process: the JAX compilation cache is not used here), each model's fit and posterior predictive spectra,
then PSIS-LOO with the stacking weights and the KS posterior predictive p-values; `process` adds the imports, in
wall and CPU time (others' processes on a shared machine stretch the first, not the second). The table printed at
the end is compare()'s.
"""

from __future__ import annotations

import time

START, START_CPU = time.perf_counter(), time.process_time()

import argparse  # noqa: E402
import sys  # noqa: E402

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

from hteval.model_comparison import DEFAULT_MODELS, compare_fits, fit_models  # noqa: E402
from hteval.sampling import sample_htmp_spectrum  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--m", type=int, default=384)
    parser.add_argument("--gamma", type=float, default=0.5)
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS))
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--sampler", default="auto", help="auto (exact where a model has it), or nuts for all")
    args = parser.parse_args()
    print(f"device: {jax.devices()[0].device_kind}")
    x = sample_htmp_spectrum(0, args.m, args.gamma, 2.0)
    times = {}
    last = [time.perf_counter()]

    def clock(model, result):
        now = time.perf_counter()
        times[model] = now - last[0]
        last[0] = now
        how = result.settings["sampler"].split(":")[0]
        print(f"{model:14s} {times[model]:6.1f} s (fit, compilation and predictive draws; {how}"
              f"{'' if result.converged else ', not converged'})", flush=True)

    ks_seconds = [0.0]
    comparison_module = sys.modules["hteval.model_comparison"]
    ppc_pvalue = comparison_module.ppc_pvalue

    def timed_ppc_pvalue(*a, **k):
        begin = time.perf_counter()
        try:
            return ppc_pvalue(*a, **k)
        finally:
            ks_seconds[0] += time.perf_counter() - begin

    comparison_module.ppc_pvalue = timed_ppc_pvalue
    start = time.perf_counter()
    fits = {}
    for model in args.models.split(","):
        # the power law's numpyro model sums its breakpoint out of the joint likelihood: NUTS on it has no
        # pointwise log-likelihood to compare with, so it keeps its exact draws under --sampler nuts
        sampler = "auto" if model == "powerlaw" else args.sampler
        fits.update(fit_models(x, gamma=args.gamma, models=(model,), chains=args.chains, draws=args.draws,
                               warmup=args.draws, on_fit=clock, sampler=sampler))
    before = time.perf_counter()
    comparison = compare_fits(fits)
    after = time.perf_counter()
    print(f"LOO and stacking: {after - before - ks_seconds[0]:.1f} s; posterior predictive p-values: "
          f"{ks_seconds[0]:.1f} s")
    print(f"total: {after - start:.1f} s for {len(fits)} models on m = {args.m} (process: {after - START:.1f} s wall, "
          f"{time.process_time() - START_CPU:.1f} s CPU: on a shared machine the CPU time is the steadier figure)")
    print(comparison.table.to_string(float_format="{:.4g}".format))


if __name__ == "__main__":
    main()
