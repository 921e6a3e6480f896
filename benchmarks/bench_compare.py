"""Wall time of comparing every ensemble model on one 384-eigenvalue layer (issue 4), per model and in total.

Run: python benchmarks/bench_compare.py [--m 384] [--models mp,htmp,...] [--chains 4 --draws 1000]
The spectrum is an exact finite-size HTMP sample (kappa 2, gamma 0.5). Times include compilation, the posterior
predictive spectra and the KS posterior predictive p-value; the table printed at the end is compare()'s.
"""

from __future__ import annotations

import argparse
import time

import jax

jax.config.update("jax_enable_x64", True)

from hteval.compare import DEFAULT_MODELS, compare_fits, fit_models  # noqa: E402
from hteval.sampling import sample_htmp_spectrum  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--m", type=int, default=384)
    parser.add_argument("--gamma", type=float, default=0.5)
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS))
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--draws", type=int, default=1000)
    args = parser.parse_args()
    print(f"device: {jax.devices()[0].device_kind}")
    x = sample_htmp_spectrum(0, args.m, args.gamma, 2.0)
    times = {}
    last = [time.perf_counter()]

    def clock(model, _result):
        now = time.perf_counter()
        times[model] = now - last[0]
        last[0] = now
        print(f"{model:14s} {times[model]:6.1f} s (fit, compilation and predictive draws)", flush=True)

    start = time.perf_counter()
    fits = fit_models(x, gamma=args.gamma, models=args.models.split(","), chains=args.chains, draws=args.draws,
                      warmup=args.draws, on_fit=clock)
    before = time.perf_counter()
    comparison = compare_fits(fits)
    total = time.perf_counter() - start
    print(f"LOO, stacking and KS p-values: {time.perf_counter() - before:.1f} s")
    print(f"total: {total:.1f} s for {len(fits)} models on m = {args.m}")
    print(comparison.table.to_string(float_format="{:.4g}".format))


if __name__ == "__main__":
    main()
