"""Marchenko-Pastur model with an outlier component.

MP gives zero density outside its support, so one eigenvalue beyond the bulk edge would make the likelihood
-inf. Each eigenvalue is instead drawn from (1 - w) MP(gamma, sigma2) + w Outlier (`hteval.models.outliers`),
so every model sees the same observations and censoring.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from hteval.densities.mp import mp_cdf, mp_icdf, mp_logpdf
from hteval.models import outliers
from hteval.models.observe import PointwiseDensity, observe
from hteval.models.priors import outlier_weight_prior, scale_prior

PARAMETERS = ("sigma2", "outlier_weight")
LAW_SITES = ("sigma2", "outlier_weight")


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
