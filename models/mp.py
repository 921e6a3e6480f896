"""Marchenko-Pastur model with an outlier component.

MP gives zero density outside its support, so one eigenvalue beyond the bulk edge would make the likelihood
-inf. Each eigenvalue is instead drawn from (1 - w) MP(gamma, sigma2) + w Outlier, the outlier law a broad
log-normal centred on the ESD's mean (log-sd 3), so every model sees the same observations and censoring.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpyro.distributions as dist
from jax.scipy.special import log_ndtr

from hteval.densities.mp import mp_cdf, mp_logpdf
from hteval.models.observe import PointwiseDensity, observe
from hteval.models.priors import outlier_weight_prior, scale_prior

PARAMETERS = ("sigma2", "outlier_weight")
OUTLIER_LOG_SD = 3.0


def model(eigenvalues, *, gamma: float, m: int, n_censored: int = 0, floor: float = 0.0, scale_ref: float = 1.0):
    sigma2 = scale_prior("sigma2", scale_ref)
    w = outlier_weight_prior()
    outlier = dist.LogNormal(jnp.log(scale_ref), OUTLIER_LOG_SD)

    def log_density(x):
        return jnp.logaddexp(jnp.log1p(-w) + mp_logpdf(x, gamma, sigma2), jnp.log(w) + outlier.log_prob(x))

    def log_cdf_floor():
        # in logs: MP's CDF is exactly 0 below its lower edge, the outlier's underflows far below the ESD's mean
        cdf = mp_cdf(floor, gamma, sigma2)
        log_mp = jnp.where(cdf > 0, jnp.log(jnp.where(cdf > 0, cdf, 1.0)), -jnp.inf)
        log_outlier = log_ndtr((jnp.log(floor) - jnp.log(scale_ref)) / OUTLIER_LOG_SD)
        return jnp.logaddexp(jnp.log1p(-w) + log_mp, jnp.log(w) + log_outlier)

    observe(PointwiseDensity(log_density), log_cdf_floor, eigenvalues, n_censored)
