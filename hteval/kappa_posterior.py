"""The exact posterior of htmp-exact's (kappa, scale) by quadrature, with independent draws (SPEC section 8).

At fixed kappa the exact likelihood depends on theta = 2 gamma scale / kappa through an inverse-gamma kernel,
-S / theta - C log theta, and with u = log theta the product's prior (log scale ~ Normal(log scale_ref, 1)) is a
normal in u. The integrand in u, g(u) = -S e^-u - C u - (u - m)^2 / 2, is strictly log-concave: its mode solves
e^w + w = log S + C - m (w = log(S e^-u*)) by a few Newton steps, and Gauss-Hermite nodes about that mode
integrate it to double precision. What is left, the posterior of t = log kappa, is a smooth one-dimensional
density on the prior's range: `hteval.quadrature_1d` tabulates it on a zoomed grid and draws from it exactly by
inverse CDF. Given each kappa, u is drawn exactly by rejection from the log-gamma law exp(-S e^-u - v u),
v = S e^-u*, which bounds the target from above once the prior's log density is replaced by its tangent at the
mode (acceptance exp(-(u - u*)^2 / 2), about 0.7 or more).

Censored eigenvalues. The closed-form censored term (`hteval.densities.laguerre`) sets exp(-x_c / theta) and
|x_o - x_c|^beta to their values at x_c = 0, exact only while the floor f is far below the observed eigenvalues
and theta (float32 and float64 floors). A bfloat16 floor can reach 0.1 of the mean eigenvalue. The posterior is
therefore computed with a mean-field correction: each censored eigenvalue at the mean of a censored eigenvalue
under the Selberg law on [0, f] (mu f, by Aomoto's formula), i.e. S + k mu f in place of S, and
beta k sum_o log(1 - mu f / x_o) added. The exact term lies between the closed form and the closed form times
phi(f)^k, phi(x) = exp(-x / theta) prod_o (1 - x / x_o)^beta; when those two bounds move kappa's or scale's
median or interval ends by more than CENSORING_SD posterior sds, the fit says so and is not called converged.

Numpy and scipy only: no JAX, no compilation.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import gammaln

from hteval.densities.laguerre import ExactStatistics, kappa_terms
from hteval.evidence import normal_log_constant, uniform_log_constant
from hteval.quadrature_1d import Grid1D, zoomed_grid

#: kappa's prior is log-uniform on [KAPPA_MIN, kappa_upper_bound(M)]
KAPPA_MIN = 1e-3
#: a Gaussian layer has kappa near M (beta = kappa / M = 1); the bound leaves a decade above that
KAPPA_MAX_PER_EIGENVALUE = 10.0
KAPPA_MAX_FLOOR = 1e3
LOG_SCALE_SD = 1.0
_HERMITE_NODES = 32
#: bounds on the censored term that move the posterior by more than this many sds make the fit unconverged
CENSORING_SD = 0.1
#: below this bound on the censored term's error (in log-likelihood units) the bounds are not computed
CENSORING_NEGLIGIBLE = 1e-3
_MAX_REJECTION_ROUNDS = 200


def kappa_upper_bound(m: int) -> float:
    """The upper end of kappa's prior for a spectrum of M eigenvalues per matrix: max(1e3, 10 M)."""
    return max(KAPPA_MAX_FLOOR, KAPPA_MAX_PER_EIGENVALUE * float(m))


#: where the censoring profile G(mu) = sum_o log(1 - mu floor / x_o) is tabulated: crowded towards mu = 1, where
#: G dives if an observed eigenvalue sits just above the floor
CENSORING_MU = 1.0 - (1.0 - np.linspace(0.0, 1.0, 129)) ** 2


def censoring_profile(slices: list[np.ndarray], floor: float) -> np.ndarray:
    """(slices, len(CENSORING_MU)): G(mu) of each slice's observed eigenvalues at CENSORING_MU."""
    out = np.zeros((len(slices), CENSORING_MU.size))
    if floor <= 0:
        return out
    for i, x in enumerate(slices):
        for start in range(0, x.size, 4096):  # bounded memory on big slices
            ratio = np.minimum(floor * CENSORING_MU[:, None] / x[None, start:start + 4096], 1.0 - 1e-16)
            out[i] += np.sum(np.log1p(-ratio), axis=1)
    return out


@dataclass(frozen=True)
class Censoring:
    """The censored eigenvalues of a layer: per slice their count k and the profile G of its observed ones."""

    k: np.ndarray  # (slices,)
    profile: np.ndarray  # (slices, len(CENSORING_MU))
    floor: float

    def error_bound(self, stats: ExactStatistics, kappa: float, scale: float) -> float:
        """Upper bound on |error| of the closed-form censored term at (kappa, scale), in log-likelihood units:
        k (f / theta - beta G(1)) summed over the slices (see the module's docstring)."""
        theta = 2.0 * stats.gamma * scale / kappa
        return float(np.sum(self.k * (self.floor / theta - kappa / stats.m * self.profile[:, -1])))


def aomoto_mean(kappa: np.ndarray, stats: ExactStatistics, k: float) -> np.ndarray:
    """E[x_c / f] of one of k censored eigenvalues under the Selberg law on [0, f] with exponents (alpha, 0)
    and beta = kappa / M (Aomoto): (alpha + 1 + (k - 1) c) / (alpha + 2 + 2 (k - 1) c), c = beta / 2."""
    beta = kappa / stats.m
    alpha = kappa / (2.0 * stats.gamma) - 1.0 - kappa * (stats.m - 1) / (2.0 * stats.m)
    c = beta / 2.0
    return (alpha + 1.0 + (k - 1.0) * c) / (alpha + 2.0 + 2.0 * (k - 1.0) * c)


class _Likelihood:
    """t = log kappa -> (A, C, S) of log L = A - S e^-u - C u (u = log theta), one censoring variant."""

    def __init__(self, stats: ExactStatistics, censoring: Censoring | None, variant: str):
        self.stats, self.censoring, self.variant = stats, censoring, variant

    def __call__(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        kappa = np.exp(t)
        a, _, _ = kappa_terms(self.stats, kappa)
        c, s = self.theta_terms(t)
        for k, mu, profile in self._censored(kappa):
            a = a + kappa / self.stats.m * k * np.interp(mu, CENSORING_MU, profile)
        return a, c, s

    def theta_terms(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(C, S) alone: what drawing theta given kappa needs, without A's O(M) lgamma calls per kappa."""
        kappa = np.exp(t)
        c = self.stats.n_slices * kappa * self.stats.big_n / 2.0
        s = np.full(kappa.shape, float(np.sum(self.stats.total)))
        for k, mu, _ in self._censored(kappa):
            s = s + k * mu * self.censoring.floor
        return c, s

    def _censored(self, kappa: np.ndarray):
        """(k, mu, profile) of each censored slice under this variant; nothing for the closed form."""
        if self.censoring is None or self.variant == "closed":
            return
        for k, profile in zip(self.censoring.k, self.censoring.profile, strict=True):
            if k > 0:
                mu = aomoto_mean(kappa, self.stats, k) if self.variant == "mean-field" else np.ones(kappa.shape)
                yield k, mu, profile


def _mode(s: np.ndarray, c: np.ndarray, mean: np.ndarray, sd: float = LOG_SCALE_SD) -> tuple[np.ndarray, np.ndarray]:
    """Mode u* of g(u) = -s e^-u - c u - (u - mean)^2 / (2 sd^2) and v = s e^-u*: w = log v solves
    sd^2 e^w + w = z, z = log s + sd^2 c - mean (then u* = sd^2 (v - c) + mean)."""
    var = sd**2
    z = np.log(s) + var * c - mean
    # right of the root of the convex, increasing sd^2 e^w + w - z (positive at w = z, and at log(z / sd^2) once
    # z > sd^2): Newton is monotone from there
    w = np.where(z > var, np.log(np.maximum(z, var) / var), z)
    for _ in range(60):
        step = (var * np.exp(w) + w - z) / (var * np.exp(w) + 1.0)
        w = w - step
        if np.all(np.abs(step) <= 1e-14 * np.maximum(1.0, np.abs(w))):
            break
    v = np.exp(w)
    return var * (v - c) + mean, v


@functools.cache
def _hermite() -> tuple[np.ndarray, np.ndarray]:
    x, weights = np.polynomial.hermite.hermgauss(_HERMITE_NODES)
    return x, np.log(weights) + x**2


def _scale_integral(s: np.ndarray, c: np.ndarray, mean: np.ndarray, sd: float = LOG_SCALE_SD):
    """log int exp(g(u)) du, g(u) = -s e^-u - c u - (u - mean)^2 / (2 sd^2), and the conditional mean and second
    moment of u (elementwise over arrays), by Gauss-Hermite nodes about the mode, scaled by its curvature."""
    mode, v = _mode(s, c, mean, sd)
    var = sd**2
    curvature_sd = 1.0 / np.sqrt(v + 1.0 / var)
    x, log_weights = _hermite()
    delta = math.sqrt(2.0) * curvature_sd[..., None] * x
    # g(u* + delta) - g(u*) = -v (e^-delta - 1 + delta) - delta^2 / (2 sd^2): no large terms cancel
    log_w = log_weights - v[..., None] * (np.expm1(-delta) + delta) - delta**2 / (2 * var)
    peak = np.max(log_w, axis=-1, keepdims=True)
    w_node = np.exp(log_w - peak)
    total = np.sum(w_node, axis=-1)
    at_mode = -v - c * mode - (mode - mean) ** 2 / (2 * var)
    log_integral = at_mode + np.log(math.sqrt(2.0) * curvature_sd) + peak[..., 0] + np.log(total)
    cond_mean = np.sum(w_node * delta, axis=-1) / total
    cond_var = np.sum(w_node * delta**2, axis=-1) / total - cond_mean**2
    cond_mean = cond_mean + mode
    return log_integral, cond_mean, cond_var + cond_mean**2


@dataclass
class KappaPosterior:
    """The posterior of (log kappa, log theta) for one layer and one censoring variant."""

    grid: Grid1D
    likelihood: _Likelihood
    log_scale_ref: float
    log_two_gamma: float
    log_scale_sd: float = LOG_SCALE_SD

    def prior_mean_u(self, t: np.ndarray) -> np.ndarray:
        """Mean of u = log theta under the scale prior, given t = log kappa."""
        return self.log_scale_ref - t + self.log_two_gamma

    def draw(self, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """n independent draws of log_kappa, kappa, log_scale, scale."""
        t, _ = self.grid.draw(n, rng)
        c, s = self.likelihood.theta_terms(t)
        u = _draw_log_theta(rng, s, c, self.prior_mean_u(t), self.log_scale_sd)
        log_scale = u + t - self.log_two_gamma
        return {"log_kappa": t, "kappa": np.exp(t), "log_scale": log_scale, "scale": np.exp(log_scale)}

    def quantiles(self, q: np.ndarray) -> np.ndarray:
        """Quantiles of t = log kappa (exact under the grid's piecewise-exponential density)."""
        return self.grid.quantiles(q)

    def log_evidence(self) -> float:
        """log p(x), the labelled eigenvalues' prior predictive density: the grid's integral over t of the
        likelihood with u integrated against its normal prior, with what that leaves out: t's uniform density on
        the support, the normal's 1 / sqrt(2 pi) sd, and the orderings. The joint density counts the sorted
        spectrum with k censored (log M! - log k! per matrix, `hteval.densities.htmp_exact`); the iid models'
        likelihoods count labelled eigenvalues, so that is subtracted here to compare the two on the same space."""
        stats = self.likelihood.stats
        orderings = float(np.sum(gammaln(stats.m + 1.0) - gammaln(stats.n_censored + 1.0)))
        return (self.grid.log_total + uniform_log_constant(*self.grid.support)
                + normal_log_constant(self.log_scale_sd) - orderings)


def support(m: int) -> tuple[float, float]:
    """The range of t = log kappa under the prior: [log KAPPA_MIN, log kappa_upper_bound(M)]."""
    return math.log(KAPPA_MIN), math.log(kappa_upper_bound(m))


def posterior(stats: ExactStatistics, *, scale_ref: float, censoring: Censoring | None = None,
              variant: str = "mean-field", t_range: tuple[float, float] | None = None,
              log_scale_sd: float = LOG_SCALE_SD) -> KappaPosterior:
    """The exact posterior of one layer under the product's priors (log kappa uniform on
    [KAPPA_MIN, kappa_upper_bound(M)], log scale ~ Normal(log scale_ref, 1)); t_range and log_scale_sd replace
    those priors' range and sd (the evidence's prior sensitivity)."""
    likelihood = _Likelihood(stats, censoring, variant)
    log_two_gamma = math.log(2.0 * stats.gamma)
    log_scale_ref = math.log(scale_ref)

    last: dict[str, np.ndarray] = {}

    def log_density(t):
        a, c, s = likelihood(t)
        log_integral, cond_mean, cond_second = _scale_integral(s, c, log_scale_ref - t + log_two_gamma,
                                                               log_scale_sd)
        last.update(t=t, mean=cond_mean, second=cond_second)  # the final grid's moments are read from here
        return a + log_integral

    def conditional_moments(t):
        if last.get("t") is not t:
            log_density(t)
        shift = t - log_two_gamma  # log scale = u + t - log 2 gamma given t
        return {"log_scale": (last["mean"] + shift, last["second"] + 2 * shift * last["mean"] + shift**2)}

    grid = zoomed_grid(log_density, support(stats.m) if t_range is None else t_range,
                       conditional_moments=conditional_moments)
    return KappaPosterior(grid, likelihood, log_scale_ref, log_two_gamma, log_scale_sd)


def _draw_log_theta(rng: np.random.Generator, s: np.ndarray, c: np.ndarray, mean: np.ndarray,
                    sd: float = LOG_SCALE_SD) -> np.ndarray:
    """Exact draws of u = log theta from exp(g(u)), g(u) = -s e^-u - c u - (u - mean)^2 / (2 sd^2), one per element.

    Where the likelihood is informative (v = s e^-u* >= 1) by rejection from exp(-s e^-u - v u), i.e.
    e^-u ~ Gamma(v, rate s), accepted with probability exp(-(u - u*)^2 / (2 sd^2)); where the prior dominates
    (v < 1, a tiny kappa N) from the prior N(mean, sd), accepted with probability exp(-c (e^y - 1 - y)),
    y = log(s / c) - u. Both ratios are at most 1, so every accepted draw is exact. Draws still pending after
    _MAX_REJECTION_ROUNDS rounds come from the inverse CDF of the density on a fine grid about its mode.
    """
    mode, v = _mode(s, c, mean, sd)
    out = np.full(s.shape, np.nan)
    pending = np.arange(s.size)
    for _ in range(_MAX_REJECTION_ROUNDS):
        if pending.size == 0:
            return out
        gamma_side = v[pending] >= 1.0
        u = np.empty(pending.size)
        log_accept = np.empty(pending.size)
        i, j = pending[gamma_side], pending[~gamma_side]
        u[gamma_side] = np.log(s[i]) - _log_gamma_variates(rng, v[i])
        log_accept[gamma_side] = -((u[gamma_side] - mode[i]) ** 2) / (2 * sd**2)
        u[~gamma_side] = mean[j] + sd * rng.standard_normal(j.size)
        y = np.log(s[j] / c[j]) - u[~gamma_side]
        with np.errstate(over="ignore"):
            log_accept[~gamma_side] = -c[j] * (np.expm1(y) - y)
        accept = np.log(rng.uniform(size=pending.size)) < log_accept
        out[pending[accept]] = u[accept]
        pending = pending[~accept]
    out[pending] = _inverse_cdf_log_theta(rng, mode[pending], v[pending], sd)
    return out


def _log_gamma_variates(rng: np.random.Generator, shape: np.ndarray) -> np.ndarray:
    """log of Gamma(shape, 1) variates, without underflow for small shapes: G = G' U^(1/shape), G' ~ Gamma(shape
    + 1), so log G = log G' + log U / shape."""
    small = shape < 1.0
    boost = np.where(small, 1.0, 0.0)
    with np.errstate(divide="ignore"):
        log_g = np.log(rng.gamma(shape + boost))
    return log_g + np.where(small, np.log(rng.uniform(size=shape.shape)) / shape, 0.0)


def _inverse_cdf_log_theta(rng, mode, v, sd: float = LOG_SCALE_SD, nodes: int = 513,
                           width: float = 40.0) -> np.ndarray:
    """Draws by inverse CDF of g on a grid of `nodes` points within `width` curvature sds of each mode, the log
    density linear between nodes (vectorised over the draws)."""
    if mode.size == 0:
        return mode
    curvature_sd = 1.0 / np.sqrt(v + 1.0 / sd**2)
    delta = curvature_sd[:, None] * np.linspace(-width, width, nodes)
    log_p = -v[:, None] * (np.expm1(-delta) + delta) - delta**2 / (2 * sd**2)
    draws = np.empty(mode.size)
    for k in range(mode.size):  # rare: only draws that rejection could not settle
        grid = Grid1D(delta[k], log_p[k], (-np.inf, np.inf))
        draws[k] = mode[k] + grid.draw(1, rng)[0][0]
    return draws


@dataclass
class ExactFit:
    """A layer's exact posterior with the checks that say whether its draws can be trusted."""

    posterior: KappaPosterior
    censoring: dict
    reasons: list[str]
    #: the layer's log evidence (`hteval.evidence.Evidence`), where the model computed it
    evidence: Any = None

    def problems(self) -> list[str]:
        return self.posterior.grid.problems("log kappa") + self.reasons

    def checks(self) -> dict:
        out = {**self.posterior.grid.checks(), "censoring": self.censoring}
        if self.evidence is not None:
            out["evidence"] = self.evidence.checks()
        return out


def fit(stats: ExactStatistics, *, scale_ref: float, censoring: Censoring | None = None) -> ExactFit:
    """The posterior (with the mean-field censored term where anything is censored) and, where the censored term's
    error bound is not negligible, how far its two bounds move the posterior."""
    censored = censoring is not None and bool(np.any(censoring.k > 0))
    post = posterior(stats, scale_ref=scale_ref, censoring=censoring, variant="mean-field" if censored else "closed")
    if not censored:
        return ExactFit(post, {}, [])
    kappa = float(np.exp(post.quantiles(np.array([0.5]))[0]))
    scale = float(np.exp(post.grid.moments()["log_scale"][0]))
    mean_eigenvalue = float(np.sum(stats.total) / np.sum(stats.n_observed))
    report = {"n_censored": int(np.sum(censoring.k)), "floor_over_mean": censoring.floor / mean_eigenvalue,
              "error_bound": censoring.error_bound(stats, kappa, scale)}
    reasons = []
    if report["error_bound"] > CENSORING_NEGLIGIBLE:
        report["shift_sd"] = {variant: _shift(post, posterior(stats, scale_ref=scale_ref, censoring=censoring,
                                                             variant=variant)) for variant in ("closed", "lower")}
        worst = max(report["shift_sd"].values())
        if not worst <= CENSORING_SD:
            reasons.append(f"censoring: the floor ({report['floor_over_mean']:.2g} of the mean eigenvalue) censors "
                           f"{report['n_censored']} of {stats.m * stats.n_slices} eigenvalues, and the bounds on the "
                           f"censored eigenvalues' term move the posterior by up to {worst:.2f} sd")
    return ExactFit(post, report, reasons)


_QUANTILES = np.array([0.05, 0.5, 0.95])


def _shift(post: KappaPosterior, other: KappaPosterior) -> float:
    """Largest move of log kappa's 5/50/95% quantiles and of log scale's mean and sd, in posterior sds of post."""
    moments, other_moments = post.grid.moments(), other.grid.moments()
    t_sd = moments["x"][1]
    shifts = list(np.abs(post.quantiles(_QUANTILES) - other.quantiles(_QUANTILES)) / t_sd)
    (mean, sd), (other_mean, other_sd) = moments["log_scale"], other_moments["log_scale"]
    shifts += [abs(mean - other_mean) / sd, abs(sd - other_sd) / sd]
    return float(max(shifts))
