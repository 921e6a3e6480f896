"""htmp-exact's exact posterior (the default engine) against NUTS on the same layers: medians and interval ends.

Run: python benchmarks/exact_vs_nuts.py [--exact DIR] [--nuts DIR] [--checkpoint PATH] [--out DIR]

Without --exact / --nuts it runs `hteval analyze` on the checkpoint (default: the bundled all-MiniLM-L6-v2) twice,
with the default exact sampler and with --sampler nuts, into --out; with them it reads two finished analyze
folders (their layers/*.htmp-exact.draws.npz). For every layer and parameter (kappa, scale) it checks

    |median_exact - median_nuts| <= 0.1 sd + 3 MCSE,   |end_exact - end_nuts| <= 0.2 sd + 3 MCSE

for the median and both ends of the 90% equal-tailed interval, sd being the exact posterior's and MCSE the
Monte Carlo standard errors of the two estimates combined (ArviZ's, from each set of draws: the exact draws are
independent, the NUTS draws autocorrelated). Prints one line per layer and the count that agree.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PARAMETERS = ("kappa", "scale")
PROB = 0.9


def run_analyze(checkpoint: str | None, out: Path, sampler: str) -> Path:
    command = [str(ROOT / ".venv" / "bin" / "hteval"), "analyze", "--out", str(out), "--no-figures",
               "--sampler", sampler]
    command += [checkpoint] if checkpoint else ["--bundled"]
    subprocess.run(command, check=True, env={**os.environ, "HTEVAL_CACHE": os.environ.get("HTEVAL_CACHE", "off")})
    return out


def draws(folder: Path) -> dict[str, dict[str, np.ndarray]]:
    """layer name -> parameter -> draws (chain, draw), from an analyze folder's layers/*.htmp-exact.draws.npz."""
    from hteval.network_analysis import DRAWS_SUFFIX, LAYER_DIR, layer_file_stem, read_layer_table

    table = read_layer_table(folder / "layers.csv")
    fitted = table[(table["model"] == "htmp-exact") & table["status"].isin(["ok", "not_converged"])]
    out = {}
    for name in fitted["name"]:
        path = folder / LAYER_DIR / f"{layer_file_stem(name, 'htmp-exact')}{DRAWS_SUFFIX}"
        with np.load(path) as data:
            out[name] = {p: np.atleast_2d(data[p]) for p in PARAMETERS}
    return out


def compare(exact: np.ndarray, nuts: np.ndarray) -> list[tuple[str, float, float]]:
    """(statistic, |difference| in exact sds, allowed in sds) for the median and the interval's two ends."""
    import arviz as az

    sd = float(np.std(exact))
    rows = []
    for name, q, slack in (("median", 0.5, 0.1), ("ci_low", (1 - PROB) / 2, 0.2), ("ci_high", (1 + PROB) / 2, 0.2)):
        diff = abs(float(np.quantile(exact, q)) - float(np.quantile(nuts, q)))
        mcse = [float(az.mcse(d, method="median" if q == 0.5 else "quantile", prob=None if q == 0.5 else q))
                for d in (exact, nuts)]
        rows.append((name, diff / sd, slack + 3 * float(np.hypot(*mcse)) / sd))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exact", type=Path)
    parser.add_argument("--nuts", type=Path)
    parser.add_argument("--checkpoint")
    parser.add_argument("--out", type=Path, default=Path("exact-vs-nuts"))
    args = parser.parse_args()
    exact_dir = args.exact or run_analyze(args.checkpoint, args.out / "exact", "auto")
    nuts_dir = args.nuts or run_analyze(args.checkpoint, args.out / "nuts", "nuts")
    exact, nuts = draws(exact_dir), draws(nuts_dir)
    common = [name for name in exact if name in nuts]
    agree = 0
    worst = (0.0, "")
    for name in common:
        checks = [(p, *row) for p in PARAMETERS for row in compare(exact[name][p], nuts[name][p])]
        ok = all(diff <= allowed for _, _, diff, allowed in checks)
        agree += ok
        ratio = max(diff / allowed for *_, diff, allowed in checks)
        worst = max(worst, (ratio, name))
        k_e, k_n = (float(np.median(d[name]["kappa"])) for d in (exact, nuts))
        detail = ", ".join(f"{p} {stat} {diff:.3f}/{allowed:.3f}" for p, stat, diff, allowed in checks
                           if diff > allowed)
        print(f"{'ok ' if ok else 'OFF'} {name}: kappa median {k_e:.4g} (exact) vs {k_n:.4g} (NUTS); largest "
              f"|difference| / allowed {ratio:.2f}" + (f"; {detail}" if detail else ""))
    print(f"{agree} of {len(common)} layers agree on every median and interval end (kappa and scale); the "
          f"closest call is {worst[1]} at {worst[0]:.2f} of the allowance")
    sys.exit(0 if agree == len(common) else 1)


if __name__ == "__main__":
    main()
