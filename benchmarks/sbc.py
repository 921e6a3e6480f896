"""Simulation-based calibration of the HTMP fits (Talts et al. 2018) with the exact finite-size sampler.

Run: python benchmarks/sbc.py [--model htmp-exact|htmp] [--sampler auto|nuts] [--sims 1000] [--m 100] [--slices 1]
                              [--gamma 0.5] [--out DIR]

Each simulation draws (kappa, scale) from the model's prior (log kappa uniform on [log 1e-3, log kappa_max] with
kappa_max = max(1e3, 10 M) for htmp-exact and 1e3 for the iid htmp; log scale ~ Normal(0, 1): the scale prior
with its centre fixed at 1, so that the prior does not depend on the data),
simulates one spectrum of M eigenvalues with the exact Dumitriu-Edelman sampler, fits it, and records the rank of
the truth among 100 thinned posterior draws and whether the 50% and 90% equal-tailed intervals cover it. With a
calibrated posterior the ranks are uniform on 0..100 and the coverages are 50% and 90% up to binomial noise.
Prints the coverage table with the binomial band a calibrated method falls in (nominal +- 3 binomial standard
errors) and a chi-square test of the ranks; --out also writes the rows (CSV) and the rank
histograms (PNG). --slices S simulates a conv layer: S independent spectra of M eigenvalues each, with one
(kappa, scale), pooled into one layer record with their slice ids.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np

from hteval.errors import HtevalError
from hteval.infer import RAW_FLOOR_FACTOR, fit
from hteval.kappa_posterior import KAPPA_MAX_FLOOR, KAPPA_MIN, kappa_upper_bound
from hteval.sampling import sample_htmp_spectrum
from hteval.spectra import LayerSpectrum

PARAMETERS = ("kappa", "scale")
RANK_DRAWS = 100
LEVELS = (0.5, 0.9)


def kappa_range(model: str, m: int) -> tuple[float, float]:
    """The model's prior range of kappa at M eigenvalues per matrix."""
    return KAPPA_MIN, kappa_upper_bound(m) if model == "htmp-exact" else KAPPA_MAX_FLOOR


def simulate_and_fit(i: int, *, m: int, gamma: float, model: str, seed: int = 0, chains: int = 4, draws: int = 1000,
                     warmup: int = 300, slices: int = 1, sampler: str = "auto") -> dict:
    """One simulation: prior draw, exact spectrum, fit; ranks and interval coverage of each parameter."""
    rng = np.random.default_rng([seed, i])
    low, high = kappa_range(model, m)
    truth = {"kappa": math.exp(rng.uniform(math.log(low), math.log(high))), "scale": math.exp(rng.normal())}
    row = {"sim": i, **{f"true_{p}": v for p, v in truth.items()}}
    spectra = [sample_htmp_spectrum(rng, m, gamma, truth["kappa"], truth["scale"]) for _ in range(slices)]
    try:
        result = fit(conv_layer(spectra, gamma), model=model, seed=seed + i, chains=chains, draws=draws, warmup=warmup,
                     scale_ref=1.0, log_likelihood=False, sampler=sampler)
    except (HtevalError, ValueError) as err:
        return {**row, "error": " ".join(str(err).split())}
    row.update(converged=result.converged, n_censored=result.record["n_censored"], error="")
    for p in PARAMETERS:
        d = np.asarray(result.draws[p]).ravel()
        thinned = d[np.linspace(0, d.size - 1, RANK_DRAWS).astype(int)]
        row[f"rank_{p}"] = int(np.sum(thinned < truth[p]))
        for level in LEVELS:
            lo, hi = np.quantile(d, [(1 - level) / 2, (1 + level) / 2])
            row[f"in{round(100 * level)}_{p}"] = bool(lo <= truth[p] <= hi)
    return row


def conv_layer(spectra: list[np.ndarray], gamma: float) -> LayerSpectrum:
    """A layer record of one or more simulated slices, censored like raw eigenvalues (below float64's floor)."""
    m = spectra[0].size
    floor = RAW_FLOOR_FACTOR * m * max(float(np.max(s)) for s in spectra)
    values = np.concatenate(spectra)
    ids = np.repeat(np.arange(len(spectra)), m)
    keep = values > floor
    order = np.argsort(values[keep], kind="stable")
    n = int(round(m / gamma))
    # named as raw eigenvalues are (eigenvalue_spectrum): the name seeds the fit's keys, so runs stay reproducible
    return LayerSpectrum(name="eigenvalues", shape=(n, m, len(spectra)) if len(spectra) > 1 else (n, m), N=n, M=m,
                         gamma=gamma, n_slices=len(spectra), n_eigs=int(keep.sum()),
                         n_censored=int(values.size - keep.sum()), floor=floor, normalisation="simulated",
                         dtype="float64", eigenvalues=values[keep][order], slice_ids=ids[keep][order])


def coverage_band(level: float, n: int) -> tuple[float, float]:
    """Nominal coverage +- 3 binomial standard errors over n simulations."""
    half = 3 * math.sqrt(level * (1 - level) / max(n, 1))
    return level - half, level + half


def summarise(rows: list[dict]) -> dict:
    """Coverage per parameter and level, and a chi-square p-value of the ranks in 10 bins, over the fitted rows."""
    from scipy import stats

    done = [r for r in rows if not r.get("error")]
    out = {"fitted": len(done), "failed": len(rows) - len(done), "converged": sum(r["converged"] for r in done)}
    for p in PARAMETERS:
        for level in LEVELS:
            key = f"in{round(100 * level)}_{p}"
            out[key] = sum(r[key] for r in done) / max(len(done), 1)
        counts = np.bincount(np.minimum(np.array([r[f"rank_{p}"] for r in done], dtype=int) * 10 // (RANK_DRAWS + 1),
                                        9), minlength=10)
        out[f"rank_pvalue_{p}"] = float(stats.chisquare(counts).pvalue) if done else float("nan")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="htmp-exact")
    parser.add_argument("--sampler", default="auto", choices=("auto", "nuts"))
    parser.add_argument("--sims", type=int, default=1000)
    parser.add_argument("--m", type=int, default=100)
    parser.add_argument("--slices", type=int, default=1, help="conv slices per simulated layer")
    parser.add_argument("--gamma", type=float, default=0.5)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    start, rows = time.perf_counter(), []
    for i in range(args.sims):
        rows.append(simulate_and_fit(i, m=args.m, gamma=args.gamma, model=args.model, seed=args.seed,
                                     chains=args.chains, draws=args.draws, warmup=args.warmup, slices=args.slices,
                                     sampler=args.sampler))
        if (i + 1) % 100 == 0:
            print(f"{i + 1}/{args.sims} simulations, {time.perf_counter() - start:.0f} s", flush=True)
    s = summarise(rows)
    low, high = kappa_range(args.model, args.m)
    print(f"model {args.model} ({args.sampler}), M = {args.m}, {args.slices} slice(s), gamma = {args.gamma}, "
          f"kappa prior [{low:g}, {high:g}], {args.chains} x {args.draws} draws: "
          f"{s['fitted']} fitted, {s['failed']} failed, {s['converged']} converged, "
          f"{time.perf_counter() - start:.0f} s")
    bands = {level: coverage_band(level, s["fitted"]) for level in LEVELS}
    print("| parameter | 50% interval covers | 90% interval covers | ranks chi-square p (10 bins) |")
    print("|---|---|---|---|")
    for p in PARAMETERS:
        print(f"| {p} | {s[f'in50_{p}']:.1%} | {s[f'in90_{p}']:.1%} | {s[f'rank_pvalue_{p}']:.3f} |")
    print("calibrated within 3 binomial standard errors: "
          + ", ".join(f"{level:.0%} intervals {lo:.1%}-{hi:.1%}" for level, (lo, hi) in bands.items()))
    if args.out:
        import pandas as pd

        args.out.mkdir(parents=True, exist_ok=True)
        table = pd.DataFrame(rows)
        stem = f"sbc_{args.model}_m{args.m}" + (f"_s{args.slices}" if args.slices > 1 else "")
        table.to_csv(args.out / f"{stem}.csv", index=False)
        _plot_ranks(table, args.out / f"{stem}.png", f"{args.model}, M = {args.m}"
                    + (f", {args.slices} slices" if args.slices > 1 else ""))


def _plot_ranks(table, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy import stats

    fig, axes = plt.subplots(1, 2, figsize=(8, 3), sharey=True)
    done = table[table["error"].fillna("") == ""]
    n = len(done)
    for ax, p in zip(axes, PARAMETERS, strict=True):
        ax.hist(done[f"rank_{p}"], bins=np.linspace(0, RANK_DRAWS + 1, 11), color="C0", edgecolor="white")
        # 99% band of a bin count under uniform ranks
        lo, hi = stats.binom.ppf([0.005, 0.995], n, 0.1)
        ax.axhspan(lo, hi, color="0.85", zorder=0, label="99% band if calibrated")
        ax.set_xlabel(f"rank of true {p} among {RANK_DRAWS} posterior draws")
    axes[0].set_ylabel("simulations")
    axes[0].legend(frameon=False, fontsize=8)
    fig.suptitle(f"Simulation-based calibration: {title}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


if __name__ == "__main__":
    main()
