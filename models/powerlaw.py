"""Power-law tail, the field's "alpha": a Pareto tail above a breakpoint xmin over a truncated log-normal bulk.

    f(x) = (1 - w) LogNormal(x; mu, sigma) / Phi((log xmin - mu) / sigma)     for x < xmin,
    f(x) = w (alpha - 1) / xmin (x / xmin)^-alpha                              for x >= xmin,

a proper density over every eigenvalue, with the density falling as x^-alpha (the field's convention).

The likelihood jumps whenever xmin crosses an eigenvalue, so xmin is not sampled by NUTS: it is marginalised
exactly by summing over the candidate breakpoints, the sorted eigenvalues that leave at least MIN_TAIL in the
tail and MIN_BULK in the bulk (uniform prior over them). Given the breakpoint, the tail weight w (prior
Beta(1, 1)) and alpha integrate out in closed form too: the likelihood holds w only as (1 - w)^(bulk + censored)
w^tail, and alpha - 1 (log-uniform prior) as a truncated gamma (`tail_log_evidence`). Prefix sums of log x and
log^2 x make every candidate O(1), so each marginal costs O(M).

What is left is a two-dimensional posterior of the bulk's (mu, sigma), and `posterior_draws` takes it by
quadrature (`hteval.quadrature`) instead of NUTS: on real layers that posterior can have two modes (two
competing breakpoints), and NUTS chains missed the smaller one without any diagnostic noticing (README). Given
each (mu, sigma) draw, the breakpoint, alpha and w are drawn from their exact conditionals, so the draws are
independent and exact up to the grid's cell size.
"""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
from jax.scipy.special import betaln, gammainc, gammaln, log_ndtr, ndtr, ndtri
from scipy import special

from hteval import evidence, quadrature
from hteval.models.priors import (
    ALPHA_MINUS_ONE_HIGH,
    ALPHA_MINUS_ONE_LOW,
    LOG_LOCATION_SD,
    LOG_SPREAD_SD,
    log_location_prior,
    log_spread_prior,
    tail_exponent_prior,
)

PARAMETERS = ("alpha", "xmin", "tail_weight", "mu", "sigma")
SAMPLER = "exact: quadrature over (mu, log sigma), exact draws of the breakpoint, alpha and w given them"
#: `posterior_draws` takes a numpy Generator, not a JAX key
RANDOM = "numpy"
LAW_SITES = ("alpha", "xmin", "tail_weight", "mu", "sigma")
MIN_TAIL = 10
MIN_BULK = 10
# math, not jnp: module constants must not depend on when x64 was enabled
_HALF_LOG_TWO_PI = 0.5 * math.log(2 * math.pi)


def _candidates(n: int) -> tuple[int, int]:
    """First and last (inclusive) index of the sorted eigenvalues that may serve as xmin."""
    first, last = min(MIN_BULK, max(n - MIN_TAIL, 0)), max(n - MIN_TAIL, 0)
    return first, last


#: the array functions the closed forms are written in: JAX's (the numpyro model, traced and differentiated) or
#: numpy's and scipy's (the exact sampler: whole grids at once, no compilation); `ns=` picks one
JAX = SimpleNamespace(xp=jnp, log_ndtr=log_ndtr, betaln=betaln, gammainc=gammainc, gammaln=gammaln)
NUMPY = SimpleNamespace(xp=np, log_ndtr=special.log_ndtr, betaln=special.betaln, gammainc=special.gammainc,
                        gammaln=special.gammaln)


def _prefix_sums(log_x_sorted, ns=JAX):
    """Centred values (no cancellation in sum (l - mu)^2), their prefix sums and the candidate indices j (j values
    in the bulk, the rest in the tail)."""
    xp = ns.xp
    n = log_x_sorted.shape[-1]
    first, last = _candidates(n)
    j = xp.arange(first, last + 1)
    centre = xp.mean(log_x_sorted)
    lc = log_x_sorted - centre
    p1 = xp.concatenate([xp.zeros(1), xp.cumsum(lc)])
    p2 = xp.concatenate([xp.zeros(1), xp.cumsum(lc**2)])
    return centre, lc, p1, p2, j


def tail_statistics(log_x_sorted, ns=JAX):
    """Per candidate breakpoint: tail size n, T = sum log(x / xmin) over the tail, and log xmin."""
    centre, lc, p1, _, j = _prefix_sums(log_x_sorted, ns)
    n_t = lc.shape[-1] - j
    excess = ns.xp.maximum(p1[-1] - p1[j] - n_t * lc[j], 1e-300)  # > 0 unless the whole tail ties with xmin
    return n_t, excess, lc[j] + centre


def tail_log_likelihood(log_x_sorted, alpha):
    """log p(tail | alpha, breakpoint j) for every candidate j."""
    n_t, excess, log_xmin = tail_statistics(log_x_sorted)
    return n_t * jnp.log(alpha - 1.0) - n_t * log_xmin - alpha * excess


def tail_log_evidence(log_x_sorted, ns=JAX, prior=(ALPHA_MINUS_ONE_LOW, ALPHA_MINUS_ONE_HIGH)):
    """log of the tail likelihood integrated over alpha's prior, for every candidate j.

    With e = alpha - 1 log-uniform on [a, b] (`prior`): integral of e^(n-1) exp(-e T) over [a, b] / log(b / a)
    = Gamma(n) T^-n (P(n, bT) - P(n, aT)) / log(b / a), P the regularised lower incomplete gamma function.
    """
    xp = ns.xp
    n_t, excess, log_xmin = tail_statistics(log_x_sorted, ns)
    y_low, y_high = prior[0] * excess, prior[1] * excess
    mass = ns.gammainc(n_t, y_high) - ns.gammainc(n_t, y_low)
    # where the tail is far outside the prior's range the difference underflows: leading asymptotic terms
    leading = xp.where(y_high < n_t, n_t * xp.log(y_high) - y_high - ns.gammaln(n_t + 1.0),
                       (n_t - 1.0) * xp.log(y_low) - y_low - ns.gammaln(n_t))
    log_mass = xp.where(mass > 1e-280, xp.log(xp.where(mass > 1e-280, mass, 1.0)), leading)
    log_range = math.log(math.log(prior[1] / prior[0]))
    return (ns.gammaln(n_t) - n_t * xp.log(excess) + log_mass - log_range) - n_t * log_xmin - excess


def bulk_log_joint(log_x_sorted, mu, sigma, *, n_censored=0, floor=0.0, ns=JAX):
    """log p(bulk, censored count, breakpoint's split | mu, sigma), w integrated out, for every candidate j (the
    last axis; mu and sigma may carry leading axes that broadcast against it)."""
    xp = ns.xp
    centre, lc, p1, p2, j = _prefix_sums(log_x_sorted, ns)
    n_b, n_t = j, lc.shape[-1] - j
    mu_c = mu - centre
    z_break = (lc[j] - mu_c) / sigma
    squares = p2[j] - 2 * mu_c * p1[j] + n_b * mu_c**2
    bulk = (-(p1[j] + n_b * centre) - n_b * (xp.log(sigma) + _HALF_LOG_TWO_PI) - squares / (2 * sigma**2)
            - n_b * ns.log_ndtr(z_break))
    # floor may be 0 when nothing is censored: a stand-in keeps log(0) out of the gradient
    log_floor = xp.log(xp.where(n_censored > 0, floor, 1.0))
    censored = xp.where(n_censored > 0,
                        n_censored * (ns.log_ndtr((log_floor - mu) / sigma) - ns.log_ndtr(z_break)), 0.0)
    return bulk + censored + ns.betaln(1.0 + n_t, 1.0 + n_b + n_censored)


def breakpoint_log_joint(log_x_sorted, alpha, mu, sigma, *, n_censored=0, floor=0.0):
    """log p(data, breakpoint j | alpha, mu, sigma), w integrated out, for every candidate j (ascending xmin).

    log_x_sorted: log eigenvalues in ascending order. Returns (log joint per candidate, candidate indices).
    """
    bulk = bulk_log_joint(log_x_sorted, mu, sigma, n_censored=n_censored, floor=floor)
    return tail_log_likelihood(log_x_sorted, alpha) + bulk, _prefix_sums(log_x_sorted)[4]


def model(eigenvalues, *, gamma: float, m: int, n_censored: int = 0, floor: float = 0.0, scale_ref: float = 1.0):
    alpha = tail_exponent_prior()
    mu, sigma = log_location_prior(scale_ref), log_spread_prior()
    log_joint, j = breakpoint_log_joint(jnp.sort(jnp.log(eigenvalues)), alpha, mu, sigma,
                                        n_censored=n_censored, floor=floor)
    numpyro.factor("marginal_likelihood", jax.nn.logsumexp(log_joint) - jnp.log(j.size))


def posterior_draws(rng: np.random.Generator, eigenvalues, *, chains, draws, gamma, m, n_censored=0, floor=0.0,
                    scale_ref=1.0, log_likelihood=True):
    """Independent posterior draws (each site shaped (chains, draws)), the pointwise log-likelihood (chains,
    draws, eigenvalues in the given order; None without log_likelihood) and the grid it came from, which carries
    the log evidence. numpy and scipy only: nothing is compiled."""
    x_sorted = np.sort(np.asarray(eigenvalues, dtype=np.float64))
    logs = np.log(x_sorted)
    data = (logs, tail_log_evidence(logs, NUMPY), int(n_censored), float(floor), math.log(scale_ref))
    grid = _grid(data)
    n = chains * draws
    mu, log_sigma = quadrature.draw(grid, n, rng)
    sigma = np.exp(log_sigma)
    pick = _draw_breakpoints(rng, mu, sigma, *data[:4])
    n_tail, excess, _ = tail_statistics(logs, NUMPY)
    first, _ = _candidates(x_sorted.size)
    alpha = 1.0 + _truncated_gamma(rng, n_tail[pick], excess[pick], ALPHA_MINUS_ONE_LOW, ALPHA_MINUS_ONE_HIGH)
    j = first + pick
    p = {"alpha": alpha, "mu": mu, "sigma": sigma, "xmin": x_sorted[j],
         "tail_weight": rng.beta(1.0 + x_sorted.size - j, 1.0 + j + n_censored)}
    loglik = None
    if log_likelihood:
        loglik = _pointwise(np.asarray(eigenvalues, dtype=np.float64), p).reshape(chains, draws, -1)
    posterior = {"log_alpha_minus_1": np.log(alpha - 1.0), **p}
    grid = dataclasses.replace(grid, evidence=_evidence(grid, data, mu, log_sigma, pick))
    return {k: np.asarray(v).reshape(chains, draws) for k, v in posterior.items()}, loglik, grid


def _grid(data, location_sd=LOG_LOCATION_SD, spread_sd=LOG_SPREAD_SD) -> quadrature.Grid:
    logs = data[0]
    return quadrature.zoomed_grid(_log_marginal, (float(logs[0]) - 10.0, float(logs[-1]) + 10.0),
                                  (math.log(1e-3), math.log(1e2)), (*data, location_sd, spread_sd), table=True)


def _log_evidence(grid, n_candidates: int, location_sd=LOG_LOCATION_SD, spread_sd=LOG_SPREAD_SD) -> float:
    """log Z: the grid's total with what its table leaves out, the uniform prior over the candidate breakpoints and
    the normal priors' constants of mu and log sigma (alpha and w are integrated against normalised priors)."""
    return (grid.log_total - math.log(n_candidates) + evidence.normal_log_constant(location_sd)
            + evidence.normal_log_constant(spread_sd))


def _evidence(grid, data, mu, log_sigma, pick) -> evidence.Evidence:
    """The exact log evidence and the wide one: mu's and log sigma's prior sds doubled and alpha - 1's log range
    doubled about its centre (its domain is (0, inf)); the breakpoint's and w's uniform priors already span their
    domains. alpha is reweighted integrated out: each draw's breakpoint's tail evidence under the wide range over
    the narrow one, so the draws need not reach the widened range."""
    logs, tail = data[0], data[1]
    wide_alpha = tuple(math.exp(v) for v in evidence.widened(math.log(ALPHA_MINUS_ONE_LOW),
                                                             math.log(ALPHA_MINUS_ONE_HIGH)))
    wide_tail = tail_log_evidence(logs, NUMPY, wide_alpha)
    log_ratio = (evidence.normal_log_ratio(mu, data[-1], LOG_LOCATION_SD)
                 + evidence.normal_log_ratio(log_sigma, 0.0, LOG_SPREAD_SD) + (wide_tail - tail)[pick])
    wide = {"location_sd": evidence.WIDE * LOG_LOCATION_SD, "spread_sd": evidence.WIDE * LOG_SPREAD_SD}
    return evidence.evidence(_log_evidence(grid, tail.size), log_ratio,
                             lambda: _log_evidence(_grid((logs, wide_tail, *data[2:]), **wide), tail.size, **wide))


#: (grid points or draws) x candidate breakpoints per block of the closed forms: bounded memory on big layers
_BLOCK_CELLS = 2_000_000


def _breakpoint_log_joint_given_bulk(logs, tail, mu, sigma, n_censored, floor):
    """log p(data, breakpoint j | mu, sigma) for every candidate j (last axis), alpha and w integrated out (tail:
    `tail_log_evidence`)."""
    return bulk_log_joint(logs, mu, sigma, n_censored=n_censored, floor=floor, ns=NUMPY) + tail


def _log_marginal(mu, log_sigma, logs, tail, n_censored, floor, log_ref, location_sd=LOG_LOCATION_SD,
                  spread_sd=LOG_SPREAD_SD):
    """log p(mu, log sigma | data) up to a constant on the grid (A,) x (B,) -> (A, B): every breakpoint, alpha and
    w integrated out."""
    table = np.empty((mu.size, log_sigma.size))
    rows = max(1, _BLOCK_CELLS // (log_sigma.size * tail.size))
    sigma = np.exp(log_sigma)[None, :, None]
    for start in range(0, mu.size, rows):
        joint = _breakpoint_log_joint_given_bulk(logs, tail, mu[start:start + rows, None, None], sigma,
                                                 n_censored, floor)
        table[start:start + rows] = special.logsumexp(joint, axis=-1)
    # the priors: mu ~ Normal(log scale_ref, 2), sigma ~ LogNormal(0, 1) times the Jacobian d sigma / d log sigma
    return (table - 0.5 * ((mu[:, None] - log_ref) / location_sd) ** 2
            - 0.5 * (log_sigma[None, :] / spread_sd) ** 2)


def _draw_breakpoints(rng, mu, sigma, logs, tail, n_censored, floor):
    """Index (among the candidates) of a breakpoint drawn from p(j | mu, sigma, data) for each (mu, sigma), by
    the largest of log p + Gumbel noise, in blocks (all draws at once would hold draws x candidates floats)."""
    pick = np.empty(mu.size, dtype=int)
    rows = max(1, _BLOCK_CELLS // tail.size)
    for start in range(0, mu.size, rows):
        block = slice(start, start + rows)
        joint = _breakpoint_log_joint_given_bulk(logs, tail, mu[block, None], sigma[block, None], n_censored,
                                                 floor)
        pick[block] = np.argmax(joint + rng.gumbel(size=joint.shape), axis=-1)
    return pick


def _pointwise(x, p):
    """log f(x) (draws, eigenvalues) in numpy: `log_density` for every draw at once."""
    lx = np.log(x)[None, :]
    mu, sigma, w, alpha = (p[k][:, None] for k in ("mu", "sigma", "tail_weight", "alpha"))
    l_break = np.log(p["xmin"])[:, None]
    bulk = (np.log1p(-w) - 0.5 * ((lx - mu) / sigma) ** 2 - np.log(sigma) - _HALF_LOG_TWO_PI - lx
            - special.log_ndtr((l_break - mu) / sigma))
    tail = np.log(w) + np.log(alpha - 1.0) - l_break - alpha * (lx - l_break)
    return np.where(lx < l_break, bulk, tail)


def _truncated_gamma(rng, shape, rate, low, high):
    """Draws of e with density proportional to e^(shape - 1) exp(-rate e) on [low, high], by the inverse CDF.

    The CDF is taken from whichever side of the gamma law the interval sits on (lower or upper regularised
    incomplete gamma function), so neither difference cancels; where the interval holds no representable mass
    the law is squeezed against one end and is drawn there from its exponential approximation.
    """
    y_low, y_high = low * rate, high * rate
    p_low, p_high = special.gammainc(shape, y_low), special.gammainc(shape, y_high)
    q_low, q_high = special.gammaincc(shape, y_low), special.gammaincc(shape, y_high)
    u = rng.uniform(size=np.shape(shape))
    upper = p_low > 0.5
    with np.errstate(all="ignore"):
        y = np.where(upper, special.gammainccinv(shape, q_low - u * (q_low - q_high)),
                     special.gammaincinv(shape, p_low + u * (p_high - p_low)))
        e = np.clip(y / rate, low, high)
        # no mass to invert: the density's slope at the end it is squeezed against sets an exponential there
        squeezed = np.where(upper, q_low - q_high, p_high - p_low) <= 1e-300
        at_high = ~upper
        slope = np.where(at_high, (shape - 1.0) / high - rate, rate - (shape - 1.0) / low)
        step = rng.exponential(size=np.shape(shape)) / np.maximum(slope, 1e-300)
        edge = np.clip(np.where(at_high, high - step, low + step), low, high)
    return np.where(squeezed, edge, e)


def complete_prior(key, draws, eigenvalues, **_):
    """Prior draws of (xmin, tail_weight): a uniform candidate breakpoint and a Beta(1, 1) weight."""
    x_sorted = jnp.sort(eigenvalues)
    first, last = _candidates(x_sorted.size)
    n_draws = draws["alpha"].shape[0]
    k_break, k_weight = jax.random.split(key)
    pick = jax.random.randint(k_break, (n_draws,), first, last + 1)
    return {"xmin": x_sorted[pick], "tail_weight": jax.random.uniform(k_weight, (n_draws,))}


def log_density(x, p, *, gamma, m, scale_ref):
    safe = jnp.where(x > 0, x, 1.0)
    lx, l_break = jnp.log(safe), jnp.log(p["xmin"])
    bulk = (jnp.log1p(-p["tail_weight"]) + jax.scipy.stats.norm.logpdf(lx, p["mu"], p["sigma"]) - lx
            - log_ndtr((l_break - p["mu"]) / p["sigma"]))
    tail = jnp.log(p["tail_weight"]) + jnp.log(p["alpha"] - 1.0) - l_break - p["alpha"] * (lx - l_break)
    return jnp.where(x > 0, jnp.where(x < p["xmin"], bulk, tail), -jnp.inf)


def log_cdf(x, p, *, gamma, m, scale_ref):
    lx, l_break = jnp.log(x), jnp.log(p["xmin"])
    z_break = (l_break - p["mu"]) / p["sigma"]
    bulk = jnp.log1p(-p["tail_weight"]) + log_ndtr((lx - p["mu"]) / p["sigma"]) - log_ndtr(z_break)
    above = jnp.maximum(lx - l_break, 0.0)
    tail = jnp.log1p(-p["tail_weight"] * jnp.exp((1.0 - p["alpha"]) * above))
    return jnp.where(x < p["xmin"], bulk, tail)


def draw(key, p, n, *, gamma, m, scale_ref):
    k_pick, k_u = jax.random.split(key)
    u = jax.random.uniform(k_u, (n,), minval=1e-12, maxval=1 - 1e-12)
    in_tail = jax.random.uniform(k_pick, (n,)) < p["tail_weight"]
    below = ndtr((jnp.log(p["xmin"]) - p["mu"]) / p["sigma"])
    bulk = jnp.exp(p["mu"] + p["sigma"] * ndtri(u * below))
    tail = p["xmin"] * u ** (-1.0 / (p["alpha"] - 1.0))
    return jnp.where(in_tail, tail, bulk)


def probabilities(posterior) -> dict[str, float]:
    """The field's labels as posterior probabilities instead of hard classes."""
    alpha = jnp.asarray(posterior["alpha"])
    return {"p_alpha_below_2": float(jnp.mean(alpha < 2.0)), "p_alpha_above_6": float(jnp.mean(alpha > 6.0))}


def batch_log_density(x, p, *, gamma, m, scale_ref):
    """log f at points x (n,) for each of a batch of draws (arrays (D,)): (D, n), in numpy."""
    return _pointwise(np.asarray(x, dtype=np.float64), {k: np.asarray(v) for k, v in p.items()})


def batch_cdf(x, p, *, gamma, m, scale_ref):
    """The CDF at points x (n,) for each of a batch of draws (arrays (D,)): (D, n), in numpy."""
    lx = np.log(np.asarray(x, dtype=np.float64))[None, :]
    mu, sigma, w, alpha = (np.asarray(p[k])[:, None] for k in ("mu", "sigma", "tail_weight", "alpha"))
    l_break = np.log(np.asarray(p["xmin"]))[:, None]
    bulk = (1 - w) * special.ndtr((lx - mu) / sigma) / special.ndtr((l_break - mu) / sigma)
    tail = 1 - w * np.exp((1 - alpha) * np.maximum(lx - l_break, 0.0))
    return np.where(lx < l_break, bulk, tail)


def batch_draw(rng: np.random.Generator, p, n, *, gamma, m, scale_ref):
    """n iid eigenvalues for each of a batch of draws: (D, n), in numpy."""
    mu, sigma, w, alpha, xmin = (np.asarray(p[k])[:, None] for k in ("mu", "sigma", "tail_weight", "alpha", "xmin"))
    shape = (mu.shape[0], n)
    u = rng.uniform(1e-12, 1 - 1e-12, size=shape)
    below = special.ndtr((np.log(xmin) - mu) / sigma)
    bulk = np.exp(mu + sigma * special.ndtri(u * below))
    tail = xmin * u ** (-1.0 / (alpha - 1.0))
    return np.where(rng.uniform(size=shape) < w, tail, bulk)
