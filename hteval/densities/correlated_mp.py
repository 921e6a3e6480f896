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
left climbs to its root) gives each point a start by linear interpolation in x, lifted by i theta x; points
outside the support start from the real root continued past the edge; near either edge, where z is quadratic in
w (z ~ x_e + z''(a_e) (w - a_e)^2 / 2) and linear pieces are poor, from the root of that quadratic. Complex
Newton on z(w) = zeta (z' does not vanish off the real axis) polishes it: 6 steps and a last one reach the
root to rounding over gamma in (0, 1], nu in [0, 3], m up to 4096 and x from 1e-6 times the lower edge to 1e6
times the upper (where the sums below keep their digits).

CDF. Phi(zeta) = Psi(w(zeta)) + ((1 - gamma) / gamma) log zeta, Psi(w) = -int dH log(t - w)
- ((1 - gamma) / gamma) log w + 1 - w S(w), is a primitive of m_F (on the real axis Im Psi / pi is the limiting
CDF), so along the ray F(x) = Im Phi(x e^(i theta)) / (pi - theta): 0 at x = 0, 1 as x grows.

Gradients. Newton runs on stop-gradient values; its last step, on the differentiable residual, carries the
implicit-function derivative (exact at a converged root), so nothing is differentiated through the
iterations. Edges and table are stop-gradient: they only start Newton.

Tabulated path. From 4096 points on (`_TABULATE`: a table costs about as much as 2000 points solved one by one)
log f and F are read off nodes in t = log(x / scale): psi(t) = log f(e^t) + t and F for scale 1, each with its
first and second derivative in t exact from the root (w' = zeta / z'(w); F' = e^psi), by quintic Hermite
interpolation. The nodes (2216, stop-gradient; every 8th solved from the start table, the rest from an
interpolant of log w through those, `_node_starts`) cluster where psi bends on the smoothing's scale: at both edges
and at the image of each cell endpoint on the limiting curve (the population law's kinks, a pair of bends
about Im w / e_j apart); a bulk grid and geometric runs cover the rest, 40 e-folds below the lower edge (80
below the hard edge at gamma = 1) and 15 above the upper one (beyond, psi is continued linearly, with the
exact slope -1 of the x^-2 tail above, F and 1 - F exponentially). The point-by-point solve holds to the same
reach: above it, and below 1e-150 scale, both paths continue the tails' power laws (`_standardised`). Node
values depend on nu, and points on scale through t, so gradients in both are those of the interpolant. Against
the point-by-point solve,
over gamma in {0.05, 0.25, 0.5, 1}, nu in {0, 0.05, 0.5, 1, 2}, m in {50, 384, 4096, 1e5}, scale in {1e-3, 1}
and points from the law's quantiles and over 1e-6..1e6 times the support: at most 1.1e-7 in log f and 1.6e-10
in F, wherever that solve is itself exact (nu <= 0.5; nu = 1 up to M = 384; nu = 2 at M = 50; below).
Quantiles invert the table's F (Newton on one quintic piece, exponential tails beyond the nodes) at any size.

Accuracy: the density integrates to 1 and the CDF matches its integral to ~1e-9 (tests). The telescoped sums
cancel as nu log M grows (the cell weights grow as 1 / width): at M = 4096 log f is good to ~2e-7 at nu = 1 and
~3e-3 at nu = 2, and at M = 1e5 Newton does not converge for nu >= 2 (both paths then return meaningless,
if finite, values). Cost (2026-12-07, two-core CPU, eager calls): about 6 ms at 1000 points (logpdf, cdf or
quantiles), 13-18 ms at 1e5.

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
_NEWTON_STEPS = 6
# smoothing width in log x (module docstring)
_THETA = 0.01
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


def _series(mask, series, plain):
    """series() where mask, plain elsewhere; series() is skipped when no point needs it (a condition on the whole
    array: under vmap both run)."""
    def chosen():
        return tuple(jnp.where(mask, a, b) for a, b in zip(series(), plain, strict=True))

    return lax.cond(jnp.any(mask), chosen, lambda: plain)


def _angle(b, d):
    """arg(d + i b) for b >= 0, as atan2(b, d) (pi on the negative axis), from atan: XLA's CPU atan2 is not
    vectorised and cost several times the logarithm in `_sums`. Each branch keeps full relative precision (no
    pi/2 - atan of a small angle), and the unused branch's quotient stays finite (no NaN in gradients)."""
    right = d > 0.0
    upper = b > 0.0
    left = 0.5 * jnp.pi - jnp.arctan(d / jnp.where(right | ~upper, 1.0, b))
    return jnp.where(right, jnp.arctan(b / jnp.where(right, d, 1.0)), jnp.where(upper, left, jnp.pi))


def _sums(w, cells, second=False, mean_log=False):
    """S(w), S'(w), then S''(w) if ``second`` and Im int dH log(t - w) if ``mean_log``, for complex w (any
    shape): telescoped over the endpoints in real arithmetic, and by the series far away (S = sum mu_k r^k / w)
    and near 0 (S = -sum iota_k r0^k / t_min).

    Im int dH log(t - w) telescopes to -Im sum c_j (e_j - w) log(e_j - w) (principal logs: t - w stays in the
    lower half plane), from the same logarithms as S; far away it is Im log(-w) - Im sum_k mu_k r^k / k, near 0
    -Im sum_k iota_k-1 r0^k / k."""
    e, c, mu, iota = cells
    a, b = jnp.real(w)[..., None], jnp.imag(w)[..., None]
    d = a - e
    q = d * d + b * b
    cq = c / q
    log_q, angle = jnp.log(q), _angle(b, d)
    out = (0.5 * jnp.sum(c * log_q, axis=-1) + 1j * jnp.sum(c * angle, axis=-1),
           jnp.sum(cq * d, axis=-1) - 1j * jnp.sum(cq * b, axis=-1))
    if second:
        out += (-jnp.sum(cq * (d * d - b * b) / q, axis=-1) + 2j * jnp.sum(cq * d * b / q, axis=-1),)
    if mean_log:
        # Im((e - w) log(e - w)) with log(e - w) = log|w - e| + i (arg(w - e) - pi)
        out += (jnp.sum(c * (d * (angle - jnp.pi) + 0.5 * b * log_q), axis=-1),)
    far, near, w_far, r0 = _regions(w, cells)
    k = jnp.arange(mu.size)

    def far_series():
        r = e[-1] / w_far
        terms = (_horner(mu, r) / w_far, -_horner((k + 1) * mu, r) / w_far**2)
        if second:
            terms += (_horner((k + 1) * (k + 2) * mu, r) / w_far**3,)
        if mean_log:
            series = _horner(jnp.concatenate([jnp.zeros(1), mu[1:] / k[1:]]), r)
            terms += (jnp.imag(jnp.log(-w_far) - series),)
        return terms

    def near_series():
        terms = (-_horner(iota, r0) / e[0], -_horner(k[1:] * iota[1:], r0) / e[0] ** 2)
        if second:
            terms += (-_horner(k[2:] * k[1:-1] * iota[2:], r0) / e[0] ** 3,)
        if mean_log:
            terms += (-jnp.imag(_horner(jnp.concatenate([jnp.zeros(1), iota[:-1] / k[1:]]), r0)),)
        return terms

    return _series(near, near_series, _series(far, far_series, out))


def _z_of_sums(w, s, ds, gamma):
    """z(w) and z'(w) from S(w) and S'(w)."""
    return (1.0 - gamma) * w + gamma * w * w * s, (1.0 - gamma) + gamma * (2.0 * w * s + w * w * ds)


def _z(w, gamma, cells):
    """z(w) and z'(w)."""
    return _z_of_sums(w, *_sums(w, cells), gamma)


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
    # not much smaller: dh/ds below is a difference of O(1) terms over 2 s
    s0 = (1e-4 * (jnp.abs(a) + cells[0][-1])) ** 2

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


def _table(gamma, cells, kinks=False):
    """Stop-gradient table (x, a, s) along the curve from the lower to the upper edge, x ascending; with
    ``kinks``, also (x, s) at a = each cell endpoint (their images, solved in the same pass)."""
    cells = tuple(lax.stop_gradient(c) for c in cells)
    a_0, a_top = _edges(gamma, cells)
    e = cells[0]
    mid = jnp.exp(_chebyshev(jnp.log(e[0]), jnp.log(e[-1]), _NODES_MID))
    a = jnp.concatenate([_chebyshev(a_0, e[0], _NODES_LOW)[:-1], mid, _chebyshev(e[-1], a_top, _NODES_HIGH)[1:]])
    n = a.size
    a_all = jnp.concatenate([a, e]) if kinks else a
    s = _solve_s(a_all, gamma, cells)
    # the edges themselves lie on the real axis
    s = s.at[0].set(0.0).at[n - 1].set(0.0)
    x = jnp.real(_z(a_all + 1j * jnp.sqrt(s), gamma, cells)[0])
    x = x.at[0].set(jnp.real(_z(a_0 + 0j, gamma, cells)[0]))
    # x increases with a in theory; rounding must not unsort the table before searchsorted
    table = lax.cummax(x[:n]), a, s[:n]
    return (table, (x[n:], s[n:])) if kinks else table


def _newton_step(w, zeta, gamma, cells):
    """One Newton step on z(w) = zeta (Im zeta > 0) from w in the upper half plane, and z'(w); a step that leaves
    it is cut back (the root sought is the one with Im w > 0)."""
    z, dz = _z(w, gamma, cells)
    new = w - (z - zeta) / dz
    new = jnp.where(jnp.isfinite(new), new, w)
    return jnp.where(jnp.imag(new) > 0.0, new, jnp.real(new) + 0.5j * jnp.imag(w)), dz


def _root(zeta, w, gamma, cells, steps=_NEWTON_STEPS):
    """``steps`` Newton steps on z(w) = zeta from w (`_newton_step`)."""
    return lax.fori_loop(0, steps, lambda _, w: _newton_step(w, zeta, gamma, cells)[0], w)


def _edge_models(gamma, cells, table):
    """Per edge (lower, upper): a_e, x_e, z''(a_e) / 2 and the radius in w within which z(w) ~ x_e + (z''/2)
    (w - a_e)^2 starts Newton better than the table (half the distance to the population range)."""
    x_tab, a_tab, _ = table
    e = cells[0]
    a_e = jnp.stack([a_tab[0], a_tab[-1]])
    s, ds, d2s = _sums(a_e + 0j, cells, second=True)
    half = 0.5 * gamma * jnp.real(2.0 * s + 4.0 * a_e * ds + a_e * a_e * d2s)
    return a_e, jnp.stack([x_tab[0], x_tab[-1]]), half, 0.5 * jnp.stack([e[0] - a_tab[0], a_tab[-1] - e[-1]])


def _start(x, table, theta, edges):
    """Starting w for z(w) = x e^(i theta): inside the support the table's curve, interpolated in x and lifted;
    below and above it the real root continued from the edge (z' -> 1 - gamma at 0 and -> 1 far above); near
    either edge, where z is quadratic in w and the table's linear pieces are poor, the root of that quadratic."""
    x_tab, a_tab, s_tab = table
    k = jnp.clip(jnp.searchsorted(x_tab, x), 1, x_tab.size - 1)
    x_a, x_b = x_tab[k - 1], x_tab[k]
    width = x_b - x_a
    lam = jnp.clip(jnp.where(width > 0, (x - x_a) / jnp.where(width > 0, width, 1.0), 0.5), 0.0, 1.0)
    a = a_tab[k - 1] + lam * (a_tab[k] - a_tab[k - 1])
    s = jnp.maximum(s_tab[k - 1] + lam * (s_tab[k] - s_tab[k - 1]), 0.0)
    below = jnp.where(x_tab[0] > 0, a_tab[0] * x / jnp.where(x_tab[0] > 0, x_tab[0], 1.0), a_tab[0])
    a = jnp.where(x <= x_tab[0], below, jnp.where(x >= x_tab[-1], a_tab[-1] + (x - x_tab[-1]), a))
    w = a + 1j * (jnp.sqrt(s) + theta * x)
    zeta = x * (jnp.cos(theta) + 1j * jnp.sin(theta))
    for a_e, x_e, half, radius in zip(*edges, strict=True):
        r = jnp.sqrt((zeta - x_e) / half)
        r = jnp.where(jnp.imag(r) >= 0, r, -r)
        w = jnp.where(jnp.abs(r) < radius, a_e + r, w)
    return w


def _smoothed(x_std, gamma, cells, table, edges, theta, second=False, mean_log=False, root=None):
    """Per point x_std > 0 (standardised, differentiable): w(zeta) at zeta = x_std e^(i theta), with the
    implicit-function derivative (Newton on stop-gradient values, its last step on the differentiable residual),
    zeta, z'(w) and the sums of `_sums` at that root. Newton runs from `_start`, unless ``root`` gives the
    stop-gradient root already (then only the last step is taken).

    The sums are those of the last step's start, S and Im int dH log(t - w) carried to its end to first order
    (their derivatives in w are S' and S): the step is below 1e-7 of w there, so what that neglects is below
    1e-14."""
    cells_c = tuple(lax.stop_gradient(c) for c in cells)
    zeta = x_std * (jnp.cos(theta) + 1j * jnp.sin(theta))
    if root is None:
        root = _root(lax.stop_gradient(zeta), _start(lax.stop_gradient(x_std), table, theta, edges), gamma, cells_c)
    w = lax.stop_gradient(root)
    sums = _sums(w, cells, second, mean_log)
    s, ds = sums[:2]
    z, dz = _z_of_sums(w, s, ds, gamma)
    step = -(z - zeta) / dz
    carried = (s + ds * step,) + sums[1:]
    if mean_log:
        carried = carried[:-1] + (sums[-1] + jnp.imag(s * step),)
    return w + step, zeta, dz, carried


def _density(w, x_std, s, theta):
    """Im(zeta m_F(zeta)) / ((pi - theta) x) = -Im(w S(w)) / ((pi - theta) x), since zeta m_F = (1 - gamma
    - zeta / w) / gamma and zeta / w = 1 - gamma + gamma w S(w) at the root: no cancellation against 1 - gamma."""
    return jnp.maximum(-jnp.imag(w * s) / ((jnp.pi - theta) * x_std), jnp.finfo(float).tiny)


def _cdf_at(w, s, im_mean_log, gamma, theta):
    """Im Phi(zeta) / (pi - theta), Phi = Psi(w) + ((1 - gamma) / gamma) log zeta, where arg zeta - arg w is
    taken as arg(zeta / w) = arg(1 - gamma + gamma w S) (no cancellation near w = 0); ``im_mean_log`` is
    Im int dH log(t - w)."""
    ws = w * s
    im_psi = -im_mean_log - jnp.imag(ws)
    return (im_psi + (1.0 - gamma) / gamma * jnp.angle(1.0 - gamma + gamma * ws)) / (jnp.pi - theta)


def _prepare(gamma, nu, m, kinks=False):
    """gamma, the law's cells, the start table and the edge models; with ``kinks``, the table is a pair (the
    table, the cell endpoints' images; `_table`)."""
    gamma = jnp.asarray(gamma, dtype=float)
    cells = _law(nu, m)
    table = _table(gamma, cells, kinks)
    edges = _edge_models(gamma, tuple(lax.stop_gradient(c) for c in cells), table[0] if kinks else table)
    return gamma, cells, table, edges


def _standardised(x, scale, gamma, x_max):
    """x / scale held inside [_X_MIN, x_max], where the laws are evaluated, and the power-law continuations
    beyond: (x_std, the log-density's and the log-CDF's increments from x_std to x, where x > 0).

    Below 1e-150 scale (far under any floor of float64 data) 1/w^2 would overflow in the gradient; far above
    the support Im(w S) is a vanishing part of w S (about theta / x of it) and the sums lose its digits (from
    ~1e12 times the upper edge). Out there the smoothing's kernel alone sets the tails: the density of log x falls
    as E[1/lambda] x at the bottom (f flat, F ~ x) and as E[lambda] / x at the top (f ~ x^-2, to e^-15 relative
    from x_max = e^15 times the upper edge on); at gamma = 1, where E[1/lambda] is infinite, the hard edge's
    x^(-1/2) carries through (f ~ x^(-1/2), F ~ x^(1/2))."""
    positive = x > 0.0
    raw = jnp.where(positive, x, scale) / scale
    x_std = jnp.clip(raw, _X_MIN, x_max)
    excess = jnp.where(jnp.isfinite(raw), jnp.log(raw) - jnp.log(x_std), jnp.inf)
    below, above = jnp.minimum(excess, 0.0), jnp.maximum(excess, 0.0)
    hard = gamma >= 1.0
    log_f = jnp.where(hard, -0.5, 0.0) * below - 2.0 * above
    # F scales by e^(p below) under the range and 1 - F by e^(-above) over it
    return x_std, log_f, (jnp.where(hard, 0.5, 1.0) * below, above), positive


def _root_at(x, gamma, nu, scale, m, theta, mean_log=False):
    """The Silverstein root at each x (standardised by scale), the sums there (`_smoothed`), the continuations
    beyond the evaluated range (`_standardised`), and where x > 0 (the laws are 0 elsewhere)."""
    x = jnp.asarray(x, dtype=float)
    gamma, cells, table, edges = _prepare(gamma, nu, m)
    x_std, log_f, log_cdf, positive = _standardised(x, scale, gamma, table[0][-1] * np.exp(_TOP_REACH))
    w, _, _, sums = _smoothed(x_std, gamma, cells, table, edges, theta, mean_log=mean_log)
    return w, sums, x_std, (log_f, log_cdf), positive, gamma


def _logpdf(x, gamma, nu, scale, m, theta):
    w, (s, _), x_std, (beyond, _), positive, _ = _root_at(x, gamma, nu, scale, m, theta)
    value = jnp.log(_density(w, x_std, s, theta)) - jnp.log(scale) + beyond
    return jnp.where(positive, value, -jnp.inf)


def _cdf(x, gamma, nu, scale, m, theta):
    w, (s, _, im_mean_log), _, (_, beyond), positive, gamma = _root_at(x, gamma, nu, scale, m, theta,
                                                                      mean_log=True)
    value = jnp.clip(_cdf_at(w, s, im_mean_log, gamma, theta), 0.0, 1.0)
    under, over = beyond
    value = jnp.where(over > 0, 1.0 - (1.0 - value) * jnp.exp(-over), value * jnp.exp(under))
    return jnp.where(positive, value, 0.0)


# ---------------------------------------------------------------------------------------------------------------
# Tabulated path (inputs of at least _TABULATE points): psi(t) = log f(e^t) + t and F(e^t) for scale 1 at a fixed
# number of nodes in t = log(x / scale), each with its first and second derivative in t, read off by quintic
# Hermite interpolation.
# ---------------------------------------------------------------------------------------------------------------

#: inputs of at least this many points are read off the node table, shorter ones solved point by point
_TABULATE = 4096
# node clusters t_f + width sinh(u), u uniform: at the two edges (width 0.004) and at the image of each cell
# endpoint (width 0.5 (Im w / e_j + theta): psi bends there), and a bulk grid with geometric runs beyond it; the
# counts hold the interpolation to ~1e-7 in psi at the sharpest kinks (measured; 32 a kink gave 4.5e-7)
_EDGE_NODES, _EDGE_WIDTH, _EDGE_REACH = 96, 0.004, 3.0
_KINK_NODES, _KINK_WIDTH, _KINK_REACH = 40, 0.5, 0.5
_BULK_NODES, _TAIL_NODES = 192, 96
# below the lower edge the table reaches 40 e-folds (F falls as e^t there, as e^(t/2) below the hard edge at
# gamma = 1, whose table reaches 80), above the upper edge 15 e-folds, where Im(w S) is ~theta e^-15 of |w S|
# and still holds 8 digits; beyond either end psi is continued linearly (above with the tail's slope -1), F and
# 1 - F exponentially
_TAIL_REACH, _TOP_REACH = 40.0, 15.0
# node roots: every _COARSE-th node from `_start` (6 steps), the rest from an interpolant through those, within
# ~1e-3 of the root (at most 7.1e-4 over gamma in {0.05, 0.25, 0.5, 1}, nu in {0, 0.05, 0.5, 1, 2}:
# benchmarks/correlated_roots.py), so that _REFINE_STEPS reach rounding
_COARSE, _REFINE_STEPS = 8, 2
# Newton on one quintic piece from its linear interpolant
_INVERSION_STEPS = 6


def _hermite_basis(tau):
    """The quintic Hermite basis on [0, 1]: value, first and second derivative at 0, then at 1."""
    t2 = tau * tau
    t3 = t2 * tau
    t4, t5 = t3 * tau, t3 * t2
    return (1.0 - 10.0 * t3 + 15.0 * t4 - 6.0 * t5, tau - 6.0 * t3 + 8.0 * t4 - 3.0 * t5,
            0.5 * (t2 - 3.0 * t3 + 3.0 * t4 - t5), 10.0 * t3 - 15.0 * t4 + 6.0 * t5,
            -4.0 * t3 + 7.0 * t4 - 3.0 * t5, 0.5 * (t3 - 2.0 * t4 + t5))


def _hermite_slopes(tau):
    """The derivatives in tau of `_hermite_basis`."""
    t2 = tau * tau
    t3, t4 = t2 * tau, t2 * t2
    return (-30.0 * t2 + 60.0 * t3 - 30.0 * t4, 1.0 - 18.0 * t2 + 32.0 * t3 - 15.0 * t4,
            0.5 * (2.0 * tau - 9.0 * t2 + 12.0 * t3 - 5.0 * t4), 30.0 * t2 - 60.0 * t3 + 30.0 * t4,
            -12.0 * t2 + 28.0 * t3 - 15.0 * t4, 0.5 * (3.0 * t2 - 8.0 * t3 + 5.0 * t4))


def _cluster(center, width, reach, count):
    u = jnp.linspace(-1.0, 1.0, count) * jnp.arcsinh(reach / width)
    return center + width * jnp.sinh(u)


def _node_positions(cells, table, kinks):
    """Sorted node positions in t (stop-gradient), covering the tails' reach; ``kinks`` are the images (x, s)
    of the cell endpoints on the limiting curve, where psi has its kinks (`_table`)."""
    x_tab = table[0]
    e = cells[0]
    x_kink, s = kinks
    t_kink = jnp.log(jnp.maximum(x_kink, _X_MIN))
    t_hi = jnp.log(x_tab[-1])
    # a kink is a pair of bends about Im w / e_j apart in t, each theta wide
    width = _KINK_WIDTH * (jnp.sqrt(s) / e + _THETA)
    hard = x_tab[0] <= 0.0
    t_lo = jnp.where(hard, t_kink[0], jnp.log(jnp.where(hard, 1.0, x_tab[0])))
    bulk_lo, bulk_hi = t_lo - 1.0, t_hi + 1.0
    lowest = t_lo - jnp.where(hard, 2.0, 1.0) * _TAIL_REACH
    highest = t_hi + _TOP_REACH
    # geometric runs from 0.1 past the bulk grid: the tails are smooth on the scale of their distance from it
    run = jnp.linspace(0.0, 1.0, _TAIL_NODES)
    nodes = jnp.concatenate([
        jnp.linspace(bulk_lo, bulk_hi, _BULK_NODES),
        bulk_lo - 0.1 * jnp.maximum(10.0 * (bulk_lo - lowest), 1.0) ** run,
        bulk_hi + 0.1 * jnp.maximum(10.0 * (highest - bulk_hi), 1.0) ** run,
        _cluster(t_lo, _EDGE_WIDTH, _EDGE_REACH, _EDGE_NODES), _cluster(t_hi, _EDGE_WIDTH, _EDGE_REACH, _EDGE_NODES),
        jax.vmap(_cluster, (0, 0, None, None))(t_kink, width, _KINK_REACH, _KINK_NODES).ravel()])
    return lax.stop_gradient(jnp.sort(jnp.clip(nodes, lowest, highest)))


def _node_starts(t, gamma, cells, table, edges):
    """Newton starts at sorted nodes t (stop-gradient): every _COARSE-th node (and the last) solved from
    `_start`, the others started from the cubic Hermite interpolant through them of log w in t, whose slope
    d log w / dt = zeta / (w z'(w)) comes with each root. Log w, not w: in the tails w is a power of x, and the
    geometric runs' wide steps are exact for it."""
    n = t.size
    coarse = np.unique(np.r_[np.arange(0, n, _COARSE), n - 1])
    t_c = t[coarse]
    zeta_c = jnp.exp(t_c + 1j * _THETA)
    w, dz = _newton_step(_root(zeta_c, _start(jnp.exp(t_c), table, _THETA, edges), gamma, cells), zeta_c, gamma,
                         cells)
    log_w, slope = jnp.log(w), zeta_c / (dz * w)
    k = np.minimum(np.arange(n) // _COARSE, coarse.size - 2)
    h = t_c[k + 1] - t_c[k]
    h = jnp.where(h > 0, h, 1.0)
    tau = jnp.clip((t - t_c[k]) / h, 0.0, 1.0)
    tau2 = tau * tau
    start = jnp.exp((1.0 - 3.0 * tau2 + 2.0 * tau2 * tau) * log_w[k] + (3.0 * tau2 - 2.0 * tau2 * tau) * log_w[k + 1]
                    + h * tau * (1.0 - tau) * ((1.0 - tau) * slope[k] - tau * slope[k + 1]))
    ok = jnp.isfinite(start) & (jnp.imag(start) > 0.0)
    return jnp.where(ok, start, _start(jnp.exp(t), table, _THETA, edges))


def _node_roots(t, gamma, cells, table, edges):
    """The root w at nodes t (stop-gradient), to rounding: _REFINE_STEPS Newton steps from `_node_starts`."""
    cells = tuple(lax.stop_gradient(c) for c in cells)
    t = lax.stop_gradient(t)
    zeta = jnp.exp(t + 1j * _THETA)
    return _root(zeta, _node_starts(t, gamma, cells, table, edges), gamma, cells, _REFINE_STEPS), zeta


def _slopes(w, s, ds, zeta, gamma):
    """At the root w of a node zeta = e^(t + i theta), with g = w S(w): Im g (below 0; floored where it underflows,
    hundreds of e-folds into the tails, like the direct path's density), z'(w), w' = dw/dt = zeta / z'(w),
    g_w = S + w S' and psi' = Im(g_w w') / Im g (NaN where rounding has broken the solve)."""
    im_g = jnp.minimum(jnp.imag(w * s), -jnp.finfo(float).tiny)
    dz = _z_of_sums(w, s, ds, gamma)[1]
    dw = zeta / dz
    g_w = s + w * ds
    return im_g, dz, dw, g_w, jnp.imag(g_w * dw) / im_g


def _finite(v):
    """v, 0 where it is not finite: a node where rounding has broken the solve (module docstring, accuracy) must
    not spread NaN through the interpolant."""
    return jnp.where(jnp.isfinite(v), v, 0.0)


def _cdf_nodes(w, s, im_mean_log, im_g, d1, gamma):
    """F, F' = f = e^psi and F'' = F' psi' at nodes, from `_slopes`."""
    f = -im_g / (jnp.pi - _THETA)
    return jnp.clip(_cdf_at(w, s, im_mean_log, gamma, _THETA), 0.0, 1.0), f, f * _finite(d1)


def _node_cdf(t, gamma, cells, table, edges):
    """F, F' and F'' in t at nodes t, not differentiable (for quantiles): one evaluation of the sums at each
    converged root, where `_node_values` takes two for the implicit-function derivative."""
    w, zeta = _node_roots(t, gamma, cells, table, edges)
    s, ds, im_mean_log = _sums(w, tuple(lax.stop_gradient(c) for c in cells), mean_log=True)
    im_g, _, _, _, d1 = _slopes(w, s, ds, zeta, gamma)
    return _cdf_nodes(w, s, im_mean_log, im_g, d1, gamma)


def _node_values(t, gamma, cells, table, edges, with_cdf):
    """psi, psi', psi'' at nodes t (differentiable through cells), and F, F', F'' if ``with_cdf``.

    With g = w S(w) and w' = dw/dt = zeta / z'(w) (zeta = e^(t + i theta)): psi = log(-Im g) - log(pi - theta),
    psi' = Im g' / Im g, psi'' = Im g'' / Im g - psi'^2, g' = (S + w S') w',
    g'' = (2 S' + w S'') w'^2 + (S + w S') w'', w'' = w' (1 - z''(w) w' / z'(w)); F' = e^psi, F'' = F' psi'."""
    root = _node_roots(t, gamma, cells, table, edges)[0]
    w, zeta, _, _ = _smoothed(jnp.exp(t), gamma, cells, table, edges, _THETA, root=root)
    # the sums again at the differentiable root: S' and S'' carry dw/dnu into psi' and psi''
    sums = _sums(w, cells, True, with_cdf)
    s, ds, d2s = sums[:3]
    im_g, dz, dw, g_w, d1 = _slopes(w, s, ds, zeta, gamma)
    d2z = gamma * (2.0 * s + 4.0 * w * ds + w * w * d2s)
    d2w = dw * (1.0 - d2z * dw / dz)
    g_tt = (2.0 * ds + w * d2s) * dw * dw + g_w * d2w
    psi = jnp.log(-im_g) - jnp.log(jnp.pi - _THETA)
    d2 = jnp.imag(g_tt) / im_g - d1 * d1
    out = (psi, _finite(d1), _finite(d2))
    if with_cdf:
        out += _cdf_nodes(w, s, sums[3], im_g, d1, gamma)
    return out


def _interpolate(nodes, values, t):
    """Quintic Hermite through (value, first, second derivative) at the nodes, at t (clamped to the nodes)."""
    k = jnp.clip(jnp.searchsorted(nodes, t, side="right"), 1, nodes.size - 1)
    t0, t1 = nodes[k - 1], nodes[k]
    h = t1 - t0
    h = jnp.where(h > 0, h, 1.0)
    basis = _hermite_basis(jnp.clip((t - t0) / h, 0.0, 1.0))
    y, d1, d2 = values
    data = (y[k - 1], h * d1[k - 1], h * h * d2[k - 1], y[k], h * d1[k], h * h * d2[k])
    return sum(b * v for b, v in zip(basis, data, strict=True))


def _tabulated(x, gamma, nu, scale, m, with_cdf):
    """(log f, F or None) at x by the node table; x <= 0 as the direct path."""
    x = jnp.asarray(x, dtype=float)
    gamma, cells, (table, kinks), edges = _prepare(gamma, nu, m, kinks=True)
    # below 1e-150 scale as the direct path (its continuation); above, the table's own tail continues
    x_std, low_f, (low_cdf, _), positive = _standardised(x, scale, gamma, jnp.inf)
    t = jnp.log(x_std)
    nodes = _node_positions(lax.stop_gradient(cells), table, kinks)
    values = _node_values(nodes, gamma, cells, table, edges, with_cdf)
    below, above = t < nodes[0], t > nodes[-1]
    under, over = jnp.where(below, t - nodes[0], 0.0), jnp.where(above, t - nodes[-1], 0.0)
    psi = jnp.where(below, values[0][0] + values[1][0] * under,
                    jnp.where(above, values[0][-1] - over, _interpolate(nodes, values[:3], t)))
    logpdf = jnp.where(positive, psi - t - jnp.log(scale) + low_f, -jnp.inf)
    if not with_cdf:
        return logpdf, None
    tiny = jnp.finfo(float).tiny
    lower, upper = jnp.maximum(values[3][0], tiny), jnp.maximum(1.0 - values[3][-1], tiny)
    cdf = jnp.where(below, lower * jnp.exp(values[4][0] / lower * under),
                    jnp.where(above, 1.0 - upper * jnp.exp(-values[4][-1] / upper * over),
                              _interpolate(nodes, values[3:], t)))
    cdf = jnp.where(positive, jnp.clip(cdf, 0.0, 1.0) * jnp.exp(low_cdf), 0.0)
    return logpdf, cdf


@jax.jit
def _smoothed_logpdf(x, gamma, nu, scale, m):
    if jnp.size(x) >= _TABULATE:
        return _tabulated(x, gamma, nu, scale, m, with_cdf=False)[0]
    return _logpdf(x, gamma, nu, scale, m, _THETA)


@jax.jit
def _smoothed_cdf(x, gamma, nu, scale, m):
    if jnp.size(x) >= _TABULATE:
        return _tabulated(x, gamma, nu, scale, m, with_cdf=True)[1]
    return _cdf(x, gamma, nu, scale, m, _THETA)


def correlated_mp_logpdf(x: ArrayLike, gamma: ArrayLike, nu: ArrayLike, scale: ArrayLike, m: ArrayLike) -> jax.Array:
    """Log-density of the correlated Marchenko-Pastur law (population spectrum t_i ~ i^-nu, scale ``scale``),
    with log x smoothed over 1% (module docstring).

    -inf at x <= 0 only. Never NaN; gradients with respect to nu and scale are finite everywhere. From 4096
    points on read off a node table (module docstring, tabulated path), to ~1e-7 in log f.

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


def _invert(nodes, values, u):
    """t with the quintic Hermite F(t) = u inside the nodes (bisection-safeguarded Newton on the piece holding u,
    F nondecreasing there), and beyond them the exponential tails F ~ F_0 e^(a (t - t_0)) and
    1 - F ~ (1 - F_n) e^(-b (t - t_n)) matched to F' at the end nodes."""
    f, d1, d2 = values
    f = lax.cummax(f)
    k = jnp.clip(jnp.searchsorted(f, u, side="right"), 1, nodes.size - 1)
    t0, h = nodes[k - 1], nodes[k] - nodes[k - 1]
    data = (f[k - 1], h * d1[k - 1], h * h * d2[k - 1], f[k], h * d1[k], h * h * d2[k])
    span = f[k] - f[k - 1]
    tau = jnp.clip(jnp.where(span > 0, (u - f[k - 1]) / jnp.where(span > 0, span, 1.0), 0.5), 0.0, 1.0)

    lo, hi = jnp.zeros_like(tau), jnp.ones_like(tau)
    # unrolled: XLA fuses the steps into one pass over the points, where a loop makes a pass of each
    for _ in range(_INVERSION_STEPS):
        value = sum(b * v for b, v in zip(_hermite_basis(tau), data, strict=True))
        slope = sum(b * v for b, v in zip(_hermite_slopes(tau), data, strict=True))
        below = value < u
        lo, hi = jnp.where(below, tau, lo), jnp.where(below, hi, tau)
        new = tau - (value - u) / jnp.where(slope > 0, slope, 1.0)
        # a converged step lands on the bracket's end it just set: keep it
        tau = jnp.where((new >= lo) & (new <= hi) & (slope > 0), new, 0.5 * (lo + hi))
    t = t0 + tau * h
    tiny = jnp.finfo(float).tiny
    low = nodes[0] + jnp.log(jnp.maximum(u, tiny) / f[0]) * f[0] / jnp.maximum(d1[0], tiny)
    upper = jnp.maximum(1.0 - f[-1], tiny)
    high = nodes[-1] - jnp.log(jnp.maximum(1.0 - u, tiny) / upper) * upper / jnp.maximum(d1[-1], tiny)
    return jnp.where(u < f[0], low, jnp.where(u > f[-1], high, t))


@jax.jit
def _quantiles(u, gamma, nu, scale, m):
    u = jnp.asarray(u, dtype=float)
    gamma, cells, (table, kinks), edges = _prepare(gamma, nu, m, kinks=True)
    cells = tuple(lax.stop_gradient(c) for c in cells)
    # the nodes span the tails' reach, wherever u lies
    nodes = _node_positions(cells, table, kinks)
    values = _node_cdf(nodes, gamma, cells, table, edges)
    return scale * jnp.exp(_invert(nodes, values, u))


def correlated_mp_icdf(u: ArrayLike, gamma: ArrayLike, nu: ArrayLike, scale: ArrayLike, m: ArrayLike) -> jax.Array:
    """Quantiles of the smoothed correlated Marchenko-Pastur law, for drawing spectra (not differentiable).

    Inverts the tabulated CDF (module docstring, tabulated path): u is placed between two nodes, and
    safeguarded Newton steps on that piece's quintic (bisection when a step leaves its bracket) solve F = u;
    beyond the nodes the tails are exponential in log x, matched to F and F' at the end nodes. F(x) matches u
    to ~1e-9.

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
    gamma, cells, table, edges = _prepare(gamma, nu, m)
    x = jnp.maximum(jnp.exp(t), _X_MIN)
    w, _, _, (s, _, im_mean_log) = _smoothed(x, gamma, cells, table, edges, _THETA, mean_log=True)
    psi = jnp.log(_density(w, x, s, _THETA)) + jnp.log(x)
    edges = jnp.stack([table[0][0], table[0][-1]])
    log_edges = jnp.log(jnp.where(edges > 0, edges, 1.0)) + jnp.where(edges > 0, 0.0, -jnp.inf)
    return psi, jnp.clip(_cdf_at(w, s, im_mean_log, gamma, _THETA), 0.0, 1.0), log_edges


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
