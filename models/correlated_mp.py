"""Correlated Marchenko-Pastur: columns with a power-law population covariance, t_i ~ i^-nu (SPEC section 3).

nu = 0 is white MP; larger nu spreads the population spectrum, which widens the ESD and lifts its top
eigenvalues without any heavy-tailed entries. The density solves the population-covariance (Silverstein)
equation (`hteval.densities.correlated_mp`) for the continuous power-law population law. Its support is one
interval, so it carries MP's outlier component.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from hteval.densities.correlated_mp import (
    correlated_mp_cdf,
    correlated_mp_icdf,
    correlated_mp_logpdf,
)
from hteval.models import outliers
from hteval.models.observe import PointwiseDensity, observe
from hteval.models.priors import correlation_exponent_prior, outlier_weight_prior, scale_prior

PARAMETERS = ("nu", "scale", "outlier_weight")
LAW_SITES = ("nu", "scale", "outlier_weight")
# once nu ~ 1 the posterior correlation of nu and scale is ~0.95 (the top eigenvalues trade one against the
# other); a dense mass matrix raised the effective draws per draw there from ~0.2 to ~0.3 (m = 300, nu = 1)
DENSE_MASS = True


def _log_cdf_main(x, gamma, nu, scale, m):
    value = correlated_mp_cdf(x, gamma, nu, scale, m)
    return jnp.where(value > 0, jnp.log(jnp.where(value > 0, value, 1.0)), -jnp.inf)


def log_density(x, p, *, gamma, m, scale_ref):
    main = correlated_mp_logpdf(x, gamma, p["nu"], p["scale"], m)
    return outliers.mix_log(main, outliers.log_density(x, scale_ref), p["outlier_weight"])


def log_cdf(x, p, *, gamma, m, scale_ref):
    main = _log_cdf_main(x, gamma, p["nu"], p["scale"], m)
    return outliers.mix_log(main, outliers.log_cdf(x, scale_ref), p["outlier_weight"])


def draw(key, p, n, *, gamma, m, scale_ref):
    def main(k, size):
        u = jax.random.uniform(k, (size,), minval=1e-12, maxval=1 - 1e-12)
        return correlated_mp_icdf(u, gamma, p["nu"], p["scale"], m)

    return outliers.mix_draw(key, main, n, p["outlier_weight"], scale_ref)


def model(eigenvalues, *, gamma: float, m: int, n_censored: int = 0, floor: float = 0.0, scale_ref: float = 1.0):
    p = {"nu": correlation_exponent_prior(), "scale": scale_prior("scale", scale_ref),
         "outlier_weight": outlier_weight_prior()}
    context = {"gamma": gamma, "m": m, "scale_ref": scale_ref}
    law = PointwiseDensity(lambda x: log_density(x, p, **context))
    observe(law, lambda: log_cdf(floor, p, **context), eigenvalues, n_censored)
