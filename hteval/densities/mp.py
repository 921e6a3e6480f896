"""The Marchenko-Pastur law (SPEC section 2) in jax.numpy: log-density, CDF, quantile and Distribution.

Everything here is jit-safe and differentiable: points outside the support get a harmless stand-in argument
before any sqrt or log and are then selected away with ``jnp.where``, so values and gradients stay finite.
Float64 needs ``jax_enable_x64``; as a library this module does not switch it on (the CLI and tests do).
The three functions are jitted programs called on size buckets (`hteval.densities.compiled`): eager calls
would otherwise compile each of their ~50 primitives per shape, and a program per length.

Notation: s = x / sigma2, edges u_pm = (1 pm sqrt(gamma))^2 in s, l_pm = sigma2 u_pm in x, and
R(s) = sqrt((u_+ - s)(s - u_-)). From the antiderivative
int R/s ds = R + (u_- + u_+)/2 int ds/R - u_- u_+ int ds/(s R), for s in [u_-, u_+],

    F(s) = 1/2 + [R + (1+gamma) arcsin(p) - (1-gamma) arcsin(q)] / (2 pi gamma),
    p = (s - 1 - gamma) / (2 sqrt(gamma)),   q = ((1+gamma) s - (1-gamma)^2) / (2 sqrt(gamma) s).

Since 1 - p^2 = R^2 / (4 gamma) and 1 - q^2 = (1-gamma)^2 R^2 / (4 gamma s^2), the angles measured from the
lower edge, arcsin(.) + pi/2, are atan2's with R on the sine side, and the constants cancel:

    F(s) = [R + (1+gamma) phi_p - (1-gamma) phi_q] / (2 pi gamma),
    phi_p = atan2(R, 1 + gamma - s),   phi_q = atan2((1-gamma) R, (1-gamma)^2 - (1+gamma) s).

Every term vanishes at u_-: no O(1) cancellation in the lower tail (full relative accuracy at gamma = 1,
where F ~ 2 sqrt(s) / pi), and no clipping of arcsin arguments near the edges. At gamma = 1 the phi_q term is
0 * pi; its atan2 would see (0, -2s) and a 0/0 derivative for tiny s, so the constant pi replaces it there.
"""

import logging

import jax
import jax.numpy as jnp
import numpy as np

# ArviZ registers numpyro as a lazy module: a submodule imported before the package itself leaves
# numpyro.distributions without its submodule attributes (NUTS then fails), so the package comes first
import numpyro  # noqa: F401
from jax import lax
from jax.typing import ArrayLike
from numpyro.distributions import constraints
from numpyro.distributions.distribution import Distribution
from numpyro.distributions.transforms import biject_to
from numpyro.distributions.util import promote_shapes, validate_sample

from hteval.densities.compiled import elementwise

logger = logging.getLogger(__name__)

__all__ = ["MarchenkoPastur", "half_open_unit_interval", "mp_cdf", "mp_icdf", "mp_logpdf", "mp_support"]

# Bisection halves an interval of unit length in sqrt-space; 64 steps reach float64 resolution, and one
# Newton step afterwards makes the result differentiable (implicit function theorem).
_BISECTION_STEPS = 64
#: the quantile's uniform grid cells in sqrt-space, and Newton steps inside a cell
_QUANTILE_CELLS = 256
_QUANTILE_NEWTON_STEPS = 4
#: how far outside its bracket (in t) a Newton step may land and still be taken, clipped into it
_BRACKET_SLACK = 1e-12


class _HalfOpenInterval(constraints._Interval):
    """lower < x <= upper: numpyro 0.22 offers closed and open intervals but not gamma's (0, 1]."""

    def __call__(self, x: ArrayLike) -> ArrayLike:
        xp = jnp if isinstance(x, jax.Array) else np
        return xp.greater(x, self.lower_bound) & xp.less_equal(x, self.upper_bound)


half_open_unit_interval = _HalfOpenInterval(0.0, 1.0)
# gamma is normally fixed by the layer shape; registering keeps it usable as a latent all the same
biject_to.register(_HalfOpenInterval, lambda c: biject_to(constraints.interval(c.lower_bound, c.upper_bound)))


def mp_support(gamma: ArrayLike, sigma2: ArrayLike = 1.0) -> tuple[jax.Array, jax.Array]:
    """Edges (l_-, l_+) = sigma2 (1 -+ sqrt(gamma))^2 of the Marchenko-Pastur support.

    Parameters
    ----------
    gamma : array_like
        Aspect ratio M / N in (0, 1].
    sigma2 : array_like, optional
        Variance of the matrix entries (the mean eigenvalue).

    Returns
    -------
    tuple of jax.Array
        Lower and upper edge, broadcast against each other.
    """
    root = jnp.sqrt(gamma)
    return sigma2 * (1.0 - root) ** 2, sigma2 * (1.0 + root) ** 2


def _standardised(x: ArrayLike, gamma: ArrayLike, sigma2: ArrayLike):
    """Broadcast arguments, s-edges, masks of the open support and of s >= u_+, and a safe s = x / sigma2.

    The stand-in replaces x before the division, so even x = inf leaves no inf * 0 in the sigma2 gradient;
    the masks come from the same quotient x / sigma2 as the kept values, so rounding cannot put a kept s on
    an edge. The stand-in s = 1 + gamma is interior for every gamma in (0, 1].
    """
    x, gamma, sigma2 = jnp.broadcast_arrays(*promote_shapes(x, gamma, sigma2))
    lo, hi = mp_support(gamma)
    s = x / sigma2
    inside = (s > lo) & (s < hi)
    s_safe = jnp.where(inside, x, sigma2 * (1.0 + gamma)) / sigma2
    return s_safe, gamma, sigma2, lo, hi, inside, s >= hi


@jax.jit
def _logpdf(x, gamma, sigma2):
    s_safe, gamma, sigma2, lo, hi, inside, _ = _standardised(x, gamma, sigma2)
    # two logs rather than the log of a product: the product underflows for x near 0 at gamma = 1
    log_root = 0.5 * (jnp.log(hi - s_safe) + jnp.log(s_safe - lo))
    value = log_root - jnp.log(2.0 * jnp.pi * gamma * sigma2 * s_safe)
    return jnp.where(inside, value, -jnp.inf)


def mp_logpdf(x: ArrayLike, gamma: ArrayLike, sigma2: ArrayLike = 1.0) -> jax.Array:
    """Log-density of the Marchenko-Pastur law with ratio ``gamma`` and mean ``sigma2``.

    log f(x) = (log(l_+ - x) + log(x - l_-)) / 2 - log(2 pi gamma sigma2 x); -inf outside the open support
    (l_-, l_+), the edges included (also x = 0 at gamma = 1, where f diverges like x^-1/2). Never NaN, and the
    gradient is finite everywhere.

    Compiled once per length bucket: called eagerly, the points (broadcast against gamma and
    sigma2 when those are arrays) run padded to the next power-of-two length, at least 64
    (`hteval.densities.compiled`); gamma and sigma2 are traced, so new values never recompile.

    Parameters
    ----------
    x : array_like
        Eigenvalues.
    gamma : array_like
        Aspect ratio in (0, 1].
    sigma2 : array_like, optional
        Mean eigenvalue (entry variance), > 0.

    Returns
    -------
    jax.Array
        log f(x), with the broadcast shape of the arguments.
    """
    return elementwise(_logpdf, (x, gamma, sigma2))


def _cdf_inside(s: jax.Array, gamma: jax.Array, lo: jax.Array, hi: jax.Array) -> jax.Array:
    """F(s) by the atan2 form of the module docstring, for s strictly inside (lo, hi)."""
    r = jnp.sqrt(hi - s) * jnp.sqrt(s - lo)
    phi_p = jnp.arctan2(r, 1.0 + gamma - s)
    square = gamma == 1.0
    # harmless stand-in (1, -1) for the atan2 at gamma = 1, whose limit value pi is then selected
    y_q = jnp.where(square, 1.0, (1.0 - gamma) * r)
    x_q = jnp.where(square, -1.0, (1.0 - gamma) ** 2 - (1.0 + gamma) * s)
    phi_q = jnp.where(square, jnp.pi, jnp.arctan2(y_q, x_q))
    return (r + (1.0 + gamma) * phi_p - (1.0 - gamma) * phi_q) / (2.0 * jnp.pi * gamma)


@jax.jit
def _cdf(x, gamma, sigma2):
    s_safe, gamma, _, lo, hi, inside, above = _standardised(x, gamma, sigma2)
    value = _cdf_inside(s_safe, gamma, lo, hi)
    return jnp.where(inside, value, jnp.where(above, 1.0, 0.0))


def mp_cdf(x: ArrayLike, gamma: ArrayLike, sigma2: ArrayLike = 1.0) -> jax.Array:
    """Closed-form CDF of the Marchenko-Pastur law (formula in the module docstring).

    Continuous and differentiable, 0 at and below l_-, 1 at and above l_+, valid for gamma = 1. The lower tail
    keeps relative accuracy (about eps / t for F ~ t^(3/2), t = (x - l_-)/(l_+ - l_-); fully relative at
    gamma = 1, where F ~ 2 sqrt(x / sigma2) / pi); near l_+ only 1 - F's absolute accuracy eps is possible.

    Compiled once per length bucket: called eagerly, the points (broadcast against gamma and
    sigma2 when those are arrays) run padded to the next power-of-two length, at least 64
    (`hteval.densities.compiled`); gamma and sigma2 are traced, so new values never recompile.

    Parameters
    ----------
    x : array_like
        Points.
    gamma : array_like
        Aspect ratio in (0, 1].
    sigma2 : array_like, optional
        Mean eigenvalue, > 0.

    Returns
    -------
    jax.Array
        F(x), with the broadcast shape of the arguments.
    """
    return elementwise(_cdf, (x, gamma, sigma2))


def _bisect_sqrt(q: jax.Array, gamma: jax.Array, lo: jax.Array, hi: jax.Array) -> jax.Array:
    """Root of F(s) = q by bisection in t = sqrt((s - lo) / (hi - lo)), which resolves the lower edge."""
    width = hi - lo

    def step(_, bracket):
        t_lo, t_hi = bracket
        t_mid = 0.5 * (t_lo + t_hi)
        s_mid = lo + width * t_mid**2
        below = _cdf(s_mid, gamma, 1.0) < q
        return jnp.where(below, t_mid, t_lo), jnp.where(below, t_hi, t_mid)

    t_lo, t_hi = lax.fori_loop(0, _BISECTION_STEPS, step, (jnp.zeros_like(q), jnp.ones_like(q)))
    return lo + width * (0.5 * (t_lo + t_hi)) ** 2


def _cdf_in_t(t: jax.Array, gamma: jax.Array, lo: jax.Array, hi: jax.Array) -> tuple[jax.Array, jax.Array]:
    """F and dF/dt at t in [0, 1], s = lo + (hi - lo) t^2 (0 and 1 at the ends, where dF/dt is 0 or singular)."""
    width = hi - lo
    inside = (t > 0.0) & (t < 1.0)
    t_safe = jnp.where(inside, t, 0.5)
    s = lo + width * t_safe**2
    # f(s) ds/dt = R / (2 pi gamma s) * 2 width t, R = sqrt(hi - s) sqrt(width) t: no 0/0 at gamma = 1, lo = 0
    r_over_t = jnp.sqrt(hi - s) * jnp.sqrt(width)
    slope = r_over_t * width * t_safe**2 / (jnp.pi * gamma * s)
    value = jnp.where(inside, _cdf_inside(s, gamma, lo, hi), jnp.where(t >= 1.0, 1.0, 0.0))
    return value, jnp.where(inside, slope, 0.0)


def _quantile_grid() -> np.ndarray:
    """Nodes in t: uniform cells inside, geometric ones towards both ends (ratio 1.4 down to 1e-12 of a cell),
    where F and 1 - F follow power laws whose exponent changes within a uniform cell when gamma is near 1."""
    cell = 1.0 / _QUANTILE_CELLS
    ends = np.geomspace(1e-12 * cell, cell, 84)[:-1]
    return np.concatenate([[0.0], ends, np.linspace(cell, 1.0 - cell, _QUANTILE_CELLS - 1), 1.0 - ends[::-1], [1.0]])


def _solve_sqrt(q: jax.Array, gamma: jax.Array, lo: jax.Array, hi: jax.Array) -> jax.Array:
    """Root of F(s) = q for one scalar gamma, in t = sqrt((s - lo) / (hi - lo)): a table of F on a graded grid in
    t brackets q in one cell, where safeguarded Newton steps converge quadratically from the cell's chord (the
    end cells start from a power law instead, where the chord would be far off). About 8x fewer CDF evaluations
    than bisection."""
    nodes = jnp.asarray(_quantile_grid())
    f_grid = lax.cummax(_cdf_in_t(nodes, gamma, lo, hi)[0])
    last = nodes.size - 2
    j = jnp.clip(jnp.searchsorted(f_grid, q, method="scan") - 1, 0, last)
    f0, f1 = f_grid[j], f_grid[j + 1]
    frac = jnp.clip((q - f0) / jnp.where(f1 > f0, f1 - f0, 1.0), 0.0, 1.0)
    # the end cells span twelve decades in t: power laws through them, with the neighbouring cells' exponents
    # (3 and 3/2 at soft edges, 1 at the hard lower edge of gamma = 1)
    p_lo = jnp.log(f_grid[2] / f_grid[1]) / jnp.log(nodes[2] / nodes[1])
    p_hi = jnp.log((1.0 - f_grid[-3]) / (1.0 - f_grid[-2])) / jnp.log((1.0 - nodes[-3]) / (1.0 - nodes[-2]))
    p_lo, p_hi = (jnp.clip(jnp.where(jnp.isfinite(v), v, 1.0), 0.5, 4.0) for v in (p_lo, p_hi))
    frac = jnp.where(j == 0, frac ** (1.0 / p_lo), frac)
    frac = jnp.where(j == last, 1.0 - (1.0 - frac) ** (1.0 / p_hi), frac)
    t_lo, t_hi = nodes[j], nodes[j + 1]

    def step(_, state):
        t, t_lo, t_hi = state
        f, df = _cdf_in_t(t, gamma, lo, hi)
        short = f < q
        t_lo, t_hi = jnp.where(short, t, t_lo), jnp.where(short, t_hi, t)
        new = t - (f - q) / df
        # a converged step lands on its bracket's end, or just beyond it where F rounds differently in the
        # comparison and in the step: taken there too (clipped), not bisected away from the root
        inside = jnp.isfinite(new) & (new >= t_lo - _BRACKET_SLACK) & (new <= t_hi + _BRACKET_SLACK)
        return jnp.where(inside, jnp.clip(new, t_lo, t_hi), 0.5 * (t_lo + t_hi)), t_lo, t_hi

    # unrolled: XLA fuses the steps into one pass over the points, where a loop makes a pass of each
    state = (t_lo + frac * (t_hi - t_lo), t_lo, t_hi)
    for i in range(_QUANTILE_NEWTON_STEPS):
        state = step(i, state)
    t = state[0]
    return lo + (hi - lo) * t**2


@jax.jit
def _icdf(q, gamma, sigma2):
    scalar_gamma = jnp.ndim(gamma) == 0
    q, gamma, sigma2 = jnp.broadcast_arrays(*promote_shapes(q, gamma, sigma2))
    lo, hi = mp_support(gamma)
    q_safe = jnp.clip(q, 0.0, 1.0)
    if scalar_gamma:  # one table for all points (a quantile call of a fit or a draw)
        g = lax.stop_gradient(gamma.reshape(-1)[0]) if gamma.size else lax.stop_gradient(jnp.ones(()))
        lo_1, hi_1 = mp_support(g)
        s0 = lax.stop_gradient(_solve_sqrt(q_safe, g, lo_1, hi_1))
    else:
        s0 = lax.stop_gradient(_bisect_sqrt(q_safe, lax.stop_gradient(gamma), lo, hi))
    log_f = _logpdf(s0, gamma, 1.0)
    interior = jnp.isfinite(log_f)
    newton = (_cdf(s0, gamma, 1.0) - q_safe) * jnp.exp(-jnp.where(interior, log_f, 0.0))
    s = jnp.clip(s0 - jnp.where(interior, newton, 0.0), lo, hi)
    # exact edges for q = 0 and 1, which the bisection midpoint and F's rounding near l_+ only approach
    s = jnp.where(q_safe == 0.0, lo, jnp.where(q_safe == 1.0, hi, s))
    return jnp.where((q >= 0.0) & (q <= 1.0), sigma2 * s, jnp.nan)


def mp_icdf(q: ArrayLike, gamma: ArrayLike, sigma2: ArrayLike = 1.0) -> jax.Array:
    """Inverse CDF (quantile function) of the Marchenko-Pastur law, by fixed-step bisection: jit-safe.

    The bisection result is held constant for autodiff and refined by one Newton step, whose derivative is the
    implicit-function one (dx/dq = 1/f(x)). q = 0 gives l_-, q = 1 gives l_+, q outside [0, 1] gives NaN.

    Compiled once per length bucket: called eagerly, the points (broadcast against gamma and
    sigma2 when those are arrays) run padded to the next power-of-two length, at least 64
    (`hteval.densities.compiled`); gamma and sigma2 are traced, so new values never recompile.

    Parameters
    ----------
    q : array_like
        Probabilities.
    gamma : array_like
        Aspect ratio in (0, 1].
    sigma2 : array_like, optional
        Mean eigenvalue, > 0.

    Returns
    -------
    jax.Array
        x with F(x) = q, with the broadcast shape of the arguments.
    """
    return elementwise(_icdf, (q, gamma, sigma2))


class MarchenkoPastur(Distribution):
    """Marchenko-Pastur law of one eigenvalue of W^T W / N (ratio gamma = M / N, entry variance sigma2).

    Parameters
    ----------
    gamma : array_like
        Aspect ratio in (0, 1] (constraint: lower < gamma <= upper, a half-open interval).
    sigma2 : array_like, optional
        Entry variance = mean eigenvalue, > 0.
    validate_args : bool, optional
        Check the arguments against ``arg_constraints`` (numpyro's switch).

    Notes
    -----
    ``support`` is declared as the positive reals, the space eigenvalues live in; the density is 0
    (log_prob -inf) outside [l_-, l_+]. ``sample`` draws iid values from the limiting law by inverting the CDF
    at uniforms; it is not a finite-size Wishart spectrum (see ``hteval.sampling.sample_mp_spectrum``).
    """

    arg_constraints = {"gamma": half_open_unit_interval, "sigma2": constraints.positive}
    support = constraints.positive
    reparametrized_params = ["gamma", "sigma2"]
    pytree_data_fields = ("gamma", "sigma2")

    def __init__(self, gamma: ArrayLike, sigma2: ArrayLike = 1.0, *, validate_args: bool | None = None):
        self.gamma, self.sigma2 = promote_shapes(gamma, sigma2)
        batch_shape = lax.broadcast_shapes(jnp.shape(gamma), jnp.shape(sigma2))
        super().__init__(batch_shape=batch_shape, validate_args=validate_args)

    @validate_sample
    def log_prob(self, value: ArrayLike) -> jax.Array:
        return mp_logpdf(value, self.gamma, self.sigma2)

    def cdf(self, value: ArrayLike) -> jax.Array:
        return mp_cdf(value, self.gamma, self.sigma2)

    def icdf(self, q: ArrayLike) -> jax.Array:
        return mp_icdf(q, self.gamma, self.sigma2)

    def sample(self, key: jax.Array, sample_shape: tuple[int, ...] = ()) -> jax.Array:
        shape = sample_shape + self.batch_shape
        # tiny rather than 0 keeps draws off the lower edge, where log_prob is -inf
        u = jax.random.uniform(key, shape, minval=jnp.finfo(jnp.result_type(float)).tiny, maxval=1.0)
        return self.icdf(u)

    @property
    def mean(self) -> jax.Array:
        return jnp.broadcast_to(self.sigma2, self.batch_shape)

    @property
    def variance(self) -> jax.Array:
        return jnp.broadcast_to(self.sigma2**2 * self.gamma, self.batch_shape)


# ---------------------------------------------------------------------------------------------------------------
# numpy twins of the three functions, for exact posteriors and predictive checks evaluated on whole tables of
# (sigma2, x) at once: the same formulas, no compilation. Shapes broadcast; gamma is a scalar.
# ---------------------------------------------------------------------------------------------------------------


def _standardised_np(x, gamma, sigma2):
    lo, hi = (1.0 - np.sqrt(gamma)) ** 2, (1.0 + np.sqrt(gamma)) ** 2
    s = np.asarray(x, dtype=np.float64) / sigma2
    inside = (s > lo) & (s < hi)
    return np.where(inside, s, 1.0 + gamma), lo, hi, inside, s >= hi


def mp_logpdf_np(x, gamma: float, sigma2=1.0) -> np.ndarray:
    """`mp_logpdf` in numpy: -inf outside the open support."""
    s, lo, hi, inside, _ = _standardised_np(x, gamma, sigma2)
    value = 0.5 * (np.log(hi - s) + np.log(s - lo)) - np.log(2.0 * np.pi * gamma * sigma2 * s)
    return np.where(inside, value, -np.inf)


def mp_cdf_np(x, gamma: float, sigma2=1.0) -> np.ndarray:
    """`mp_cdf` in numpy (the atan2 form of the module docstring)."""
    s, lo, hi, inside, above = _standardised_np(x, gamma, sigma2)
    r = np.sqrt(hi - s) * np.sqrt(s - lo)
    phi_q = np.pi if gamma == 1.0 else np.arctan2((1.0 - gamma) * r, (1.0 - gamma) ** 2 - (1.0 + gamma) * s)
    value = (r + (1.0 + gamma) * np.arctan2(r, 1.0 + gamma - s) - (1.0 - gamma) * phi_q) / (2.0 * np.pi * gamma)
    return np.where(inside, value, np.where(above, 1.0, 0.0))


def mp_icdf_np(q, gamma: float, sigma2=1.0) -> np.ndarray:
    """`mp_icdf` in numpy, by the same bisection in sqrt((s - lo) / (hi - lo)) (no Newton polish: the bisection
    reaches float64 resolution)."""
    q = np.clip(np.asarray(q, dtype=np.float64), 0.0, 1.0)
    lo, hi = (1.0 - np.sqrt(gamma)) ** 2, (1.0 + np.sqrt(gamma)) ** 2
    t_lo, t_hi = np.zeros_like(q), np.ones_like(q)
    for _ in range(_BISECTION_STEPS):
        t_mid = 0.5 * (t_lo + t_hi)
        below = mp_cdf_np(lo + (hi - lo) * t_mid**2, gamma) < q
        t_lo, t_hi = np.where(below, t_mid, t_lo), np.where(below, t_hi, t_mid)
    return sigma2 * (lo + (hi - lo) * (0.5 * (t_lo + t_hi)) ** 2)
