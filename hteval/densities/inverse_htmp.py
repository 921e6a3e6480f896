"""Inverse HTMP (SPEC section 2): lambda = scale / s with s ~ HTMP(gamma, kappa) of mean 1, so E[1/lambda] = 1/scale.

Its upper tail is an exact power law, rho(lambda) ~ lambda^-(1 + kappa (1 - gamma) / (2 gamma)); the mean of
lambda is infinite when kappa (1 - gamma) / (2 gamma) <= 1. This is how heavy upper tails arise in the HTMP family.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from numpyro.distributions import constraints
from numpyro.distributions.distribution import Distribution
from numpyro.distributions.util import promote_shapes, validate_sample

from hteval.densities.htmp import KAPPA_MAX, KAPPA_MIN, _check_gamma, htmp_cdf, htmp_icdf, htmp_logpdf


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


def inverse_htmp_icdf(q, gamma, kappa, scale=1.0):
    return scale / htmp_icdf(1.0 - jnp.asarray(q, dtype=jnp.float64), gamma, kappa, 1.0)


def tail_exponent(gamma, kappa):
    """Exponent of the power-law upper tail, rho ~ lambda^-(1 + kappa (1 - gamma) / (2 gamma))."""
    return 1.0 + kappa * (1.0 - gamma) / (2.0 * gamma)


class InverseHTMP(Distribution):
    """Eigenvalue of the inverse of an HTMP matrix, scaled so that E[1/lambda] = 1/scale."""

    arg_constraints = {"kappa": constraints.interval(KAPPA_MIN, KAPPA_MAX), "scale": constraints.positive}
    support = constraints.positive
    reparametrized_params = ["scale"]

    def __init__(self, gamma: float, kappa, scale=1.0, *, validate_args=None):
        self.gamma = _check_gamma(gamma)
        self.kappa, self.scale = promote_shapes(jnp.asarray(kappa, dtype=jnp.float64),
                                                jnp.asarray(scale, dtype=jnp.float64))
        batch_shape = jax.lax.broadcast_shapes(jnp.shape(self.kappa), jnp.shape(self.scale))
        super().__init__(batch_shape=batch_shape, validate_args=validate_args)

    @validate_sample
    def log_prob(self, value):
        return inverse_htmp_logpdf(value, self.gamma, self.kappa, self.scale)

    def cdf(self, value):
        return inverse_htmp_cdf(value, self.gamma, self.kappa, self.scale)

    def icdf(self, q):
        return inverse_htmp_icdf(q, self.gamma, self.kappa, self.scale)

    def sample(self, key, sample_shape=()):
        u = jax.random.uniform(key, sample_shape + self.batch_shape, minval=1e-12, maxval=1 - 1e-12)
        return self.icdf(u)
