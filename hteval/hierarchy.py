"""Partial pooling of kappa across the layers of a network: a model-level kappa with its interval.

The population model is log kappa_l ~ Normal(mu, tau) truncated to the prior's box [log 1e-3, log kappa_max]
(kappa_max: the largest of the pooled layers' prior bounds, max(1e3, 10 M)), each layer keeping its own scale.
It is fitted in two stages (Lunn et al., Stat. Med. 2013): each layer's posterior draws of log kappa, under the
flat prior on that box with its scale integrated out, are proportional to
the layer's marginal likelihood of log kappa, so a Gaussian kernel density of those draws stands in for it. With
Gaussian kernels and a normal population every layer's log kappa integrates out in closed form,

    p(data_l | mu, tau) = (1/n) sum_i N(d_i; mu, sqrt(tau^2 + h^2)) [Phi((B - m_i)/s) - Phi((A - m_i)/s)] / Z,
    m_i = (d_i tau^2 + mu h^2) / (tau^2 + h^2),  s^2 = tau^2 h^2 / (tau^2 + h^2),
    Z = Phi((B - mu)/tau) - Phi((A - mu)/tau),

so the posterior of (mu, tau) is a two-dimensional function that quadrature on a grid gives exactly up to its
resolution: no sampler, hence nothing that can fail to mix. NUTS was used here first and mixed poorly even so
(ESS 200-300 of 2000 draws, R-hat up to 1.025, divergences): the posterior is a funnel, mu's spread shrinking
with tau, and with a few near-identical layers it reaches down to tau = 0. The grid is placed in three passes
(the prior's box, then around where the posterior is, then a fine grid over that), and its accuracy is
measured, not assumed: the quantiles of mu and tau on the fine grid and on one of half its resolution must agree
to 2 % of a posterior sd, and the fine grid's outer cells must hold < 1e-4 of the mass; otherwise the result
says NOT CONVERGED with the reason. Draws of (mu, tau) pick cells by their mass and a uniform point inside;
each layer's pooled log kappa is then drawn exactly from its conditional, a mixture of the truncated normals
N(m_i, s) weighted by the terms of the sum. Each layer's draws are shrunk toward their mean by
sqrt(1 - h^2/sd^2) before the kernels are placed, so the density keeps the posterior's variance instead of
adding h^2 to it.

What this assumes: layers are independent given (mu, tau), and their scales are not pooled; what it costs: two
parameters, whatever the number of layers. Priors: mu ~ Normal(0, 3) (kappa from ~1e-4 to ~1e4 within 3 sd,
the box's width), tau ~ HalfNormal(2.5) (layers a factor ~12 apart in kappa within one sd is unremarkable).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import log_ndtr, logsumexp

from hteval.errors import InputError
from hteval.infer import float64
from hteval.kappa_posterior import KAPPA_MAX_FLOOR, KAPPA_MIN
from hteval.summary import median_and_interval

#: the prior box of log kappa when no bound is given: the iid models' [1e-3, 1e3]
DEFAULT_BOX = (math.log(KAPPA_MIN), math.log(KAPPA_MAX_FLOOR))

MU_PRIOR_SD = 3.0
TAU_PRIOR_SD = 2.5
#: fewer draws than this make the kernel density of a layer's posterior too coarse to stand for its likelihood
MIN_DRAWS = 100
#: kernels per layer: a layer's draws are thinned to this many of their quantiles (a 1-D density needs no more,
#: and every grid point of the population posterior evaluates layers x kernels terms)
KERNELS = 64


@dataclass
class Pooled:
    """Posterior of the population (mu, tau of log kappa) and of every layer's pooled log kappa."""

    layers: list[str]
    mu: np.ndarray  # (draws,)
    tau: np.ndarray  # (draws,)
    log_kappa: np.ndarray  # (draws, layers)
    prob: float
    diagnostics: dict

    @property
    def kappa(self) -> np.ndarray:
        """Population median kappa exp(mu): the model-level kappa."""
        return np.exp(self.mu)

    def interval(self, draws: np.ndarray) -> tuple[float, float, float]:
        """Median and equal-tailed interval at this result's prob."""
        return median_and_interval(draws, self.prob)

    def table(self):
        """Per-layer pooled kappa (median, ci_low, ci_high) in the order given."""
        import pandas as pd

        rows = [dict(zip(("kappa_median", "kappa_ci_low", "kappa_ci_high"),
                         self.interval(np.exp(self.log_kappa[:, j])), strict=True)) for j in range(len(self.layers))]
        return pd.DataFrame(rows, index=pd.Index(self.layers, name="name"))

    def to_json(self) -> dict:
        median, lo, hi = self.interval(self.kappa)
        tau = self.interval(self.tau)
        return {"kappa": {"median": median, "ci_low": lo, "ci_high": hi},
                "tau": {"median": tau[0], "ci_low": tau[1], "ci_high": tau[2]},
                "prob": self.prob, "n_layers": len(self.layers), "layers": self.layers,
                "diagnostics": self.diagnostics,
                "method": "two-stage partial pooling of log kappa (kernel density of each layer's posterior)"}


def probability_lower(a: Pooled, b: Pooled) -> float:
    """P(model-level kappa of a < that of b), the two networks' posteriors being independent."""
    n = min(a.mu.size, b.mu.size)
    return float(np.mean(a.mu[:n, None] < b.mu[None, :n]))


def _kernel_inputs(draws: Mapping[str, np.ndarray]) -> tuple[list[str], np.ndarray, np.ndarray]:
    layers, centres, widths = [], [], []
    n = min(np.size(d) for d in draws.values()) if draws else 0
    if len(draws) < 2:
        raise InputError("partial pooling needs the kappa posteriors of at least two layers")
    if n < MIN_DRAWS:
        raise InputError(f"partial pooling needs at least {MIN_DRAWS} posterior draws per layer; got {n}")
    for name, kappa in draws.items():
        # every draw of the layer (chains extended by fit's max_draws hold more than others), thinned to quantiles
        d = np.log(np.ravel(np.asarray(kappa, dtype=np.float64)))
        if not np.all(np.isfinite(d)):
            raise InputError("kappa draws must be finite and positive", source=name)
        k = min(KERNELS, n)  # the same number for every layer
        d = np.sort(d)[((np.arange(k) + 0.5) * d.size / k).astype(int)]
        sd = float(np.std(d))
        iqr = float(np.subtract(*np.quantile(d, [0.75, 0.25])))
        h = 0.9 * min(sd, iqr / 1.34) * d.size ** -0.2 if sd > 0 else 1e-3  # Silverman's rule
        h = max(h, 1e-3)
        shrink = math.sqrt(max(1.0 - h**2 / sd**2, 0.0)) if sd > 0 else 1.0
        layers.append(name)
        centres.append(d.mean() + shrink * (d - d.mean()))
        widths.append(h)
    return layers, np.array(centres), np.array(widths)


def _log_box(m, s, box):
    """log(Phi((B - m)/s) - Phi((A - m)/s)), stable on both sides of the box (A, B) and far outside it."""
    a, b = (box[0] - m) / s, (box[1] - m) / s
    # both ends in the upper tail: Phi(b) - Phi(a) = Phi(-a) - Phi(-b), whose logs do not both round to 0
    flip = a > 0
    upper, lower = log_ndtr(jnp.where(flip, -a, b)), log_ndtr(jnp.where(flip, -b, a))
    return upper + jnp.log1p(-jnp.exp(jnp.minimum(lower - upper, -1e-300)))


def _terms(d, h, mu, tau, box):
    """Per kernel: log of its share of p(data_l | mu, tau), and the conditional's mean and sd. d: (L, n), h: (L,)."""
    h = h[:, None]
    v = tau**2 + h**2
    m = (d * tau**2 + mu * h**2) / v
    s = tau * h / jnp.sqrt(v)
    # the kernels' box masses in logs as well: the grid reaches mu far outside the box, where a plain difference
    # of ndtr underflows while the population's own box mass (divided out) stays finite
    log_w = -0.5 * (d - mu) ** 2 / v - 0.5 * jnp.log(2 * jnp.pi * v) + _log_box(m, s, box)
    return log_w, m, s


def _log_posterior(d, h, mu, tau, box):
    """Unnormalised log posterior of (mu, tau) at points (G,); the sum over layers and kernels is done in
    batches of points, so memory stays at batch x layers x kernels."""

    def one(point):
        m, t = point
        log_w, _, _ = _terms(d, h, m, t, box)
        return jnp.sum(logsumexp(log_w, axis=1) - jnp.log(d.shape[1]) - _log_box(m, t, box))

    like = jax.lax.map(one, (mu, tau), batch_size=256)
    prior = jax.scipy.stats.norm.logpdf(mu, 0.0, MU_PRIOR_SD) + jax.scipy.stats.norm.logpdf(tau, 0.0, TAU_PRIOR_SD)
    return like + prior


_log_posterior_jit = jax.jit(_log_posterior)


@dataclass
class _Grid:
    """The posterior on a grid of (z, u) cells: mu = centre(tau) + z * width(tau), tau = tau_scale * (e^u - 1).

    centre and width are the mean and sd of mu given tau under a normal approximation of every layer's posterior
    (precision-weighted mean of the layer means): on this scale the funnel is straight, so one grid resolves both
    its neck at tau = 0, where mu is pinned to a few hundredths, and its mouth, where mu spreads over units. u is
    linear in tau below tau_scale (a typical layer's posterior sd, the resolution tau needs near 0) and
    logarithmic above it, where the tail is prior-dominated and smooth.
    """

    z_edges: np.ndarray
    u_edges: np.ndarray
    means: np.ndarray = field(repr=False)  # per layer: mean and variance of its kernel density of log kappa
    variances: np.ndarray = field(repr=False)
    mass: np.ndarray = field(default_factory=lambda: np.empty(0))  # (n_z, n_u), sums to 1

    @staticmethod
    def layer_moments(d, h) -> tuple[np.ndarray, np.ndarray]:
        """Mean and variance of each layer's kernel density (its kernels' centres d, widths h)."""
        return np.asarray(d).mean(axis=1), np.asarray(d).var(axis=1) + np.asarray(h) ** 2

    @property
    def tau_scale(self) -> float:
        return _tau_scale(self.variances)

    def conditional(self, tau):
        """(centre, width) of mu given tau."""
        precision = 1.0 / (np.asarray(tau)[..., None] ** 2 + self.variances)
        total = precision.sum(axis=-1)
        return (precision * self.means).sum(axis=-1) / total, 1.0 / np.sqrt(total)

    def tau(self, u):
        return self.tau_scale * np.expm1(u)

    def _cells(self):
        """Cell centres as (z, tau, mu) arrays of shape (n_z, n_u), and log of the cell's (mu, tau) area per dz du."""
        z_c, u_c = np.meshgrid(_centres(self.z_edges), _centres(self.u_edges), indexing="ij")
        tau_c = self.tau(u_c)
        centre, width = self.conditional(tau_c)
        return tau_c, centre + z_c * width, np.log(width) + np.log(self.tau_scale) + u_c

    @classmethod
    def evaluate(cls, d, h, moments, z_range, u_range, n_z, n_u, box) -> _Grid:
        grid = cls(np.linspace(*z_range, n_z + 1), np.linspace(*u_range, n_u + 1), *moments)
        tau_c, mu_c, log_area = grid._cells()
        log_p = np.asarray(_log_posterior_jit(d, h, jnp.asarray(mu_c.ravel()), jnp.asarray(tau_c.ravel()),
                                              jnp.asarray(box)))
        # far outside the prior's box a few terms overflow; that is where the posterior is not
        log_p = np.where(np.isnan(log_p), -np.inf, log_p).reshape(n_z, n_u) + log_area
        if not np.any(np.isfinite(log_p)):
            raise InputError("the population posterior is zero on the whole grid")
        mass = np.exp(log_p - np.max(log_p))
        grid.mass = mass / mass.sum()
        return grid

    def support(self, cut: float) -> tuple[tuple[float, float], tuple[float, float]]:
        """The ranges of z and u whose marginal cells hold more than cut of the mass, one cell wider each side."""
        out = []
        for edges, marginal in ((self.z_edges, self.mass.sum(axis=1)), (self.u_edges, self.mass.sum(axis=0))):
            i = np.nonzero(marginal > cut)[0]
            out.append((float(edges[max(i.min() - 1, 0)]), float(edges[min(i.max() + 2, edges.size - 1)])))
        return out[0], out[1]

    def moments(self) -> np.ndarray:
        """Posterior mean and sd of mu and of tau by the midpoint rule: [[mean mu, sd mu], [mean tau, sd tau]]."""
        tau_c, mu_c, _ = self._cells()
        out = []
        for value in (mu_c, tau_c):
            mean = np.sum(self.mass * value)
            out.append([mean, np.sqrt(np.sum(self.mass * (value - mean) ** 2))])
        return np.array(out)

    def edge_mass(self) -> float:
        """Mass in the outer cells, the tau = 0 side excepted (a true boundary of the parameter)."""
        inner = self.mass[1:-1, :-1] if self.u_edges[0] == 0.0 else self.mass[1:-1, 1:-1]
        return float(1.0 - inner.sum())

    def draw(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        cells = rng.choice(self.mass.size, size=n, p=self.mass.ravel())
        i, j = np.unravel_index(cells, self.mass.shape)
        z = self.z_edges[i] + rng.random(n) * np.diff(self.z_edges)[i]
        tau = self.tau(self.u_edges[j] + rng.random(n) * np.diff(self.u_edges)[j])
        centre, width = self.conditional(tau)
        return centre + z * width, tau


def _tau_scale(variances) -> float:
    """Where the grid's u turns from linear to logarithmic in tau: a typical layer's posterior sd of log kappa."""
    return float(np.sqrt(np.mean(variances)))


def _centres(edges):
    return 0.5 * (edges[1:] + edges[:-1])


#: cells per axis of the final grid; its accuracy is checked against a grid of half this resolution
GRID_CELLS = 64
#: the first pass: z within 12 conditional sd, tau up to 5 prior sd
_FIRST_Z, _FIRST_TAU = (-12.0, 12.0), 5 * TAU_PRIOR_SD
#: the quadrature is accepted when the posterior means of mu and tau move by less than this many posterior sd,
#: and their sds by less than this fraction, between the two resolutions
MOMENT_TOLERANCE = 0.01
EDGE_MASS_MAX = 1e-4


def pool_kappa(draws: Mapping[str, np.ndarray], *, prob: float = 0.9, seed: int = 0, samples: int = 2000,
               box: tuple[float, float] = DEFAULT_BOX) -> Pooled:
    """Partial pooling of kappa over layers; draws maps layer name -> its posterior draws of kappa (any shape);
    box: the prior's range of log kappa."""
    with float64():
        return _pool(draws, prob=prob, seed=seed, samples=samples, box=tuple(float(b) for b in box))


def _pool(draws, *, prob, seed, samples, box) -> Pooled:
    layers, d, h = _kernel_inputs(draws)
    d, h = jnp.asarray(d), jnp.asarray(h)
    moments = _Grid.layer_moments(d, h)
    first = (_FIRST_Z, (0.0, float(np.log1p(_FIRST_TAU / _tau_scale(moments[1])))))
    for _ in range(2):  # find the posterior, then frame it
        first = _Grid.evaluate(d, h, moments, *first, 32, 32, box).support(1e-10)
    fine = _Grid.evaluate(d, h, moments, *first, GRID_CELLS, GRID_CELLS, box)
    coarse = _Grid.evaluate(d, h, moments, *first, GRID_CELLS // 2, GRID_CELLS // 2, box)
    mu, tau = fine.draw(np.random.default_rng(seed), samples)
    log_kappa = np.asarray(_draw_layers(jax.random.PRNGKey(seed), d, h, jnp.asarray(mu), jnp.asarray(tau),
                                        jnp.asarray(box)))
    a, b = fine.moments(), coarse.moments()
    shift = float(max(np.max(np.abs(a[:, 0] - b[:, 0]) / a[:, 1]), np.max(np.abs(a[:, 1] / b[:, 1] - 1))))
    return Pooled(layers=layers, mu=mu, tau=tau, log_kappa=log_kappa, prob=prob,
                  diagnostics=_diagnostics(fine, shift))


@jax.jit
def _draw_layers(key, d, h, mu, tau, box):
    def one(key, mu, tau):
        log_w, m, s = _terms(d, h, mu, tau, box)
        k_pick, k_draw = jax.random.split(key)
        pick = jax.random.categorical(k_pick, log_w, axis=1)  # (L,)
        m = jnp.take_along_axis(m, pick[:, None], axis=1)[:, 0]
        s = s[:, 0]
        lo, hi = (box[0] - m) / s, (box[1] - m) / s
        return m + s * jax.random.truncated_normal(k_draw, lo, hi, shape=m.shape)

    return jax.vmap(one)(jax.random.split(key, mu.size), mu, tau)


def _diagnostics(grid: _Grid, shift: float) -> dict:
    reasons = []
    if not shift < MOMENT_TOLERANCE:
        reasons.append(f"the grid's posterior moments move by {shift:.3f} (in sd) between resolutions")
    if not grid.edge_mass() < EDGE_MASS_MAX:
        reasons.append(f"{grid.edge_mass():.1e} of the mass in the grid's outer cells")
    return {"converged": not reasons, "reasons": reasons, "method": "quadrature on a grid",
            "cells": list(grid.mass.shape), "z_range": [float(grid.z_edges[0]), float(grid.z_edges[-1])],
            "tau_range": [float(grid.tau(grid.u_edges[0])), float(grid.tau(grid.u_edges[-1]))],
            "moment_shift": shift, "edge_mass": grid.edge_mass()}


__all__ = ["Pooled", "pool_kappa", "probability_lower"]
