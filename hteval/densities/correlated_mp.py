"""The correlated Marchenko-Pastur law (SPEC section 3): population covariance with a power-law spectrum, in JAX.

Eigenvalues x of W^T W / N, W = X Sigma^(1/2), X of shape N x M with iid N(0, scale) entries, gamma = M / N in
(0, 1]; Sigma has eigenvalues t_i proportional to i^(-nu), normalised to mean 1. nu = 0 is Marchenko-Pastur.

Population law. For nu < 1 the law of t_i / mean(t) tends, as M grows, to a continuous one: t = c u^(-nu) with
u uniform. Its atoms are a finite-size artefact, and a harmful one: the limiting law of an atomic H has islands
around its isolated top atoms, finite-size eigenvalues fall just outside them and jump in and out as (nu, scale)
move, and the posterior does not converge (measured with a 96-atom version of this module). So H here is the
law of t = c u^(-nu) with u uniform on [1/2, M + 1/2] (the midpoint rule's cells of i = 1..M; the top cell
carries the top eigenvalue's mass 1/M), cut into K = 40 cells equally wide in log u, each uniform in t over
its range, and c sets the mean of t to 1. Every cell is an interval, so the support of the ESD is one
interval: no islands, no gaps.

Silverstein equation through w = -1/mu (mu the Stieltjes transform of the N x N companion matrix): for scale 1

    z(w) = (1 - gamma) w + gamma w^2 S(w),   S(w) = int dH(t) / (w - t),   f(x) = Im w / (pi gamma |w|^2),

where w(x) is the root of z(w) = x in the upper half plane. For a cell uniform on [t_lo, t_hi] the integral is
(log(w - t_lo) - log(w - t_hi)) / (t_hi - t_lo) (principal logs: w - t stays in the upper half plane); the
cells share endpoints, so the sums telescope to one logarithm per endpoint. nu below 1e-4 is taken as 1e-4
(cells need a width; the telescoped weights grow as 1/width).

Support. On the real axis outside [t_min, t_max], z'(a) = 1 - gamma int dH t^2 / (a - t)^2, and the edges are
its zeros: a_0 in [0, t_min) and a_top in (t_max, t_max + sqrt(gamma t_max)] (there the integral is below 1
since int dH t^2 <= t_max), both by bisection. Between them Im w > 0.

Finite-size smoothing. The limiting density ends in square-root edges, and a finite spectrum's extreme
eigenvalues straddle them (Tracy-Widom fluctuations, ~M^(-2/3) relative). As (nu, scale) move an edge across
an eigenvalue its log-density falls to -inf with an infinite gradient, which NUTS meets as divergences
(measured: 2-7 per 2 x 1000 iterations on m = 300 spectra; the log-likelihood along nu had kinks of ~2 in its
second difference exactly where the lowest and highest eigenvalues crossed the edges). So log x is smoothed
by a kernel of width theta = 0.01 (1% of x), which is what evaluating the Stieltjes transform on the ray
zeta = x e^(i theta) does: for any law F on x > 0,

    Im(zeta m_F(zeta)) / pi = int dF(lam) sin(theta) / (2 pi (cosh l - cos theta)),   l = log(lam / x),

a kernel in l that is Cauchy of width theta near l = 0 with tails ~e^(-|l|), and integrates to
(pi - theta) / pi. Hence the density used here, that of log lambda plus independent noise of that law,

    f(x) = Im(zeta m_F(zeta)) / ((pi - theta) x),   zeta m_F(zeta) = (1 - gamma - zeta / w) / gamma,   z(w) = zeta,

a proper density on x > 0 (no renormalisation, no mass below 0), positive everywhere, smooth in (nu, scale),
with tails ~x^-2 above the bulk and ~x below it (so scale is the mean of the unsmoothed law; the smoothed one
has none). A power law is unchanged by a shift in log x, so the x^(-1/2) hard edge at gamma = 1 keeps its
exponent; inside the bulk the density moves by O(theta); at the soft edges the square root is blurred over ~1%.

Root finding. A table along the limiting curve (Chebyshev-Lobatto nodes in a = Re w on [a_0, t_min], in log a
on [t_min, t_max] and on [t_max, a_top]; at each node b^2 = s solves Im z / b = 0, i.e. h(s) = 1, where
h(s) = gamma int dH t^2 / ((a - t)^2 + s) is a Stieltjes function of s, so 1/h is concave and Newton from the
left climbs to its root) gives each point a start by linear interpolation in x, lifted by i theta x; complex
Newton on z(w) = zeta (z' does not vanish off the real axis) polishes it; points outside the support start
from the real root continued past the edge.

CDF. Phi(zeta) = Psi(w(zeta)) + ((1 - gamma) / gamma) log zeta, Psi(w) = -int dH log(t - w)
- ((1 - gamma) / gamma) log w + 1 - w S(w), is a primitive of m_F (on the real axis Im Psi / pi is the limiting
CDF), so along the ray F(x) = Im Phi(x e^(i theta)) / (pi - theta): 0 at x = 0, 1 as x grows.

Gradients. Newton runs on stop-gradient values; one more Newton step on the differentiable residual then
carries the implicit-function derivative (exact at a converged root), so nothing is differentiated through the
iterations. Edges and table are stop-gradient: they only start Newton.

Accuracy: the density integrates to 1 and the CDF matches its integral to ~1e-9 (tests); Newton converges to
~1e-7 or better in log f (8 steps). Cost: ~8-12 ms for the value and gradient over 384 points on one CPU core.

Calls: the three public functions are jitted programs; eager calls run on size buckets
(`hteval.densities.compiled`), so a loop over (nu, scale) compiles nothing after its first call.

Float64 needs ``jax_enable_x64``; as a library this module does not switch it on.
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from hteval.densities.compiled import elementwise

__all__ = [
    "correlated_mp_cdf", "correlated_mp_icdf", "correlated_mp_logpdf", "correlated_mp_support", "population_cells",
]

_CELLS = 40
_NU_MIN = 1e-4
_BISECTION_STEPS = 60
_TABLE_STEPS = 10
_NEWTON_STEPS = 8
# smoothing width in log x (module docstring)
_THETA = 0.01
_QUANTILE_STEPS = 24
# series far from the population range (|w| > 4 t_max) and near 0 (|w| < t_min / 4): error 4^-25 < 1e-15
_SERIES_RADIUS = 4.0
_SERIES_TERMS = 24
_X_MIN = 1e-150
# table nodes: below the population range, across it (in log a), above it
_NODES_LOW, _NODES_MID, _NODES_HIGH = 8, 48, 12


def population_cells(nu: ArrayLike, m: ArrayLike) -> tuple[jax.Array, jax.Array]:
    """The cells of the population law: t uniform between consecutive endpoints e_k < e_k+1 with probability
    p_k; the mean of t is 1.

    Parameters
    ----------
    nu : array_like
        Power-law exponent (scalar, >= 0; may be traced). Below 1e-4 it is taken as 1e-4 (cells of zero
        width have no uniform law), whose limiting law is Marchenko-Pastur's to ~1e-5 in the log-density.
    m : array_like
        Number of population eigenvalues M >= 1 (scalar; may be traced).

    Returns
    -------
    tuple of jax.Array
        The 41 endpoints e (ascending) and the 40 probabilities p (summing to 1).
    """
    nu = jnp.maximum(jnp.asarray(nu, dtype=float), _NU_MIN)
    m = jnp.asarray(m, dtype=float)
    log_u = jnp.log(0.5) + jnp.log(2.0 * m + 1.0) * jnp.linspace(0.0, 1.0, _CELLS + 1)
    u = jnp.exp(log_u)
    p = jnp.diff(u) / m
    e = jnp.exp(-nu * log_u)
    mean = jnp.sum(p * 0.5 * (e[:-1] + e[1:]))
    return (e / mean)[::-1], p[::-1]


def _weights(e, p):
    """c_j = p_j / width_j - p_j-1 / width_j-1 per endpoint: the cells' sums telescope onto the endpoints,
    S(w) = sum c_j log(w - e_j) and S'(w) = sum c_j / (w - e_j), one logarithm per endpoint."""
    density = p / jnp.diff(e)
    return jnp.concatenate([density, jnp.zeros(1)]) - jnp.concatenate([jnp.zeros(1), density])


def _law(nu, m):
    """(endpoints, telescoped weights, moments, inverse moments) of the population law: what every function
    below works with.

    The telescoped sums cancel (their weights grow as 1 / width) far from the population range and, in their
    imaginary parts, near w = 0; there series in r = t_max / w (moments mu_k = E[(t / t_max)^k]) and in
    r0 = w / t_min (inverse moments iota_k = E[(t_min / t)^(k+1)]) take over."""
    e, p = population_cells(nu, m)
    lo, hi = e[:-1] / e[-1], e[1:] / e[-1]
    # the mean of (t/t_max)^k over a cell is sum_j lo^j hi^(k-j) / (k+1): A_k = hi A_k-1 + lo^k, no cancellation
    def moment(carry, k):
        acc, lo_k = carry
        lo_k = lo_k * lo
        acc = hi * acc + lo_k
        return (acc, lo_k), jnp.sum(p * acc) / (k + 1)

    orders = jnp.arange(1, _SERIES_TERMS + 1, dtype=lo.dtype)
    moments = lax.scan(moment, (jnp.ones_like(lo), jnp.ones_like(lo)), orders)[1]
    # the mean of (t_min/t)^n over a cell, n >= 2: B_n-1 / (n - 1) with B_j = (B_j-1 + lo^-j) / hi in units of
    # t_min (lo, hi >= 1); n = 1: log1p(width / lo) / width
    lo, hi = e[:-1] / e[0], e[1:] / e[0]
    width = hi - lo
    first = jnp.sum(p * jnp.where(width > 0, jnp.log1p(width / lo) / jnp.where(width > 0, width, 1.0), 1.0 / lo))

    def inverse_moment(carry, j):
        b, inv_lo_j = carry
        inv_lo_j = inv_lo_j / lo
        b = (b + inv_lo_j) / hi
        return (b, inv_lo_j), jnp.sum(p * b) / j

    inverse = lax.scan(inverse_moment, (jnp.zeros_like(lo), jnp.ones_like(lo)), orders)[1]
    return (e, _weights(e, p), jnp.concatenate([jnp.ones(1), moments]),
            jnp.concatenate([first[None], inverse]))


def _horner(coefficients, r):
    """sum_k coefficients[k] r^k, as a loop (unrolled, its 25 terms made compilation several times slower)."""
    def step(acc, c):
        return acc * r + c, None

    return lax.scan(step, jnp.zeros_like(r), coefficients[::-1])[0]


def _regions(w, cells):
    """(far, near, w_far, r0): |w| > 4 t_max and |w| < t_min / 4, where the series converge to rounding."""
    e = cells[0]
    far = jnp.abs(w) > _SERIES_RADIUS * e[-1]
    near = jnp.abs(w) < e[0] / _SERIES_RADIUS
    w_far = jnp.where(far, w, _SERIES_RADIUS * 2.0 * e[-1] + 0j)
    return far, near, w_far, w / e[0]


def _sums(w, cells):
    """S(w) and S'(w) for complex w (any shape): telescoped over the endpoints in real arithmetic, and by the
    series far away (S = sum mu_k r^k / w) and near 0 (S = -sum iota_k r0^k / t_min)."""
    e, c, mu, iota = cells
    a, b = jnp.real(w)[..., None], jnp.imag(w)[..., None]
    d = a - e
    q = d * d + b * b
    s = 0.5 * jnp.sum(c * jnp.log(q), axis=-1) + 1j * jnp.sum(c * jnp.arctan2(b, d), axis=-1)
    ds = jnp.sum(c * d / q, axis=-1) - 1j * jnp.sum(c * b / q, axis=-1)
    far, near, w_far, r0 = _regions(w, cells)
    k = jnp.arange(mu.size)
    r = e[-1] / w_far
    s_far = _horner(mu, r) / w_far
    ds_far = -_horner((k + 1) * mu, r) / w_far**2
    s_near = -_horner(iota, r0) / e[0]
    ds_near = -_horner(k[1:] * iota[1:], r0) / e[0] ** 2
    s = jnp.where(far, s_far, jnp.where(near, s_near, s))
    ds = jnp.where(far, ds_far, jnp.where(near, ds_near, ds))
    return s, ds


def _z(w, gamma, cells):
    """z(w) and z'(w)."""
    s, ds = _sums(w, cells)
    return (1.0 - gamma) * w + gamma * w * w * s, (1.0 - gamma) + gamma * (2.0 * w * s + w * w * ds)


def _im_mean_log(w, cells):
    """Im int dH log(t - w): telescoped, -Im sum c_j (e_j - w) log(e_j - w) (principal logs: t - w stays in the
    lower half plane); far away Im log(-w) - Im sum_k mu_k r^k / k; near 0 -Im sum_k iota_k-1 r0^k / k."""
    e, c, mu, iota = cells
    v = e - w[..., None]
    value = -jnp.sum(c * jnp.imag(v * jnp.log(v)), axis=-1)
    far, near, w_far, r0 = _regions(w, cells)
    k = jnp.arange(1, mu.size)
    series_far = jnp.imag(jnp.log(-w_far) - _horner(jnp.concatenate([jnp.zeros(1), mu[1:] / k]), e[-1] / w_far))
    series_near = -jnp.imag(_horner(jnp.concatenate([jnp.zeros(1), iota[:-1] / k]), r0))
    return jnp.where(far, series_far, jnp.where(near, series_near, value))


def _bisect(pred, lo, hi):
    """Shrink [lo, hi] towards the switch of ``pred`` (True on the lo side); returns the final (lo, hi)."""

    def step(_, bracket):
        lo, hi = bracket
        mid = 0.5 * (lo + hi)
        left = pred(mid)
        return jnp.where(left, mid, lo), jnp.where(left, hi, mid)

    return lax.fori_loop(0, _BISECTION_STEPS, step, (lo, hi))


def _slope(a, gamma, cells):
    """z'(a) on the real axis (outside the population range, where it is real)."""
    return jnp.real(_z(jnp.asarray(a, dtype=complex), gamma, cells)[1])


def _edges(gamma, cells):
    """a_0 and a_top, the real zeros of z' below and above the population range (a_0 = 0 at gamma = 1)."""
    t_min, t_max = cells[0][0], cells[0][-1]
    a_0 = _bisect(lambda a: _slope(a, gamma, cells) > 0.0, jnp.zeros(()), t_min)[0]
    a_0 = jnp.where(gamma < 1.0, a_0, 0.0)
    a_top = _bisect(lambda a: _slope(a, gamma, cells) < 0.0, t_max, t_max + 1.01 * jnp.sqrt(gamma * t_max))[1]
    return a_0, a_top


def _solve_s(a, gamma, cells):
    """s > 0 with h(a, s) = 1 at table nodes a inside the support, by Newton on 1/h - 1 (concave in s)."""
    s0 = (1e-6 * (jnp.abs(a) + cells[0][-1])) ** 2

    def step(_, s):
        b = jnp.sqrt(s)
        z, dz = _z(a + 1j * b, gamma, cells)
        h = 1.0 - jnp.imag(z) / b
        # dh/ds = (1/2b) d/db (-Im z / b), and d Im z / db = Re z' (Cauchy-Riemann)
        dh = (1.0 - h - jnp.real(dz)) / (2.0 * s)
        new = s + (1.0 / h - 1.0) * h * h / dh
        # from the right of the root a step lands left of it, possibly below 0: keep s positive
        return jnp.where(jnp.isfinite(new), jnp.maximum(new, 0.01 * s), s)

    return lax.fori_loop(0, _TABLE_STEPS, step, s0)


def _chebyshev(lo, hi, n):
    frac = 0.5 * (1.0 - np.cos(np.pi * np.arange(n) / (n - 1)))
    return lo + (hi - lo) * frac


def _table(gamma, cells):
    """Stop-gradient table (x, a, s) along the curve from the lower to the upper edge, x ascending."""
    cells = tuple(lax.stop_gradient(c) for c in cells)
    a_0, a_top = _edges(gamma, cells)
    t_min, t_max = cells[0][0], cells[0][-1]
    mid = jnp.exp(_chebyshev(jnp.log(t_min), jnp.log(t_max), _NODES_MID))
    a = jnp.concatenate([_chebyshev(a_0, t_min, _NODES_LOW)[:-1], mid, _chebyshev(t_max, a_top, _NODES_HIGH)[1:]])
    s = _solve_s(a, gamma, cells)
    # the edges themselves lie on the real axis
    s = s.at[0].set(0.0).at[-1].set(0.0)
    x = jnp.real(_z(a + 1j * jnp.sqrt(s), gamma, cells)[0])
    x = x.at[0].set(jnp.real(_z(a_0 + 0j, gamma, cells)[0]))
    # x increases with a in theory; rounding must not unsort the table before searchsorted
    return lax.cummax(x), a, s


def _root(zeta, w, gamma, cells):
    """Newton on z(w) = zeta (Im zeta > 0) from w in the upper half plane; a step that leaves it is cut back
    (the root sought is the one with Im w > 0)."""

    def step(_, w):
        z, dz = _z(w, gamma, cells)
        new = w - (z - zeta) / dz
        new = jnp.where(jnp.isfinite(new), new, w)
        return jnp.where(jnp.imag(new) > 0.0, new, jnp.real(new) + 0.5j * jnp.imag(w))

    return lax.fori_loop(0, _NEWTON_STEPS, step, w)


def _start(x, table, theta):
    """Starting w for z(w) = x e^(i theta): inside the support the table's curve, interpolated in x and lifted;
    below and above it the real root continued from the edge (z' -> 1 - gamma at 0 and -> 1 far above)."""
    x_tab, a_tab, s_tab = table
    k = jnp.clip(jnp.searchsorted(x_tab, x), 1, x_tab.size - 1)
    x_a, x_b = x_tab[k - 1], x_tab[k]
    width = x_b - x_a
    lam = jnp.clip(jnp.where(width > 0, (x - x_a) / jnp.where(width > 0, width, 1.0), 0.5), 0.0, 1.0)
    a = a_tab[k - 1] + lam * (a_tab[k] - a_tab[k - 1])
    s = jnp.maximum(s_tab[k - 1] + lam * (s_tab[k] - s_tab[k - 1]), 0.0)
    below = jnp.where(x_tab[0] > 0, a_tab[0] * x / jnp.where(x_tab[0] > 0, x_tab[0], 1.0), a_tab[0])
    a = jnp.where(x <= x_tab[0], below, jnp.where(x >= x_tab[-1], a_tab[-1] + (x - x_tab[-1]), a))
    return a + 1j * (jnp.sqrt(s) + theta * x)


def _smoothed(x_std, gamma, cells, table, theta):
    """Per point x_std > 0 (standardised, differentiable): w(zeta) at zeta = x_std e^(i theta), with the
    implicit-function derivative (Newton on stop-gradient values, then one differentiable step)."""
    cells_c = tuple(lax.stop_gradient(c) for c in cells)
    zeta = x_std * (jnp.cos(theta) + 1j * jnp.sin(theta))
    w = _root(lax.stop_gradient(zeta), _start(lax.stop_gradient(x_std), table, theta), gamma, cells_c)
    z, dz = _z(w, gamma, cells)
    return w - (z - zeta) / dz, zeta


def _density(w, x_std, cells, theta):
    """Im(zeta m_F(zeta)) / ((pi - theta) x) = -Im(w S(w)) / ((pi - theta) x), since zeta m_F = (1 - gamma
    - zeta / w) / gamma and zeta / w = 1 - gamma + gamma w S(w) at the root: no cancellation against 1 - gamma."""
    s, _ = _sums(w, cells)
    return jnp.maximum(-jnp.imag(w * s) / ((jnp.pi - theta) * x_std), jnp.finfo(float).tiny)


def _cdf_at(w, gamma, cells, theta):
    """Im Phi(zeta) / (pi - theta), Phi = Psi(w) + ((1 - gamma) / gamma) log zeta, where arg zeta - arg w is
    taken as arg(zeta / w) = arg(1 - gamma + gamma w S) (no cancellation near w = 0)."""
    ws = w * _sums(w, cells)[0]
    im_psi = -_im_mean_log(w, cells) - jnp.imag(ws)
    return (im_psi + (1.0 - gamma) / gamma * jnp.angle(1.0 - gamma + gamma * ws)) / (jnp.pi - theta)


def _prepare(gamma, nu, m):
    gamma = jnp.asarray(gamma, dtype=float)
    cells = _law(nu, m)
    return gamma, cells, _table(gamma, cells)


def _root_at(x, gamma, nu, scale, m, theta):
    """The Silverstein root at each x (standardised by scale), and where x > 0 (the laws are 0 elsewhere)."""
    x = jnp.asarray(x, dtype=float)
    gamma, cells, table = _prepare(gamma, nu, m)
    positive = x > 0.0
    # below 1e-150 scale (far under any floor of float64 data) 1/w^2 would overflow in the gradient
    x_std = jnp.maximum(jnp.where(positive, x, scale) / scale, _X_MIN)
    w, _ = _smoothed(x_std, gamma, cells, table, theta)
    return w, x_std, positive, gamma, cells


def _logpdf(x, gamma, nu, scale, m, theta):
    w, x_std, positive, _, cells = _root_at(x, gamma, nu, scale, m, theta)
    value = jnp.log(_density(w, x_std, cells, theta)) - jnp.log(scale)
    return jnp.where(positive, value, -jnp.inf)


def _cdf(x, gamma, nu, scale, m, theta):
    w, _, positive, gamma, cells = _root_at(x, gamma, nu, scale, m, theta)
    return jnp.where(positive, jnp.clip(_cdf_at(w, gamma, cells, theta), 0.0, 1.0), 0.0)


@jax.jit
def _smoothed_logpdf(x, gamma, nu, scale, m):
    return _logpdf(x, gamma, nu, scale, m, _THETA)


@jax.jit
def _smoothed_cdf(x, gamma, nu, scale, m):
    return _cdf(x, gamma, nu, scale, m, _THETA)


def correlated_mp_logpdf(x: ArrayLike, gamma: ArrayLike, nu: ArrayLike, scale: ArrayLike, m: ArrayLike) -> jax.Array:
    """Log-density of the correlated Marchenko-Pastur law (population spectrum t_i ~ i^-nu, scale ``scale``),
    with log x smoothed over 1% (module docstring).

    -inf at x <= 0 only. Never NaN; gradients with respect to nu and scale are finite everywhere.

    Compiled once per length bucket: called eagerly, the points run padded to the next power-of-two length, at
    least 64 (`hteval.densities.compiled`); gamma, nu, scale and m are traced, so new values never recompile.

    Parameters
    ----------
    x : array_like
        Eigenvalues, any shape.
    gamma : array_like
        Aspect ratio M / N in (0, 1], scalar.
    nu : array_like
        Power-law exponent of the population spectrum, scalar in [0, 3].
    scale : array_like
        Entry variance (the mean eigenvalue before smoothing), scalar > 0.
    m : array_like
        Number of population eigenvalues M (scalar, may be traced).

    Returns
    -------
    jax.Array
        log f(x), shape of x.
    """
    return elementwise(_smoothed_logpdf, (x, gamma, nu, scale, m))


def correlated_mp_cdf(x: ArrayLike, gamma: ArrayLike, nu: ArrayLike, scale: ArrayLike, m: ArrayLike) -> jax.Array:
    """CDF of the smoothed correlated Marchenko-Pastur law, in closed form given w(x e^(i theta)).

    0 at and below 0, rising to 1 as x grows; differentiable in x, nu and scale.

    Compiled once per length bucket: called eagerly, the points run padded to the next power-of-two length, at
    least 64 (`hteval.densities.compiled`); gamma, nu, scale and m are traced, so new values never recompile.

    Parameters
    ----------
    x : array_like
        Points, any shape.
    gamma, nu, scale, m : array_like
        As in `correlated_mp_logpdf`.

    Returns
    -------
    jax.Array
        F(x), shape of x.
    """
    return elementwise(_smoothed_cdf, (x, gamma, nu, scale, m))


@jax.jit
def _quantiles(u, gamma, nu, scale, m):
    u = jnp.asarray(u, dtype=float)
    gamma, cells, table = _prepare(gamma, nu, m)

    def cdf_and_density(x):
        w, _ = _smoothed(x, gamma, cells, table, _THETA)
        return _cdf_at(w, gamma, cells, _THETA), _density(w, x, cells, _THETA)

    x_tab = jnp.maximum(table[0], 1e-300)
    f_tab = lax.cummax(cdf_and_density(x_tab)[0])
    k = jnp.clip(jnp.searchsorted(f_tab, u), 1, x_tab.size - 1)
    # below the table the hard edge at gamma = 1 puts F ~ sqrt(x): the bracket then spans decades
    lo = jnp.where(u <= f_tab[0], 1e-300, x_tab[k - 1])
    # beyond the top 1 - F ~ (theta / pi) E[x] / x, and E[x] = 1 before smoothing
    tail = 4.0 * _THETA / (jnp.pi * jnp.maximum(1.0 - u, 1e-300))
    hi = jnp.where(u >= f_tab[-1], jnp.maximum(2.0 * x_tab[-1], tail), x_tab[k])
    x = jnp.where(hi > 4.0 * lo, jnp.sqrt(lo * hi), 0.5 * (lo + hi))

    def step(_, state):
        x, lo, hi = state
        f_x, density = cdf_and_density(x)
        below_u = f_x < u
        lo, hi = jnp.where(below_u, x, lo), jnp.where(below_u, hi, x)
        new = x - (f_x - u) / density
        middle = jnp.where(hi > 4.0 * lo, jnp.sqrt(lo * hi), 0.5 * (lo + hi))
        new = jnp.where((new >= lo) & (new <= hi), new, middle)  # a converged step lands on its bracket end
        return new, lo, hi

    x, _, _ = lax.fori_loop(0, _QUANTILE_STEPS, step, (x, lo, hi))
    return scale * x


def correlated_mp_icdf(u: ArrayLike, gamma: ArrayLike, nu: ArrayLike, scale: ArrayLike, m: ArrayLike) -> jax.Array:
    """Quantiles of the smoothed correlated Marchenko-Pastur law, for drawing spectra (not differentiable).

    The CDF at the table's nodes places u between two of them (or in the tails beyond the support's edges,
    where 1 - F ~ theta E[x] / (pi x)); safeguarded Newton steps on F(x) = u (bisection inside the bracket
    when a step leaves it) refine it.

    Compiled once per length bucket: called eagerly, the points run padded to the next power-of-two length, at
    least 64 (`hteval.densities.compiled`); gamma, nu, scale and m are traced, so new values never recompile.

    Parameters
    ----------
    u : array_like
        Probabilities in (0, 1), any shape.
    gamma, nu, scale, m : array_like
        As in `correlated_mp_logpdf`.

    Returns
    -------
    jax.Array
        x with F(x) = u, shape of u.
    """
    return elementwise(_quantiles, (u, gamma, nu, scale, m))


@jax.jit
def correlated_mp_support(gamma: ArrayLike, nu: ArrayLike, m: ArrayLike) -> tuple[jax.Array, jax.Array]:
    """Edges (lower, upper) of the unsmoothed law's support for scale 1 (multiply by scale otherwise): one
    interval, outside which only the smoothing's tails put mass.

    Parameters
    ----------
    gamma, nu, m : array_like
        As in `correlated_mp_logpdf`.

    Returns
    -------
    tuple of jax.Array
        Lower and upper edge.
    """
    x_tab, _, _ = _table(jnp.asarray(gamma, dtype=float), _law(nu, m))
    return x_tab[0], x_tab[-1]


# ---------------------------------------------------------------------------------------------------------------
# Batches for exact posteriors: many values of nu, each at many points, in one program compiled once per process.
#
# The density for fixed nu is a function of x / scale, so a quadrature over (nu, scale) needs it only on a grid in
# t = log(x / scale) per nu (`hteval.models.correlated_mp` interpolates there): the Silverstein solves scale with
# the number of nu values, not with nu values x scales x eigenvalues. The program's shapes are fixed (BATCH_ROWS
# rows of BATCH_POINTS points, one nu per row), so the grid's passes, the draws and the predictive checks share
# one executable whatever the layer.
# ---------------------------------------------------------------------------------------------------------------

BATCH_ROWS = 8
BATCH_POINTS = 512


def _batch_row(nu, t, gamma, m):
    """psi(t) = log f(e^t) + t (the log-density of log x for scale 1) and the CDF at points t for one nu, and the
    log of the unsmoothed support's edges (the lower one -inf at gamma = 1)."""
    gamma, cells, table = _prepare(gamma, nu, m)
    x = jnp.maximum(jnp.exp(t), _X_MIN)
    w, _ = _smoothed(x, gamma, cells, table, _THETA)
    psi = jnp.log(_density(w, x, cells, _THETA)) + jnp.log(x)
    edges = jnp.stack([table[0][0], table[0][-1]])
    log_edges = jnp.log(jnp.where(edges > 0, edges, 1.0)) + jnp.where(edges > 0, 0.0, -jnp.inf)
    return psi, jnp.clip(_cdf_at(w, gamma, cells, _THETA), 0.0, 1.0), log_edges


@jax.jit
def _batch(nu, t, gamma, m):
    # rows one after another: each row is the per-nu program (its table and edges), not a batched one
    return lax.map(lambda row: _batch_row(row[0], row[1], gamma, m), (nu, t))


def log_density_of_log_batch(gamma: float, nu, t, m) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """psi(t) = log f(e^t | nu, scale 1) + t and the CDF F(e^t), for nu (K,) at points t (K, N): numpy (K, N)
    each; and the log of each nu's unsmoothed support edges (K, 2) (the lower one -inf at gamma = 1).

    Any K and N: each nu's points are cut into rows of BATCH_POINTS (the last padded), the rows into calls of
    BATCH_ROWS. log f(x | nu, scale) = psi(log(x / scale)) - log x.
    """
    nu = np.asarray(nu, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    k_count, n_count = t.shape
    per = -(-n_count // BATCH_POINTS)
    padded = np.pad(t, ((0, 0), (0, per * BATCH_POINTS - n_count)), mode="edge").reshape(-1, BATCH_POINTS)
    row_nu = np.repeat(nu, per)
    total = padded.shape[0]
    calls = -(-total // BATCH_ROWS)
    padded = np.pad(padded, ((0, calls * BATCH_ROWS - total), (0, 0)), mode="edge")
    row_nu = np.pad(row_nu, (0, calls * BATCH_ROWS - total), mode="edge")
    psi, cdf, edges = np.empty_like(padded), np.empty_like(padded), np.empty((padded.shape[0], 2))
    args = (jnp.asarray(float(gamma)), jnp.asarray(float(m)))
    for start in range(0, padded.shape[0], BATCH_ROWS):
        rows = slice(start, start + BATCH_ROWS)
        out = _batch(jnp.asarray(row_nu[rows]), jnp.asarray(padded[rows]), *args)
        psi[rows], cdf[rows], edges[rows] = (np.asarray(v) for v in out)
    shape = (k_count, per * BATCH_POINTS)
    return (psi[:total].reshape(shape)[:, :n_count], cdf[:total].reshape(shape)[:, :n_count],
            edges[:total:per])
