"""HTMP model: each eigenvalue iid from HTMP(gamma, kappa, scale), gamma fixed by the layer shape.

The posterior is drawn exactly (`posterior_draws`; this module's `exact_posterior` serves the whole HTMP family):
a zoomed grid over (log kappa, log scale), independent draws, no Markov chains. NUTS on `model` targets the same
posterior (`fit(..., sampler="nuts")`).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import numpy as np
import numpyro

from hteval import evidence, quadrature
from hteval.densities.htmp import (
    HTMP,
    PhiBatch,
    htmp_cdf,
    htmp_icdf,
    htmp_log_cdf,
    htmp_logpdf,
    log_tail_batch,
    quantile_batch,
)
from hteval.models import outliers
from hteval.models.observe import observe
from hteval.models.priors import kappa_prior, scale_prior

PARAMETERS = ("kappa", "scale")
LAW_SITES = ("kappa", "scale")
#: NUTS with a dense mass matrix: kappa and scale are correlated in the posterior, and on MiniLM layers a diagonal
#: one gave ~300 effective draws per 1000 where the dense one gives ~700. (Not for every model: MP + outliers on a
#: heavy-tailed square layer stalled with it after a short warm-up.)
DENSE_MASS = True


def log_density(x, p, *, gamma, m, scale_ref):
    return htmp_logpdf(x, gamma, p["kappa"], p["scale"])


def cdf(x, p, *, gamma, m, scale_ref):
    return htmp_cdf(x, gamma, p["kappa"], p["scale"])


def log_cdf(x, p, *, gamma, m, scale_ref):
    return htmp_log_cdf(x, gamma, p["kappa"], p["scale"])


def draw(key, p, n, *, gamma, m, scale_ref):
    u = jax.random.uniform(key, (n,), minval=1e-12, maxval=1 - 1e-12)
    return htmp_icdf(u, gamma, p["kappa"], p["scale"])


def model(eigenvalues, *, gamma: float, m: int, n_censored: int = 0, floor: float = 0.0, scale_ref: float = 1.0):
    kappa = kappa_prior()
    scale = scale_prior("scale", scale_ref)
    numpyro.deterministic("T", m / kappa)  # log-gas temperature (SPEC section 3)
    law = HTMP(gamma, kappa, scale)
    observe(law, lambda: law.log_cdf(floor), eigenvalues, n_censored)


# ---------------------------------------------------------------------------------------------------------------
# Exact posterior draws, shared by the HTMP family (htmp, htmp-outliers, inverse-htmp).
#
# log f(x | kappa, scale) = phi_kappa(t) - log x with t = log(x / scale) (t = log(scale / x) for the inverse
# model), so on a grid over (log kappa, log scale) the per-kappa work (node values and Chebyshev coefficients) is
# done once per kappa and every (scale, eigenvalue) pair costs one interpolation (`hteval.densities.htmp.PhiBatch`,
# two programs compiled once per aspect ratio for every model and caller). The grid (`hteval.quadrature`) starts on
# the whole log kappa prior range (its bounds hold no edge mass) and on log scale_ref +- SCALE_REACH prior sds; an
# outlier weight is integrated at each grid point by `quadrature.weight_log_marginal` and drawn from its
# conditional afterwards. Nothing is approximated beyond the density's own table and the quadratures' resolution,
# which the grid's checks report.
# ---------------------------------------------------------------------------------------------------------------

SAMPLER = "exact: quadrature over (log kappa, log scale), independent draws"
#: `posterior_draws` takes a numpy Generator, not a JAX key
RANDOM = "numpy"
SCALE_REACH = 10.0  # prior sds of log scale either side of log scale_ref on the first grid
#: points per axis of the passes that find the grid's box: the posterior is unimodal, and a box the coarse passes
#: misjudge is reached out of (`quadrature._zoom`) or reported by the final grid's checks
ZOOM_SIZE = 32
_TABLE_CELLS = 4_000_000  # (kappa, scale, eigenvalue) values per block of the grid's table: bounded memory


def main_log_density(phi: PhiBatch, log_scale, log_x, inverse: bool) -> np.ndarray:
    """log f at every eigenvalue for each (kappa of phi's row k, scale log_scale[k, j]): shape (K, J, n)."""
    log_scale = np.asarray(log_scale)[:, :, None]
    t = log_scale - log_x if inverse else log_x - log_scale
    return phi(t.reshape(t.shape[0], -1)).reshape(t.shape) - log_x


def censored_log_cdf(phi: PhiBatch, log_scale, log_floor: float, inverse: bool) -> np.ndarray:
    """log P(x <= floor) for each (kappa of row k, scale log_scale[k, j]): shape (K, J), deep tails included."""
    if inverse:  # P(scale / s <= floor) = P(s >= scale / floor)
        return log_tail_batch(phi, np.asarray(log_scale) - log_floor, upper=True)
    return log_tail_batch(phi, log_floor - np.asarray(log_scale), upper=False)


def _observation_terms(phi, log_scale, x_data, inverse: bool, outlier_logs):
    """Per (kappa, scale): the main law's log density at the eigenvalues and, where the layer has censored values,
    its log CDF at the floor as one more column: (K, J, n [+ 1])."""
    log_x, n_censored, log_floor = x_data
    log_f = main_log_density(phi, log_scale, log_x, inverse)
    if not n_censored:
        return log_f
    floor_term = censored_log_cdf(phi, log_scale, log_floor, inverse)
    return np.concatenate([log_f, floor_term[..., None]], axis=-1)


def _counts(n: int, n_censored: int) -> np.ndarray:
    return np.concatenate([np.ones(n), [float(n_censored)]]) if n_censored else np.ones(n)


def _grid_log_posterior(log_kappa, log_scale, gamma, x_data, inverse, outlier_logs, log_ref, sd=1.0,
                        weight_prior=outliers.PRIOR):
    """log p(log kappa, log scale | data) up to a constant on the grid (A,) x (B,) -> (A, B), the outlier weight
    (where there is one) integrated out against its Beta prior; log kappa's prior is uniform on the grid's range,
    log scale's normal with sd `sd` (`_log_evidence` adds the constants the table leaves out)."""
    log_x, n_censored, _ = x_data
    counts = _counts(log_x.size, n_censored)
    table = np.empty((log_kappa.size, log_scale.size))
    rows = max(1, _TABLE_CELLS // (log_scale.size * counts.size))
    for start in range(0, log_kappa.size, rows):
        block = slice(start, start + rows)
        phi = PhiBatch(gamma, np.exp(log_kappa[block]))
        scales = np.broadcast_to(log_scale, (phi.kappa.size, log_scale.size))
        terms = _observation_terms(phi, scales, x_data, inverse, outlier_logs)
        if outlier_logs is None:
            table[block] = np.sum(terms * counts, axis=-1)
        else:
            flat = terms.reshape(-1, counts.size)
            table[block] = quadrature.weight_log_marginal(flat, outlier_logs, counts, weight_prior).reshape(
                phi.kappa.size, log_scale.size)
    return table - 0.5 * ((log_scale[None, :] - log_ref) / sd) ** 2  # log scale ~ Normal(log scale_ref, sd)


def _grid(data, sd: float = 1.0, weight_prior=outliers.PRIOR) -> quadrature.Grid:
    """The zoomed grid over (log kappa, log scale): the whole prior range of log kappa (its bounds hold no edge
    mass) and log scale_ref +- SCALE_REACH prior sds."""
    from hteval.models.priors import LOG_KAPPA_HIGH, LOG_KAPPA_LOW

    log_ref = data[-1]
    kappa_range = (LOG_KAPPA_LOW, LOG_KAPPA_HIGH)
    return quadrature.zoomed_grid(_grid_log_posterior, kappa_range, (log_ref - SCALE_REACH * sd,
                                                                     log_ref + SCALE_REACH * sd),
                                  (*data, sd, weight_prior), table=True, zoom_size=ZOOM_SIZE,
                                  limits=(kappa_range, None), reach_out=True)


def _log_evidence(grid: quadrature.Grid, sd: float = 1.0) -> float:
    """log Z: the grid's total with the priors' constants its table leaves out, log kappa's uniform density and
    log scale's normal one (an outlier weight is integrated against its normalised Beta prior in the table)."""
    from hteval.models.priors import LOG_KAPPA_HIGH, LOG_KAPPA_LOW

    return (grid.log_total + evidence.uniform_log_constant(LOG_KAPPA_LOW, LOG_KAPPA_HIGH)
            + evidence.normal_log_constant(sd))


def _evidence(grid, data, log_scale, w) -> evidence.Evidence:
    """The exact log evidence and the wide one: scale's prior sd doubled, the outlier weight's Beta(1, 20) widened;
    kappa's range is the density's whole domain (`hteval.densities.htmp.KAPPA_MIN`, `KAPPA_MAX`), which a wider
    prior is clipped to, so it stays."""
    wide = {"sd": evidence.WIDE, "weight_prior": evidence.widened_beta(outliers.PRIOR)}
    log_ratio = evidence.normal_log_ratio(log_scale, data[-1], 1.0)
    if w is not None:
        log_ratio = log_ratio + evidence.beta_log_ratio(w, outliers.PRIOR, wide["weight_prior"])
    return evidence.evidence(_log_evidence(grid), log_ratio,
                             lambda: _log_evidence(_grid(data, **wide), wide["sd"]))


def exact_posterior(rng: np.random.Generator, eigenvalues, *, inverse: bool, with_outliers: bool, chains: int,
                    draws: int, gamma: float, m: int, n_censored: int = 0, floor: float = 0.0,
                    scale_ref: float = 1.0, log_likelihood: bool = True):
    """Independent posterior draws of an HTMP-family model (sites shaped (chains, draws) as NUTS names them), the
    pointwise log-likelihood (chains, draws, eigenvalues; None without log_likelihood) and the grid, which carries
    the model's log evidence (`hteval.evidence`)."""
    x = np.asarray(eigenvalues, dtype=np.float64)
    log_ref = math.log(scale_ref)
    x_data = (np.log(x), int(n_censored), math.log(floor) if n_censored else 0.0)
    outlier_logs = None
    if with_outliers:
        outlier_logs = outliers.log_density_np(x, scale_ref)
        if n_censored:
            outlier_logs = np.append(outlier_logs, outliers.log_cdf_np(floor, scale_ref))
    data = (float(gamma), x_data, inverse, outlier_logs, log_ref)
    grid = _grid(data)
    log_kappa, log_scale = quadrature.draw(grid, chains * draws, rng)
    kappa = np.exp(log_kappa)
    posterior = {"log_kappa": log_kappa, "kappa": kappa, "log_scale": log_scale, "scale": np.exp(log_scale),
                 "T": m / kappa}
    loglik = None
    if with_outliers or log_likelihood:
        phi = PhiBatch(gamma, kappa)
        terms = _observation_terms(phi, log_scale[:, None], x_data, inverse, outlier_logs)[:, 0, :]
        log_f = terms[:, :x.size]
        if with_outliers:
            w = quadrature.weight_draws(terms, outlier_logs, _counts(x.size, n_censored), outliers.PRIOR, rng)
            posterior["outlier_weight"] = w
            log_f = outliers.mix_log_np(log_f, outlier_logs[:x.size], w[:, None])
        if log_likelihood:
            loglik = log_f.reshape(chains, draws, -1)
    grid = dataclasses.replace(grid, evidence=_evidence(grid, data, log_scale, posterior.get("outlier_weight")))
    return {k: v.reshape(chains, draws) for k, v in posterior.items()}, loglik, grid


def posterior_draws(rng: np.random.Generator, eigenvalues, *, chains, draws, gamma, m, n_censored=0, floor=0.0,
                    scale_ref=1.0, log_likelihood=True):
    """Independent posterior draws (`exact_posterior`), the pointwise log-likelihood and the grid."""
    return exact_posterior(rng, eigenvalues, inverse=False, with_outliers=False, chains=chains, draws=draws,
                           gamma=gamma, m=m, n_censored=n_censored, floor=floor, scale_ref=scale_ref,
                           log_likelihood=log_likelihood)


def batch_log_density(x, p, *, gamma, m, scale_ref):
    """log f at points x (n,) for each of a batch of draws (arrays (D,)): (D, n), in numpy."""
    log_x = np.log(np.asarray(x, dtype=np.float64))
    return main_log_density(PhiBatch(gamma, p["kappa"]), np.log(p["scale"])[:, None], log_x, False)[:, 0, :]


def batch_cdf(x, p, *, gamma, m, scale_ref):
    """The CDF at points x (n,) for each of a batch of draws (arrays (D,)): (D, n), in numpy."""
    t = np.log(np.asarray(x))[None, :] - np.log(p["scale"])[:, None]
    return PhiBatch(gamma, p["kappa"])(t, phase=True)


def main_draws(rng: np.random.Generator, p, n, gamma, inverse: bool = False) -> np.ndarray:
    """n iid draws of the HTMP law (or of scale / s for the inverse model) per draw of (kappa, scale): (D, n)."""
    u = rng.uniform(1e-12, 1 - 1e-12, size=(p["kappa"].size, n))
    t = quantile_batch(PhiBatch(gamma, p["kappa"]), u)
    return p["scale"][:, None] * np.exp(-t if inverse else t)


def batch_draw(rng: np.random.Generator, p, n, *, gamma, m, scale_ref):
    """n iid eigenvalues for each of a batch of draws: (D, n), in numpy."""
    return main_draws(rng, p, n, gamma)
