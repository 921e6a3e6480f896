"""The field's incumbent point estimate of the power-law exponent, kept for comparison with the posterior.

Continuous Pareto maximum likelihood above xmin, alpha = 1 + n_tail / sum log(x / xmin), with xmin chosen to
minimise the KS distance between the tail's empirical CDF and the fitted Pareto CDF (Clauset, Shalizi and Newman
2009), and the standard error (alpha - 1) / sqrt(n_tail) that ignores the choice of xmin (SPEC section 6).
hteval's answer to that defect is the power-law model (`hteval.models.powerlaw`), which marginalises xmin.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ClassicPowerLaw:
    alpha: float
    xmin: float
    sigma: float
    n_tail: int
    ks_distance: float


def classic_powerlaw(eigenvalues, *, min_tail: int = 10) -> ClassicPowerLaw:
    """KS-chosen xmin and the Pareto MLE above it, over every candidate xmin leaving >= min_tail in the tail."""
    x = np.sort(np.asarray(eigenvalues, dtype=np.float64))
    x = x[x > 0]
    n = x.size
    if n < min_tail + 1:
        raise ValueError(f"need more than {min_tail} positive eigenvalues, got {n}")
    logs = np.log(x)
    suffix = np.cumsum(logs[::-1])[::-1]  # sum of log x over i >= j
    best = None
    for j in range(n - min_tail + 1):
        n_tail = n - j
        excess = suffix[j] - n_tail * logs[j]
        if excess <= 0:
            continue  # ties at xmin: no finite estimate
        alpha = 1.0 + n_tail / excess
        tail = logs[j:] - logs[j]
        model_cdf = 1.0 - np.exp((1.0 - alpha) * tail)
        empirical = np.arange(n_tail) / n_tail
        distance = float(np.max(np.maximum(np.abs(model_cdf - empirical), np.abs(model_cdf - empirical - 1 / n_tail))))
        if best is None or distance < best.ks_distance:
            best = ClassicPowerLaw(alpha=float(alpha), xmin=float(x[j]), sigma=float((alpha - 1) / np.sqrt(n_tail)),
                                   n_tail=int(n_tail), ks_distance=distance)
    if best is None:
        raise ValueError("no candidate xmin gives a finite exponent")
    return best
