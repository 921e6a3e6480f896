"""How often the exact evidence of `hteval compare` picks the HTMP family, on spectra from three families.

Run: python benchmarks/compare_families.py [--replicates 20] [--m 384] [--models htmp-exact,mp,...]
     [--chains 4 --draws 1000] [--families htmp,lognormal,pareto] [--seed 0]

Families (M eigenvalues each, a fresh spectrum per replicate):
* htmp: exact finite-size HTMP spectra (`sample_htmp_spectrum`), kappa log-uniform on [0.3, 30], gamma drawn from
  0.25, 0.5 and 1 (the comparison is told the true gamma);
* lognormal: iid log-normal eigenvalues, log-sd 0.6 (gamma 0.5);
* pareto: a Pareto tail (density exponent 2.5, survival x^-1.5) on 15% of the eigenvalues over a log-normal bulk
  of log-sd 0.35 (`sample_pareto_tail_spectrum`, gamma 0.5).

The HTMP family is htmp-exact, htmp and htmp-outliers (`names.HTMP_FAMILY`). For each family the table gives how
often the evidence's best (`best`), the best under priors twice as wide (`best_wide`) and PSIS-LOO's best among the
iid models (`best_loo`) lie in the HTMP family, the winners' counts, the margin across the family line (the best
model's log evidence minus the best one on the other side of it: how far the call was from going the other way;
median and smallest), fits that did not converge, and the wall time per comparison (every model's fit, predictive
draws, PSIS-LOO and the predictive p-values; the first comparison of a process also builds the HTMP density's
tables per gamma).
"""

from __future__ import annotations

import argparse
import collections
import time

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

from hteval import names  # noqa: E402
from hteval.model_comparison import DEFAULT_MODELS, compare  # noqa: E402
from hteval.sampling import sample_htmp_spectrum, sample_pareto_tail_spectrum  # noqa: E402

FAMILIES = ("htmp", "lognormal", "pareto")
GAMMAS = (0.25, 0.5, 1.0)
KAPPA_RANGE = (0.3, 30.0)


def spectrum(family: str, rng: np.random.Generator, m: int) -> tuple[np.ndarray, float, str]:
    """One spectrum of the family, its gamma and a description."""
    if family == "htmp":
        kappa = float(np.exp(rng.uniform(*np.log(KAPPA_RANGE))))
        gamma = float(rng.choice(GAMMAS))
        return sample_htmp_spectrum(rng, m, gamma, kappa), gamma, f"kappa {kappa:.3g}, gamma {gamma:g}"
    if family == "lognormal":
        return np.sort(np.exp(0.6 * rng.standard_normal(m))), 0.5, "log-sd 0.6"
    return sample_pareto_tail_spectrum(rng, m), 0.5, "15% Pareto tail, exponent 2.5"


def run_family(family: str, args) -> dict:
    rng = np.random.default_rng([args.seed, FAMILIES.index(family)])
    picks = collections.Counter()
    winners = collections.Counter()
    unconverged = collections.Counter()
    seconds, margins = [], []
    for replicate in range(args.replicates):
        x, gamma, what = spectrum(family, rng, args.m)
        start = time.perf_counter()
        comparison = compare(x, gamma=gamma, models=args.models, chains=args.chains, draws=args.draws,
                             seed=replicate)
        seconds.append(time.perf_counter() - start)
        winners[comparison.best] += 1
        for key, best in (("best", comparison.best), ("best_wide", comparison.best_wide),
                          ("best_loo", comparison.best_loo)):
            picks[key] += best in names.HTMP_FAMILY
        unconverged.update(m for m, f in comparison.fits.items() if not f.converged)
        margins.append(family_margin(comparison))
        runner_up = comparison.table[names.D_LOG_EVIDENCE].iloc[1]
        print(f"{family:9s} {replicate:3d} {what:32s} best {comparison.best:13s} (runner-up {runner_up:+8.2f}, "
              f"P {comparison.table[names.WEIGHT].iloc[0]:.3f}, across the family line {margins[-1]:7.2f}) "
              f"wide {comparison.best_wide:13s} LOO {comparison.best_loo:13s} {seconds[-1]:5.1f} s", flush=True)
    return {"picks": picks, "winners": winners, "seconds": seconds, "margins": margins, "unconverged": unconverged}


def family_margin(comparison) -> float:
    """The best model's log evidence minus that of the best model on the other side of the HTMP family line."""
    table = comparison.table
    inside = table.index.isin(names.HTMP_FAMILY)
    other = ~inside if comparison.best in names.HTMP_FAMILY else inside
    return float(-table.loc[other, names.D_LOG_EVIDENCE].max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicates", type=int, default=20)
    parser.add_argument("--m", type=int, default=384)
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS))
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.models = tuple(args.models.split(","))
    results = {family: run_family(family, args) for family in args.families.split(",")}
    print(f"\nM = {args.m}, {args.replicates} spectra per family, models {','.join(args.models)}, "
          f"{args.chains} x {args.draws} draws")
    print("| family | evidence picks HTMP family | wide priors | PSIS-LOO (iid models) | winners | "
          "margin across the family line (median, min) | not converged | s per comparison (median, max) |")
    print("|---|---|---|---|---|---|---|---|")
    for family, r in results.items():
        n = args.replicates
        share = " | ".join(f"{r['picks'][k]}/{n}" for k in ("best", "best_wide", "best_loo"))
        winners = ", ".join(f"{m} {c}" for m, c in r["winners"].most_common())
        failed = ", ".join(f"{m} {c}" for m, c in r["unconverged"].most_common()) or "none"
        print(f"| {family} | {share} | {winners} | {np.median(r['margins']):.1f}, {min(r['margins']):.1f} | "
              f"{failed} | {np.median(r['seconds']):.1f}, {max(r['seconds']):.1f} |")


if __name__ == "__main__":
    main()
