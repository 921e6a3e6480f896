"""Exact draws from a unimodal one-dimensional log density tabulated on a zoomed grid (numpy only).

The grid starts on the whole support (a prior's range) and zooms onto the range that holds all but TAIL_MASS of
the mass on each side, keeping a cell of margin, until the mass is resolved; a posterior far narrower than the
first grid's spacing is found in a few passes. Between nodes the log density is taken as linear, so each cell is
an exponential density whose mass and quantiles are closed forms: a draw picks a cell by its mass and inverts
that cell's CDF exactly.

Two checks say whether the grid can be trusted (`Grid1D.problems`): the mass in the two edge cells (the box cut
the density off, or the density presses against the support's bound), and the agreement of the posterior
moments computed from every node and from every other node (the resolution).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

COARSE_SIZE = 65  # nodes of the passes that find the box
SIZE = 129  # nodes of the final grid (odd: every other node is the half-resolution grid)
MAX_ZOOMS = 6
TAIL_MASS = 1e-12  # mass each zoom may leave outside its box, per side
EDGE_MASS_MAX = 1e-4
#: the moments from every node and from every other node must agree to this fraction of a posterior sd
RESOLUTION_SD = 0.01


@dataclass(frozen=True)
class Grid1D:
    """A log density at ascending nodes, linear between them."""

    points: np.ndarray
    log_density: np.ndarray  # unnormalised
    support: tuple[float, float]
    #: per-node quantities whose posterior mean and sd the resolution check compares (name -> (mean, second
    #: moment) given the node), beside the variable itself
    conditional_moments: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    @property
    def log_masses(self) -> np.ndarray:
        """log mass of each cell (normalised), the log density linear within it."""
        return _log_cell_masses(self.points, self.log_density)

    @property
    def log_total(self) -> float:
        """log of the integral of the (unnormalised) density over the grid's box: what a model's log evidence is
        built from. Linear interpolation of a concave log density falls short by O(h^2) (1e-3 relative at 129
        nodes over a normal's +-7 sd); one Richardson step against every other node (an odd count shares both
        ends) removes that error's leading term (to 1e-6 there)."""
        full = _log_sum(_raw_log_cell_masses(self.points, self.log_density))
        if self.points.size % 2 == 0 or self.points.size < 5:
            return full
        half = _log_sum(_raw_log_cell_masses(self.points[::2], self.log_density[::2]))
        return full + (full - half) / 3.0

    @property
    def edge_mass(self) -> float:
        mass = np.exp(self.log_masses)
        return float(mass[0] + mass[-1])

    def moments(self, step: int = 1) -> dict[str, tuple[float, float]]:
        """Posterior mean and sd of the variable and of each conditional quantity, from every `step`-th node:
        exact for the piecewise-exponential density, with conditional quantities linear within a cell."""
        points, log_density = self.points[::step], self.log_density[::step]
        mass = np.exp(_log_cell_masses(points, log_density))
        slope = np.where(mass > 0, np.diff(log_density), 0.0)
        y_mean, y_var = _exponential_moments(slope)
        h = np.diff(points)
        x_mean = points[:-1] + h * y_mean
        out = {"x": _mean_sd(mass, x_mean, x_mean**2 + h**2 * y_var)}
        for name, (mean, second) in self.conditional_moments.items():
            mean, second = mean[::step], second[::step]
            out[name] = _mean_sd(mass, mean[:-1] + np.diff(mean) * y_mean, second[:-1] + np.diff(second) * y_mean)
        return out

    def resolution_shift(self) -> dict[str, float]:
        """Largest change, in posterior sds, of each mean and sd between the full and the half-resolution grid."""
        full, half = self.moments(1), self.moments(2)
        return {name: max(abs(full[name][0] - half[name][0]), abs(full[name][1] - half[name][1]))
                / max(full[name][1], 1e-300) for name in full}

    def checks(self) -> dict[str, float | int | dict[str, float]]:
        return {"grid_points": int(self.points.size), "edge_mass": self.edge_mass,
                "resolution_shift_sd": self.resolution_shift(),
                "box": [float(self.points[0]), float(self.points[-1])]}

    def problems(self, label: str = "x") -> list[str]:
        """Why draws from this grid would not represent the density (empty when they do)."""
        reasons = []
        mass = np.exp(self.log_masses)
        low, high = self.support
        for end, cell_mass, bound, side in ((self.points[0], mass[0], low, "lower"),
                                            (self.points[-1], mass[-1], high, "upper")):
            if cell_mass > EDGE_MASS_MAX / 2:
                where = (f"at the prior's {side} bound" if np.isclose(end, bound, rtol=0, atol=1e-9)
                         else f"at the grid's {side} edge")
                reasons.append(f"quadrature: {cell_mass:.1e} of the {label} mass in the last cell {where}")
        for name, shift in self.resolution_shift().items():
            if not shift <= RESOLUTION_SD:
                reasons.append(f"quadrature: the {label if name == 'x' else name} moments move by {shift:.3f} sd "
                               f"between {self.points.size} and {self.points[::2].size} nodes")
        return reasons

    def quantiles(self, q: np.ndarray) -> np.ndarray:
        """Quantiles of the piecewise-exponential density (exact, no draws)."""
        log_mass = self.log_masses
        cumulative = np.concatenate([[0.0], np.cumsum(np.exp(log_mass))])
        cumulative /= cumulative[-1]
        cell = np.clip(np.searchsorted(cumulative, q, side="right") - 1, 0, log_mass.size - 1)
        within = (q - cumulative[cell]) / np.maximum(cumulative[cell + 1] - cumulative[cell], 1e-300)
        slope = np.diff(self.log_density)[cell]
        return self.points[cell] + np.diff(self.points)[cell] * exponential_quantile(np.clip(within, 0, 1), slope)

    def draw(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """n independent draws (and the index of each draw's cell): a cell by its mass, then that cell's
        exponential density inverted exactly."""
        log_mass = self.log_masses
        cumulative = np.cumsum(np.exp(log_mass))
        u = rng.uniform(size=n) * cumulative[-1]
        cell = np.minimum(np.searchsorted(cumulative, u, side="right"), cumulative.size - 1)
        within = (u - (cumulative[cell] - np.exp(log_mass[cell]))) / np.exp(log_mass[cell])  # in [0, 1)
        within = np.clip(within, 0.0, 1.0)
        x0, h = self.points[cell], np.diff(self.points)[cell]
        slope = self.log_density[cell + 1] - self.log_density[cell]  # change of log density over the cell
        return x0 + h * exponential_quantile(within, slope), cell


def zoomed_grid(log_density: Callable[[np.ndarray], np.ndarray], support: tuple[float, float], *,
                size: int = SIZE, coarse: int = COARSE_SIZE, max_zooms: int = MAX_ZOOMS,
                conditional_moments: Callable[[np.ndarray], dict] | None = None) -> Grid1D:
    """The grid of `size` nodes on the box that zooming found. log_density maps an array of points to an array of
    log densities (NaN counts as zero density); conditional_moments(points), if given, returns the per-node
    (mean, second moment) pairs that the resolution check compares too."""
    low, high = support
    points = np.linspace(low, high, coarse)
    values = _finite(log_density(points))
    for _ in range(max_zooms):
        box = _box(points, values, low, high)
        if box[1] - box[0] > 0.5 * (points[-1] - points[0]):
            break
        points = np.linspace(*box, coarse)
        values = _finite(log_density(points))
    box = _box(points, values, low, high)
    points = np.linspace(*box, size)
    values = _finite(log_density(points))
    extra = conditional_moments(points) if conditional_moments is not None else {}
    return Grid1D(points, values, (low, high), extra)


def _finite(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    values = np.where(np.isnan(values) | (values == np.inf), -np.inf, values)
    if not np.isfinite(values).any():
        raise FloatingPointError("the log density is not finite anywhere on the grid")
    return values


def _box(points: np.ndarray, values: np.ndarray, low: float, high: float) -> tuple[float, float]:
    """The range of cells holding all but TAIL_MASS of the mass on each side, widened by a cell either side."""
    cumulative = np.cumsum(np.exp(_log_cell_masses(points, values)))
    first = max(int(np.searchsorted(cumulative, TAIL_MASS)) - 1, 0)
    last = min(int(np.searchsorted(cumulative, 1.0 - TAIL_MASS)) + 2, points.size - 1)
    return max(points[first], low), min(points[last], high)


def _log_sum(log_values: np.ndarray) -> float:
    peak = np.max(log_values)
    return float(peak + np.log(np.sum(np.exp(log_values - peak))))


def _log_cell_masses(points: np.ndarray, log_density: np.ndarray) -> np.ndarray:
    """log of each cell's mass under a log density linear in the cell, normalised to sum to 1."""
    log_mass = _raw_log_cell_masses(points, log_density)
    peak = np.max(log_mass)
    return log_mass - peak - np.log(np.sum(np.exp(log_mass - peak)))


def _raw_log_cell_masses(points: np.ndarray, log_density: np.ndarray) -> np.ndarray:
    """log of each cell's integral of exp(log density), the log density linear in the cell (not normalised)."""
    a, b = log_density[:-1], log_density[1:]
    both = np.isfinite(a) & np.isfinite(b)  # a cell with an end at zero density gets no mass
    top = np.where(both, np.maximum(a, b), 0.0)
    d = np.where(both, np.abs(b - a), 0.0)
    # mass = h e^a (e^(b-a) - 1) / (b - a), written from the larger end: h e^top (1 - e^-d) / d
    with np.errstate(divide="ignore"):
        factor = np.where(d < 1e-12, 1.0 - d / 2, -np.expm1(-d) / np.where(d < 1e-12, 1.0, d))
        return np.where(both, np.log(np.diff(points)) + top + np.log(factor), -np.inf)


def _exponential_moments(slope: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of y on [0, 1] with density proportional to exp(slope * y)."""
    d = np.abs(slope)
    small = d < 1e-4
    safe = np.where(small, 1.0, d)
    with np.errstate(over="ignore"):
        upper = np.where(small, 0.5 + d / 12, 1.0 / -np.expm1(-safe) - 1.0 / safe)  # the mean for slope >= 0
        var = np.where(small, 1.0 / 12 - d**2 / 720, 1.0 / safe**2 - 0.25 / np.sinh(np.minimum(safe, 1400) / 2) ** 2)
    return np.where(slope >= 0, upper, 1.0 - upper), np.maximum(var, 0.0)


def _mean_sd(weights: np.ndarray, mean: np.ndarray, second: np.ndarray) -> tuple[float, float]:
    m = float(np.sum(weights * mean))
    return m, float(np.sqrt(max(np.sum(weights * second) - m**2, 0.0)))


def exponential_quantile(q: np.ndarray, slope: np.ndarray) -> np.ndarray:
    """The q-quantile, as a fraction of the cell, of a density proportional to exp(slope * y) on y in [0, 1]."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        # y = log(1 + q (e^slope - 1)) / slope, written for either sign of slope without overflow
        positive = slope > 0
        s = np.where(np.abs(slope) < 1e-10, 1.0, slope)
        y_neg = np.log1p(q * np.expm1(s)) / s
        y_pos = 1.0 + np.log(q + (1.0 - q) * np.exp(-s)) / s
        y = np.where(positive, y_pos, y_neg)
    return np.clip(np.where(np.abs(slope) < 1e-10, q, y), 0.0, 1.0)
