"""Marchenko-Pastur model with an outlier component.

MP gives zero density outside its support, so one eigenvalue beyond the bulk edge would make the likelihood
-inf. Each eigenvalue is instead drawn from (1 - w) MP(gamma, sigma2) + w Outlier (`hteval.models.outliers`),
so every model sees the same observations and censoring.

The posterior is drawn exactly (`posterior_draws`): a zoomed grid over (log sigma2, logit w) in numpy
(`hteval.quadrature`), no compilation. It is not smooth (an eigenvalue crossing a bulk edge switches from the MP
term to the outlier term), and on spectra MP does not describe it can have several modes, which NUTS chains
visit unequally (R-hat 1.16 on an HTMP spectrum, README); the grid holds each with its mass. NUTS on `model`
targets the same posterior.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from hteval import evidence, quadrature
from hteval.densities.mp import mp_cdf, mp_cdf_np, mp_icdf, mp_icdf_np, mp_logpdf, mp_logpdf_np
from hteval.models import outliers
from hteval.models.observe import PointwiseDensity, observe
from hteval.models.priors import outlier_weight_prior, scale_prior

PARAMETERS = ("sigma2", "outlier_weight")
LAW_SITES = ("sigma2", "outlier_weight")
SAMPLER = "exact: quadrature over (log sigma2, logit w), independent draws"
#: `posterior_draws` takes a numpy Generator, not a JAX key
RANDOM = "numpy"
_TABLE_CELLS = 2_000_000  # (sigma2, w, eigenvalue) values per block of the grid's table: bounded memory


def _log_cdf_mp(x, gamma, sigma2):
    # in logs: MP's CDF is exactly 0 below its lower edge
    value = mp_cdf(x, gamma, sigma2)
    return jnp.where(value > 0, jnp.log(jnp.where(value > 0, value, 1.0)), -jnp.inf)


def log_density(x, p, *, gamma, m, scale_ref):
    return outliers.mix_log(mp_logpdf(x, gamma, p["sigma2"]), outliers.log_density(x, scale_ref), p["outlier_weight"])


def log_cdf(x, p, *, gamma, m, scale_ref):
    return outliers.mix_log(_log_cdf_mp(x, gamma, p["sigma2"]), outliers.log_cdf(x, scale_ref), p["outlier_weight"])


def draw(key, p, n, *, gamma, m, scale_ref):
    def main(k, size):
        u = jax.random.uniform(k, (size,), minval=1e-12, maxval=1 - 1e-12)
        return mp_icdf(u, gamma, p["sigma2"])

    return outliers.mix_draw(key, main, n, p["outlier_weight"], scale_ref)


def model(eigenvalues, *, gamma: float, m: int, n_censored: int = 0, floor: float = 0.0, scale_ref: float = 1.0):
    p = {"sigma2": scale_prior("sigma2", scale_ref), "outlier_weight": outlier_weight_prior()}
    context = {"gamma": gamma, "m": m, "scale_ref": scale_ref}
    law = PointwiseDensity(lambda x: log_density(x, p, **context))
    observe(law, lambda: log_cdf(floor, p, **context), eigenvalues, n_censored)


def _log_weights(logit_w):
    """log w and log(1 - w) from logit w, without overflow either way."""
    return -np.logaddexp(0.0, -logit_w), -np.logaddexp(0.0, logit_w)


def _log_posterior(log_sigma2, logit_w, x, log_outlier, gamma, n_censored, floor, log_outlier_floor, log_ref,
                   sd=1.0, weight_prior=outliers.PRIOR):
    """log p(log sigma2, logit w | data) up to a constant, on the grid (A,) x (B,) -> (A, B); sd and weight_prior
    are the priors' (`_log_prior_constant` holds what the table leaves out of them)."""
    log_w, log_rest = _log_weights(logit_w)
    sigma2 = np.exp(log_sigma2)
    table = np.empty((sigma2.size, logit_w.size))
    rows = max(1, _TABLE_CELLS // (logit_w.size * x.size))
    for start in range(0, sigma2.size, rows):
        main = mp_logpdf_np(x[None, :], gamma, sigma2[start:start + rows, None])
        mixed = np.logaddexp(log_rest[None, :, None] + main[:, None, :], log_w[None, :, None] + log_outlier)
        table[start:start + rows] = mixed.sum(axis=-1)
    if n_censored:
        with np.errstate(divide="ignore"):
            log_cdf_floor = np.log(mp_cdf_np(floor, gamma, sigma2))
        table += n_censored * np.logaddexp(log_rest + log_cdf_floor[:, None], log_w + log_outlier_floor)
    # log sigma2 ~ Normal(log scale_ref, sd); w ~ Beta(a, b) times the Jacobian w (1 - w) of logit w
    prior_w = (weight_prior[0] * log_w + weight_prior[1] * log_rest)[None, :]
    return table - 0.5 * ((log_sigma2[:, None] - log_ref) / sd) ** 2 + prior_w


def _grid(data, log_ref: float, sd: float = 1.0, weight_prior=outliers.PRIOR) -> quadrature.Grid:
    return quadrature.zoomed_grid(_log_posterior, (log_ref - 10.0 * sd, log_ref + 10.0 * sd), (-30.0, 10.0),
                                  (*data, sd, weight_prior), table=True, reach_out=True)


def _log_evidence(grid: quadrature.Grid, sd: float = 1.0, weight_prior=outliers.PRIOR) -> float:
    """log Z: the grid's total with the normal and Beta priors' constants the table leaves out."""
    return grid.log_total + evidence.normal_log_constant(sd) + evidence.beta_log_constant(weight_prior)


def _evidence(grid, data, log_ref, log_sigma2, w) -> evidence.Evidence:
    """The exact log evidence and, with sigma2's prior sd doubled and w's Beta(1, 20) widened, the wide one."""
    wide_prior = evidence.widened_beta(outliers.PRIOR)
    log_ratio = (evidence.normal_log_ratio(log_sigma2, log_ref, 1.0)
                 + evidence.beta_log_ratio(w, outliers.PRIOR, wide_prior))
    wide = {"sd": evidence.WIDE, "weight_prior": wide_prior}
    return evidence.evidence(_log_evidence(grid), log_ratio,
                             lambda: _log_evidence(_grid(data, log_ref, **wide), **wide))


def posterior_draws(rng: np.random.Generator, eigenvalues, *, chains, draws, gamma, m, n_censored=0, floor=0.0,
                    scale_ref=1.0, log_likelihood=True):
    """Independent posterior draws (each site shaped (chains, draws)), the pointwise log-likelihood (chains, draws,
    eigenvalues; None without log_likelihood) and the grid (its checks join the fit's verdict)."""
    x = np.asarray(eigenvalues, dtype=np.float64)
    log_ref = math.log(scale_ref)
    log_outlier_floor = float(outliers.log_cdf_np(floor, scale_ref)) if n_censored else 0.0
    data = (x, outliers.log_density_np(x, scale_ref), float(gamma), int(n_censored), float(floor), log_outlier_floor,
            log_ref)
    grid = _grid(data, log_ref)
    log_sigma2, logit_w = quadrature.draw(grid, chains * draws, rng)
    sigma2, w = np.exp(log_sigma2), np.exp(_log_weights(logit_w)[0])
    grid = dataclasses.replace(grid, evidence=_evidence(grid, data, log_ref, log_sigma2, w))
    loglik = None
    if log_likelihood:
        loglik = _pointwise(x, sigma2, w, gamma, scale_ref).reshape(chains, draws, -1)
    posterior = {"log_sigma2": log_sigma2, "sigma2": sigma2, "outlier_weight": w}
    return {k: v.reshape(chains, draws) for k, v in posterior.items()}, loglik, grid


def _pointwise(x, sigma2, w, gamma, scale_ref):
    main = mp_logpdf_np(x[None, :], gamma, sigma2[:, None])
    return outliers.mix_log_np(main, outliers.log_density_np(x, scale_ref), w[:, None])


def batch_log_density(x, p, *, gamma, m, scale_ref):
    """log f at points x (n,) for each of a batch of draws (arrays (D,)): (D, n), in numpy."""
    return _pointwise(np.asarray(x, dtype=np.float64), p["sigma2"], p["outlier_weight"], gamma, scale_ref)


def batch_cdf(x, p, *, gamma, m, scale_ref):
    """The CDF at points x (n,) for each of a batch of draws (arrays (D,)): (D, n), in numpy."""
    w = p["outlier_weight"][:, None]
    return (1 - w) * mp_cdf_np(np.asarray(x)[None, :], gamma, p["sigma2"][:, None]) + w * outliers.cdf_np(x, scale_ref)


def batch_draw(rng: np.random.Generator, p, n, *, gamma, m, scale_ref):
    """n iid eigenvalues for each of a batch of draws: (D, n), in numpy."""
    return outliers.mix_draw_np(rng, lambda u: mp_icdf_np(u, gamma, p["sigma2"][:, None]), p["outlier_weight"], n,
                                scale_ref)
