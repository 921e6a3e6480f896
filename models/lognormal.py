"""Log-normal baseline: log eigenvalues iid normal. No random-matrix content; a model that cannot beat it has
not earned its physics.

The posterior of (mu, sigma) is drawn exactly (`posterior_draws`): the likelihood depends on the data through the
count, mean and sum of squares of log x (and the censored count), so a zoomed grid over (mu, log sigma)
(`hteval.quadrature`) costs microseconds in numpy, with no compilation. NUTS on `model` targets the same posterior.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax.scipy.special import log_ndtr
from scipy import special

from hteval import evidence, quadrature
from hteval.models.observe import observe
from hteval.models.priors import LOG_LOCATION_SD, LOG_SPREAD_SD, log_location_prior, log_spread_prior

PARAMETERS = ("mu", "sigma")
LAW_SITES = ("mu", "sigma")
SAMPLER = "exact: quadrature over (mu, log sigma), independent draws"
#: `posterior_draws` takes a numpy Generator, not a JAX key
RANDOM = "numpy"
_HALF_LOG_TWO_PI = 0.5 * math.log(2 * math.pi)


def log_density(x, p, *, gamma, m, scale_ref):
    safe = jnp.where(x > 0, x, 1.0)
    value = jax.scipy.stats.norm.logpdf(jnp.log(safe), p["mu"], p["sigma"]) - jnp.log(safe)
    return jnp.where(x > 0, value, -jnp.inf)


def log_cdf(x, p, *, gamma, m, scale_ref):
    return log_ndtr((jnp.log(x) - p["mu"]) / p["sigma"])


def draw(key, p, n, *, gamma, m, scale_ref):
    return jnp.exp(p["mu"] + p["sigma"] * jax.random.normal(key, (n,)))


def model(eigenvalues, *, gamma: float, m: int, n_censored: int = 0, floor: float = 0.0, scale_ref: float = 1.0):
    mu, sigma = log_location_prior(scale_ref), log_spread_prior()
    law = dist.LogNormal(mu, sigma)
    numpyro.deterministic("median", jnp.exp(mu))
    observe(law, lambda: log_cdf(floor, {"mu": mu, "sigma": sigma}, gamma=gamma, m=m, scale_ref=scale_ref),
            eigenvalues, n_censored)


def _log_posterior(mu, log_sigma, count, mean, squares, n_censored, log_floor, log_ref, location_sd=LOG_LOCATION_SD,
                   spread_sd=LOG_SPREAD_SD):
    """log p(mu, log sigma | data) up to a constant on the grid (mu (A,), log sigma (B,)) -> (A, B): the constants
    of the normal densities (the likelihood's and the priors') are left out (`_log_evidence` adds them)."""
    mu, log_sigma = mu[:, None], log_sigma[None, :]
    sigma = np.exp(log_sigma)
    value = (-(count * (mean - mu) ** 2 + squares) / (2 * sigma**2) - count * log_sigma
             - 0.5 * ((mu - log_ref) / location_sd) ** 2 - 0.5 * (log_sigma / spread_sd) ** 2)
    if n_censored:
        value = value + n_censored * special.log_ndtr((log_floor - mu) / sigma)
    return value


def _grid(data, logs, location_sd=LOG_LOCATION_SD, spread_sd=LOG_SPREAD_SD) -> quadrature.Grid:
    return quadrature.zoomed_grid(_log_posterior, (float(logs.min()) - 10.0, float(logs.max()) + 10.0),
                                  (math.log(1e-3), math.log(1e2)), (*data, location_sd, spread_sd), table=True,
                                  reach_out=True)


def _log_evidence(grid, logs, location_sd=LOG_LOCATION_SD, spread_sd=LOG_SPREAD_SD) -> float:
    """log Z: the grid's total with the constants its table leaves out, the likelihood's (-log(sqrt(2 pi) x) per
    eigenvalue) and the normal priors' of mu and log sigma."""
    likelihood = -logs.size * _HALF_LOG_TWO_PI - float(np.sum(logs))
    return (grid.log_total + likelihood + evidence.normal_log_constant(location_sd)
            + evidence.normal_log_constant(spread_sd))


def _evidence(grid, data, logs, mu, log_sigma) -> evidence.Evidence:
    """The exact log evidence and the wide one (both priors' sds doubled)."""
    log_ratio = (evidence.normal_log_ratio(mu, data[-1], LOG_LOCATION_SD)
                 + evidence.normal_log_ratio(log_sigma, 0.0, LOG_SPREAD_SD))
    wide = {"location_sd": evidence.WIDE * LOG_LOCATION_SD, "spread_sd": evidence.WIDE * LOG_SPREAD_SD}
    return evidence.evidence(_log_evidence(grid, logs), log_ratio,
                             lambda: _log_evidence(_grid(data, logs, **wide), logs, **wide))


def posterior_draws(rng: np.random.Generator, eigenvalues, *, chains, draws, gamma, m, n_censored=0, floor=0.0,
                    scale_ref=1.0, log_likelihood=True):
    """Independent posterior draws (each site shaped (chains, draws)), the pointwise log-likelihood (chains, draws,
    eigenvalues; None without log_likelihood) and the grid (its checks join the fit's verdict; it carries the log
    evidence)."""
    logs = np.log(np.asarray(eigenvalues, dtype=np.float64))
    mean = float(logs.mean())
    data = (logs.size, mean, float(np.sum((logs - mean) ** 2)), int(n_censored),
            math.log(floor) if n_censored else 0.0, math.log(scale_ref))
    grid = _grid(data, logs)
    mu, log_sigma = quadrature.draw(grid, chains * draws, rng)
    sigma = np.exp(log_sigma)
    loglik = None
    if log_likelihood:
        loglik = _pointwise(logs, mu, sigma).reshape(chains, draws, -1)
    posterior = {"mu": mu, "sigma": sigma, "median": np.exp(mu)}
    grid = dataclasses.replace(grid, evidence=_evidence(grid, data, logs, mu, log_sigma))
    return {k: v.reshape(chains, draws) for k, v in posterior.items()}, loglik, grid


def _pointwise(logs, mu, sigma):
    z = (logs[None, :] - mu[:, None]) / sigma[:, None]
    return -0.5 * z**2 - np.log(sigma)[:, None] - _HALF_LOG_TWO_PI - logs[None, :]


def batch_log_density(x, p, *, gamma, m, scale_ref):
    """log f at points x (n,) for each of a batch of draws (arrays (D,)): (D, n), in numpy."""
    return _pointwise(np.log(np.asarray(x, dtype=np.float64)), p["mu"], p["sigma"])


def batch_cdf(x, p, *, gamma, m, scale_ref):
    """The CDF at points x (n,) for each of a batch of draws (arrays (D,)): (D, n), in numpy."""
    return special.ndtr((np.log(np.asarray(x))[None, :] - p["mu"][:, None]) / p["sigma"][:, None])


def batch_draw(rng: np.random.Generator, p, n, *, gamma, m, scale_ref):
    """n iid eigenvalues for each of a batch of draws: (D, n), in numpy."""
    return np.exp(p["mu"][:, None] + p["sigma"][:, None] * rng.standard_normal((p["mu"].size, n)))
