"""Exact posterior draws of two continuous parameters from a log density evaluated on a zoomed grid.

For a model whose other latents integrate out in closed form (the power law's breakpoint, exponent and tail
weight), the posterior of what is left is a two-dimensional density that a grid represents to any accuracy
wanted, multimodal or not, where a Markov chain can stay in one mode without any diagnostic noticing.

The grid starts on a wide box and zooms, axis by axis, onto the range that holds all but TAIL_MASS of the marginal
mass: every mode that holds more than that stays in, while a long ridge of negligible mass does not stretch the
box. The final grid's points are spaced half by the coarse marginal's quantiles and half evenly, so a skewed or
multimodal marginal is resolved where its mass is without leaving the rest of the box empty. A draw is a cell,
in proportion to its mass (density times area), moved uniformly within the cell. Two numbers say whether the
grid can be trusted: the mass in its edge cells (the box cut the posterior off) and the effective number of
cells each marginal spreads over (too few and the draws are as coarse as the cells).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import jax
import numpy as np

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
    """Cell masses on the outer product of two axes: points and the cell edges around them."""

    first: np.ndarray
    second: np.ndarray
    first_edges: np.ndarray
    second_edges: np.ndarray
    log_mass: np.ndarray  # (first, second), logsumexp = 0: log density + log cell area, normalised

    @property
    def edge_mass(self) -> float:
        mass = np.exp(self.log_mass)
        return float(mass[[0, -1], :].sum() + mass[1:-1, [0, -1]].sum())

    @property
    def effective_cells(self) -> tuple[float, float]:
        """1 / sum p^2 of each axis's marginal: how many cells the mass spreads over along it."""
        mass = np.exp(self.log_mass)
        return tuple(float(1.0 / np.sum(mass.sum(axis=i) ** 2)) for i in (1, 0))

    def checks(self) -> dict[str, float | int | list[float]]:
        return {"grid_points": int(self.log_mass.size), "edge_mass": self.edge_mass,
                "effective_cells": list(self.effective_cells)}

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


def zoomed_grid(log_density, first, second, data=(), *, sizes=SIZES, zooms: int = ZOOMS) -> Grid:
    """The grid on the box that `zooms` coarse passes found, each onto the range (plus a cell either side) that
    holds all but TAIL_MASS of each marginal on the previous pass; of `sizes`, the first that resolves both
    marginals (EFFECTIVE_CELLS_MIN), else the last.

    log_density(a, b, *data) must be jax-traceable in the two scalars a, b; first and second are the starting
    (low, high) ranges. NaN counts as zero density.
    """
    axes = [np.linspace(*first, ZOOM_SIZE), np.linspace(*second, ZOOM_SIZE)]
    for zoom in range(zooms + 1):  # the last pass measures the marginals that space the final grid's points
        mass = _normalised(np.asarray(evaluate(log_density, *axes, tuple(data))))
        marginals = mass.sum(axis=1), mass.sum(axis=0)
        if zoom < zooms:
            axes = [_zoom(axis, marginal) for axis, marginal in zip(axes, marginals, strict=True)]
    for size in sizes:
        points = [_spaced(axis, marginal, size) for axis, marginal in zip(axes, marginals, strict=True)]
        edges = [_edges(p) for p in points]
        log_density_table = np.asarray(evaluate(log_density, *points, tuple(data)))
        area = np.log(np.diff(edges[0]))[:, None] + np.log(np.diff(edges[1]))[None, :]
        grid = Grid(*points, *edges, _log_normalised(log_density_table + area))
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


def _normalised(table: np.ndarray) -> np.ndarray:
    return np.exp(_log_normalised(table))


def _zoom(axis: np.ndarray, marginal: np.ndarray) -> np.ndarray:
    cumulative = np.cumsum(marginal)
    low = max(int(np.searchsorted(cumulative, TAIL_MASS)) - 1, 0)
    high = min(int(np.searchsorted(cumulative, 1.0 - TAIL_MASS)) + 1, axis.size - 1)
    step = axis[1] - axis[0]
    return np.linspace(axis[low] - step, axis[high] + step, axis.size)


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
