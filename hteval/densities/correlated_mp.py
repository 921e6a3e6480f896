"""The correlated Marchenko-Pastur law (SPEC section 3): population covariance with a power-law spectrum, in JAX.

Eigenvalues x of W^T W / N, W = X Sigma^(1/2), X of shape N x M with iid N(0, scale) entries, gamma = M / N in
(0, 1]; Sigma has eigenvalues t_i proportional to i^(-nu), normalised to mean 1. nu = 0 is Marchenko-Pastur.

Population law. H is represented by K = 96 fixed atoms, whatever M (M may be traced): indices 1..32 one by one,
the rest (i = 32..M) by 64 Gauss-Legendre nodes in log u over [32, M + 1/2] (Euler-Maclaurin: sum = integral
+ half end values + f'/12 terms; the lower end's half value and f' correction, by a second-order backward
difference, fold into the weights 23/24, 7/6, 3/8 of atoms 30, 31, 32, i.e. Gregory's end weights, all
positive). Moments sum p t^k (k <= 3) match the exact discrete sums to ~1e-7 relative (M = 384, nu <= 1.5).
For M <= 32 only atoms 1..M carry weight; the idle ones sit on atom M with weight 0 (no spurious poles).

Silverstein equation through w = -1/mu (mu the Stieltjes transform of the N x N companion matrix): for scale 1

    z(w) = (1 - gamma) w + gamma w^2 sum_k p_k / (w - t_k),      f(x) = Im w / (pi gamma |w|^2),

where w(x) is the root of z(w) = x in the upper half plane. With w = a + i b and s = b^2 the two real equations

    G1 = (1 - gamma) a + gamma sum p [a (a^2 + s) - t (a^2 - s)] / q - x = 0,
    G2 = Im z / b = (1 - gamma) + gamma sum p (a^2 - 2 a t + s) / q = 0,      q = (a - t)^2 + s,

have a non-singular Jacobian even at the support edges (there s changes sign linearly in x), so Newton in
(a, s) converges quadratically right up to the square-root edges; the forms above keep relative accuracy near
w = 0 (the hard edge x = 0 at gamma = 1). On the real axis (s = 0) G2 = 1 - g(a), g(a) = gamma sum p t^2 /
(a - t)^2: support edges are the real a with g(a) = 1 (critical points of z). g is convex between consecutive
atoms and blows up at them, so each gap between atoms j and j + 1 holds at most one gap [a_L, a_R] of the
support, found by bisection (min of g, then both crossings); the outer edges lie in [0, t_1] and
(t_K, t_K (1 + sqrt(gamma))]. a = Re w(x) increases with x, so a table of nodes (Chebyshev-Lobatto in a on every
piece between atoms and edges; s from the 1D equation G2 = 0, which is concave in s after inversion) gives each
data point a starting guess by linear interpolation in x; a fixed number of Newton steps then polishes it.

CDF. d/dx of Phi(mu) = log mu - gamma sum p (log(1 + t mu) + 1/(1 + t mu)) is mu, hence in w:

    F(x) = (1/pi) sum p atan2(b, t - a) - (1 - gamma)/(pi gamma) atan2(b, a) + (b/pi) sum p t / q,

continuous over the whole real line (b = 0 outside the support): 0 below the support, 1 above it, and in the
gap after atom j the population mass p_1 + ... + p_j.

Gradients. Newton runs on stop-gradient values; one more Newton step on the differentiable residual then
carries the implicit-function derivative -J^-1 dG/dtheta (exact at a converged root), so nothing is
differentiated through the iterations. Edges and table are stop-gradient: they only classify points and
start Newton.

Accuracy and limits. At nu = 0 the log-density matches Marchenko-Pastur to ~1e-12 and the CDF to ~1e-15; Newton
converges to ~1e-9 in log f except within ~1e-6 (relative) of an edge, where the edge's own rounding dominates.
The law is the limit for the 96-atom H, not for the exact M-atom one: the quadrature nodes are atoms too, and
where gamma is small and nu large (roughly gamma < 0.25 with nu > 1.5, or gamma < 0.1 with nu > 1) the law shows
islands around them that the exact discrete law does not have, with spurious gaps (log f = -inf) in the bulk
of small eigenvalues; for M = 500, nu = 3, gamma = 0.25 about 1 % of finite-size eigenvalues fall into one
(nu = 2: none), at gamma = 0.1 about 9 % (nu = 2: 2 %). The top eigenvalues, kept atom by atom, are exact.
Finite-size eigenvalues beyond the edges of the limiting support (a few per spectrum) get -inf as with MP.

Cost: edges and table take ~1.5 ms per call (bisections on K - 1 intervals, 8 steps on 2K x 6 table nodes,
each over K atoms), each point ~4 Newton steps over K atoms; jitted value and gradient in (nu, scale) take
~2-3 ms for 384 points and ~12-14 ms for 4096 on one CPU core.

Float64 needs ``jax_enable_x64``; as a library this module does not switch it on.
"""

import logging

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

logger = logging.getLogger(__name__)

__all__ = ["correlated_mp_cdf", "correlated_mp_logpdf", "correlated_mp_support", "population_atoms"]

# atoms 1.._K0 one by one; beyond that the power law is smooth enough for a low-order quadrature
_K0 = 32
_NQ = 64
_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(_NQ)
# Gregory end weights of atoms K0-2, K0-1, K0 (the integral part starts at u = K0)
_GREGORY = np.array([23.0 / 24.0, 7.0 / 6.0, 3.0 / 8.0])
# bisection halves a bracket; 40 steps leave a relative 1e-12 in an edge a, hence ~1e-24 in the edge x, where
# z'(a) = 0
_BISECTION_STEPS = 40
# Chebyshev-Lobatto nodes per piece of the table; Newton steps per data point from the interpolated guess
_NODES_PER_PIECE = 6
_TABLE_STEPS = 8
_NEWTON_STEPS = 3
# intervals between atoms narrower than this (relative) cannot hold a gap: g >= 4 c / width^2 there
_MIN_WIDTH = 1e-9


def population_atoms(nu: ArrayLike, m: ArrayLike) -> tuple[jax.Array, jax.Array]:
    """Fixed-size atoms (t, p) of the population law of t_i = i^(-nu), i = 1..M, normalised to mean 1.

    Parameters
    ----------
    nu : array_like
        Power-law exponent (scalar, >= 0; may be traced).
    m : array_like
        Number of population eigenvalues M >= 1 (scalar integer value; may be traced).

    Returns
    -------
    tuple of jax.Array
        t (ascending) and p (weights summing to 1), both of length 96, with sum p t = 1. Atoms beyond M
        (M < 32) have p = 0 and sit on atom M.
    """
    nu = jnp.asarray(nu, dtype=float)
    m = jnp.asarray(m, dtype=float)
    i = jnp.arange(1, _K0 + 1, dtype=float)
    tail = m > _K0
    w_single = jnp.where(i <= m, 1.0, 0.0)
    w_single = jnp.where(tail, w_single.at[-3:].set(_GREGORY), w_single)
    # Gauss-Legendre in v = log u on [log K0, log(M + 1/2)]; the guard keeps the logs finite for small M
    length = jnp.log(jnp.maximum(m + 0.5, _K0 + 1.0) / _K0)
    u = _K0 * jnp.exp(0.5 * length * (1.0 + jnp.asarray(_GL_NODES)))
    w_tail = jnp.where(tail, 0.5 * length * jnp.asarray(_GL_WEIGHTS) * u, 0.0)
    index = jnp.concatenate([jnp.minimum(i, m), jnp.where(tail, u, jnp.minimum(_K0, m))])
    weight = jnp.concatenate([w_single, w_tail])
    t = jnp.exp(-nu * jnp.log(index))
    p = weight / jnp.sum(weight)
    t = t / jnp.sum(p * t)
    # indices ascend, so t descends for nu > 0; ascending order is what the edge search wants
    return t[::-1], p[::-1]


def _over_atoms(t, p, body, init):
    """Fold ``body(t_k, p_k, acc)`` over the atoms: a loop of vector operations over the points, which XLA's CPU
    backend runs several times faster than reductions over a trailing atom axis."""
    return lax.fori_loop(0, t.shape[0], lambda k, acc: body(t[k], p[k], acc), init, unroll=8)


def _g(a, gamma, t, p):
    """g(a) = gamma sum p t^2 / (a - t)^2 on the real axis."""
    return _over_atoms(t, gamma * p * t**2, lambda tk, ck, acc: acc + ck / (a - tk) ** 2, jnp.zeros_like(a))


def _g_rising(a, gamma, t, p):
    """g'(a) > 0, i.e. a lies past the minimum of g between two atoms (g' = -2 sum c / (a - t)^3)."""
    return _over_atoms(t, gamma * p * t**2, lambda tk, ck, acc: acc + ck / (a - tk) ** 3, jnp.zeros_like(a)) < 0.0


def _one_minus_g(a, gamma, t, p):
    """1 - g(a) in the cancellation-free form (G2 at s = 0): exact sign near a = 0 at gamma = 1."""
    total = _over_atoms(t, p, lambda tk, pk, acc: acc + pk * a * (a - 2.0 * tk) / (a - tk) ** 2, jnp.zeros_like(a))
    return (1.0 - gamma) + gamma * total


def _bisect(pred, lo, hi):
    """Shrink [lo, hi] towards the switch of ``pred`` (True on the lo side); returns the final (lo, hi)."""

    def step(_, bracket):
        lo, hi = bracket
        mid = 0.5 * (lo + hi)
        left = pred(mid)
        return jnp.where(left, mid, lo), jnp.where(left, hi, mid)

    return lax.fori_loop(0, _BISECTION_STEPS, step, (lo, hi))


def _edges(gamma, t, p):
    """Support edges in a: a_0, a_top, and per interval between atoms (j, j+1) a gap flag and [a_L, a_R].

    Each edge is the end of its final bracket that lies outside the support (g <= 1), where the table's s is
    exactly 0 and its x = z(a) is off by only O(error^2) since z'(a) = 0 there. For intervals without a gap
    a_L = a_R = the minimiser of g (or the atom, for a too narrow interval), so they still split the table.
    """
    lo, hi = t[:-1], t[1:]
    wide = hi - lo > _MIN_WIDTH * hi
    # stand-in bracket left of every atom (t > 0) for narrow intervals, where a midpoint could hit an atom
    lo_s, hi_s = jnp.where(wide, lo, -1.0), jnp.where(wide, hi, -0.5)
    a_min = 0.5 * sum(_bisect(lambda a: ~_g_rising(a, gamma, t, p), lo_s, hi_s))
    gap = wide & (_g(a_min, gamma, t, p) < 1.0)
    a_l = _bisect(lambda a: _g(a, gamma, t, p) > 1.0, lo_s, a_min)[1]
    a_r = _bisect(lambda a: _g(a, gamma, t, p) <= 1.0, a_min, hi_s)[0]
    split = jnp.where(wide, a_min, lo)
    a_l = jnp.where(gap, a_l, split)
    a_r = jnp.where(gap, a_r, split)
    # outer edges: g rises from gamma (a = 0) to inf (a = t_1) and falls from inf (t_K) below 1 by t_K (1 + sqrt g)
    a_0 = _bisect(lambda a: _one_minus_g(a, gamma, t, p) >= 0.0, jnp.zeros(()), t[0])[0]
    a_top = _bisect(lambda a: _g(a, gamma, t, p) > 1.0, t[-1], t[-1] * (1.0 + jnp.sqrt(gamma)) * (1 + 1e-12))[1]
    return a_0, a_top, a_l, a_r


def _solve_s(a, gamma, t, p):
    """s >= 0 with G2(a, s) = 0 at table nodes a (inside the support or on an edge).

    h(s) = gamma sum p t^2 / q falls from g(a) >= 1; 1/h is concave and increasing in s, so Newton on 1/h - 1
    from a point left of the root climbs monotonically to it. s_0 = max(0, max_k (c_k - d_k^2)) is such a point
    (the nearest atom alone gives h >= 1 there), and it keeps every q > 0, atoms included. The table only
    starts Newton per data point, so a few steps suffice (8 reach ~1e-15 in practice).
    """
    c = gamma * p * t**2
    s0 = _over_atoms(t, c, lambda tk, ck, acc: jnp.maximum(acc, ck - (a - tk) ** 2), jnp.zeros_like(a))

    def step(_, s):
        def body(tk, ck, acc):
            u = 1.0 / ((a - tk) ** 2 + s)
            return acc[0] + ck * u, acc[1] + ck * u**2

        h, dh = _over_atoms(t, c, body, (jnp.zeros_like(a), jnp.zeros_like(a)))
        # psi = 1/h - 1, psi' = dh / h^2; on the gap side of an edge the step goes below 0 and is clipped
        return jnp.maximum(s - (1.0 / h - 1.0) * h**2 / dh, 0.0)

    return lax.fori_loop(0, _TABLE_STEPS, step, s0)


def _sums(a, s, gamma, t, p):
    """The four atom sums of one Newton step: S0 = sum c/q, S1 = sum c t/q, T2 = sum c t^2/q^2,
    D2 = sum c t^2 (a - t)/q^2, with c = gamma p and q = (a - t)^2 + s."""

    def body(tk, ck, acc):
        d = a - tk
        u = 1.0 / (d**2 + s)
        v = ck * u
        w = v * u * tk**2
        return acc[0] + v, acc[1] + v * tk, acc[2] + w, acc[3] + w * d

    zero = jnp.zeros_like(a)
    return _over_atoms(t, gamma * p, body, (zero, zero, zero, zero))


def _z(a, s, gamma, t, p):
    """Re z(a + i sqrt(s)) = (1 - gamma) a + a (a^2 + s) S0 - (a^2 - s) S1."""
    s0, s1, *_ = _sums(a, s, gamma, t, p)
    return (1.0 - gamma) * a + a * (a**2 + s) * s0 - (a**2 - s) * s1


def _newton_step(a, s, x, gamma, t, p):
    """One Newton step (da, ds) on (G1, G2) for points (a, s) with s > 0.

    G1 = (1 - gamma) a + a (a^2 + s) S0 - (a^2 - s) S1 - x,  G2 = (1 - gamma) + (a^2 + s) S0 - 2 a S1.
    dG2/da = 2 D2 and dG2/ds = T2 directly; z is analytic in w, so Cauchy-Riemann (Re z_a = Im z_b,
    Re z_b = -Im z_a with Im z = b G2, d/db = 2 b d/ds) give the G1 row for free: G2 + 2 s T2 and -D2.
    """
    s0, s1, t2, d2 = _sums(a, s, gamma, t, p)
    a2 = a**2
    g1 = (1.0 - gamma) * a + a * (a2 + s) * s0 - (a2 - s) * s1 - x
    g2 = (1.0 - gamma) + (a2 + s) * s0 - 2.0 * a * s1
    j11, j12, j21, j22 = g2 + 2.0 * s * t2, -d2, 2.0 * d2, t2
    det = j11 * j22 - j12 * j21
    return (j22 * g1 - j12 * g2) / det, (j11 * g2 - j21 * g1) / det


def _structure(gamma, t, p):
    """Stop-gradient table (x, a, s) along the curve, and the sorted edge list of `_classify`.

    Pieces in the order of a: [a_0, t_1], then per interval [t_j, a_L], [a_R, t_j+1], then [t_K, a_top]; their
    Chebyshev-Lobatto nodes crowd towards the edges and atoms.
    """
    t, p = lax.stop_gradient(t), lax.stop_gradient(p)
    a_0, a_top, a_l, a_r = _edges(gamma, t, p)
    left = jnp.concatenate([a_0[None], jnp.stack([t[:-1], a_r], axis=1).ravel(), t[-1:]])
    right = jnp.concatenate([t[:1], jnp.stack([a_l, t[1:]], axis=1).ravel(), a_top[None]])
    frac = 0.5 * (1.0 - np.cos(np.pi * np.arange(_NODES_PER_PIECE) / (_NODES_PER_PIECE - 1)))
    a = (left[:, None] + (right - left)[:, None] * frac).ravel()
    s = _solve_s(a, gamma, t, p)
    # x increases with a in theory; rounding must not unsort the table before searchsorted
    x = lax.cummax(_z(a, s, gamma, t, p))
    ends = x.reshape(-1, _NODES_PER_PIECE)
    # x_0, then per interval the x of a_L and of a_R (equal, and inside, if there is no gap), then x_top
    edges = jnp.concatenate([ends[:1, 0], jnp.stack([ends[1:-1:2, -1], ends[2::2, 0]], axis=1).ravel(), ends[-1:, -1]])
    return edges, (x, a, s)


def _classify(x_std, edges):
    """Open support: edges[2i] < x < edges[2i+1] for some i, i.e. an odd count of edges below x (and x below
    the upper edge, which that count alone would let in)."""
    count = jnp.searchsorted(edges, x_std, side="left")
    return (count % 2 == 1) & (x_std < edges[-1]) & (x_std > 0.0)


def _solve(x, scale, gamma, nu, m):
    """Per point: support mask, differentiable (a, s) at safe stand-ins, atoms, and the interpolated a."""
    gamma = jnp.asarray(gamma, dtype=float)
    t, p = population_atoms(nu, m)
    edges, (x_tab, a_tab, s_tab) = _structure(gamma, t, p)
    # the mask may use the raw quotient: it carries no gradient
    x_raw = lax.stop_gradient(x / scale)
    inside = _classify(x_raw, edges)
    # linear interpolation in x between table nodes: the Newton start inside ((a, s) are smooth in x through
    # the edges), and outside a point of the real axis between the same atoms as the true w(x) (for the CDF)
    k = jnp.clip(jnp.searchsorted(x_tab, x_raw), 1, x_tab.size - 1)
    x_a, x_b = x_tab[k - 1], x_tab[k]
    width = x_b - x_a
    lam = jnp.clip(jnp.where(width > 0, (x_raw - x_a) / jnp.where(width > 0, width, 1.0), 0.5), 0.0, 1.0)
    a_guess = a_tab[k - 1] + lam * (a_tab[k] - a_tab[k - 1])
    s_guess = s_tab[k - 1] + lam * (s_tab[k] - s_tab[k - 1])
    s_guess = jnp.maximum(s_guess, jnp.finfo(float).tiny)
    # stand-in: an interior table node (middle of the first piece, which is never empty), replacing x before
    # the division so no inf * 0 reaches the scale gradient
    mid = _NODES_PER_PIECE // 2
    x_std = jnp.where(inside, x, lax.stop_gradient(scale) * x_tab[mid]) / scale
    x0 = lax.stop_gradient(x_std)
    a = jnp.where(inside, a_guess, a_tab[mid])
    s = jnp.where(inside, s_guess, s_tab[mid])
    t_c, p_c = lax.stop_gradient(t), lax.stop_gradient(p)

    def step(_, state):
        a, s = state
        da, ds = _newton_step(a, s, x0, gamma, t_c, p_c)
        # a step into s <= 0 (no q > 0 guarantee) is cut short: the root of an inside point has s > 0
        return a - da, jnp.maximum(s - ds, 0.1 * s)

    a, s = lax.fori_loop(0, _NEWTON_STEPS, step, (a, s))
    # implicit-function derivative: one Newton step on the differentiable residual from the converged root
    da, ds = _newton_step(a, s, x_std, gamma, t, p)
    a_d, s_d = a - da, s - ds
    ok = inside & (s > 0.0) & (s_d > 0.0)
    a_d = jnp.where(ok, a_d, 0.5)
    s_d = jnp.where(ok, s_d, 1.0)
    return ok, a_d, s_d, t, p, gamma, a_guess, x_raw, edges


@jax.jit
def correlated_mp_logpdf(x: ArrayLike, gamma: ArrayLike, nu: ArrayLike, scale: ArrayLike, m: ArrayLike) -> jax.Array:
    """Log-density of the correlated Marchenko-Pastur law (population spectrum t_i ~ i^-nu, mean ``scale``).

    -inf outside the open support (edges and gaps included; x = 0 at gamma = 1, where f ~ x^-1/2). Never NaN;
    gradients with respect to nu and scale are finite everywhere.

    Parameters
    ----------
    x : array_like
        Eigenvalues, any shape.
    gamma : array_like
        Aspect ratio M / N in (0, 1], scalar.
    nu : array_like
        Power-law exponent of the population spectrum, scalar in [0, 3].
    scale : array_like
        Mean eigenvalue (entry variance), scalar > 0.
    m : array_like
        Number of population eigenvalues M (scalar, may be traced).

    Returns
    -------
    jax.Array
        log f(x), shape of x.
    """
    x = jnp.asarray(x, dtype=float)
    ok, a, s, *_ = _solve(x, scale, gamma, nu, m)
    gamma = jnp.asarray(gamma, dtype=float)
    # f = b / (pi gamma |w|^2), b = sqrt(s); logs kept apart so tiny s (hard edge) does not underflow
    value = 0.5 * jnp.log(s) - jnp.log(jnp.pi * gamma * (a**2 + s)) - jnp.log(scale)
    return jnp.where(ok, value, -jnp.inf)


@jax.jit
def correlated_mp_cdf(x: ArrayLike, gamma: ArrayLike, nu: ArrayLike, scale: ArrayLike, m: ArrayLike) -> jax.Array:
    """CDF of the correlated Marchenko-Pastur law, in closed form given w(x) (module docstring).

    0 at and below the lower edge, 1 at and above the upper edge, the population mass below a gap inside it.
    Absolute accuracy ~1e-14 inside the support; differentiable in x, nu and scale.

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
    x = jnp.asarray(x, dtype=float)
    ok, a, s, t, p, gamma, a_guess, x_raw, edges = _solve(x, scale, gamma, nu, m)
    b = jnp.sqrt(s)
    a_, s_ = a[..., None], s[..., None]
    q = (a_ - t) ** 2 + s_
    value = (
        jnp.sum(p * jnp.arctan2(b[..., None], t - a_), axis=-1) / jnp.pi
        - (1.0 - gamma) / (jnp.pi * gamma) * jnp.arctan2(b, a)
        + b * jnp.sum(p * t / q, axis=-1) / jnp.pi
    )
    value = jnp.clip(value, 0.0, 1.0)
    # outside the support w(x) is real, between the same atoms as the interpolated a, and F = H(w(x)); exact
    # 0 and 1 beyond the outer edges, which the rounded sum of p would miss
    mass_below = jnp.sum(jnp.where(t < a_guess[..., None], lax.stop_gradient(p), 0.0), axis=-1)
    outside = jnp.where(x_raw >= edges[-1], 1.0, jnp.where(x_raw <= edges[0], 0.0, mass_below))
    return jnp.where(ok, value, outside)


@jax.jit
def correlated_mp_support(gamma: ArrayLike, nu: ArrayLike, m: ArrayLike) -> tuple[jax.Array, jax.Array]:
    """Outer edges (lower, upper) of the support for scale 1 (multiply by scale otherwise).

    Exact (to rounding) for the 64-atom population law of `population_atoms`: the upper edge, set by the
    individually kept largest atoms, is that of the exact discrete law; the lower edge, set by the quadrature
    of the smallest ones, approximates it. Inner gaps (separated top eigenvalues at large nu, small gamma) are
    not reported here.

    Parameters
    ----------
    gamma, nu, m : array_like
        As in `correlated_mp_logpdf`.

    Returns
    -------
    tuple of jax.Array
        Lower and upper edge.
    """
    gamma = jnp.asarray(gamma, dtype=float)
    t, p = population_atoms(nu, m)
    edges, _ = _structure(gamma, t, p)
    return edges[0], edges[-1]
