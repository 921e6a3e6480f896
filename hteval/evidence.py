"""Exact log marginal likelihoods (log evidence) from the models' quadratures, and their prior sensitivity.

A model's evidence is the prior predictive density of the whole observed spectrum,

    Z = p(x) = int p(x | theta) p(theta) dtheta,

and every model here already integrates its posterior numerically: the iid models on a two-dimensional grid
(`hteval.quadrature`), htmp-exact on a one-dimensional grid over log kappa with the scale integrated per node
(`hteval.kappa_posterior`), the rest (a power law's breakpoint, exponent and weight, an outlier weight) in closed
form or on a one-dimensional rule inside the grid's log density. The grid's unnormalised total (`log_total`) is
then log Z up to the constants the grid's log density leaves out, which each model adds (`normal_log_constant`,
`uniform_log_constant`, a Beta function, likelihood constants).

Orderings. The iid likelihoods are densities of the labelled vector of eigenvalues, prod_i f(x_i) F(floor)^k;
the exact (beta-Laguerre) likelihood of `hteval.densities.htmp_exact` is the density of the sorted vector with k
censored, which is log M! - log k! larger. htmp-exact's evidence subtracts that per matrix (`kappa_posterior`), so
every model's evidence is a density on the same space and their ratios are Bayes factors.

Prior sensitivity. `log_evidence_wide` is the evidence with every prior twice as wide (`WIDE`): normal priors'
sds doubled, uniform priors on a (log) range doubled about its centre and clipped where the parameter's domain
ends, the outlier weight's Beta(1, 20) (near an exponential law of mean 1/20) widened to Beta(1, 10). It is
computed from the exact posterior draws by importance reweighting, log Z' = log Z + log mean p'(theta)/p(theta);
where the weights' effective sample size is poor (below ESS_MIN of the draws), or where a widened uniform range
reaches beyond a bound that holds posterior mass (draws cannot see the new range), the grid is computed again
under the wide priors.

numpy only: the exact engines import this without JAX.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.special import betaln, logsumexp

from hteval import names

#: how much wider every prior is for `log_evidence_wide`
WIDE = 2.0
#: reweighted draws whose effective sample size is below this fraction of the draws: the grid is recomputed
ESS_MIN = 0.5
#: posterior mass in a grid's last cell at a uniform prior's bound above which widening that range matters
BOUND_MASS = 1e-6
_HALF_LOG_TWO_PI = 0.5 * math.log(2.0 * math.pi)


@dataclass(frozen=True)
class Evidence:
    """A model's log evidence and its wide-prior counterpart, with how the latter was found."""

    log_evidence: float
    log_evidence_wide: float
    wide_method: str  # "reweighted draws" or "recomputed grid"
    wide_ess: float  # effective sample fraction of the reweighting (NaN where it was not tried)

    def to_dict(self) -> dict[str, float]:
        """The values a FitResult carries."""
        return {names.LOG_EVIDENCE: self.log_evidence, names.LOG_EVIDENCE_WIDE: self.log_evidence_wide}

    def checks(self) -> dict[str, float | str]:
        return {"log_evidence": self.log_evidence, "log_evidence_wide": self.log_evidence_wide,
                "wide_method": self.wide_method, "wide_ess": self.wide_ess}


def model_probabilities(log_evidence: np.ndarray) -> np.ndarray:
    """Posterior probabilities of models from their log evidence with equal prior odds, among the models whose
    evidence is finite (NaN for one without; all NaN where none has one)."""
    log_z = np.asarray(log_evidence, dtype=np.float64)
    finite = np.isfinite(log_z)
    return np.exp(log_z - logsumexp(log_z[finite])) if finite.any() else np.full_like(log_z, math.nan)


def normal_log_constant(sd: float) -> float:
    """log of a normal density's normalising constant, 1 / (sd sqrt(2 pi)): what -(x - m)^2 / (2 sd^2) lacks."""
    return -math.log(sd) - _HALF_LOG_TWO_PI


def uniform_log_constant(low: float, high: float) -> float:
    """log of a uniform density on [low, high]."""
    return -math.log(high - low)


def beta_log_constant(prior: tuple[float, float]) -> float:
    """log of 1 / B(a, b): what a Beta(a, b) density written as (a - 1) log w + (b - 1) log(1 - w) lacks."""
    return -float(betaln(*prior))


def widened(low: float, high: float, domain: tuple[float, float] = (-math.inf, math.inf),
            factor: float = WIDE) -> tuple[float, float]:
    """A range `factor` times as wide about its centre, clipped to the parameter's domain."""
    centre, half = (low + high) / 2, factor * (high - low) / 2
    return max(centre - half, domain[0]), min(centre + half, domain[1])


def widened_beta(prior: tuple[float, float], factor: float = WIDE) -> tuple[float, float]:
    """Beta(1, b) is close to an exponential law of mean 1 / b near zero: `factor` times its scale is
    Beta(1, b / factor). A uniform Beta(1, 1) already spans the whole domain and stays as it is."""
    a, b = prior
    return prior if (a, b) == (1.0, 1.0) else (a, b / factor)


def normal_log_ratio(x: np.ndarray, centre: float, sd: float, factor: float = WIDE) -> np.ndarray:
    """log N(x; centre, factor sd) - log N(x; centre, sd) at each x."""
    z2 = ((np.asarray(x, dtype=np.float64) - centre) / sd) ** 2
    return -math.log(factor) + 0.5 * z2 * (1.0 - 1.0 / factor**2)


def beta_log_ratio(w: np.ndarray, prior: tuple[float, float], wide: tuple[float, float]) -> np.ndarray:
    """log Beta(w; wide) - log Beta(w; prior) at each w in (0, 1)."""
    w = np.asarray(w, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return ((wide[0] - prior[0]) * np.log(w) + (wide[1] - prior[1]) * np.log1p(-w)
                - betaln(*wide) + betaln(*prior))


def reweighted(log_ratio: np.ndarray) -> tuple[float, float]:
    """log mean exp(log_ratio) over posterior draws, and the weights' effective sample size as a fraction of the
    draws (1: every draw counts fully)."""
    log_ratio = np.asarray(log_ratio, dtype=np.float64).ravel()
    if log_ratio.size == 0 or not np.all(np.isfinite(log_ratio)):
        return math.nan, 0.0
    log_sum = float(logsumexp(log_ratio))
    ess = math.exp(2.0 * log_sum - float(logsumexp(2.0 * log_ratio))) / log_ratio.size
    return log_sum - math.log(log_ratio.size), ess


def evidence(log_z: float, log_ratio: np.ndarray, recompute: Callable[[], float], *,
             bound_mass: float = 0.0) -> Evidence:
    """The Evidence of a fit: log Z from its grid, the wide one by reweighting its draws by log_ratio
    (log p'/p at each draw), or, where that is unreliable, `recompute()` (the wide log Z from a new grid).

    bound_mass: the posterior mass against a bound of a uniform prior that the wide prior moves out (the draws
    say nothing about the range beyond it): above BOUND_MASS the grid is recomputed.
    """
    shift, ess = reweighted(log_ratio)
    if ess >= ESS_MIN and bound_mass <= BOUND_MASS:
        return Evidence(float(log_z), float(log_z) + shift, "reweighted draws", ess)
    return Evidence(float(log_z), float(recompute()), "recomputed grid", ess)


__all__ = ["ESS_MIN", "WIDE", "Evidence", "beta_log_ratio", "evidence", "normal_log_constant", "normal_log_ratio",
           "reweighted", "uniform_log_constant", "widened", "widened_beta"]
