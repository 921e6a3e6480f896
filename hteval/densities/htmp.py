"""The high-temperature Marchenko-Pastur (HTMP) law of SPEC section 2, in JAX float64.

    log f(x) = log(kappa/(2 gamma scale)) - lgamma(b+1) - lgamma(kappa/(2 gamma)) + a log y - y
               - 2 log|U(b, -a, -y)|,   b = kappa/2,  a = b (1/gamma - 1) - 1,  y = kappa x / (2 gamma scale).

gamma is fixed by a layer's shape, so it must be a concrete Python float: the steepest-descent table of
`hteval.special.htmp_table` is built once per gamma (about a second) and cached. kappa and scale may be traced,
batched and differentiated.

Each public function is one jitted program with gamma static (`hteval.densities.compiled`): called eagerly it
compiles once per gamma and size bucket (points padded to the next power of two, at least 64), and every later
call with new kappa and scale runs the compiled program. Inside the caller's jit, grad, vmap or numpyro model it
becomes part of the caller's program.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

# ArviZ registers numpyro as a lazy module: a submodule imported before the package itself leaves
# numpyro.distributions without its submodule attributes (NUTS then fails), so the package comes first
import numpyro  # noqa: F401
from jax.scipy.special import gammaln
from numpyro.distributions import constraints
from numpyro.distributions.distribution import Distribution
from numpyro.distributions.util import promote_shapes, validate_sample
from scipy.special import logsumexp

from hteval.densities.compiled import elementwise
from hteval.densities.tails import log_tail_mass
from hteval.special import asymptotic, chebyshev
from hteval.special.htmp_table import (
    _coefficients,
    htmp_table,
    log_abs_i,
    log_abs_i_fn,
    node_values,
    phase_fn,
)

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


def _per_point(table, b, pick):
    """log s -> pick((log|I|, G)) for b broadcast against log s, vmapped point by point (each point its own b)."""

    def evaluate(log_s):
        s_b, b_b = jnp.broadcast_arrays(log_s, b)
        out = jax.vmap(lambda si, bi: pick(log_abs_i(table, si, bi, with_phase=True)))(s_b.reshape(-1),
                                                                                       b_b.reshape(-1))
        return out.reshape(s_b.shape)

    return evaluate


def _log_abs_fn(table, b):
    """log s -> log|I|: the per-b node work shared by all points when b is a scalar (the likelihood of a fit)."""
    b = jnp.asarray(b)
    return log_abs_i_fn(table, b) if b.ndim == 0 else _per_point(table, b, lambda v: v[0])


def _phase_fn(table, b):
    """log s -> G, the phase whose ratio G / (pi b) is the CDF."""
    b = jnp.asarray(b)
    return phase_fn(table, b) if b.ndim == 0 else _per_point(table, b, lambda v: v[1])


def _log_s(x, scale):
    positive = x > 0
    return positive, jnp.log(jnp.where(positive, x, 1.0)) - jnp.log(scale)


def _log_density_of_log_s(table, kappa):
    """phi(t) = log f_s(e^t) + t, the log-density of t = log s for scale 1 (any t, however far out)."""
    b = kappa / 2
    n_ = b / table.gamma
    log_abs = _log_abs_fn(table, b)
    # -lgamma(b+1) + 2 lgamma(b) = lgamma(b) - log(b); the |U| of the formula is |I| / Gamma(b).
    const = jnp.log(n_) + gammaln(b) - jnp.log(b) - gammaln(n_)

    def phi(t):
        log_y = jnp.log(n_) + t
        return const + (n_ - b - 1) * log_y - jnp.exp(log_y) - 2 * log_abs(t) + t

    return phi


def _prepare(x, gamma, kappa, scale):
    x, kappa, scale = (jnp.asarray(v, dtype=jnp.float64) for v in (x, kappa, scale))
    positive, log_s = _log_s(x, scale)
    return htmp_table(gamma), kappa, positive, log_s


def _cdf_of_log_s(table, kappa, log_s):
    return jnp.clip(_phase_fn(table, kappa / 2)(log_s) / (jnp.pi * kappa / 2), 0.0, 1.0)


#: below this tail mass the phase loses relative accuracy and the density's tail integral takes over
TAIL_SWITCH = 1e-4
#: from this many points on, the tail integrals (50 density evaluations a point) run only at the points whose
#: tail mass is below TAIL_SWITCH, up to 1/64 of the points (all of them when more need it: a grid over the tails)
COMPACT_FROM = 1024


def _where_needed(need, deep, z, shared: bool):
    """deep(z) at the points where `need` holds (anything elsewhere); `shared`: deep is a function of z alone (one
    scalar kappa), so that it can run on the needing points only."""

    def everywhere():
        return deep(z)

    shape = jax.eval_shape(everywhere)

    def nowhere():
        return jnp.zeros(shape.shape, shape.dtype)

    if not shared or z.ndim != 1 or z.size < COMPACT_FROM:
        return jax.lax.cond(jnp.any(need), everywhere, nowhere)
    capacity = z.size // 64

    def compact():
        index = jnp.nonzero(need, size=capacity, fill_value=z.size)[0]
        values = deep(jnp.take(z, index, mode="clip"))
        return jnp.zeros_like(z).at[index].set(values, mode="drop")

    # the compacted pass costs a pass over the points itself: none is run when no point needs it
    count = jnp.sum(need)
    return jax.lax.switch(jnp.where(count == 0, 0, jnp.where(count <= capacity, 1, 2)), [nowhere, compact, everywhere])


def _log_mass(mass, deep, z, shared):
    """log of a tail mass: the phase's where it exceeds TAIL_SWITCH, else the tail integral deep(z)."""
    need = ~(mass > TAIL_SWITCH)
    return jnp.where(need, _where_needed(need, deep, z, shared), jnp.log(jnp.maximum(mass, TAIL_SWITCH)))


@functools.partial(jax.jit, static_argnames="gamma")
def _logpdf(x, kappa, scale, gamma):
    table, kappa, positive, log_s = _prepare(x, gamma, kappa, scale)
    logf = _log_density_of_log_s(table, kappa)(log_s) - log_s - jnp.log(scale)
    return jnp.where(positive, logf, -jnp.inf)


@functools.partial(jax.jit, static_argnames="gamma")
def _cdf(x, kappa, scale, gamma):
    table, kappa, positive, log_s = _prepare(x, gamma, kappa, scale)
    return jnp.where(positive, _cdf_of_log_s(table, kappa, log_s), 0.0)


@functools.partial(jax.jit, static_argnames="gamma")
def _log_cdf(x, kappa, scale, gamma):
    table, kappa, positive, log_s = _prepare(x, gamma, kappa, scale)
    phi = _log_density_of_log_s(table, kappa)
    out = _log_mass(_cdf_of_log_s(table, kappa, log_s), lambda z: log_tail_mass(phi, z, -1, step=0.5), log_s,
                    kappa.ndim == 0)
    return jnp.where(positive, out, -jnp.inf)


@functools.partial(jax.jit, static_argnames="gamma")
def _log_sf(x, kappa, scale, gamma):
    table, kappa, positive, log_s = _prepare(x, gamma, kappa, scale)
    phi = _log_density_of_log_s(table, kappa)

    def deep(s):
        # in s itself the upper tail is exp(-n s) times a power: the secant spans a few 1/n
        return log_tail_mass(lambda v: phi(jnp.log(v)) - jnp.log(v), s, +1, step=2 * table.gamma / kappa)

    out = _log_mass(1.0 - _cdf_of_log_s(table, kappa, log_s), deep, jnp.exp(log_s), kappa.ndim == 0)
    return jnp.where(positive, out, 0.0)


def htmp_logpdf(x, gamma, kappa, scale=1.0):
    """Log-density of one HTMP eigenvalue; -inf for x <= 0. kappa in [1e-3, 1e3] (float64 throughout).

    gamma is static (one compiled program per gamma); kappa and scale are traced. Called eagerly, x (broadcast
    against kappa and scale when those are arrays) runs padded to the next power-of-two length, at least 64
    (`hteval.densities.compiled`): one compilation per gamma and length bucket, none per parameter value.
    """
    return elementwise(_logpdf, (x, kappa, scale), gamma=_check_gamma(gamma))


def htmp_cdf(x, gamma, kappa, scale=1.0):
    """CDF of one HTMP eigenvalue: the continuous phase of U over pi b (SPEC section 2). Compiled as
    `htmp_logpdf` is (gamma static, power-of-two length buckets)."""
    return elementwise(_cdf, (x, kappa, scale), gamma=_check_gamma(gamma))


def htmp_log_cdf(x, gamma, kappa, scale=1.0):
    """log P(x' <= x), accurate in relative terms however deep in the lower tail (censoring at the floor).
    Compiled as `htmp_logpdf` is (gamma static, power-of-two length buckets)."""
    return elementwise(_log_cdf, (x, kappa, scale), gamma=_check_gamma(gamma))


def htmp_log_sf(x, gamma, kappa, scale=1.0):
    """log P(x' > x), accurate in relative terms however deep in the upper tail (the inverse model's floor).
    Compiled as `htmp_logpdf` is (gamma static, power-of-two length buckets)."""
    return elementwise(_log_sf, (x, kappa, scale), gamma=_check_gamma(gamma))


#: points per table piece at which each call evaluates the CDF, to bracket q before Newton
QUANTILE_SUBDIVISIONS = 16
#: safeguarded Newton steps inside the bracket, from the chord of log F: 2 reach 1e-9 relative in F at all but 9
#: of 14,400 points of gamma 0.05-1, kappa 1e-3 to 1e3, q 1e-12 to 1 - 1e-10 where the table reaches (3, as 5,
#: at all of them); each step costs about a tenth of the call at 1e5 points
QUANTILE_NEWTON_STEPS = 3
#: bisection steps below the table, on [log 1e-300, the table's lower end] (a width under 700: 2^-64 of it)
QUANTILE_BISECTION_STEPS = 64
_LOG_S_MIN = float(np.log(1e-300))


#: how far outside its bracket a Newton step may land and still be taken (clipped into it)
_BRACKET_SLACK = 1e-12


def _safeguarded(new, lo, hi):
    """A Newton step inside its bracket [lo, hi], bisection otherwise. A converged step lands on the bracket's end,
    or just beyond it where F rounds differently in the comparison that set the bracket and in the step: within
    _BRACKET_SLACK it is taken (clipped), not bisected away from the root."""
    inside = jnp.isfinite(new) & (new >= lo - _BRACKET_SLACK) & (new <= hi + _BRACKET_SLACK)
    return jnp.where(inside, jnp.clip(new, lo, hi), 0.5 * (lo + hi))


def _quantile_in_table(table, b, q):
    """t = log s with F(e^t) = q inside the table, for one scalar b: the CDF at QUANTILE_SUBDIVISIONS points of
    every piece brackets q in a short stretch of one piece, where Newton on the piece's Chebyshev series (log F
    below the median, log(1 - F) above it: both nearly linear in the tails) converges from the chord in a few
    steps; a step leaving the bracket bisects instead.

    Returns t and where q lies below the table's lower end (there t is meaningless)."""
    _, phase = node_values(table, b)
    rows = _coefficients(table, phase) / (jnp.pi * b)  # (P, n): F on each piece in u in [-1, 1]
    slopes = rows @ jnp.asarray(chebyshev.derivative_matrix(table.sizes[0]).T)
    pieces, parts = len(table.sizes), QUANTILE_SUBDIVISIONS
    grid = np.linspace(-1.0, 1.0, parts + 1)
    at_grid = rows @ jnp.asarray(np.polynomial.chebyshev.chebvander(grid, table.sizes[0] - 1).T)  # (P, parts + 1)
    # one ascending sequence: each piece's points but its last, then the table's upper end
    at_grid = jax.lax.cummax(jnp.concatenate([at_grid[:, :-1].reshape(-1), at_grid[-1:, -1]]))
    index = jnp.searchsorted(at_grid, q, method="scan") - 1
    # q = 0 goes below too: its quantile is the lower end of the range, as bisection from there gives
    below, above = (index < 0) | (q <= 0), index >= pieces * parts
    index = jnp.clip(index, 0, pieces * parts - 1)
    piece = index // parts
    lo = jnp.asarray(grid)[index % parts]
    hi = lo + 2.0 / parts
    lower_half = q < 0.5
    # start on the chord of log F (log(1 - F) above the median), the variables the Newton steps work in
    logs = jnp.log(jnp.stack([at_grid, 1 - at_grid]))  # per call: -inf where F is 0 or 1
    side = jnp.where(lower_half, 0, 1)
    target = jnp.log(jnp.where(lower_half, q, 1 - q))
    g_lo, g_hi = logs[side, index], logs[side, index + 1]
    rise = jnp.where(jnp.isfinite(g_lo) & jnp.isfinite(g_hi) & (g_hi != g_lo), g_hi - g_lo, jnp.nan)
    u = lo + (target - g_lo) / rise * (hi - lo)
    u = jnp.where(jnp.isfinite(u), jnp.clip(u, lo, hi), 0.5 * (lo + hi))

    def step(_, state):
        u, lo_u, hi_u = state
        f = chebyshev.clenshaw_at(rows, piece, u)
        df = chebyshev.clenshaw_at(slopes, piece, u)
        short = f < q
        lo_u, hi_u = jnp.where(short, u, lo_u), jnp.where(short, hi_u, u)
        # log(a / c) ~ 2 (a - c) / (a + c), a = F and c = q below the median, 1 - F and 1 - q above it: the same
        # root and slope there as Newton on log F or log(1 - F), without a logarithm a step
        a, c = jnp.where(lower_half, f, 1 - f), jnp.where(lower_half, q, 1 - q)
        residual = 2 * (a - c) / (a + c)
        slope = jnp.where(lower_half, df, -df) * 4 * c / (a + c) ** 2
        return _safeguarded(u - residual / slope, lo_u, hi_u), lo_u, hi_u

    # unrolled: in a loop XLA (CPU) runs each step as separate passes over the points, 3-4x the time of the fused
    # unrolled steps at 1e5 points (bit-identical results)
    state = (u, lo, hi)
    for i in range(QUANTILE_NEWTON_STEPS):
        state = step(i, state)
    u = state[0]
    edges = jnp.asarray(table.t_edges)
    t = edges[piece] + 0.5 * (u + 1) * (edges[piece + 1] - edges[piece])
    # above the table the closed form's CDF is exactly 1: its lower end is the smallest t with F >= q
    return jnp.where(above, edges[-1], t), below


def _quantile_below_table(table, b, q):
    """t with F(e^t) = q below the table, by bisection on the small-s closed form's phase."""
    ratio = 1 / table.gamma - 1
    lo, hi = jnp.full(q.shape, _LOG_S_MIN), jnp.full(q.shape, table.t_edges[0])

    def step(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        short = asymptotic.small_s_differenced(mid, b, ratio)[1] / (jnp.pi * b) < q
        return jnp.where(short, mid, lo), jnp.where(short, hi, mid)

    lo, hi = jax.lax.fori_loop(0, QUANTILE_BISECTION_STEPS, step, (lo, hi))
    return 0.5 * (lo + hi)


def _quantile_log_s(table, b, q):
    """t = log s with F_s(e^t) = q, for one scalar b and any q (1-D)."""
    t, below = _quantile_in_table(table, b, q)
    deep = _where_needed(below, lambda v: _quantile_below_table(table, b, v), q, True)
    return jnp.where(below, deep, t)


@functools.partial(jax.jit, static_argnames="gamma")
def _icdf(q, kappa, scale, gamma):
    table = htmp_table(gamma)
    # as differentiable as bisection was: in scale only (x = scale s, the quantile s of scale 1 held fixed)
    q, kappa = (jax.lax.stop_gradient(jnp.asarray(v, dtype=jnp.float64)) for v in (q, kappa))
    q = jnp.clip(q, 0.0, 1.0)
    if kappa.ndim == 0:
        t = _quantile_log_s(table, kappa / 2, q.reshape(-1)).reshape(q.shape)
    else:
        q_b, kappa_b = jnp.broadcast_arrays(q, kappa)
        t = jax.vmap(lambda qi, ki: _quantile_log_s(table, ki / 2, qi[None])[0])(q_b.reshape(-1), kappa_b.reshape(-1))
        t = t.reshape(q_b.shape)
    return jnp.asarray(scale, dtype=jnp.float64) * jnp.exp(t)


def htmp_icdf(q, gamma, kappa, scale=1.0):
    """Quantile function: the CDF's Chebyshev pieces bracket q in one piece, where a few safeguarded Newton steps
    solve F = q; below the table, bisection on the small-s closed form. Fixed step counts (jit-safe);
    differentiable in scale only. Compiled as `htmp_logpdf` is (gamma static, power-of-two length buckets)."""
    return elementwise(_icdf, (q, kappa, scale), gamma=_check_gamma(gamma))


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


# ---------------------------------------------------------------------------------------------------------------
# Batches for exact posteriors: many kappas, each with many points, in two programs compiled once per gamma.
#
# A quadrature over (kappa, scale), the pointwise log-likelihood of thousands of draws, KS distances and
# predictive quantiles all need phi(t) = log f_s(e^t) + t and the CDF at many points t for many kappas. The per-kappa
# work (node values and their Chebyshev coefficients) is done once per kappa by one program; a second evaluates any
# points against those coefficients. Both have fixed shapes, so every caller, model and layer of one aspect ratio
# reuses the same two executables instead of compiling a likelihood per model and per batch shape.
# ---------------------------------------------------------------------------------------------------------------

#: kappas per call of the coefficient program, and points per call of the evaluation program
BATCH_KAPPAS = 64
BATCH_POINTS = 32768


@functools.lru_cache(maxsize=8)
def _batch_programs(gamma: float):
    """(coefficients, points) for one gamma: coefficients(kappa (BATCH_KAPPAS,)) -> the Chebyshev coefficients of
    log|I| and of the phase G at every piece, flattened to (kappas x pieces, n) rows, and phi's constant per kappa;
    points(rows, constant, kappa, index, t, phase) -> phi (phase False) or the CDF (phase True; rows then hold
    G's coefficients) at points t (BATCH_POINTS,) of kappa[index]."""
    table = htmp_table(gamma)
    n = table.sizes[0]
    pieces = len(table.sizes)
    edges = np.asarray(table.t_edges)
    ratio = 1 / gamma - 1

    def coefficients(kappa):
        def one(b):
            log_i, g = node_values(table, b)
            return _coefficients(table, log_i), _coefficients(table, g)

        b = kappa / 2
        log_i, g = jax.vmap(one)(b)
        n_ = b / gamma
        constant = jnp.log(n_) + gammaln(b) - jnp.log(b) - gammaln(n_)
        return log_i.reshape(-1, n), g.reshape(-1, n), constant

    def points(rows, constant, kappa, index, t, phase):
        b = kappa[index] / 2
        below, above = t < edges[0], t > edges[-1]
        inside = jnp.clip(t, edges[0], edges[-1])
        # binary search: the table has ~100 pieces, and comparing every point with every edge costs 3x as much
        piece = jnp.clip(jnp.searchsorted(jnp.asarray(edges[1:-1]), inside, method="scan"), 0, pieces - 1)
        lo, hi = jnp.asarray(edges)[piece], jnp.asarray(edges)[piece + 1]
        u = (2 * inside - lo - hi) / (hi - lo)
        mid = chebyshev.clenshaw_rows(jnp.take(rows, index * pieces + piece, axis=0), u)
        # the closed forms cost more than the table and are rarely needed: evaluated only when some point is out
        zero = jnp.zeros_like(t)
        pick = jnp.where(phase, 1, 0)  # which of the closed forms' (log|I|, G) the rows hold
        low = jax.lax.cond(jnp.any(below), lambda: jnp.stack(asymptotic.small_s_differenced(
            jnp.minimum(t, edges[0]), b, ratio))[pick], lambda: zero)
        high = jax.lax.cond(jnp.any(above), lambda: jnp.stack(asymptotic.large_s(
            jnp.maximum(t, edges[-1]), b, b * ratio))[pick], lambda: zero)
        value = jnp.where(below, low, jnp.where(above, high, mid))
        n_ = b / gamma
        log_y = jnp.log(n_) + t
        phi = constant[index] + (n_ - b - 1) * log_y - jnp.exp(log_y) - 2 * value + t
        # phase is traced, not static: one program serves densities and CDFs alike
        return jnp.where(phase, jnp.clip(value / (jnp.pi * b), 0.0, 1.0), phi)

    return jax.jit(coefficients), jax.jit(points)


class PhiBatch:
    """phi(t) = log f_s(e^t) + t (the log-density of t = log(x / scale)) and the CDF F_s(e^t) for a batch of kappas
    (K,) at points t (K, N), as numpy arrays: the node coefficients of each block of BATCH_KAPPAS kappas are
    computed once, on first use, and reused by every later set of points (a quantile's bisection steps)."""

    def __init__(self, gamma: float, kappa):
        self.gamma = _check_gamma(gamma)
        self.kappa = np.clip(np.atleast_1d(np.asarray(kappa, dtype=np.float64)), KAPPA_MIN, KAPPA_MAX)
        self._blocks: dict[int, tuple] = {}

    def _block(self, start: int):
        if start not in self._blocks:
            block = self.kappa[start:start + BATCH_KAPPAS]
            padded = jnp.asarray(np.concatenate([block, np.full(BATCH_KAPPAS - block.size, block[-1])]))
            self._blocks[start] = (padded, *_batch_programs(self.gamma)[0](padded))
        return self._blocks[start]

    def __call__(self, t, *, phase: bool = False) -> np.ndarray:
        """phi at t (K, N) (or with phase=True the CDF), row k for kappa[k]."""
        points = _batch_programs(self.gamma)[1]
        t = np.asarray(t, dtype=np.float64)
        k_count, n_count = t.shape
        out = np.empty_like(t)
        for start in range(0, k_count, BATCH_KAPPAS):
            kappa, log_i, g_rows, constant = self._block(start)
            rows = g_rows if phase else log_i
            values = t[start:start + BATCH_KAPPAS].ravel()
            index = np.repeat(np.arange(values.size // n_count), n_count)
            flat = np.empty_like(values)
            for begin in range(0, values.size, BATCH_POINTS):
                size = min(BATCH_POINTS, values.size - begin)
                pad = (0, BATCH_POINTS - size)
                where = jnp.asarray(np.pad(index[begin:begin + size], pad, mode="edge"))
                at = jnp.asarray(np.pad(values[begin:begin + size], pad, mode="edge"))
                flat[begin:begin + size] = np.asarray(points(rows, constant, kappa, where, at,
                                                             jnp.asarray(phase)))[:size]
            out[start:start + BATCH_KAPPAS] = flat.reshape(-1, n_count)
        return out


def phi_batch(gamma: float, kappa, t, *, phase: bool = False) -> np.ndarray:
    """`PhiBatch(gamma, kappa)(t, phase=phase)`: phi(t) (or the CDF) for kappa (K,) at points t (K, N)."""
    return PhiBatch(gamma, kappa)(t, phase=phase)


_LAGUERRE_NODES, _LAGUERRE_WEIGHTS = np.polynomial.laguerre.laggauss(48)


def log_tail_batch(phi: PhiBatch, t, *, upper: bool) -> np.ndarray:
    """log F_s(e^t) (upper=False) or log(1 - F_s(e^t)) (upper=True) at t (K, N), accurate deep in the tails: the
    phase where the tail mass exceeds TAIL_SWITCH, else `hteval.densities.tails.log_tail_mass`'s Gauss-Laguerre
    rule (in log s below the bulk, in s above it), exactly as `htmp_log_cdf` and `htmp_log_sf` do, in numpy."""
    cdf = phi(t, phase=True)
    mass = 1.0 - cdf if upper else cdf
    kappa = phi.kappa[:, None]
    if upper:
        # the variable is s itself: phi_s(v) = phi(log v) - log v, secant over a few 1/n
        step = np.broadcast_to(2 * phi.gamma / kappa, t.shape)
        z = np.exp(t)

        def density(v):
            return phi(np.log(v)) - np.log(v)

        here_there = density(np.concatenate([z, z + step], axis=1))
    else:
        step = np.full(t.shape, 0.5)
        z = t

        def density(v):
            return phi(v)

        here_there = density(np.concatenate([z, z - step], axis=1))
    here, there = here_there[:, :t.shape[1]], here_there[:, t.shape[1]:]
    c = np.clip((here - there) / step, 1e-3, 1e8)
    nodes = _LAGUERRE_NODES[None, None, :] / c[..., None]
    at = z[..., None] + nodes if upper else z[..., None] - nodes
    terms = density(at.reshape(t.shape[0], -1)).reshape(at.shape) + _LAGUERRE_NODES + np.log(_LAGUERRE_WEIGHTS)
    deep = logsumexp(terms, axis=-1) - np.log(c)
    with np.errstate(divide="ignore"):
        return np.where(mass > TAIL_SWITCH, np.log(np.maximum(mass, TAIL_SWITCH)), deep)


def quantile_batch(phi: PhiBatch, u, *, steps: int = 64) -> np.ndarray:
    """t = log s with F_s(e^t) = u for u (K, N), by bisection on [log 1e-300, log 1e6] (as `htmp_icdf`)."""
    u = np.asarray(u, dtype=np.float64)
    lo, hi = np.full(u.shape, np.log(1e-300)), np.full(u.shape, np.log(1e6))
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        below = phi(mid, phase=True) < u
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    return 0.5 * (lo + hi)
