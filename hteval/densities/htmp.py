"""The high-temperature Marchenko-Pastur (HTMP) law of SPEC section 2, in JAX float64.

    log f(x) = log(kappa/(2 gamma scale)) - lgamma(b+1) - lgamma(kappa/(2 gamma)) + a log y - y
               - 2 log|U(b, -a, -y)|,   b = kappa/2,  a = b (1/gamma - 1) - 1,  y = kappa x / (2 gamma scale).

gamma is fixed by a layer's shape, so it must be a concrete Python float: the steepest-descent table of
`hteval.special.htmp_table` is built once per gamma (about a second) and cached. kappa and scale may be traced,
batched and differentiated.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaln
from numpyro.distributions import constraints
from numpyro.distributions.distribution import Distribution
from numpyro.distributions.util import promote_shapes, validate_sample

from hteval.densities.tails import log_tail_mass
from hteval.special.htmp_table import htmp_table, log_abs_i, log_abs_i_fn

KAPPA_MIN = 1e-3
KAPPA_MAX = 1e3


def _check_gamma(gamma) -> float:
    try:
        g = float(gamma)
    except (TypeError, jax.errors.ConcretizationTypeError) as err:
        raise TypeError("gamma must be a concrete number (fixed by the layer's shape), not a traced value") from err
    if not 0.0 < g <= 1.0:
        raise ValueError(f"gamma = M/N must lie in (0, 1]; got {g} (use the smaller Gram, SPEC section 1)")
    return g


def _log_abs_i_fn(table, b, with_phase=False):
    """log s -> log|I| (and G) for b of any shape broadcastable against log s; the per-b node work is shared
    between calls when b is a scalar (the likelihood of a fit), vmapped per point otherwise."""
    b = jnp.asarray(b)
    if b.ndim == 0:
        return log_abs_i_fn(table, b, with_phase=with_phase)

    def evaluate(log_s):
        s_b, b_b = jnp.broadcast_arrays(log_s, b)
        out = jax.vmap(lambda si, bi: log_abs_i(table, si, bi, with_phase=with_phase))(s_b.reshape(-1),
                                                                                        b_b.reshape(-1))
        return jax.tree.map(lambda v: v.reshape(s_b.shape), out)

    return evaluate


def _log_s(x, scale):
    positive = x > 0
    return positive, jnp.log(jnp.where(positive, x, 1.0)) - jnp.log(scale)


def _log_density_of_log_s(table, kappa, log_abs_i_of=None):
    """phi(t) = log f_s(e^t) + t, the log-density of t = log s for scale 1 (any t, however far out).

    log_abs_i_of: a prepared `_log_abs_i_fn` for this kappa, shared with the caller's phase (one node pass per call).
    """
    b = kappa / 2
    n_ = b / table.gamma
    log_abs = log_abs_i_of or _log_abs_i_fn(table, b)
    # -lgamma(b+1) + 2 lgamma(b) = lgamma(b) - log(b); the |U| of the formula is |I| / Gamma(b).
    const = jnp.log(n_) + gammaln(b) - jnp.log(b) - gammaln(n_)

    def phi(t):
        log_i = log_abs(t)
        log_i = log_i[0] if isinstance(log_i, tuple) else log_i
        log_y = jnp.log(n_) + t
        return const + (n_ - b - 1) * log_y - jnp.exp(log_y) - 2 * log_i + t

    return phi


def _prepare(x, gamma, kappa, scale):
    g = _check_gamma(gamma)
    x, kappa, scale = (jnp.asarray(v, dtype=jnp.float64) for v in (x, kappa, scale))
    positive, log_s = _log_s(x, scale)
    return htmp_table(g), kappa, positive, log_s


def htmp_logpdf(x, gamma, kappa, scale=1.0):
    """Log-density of one HTMP eigenvalue; -inf for x <= 0. kappa in [1e-3, 1e3] (float64 throughout)."""
    table, kappa, positive, log_s = _prepare(x, gamma, kappa, scale)
    logf = _log_density_of_log_s(table, kappa)(log_s) - log_s - jnp.log(scale)
    return jnp.where(positive, logf, -jnp.inf)


def _phase_cdf(with_phase, kappa, log_s):
    _, phase = with_phase(log_s)
    return jnp.clip(phase / (jnp.pi * kappa / 2), 0.0, 1.0)


def htmp_cdf(x, gamma, kappa, scale=1.0):
    """CDF of one HTMP eigenvalue: the continuous phase of U over pi b (SPEC section 2)."""
    table, kappa, positive, log_s = _prepare(x, gamma, kappa, scale)
    cdf = _phase_cdf(_log_abs_i_fn(table, kappa / 2, with_phase=True), kappa, log_s)
    return jnp.where(positive, cdf, 0.0)


#: below this tail mass the phase loses relative accuracy and the density's tail integral takes over
TAIL_SWITCH = 1e-4


def htmp_log_cdf(x, gamma, kappa, scale=1.0):
    """log P(x' <= x), accurate in relative terms however deep in the lower tail (censoring at the floor)."""
    table, kappa, positive, log_s = _prepare(x, gamma, kappa, scale)
    with_phase = _log_abs_i_fn(table, kappa / 2, with_phase=True)
    cdf = _phase_cdf(with_phase, kappa, log_s)
    deep = log_tail_mass(_log_density_of_log_s(table, kappa, with_phase), log_s, -1, step=0.5)
    out = jnp.where(cdf > TAIL_SWITCH, jnp.log(jnp.maximum(cdf, TAIL_SWITCH)), deep)
    return jnp.where(positive, out, -jnp.inf)


def htmp_log_sf(x, gamma, kappa, scale=1.0):
    """log P(x' > x), accurate in relative terms however deep in the upper tail (the inverse model's floor)."""
    table, kappa, positive, log_s = _prepare(x, gamma, kappa, scale)
    with_phase = _log_abs_i_fn(table, kappa / 2, with_phase=True)
    sf = 1.0 - _phase_cdf(with_phase, kappa, log_s)
    phi = _log_density_of_log_s(table, kappa, with_phase)
    # in s itself the upper tail is exp(-n s) times a power: the secant spans a few 1/n
    deep = log_tail_mass(lambda v: phi(jnp.log(v)) - jnp.log(v), jnp.exp(log_s), +1, step=2 * table.gamma / kappa)
    out = jnp.where(sf > TAIL_SWITCH, jnp.log(jnp.maximum(sf, TAIL_SWITCH)), deep)
    return jnp.where(positive, out, 0.0)


def htmp_icdf(q, gamma, kappa, scale=1.0, *, iterations: int = 80):
    """Quantile function by bisection in log x on the CDF (fixed iteration count, jit-safe)."""
    q = jnp.asarray(q, dtype=jnp.float64)
    lo = jnp.full(q.shape, np.log(1e-300))
    hi = jnp.full(q.shape, np.log(1e6))

    def body(_, bounds):
        lo, hi = bounds
        mid = (lo + hi) / 2
        below = htmp_cdf(jnp.exp(mid), gamma, kappa, 1.0) < q
        return jnp.where(below, mid, lo), jnp.where(below, hi, mid)

    lo, hi = jax.lax.fori_loop(0, iterations, body, (lo, hi))
    return scale * jnp.exp((lo + hi) / 2)


def htmp_mean(kappa, scale=1.0):
    """E[x] = scale (SPEC section 2)."""
    return jnp.asarray(scale, dtype=jnp.float64) * jnp.ones_like(jnp.asarray(kappa, dtype=jnp.float64))


def htmp_variance(gamma, kappa, scale=1.0):
    """Var[x] = scale^2 gamma (1 + 2/kappa) (SPEC section 2)."""
    kappa = jnp.asarray(kappa, dtype=jnp.float64)
    return jnp.asarray(scale, dtype=jnp.float64) ** 2 * gamma * (1 + 2 / kappa)


class FixedGammaLaw(Distribution):
    """Base of the one-eigenvalue laws with gamma fixed by the layer shape and latent (kappa, scale).

    Subclasses give log_prob, cdf and icdf; sampling draws iid values through icdf (the exact finite-size,
    correlated spectrum is `hteval.sample_htmp_spectrum`).
    """

    arg_constraints = {"kappa": constraints.interval(KAPPA_MIN, KAPPA_MAX), "scale": constraints.positive}
    support = constraints.positive
    reparametrized_params = ["scale"]

    def __init__(self, gamma: float, kappa, scale=1.0, *, validate_args=None):
        self.gamma = _check_gamma(gamma)
        self.kappa, self.scale = promote_shapes(jnp.asarray(kappa, dtype=jnp.float64),
                                                jnp.asarray(scale, dtype=jnp.float64))
        batch_shape = jax.lax.broadcast_shapes(jnp.shape(self.kappa), jnp.shape(self.scale))
        super().__init__(batch_shape=batch_shape, validate_args=validate_args)

    def sample(self, key, sample_shape=()):
        u = jax.random.uniform(key, sample_shape + self.batch_shape, minval=1e-12, maxval=1 - 1e-12)
        return self.icdf(u)


class HTMP(FixedGammaLaw):
    """One HTMP eigenvalue as a numpyro Distribution (iid likelihood of a layer's ESD); E[x] = scale."""

    @validate_sample
    def log_prob(self, value):
        return htmp_logpdf(value, self.gamma, self.kappa, self.scale)

    def cdf(self, value):
        return htmp_cdf(value, self.gamma, self.kappa, self.scale)

    def log_cdf(self, value):
        return htmp_log_cdf(value, self.gamma, self.kappa, self.scale)

    def icdf(self, q):
        return htmp_icdf(q, self.gamma, self.kappa, self.scale)

    @property
    def mean(self):
        return jnp.broadcast_to(self.scale, self.batch_shape)

    @property
    def variance(self):
        return htmp_variance(self.gamma, self.kappa, self.scale)
