"""Per-layer fit time of the default engine (htmp-exact drawn exactly) and of NUTS.

Run: python benchmarks/bench_fit.py [--sizes 384 1000 2048 4096] [--repeats 7] [--nuts]

The exact engine's time is what a whole-network analysis spends per layer beside the singular values, the figures
and any goodness-of-fit check: from the layer's eigenvalues (a record with censoring floor) to its summary table,
i.e. the sufficient statistics (the O(M^2) pairwise sum included), the quadrature with its checks, 4 x 1000
independent draws and the summary (median, mean, sd, ETI, HDI). Each size is timed `--repeats` times on fresh exact
spectra in this one process (the first call of the process, which pays for scipy's lazy imports, is excluded and
printed apart); the median is printed with the range. --nuts also times `sampler="nuts"` (4 chains x 1000 draws
after 1000 warm-up; compilation included for the first layer of a shape, as a cold user meets it). The
goodness-of-fit check (24 exact replicate spectra) is timed apart and printed beside each size.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from hteval.infer import eigenvalue_spectrum, fit
from hteval.sampling import sample_htmp_spectrum

TARGETS = {384: 0.020, 4096: 0.3}  # seconds: the per-layer bounds the default engine is held to


def time_exact(m: int, gamma: float, repeats: int) -> tuple[list[float], list[float]]:
    """Fit times and, apart, the times of each fit's goodness-of-fit check (`FitResult.ppc_pvalue`)."""
    times, checks = [], []
    for r in range(repeats):
        rec = eigenvalue_spectrum(sample_htmp_spectrum(1000 * m + r, m, gamma, 2.0, 1.0), gamma=gamma)
        start = time.perf_counter()
        result = fit(rec)
        times.append(time.perf_counter() - start)
        assert result.converged, result.diagnostics
        start = time.perf_counter()
        _ = result.ppc_pvalue
        checks.append(time.perf_counter() - start)
    return times, checks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[384, 1000, 2048, 4096])
    parser.add_argument("--gamma", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--nuts", action="store_true", help="also time NUTS (minutes)")
    args = parser.parse_args()
    start = time.perf_counter()
    fit(eigenvalue_spectrum(sample_htmp_spectrum(0, 50, args.gamma, 2.0), gamma=args.gamma))
    print(f"first call of the process (lazy imports): {time.perf_counter() - start:.3f} s")
    for m in args.sizes:
        times, checks = time_exact(m, args.gamma, args.repeats)
        target = f" (bound {TARGETS[m]:g} s)" if m in TARGETS else ""
        print(f"exact, M = {m:5d}: median {np.median(times) * 1e3:7.1f} ms, range {min(times) * 1e3:.1f}-"
              f"{max(times) * 1e3:.1f} ms over {args.repeats} layers{target}; goodness-of-fit check apart: median "
              f"{np.median(checks) * 1e3:.0f} ms", flush=True)
    if args.nuts:
        for m in args.sizes:
            x = sample_htmp_spectrum(m, m, args.gamma, 2.0)
            start = time.perf_counter()
            result = fit(x, gamma=args.gamma, sampler="nuts")
            wall = time.perf_counter() - start
            start = time.perf_counter()
            fit(sample_htmp_spectrum(m + 1, m, args.gamma, 2.0), gamma=args.gamma, sampler="nuts")
            again = time.perf_counter() - start
            print(f"NUTS,  M = {m:5d}: {wall:6.1f} s with compilation, {again:5.1f} s for a second layer of the same "
                  f"shape; min bulk ESS {result.summary['ess_bulk'].min():.0f}; converged {result.converged}",
                  flush=True)


if __name__ == "__main__":
    main()
