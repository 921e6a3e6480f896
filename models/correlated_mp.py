"""Correlated Marchenko-Pastur: columns with a power-law population covariance, t_i ~ i^-nu (SPEC section 3).

nu = 0 is white MP; larger nu spreads the population spectrum, which widens the ESD and lifts its top
eigenvalues without any heavy-tailed entries. The density solves the population-covariance (Silverstein)
equation (`hteval.densities.correlated_mp`). It has compact support, so it carries MP's outlier component.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from hteval.densities.correlated_mp import correlated_mp_cdf, correlated_mp_logpdf, correlated_mp_support
from hteval.models import outliers
from hteval.models.observe import PointwiseDensity, observe
from hteval.models.priors import correlation_exponent_prior, outlier_weight_prior, scale_prior

PARAMETERS = ("nu", "scale", "outlier_weight")
LAW_SITES = ("nu", "scale", "outlier_weight")
_BISECTION_STEPS = 60


def _log_cdf_main(x, gamma, nu, scale, m):
    value = correlated_mp_cdf(x, gamma, nu, scale, m)
    return jnp.where(value > 0, jnp.log(jnp.where(value > 0, value, 1.0)), -jnp.inf)


def log_density(x, p, *, gamma, m, scale_ref):
    main = correlated_mp_logpdf(x, gamma, p["nu"], p["scale"], m)
    return outliers.mix_log(main, outliers.log_density(x, scale_ref), p["outlier_weight"])


def log_cdf(x, p, *, gamma, m, scale_ref):
    main = _log_cdf_main(x, gamma, p["nu"], p["scale"], m)
    return outliers.mix_log(main, outliers.log_cdf(x, scale_ref), p["outlier_weight"])


def _icdf(u, gamma, nu, scale, m):
    """Quantiles by bisection between the support's edges (predictive draws only, never inside NUTS)."""
    lo, hi = correlated_mp_support(gamma, nu, m)
    lo, hi = scale * lo, scale * hi * 1.001

    def step(_, bracket):
        a, b = bracket
        mid = 0.5 * (a + b)
        below = correlated_mp_cdf(mid, gamma, nu, scale, m) < u
        return jnp.where(below, mid, a), jnp.where(below, b, mid)

    a, b = lax.fori_loop(0, _BISECTION_STEPS, step, (jnp.full_like(u, lo), jnp.full_like(u, hi)))
    return 0.5 * (a + b)


def draw(key, p, n, *, gamma, m, scale_ref):
    def main(k, size):
        u = jax.random.uniform(k, (size,), minval=1e-12, maxval=1 - 1e-12)
        return _icdf(u, gamma, p["nu"], p["scale"], m)

    return outliers.mix_draw(key, main, n, p["outlier_weight"], scale_ref)


def model(eigenvalues, *, gamma: float, m: int, n_censored: int = 0, floor: float = 0.0, scale_ref: float = 1.0):
    p = {"nu": correlation_exponent_prior(), "scale": scale_prior("scale", scale_ref),
         "outlier_weight": outlier_weight_prior()}
    context = {"gamma": gamma, "m": m, "scale_ref": scale_ref}
    law = PointwiseDensity(lambda x: log_density(x, p, **context))
    observe(law, lambda: log_cdf(floor, p, **context), eigenvalues, n_censored)
