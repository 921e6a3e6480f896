"""Exact draws from a zoomed grid: a bimodal density's modes, moments and quantiles, and the grid's own checks."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp
from scipy import stats

from hteval import quadrature

# a narrow minor mode (10% of the mass, sd 0.2) far from a correlated major one: what a chain misses
WEIGHTS, MEANS = np.array([0.9, 0.1]), np.array([[0.0, 0.0], [3.0, -2.0]])
COVS = np.array([[[1.0, 0.8], [0.8, 1.0]], [[0.04, 0.0], [0.0, 0.04]]])


def _mixture(a, b, weights, means, precisions, log_dets):
    x = jnp.stack([a, b])
    d = x[None, :] - means
    quad = jnp.einsum("ki,kij,kj->k", d, precisions, d)
    return logsumexp(jnp.log(weights) - 0.5 * quad - 0.5 * log_dets)


DATA = (jnp.asarray(WEIGHTS), jnp.asarray(MEANS), jnp.asarray(np.linalg.inv(COVS)),
        jnp.asarray(np.linalg.slogdet(COVS)[1]))


def test_draws_hold_both_modes_with_their_mass_and_shape():
    grid = quadrature.zoomed_grid(_mixture, (-20.0, 20.0), (-20.0, 20.0), DATA)
    assert grid.problems() == []
    a, b = quadrature.draw(grid, 40_000, np.random.default_rng(0))
    minor = (np.abs(a - 3.0) < 1.0) & (np.abs(b + 2.0) < 1.0)
    assert abs(minor.mean() - 0.1) < 0.006  # binomial sd 0.0015
    major_a, major_b = a[~minor], b[~minor]
    assert abs(np.std(major_a) - 1.0) < 0.02 and abs(np.corrcoef(major_a, major_b)[0, 1] - 0.8) < 0.01
    assert stats.kstest(major_a, "norm").pvalue > 1e-3
    assert abs(np.std(a[minor]) - 0.2) < 0.01  # resolved, not smeared over a coarse cell


def test_a_box_that_cuts_the_density_off_is_reported():
    grid = quadrature.zoomed_grid(_mixture, (-1.0, 5.0), (-20.0, 20.0), DATA)  # the major mode half outside
    assert any("edge" in reason for reason in grid.problems())
    assert grid.edge_mass > quadrature.EDGE_MASS_MAX


def test_a_grid_too_coarse_for_its_mass_is_reported():
    grid = quadrature.zoomed_grid(_mixture, (-20.0, 20.0), (-20.0, 20.0), DATA, sizes=(8,))
    assert any("cells only" in reason for reason in grid.problems())


def test_draws_fall_inside_their_cells_and_follow_the_cell_masses():
    grid = quadrature.zoomed_grid(_mixture, (-20.0, 20.0), (-20.0, 20.0), DATA)
    a, b = quadrature.draw(grid, 20_000, np.random.default_rng(1))
    assert np.all(np.diff(grid.first) > 0) and np.all((grid.first > grid.first_edges[:-1])
                                                      & (grid.first < grid.first_edges[1:]))
    assert a.min() >= grid.first_edges[0] and a.max() <= grid.first_edges[-1]
    counts = np.histogram(a, bins=grid.first_edges)[0]
    expected = np.exp(grid.log_mass).sum(axis=1) * a.size
    keep = expected > 5
    assert stats.chisquare(counts[keep], expected[keep] * counts[keep].sum() / expected[keep].sum()).pvalue > 1e-3


def test_points_crowd_where_the_mass_is():
    grid = quadrature.zoomed_grid(_mixture, (-20.0, 20.0), (-20.0, 20.0), DATA)
    widths = np.diff(grid.first_edges)
    near = lambda centre: widths[np.abs(grid.first - centre) < 0.3].mean()  # noqa: E731
    assert near(3.0) < 0.6 * near(-4.0) and near(0.0) < 0.3 * near(-4.0)  # the minor mode, the major, no mode
