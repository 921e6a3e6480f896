"""Exact posterior draws of two continuous parameters from a log density evaluated on a zoomed grid.

For a model whose other latents integrate out in closed form (the power law's breakpoint, exponent and tail
weight) or whose posterior has only two or three parameters (the HTMP family, MP, the log-normal, correlated MP),
the posterior of what is left is a two-dimensional density that a grid represents to any accuracy wanted,
multimodal or not, where a Markov chain can stay in one mode without any diagnostic noticing. A third parameter,
a mixture's outlier weight, is integrated inside the grid's log density by a one-dimensional rule and drawn from
its exact conditional afterwards (`weight_log_marginal`, `weight_draws`, below).

The grid starts on a wide box and zooms, axis by axis, onto the range that holds all but TAIL_MASS of the marginal
mass: every mode that holds more than that stays in, while a long ridge of negligible mass does not stretch the
box. The final grid's points are spaced half by the coarse marginal's quantiles and half evenly, so a skewed or
multimodal marginal is resolved where its mass is without leaving the rest of the box empty. A draw is a cell,
in proportion to its mass (density times area), moved uniformly within the cell. Two numbers say whether the
grid can be trusted: the mass in its edge cells (the box cut the posterior off; a side on a bound of the prior's
support, where the box cannot reach further, does not count) and the effective number of cells each marginal
spreads over (too few and the draws are as coarse as the cells).

A model either gives a JAX-traceable log density of two scalars (compiled once per model and grid shape) or, with
table=True, a function that evaluates a whole (first axis) x (second axis) table in numpy, with whatever shared
per-axis work that allows (the HTMP family's per-kappa node values, correlated MP's per-nu Silverstein table).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import betaln, logsumexp

SIZES = (128, 256, 512)  # points per axis of the final grid, finer until it resolves both marginals
ZOOM_SIZE = 64  # points per axis of the passes that find the box
ZOOMS = 3
TAIL_MASS = 1e-6  # marginal mass each zoom may leave outside its box, per side and axis
EDGE_MASS_MAX = 1e-4
#: a normal marginal over evenly spaced cells, k of them per standard deviation, has 2 sqrt(pi) k effective
#: cells; 16 is k = 4.5, where drawing uniformly within cells widens the variance by 1 / (12 k^2) = 0.4%
EFFECTIVE_CELLS_MIN = 16


@dataclass(frozen=True)
class Grid:
    """Cell masses on the outer product of two axes: points and the cell edges around them.

    open_sides (first low, first high, second low, second high) says which sides of the box were cut by the zoom;
    a side that lies on a bound of the support (a uniform prior's end) cannot cut mass off, so its cells do not
    count as edge mass.
    """

    first: np.ndarray
    second: np.ndarray
    first_edges: np.ndarray
    second_edges: np.ndarray
    log_mass: np.ndarray  # (first, second), logsumexp = 0: log density + log cell area, normalised
    open_sides: tuple[bool, bool, bool, bool] = (True, True, True, True)
    #: log of the sum over cells of density x cell area before normalising: the log density's integral over the
    #: box (a trapezoid rule on the points' spacing), what a model's log evidence is built from
    log_total: float = math.nan
    #: the model's log evidence from this grid (`hteval.evidence.Evidence`), where the model computed it
    evidence: Any = None

    @property
    def edge_mass(self) -> float:
        mass = np.exp(self.log_mass)
        edge = np.zeros(mass.shape, dtype=bool)
        for side, cells in zip(self.open_sides, (np.s_[0, :], np.s_[-1, :], np.s_[:, 0], np.s_[:, -1]), strict=True):
            edge[cells] |= side
        return float(mass[edge].sum())

    def side_mass(self, side: int) -> float:
        """The mass in the cells along one side of the box (0, 1: the first axis's low and high end; 2, 3: the
        second's)."""
        mass = np.exp(self.log_mass)
        return float(mass[(np.s_[0, :], np.s_[-1, :], np.s_[:, 0], np.s_[:, -1])[side]].sum())

    @property
    def effective_cells(self) -> tuple[float, float]:
        """1 / sum p^2 of each axis's marginal: how many cells the mass spreads over along it."""
        mass = np.exp(self.log_mass)
        return tuple(float(1.0 / np.sum(mass.sum(axis=i) ** 2)) for i in (1, 0))

    def checks(self) -> dict[str, Any]:
        out = {"grid_points": int(self.log_mass.size), "edge_mass": self.edge_mass,
               "effective_cells": list(self.effective_cells)}
        if self.evidence is not None:
            out["evidence"] = self.evidence.checks()
        return out

    def problems(self) -> list[str]:
        """Why draws from this grid would not represent the density (empty when they do)."""
        reasons = []
        if not self.edge_mass <= EDGE_MASS_MAX:
            reasons.append(f"quadrature: {self.edge_mass:.1e} of the mass on the grid's edge")
        if not min(self.effective_cells) >= EFFECTIVE_CELLS_MIN:
            reasons.append(f"quadrature: a marginal spread over {min(self.effective_cells):.0f} cells only")
        return reasons


@functools.partial(jax.jit, static_argnums=0)
def evaluate(log_density, first, second, data):
    """log_density(a, b, *data) on the outer product, a row of the first axis at a time (bounded memory).

    One compiled program per (log_density, data shapes): a module-level log_density with the layer's data as
    arguments is compiled once for every layer of the same size.
    """
    row = jax.vmap(lambda a, b: log_density(a, b, *data), (None, 0))
    return jax.lax.map(lambda a: row(a, second), first)


def zoomed_grid(log_density, first, second, data=(), *, sizes=SIZES, zooms: int = ZOOMS, zoom_size: int = ZOOM_SIZE,
                table: bool = False, limits=(None, None), reach_out: bool = False) -> Grid:
    """The grid on the box that `zooms` coarse passes found, each onto the range (plus a cell either side) that
    holds all but TAIL_MASS of each marginal on the previous pass; of `sizes`, the first that resolves both
    marginals (EFFECTIVE_CELLS_MIN), else the last.

    log_density(a, b, *data) must be jax-traceable in the two scalars a, b; or, with table=True, a function
    log_density(first_points, second_points, *data) of two numpy axes returning the (first, second) array of log
    densities (a model that evaluates a whole table faster than point by point, or without JAX). first and
    second are the starting (low, high) ranges. limits: per axis None or the (low, high) bounds of the support,
    which the box never crosses and whose sides hold no edge mass. reach_out: a pass whose end cell holds mass
    widens the box on that side (`_zoom`) instead of keeping it. NaN counts as zero density.
    """
    if table:
        def tabulate(a, b):
            return np.asarray(log_density(a, b, *data), dtype=np.float64)
    else:
        def tabulate(a, b):
            return np.asarray(evaluate(log_density, a, b, tuple(data)))
    limits = [(-np.inf, np.inf) if lim is None else (float(lim[0]), float(lim[1])) for lim in limits]
    axes = [np.linspace(*first, zoom_size), np.linspace(*second, zoom_size)]
    for zoom in range(zooms + 1):  # the last pass measures the marginals that space the final grid's points
        mass = _normalised(tabulate(*axes))
        marginals = mass.sum(axis=1), mass.sum(axis=0)
        if zoom < zooms:
            axes = [_zoom(axis, marginal, lim, reach_out) for axis, marginal, lim in zip(axes, marginals, limits,
                                                                                          strict=True)]
    open_sides = tuple(bool(side) for axis, (low, high) in zip(axes, limits, strict=True)
                       for side in (axis[0] > low, axis[-1] < high))
    for size in sizes:
        points = [_spaced(axis, marginal, size) for axis, marginal in zip(axes, marginals, strict=True)]
        edges = [np.clip(_edges(p), *lim) for p, lim in zip(points, limits, strict=True)]
        log_density_table = tabulate(*points)
        area = np.log(np.diff(edges[0]))[:, None] + np.log(np.diff(edges[1]))[None, :]
        log_cells = log_density_table + area
        grid = Grid(*points, *edges, _log_normalised(log_cells), open_sides,
                    _richardson_total(log_density_table, points, limits))
        if min(grid.effective_cells) >= EFFECTIVE_CELLS_MIN:
            break
    return grid


def _log_normalised(table: np.ndarray) -> np.ndarray:
    """log of the cell masses (summing to 1) from log densities; NaN and +-inf cells get no mass (-inf)."""
    finite = np.isfinite(table)
    if not finite.any():
        raise FloatingPointError("the log density is not finite anywhere on the grid")
    shifted = np.where(finite, table - np.max(table, where=finite, initial=-np.inf), -np.inf)
    return shifted - np.log(np.sum(np.exp(shifted)))


def _richardson_total(log_density_table: np.ndarray, points, limits) -> float:
    """log of the density's integral over the box from the table: the cells' sum (a trapezoid rule on the points'
    spacing, whose error is O(h^2) where the spacing varies) with one Richardson step against the grid of every
    other point (the last point kept, so both span the same box)."""
    def total(keep):
        edges = [np.clip(_edges(p[k]), *lim) for p, k, lim in zip(points, keep, limits, strict=True)]
        area = np.log(np.diff(edges[0]))[:, None] + np.log(np.diff(edges[1]))[None, :]
        return _log_sum(log_density_table[np.ix_(*keep)] + area)

    full = total([np.arange(p.size) for p in points])
    coarse = total([np.unique(np.r_[np.arange(0, p.size, 2), p.size - 1]) for p in points])
    return full + (full - coarse) / 3.0


def _log_sum(table: np.ndarray) -> float:
    """log of the sum of exp(table) over its finite cells."""
    finite = np.isfinite(table)
    top = np.max(table, where=finite, initial=-np.inf)
    return float(top + np.log(np.sum(np.exp(np.where(finite, table - top, -np.inf)))))


def _normalised(table: np.ndarray) -> np.ndarray:
    return np.exp(_log_normalised(table))


def _zoom(axis: np.ndarray, marginal: np.ndarray, limits=(-np.inf, np.inf), reach_out: bool = False) -> np.ndarray:
    """The range holding all but TAIL_MASS of the marginal, and a cell either side. With reach_out, where an end
    cell itself holds more than TAIL_MASS (the box cut the mass off there, or a coarse pass, blind to a narrow
    direction of the other axis, misjudged this one's marginal) that side reaches out by half the box instead."""
    cumulative = np.cumsum(marginal)
    low = max(int(np.searchsorted(cumulative, TAIL_MASS)) - 1, 0)
    high = min(int(np.searchsorted(cumulative, 1.0 - TAIL_MASS)) + 1, axis.size - 1)
    step = axis[1] - axis[0]
    reach = (axis[-1] - axis[0]) / 2
    start = axis[0] - reach if reach_out and marginal[0] > TAIL_MASS else axis[low] - step
    stop = axis[-1] + reach if reach_out and marginal[-1] > TAIL_MASS else axis[high] + step
    return np.linspace(max(start, limits[0]), min(stop, limits[1]), axis.size)


def _spaced(axis: np.ndarray, marginal: np.ndarray, size: int) -> np.ndarray:
    """size points over the axis's range at the quantiles of an even mixture of the marginal and a uniform law."""
    fine = np.linspace(axis[0], axis[-1], 16 * axis.size)
    marginal_cdf = np.interp(fine, axis, np.cumsum(marginal) - marginal / 2)  # mass of a point spread over its cell
    mixture = 0.5 * (marginal_cdf - marginal_cdf[0]) / (marginal_cdf[-1] - marginal_cdf[0])
    mixture += 0.5 * (fine - fine[0]) / (fine[-1] - fine[0])
    return np.interp(np.linspace(0.0, 1.0, size), mixture, fine)


def _edges(points: np.ndarray) -> np.ndarray:
    middle = (points[1:] + points[:-1]) / 2
    return np.concatenate([[2 * points[0] - middle[0]], middle, [2 * points[-1] - middle[-1]]])


def draw(grid: Grid, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n independent draws: a cell in proportion to its mass, then a uniform point within it."""
    mass = np.exp(grid.log_mass).ravel()
    cells = rng.choice(mass.size, size=n, p=mass / mass.sum())
    i, k = np.unravel_index(cells, grid.log_mass.shape)
    u = rng.uniform(size=(2, n))
    return (grid.first_edges[i] + u[0] * np.diff(grid.first_edges)[i],
            grid.second_edges[k] + u[1] * np.diff(grid.second_edges)[k])


# ---------------------------------------------------------------------------------------------------------------
# A mixture weight integrated out inside the grid's log density, and drawn from its conditional afterwards.
#
# Models of the form (1 - w) f(x | a, b) + w g(x), w ~ Beta(alpha, beta), have three parameters; the grid holds
# (a, b) and w is integrated at every grid point by a one-dimensional rule. Given the per-point log densities
# log f_i and log g_i (and counts m_i: 1 per eigenvalue, n_censored for the censored term's CDFs),
#
#     L(w) = sum_i m_i log((1 - w) f_i + w g_i) + log Beta(w; alpha, beta)
#
# is concave in w (a sum of logs of linear functions plus a concave prior), so the density of v = log w,
# exp(L(e^v) + v), is unimodal (its slope 1 + w L'(w) falls through zero once). Its mode v* and curvature scale s
# are found by safeguarded Newton steps, and the integral is a trapezoid rule in z with v = v* + s sinh(z): dense
# at the mode, sparse in the tails, geometrically convergent for such smooth unimodal integrands. The left tail
# of v can be long (the density of v tends to g(0) e^v as w -> 0, slope 1), so the rule reaches 40 units of v to
# the left, where e^-40 of the mass is left; to the right the curvature is at least 1 (slope < 0 there makes
# L_v'' < -1), so max(10 s, 8) suffices.
# ---------------------------------------------------------------------------------------------------------------

WEIGHT_NODES = 40  # nodes of the rule inside a grid's log density
WEIGHT_ROWS = 256  # rows (grid points or draws) per call of the compiled rule, fewer for wide rows:
_WEIGHT_CELLS = 2**25  # rows x nodes x columns per call: bounded memory (~0.3 GB) however many eigenvalues
WEIGHT_COLUMNS = 64  # columns (eigenvalues and a censored count) are padded to a multiple of this
PRUNE_BELOW = 60.0  # a grid point this far (in log density) below the best is not integrated
_V_MIN, _V_MAX = math.log(1e-14), -1e-12  # log w
_NEWTON_STEPS = 30
_RIGHT_SDS, _LEFT_SDS, _LEFT_REACH = 12.0, 12.0, 40.0


def _weight_terms(log_main, log_other):
    """Each term's log((1 - w) f + w g) as top + log(a + w d), with a, c <= 1 and top finite (g > 0 everywhere)."""
    top = jnp.maximum(log_main, log_other)
    a = jnp.exp(log_main - top)
    return top, a, jnp.exp(log_other - top) - a


def _weight_log_density(v, top, a, d, counts, alpha, beta):
    """log p(data, v = log w) up to the constant of the prior: L(e^v) + v, per row (v shaped (rows, k))."""
    w = jnp.exp(v)[..., None]
    terms = jnp.sum(counts * (top[:, None, :] + jnp.log(a[:, None, :] + w * d[:, None, :])), axis=-1)
    return terms + alpha * v + (beta - 1.0) * jnp.log1p(-jnp.exp(v))


def _weight_slopes(v, a, d, counts, alpha, beta):
    """d/dv and d^2/dv^2 of L(e^v) + v, per row (v shaped (rows,))."""
    w = jnp.exp(v)
    q = d / (a + w[:, None] * d)
    one_minus = -jnp.expm1(v)
    l1 = jnp.sum(counts * q, axis=-1) + (alpha - 1.0) / w - (beta - 1.0) / one_minus
    l2 = -jnp.sum(counts * q * q, axis=-1) - (alpha - 1.0) / w**2 - (beta - 1.0) / one_minus**2
    return w * l1 + 1.0, w * l1 + w * w * l2


def _weight_mode(a, d, counts, alpha, beta):
    """The mode of the density of v = log w (unimodal): Newton steps kept inside a bracket that bisection
    shrinks whenever a step would leave it."""
    rows = a.shape[0]

    def step(_, state):
        v, lo, hi = state
        s1, s2 = _weight_slopes(v, a, d, counts, alpha, beta)
        lo, hi = jnp.where(s1 > 0, v, lo), jnp.where(s1 > 0, hi, v)
        newton = v - s1 / jnp.where(s2 < 0, s2, -1.0)
        ok = (s2 < 0) & (newton > lo) & (newton < hi)
        return jnp.where(ok, newton, 0.5 * (lo + hi)), lo, hi

    start = jnp.full(rows, -jnp.log(jnp.sum(counts) + beta))  # w ~ 1 / (n + beta): no outliers
    v, _, _ = jax.lax.fori_loop(0, _NEWTON_STEPS, step, (start, jnp.full(rows, _V_MIN), jnp.full(rows, _V_MAX)))
    _, s2 = _weight_slopes(v, a, d, counts, alpha, beta)
    return v, 1.0 / jnp.sqrt(jnp.maximum(-s2, 1e-6))


@functools.partial(jax.jit, static_argnums=(5,))
def _weight_rule(log_main, log_other, counts, alpha, beta, nodes: int, offset):
    """Nodes z (rows, nodes), evenly spaced and shifted by offset steps, of v = v* + s sinh(z), and the log
    density of z there (outside w in (0, 1): -inf); v* and s per row."""
    top, a, d = _weight_terms(log_main, log_other[None, :])
    v_star, scale = _weight_mode(a, d, counts, alpha, beta)
    # no further left than where w reaches _V_MIN: nodes there would hold nothing
    z_low = -jnp.arcsinh(jnp.minimum(_LEFT_SDS + _LEFT_REACH * scale, (v_star - _V_MIN) / scale))
    z_high = jnp.full_like(scale, math.asinh(_RIGHT_SDS))
    z = z_low[:, None] + (z_high - z_low)[:, None] * ((jnp.arange(nodes) + offset) / (nodes - 1))
    v = v_star[:, None] + scale[:, None] * jnp.sinh(z)
    inside = (v > _V_MIN) & (v < _V_MAX)
    log_f = _weight_log_density(jnp.where(inside, v, v_star[:, None]), top, a, d, counts, alpha, beta)
    return z, jnp.where(inside, log_f + jnp.log(scale[:, None] * jnp.cosh(z)), -jnp.inf), v_star, scale


def _weight_rows(log_main, log_other, counts, alpha, beta, nodes, offset=0.0):
    """_weight_rule over any number of rows, in blocks of WEIGHT_ROWS, the columns padded (with zero counts) to a
    multiple of WEIGHT_COLUMNS: one compiled program serves layers of similar sizes."""
    log_main = np.asarray(log_main, dtype=np.float64)
    rows, columns = log_main.shape
    pad = -columns % WEIGHT_COLUMNS
    # a power of two: layers of similar sizes still share the compiled program
    per_call = min(WEIGHT_ROWS, 2 ** max(0, int(np.log2(_WEIGHT_CELLS / (nodes * (columns + pad))))))
    log_other, counts = (np.pad(np.asarray(v, dtype=np.float64), (0, pad)) for v in (log_other, counts))
    out = [np.empty((rows, nodes)), np.empty((rows, nodes)), np.empty(rows), np.empty(rows)]
    args = (jnp.asarray(log_other), jnp.asarray(counts), float(alpha), float(beta))
    for start in range(0, rows, per_call):
        block = log_main[start:start + per_call]
        padded = np.pad(block, ((0, per_call - block.shape[0]), (0, pad)), mode="edge")
        padded[:, columns:] = 0.0  # with the zero counts: log(1) terms, nothing
        for target, value in zip(out, _weight_rule(jnp.asarray(padded), *args, nodes, offset), strict=True):
            target[start:start + block.shape[0]] = np.asarray(value)[:block.shape[0]]
    return out


def weight_log_marginal(log_main, log_other, counts, prior) -> np.ndarray:
    """log of int Beta(w; prior) prod_i ((1 - w) f_i + w g_i)^m_i dw for each row of log f (rows, n), with log g
    (n,) and counts m (n,) shared by every row; prior = (alpha, beta).

    Rows that cannot matter are not integrated: sum_i m_i max(log f_i, log g_i) bounds a row's value from above
    (the prior integrates to 1), and a row whose bound is PRUNE_BELOW under the best row's value holds at most
    e^-PRUNE_BELOW of a cell's mass beside it; it gets its bound (most of the first, prior-wide grids' rows).
    """
    log_main = np.asarray(log_main, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        bound = np.sum(counts * np.maximum(log_main, log_other), axis=1)
    first = np.argsort(-bound)[:WEIGHT_ROWS]
    value = bound.copy()
    value[first] = _integrate_weight(log_main[first], log_other, counts, prior)
    rest = np.setdiff1d(np.flatnonzero(bound >= np.max(value[first]) - PRUNE_BELOW), first)
    if rest.size:
        value[rest] = _integrate_weight(log_main[rest], log_other, counts, prior)
    return value


def _integrate_weight(log_main, log_other, counts, prior):
    z, log_f, _, _ = _weight_rows(log_main, log_other, counts, *prior, WEIGHT_NODES)
    step = z[:, 1] - z[:, 0]
    ends = np.zeros(WEIGHT_NODES)
    ends[[0, -1]] = math.log(0.5)  # the trapezoid rule's end weights
    return logsumexp(log_f + ends, axis=1) + np.log(step) - betaln(*prior)


def weight_draws(log_main, log_other, counts, prior, rng: np.random.Generator) -> np.ndarray:
    """One draw of w per row from its conditional density given that row's log f (rows, n): a segment between
    two nodes of the rule by its mass, then a point within it by the exact inverse CDF of the density's
    log-linear interpolant in z."""
    # the rule's nodes and those half a step on: twice as fine, from the same compiled program
    z, log_f, v_star, scale = _weight_rows(log_main, log_other, counts, *prior, WEIGHT_NODES)
    z_half, log_f_half, _, _ = _weight_rows(log_main, log_other, counts, *prior, WEIGHT_NODES, 0.5)
    z = np.stack([z, z_half], axis=2).reshape(z.shape[0], -1)
    log_f = np.stack([log_f, log_f_half], axis=2).reshape(z.shape)
    left, right = log_f[:, :-1], log_f[:, 1:]
    width = np.diff(z, axis=1)
    with np.errstate(invalid="ignore"):
        slope = (right - left) / width
    log_mass = _log_segment_mass(left, right, slope, width)
    cumulative = np.cumsum(np.exp(log_mass - logsumexp(log_mass, axis=1, keepdims=True)), axis=1)
    u = rng.uniform(size=(z.shape[0], 2))
    segment = np.minimum((cumulative < u[:, :1]).sum(axis=1), width.shape[1] - 1)
    rows = np.arange(z.shape[0])
    z_draw = z[rows, segment] + _exponential_quantile(u[:, 1], slope[rows, segment], width[rows, segment])
    return np.exp(np.clip(v_star + scale * np.sinh(z_draw), _V_MIN, _V_MAX))


def _log_segment_mass(left, right, slope, width):
    """log of the integral of exp(left + slope t) over [0, width], without cancellation for any slope."""
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        both = np.where(np.isfinite(left) & np.isfinite(right), np.maximum(left, right), -np.inf)
        x = -np.abs(slope) * width  # <= 0
        log_factor = np.log(width) + np.where(x < -1e-8, np.log(-np.expm1(x) / -x), x / 2)
        return np.where(np.isfinite(both), both + log_factor, -np.inf)


def _exponential_quantile(u, slope, width):
    """t in [0, width] with the density proportional to exp(slope t) there, at probability u."""
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        x = slope * width
        t = np.where(np.abs(x) < 1e-8, u * width, np.log1p(u * np.expm1(x)) / slope)
        # a steeply rising segment: anchored at its far end, nothing overflows
        t = np.where(x > 50, width + np.log(u + (1 - u) * np.exp(-x)) / slope, t)
    return np.clip(np.where(np.isfinite(t), t, u * width), 0.0, width)
