"""log|I(s)| and the CDF phase of the HTMP density for one aspect ratio, fast enough for NUTS.

For a layer, gamma is fixed, so the steepest-descent contours of `contours` are computed once at the Chebyshev
nodes of a few pieces in t = log s (breaking at the Marchenko-Pastur edges, where the density changes character).
Each likelihood call then costs one real exponential per contour node (K x Q, independent of the number of
eigenvalues) plus a Clenshaw sum per eigenvalue; gradients in kappa flow through the node values and gradients
in scale through the interpolant. Outside [S_LOW, S_HIGH] the closed forms of `asymptotic` take over.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from hteval.special import asymptotic, chebyshev
from hteval.special.contours import B_MIN, contours

B_MAX = 500.0  # kappa <= 1e3
#: below y = 1e-20 the two-term small-y form is exact to double precision (its error is O(y^(1/2)))
Y_LOW = 1e-20
#: above s = 50 b the Poincare series converges to double precision in 16 terms for every b <= B_MAX
S_HIGH = 50.0 * B_MAX


@dataclass(frozen=True)
class HTMPTable:
    """Precomputed contours for one gamma; see `log_abs_i`."""

    gamma: float
    t_edges: np.ndarray  # piece boundaries in log s
    sizes: tuple[int, ...]
    # numpy, not jax, arrays: a table built inside a trace (first use under jit or a loop) must not hold tracers
    h_re: np.ndarray  # (K,)
    h_im: np.ndarray  # (K,)
    dh: np.ndarray  # (K, Q) real: Re h - Re h* <= 0 along the exact steepest-descent paths
    c_re: np.ndarray  # (K, Q)
    c_im: np.ndarray  # (K, Q)
    tail: np.ndarray  # (K,) complex

    @property
    def s_low(self) -> float:
        return float(np.exp(self.t_edges[0]))

    @property
    def s_high(self) -> float:
        return float(np.exp(self.t_edges[-1]))


#: widest tail piece in t = log s: near gamma = 1, log|I| ~ log|log s + c| has complex singularities at distance
#: pi from the real t axis, so a piece of width 8 converges like (1 + pi/4)^-n
_TAIL_WIDTH = 8.0


def _s_low(gamma: float) -> float:
    """Where the table hands over to the two-term small-y form.

    That form is exact to O(y^(1/2)) in general, so it takes over at y = 1e-20. When the bulk reaches down to
    s ~ 1e-12 (gamma within 2e-6 of 1), eps = kappa (1 - gamma) / (2 gamma) < 1/2 for every kappa and the form
    is exact to O(y log y) instead, so it takes over at s = 1e-13; this matters because the steepest-descent
    geometry degenerates there (the saddle sits at |tau| ~ s^(-1/2)).
    """
    if (1 - np.sqrt(gamma)) ** 2 < 1e-12:
        return 1e-13
    return Y_LOW * gamma / B_MAX


def _split(t_a: float, t_b: float, n: int) -> list[tuple[float, float, int]]:
    k = max(1, int(np.ceil((t_b - t_a) / _TAIL_WIDTH)))
    edges = np.linspace(t_a, t_b, k + 1)
    return [(edges[i], edges[i + 1], n) for i in range(k)]


def _pieces(gamma: float) -> list[tuple[float, float, int]]:
    """Pieces in t = log s. Each bulk edge sits in the middle of a short window of its own, where large kappa
    puts an Airy-type layer of width ~kappa^(-2/3): the interpolant is smooth across the edge (log|I| is
    analytic there) and no node lands on the degenerate saddle at the edge itself. Tail pieces have bounded
    width further out."""
    lo, hi = (1 - np.sqrt(gamma)) ** 2, (1 + np.sqrt(gamma)) ** 2
    t_low = np.log(_s_low(gamma))
    has_lower_edge = lo > 1e3 * np.exp(t_low)
    w = min(0.1, np.log(hi / lo) / 4) if has_lower_edge else 0.1
    c, d = np.log(hi) - w, np.log(hi) + w
    pieces: list[tuple[float, float, int]] = []
    if has_lower_edge:
        a, b = np.log(lo) - w, np.log(lo) + w
        pieces += _split(t_low, a - np.log(4), 48) + [(a - np.log(4), a, 64), (a, b, 96)]
    else:
        b = t_low
    if c - b > 2.0:
        pieces += _split(b, c - 1.5, 64) + [(c - 1.5, c, 128)]
    else:
        pieces += [(b, c, 128)]
    pieces += [(c, d, 96), (d, d + np.log(2), 64)] + _split(d + np.log(2), np.log(S_HIGH), 48)
    return pieces


#: Each piece of _pieces is cut into n / _SUB_PER sub-pieces of _SUB_NODES Chebyshev nodes: the per-eigenvalue
#: cost is a Clenshaw sum of _SUB_NODES terms, while the resolution stays that of the n-node piece.
_SUB_PER = 10
_SUB_NODES = 16


def _sub_pieces(pieces: list[tuple[float, float, int]]) -> list[tuple[float, float, int]]:
    out = []
    for a, b, n in pieces:
        count = max(1, n // _SUB_PER)
        count += 1 - count % 2  # odd, so that no sub-piece boundary falls on a bulk edge (a window's middle)
        edges = np.linspace(a, b, count + 1)
        out += [(edges[i], edges[i + 1], _SUB_NODES) for i in range(len(edges) - 1)]
    return out


@functools.lru_cache(maxsize=64)
def htmp_table(gamma: float) -> HTMPTable:
    """Build (once per gamma, cached) the contour table of the HTMP density."""
    gamma = float(gamma)
    pieces = _sub_pieces(_pieces(gamma))
    t_nodes = [(a + b) / 2 + (b - a) / 2 * chebyshev.chebyshev_nodes(n) for a, b, n in pieces]
    with np.errstate(all="ignore"):
        cont = contours(np.exp(np.concatenate(t_nodes)), gamma)
    finite = np.isfinite(cont.dh.real)
    return HTMPTable(
        gamma=gamma,
        t_edges=np.array([a for a, _, _ in pieces] + [pieces[-1][1]]),
        sizes=tuple(n for *_, n in pieces),
        h_re=cont.h_star.real,
        h_im=cont.h_star.imag,
        dh=np.where(finite, cont.dh.real, 0.0),
        c_re=np.where(finite, cont.c.real, 0.0),
        c_im=np.where(finite, cont.c.imag, 0.0),
        tail=cont.tail,
    )


#: The traced (jit/grad/vmap) path interpolates the contour sums in log b instead of summing them: pieces of this
#: width in log b, _B_NODES Chebyshev nodes each, cut the per-call cost from K x Q exponentials to a K-vector
#: Clenshaw sum of _B_NODES terms.
_B_PIECE_WIDTH = 2.0
_B_NODES = 20


def _contour_sum(table: HTMPTable, b, xp=jnp):
    """J = sum_j c_j exp(b dh_j) + exp(b tail) / b at every node: I = exp(b h*) J (real, imaginary parts).

    xp=np serves the table build, which must stay float64 whatever JAX's x64 setting is.
    """
    e = xp.exp(b * table.dh)
    tail = xp.exp(b * table.tail) / b
    return xp.sum(table.c_re * e, axis=1) + xp.real(tail), xp.sum(table.c_im * e, axis=1) + xp.imag(tail)


@dataclass(frozen=True)
class KappaTable:
    """Chebyshev coefficients in log b of log|J| and arg J at every s-node, piece by piece."""

    log_b_edges: np.ndarray  # (R + 1,)
    log_abs: np.ndarray  # (R, _B_NODES, K)
    arg: np.ndarray  # (R, _B_NODES, K)
    d_log_abs: np.ndarray  # (R, _B_NODES, K): the same series differentiated in log b
    d_arg: np.ndarray  # (R, _B_NODES, K)


@functools.lru_cache(maxsize=64)
def kappa_table(gamma: float) -> KappaTable:
    """Build (once per gamma, cached) the log-b interpolation of the contour sums of htmp_table(gamma)."""
    table = htmp_table(gamma)
    lo, hi = np.log(B_MIN), np.log(B_MAX)
    edges = np.linspace(lo, hi, int(np.ceil((hi - lo) / _B_PIECE_WIDTH)) + 1)
    x = chebyshev.chebyshev_nodes(_B_NODES)
    to_coef = chebyshev.coefficient_matrix(_B_NODES)
    log_abs, arg = [], []
    for a, z in zip(edges[:-1], edges[1:], strict=True):
        b = np.exp((a + z) / 2 + (z - a) / 2 * x)
        with np.errstate(under="ignore"):
            j = np.array([re + 1j * im for re, im in (_contour_sum(table, bi, np) for bi in b)])
        log_abs.append(to_coef @ np.log(np.abs(j)))
        arg.append(to_coef @ np.unwrap(np.angle(j), axis=0))

    def in_log_b(coef):  # d/dx -> d/dlog b on each piece, zero-padded back to _B_NODES orders
        slopes = 2 / np.diff(edges)[:, None, None]
        return slopes * np.pad(np.polynomial.chebyshev.chebder(np.array(coef), axis=1), ((0, 0), (0, 1), (0, 0)))

    return KappaTable(log_b_edges=edges, log_abs=np.array(log_abs), arg=np.array(arg), d_log_abs=in_log_b(log_abs),
                      d_arg=in_log_b(arg))


def _interpolated_sum(table: HTMPTable, b, series=("log_abs", "arg")):
    """log|J| and arg J (or their log-b derivatives) at every node from the log-b Chebyshev pieces (traced path)."""
    kt = kappa_table(table.gamma)
    log_b = jnp.clip(jnp.log(b), kt.log_b_edges[0], kt.log_b_edges[-1])
    edges = jnp.asarray(kt.log_b_edges)
    piece = jnp.clip(jnp.searchsorted(edges[1:-1], log_b, method="compare_all"), 0, len(kt.log_b_edges) - 2)
    x = (2 * log_b - edges[piece] - edges[piece + 1]) / (edges[piece + 1] - edges[piece])
    return tuple(chebyshev.clenshaw_scalar(jnp.asarray(getattr(kt, name))[piece], x) for name in series)


def node_derivatives(table: HTMPTable, b):
    """d/db of the two node_values arrays (from the differentiated log-b series)."""
    d_log_j, d_arg_j = _interpolated_sum(table, b, ("d_log_abs", "d_arg"))
    return table.h_re + d_log_j / b, jnp.pi - table.h_im - d_arg_j / b


def node_values(table: HTMPTable, b):
    """log|I| and G = pi b - arg I at the table's nodes for one scalar b.

    A concrete b sums the contours exactly; a traced b (under jit, grad or vmap: the likelihood of a fit) uses
    their log-b interpolation, which agrees to about 1e-10 (tests/test_htmp.py) at a small fraction of the cost.
    """
    if isinstance(b, jax.core.Tracer):
        log_j, arg_j = _interpolated_sum(table, b)
    else:
        j_re, j_im = _contour_sum(table, b)
        log_j, arg_j = 0.5 * jnp.log(j_re**2 + j_im**2), jnp.arctan2(j_im, j_re)
    return b * table.h_re + log_j, jnp.pi * b - b * table.h_im - arg_j


def _coefficients(table: HTMPTable, values):
    n = table.sizes[0]  # every piece has the same number of nodes: the transform is block diagonal
    return values.reshape(-1, n) @ jnp.asarray(chebyshev.coefficient_matrix(n)).T


def _locate(table: HTMPTable, t):
    """Piece index, local coordinate in [-1, 1] and its derivative in t, for points t inside the table."""
    edges = jnp.asarray(table.t_edges)
    # binary search: comparing every point with each of the ~90 edges costs 50x as much at 1e5 points
    piece = jnp.clip(jnp.searchsorted(edges[1:-1], t, method="scan"), 0, len(table.sizes) - 1)
    lo, hi = edges[piece], edges[piece + 1]
    # no clip: t lies in its piece by construction, and clip would halve the gradient exactly at a breakpoint
    return piece, (2 * t - lo - hi) / (hi - lo), 2 / (hi - lo)


#: what `_table_interpolant` can return, in node_values' order
LOG_ABS, PHASE = 0, 1


@functools.lru_cache(maxsize=64)
def _table_interpolant(gamma: float, series: tuple[int, ...]):
    """(b, t) -> the interpolants inside the table of the node_values series named by `series` (LOG_ABS for log|I|,
    PHASE for G), with a hand-written derivative rule.

    Autodiff through the node interpolation and the per-point gathers would compile to scatter-adds; the rule
    instead evaluates the same Chebyshev sums with the differentiated log-b series (for d/db) and the
    differentiated basis (for d/dt). Only the series asked for are evaluated per point: the likelihood of the
    observed eigenvalues needs log|I| alone, the CDF the phase alone.
    """
    table = htmp_table(gamma)
    # numpy: this closure is cached across traces, and a jax array made inside one would leak its tracer
    to_derivative = chebyshev.derivative_matrix(table.sizes[0]).T

    def rows(values):
        return [_coefficients(table, values[i]) for i in series]  # (P, n) each

    @jax.custom_jvp
    def interpolant(b, t):
        piece, u, _ = _locate(table, t)
        return tuple(chebyshev.clenshaw_at(c, piece, u) for c in rows(node_values(table, b)))

    @interpolant.defjvp
    def interpolant_jvp(primals, tangents):
        b, t = primals
        db, dt = tangents
        piece, u, du_dt = _locate(table, t)
        out, tangent = [], []
        for c, d in zip(rows(node_values(table, b)), rows(node_derivatives(table, b)), strict=True):
            out.append(chebyshev.clenshaw_at(c, piece, u))
            slope = chebyshev.clenshaw_at(c @ to_derivative, piece, u) * du_dt
            tangent.append(chebyshev.clenshaw_at(d, piece, u) * db + slope * dt)
        return tuple(out), tuple(tangent)

    return interpolant


def _evaluator(table: HTMPTable, b, series: tuple[int, ...]):
    """log s -> the `series` of (log|I|, G) at any log s: the table inside it, the closed forms outside."""
    eps = b * (1 / table.gamma - 1)
    edges = table.t_edges
    ratio = 1 / table.gamma - 1  # eps / b

    def evaluate(log_s):
        log_s = jnp.asarray(log_s)
        below, above = log_s < edges[0], log_s > edges[-1]
        t = jnp.where(below, edges[0], jnp.where(above, edges[-1], log_s))
        # the closed forms cost as much as the table and are rarely needed: evaluated only when some point is out
        zeros = (jnp.zeros_like(t), jnp.zeros_like(t))
        low = jax.lax.cond(jnp.any(below),
                           lambda: asymptotic.small_s_differenced(jnp.minimum(log_s, edges[0]), b, ratio),
                           lambda: zeros)
        high = jax.lax.cond(jnp.any(above), lambda: asymptotic.large_s(jnp.maximum(log_s, edges[-1]), b, eps),
                            lambda: zeros)
        mid = _table_interpolant(table.gamma, series)(b, t)
        return tuple(jnp.where(below, low[i], jnp.where(above, high[i], m)) for i, m in zip(series, mid, strict=True))

    return evaluate


def log_abs_i_fn(table: HTMPTable, b, *, with_phase: bool = False):
    """For one scalar b, the function log s -> log|I(s)| = lgamma(b) + log|U(b, -a, -y)| (any shape), or
    log s -> (log|I|, G) with the phase.

    The per-b work (node values and their Chebyshev coefficients, a K-vector) is done once here, so a caller
    evaluating several sets of points (the tail quadrature of the CDF) pays for it once. Taking log s keeps x far
    below the bulk meaningful even where y = n_ s would underflow. G(s) = pi b - arg I(s) is the continuous phase
    whose ratio G / (pi b) is the CDF (SPEC section 2).

    Meant to run inside a compiled program (`hteval.densities.htmp`'s functions are jitted): run eagerly, its
    lax.cond branches would be compiled anew for every b.
    """
    evaluate = _evaluator(table, b, (LOG_ABS, PHASE) if with_phase else (LOG_ABS,))
    return evaluate if with_phase else (lambda log_s: evaluate(log_s)[0])


def phase_fn(table: HTMPTable, b):
    """For one scalar b, the function log s -> G(s) alone (the CDF is G / (pi b)); see `log_abs_i_fn`."""
    evaluate = _evaluator(table, b, (PHASE,))
    return lambda log_s: evaluate(log_s)[0]


def log_abs_i(table: HTMPTable, log_s, b, *, with_phase: bool = False):
    """log|I(s)| (and G(s)) at log s for one scalar b; see `log_abs_i_fn`."""
    return log_abs_i_fn(table, b, with_phase=with_phase)(log_s)
