"""Parameter recovery of the HTMP fit on exact finite-size samples (kappa x gamma grid).

Run: python benchmarks/recovery.py [--quick] [--model htmp-exact|htmp] [--sampler auto|nuts] [--replicates R]
kappa in {0.3, 1, 3, 10} x gamma in {0.25, 0.5, 1}, m = 500 (m = 2000 at kappa = 10), scale = 1, default sampler
settings (4 chains x 1000 draws: exact independent draws for htmp-exact, NUTS for the iid htmp); prints, per
case, the posterior median, sd and 90% interval of kappa and whether |median - truth| <= 2 sd and truth in the
interval.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from hteval.infer import fit
from hteval.sampling import sample_htmp_spectrum

KAPPAS = (0.3, 1.0, 3.0, 10.0)
GAMMAS = (0.25, 0.5, 1.0)


def run_case(kappa: float, gamma: float, m: int, seed: int, chains: int, draws: int, model: str = "htmp-exact",
             sampler: str = "auto") -> dict:
    x = sample_htmp_spectrum(seed, m, gamma, kappa)
    result = fit(x, gamma=gamma, model=model, seed=seed, chains=chains, draws=draws, warmup=draws, sampler=sampler)
    row = result.summary.loc["kappa"]
    return {"kappa": kappa, "gamma": gamma, "m": m, "median": row["median"], "sd": row["sd"],
            "ci_low": row["ci_low"], "ci_high": row["ci_high"],
            "within_2sd": abs(row["median"] - kappa) <= 2 * row["sd"],
            "covered": row["ci_low"] <= kappa <= row["ci_high"], "converged": result.converged}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 chains x 500 draws")
    parser.add_argument("--model", default="htmp-exact", choices=("htmp", "htmp-exact"),
                        help="the exact joint likelihood (the default) or the iid one")
    parser.add_argument("--sampler", default="auto", choices=("auto", "nuts"))
    parser.add_argument("--gammas", type=float, nargs="+", default=GAMMAS)
    parser.add_argument("--kappas", type=float, nargs="+", default=KAPPAS)
    parser.add_argument("--replicates", type=int, default=0,
                        help="instead of the grid, R fresh spectra per case: bias and calibration of the iid fit")
    args = parser.parse_args()
    if args.replicates:
        replicates(args)
        return
    chains, draws = (2, 500) if args.quick else (4, 1000)
    start_all = time.perf_counter()
    rows = []
    for i, (gamma, kappa) in enumerate((g, k) for g in GAMMAS for k in KAPPAS):
        if gamma not in args.gammas or kappa not in args.kappas:
            continue  # the seed stays that of the case's place in the full grid
        start = time.perf_counter()
        row = run_case(kappa, gamma, 2000 if kappa == 10 else 500, seed=100 + i, chains=chains, draws=draws,
                       model=args.model, sampler=args.sampler)
        rows.append(row)
        print(f"kappa {kappa:5.2f} gamma {gamma:4.2f} m {row['m']:4d}: median {row['median']:.3f} sd {row['sd']:.3f} "
              f"90% [{row['ci_low']:.3f}, {row['ci_high']:.3f}] within 2 sd {row['within_2sd']} covered "
              f"{row['covered']} converged {row['converged']} ({time.perf_counter() - start:.0f} s)", flush=True)
    print(f"{args.model} ({args.sampler}): within 2 sd: {sum(r['within_2sd'] for r in rows)}/{len(rows)}; "
          f"90% intervals covering the truth: {sum(r['covered'] for r in rows)}/{len(rows)}; "
          f"{time.perf_counter() - start_all:.1f} s")


def replicates(args) -> None:
    """z = (median - truth) / sd over R independent spectra per case: mean z is the bias in posterior sds, and the
    sd of the medians against the mean posterior sd says whether the iid posterior width is honest."""
    chains, draws = (2, 500) if args.quick else (4, 1000)
    for gamma in args.gammas:
        for kappa in args.kappas:
            m = 2000 if kappa == 10 else 500
            rows = [run_case(kappa, gamma, m, seed=1000 + r, chains=chains, draws=draws, model=args.model,
                             sampler=args.sampler) for r in range(args.replicates)]
            med = np.array([r["median"] for r in rows])
            sd = np.array([r["sd"] for r in rows])
            z = (med - kappa) / sd
            print(f"kappa {kappa:5.2f} gamma {gamma:4.2f} m {m:4d} R {len(rows)}: mean median {med.mean():.4f} "
                  f"(bias {med.mean() / kappa - 1:+.1%}), sd of medians {med.std(ddof=1):.4f} vs mean posterior sd "
                  f"{sd.mean():.4f}, mean z {z.mean():+.2f}, |z| > 2 in {np.sum(np.abs(z) > 2)}, 90% covered "
                  f"{sum(r['covered'] for r in rows)}/{len(rows)}", flush=True)


if __name__ == "__main__":
    main()
