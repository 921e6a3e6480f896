"""Does the fitted model reproduce the layer's spectrum? A posterior predictive p-value for every fit.

`htmp-exact` is a joint law of all M eigenvalues, so its check replicates whole spectra from the exact sampler
(SPEC section 4), one per posterior draw of (kappa, scale), and compares the observed sorted spectrum with them
(`exact_ppc`). The iid models' check is the KS p-value of their one-eigenvalue law (`ks_pvalue`).

The discrepancy of the exact check is an envelope distance on the whole sorted spectrum in log scale: for each
rank i, the replicates' log i-th eigenvalues have a mean m_i and sd s_i (the posterior predictive law of that
order statistic, parameter uncertainty included), and T(y) = mean_i ((log y_(i) - m_i) / s_i)^2. Why this one:
* every rank counts with its own predictive spread, so a handful of outliers far above the bulk (spikes), a bulk
  of the wrong shape (log-normal, correlated), a tail too heavy or too light all raise T, while the ranks that
  the model leaves uncertain (the smallest eigenvalues at small kappa, which span decades) count for little;
* log scale, because spectra span decades and the model's scale is a multiplicative parameter; eigenvalues below
  a thousandth of the mean are compressed (log(x + 0.001 mean)), since the few smallest of a square layer scatter
  over decades between spectra of the same law;
* it needs no one-point density of the finite-size law (no closed form), only replicates, which the exact
  sampler draws in O(M^2) (LAPACK's dsterf on the Dumitriu-Edelman tridiagonal).
A replicate's own T is computed the same way against the other replicates (leave one out), so observed and
replicate distances are measured alike. The replicates come in two batches: where the first FIRST_BATCH replicates'
p-value is already far from the misfit level (EARLY_STOP), the rest are not drawn. The p-value is P(T(y_rep) >=
T(y)): with REPLICATES replicates its tail below 1/REPLICATES is estimated from a Student-t predictive law of log T
over the replicates (a normal law for log T, its centre and spread estimated robustly by the median and MAD), which
reads p-values down to 0.01 and below from a few dozen replicates; the calibration of the whole check is measured
on exact spectra (`benchmarks/goodness_of_fit.py`, docs/goodness-of-fit.md).

Eigenvalues at or below the floor are censored in the data; replicates are censored the same way (every value
below the floor counts as the floor), and values below the sampler's rounding level are set to it on both sides.
"""

from __future__ import annotations

import math

import numpy as np

from hteval import names
from hteval.precision import in_float64

#: replicate spectra per exact check: the cost is REPLICATES exact spectra (about 1.5 ms each at M = 384 and
#: 0.2 s at M = 4096 on one core), the resolution of the p-value's t tail is enough below 0.01 (see module doc)
REPLICATES = 24
#: the check stops after its first FIRST_BATCH replicates where their p-value is already far from the misfit level
#: (below the first, or above the second): most layers either fit plainly or misfit by many orders of magnitude
EARLY_STOP = (1e-4, 0.2)
FIRST_BATCH = 8
#: eigenvalues below this fraction of the largest are rounding in a float64 eigensolver: compared as equal
ROUNDING = 1e-13
#: the distance reads log(eigenvalue + OFFSET x mean eigenvalue): below a thousandth of the mean, where the few
#: smallest eigenvalues of a square layer (gamma near 1) scatter over many decades from one spectrum to the next
#: (the hard edge of the log-gas), their exact values do not count; a handful of replicates cannot represent
#: that scatter, and a check that reads it flags correct models
OFFSET = 1e-3
#: least per-rank spread, as a fraction of the median over ranks (`_distance`)
SPREAD_FLOOR = 0.01


def ppc_pvalue(result, seed: int = 0, draws: int = 200) -> float:
    """The posterior predictive p-value of a fit: exact replicate spectra for htmp-exact, KS over `draws`
    posterior draws for the iid models."""
    if result.model == "htmp-exact":
        return exact_ppc(result, seed=seed).p_value
    return ks_pvalue(result, draws, seed)


class ExactCheck:
    """The exact check's numbers: the observed distance, the replicates' distances and the p-value."""

    def __init__(self, observed: float, replicates: np.ndarray):
        self.observed = float(observed)
        self.replicates = np.asarray(replicates, dtype=np.float64)

    @property
    def p_value(self) -> float:
        return _tail_probability(self.observed, self.replicates)


def exact_ppc(result, *, replicates: int = REPLICATES, seed: int = 0) -> ExactCheck:
    """The exact posterior predictive check of an `htmp-exact` fit (see the module docstring)."""
    layer = result.layer
    draws = thinned_draws({k: result.draws[k] for k in ("kappa", "scale")}, replicates, seed)
    rng = np.random.default_rng([seed, 0x9E37])
    observed = np.concatenate([np.zeros(layer.n_censored), np.sort(layer.eigenvalues)])
    floor = layer.floor if layer.n_censored else 0.0
    first = FIRST_BATCH if replicates > FIRST_BATCH else replicates
    spectra = np.empty((0, observed.size))
    for batch in (slice(0, first), slice(first, replicates)):
        more = replicate_spectra(rng, layer.M, layer.gamma, draws["kappa"][batch], draws["scale"][batch],
                                 n_slices=layer.n_slices)
        spectra = np.concatenate([spectra, more])
        check = envelope_check(observed, spectra, floor=floor)
        if not EARLY_STOP[0] <= check.p_value <= EARLY_STOP[1]:
            break
    return check


def thinned_draws(sites: dict[str, np.ndarray], n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """n draws of each site (chains pooled), spread evenly over them; `seed` picks the offset."""
    flat = {k: np.asarray(v).reshape(-1) for k, v in sites.items()}
    total = next(iter(flat.values())).size
    idx = (np.linspace(0, total - 1, n).astype(int) + seed) % total
    return {k: v[idx] for k, v in flat.items()}


def replicate_spectra(rng: np.random.Generator, m: int, gamma: float, kappa: np.ndarray, scale: np.ndarray, *,
                      n_slices: int = 1) -> np.ndarray:
    """One exact HTMP spectrum of n_slices x m eigenvalues per (kappa, scale), each sorted: (len(kappa), n_slices m).

    The beta-Laguerre ensemble with beta = kappa / m by the Dumitriu-Edelman bidiagonal model of
    `hteval.sampling.sample_htmp_spectrum`, with the chi-square draws of all replicates at once and LAPACK's
    dsterf (eigenvalues only) on each tridiagonal.
    """
    from scipy.linalg.lapack import dsterf

    from hteval.sampling import bidiagonal_squares

    kappa = np.repeat(np.asarray(kappa, dtype=np.float64), n_slices)
    scale = np.repeat(np.asarray(scale, dtype=np.float64), n_slices)
    x2, y2 = bidiagonal_squares(rng, m, gamma, kappa[:, None])
    diagonal = x2.copy()
    diagonal[:, 1:] += y2
    off_diagonal = np.sqrt(x2[:, :-1] * y2)
    spectra = np.empty_like(diagonal)
    for r in range(diagonal.shape[0] if m > 1 else 0):  # a 1 x 1 tridiagonal is its own eigenvalue
        values, info = dsterf(diagonal[r], off_diagonal[r])
        if info != 0:
            raise FloatingPointError(f"LAPACK dsterf did not converge on a replicate spectrum (info = {info})")
        spectra[r] = values
    if m == 1:
        spectra[:] = diagonal
    spectra *= (scale * gamma / kappa)[:, None]
    spectra = spectra.reshape(-1, n_slices * m)
    spectra.sort(axis=1)
    return spectra


def envelope_check(observed: np.ndarray, spectra: np.ndarray, *, floor: float = 0.0) -> ExactCheck:
    """The envelope distance of the observed sorted spectrum from replicate spectra (R, n), and each replicate's
    distance from the other replicates; values at or below max(floor, rounding level) count as that level."""
    y, reps = _log_spectra(observed, spectra, floor)
    r = reps.shape[0]
    total, squares = reps.sum(axis=0), np.square(reps).sum(axis=0)
    observed_distance = _distance(y, total / r, squares / r)
    # leave one out: the mean and second moment of the other r - 1 replicates, from the sums
    others_mean = (total - reps) / (r - 1)
    others_square = (squares - np.square(reps)) / (r - 1)
    replicate_distances = _distance(reps, others_mean, others_square)
    return ExactCheck(observed_distance, replicate_distances)


def rank_scores(observed: np.ndarray, spectra: np.ndarray, *, floor: float = 0.0) -> np.ndarray:
    """Per rank, the observed spectrum's z-score against the replicates, as the distance reads it: where the
    model misses the spectrum (`benchmarks/misfit_kappa.py`)."""
    y, reps = _log_spectra(observed, spectra, floor)
    return _scores(y, reps.mean(axis=0), np.square(reps).mean(axis=0))


def _log_spectra(observed, spectra, floor: float) -> tuple[np.ndarray, np.ndarray]:
    """The sorted observed spectrum and the replicates (R, n) as the distance reads them: log(x + OFFSET x mean),
    values at or below max(floor, rounding level) counted as that level."""
    observed = np.sort(np.asarray(observed, dtype=np.float64))
    level = max(floor, ROUNDING * float(observed[-1]))
    offset = OFFSET * float(np.mean(np.maximum(observed, level)))
    return np.log(np.maximum(observed, level) + offset), np.log(np.maximum(spectra, level) + offset)


def _scores(y, mean, second_moment):
    """(y - mean) / sd per rank. A rank's sd counts as at least SPREAD_FLOOR times the median sd over ranks:
    ranks that (nearly) every replicate puts at the same value (censored, or below the rounding level) would
    otherwise turn one replicate's difference there into an unbounded distance."""
    spread = np.sqrt(np.maximum(second_moment - np.square(mean), 0.0))
    least = SPREAD_FLOOR * np.median(spread, axis=-1, keepdims=True) + 1e-12
    return (y - mean) / np.maximum(spread, least)


def _distance(y, mean, second_moment):
    """mean over ranks of the squared scores (`_scores`)."""
    return np.mean(np.square(_scores(y, mean, second_moment)), axis=-1)


def _tail_probability(observed: float, replicates: np.ndarray) -> float:
    """P(T >= observed) from a Student-t predictive law of log T fitted to the replicates: a normal law for
    log T whose centre and spread are estimated (median, MAD), as for a new draw."""
    from scipy.special import stdtr  # the t law's CDF; scipy.stats would cost half a second of imports

    log_t = np.log(replicates)
    n = log_t.size
    # robust centre and spread: one replicate far out (a rare huge gap at small kappa) must not mask a misfit
    mean = float(np.median(log_t))
    sd = 1.4826 * float(np.median(np.abs(log_t - mean)))
    if not (np.isfinite(sd) and sd > 0.0):
        return float(np.mean(replicates >= observed))
    z = (math.log(observed) - mean) / (sd * math.sqrt(1.0 + 1.0 / n))
    return float(stdtr(n - 1, -z))


@in_float64
def ks_pvalue(result, n: int = 200, seed: int = 0) -> float:
    """Posterior predictive p-value of the KS distance (a discrepancy: it depends on the parameters too).

    For each draw theta: D(y, theta) between the observed ESD and F_theta, against D(y_rep, theta) for a
    replicate y_rep drawn from theta; p = P(D(y_rep) >= D(y)). A replicate drawn by inverting F_theta has
    F_theta(y_rep) = uniforms, so D(y_rep, theta) follows the one-sample KS law of n_eigs points whatever theta
    is, and its tail probability is exact (scipy's kstwo): p is the posterior mean of kstwo.sf(D(y, theta)).
    Near 0 means the observed ESD is further from the model than the model's own spectra ever are. Replicates
    are iid, so p is about the shape of the ESD, not about eigenvalue repulsion.

    In numpy where the model gives its CDF over a batch of draws (`batch_cdf`: every model hteval ships) and the
    fit keeps its draws and spectrum, so the check loads no JAX; otherwise by `hteval.predictive`'s compiled laws.
    """
    from scipy.stats import kstwo

    from hteval.models import MODELS

    module = MODELS[result.model]
    if hasattr(module, "batch_cdf") and getattr(result, "draws", None) and result.layer is not None:
        draws = thinned_draws({k: result.draws[k] for k in module.LAW_SITES}, n, seed)
        observed = np.sort(np.asarray(result.layer.eigenvalues, dtype=np.float64))
        context = {"gamma": float(result.record[names.GAMMA]), "m": int(result.record[names.M]),
                   "scale_ref": float(np.mean(observed))}
        cdf = module.batch_cdf(observed, draws, **context)
    else:
        from hteval.predictive import law_cdf

        observed, cdf = law_cdf(result, n, seed)
    return float(np.mean(kstwo.sf(ks_distance(observed, cdf), observed.size)))


def ks_distance(sorted_x, cdf):
    """KS distance between the empirical CDF of sorted_x and a model CDF given at those points, per draw."""
    cdf = np.asarray(cdf)
    n = np.shape(sorted_x)[-1]
    upper = np.arange(1, n + 1) / n - cdf
    lower = cdf - np.arange(n) / n
    return np.maximum(upper.max(axis=-1), lower.max(axis=-1))


__all__ = ["REPLICATES", "ExactCheck", "envelope_check", "exact_ppc", "ks_distance", "ks_pvalue", "ppc_pvalue",
           "rank_scores", "replicate_spectra", "thinned_draws"]
