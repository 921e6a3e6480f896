"""Calibration and power of htmp-exact's posterior predictive check (`hteval.goodness_of_fit`).

Run: python benchmarks/goodness_of_fit.py [--calibration N] [--power N] [--replicates R] [--seed S]

Calibration: N exact HTMP spectra (the Dumitriu-Edelman sampler) per M in (100, 384), gamma cycling over
0.25 / 0.5 / 1, log kappa uniform on [log 0.3, log 30], scale log-normal; each fitted with htmp-exact and
checked. A calibrated check flags at most 5% of them at p < 0.05 (up to 3 binomial standard errors).

Power: N spectra of M = 384 eigenvalues per family that is not HTMP, fitted with htmp-exact and checked; the
fraction flagged at p < 0.01 (names.MISFIT_LEVEL) is the check's power there:
  lognormal    iid log-normal eigenvalues, sd 0.6 in log;
  pareto_tail  a log-normal bulk of sd 0.35 with 15% of the eigenvalues from a Pareto tail (density exponent
               2.5) starting at the bulk's 95% quantile;
  correlated   W = X Sigma^(1/2), population eigenvalues t_i ~ i^-1, gamma 0.25;
  mp_spikes    Marchenko-Pastur at gamma 0.25 with 5 rank-one spikes whose singular values are 12-30 times the
               bulk's largest.
Prints both tables with the time per check.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from hteval import goodness_of_fit
from hteval.infer import eigenvalue_spectrum, fit
from hteval.sampling import sample_correlated_spectrum, sample_htmp_spectrum

M_POWER = 384
GAMMAS = (0.25, 0.5, 1.0)
KAPPA_RANGE = (0.3, 30.0)


def lognormal(rng: np.random.Generator, m: int) -> tuple[np.ndarray, float]:
    return np.exp(rng.normal(0.0, 0.6, m)), 0.5


def pareto_tail(rng: np.random.Generator, m: int) -> tuple[np.ndarray, float]:
    tail = int(round(0.15 * m))
    bulk = np.exp(rng.normal(0.0, 0.35, m - tail))
    start = math.exp(0.35 * 1.6449)  # the bulk's 95% quantile
    # density ~ x^-2.5: survival (x / start)^-1.5
    return np.concatenate([bulk, start * rng.uniform(size=tail) ** (-1.0 / 1.5)]), 0.5


def correlated(rng: np.random.Generator, m: int) -> tuple[np.ndarray, float]:
    gamma = 0.25
    return sample_correlated_spectrum(int(round(m / gamma)), m, 1.0, seed=rng), gamma


def mp_spikes(rng: np.random.Generator, m: int) -> tuple[np.ndarray, float]:
    gamma = 0.25
    n = int(round(m / gamma))
    w = rng.standard_normal((n, m))
    edge = 1.0 + math.sqrt(gamma)  # the bulk's largest singular value of W / sqrt(n)
    for strength in rng.uniform(12.0, 30.0, 5):
        u, v = rng.standard_normal(n), rng.standard_normal(m)
        w += strength * edge * math.sqrt(n) * np.outer(u / np.linalg.norm(u), v / np.linalg.norm(v))
    return np.linalg.svd(w, compute_uv=False) ** 2 / n, gamma


FAMILIES = {"lognormal": lognormal, "pareto_tail": pareto_tail, "correlated": correlated, "mp_spikes": mp_spikes}


def check(eigenvalues: np.ndarray, gamma: float, *, seed: int, replicates: int) -> float:
    """htmp-exact's fit and exact posterior predictive p-value of a spectrum."""
    result = fit(eigenvalue_spectrum(eigenvalues, gamma=gamma), model="htmp-exact", seed=seed, log_likelihood=False)
    return goodness_of_fit.exact_ppc(result, replicates=replicates, seed=seed).p_value


def htmp_case(i: int, m: int, seed: int) -> tuple[np.ndarray, float, float]:
    """The i-th calibration spectrum at size m: (eigenvalues, gamma, kappa)."""
    rng = np.random.default_rng([seed, m, i])
    gamma = GAMMAS[i % len(GAMMAS)]
    kappa = math.exp(rng.uniform(*np.log(KAPPA_RANGE)))
    return sample_htmp_spectrum(rng, m, gamma, kappa, math.exp(rng.normal())), gamma, kappa


def calibration(n: int, m: int, *, seed: int = 0, replicates: int = goodness_of_fit.REPLICATES) -> np.ndarray:
    """p-values of n exact HTMP spectra of size m."""
    out = []
    for i in range(n):
        x, gamma, _ = htmp_case(i, m, seed)
        out.append(check(x, gamma, seed=seed + i, replicates=replicates))
    return np.array(out)


def power(family: str, n: int, *, m: int = M_POWER, seed: int = 0,
          replicates: int = goodness_of_fit.REPLICATES) -> np.ndarray:
    """p-values of n spectra of a family that is not HTMP."""
    out = []
    for i in range(n):
        x, gamma = FAMILIES[family](np.random.default_rng([seed, 7, i]), m)
        out.append(check(x, gamma, seed=seed + i, replicates=replicates))
    return np.array(out)


def band(rate: float, n: int) -> float:
    """rate + 3 binomial standard errors at n trials."""
    return rate + 3.0 * math.sqrt(rate * (1.0 - rate) / n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calibration", type=int, default=540, help="exact HTMP spectra per M (default 540)")
    parser.add_argument("--power", type=int, default=100, help="spectra per non-HTMP family (default 100)")
    parser.add_argument("--replicates", type=int, default=goodness_of_fit.REPLICATES)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"replicate spectra per check: {args.replicates}")
    if args.calibration:
        print("\ncalibration: exact HTMP spectra, gamma 0.25/0.5/1, kappa 0.3-30 (log-uniform)")
        print("| M | spectra | p < 0.05 | p < 0.01 | bound at 0.05 (3 se) | s per check |")
        print("|---|---|---|---|---|---|")
        pooled = []
        for m in (100, 384):
            start = time.perf_counter()
            p = calibration(args.calibration, m, seed=args.seed, replicates=args.replicates)
            seconds = (time.perf_counter() - start) / p.size
            pooled.append(p)
            print(f"| {m} | {p.size} | {np.mean(p < 0.05):.3f} | {np.mean(p < 0.01):.3f} | "
                  f"{band(0.05, p.size):.3f} | {seconds:.3f} |", flush=True)
        p = np.concatenate(pooled)
        print(f"| both | {p.size} | {np.mean(p < 0.05):.3f} | {np.mean(p < 0.01):.3f} | {band(0.05, p.size):.3f} | |")
    if args.power:
        print(f"\npower: M = {M_POWER}, fraction flagged misfit (p < 0.01)")
        print("| family | spectra | flagged | median p | s per check |")
        print("|---|---|---|---|---|")
        for family in FAMILIES:
            start = time.perf_counter()
            p = power(family, args.power, seed=args.seed, replicates=args.replicates)
            seconds = (time.perf_counter() - start) / p.size
            print(f"| {family} | {p.size} | {np.mean(p < 0.01):.2f} | {np.median(p):.2g} | {seconds:.3f} |",
                  flush=True)


if __name__ == "__main__":
    main()
