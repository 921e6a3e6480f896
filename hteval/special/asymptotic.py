"""Closed forms of I(s) = Gamma(b) exp(i pi b) U(b, -a, -y + i0) far below and far above the bulk (pure jax.numpy).

Notation of SPEC section 7: b = kappa/2, eps = 1 + a = kappa (1 - gamma) / (2 gamma) >= 0, n_ = b + eps,
y = n_ s. Both return (log|I|, G) with G = pi b - arg I, so that the CDF is F = G / (pi b).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.scipy.special import digamma, gammaln, polygamma

#: odd zeta values for lgamma(1 + e) - lgamma(1 - e) = -2 euler e - 2 sum_k zeta(2k+1) e^(2k+1) / (2k+1)
_EULER = 0.5772156649015329
_ZETA_ODD = (1.2020569031595942, 1.0369277551433699, 1.0083492773819228, 1.0020083928260822,
             1.0004941886041195, 1.0001227133475785, 1.0000305882363070)


def _lgamma_odd_difference(e):
    """lgamma(1 + e) - lgamma(1 - e) without cancellation for small e (the series is used for |e| < 0.25)."""
    e2 = e * e
    series = -2 * _EULER * e
    power = e
    for k, z in enumerate(_ZETA_ODD, start=1):
        power = power * e2
        series = series - 2 * z * power / (2 * k + 1)
    small = jnp.abs(e) < 0.25
    safe = jnp.where(small, 0.5, e)
    direct = gammaln(1 + safe) - gammaln(1 - safe)
    return jnp.where(small, series, direct)


def small_s(log_s, b, eps):
    """Two leading terms of U at y -> 0: Gamma(b) U = Gamma(b) Gamma(eps) / Gamma(b + eps) + Gamma(-eps) (-y)^eps.

    Takes log s (x may be far below where y = n_ s is representable). Valid to O(y^min(1, 1/2 + eps)) relative:
    the y^eps term enters the real part only for eps < 1/2, where it is not cancelled by the O(y) term (which has
    a pole at eps = 1). There its real part has a removable 0/0 at eps = 0 (gamma = 1, the log singularity),
    evaluated as a difference quotient with expm1. For eps >= 1/2 the real part is kept as a logarithm, since
    Gamma(b) Gamma(eps) / Gamma(b + eps) underflows for large kappa.
    """
    log_y = jnp.log(b + eps) + log_s
    # Im part: -pi y^eps / Gamma(1 + eps), entire in eps; kept as its logarithm.
    log_im = jnp.log(jnp.pi) + eps * log_y - gammaln(1 + eps)
    # Re part (eps < 1/2): [Gamma(b) Gamma(1+eps)/Gamma(b+eps) - Gamma(1-eps) cos(pi eps) y^eps] / eps
    e = jnp.where(eps < 0.5, eps, 0.25)
    ratio_log = _lgamma_odd_difference(e) - _lgamma_shift(b, e)  # log of G1/G2
    y_e = jnp.exp(e * log_y)
    # G1 - G2 cos y^e = G2 [expm1(ratio_log) - expm1(e log y) + (1 - cos) y^e] (each piece O(e))
    bracket = jnp.expm1(ratio_log) - jnp.expm1(e * log_y) + (1 - jnp.cos(jnp.pi * e)) * y_e
    e_safe = jnp.where(e == 0, 1.0, e)
    quotient = jnp.where(e == 0, -2 * _EULER - digamma(b) - log_y, bracket / e_safe)
    re_small = jnp.exp(gammaln(1 - e)) * quotient
    im_small = jnp.exp(jnp.where(eps < 0.5, log_im, 0.0))
    log_abs_small = 0.5 * jnp.log(re_small**2 + im_small**2)
    g_small = jnp.arctan2(im_small, re_small)
    # eps >= 1/2: Re > 0 dominates; |I| = Re sqrt(1 + (Im/Re)^2) in logs.
    small = eps < 0.5
    eps_large = jnp.where(small, 1.0, eps)  # keeps gammaln(0)'s NaN gradient out of the unselected branch
    log_re = gammaln(b) + gammaln(eps_large) - gammaln(b + eps_large)
    ratio = jnp.exp(jnp.minimum(log_im - log_re, 0.0))
    log_abs_large = log_re + 0.5 * jnp.log1p(ratio**2)
    g_large = jnp.arctan(ratio)
    # G = pi b - arg I = -arg U(-y + i0), small and positive near y = 0.
    return jnp.where(small, log_abs_small, log_abs_large), jnp.where(small, g_small, g_large)


def _lgamma_shift(b, e):
    """lgamma(b + e) - lgamma(b); a Taylor series where e is small against 1 and against b (the series converges
    for e < b only: at b = 5e-4, e = 2e-4 the cut e < 1e-3 alone left log f off by 0.5), else the difference."""
    series = digamma(b) * e + polygamma(1, b) * e**2 / 2 + polygamma(2, b) * e**3 / 6
    return jnp.where(e < 1e-3 * jnp.minimum(b, 1.0), series, gammaln(b + e) - gammaln(b))


def large_s(log_s, b, eps, terms: int = 8):
    """Poincare series on the cut, all terms positive: |U| = y^-b sum_k (b)_k (n_)_k / (k! y^k); arg I = 0.

    Used where s >= S_HIGH = 50 max(b): term k is about (b/s)^k / k! <= 0.02^k / k!, so 8 terms reach 1e-20.
    The coefficients are scalars per call, so each point costs a Horner sum. Takes log s so that y may overflow
    without producing inf - inf downstream.
    """
    n_ = b + eps
    log_y = jnp.log(n_) + log_s
    inv_y = jnp.exp(-log_y)
    coef = [1.0]
    for k in range(terms):
        coef.append(coef[-1] * (b + k) * (n_ + k) / (k + 1))
    total = jnp.zeros_like(log_y) + coef[-1]
    for c in coef[-2::-1]:
        total = total * inv_y + c
    log_abs = gammaln(b) - b * log_y + jnp.log(total)
    return log_abs, jnp.pi * b * jnp.ones_like(log_y)


_STEP = 1e-5


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def small_s_differenced(log_s, b, ratio: float):
    """small_s with eps = ratio * b, differentiated by central differences (relative error ~1e-9).

    Autodiff through its dozen special functions adds seconds of XLA compilation to every program that contains
    the likelihood (initialisation, sampling, log-likelihood draws), for a branch that runs only below
    s = 1e-23; the differences are one stacked evaluation instead.
    """
    return small_s(log_s, b, ratio * b)


@small_s_differenced.defjvp
def _small_s_jvp(ratio, primals, tangents):
    log_s, b = primals
    d_log_s, d_b = tangents
    shifts_s = jnp.array([0.0, _STEP, -_STEP, 0.0, 0.0]).reshape((5,) + (1,) * jnp.ndim(log_s))
    shifts_b = jnp.array([0.0, 0.0, 0.0, _STEP, -_STEP]).reshape(shifts_s.shape)
    at_s = log_s + shifts_s
    at_b = b * (1 + shifts_b) + jnp.zeros_like(at_s)
    value, phase = small_s(at_s, at_b, ratio * at_b)
    out, tangent = [], []
    for v in (value, phase):
        out.append(v[0])
        tangent.append((v[1] - v[2]) / (2 * _STEP) * d_log_s + (v[3] - v[4]) / (2 * _STEP * b) * d_b)
    return tuple(out), tuple(tangent)
