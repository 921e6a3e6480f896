"""Calibrate the "decisive" threshold of `hteval compare` on exact simulated spectra.

PSIS-LOO's standard error of an elpd difference treats the pointwise terms as independent, but the eigenvalues of
one matrix repel. For each scenario this script simulates spectra from a known ensemble, fits the true model and
its competitors, and for every (truth, competitor) pair records the elpd difference d = elpd(competitor) -
elpd(truth) and LOO's standard error se of it. It prints, per pair:

* se_ratio = sd of d over replicate spectra / root-mean-square of se: 1 when LOO's se is right, > 1 when it is too
  small (the threshold must then grow by that factor);
* the largest z = d / se seen (a competitor beating the truth by z standard errors) and how often z > 2, 3, 4;
* how often the truth beats the competitor by more than 2, 3, 4 standard errors (the power of each threshold).

Run: python benchmarks/calibrate_decisive.py [--replicates 12] [--m 300] [--chains 2 --draws 500]
"""

from __future__ import annotations

import argparse
import time
import warnings

import jax

jax.config.update("jax_enable_x64", True)

import arviz as az  # noqa: E402
import numpy as np  # noqa: E402

from hteval.infer import fit  # noqa: E402
from hteval.model_comparison import DECISIVE_Z  # noqa: E402
from hteval.sampling import sample_correlated_spectrum, sample_htmp_spectrum, sample_mp_spectrum  # noqa: E402

THRESHOLDS = (2.0, 3.0, 4.0)


def _scenarios(m: int, gamma: float):
    """name -> (simulator(seed), true model, competitors)."""
    n = int(round(m / gamma))
    return {
        "white Wishart": (lambda s: sample_mp_spectrum(s, m, gamma), "mp", ("htmp",)),
        "HTMP kappa=1": (lambda s: sample_htmp_spectrum(s, m, gamma, 1.0), "htmp", ("powerlaw", "lognormal", "mp")),
        "HTMP kappa=10": (lambda s: sample_htmp_spectrum(s, m, gamma, 10.0), "htmp", ("mp",)),
        "correlated nu=1": (lambda s: sample_correlated_spectrum(n, m, 1.0, seed=s), "correlated-mp",
                            ("htmp", "mp")),
    }


def _pointwise_elpd(result) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(az.loo(result.data, pointwise=True).elpd_i).ravel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicates", type=int, default=12)
    parser.add_argument("--m", type=int, default=300)
    parser.add_argument("--gamma", type=float, default=0.5)
    parser.add_argument("--chains", type=int, default=2)
    parser.add_argument("--draws", type=int, default=500)
    parser.add_argument("--scenarios", default="", help="comma-separated subset of the scenario names")
    args = parser.parse_args()
    scenarios = _scenarios(args.m, args.gamma)
    if args.scenarios:
        scenarios = {k: v for k, v in scenarios.items() if k in args.scenarios.split(",")}
    print(f"m = {args.m}, gamma = {args.gamma}, {args.replicates} spectra per scenario, "
          f"{args.chains} x {args.draws} draws; hteval's threshold now: {DECISIVE_Z} se", flush=True)
    start = time.perf_counter()
    rows = []
    for scenario, (simulate, truth, competitors) in scenarios.items():
        d = {c: [] for c in competitors}
        se = {c: [] for c in competitors}
        for r in range(args.replicates):
            seed = 1000 + r
            x = simulate(seed)
            kwargs = dict(gamma=args.gamma, seed=seed, chains=args.chains, draws=args.draws, warmup=args.draws)
            base = _pointwise_elpd(fit(x, model=truth, **kwargs))
            for c in competitors:
                diff = _pointwise_elpd(fit(x, model=c, **kwargs)) - base
                d[c].append(diff.sum())
                se[c].append(np.sqrt(diff.size * diff.var()))
            print(f"  {scenario} replicate {r + 1}/{args.replicates}: "
                  + ", ".join(f"{c} z={d[c][-1] / se[c][-1]:+.1f}" for c in competitors), flush=True)
        for c in competitors:
            dd, ss = np.array(d[c]), np.array(se[c])
            z = dd / ss
            rows.append((scenario, truth, c, dd.mean(), dd.std(ddof=1) / np.sqrt(np.mean(ss**2)), z.max(),
                         [np.mean(z > t) for t in THRESHOLDS], [np.mean(z < -t) for t in THRESHOLDS]))
    print(f"\n{'scenario':17s} {'truth':14s} {'competitor':14s} {'mean d':>8s} {'se_ratio':>8s} {'max z':>6s}  "
          "P(competitor wins by >2,3,4 se)  P(truth wins by >2,3,4 se)")
    for scenario, truth, c, mean_d, ratio, zmax, false, power in rows:
        print(f"{scenario:17s} {truth:14s} {c:14s} {mean_d:8.1f} {ratio:8.2f} {zmax:6.1f}  "
              + " ".join(f"{v:5.2f}" for v in false) + "                 " + " ".join(f"{v:5.2f}" for v in power))
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
