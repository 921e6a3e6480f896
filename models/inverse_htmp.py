"""Inverse HTMP model: lambda = scale / s with s ~ HTMP(gamma, kappa); power-law upper tail (SPEC section 2).

The posterior is drawn exactly (`posterior_draws`, `hteval.models.htmp.exact_posterior` with t = log(scale / x)):
a grid over (log kappa, log scale), independent draws. NUTS on `model` targets the same posterior.
"""

from __future__ import annotations

import jax
import numpy as np
import numpyro

from hteval.densities.htmp import PhiBatch
from hteval.densities.inverse_htmp import (
    InverseHTMP,
    inverse_htmp_cdf,
    inverse_htmp_icdf,
    inverse_htmp_log_cdf,
    inverse_htmp_logpdf,
    tail_exponent,
)
from hteval.models.htmp import exact_posterior, main_draws, main_log_density
from hteval.models.observe import observe
from hteval.models.priors import kappa_prior, scale_prior

PARAMETERS = ("kappa", "scale", "tail_exponent")
LAW_SITES = ("kappa", "scale")
SAMPLER = "exact: quadrature over (log kappa, log scale), independent draws"
#: `posterior_draws` takes a numpy Generator, not a JAX key
RANDOM = "numpy"


def log_density(x, p, *, gamma, m, scale_ref):
    return inverse_htmp_logpdf(x, gamma, p["kappa"], p["scale"])


def cdf(x, p, *, gamma, m, scale_ref):
    return inverse_htmp_cdf(x, gamma, p["kappa"], p["scale"])


def log_cdf(x, p, *, gamma, m, scale_ref):
    return inverse_htmp_log_cdf(x, gamma, p["kappa"], p["scale"])


def draw(key, p, n, *, gamma, m, scale_ref):
    u = jax.random.uniform(key, (n,), minval=1e-12, maxval=1 - 1e-12)
    return inverse_htmp_icdf(u, gamma, p["kappa"], p["scale"])


def model(eigenvalues, *, gamma: float, m: int, n_censored: int = 0, floor: float = 0.0, scale_ref: float = 1.0):
    kappa = kappa_prior()
    scale = scale_prior("scale", scale_ref)
    numpyro.deterministic("T", m / kappa)
    numpyro.deterministic("tail_exponent", tail_exponent(gamma, kappa))
    law = InverseHTMP(gamma, kappa, scale)
    observe(law, lambda: law.log_cdf(floor), eigenvalues, n_censored)


def posterior_draws(rng: np.random.Generator, eigenvalues, *, chains, draws, gamma, m, n_censored=0, floor=0.0,
                    scale_ref=1.0, log_likelihood=True):
    """Independent posterior draws (`hteval.models.htmp.exact_posterior`), the pointwise log-likelihood and the
    grid."""
    posterior, loglik, grid = exact_posterior(rng, eigenvalues, inverse=True, with_outliers=False, chains=chains,
                                              draws=draws, gamma=gamma, m=m, n_censored=n_censored, floor=floor,
                                              scale_ref=scale_ref, log_likelihood=log_likelihood)
    posterior["tail_exponent"] = 1.0 + posterior["kappa"] * (1.0 - gamma) / (2.0 * gamma)  # as `tail_exponent`
    return posterior, loglik, grid


def batch_log_density(x, p, *, gamma, m, scale_ref):
    """log f at points x (n,) for each of a batch of draws (arrays (D,)): (D, n), in numpy."""
    log_x = np.log(np.asarray(x, dtype=np.float64))
    return main_log_density(PhiBatch(gamma, p["kappa"]), np.log(p["scale"])[:, None], log_x, True)[:, 0, :]


def batch_cdf(x, p, *, gamma, m, scale_ref):
    """The CDF at points x (n,) for each of a batch of draws (arrays (D,)): (D, n), in numpy."""
    t = np.log(p["scale"])[:, None] - np.log(np.asarray(x))[None, :]
    return 1.0 - PhiBatch(gamma, p["kappa"])(t, phase=True)


def batch_draw(rng: np.random.Generator, p, n, *, gamma, m, scale_ref):
    """n iid eigenvalues for each of a batch of draws: (D, n), in numpy."""
    return main_draws(rng, p, n, gamma, inverse=True)
