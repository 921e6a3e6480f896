"""Log-normal baseline: log eigenvalues iid normal. No random-matrix content; a model that cannot beat it has
not earned its physics."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from jax.scipy.special import log_ndtr

from hteval.models.observe import observe
from hteval.models.priors import log_location_prior, log_spread_prior

PARAMETERS = ("mu", "sigma")
LAW_SITES = ("mu", "sigma")


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
