"""Inverse HTMP (SPEC section 2): lambda = scale / s with s ~ HTMP(gamma, kappa) of mean 1, so E[1/lambda] = 1/scale.

Its upper tail is an exact power law, rho(lambda) ~ lambda^-(1 + kappa (1 - gamma) / (2 gamma)); the mean of
lambda is infinite when kappa (1 - gamma) / (2 gamma) <= 1. This is how heavy upper tails arise in the HTMP family.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from numpyro.distributions.util import validate_sample

from hteval.densities import htmp
from hteval.densities.compiled import elementwise
from hteval.densities.htmp import FixedGammaLaw, _check_gamma


def _reciprocal(x, scale):
    """s = scale / x at the positive points (a harmless 1 elsewhere), and where x > 0."""
    x, scale = jnp.asarray(x, dtype=jnp.float64), jnp.asarray(scale, dtype=jnp.float64)
    positive = x > 0
    safe = jnp.where(positive, x, 1.0)
    return positive, safe, scale / safe


@functools.partial(jax.jit, static_argnames="gamma")
def _logpdf(x, kappa, scale, gamma):
    positive, safe, s = _reciprocal(x, scale)
    logf = htmp._logpdf(s, kappa, 1.0, gamma=gamma) + jnp.log(scale) - 2 * jnp.log(safe)
    return jnp.where(positive, logf, -jnp.inf)


@functools.partial(jax.jit, static_argnames="gamma")
def _cdf(x, kappa, scale, gamma):
    positive, _, s = _reciprocal(x, scale)
    return jnp.where(positive, 1.0 - htmp._cdf(s, kappa, 1.0, gamma=gamma), 0.0)


@functools.partial(jax.jit, static_argnames="gamma")
def _log_cdf(x, kappa, scale, gamma):
    positive, _, s = _reciprocal(x, scale)
    return jnp.where(positive, htmp._log_sf(s, kappa, 1.0, gamma=gamma), -jnp.inf)


@functools.partial(jax.jit, static_argnames="gamma")
def _icdf(q, kappa, scale, gamma):
    return scale / htmp._icdf(1.0 - jnp.asarray(q, dtype=jnp.float64), kappa, 1.0, gamma=gamma)


def inverse_htmp_logpdf(x, gamma, kappa, scale=1.0):
    """log-density of lambda = scale / s: log f_s(scale / lambda) + log(scale) - 2 log(lambda).

    Compiled as `hteval.densities.htmp.htmp_logpdf` is: gamma static, kappa and scale traced, eager calls padded
    to power-of-two length buckets (at least 64)."""
    return elementwise(_logpdf, (x, kappa, scale), gamma=_check_gamma(gamma))


def inverse_htmp_cdf(x, gamma, kappa, scale=1.0):
    """P(lambda <= x) = P(s >= scale / x) = 1 - F_s(scale / x). Compiled as `inverse_htmp_logpdf` is."""
    return elementwise(_cdf, (x, kappa, scale), gamma=_check_gamma(gamma))


def inverse_htmp_log_cdf(x, gamma, kappa, scale=1.0):
    """log P(lambda <= x) = log P(s >= scale / x), accurate however small (censoring at the floor). Compiled as
    `inverse_htmp_logpdf` is."""
    return elementwise(_log_cdf, (x, kappa, scale), gamma=_check_gamma(gamma))


def inverse_htmp_icdf(q, gamma, kappa, scale=1.0):
    """Quantile function: scale / s at the HTMP quantile 1 - q. Compiled as `inverse_htmp_logpdf` is."""
    return elementwise(_icdf, (q, kappa, scale), gamma=_check_gamma(gamma))


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
