"""Posterior summaries of draws shaped (chain, draw): mean, median, sd, equal-tailed and highest-density intervals.

numpy and pandas only, so that a fit drawn exactly (no Markov chains) is summarised without ArviZ. Markov chains
add R-hat and ESS from ArviZ (`hteval.nuts`); independent draws have no R-hat, and their effective sample size is
their number.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

COLUMNS = ("mean", "median", "sd", "ci_low", "ci_high", "hdi_low", "hdi_high", "r_hat", "ess_bulk", "ess_tail")


def median_and_interval(draws, prob: float) -> tuple[float, float, float]:
    """Median and equal-tailed `prob` interval (ci_low, ci_high) of a set of draws, any shape."""
    draws = np.ravel(np.asarray(draws))
    lo, median, hi = np.quantile(draws, [(1 - prob) / 2, 0.5, (1 + prob) / 2])
    return float(median), float(lo), float(hi)


def hdi(draws, prob: float) -> tuple[float, float]:
    """The narrowest interval holding a `prob` share of the draws (unimodal posteriors)."""
    x = np.sort(np.ravel(np.asarray(draws)))
    inside = max(1, int(np.floor(prob * x.size)))
    if inside >= x.size:
        return float(x[0]), float(x[-1])
    widths = x[inside:] - x[: x.size - inside]
    start = int(np.argmin(widths))
    return float(x[start]), float(x[start + inside])


def summarise(draws: dict[str, np.ndarray], parameters: Sequence[str], prob: float) -> pd.DataFrame:
    """One row per parameter of independent draws: r_hat is not defined (NaN), ESS is the number of draws."""
    rows = {}
    for name in parameters:
        x = np.asarray(draws[name], dtype=np.float64)
        median, lo, hi = median_and_interval(x, prob)
        h_lo, h_hi = hdi(x, prob)
        rows[name] = {"mean": float(x.mean()), "median": median, "sd": float(x.std()), "ci_low": lo, "ci_high": hi,
                      "hdi_low": h_lo, "hdi_high": h_hi, "r_hat": float("nan"), "ess_bulk": float(x.size),
                      "ess_tail": float(x.size)}
    return pd.DataFrame.from_dict(rows, orient="index", columns=list(COLUMNS))
