"""Log tail masses of a law given by its log-density: log F far below the bulk, log(1 - F) far above it.

The phase formula of the HTMP CDF cannot resolve a tail mass below about 1e-13: G / (pi b) is then a difference of
O(b) numbers. Censoring needs exactly those masses (log F at the floor for HTMP, log(1 - F) of HTMP far above the
bulk for the inverse model), so they are computed from the density instead, which is accurate in log space
everywhere. For a log-density phi of a variable z (any monotone function of x),

    F = int_0^inf exp(phi(z - v)) dv,    1 - F = int_0^inf exp(phi(z + v)) dv,

and after v = w / c, with c the secant slope of phi at z, Gauss-Laguerre quadrature is exact for a linear phi.
The caller picks z so that phi is nearly linear in the tail: z = log x below the HTMP bulk, where the density is
a power law x^(eps - 1), and z = x above it, where it decays like exp(-n y) times a power. A modest rule then
gives near full accuracy deep in the tails, and the result is smooth in the parameters (NUTS needs that).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

_NODES, _WEIGHTS = np.polynomial.laguerre.laggauss(48)
_LOG_WEIGHTS = np.log(_WEIGHTS)
#: a slope outside this range only means the tail mass is not small, and the caller then uses the phase formula;
#: the clip keeps this branch finite (and its gradient NaN-free) regardless
_SLOPE_MIN, _SLOPE_MAX = 1e-3, 1e8


def log_tail_mass(phi, z, direction: int, step):
    """log of int_0^inf exp(phi(z + direction v)) dv; direction -1 gives log F, +1 gives log(1 - F).

    phi: vectorised log-density of the variable z (any shape); step: the secant step in z (a scalar or z's shape),
    of the order of the scale on which phi bends.
    """
    z = jnp.asarray(z, dtype=jnp.float64)
    here, there = phi(jnp.stack([z, z + direction * step * jnp.ones_like(z)]))  # one evaluation site: one compile
    slope = (here - there) / step
    c = jnp.clip(slope, _SLOPE_MIN, _SLOPE_MAX)
    w = jnp.asarray(_NODES).reshape((-1,) + (1,) * z.ndim)
    terms = phi(z + direction * w / c) + w + jnp.asarray(_LOG_WEIGHTS).reshape(w.shape)
    return logsumexp(terms, axis=0) - jnp.log(c)
