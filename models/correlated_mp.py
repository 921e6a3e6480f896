"""Correlated Marchenko-Pastur: columns with a power-law population covariance, t_i ~ i^-nu (SPEC section 3).

nu = 0 is white MP; larger nu spreads the population spectrum, which widens the ESD and lifts its top
eigenvalues without any heavy-tailed entries. The density solves the population-covariance (Silverstein)
equation (`hteval.densities.correlated_mp`) for the continuous power-law population law. Its support is one
interval, so it carries MP's outlier component.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from hteval import evidence, quadrature
from hteval.densities.correlated_mp import (
    BATCH_POINTS,
    correlated_mp_cdf,
    correlated_mp_icdf,
    correlated_mp_logpdf,
    log_density_of_log_batch,
)
from hteval.models import outliers
from hteval.models.observe import PointwiseDensity, observe
from hteval.models.priors import NU_MAX, correlation_exponent_prior, outlier_weight_prior, scale_prior

PARAMETERS = ("nu", "scale", "outlier_weight")
LAW_SITES = ("nu", "scale", "outlier_weight")
# once nu ~ 1 the posterior correlation of nu and scale is ~0.95 (the top eigenvalues trade one against the
# other); a dense mass matrix raised the effective draws per draw there from ~0.2 to ~0.3 (m = 300, nu = 1)
DENSE_MASS = True


def _log_cdf_main(x, gamma, nu, scale, m):
    value = correlated_mp_cdf(x, gamma, nu, scale, m)
    return jnp.where(value > 0, jnp.log(jnp.where(value > 0, value, 1.0)), -jnp.inf)


def log_density(x, p, *, gamma, m, scale_ref):
    main = correlated_mp_logpdf(x, gamma, p["nu"], p["scale"], m)
    return outliers.mix_log(main, outliers.log_density(x, scale_ref), p["outlier_weight"])


def log_cdf(x, p, *, gamma, m, scale_ref):
    main = _log_cdf_main(x, gamma, p["nu"], p["scale"], m)
    return outliers.mix_log(main, outliers.log_cdf(x, scale_ref), p["outlier_weight"])


def draw(key, p, n, *, gamma, m, scale_ref):
    def main(k, size):
        u = jax.random.uniform(k, (size,), minval=1e-12, maxval=1 - 1e-12)
        return correlated_mp_icdf(u, gamma, p["nu"], p["scale"], m)

    return outliers.mix_draw(key, main, n, p["outlier_weight"], scale_ref)


def model(eigenvalues, *, gamma: float, m: int, n_censored: int = 0, floor: float = 0.0, scale_ref: float = 1.0):
    p = {"nu": correlation_exponent_prior(), "scale": scale_prior("scale", scale_ref),
         "outlier_weight": outlier_weight_prior()}
    context = {"gamma": gamma, "m": m, "scale_ref": scale_ref}
    law = PointwiseDensity(lambda x: log_density(x, p, **context))
    observe(law, lambda: log_cdf(floor, p, **context), eigenvalues, n_censored)


# ---------------------------------------------------------------------------------------------------------------
# Exact posterior draws.
#
# For fixed nu the density is a function of x / scale: log f(x | nu, scale) = psi_nu(log(x / scale)) - log x, with
# psi_nu the log-density of log x at scale 1. On a grid over (nu, log scale) each nu's psi is tabulated once, on an
# even grid in t = log(x / scale) over every (eigenvalue, scale) pair of the grid, by the Silverstein solves of
# `hteval.densities.correlated_mp.log_density_of_log_batch`, and each pair is read off the table by cubic
# interpolation: the solves scale with the nu values, not with nu values x scales x eigenvalues. The outlier weight
# is integrated at every grid point (`quadrature.weight_log_marginal`) and drawn from its conditional afterwards.
# The draws' densities interpolate the final grid's tables in nu (four-point Lagrange over its nodes, ~0.05
# posterior sds apart) at edge-aligned positions (as nu moves, the support's edges sweep past a fixed t, but psi at a
# fixed place relative to both edges changes slowly): a draw's log f errs by < 1e-4 at any eigenvalue (measured at
# nu = 1, m = 384, against direct solves), what LOO and the draws of w read.
# ---------------------------------------------------------------------------------------------------------------

SAMPLER = ("exact: quadrature over (nu, log scale) with the outlier weight integrated per grid point, the density "
           "tabulated per nu; independent draws, w from its conditional")
#: `posterior_draws` takes a numpy Generator, not a JAX key
RANDOM = "numpy"
SCALE_REACH = 10.0  # prior sds of log scale either side of log scale_ref on the first grid
#: points per axis of the passes that find the grid's box: their tables are coarse (one row of solves per nu), and
#: a grid with more nu values than this is the final one, tabulated at T_STEP
ZOOM_SIZE = 32
#: the final grid's sizes, finer until it resolves both marginals: each nu costs a row of solves per T_STEP, so the
#: finest is 256 (a posterior 256 points cannot resolve is reported, not chased at 4x the cost)
SIZES = (128, 256)
#: the final grid's step in t = log(x / scale): cubic interpolation errs by < 1e-4 in log f where psi changes
#: fastest (measured), on the smoothing's scale (1% in x) at the support's edges and at the population cells' kinks
#: in the upper bulk
T_STEP = 0.0025
_T_MARGIN = 0.05  # beyond the grid's (eigenvalue, scale) pairs: the draws' scales reach half a cell past its points
_CELLS = 4_000_000  # values per block of the grid's and the draws' interpolated tables: bounded memory


def _interpolate(table, rows, t0, step, t):
    """Cubic (four-point Lagrange) interpolation of rows of an even table (node j of a row at t0 + j step) at
    points t, point i reading row rows[i] (rows of t's shape)."""
    width = table.shape[1]
    position = (t - t0) / step
    index = np.clip(np.floor(position).astype(np.int64), 1, width - 3)
    u = position - index
    flat = (index + width * rows).ravel()
    values = table.ravel()
    at = [values[flat + k - 1].reshape(t.shape) for k in range(4)]
    below, above, beyond = u + 1, u - 1, u - 2
    return (u * above * (at[3] * below - at[0] * beyond) / 6
            + below * beyond * (at[1] * above - at[2] * u) / 2)


class _Tables:
    """psi of each nu (K,) on an even grid of `count` points over [t_low, t_high], and the log of its support's
    edges (K, 2)."""

    def __init__(self, gamma: float, m: float, nu, t_low: float, t_high: float, count: int):
        self.nu = np.asarray(nu, dtype=np.float64)
        self.t0, self.step = t_low, (t_high - t_low) / (count - 1)
        t = np.broadcast_to(t_low + self.step * np.arange(count), (self.nu.size, count))
        self.psi, _, self.edges = log_density_of_log_batch(gamma, self.nu, t, m)

    def __call__(self, rows, t):
        """psi of nu[rows] at t (rows and t broadcast against each other)."""
        rows, t = np.broadcast_arrays(rows, t)
        return _interpolate(self.psi, rows, self.t0, self.step, t)

    def at(self, nu, t):
        """psi at (nu[d], t[d, i]) for nu (D,) between the nodes and t (D, n): Lagrange in nu over the four nearest
        nodes, each read at the position that keeps t's place relative to the two support edges (which move with
        nu)."""
        index, weights = _lagrange_rows(self.nu, nu)
        edges = self.edges[index]  # (D, 4, 2)
        low_k, high_k = edges[..., 0, None], edges[..., 1, None]
        at_draw = np.einsum("dk,dke->de", weights, np.where(np.isfinite(edges), edges, 0.0))
        low_d, high_d = at_draw[:, None, 0, None], at_draw[:, None, 1, None]
        t = t[:, None, :]
        with np.errstate(invalid="ignore"):
            stretched = low_k + (t - low_d) * (high_k - low_k) / (high_d - low_d)
        shifted = t + high_k - high_d  # no lower edge (gamma = 1): the upper one alone is aligned
        mapped = np.where(np.isfinite(low_k), stretched, shifted)
        return np.einsum("dk,dkn->dn", weights, self(index[:, :, None], mapped))


def _lagrange_rows(nodes, at):
    """Indices (D, 4) of the four nodes around each point `at` (nodes ascending, any spacing) and the Lagrange
    weights (D, 4) that interpolate there."""
    index = np.clip(np.searchsorted(nodes, at) - 2, 0, nodes.size - 4)[:, None] + np.arange(4)
    x = nodes[index]
    weights = np.ones_like(x)
    for k in range(4):
        for j in range(4):
            if j != k:
                weights[:, k] *= (at - x[:, j]) / (x[:, k] - x[:, j])
    return index, weights


class _GridDensity:
    """The grid's log posterior over (nu, log scale), w integrated out; it keeps the tables of its last call (the
    final grid's) for the draws."""

    def __init__(self, gamma, m, log_x, outlier_logs, n_censored, log_floor, log_ref, sd=1.0,
                 weight_prior=outliers.PRIOR):
        self.gamma, self.m, self.log_x, self.outlier_logs = gamma, m, log_x, outlier_logs
        self.n_censored, self.log_floor, self.log_ref = n_censored, log_floor, log_ref
        self.sd, self.weight_prior = sd, weight_prior  # the priors of log scale and w (the evidence's widening)
        self.counts = np.concatenate([np.ones(log_x.size), [float(n_censored)]]) if n_censored else np.ones(log_x.size)

    def _terms(self, psi, log_cdf_floor):
        """log f at every eigenvalue and, where censored, log F(floor) as a last column."""
        log_f = psi - self.log_x
        return log_f if not self.n_censored else np.concatenate([log_f, log_cdf_floor[..., None]], axis=-1)

    def __call__(self, nu, log_scale):
        t_low = self.log_x.min() - log_scale.max() - _T_MARGIN
        t_high = self.log_x.max() - log_scale.min() + _T_MARGIN
        count = BATCH_POINTS  # the passes that find the box
        if nu.size > ZOOM_SIZE:  # the final grid: fine enough for its log density and for the draws
            count = BATCH_POINTS * int(np.ceil((t_high - t_low) / T_STEP / BATCH_POINTS))
        self.tables, self.log_scale = _Tables(self.gamma, self.m, nu, t_low, t_high, count), log_scale
        self.log_cdf_floor = None
        if self.n_censored:  # log F(floor) at every grid point, solved directly (the floor lies off the tables)
            t_floor = self.log_floor - np.broadcast_to(log_scale, (nu.size, log_scale.size))
            with np.errstate(divide="ignore"):
                self.log_cdf_floor = np.log(log_density_of_log_batch(self.gamma, nu, t_floor, self.m)[1])
        table = np.empty((nu.size, log_scale.size))
        t = self.log_x[None, None, :] - log_scale[None, :, None]
        rows = max(1, _CELLS // (log_scale.size * self.log_x.size))  # nu values per block: bounded memory
        for start in range(0, nu.size, rows):
            block = slice(start, start + rows)
            psi = self.tables(np.arange(nu.size)[block, None, None], t)
            floor = None if self.log_cdf_floor is None else self.log_cdf_floor[block]
            flat = self._terms(psi, floor).reshape(-1, self.counts.size)
            table[block] = quadrature.weight_log_marginal(flat, self.outlier_logs, self.counts,
                                                          self.weight_prior).reshape(-1, log_scale.size)
        return table - 0.5 * ((log_scale[None, :] - self.log_ref) / self.sd) ** 2

    def at_draws(self, nu, log_scale):
        """The observation terms (D, n [+ 1]) of draws (D,) from the final grid's tables."""
        out = []
        per_block = max(1, _CELLS // (4 * self.log_x.size))  # draws x four nu nodes x eigenvalues: bounded memory
        for start in range(0, nu.size, per_block):
            block = slice(start, start + per_block)
            psi = self.tables.at(nu[block], self.log_x[None, :] - log_scale[block, None])
            log_cdf_floor = None
            if self.n_censored:
                index, weights = _lagrange_rows(self.tables.nu, nu[block])
                rows = np.einsum("dk,dkb->db", weights, self.log_cdf_floor[index])
                cols, col_weights = _lagrange_rows(self.log_scale, log_scale[block])
                log_cdf_floor = np.sum(np.take_along_axis(rows, cols, axis=1) * col_weights, axis=1)
            out.append(self._terms(psi, log_cdf_floor))
        return np.concatenate(out)


def posterior_draws(rng: np.random.Generator, eigenvalues, *, chains, draws, gamma, m, n_censored=0, floor=0.0,
                    scale_ref=1.0, log_likelihood=True):
    """Independent posterior draws (each site shaped (chains, draws) as NUTS names them), the pointwise
    log-likelihood (chains, draws, eigenvalues; None without log_likelihood) and the grid, which carries the log
    evidence."""
    x = np.asarray(eigenvalues, dtype=np.float64)
    log_ref = math.log(scale_ref)
    outlier_logs = outliers.log_density_np(x, scale_ref)
    if n_censored:
        outlier_logs = np.append(outlier_logs, outliers.log_cdf_np(floor, scale_ref))
    arguments = (float(gamma), float(m), np.log(x), outlier_logs, int(n_censored),
                 math.log(floor) if n_censored else 0.0, log_ref)
    density = _GridDensity(*arguments)
    grid = _grid(density)
    nu, log_scale = quadrature.draw(grid, chains * draws, rng)
    terms = density.at_draws(nu, log_scale)
    w = quadrature.weight_draws(terms, outlier_logs, density.counts, outliers.PRIOR, rng)
    loglik = None
    if log_likelihood:
        loglik = outliers.mix_log_np(terms[:, :x.size], outlier_logs[:x.size], w[:, None]).reshape(chains, draws, -1)
    posterior = {"nu": nu, "log_scale": log_scale, "scale": np.exp(log_scale), "outlier_weight": w}
    grid = dataclasses.replace(grid, evidence=_evidence(grid, arguments, log_scale, w))
    return {k: v.reshape(chains, draws) for k, v in posterior.items()}, loglik, grid


def _grid(density: _GridDensity, nu_max: float = NU_MAX) -> quadrature.Grid:
    log_ref, reach = density.log_ref, SCALE_REACH * density.sd
    return quadrature.zoomed_grid(density, (0.0, nu_max), (log_ref - reach, log_ref + reach), table=True,
                                  sizes=SIZES, zoom_size=ZOOM_SIZE, limits=((0.0, nu_max), None), reach_out=True)


def _log_evidence(grid, nu_max: float = NU_MAX, sd: float = 1.0) -> float:
    """log Z: the grid's total with the priors' constants its table leaves out, nu's uniform density and log
    scale's normal one (w is integrated against its normalised Beta prior)."""
    return grid.log_total + evidence.uniform_log_constant(0.0, nu_max) + evidence.normal_log_constant(sd)


def _evidence(grid, arguments, log_scale, w) -> evidence.Evidence:
    """The exact log evidence and the wide one: nu's range doubled about its centre and clipped at 0 (white MP,
    where its domain ends), log scale's sd doubled, w's Beta(1, 20) widened. The draws cannot see nu beyond
    NU_MAX: where the posterior reaches that bound the grid is recomputed under the wide priors."""
    nu_max = evidence.widened(0.0, NU_MAX, (0.0, math.inf))[1]
    wide = {"sd": evidence.WIDE, "weight_prior": evidence.widened_beta(outliers.PRIOR)}
    log_ratio = (evidence.uniform_log_constant(0.0, nu_max) - evidence.uniform_log_constant(0.0, NU_MAX)
                 + evidence.normal_log_ratio(log_scale, arguments[-1], 1.0)
                 + evidence.beta_log_ratio(w, outliers.PRIOR, wide["weight_prior"]))
    at_bound = 0.0 if grid.open_sides[1] else grid.side_mass(1)
    return evidence.evidence(_log_evidence(grid), log_ratio,
                             lambda: _log_evidence(_grid(_GridDensity(*arguments, **wide), nu_max), nu_max,
                                                   wide["sd"]),
                             bound_mass=at_bound)


def batch_log_density(x, p, *, gamma, m, scale_ref):
    """log f at points x (n,) for each of a batch of draws (arrays (D,)): (D, n), solved directly per draw."""
    log_x = np.log(np.asarray(x, dtype=np.float64))
    psi, _, _ = log_density_of_log_batch(gamma, p["nu"], log_x[None, :] - np.log(p["scale"])[:, None], m)
    return outliers.mix_log_np(psi - log_x, outliers.log_density_np(x, scale_ref), p["outlier_weight"][:, None])


def batch_cdf(x, p, *, gamma, m, scale_ref):
    """The CDF at points x (n,) for each of a batch of draws (arrays (D,)): (D, n), solved directly per draw."""
    t = np.log(np.asarray(x, dtype=np.float64))[None, :] - np.log(p["scale"])[:, None]
    _, cdf, _ = log_density_of_log_batch(gamma, p["nu"], t, m)
    w = p["outlier_weight"][:, None]
    return (1 - w) * cdf + w * outliers.cdf_np(x, scale_ref)


#: the t-range of a draw's predictive table reaches this far beyond where the fitted ESD's mean puts the data
_DRAW_REACH = 4.0


def batch_draw(rng: np.random.Generator, p, n, *, gamma, m, scale_ref):
    """n iid eigenvalues for each of a batch of draws: (D, n), in numpy. The CDF of each draw is tabulated on an
    even grid in log x around the fitted scale and inverted by linear interpolation; beyond the grid, the
    smoothed law's power-law tails (F ~ x^a below, 1 - F ~ x^-b above) are continued from its ends."""
    count = 2 * BATCH_POINTS
    t_axis = np.log(scale_ref) - np.log(p["scale"])[:, None] + np.linspace(-_DRAW_REACH, _DRAW_REACH, count)
    _, cdf, _ = log_density_of_log_batch(gamma, p["nu"], t_axis, m)
    cdf = np.maximum.accumulate(cdf, axis=1)
    u = rng.uniform(1e-12, 1 - 1e-12, size=(cdf.shape[0], n))
    t = np.empty_like(u)
    for d in range(cdf.shape[0]):
        t[d] = _invert_table(t_axis[d], cdf[d], u[d])
    main = p["scale"][:, None] * np.exp(t)
    return np.where(rng.uniform(size=main.shape) < p["outlier_weight"][:, None],
                    outliers.draw_np(rng, main.shape, scale_ref), main)


def _invert_table(t_axis, cdf, u):
    """t with F(e^t) = u from F tabulated at t_axis, continued beyond its ends as power laws in x."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.interp(u, cdf, t_axis)
        step = t_axis[1] - t_axis[0]
        low_slope = np.log(cdf[1] / cdf[0]) / step if cdf[0] > 0 else 1.0  # log F against t
        high_slope = np.log((1 - cdf[-2]) / (1 - cdf[-1])) / step if cdf[-1] < 1 else 1.0
        below = t_axis[0] + np.log(u / cdf[0]) / max(low_slope, 1e-3)
        above = t_axis[-1] + np.log((1 - cdf[-1]) / (1 - u)) / max(high_slope, 1e-3)
    t = np.where(u < cdf[0], below, np.where(u > cdf[-1], above, t))
    return np.where(np.isfinite(t), t, np.where(u < 0.5, t_axis[0], t_axis[-1]))
