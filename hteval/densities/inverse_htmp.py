"""Inverse HTMP (SPEC section 2): lambda = scale / s with s ~ HTMP(gamma, kappa) of mean 1, so E[1/lambda] = 1/scale.

Its upper tail is an exact power law, rho(lambda) ~ lambda^-(1 + kappa (1 - gamma) / (2 gamma)); the mean of
lambda is infinite when kappa (1 - gamma) / (2 gamma) <= 1. This is how heavy upper tails arise in the HTMP family.
"""

from __future__ import annotations

import jax.numpy as jnp
from numpyro.distributions.util import validate_sample

from hteval.densities.htmp import FixedGammaLaw, htmp_cdf, htmp_icdf, htmp_log_sf, htmp_logpdf


def inverse_htmp_logpdf(x, gamma, kappa, scale=1.0):
    """log-density of lambda = scale / s: log f_s(scale / lambda) + log(scale) - 2 log(lambda)."""
    x = jnp.asarray(x, dtype=jnp.float64)
    scale = jnp.asarray(scale, dtype=jnp.float64)
    positive = x > 0
    safe = jnp.where(positive, x, 1.0)
    logf = htmp_logpdf(scale / safe, gamma, kappa, 1.0) + jnp.log(scale) - 2 * jnp.log(safe)
    return jnp.where(positive, logf, -jnp.inf)


def inverse_htmp_cdf(x, gamma, kappa, scale=1.0):
    """P(lambda <= x) = P(s >= scale / x) = 1 - F_s(scale / x)."""
    x = jnp.asarray(x, dtype=jnp.float64)
    positive = x > 0
    safe = jnp.where(positive, x, 1.0)
    return jnp.where(positive, 1.0 - htmp_cdf(scale / safe, gamma, kappa, 1.0), 0.0)


def inverse_htmp_log_cdf(x, gamma, kappa, scale=1.0):
    """log P(lambda <= x) = log P(s >= scale / x), accurate however small (censoring at the floor)."""
    x = jnp.asarray(x, dtype=jnp.float64)
    positive = x > 0
    safe = jnp.where(positive, x, 1.0)
    return jnp.where(positive, htmp_log_sf(scale / safe, gamma, kappa, 1.0), -jnp.inf)


def inverse_htmp_icdf(q, gamma, kappa, scale=1.0):
    return scale / htmp_icdf(1.0 - jnp.asarray(q, dtype=jnp.float64), gamma, kappa, 1.0)


def tail_exponent(gamma, kappa):
    """Exponent of the power-law upper tail, rho ~ lambda^-(1 + kappa (1 - gamma) / (2 gamma))."""
    return 1.0 + kappa * (1.0 - gamma) / (2.0 * gamma)


class InverseHTMP(FixedGammaLaw):
    """Eigenvalue of the inverse of an HTMP matrix, scaled so that E[1/lambda] = 1/scale."""

    @validate_sample
    def log_prob(self, value):
        return inverse_htmp_logpdf(value, self.gamma, self.kappa, self.scale)

    def cdf(self, value):
        return inverse_htmp_cdf(value, self.gamma, self.kappa, self.scale)

    def log_cdf(self, value):
        return inverse_htmp_log_cdf(value, self.gamma, self.kappa, self.scale)

    def icdf(self, q):
        return inverse_htmp_icdf(q, self.gamma, self.kappa, self.scale)
