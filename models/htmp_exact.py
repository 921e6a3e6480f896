"""HTMP with its exact finite-size likelihood: the joint beta-Laguerre density of all M eigenvalues of the layer.

Same parameters as `htmp`, but the eigenvalues are not treated as iid: their repulsion (beta = kappa/M) enters
through sum log|x_i - x_j| (`hteval.densities.laguerre`). The likelihood is one joint density, not a sum over
eigenvalues, so it has no pointwise log-likelihood and takes no part in PSIS-LOO comparisons. A conv layer's
slices are separate matrices: its likelihood is the sum of one joint density per slice (SPEC section 4), each with
its own statistics and censored count; the floor of every slice is the layer's (the largest slice floor).

The posterior is drawn exactly (`posterior_draws`, the default engine): at fixed kappa the likelihood is an
inverse-gamma kernel in theta, so the scale integrates out per kappa and the posterior of kappa is a
one-dimensional integral (`hteval.kappa_posterior`), computed in numpy with no compilation. NUTS on the numpyro
`model` below targets the same posterior (`hteval fit --sampler nuts`).

Priors: log kappa uniform on [1e-3, max(1e3, 10 M)] (a Gaussian layer has kappa near M), log scale normal around
the ESD's mean with sd 1 (`hteval.models.priors`).

For figures and predictive checks, `log_density` and `log_cdf` are HTMP's one-point law (the large-M marginal of
one eigenvalue, what an ESD histogram shows), and `draw` gives exact finite-size spectra. This module imports JAX
and numpyro only inside the functions that need them, so the default engine never loads them.
"""

from __future__ import annotations

import numpy as np

from hteval import evidence, kappa_posterior
from hteval.densities.laguerre import ExactStatistics, size_bucket
from hteval.densities.laguerre import statistics as exact_statistics

__all__ = ["cdf", "draw", "log_cdf", "log_density", "model", "posterior_draws", "statistics", "static_bound"]

PARAMETERS = ("kappa", "scale")
LAW_SITES = ("kappa", "scale")
DENSE_MASS = True
#: one joint density: no pointwise log-likelihood (no LOO). The model reads only the spectrum's statistics, never
#: the eigenvalue array, and the static bound on M is a power of two (`size_bucket`): layers and simulations of
#: similar sizes share one compiled program whatever their censored counts.
POINTWISE = False
SAMPLER = ("exact: quadrature over log kappa with the scale integrated per node; independent draws of kappa by "
           "inverse CDF and of the scale by rejection")
#: `posterior_draws` takes a numpy Generator, not a JAX key
RANDOM = "numpy"


def static_bound(rec) -> dict:
    """Static model arguments for a layer: the bucket of its size M (NUTS's compiled program)."""
    return {"size": size_bucket(rec.M)}


def statistics(rec) -> dict:
    """Per-slice sufficient statistics of a layer (arrays of length n_slices), computed once outside any fit:
    O(M^2) per slice for the pairwise sum. `slice_censored` counts each slice's eigenvalues below the floor, and
    `censoring_profile` tabulates sum_o log(1 - mu floor / x_o) per slice at `kappa_posterior.CENSORING_MU`, what
    the censored term's mean-field correction reads."""
    stats = exact_statistics(rec)
    x = np.asarray(rec.eigenvalues, dtype=np.float64)
    ids = np.asarray(rec.slice_ids)
    slices = [x] if rec.n_slices == 1 else [x[ids == s] for s in range(rec.n_slices)]
    return {"log_vandermonde": stats.log_vandermonde, "log_sum": stats.log_sum, "total": stats.total,
            "n_observed": stats.n_observed, "slice_censored": stats.n_censored,
            "censoring_profile": kappa_posterior.censoring_profile(slices, rec.floor)}


def _exact_statistics(gamma, m, floor, log_vandermonde, log_sum, total, n_observed, slice_censored):
    as_array = lambda v: np.atleast_1d(np.asarray(v, dtype=np.float64))  # noqa: E731
    return ExactStatistics(log_vandermonde=as_array(log_vandermonde), log_sum=as_array(log_sum),
                           total=as_array(total), n_observed=as_array(n_observed), n_censored=as_array(slice_censored),
                           m=int(m), gamma=float(gamma), floor=float(floor))


def posterior_draws(rng: np.random.Generator, eigenvalues, *, chains: int, draws: int, gamma: float, m: int,
                    n_censored: int = 0, floor: float = 0.0, scale_ref: float = 1.0, log_likelihood: bool = False,
                    log_vandermonde, log_sum, total, n_observed, slice_censored, censoring_profile=None):
    """Independent posterior draws (each site shaped (chains, draws)), no pointwise log-likelihood (a joint
    density has none), and the quadrature's checks (`.problems()`, `.checks()`) with the log evidence."""
    stats = _exact_statistics(gamma, m, floor, log_vandermonde, log_sum, total, n_observed, slice_censored)
    censoring = None
    if np.any(stats.n_censored > 0):
        censoring = kappa_posterior.Censoring(k=stats.n_censored, profile=np.atleast_2d(censoring_profile),
                                              floor=stats.floor)
    fitted = kappa_posterior.fit(stats, scale_ref=scale_ref, censoring=censoring)
    flat = fitted.posterior.draw(chains * draws, rng)
    flat["T"] = m / flat["kappa"]
    fitted.evidence = _evidence(fitted.posterior, flat["log_scale"], stats, scale_ref, censoring)
    return {k: v.reshape(chains, draws) for k, v in flat.items()}, None, fitted


def _evidence(post, log_scale, stats, scale_ref, censoring) -> evidence.Evidence:
    """The exact log evidence (`KappaPosterior.log_evidence`: the labelled spectrum's, like the iid models') and
    the wide one: log kappa's range doubled about its centre (kappa's domain is (0, inf)), log scale's sd doubled.
    Where the posterior presses on a bound of the range, the draws cannot see beyond it: the grid is recomputed
    under the wide priors (a one-dimensional grid: milliseconds to a fraction of a second)."""
    grid = post.grid
    t_range = evidence.widened(*grid.support)
    log_ratio = (evidence.uniform_log_constant(*t_range) - evidence.uniform_log_constant(*grid.support)
                 + evidence.normal_log_ratio(log_scale, post.log_scale_ref, post.log_scale_sd))
    mass = np.exp(grid.log_masses)
    at_bounds = (mass[0] * np.isclose(grid.points[0], grid.support[0], rtol=0.0, atol=1e-9)
                 + mass[-1] * np.isclose(grid.points[-1], grid.support[1], rtol=0.0, atol=1e-9))

    def recompute():
        wide = kappa_posterior.posterior(stats, scale_ref=scale_ref, censoring=censoring,
                                         variant=post.likelihood.variant, t_range=t_range,
                                         log_scale_sd=evidence.WIDE * post.log_scale_sd)
        return wide.log_evidence()

    return evidence.evidence(post.log_evidence(), log_ratio, recompute, bound_mass=float(at_bounds))


def draw(key, p, n, *, gamma, m, scale_ref):
    """The top n of an exact spectrum of M = max(m, n) eigenvalues (ascending), in JAX."""
    from hteval.densities.htmp_exact import htmp_exact_sample

    spectrum = htmp_exact_sample(key, max(int(m), n), gamma, p["kappa"], p["scale"])
    return spectrum[-n:]


def log_density(x, p, *, gamma, m, scale_ref):
    from hteval.models import htmp

    return htmp.log_density(x, p, gamma=gamma, m=m, scale_ref=scale_ref)


def cdf(x, p, *, gamma, m, scale_ref):
    from hteval.models import htmp

    return htmp.cdf(x, p, gamma=gamma, m=m, scale_ref=scale_ref)


def log_cdf(x, p, *, gamma, m, scale_ref):
    from hteval.models import htmp

    return htmp.log_cdf(x, p, gamma=gamma, m=m, scale_ref=scale_ref)


def model(eigenvalues, *, gamma: float, m: int, n_censored: int = 0, floor: float = 0.0, scale_ref: float = 1.0,
          log_vandermonde=0.0, log_sum=0.0, total=0.0, n_observed=0.0, slice_censored=0.0, censoring_profile=None,
          size: int = 16):
    """The numpyro model for NUTS. eigenvalues is not read (see POINTWISE): the per-slice statistics carry all
    the likelihood needs. n_censored is the layer's total, a concrete 0 when nothing is censored (no censoring
    terms are built); censored slices get the same mean-field term as the exact engine."""
    import jax
    import jax.numpy as jnp
    import numpyro

    from hteval.densities.htmp_exact import htmp_exact_loglik
    from hteval.models.priors import kappa_prior, scale_prior

    # m is traced (model data), so the bound is computed with jnp
    upper = jnp.maximum(kappa_posterior.KAPPA_MAX_FLOOR, kappa_posterior.KAPPA_MAX_PER_EIGENVALUE * m)
    kappa = kappa_prior(upper=upper)
    scale = scale_prior("scale", scale_ref)
    numpyro.deterministic("T", m / kappa)
    uncensored = isinstance(n_censored, int) and n_censored == 0
    stats = [jnp.atleast_1d(jnp.asarray(a, dtype=float))
             for a in (log_vandermonde, log_sum, total, n_observed, slice_censored)]
    if uncensored or censoring_profile is None:
        profiles = jnp.zeros((stats[0].shape[0], kappa_posterior.CENSORING_MU.size))
    else:
        profiles = jnp.atleast_2d(jnp.asarray(censoring_profile, dtype=float))

    def one_slice(v, log_x, total_x, n, k, profile):
        return htmp_exact_loglik(v, log_x, total_x, n=n, n_censored=0 if uncensored else k, floor=floor,
                                 gamma=gamma, kappa=kappa, scale=scale, size=size, censoring_profile=profile)

    numpyro.factor("joint", jnp.sum(jax.vmap(one_slice)(*stats, profiles)))
