"""HTMP model: each eigenvalue iid from HTMP(gamma, kappa, scale), gamma fixed by the layer shape."""

from __future__ import annotations

import jax
import numpyro

from hteval.densities.htmp import HTMP, htmp_cdf, htmp_icdf, htmp_log_cdf, htmp_logpdf
from hteval.models.observe import observe
from hteval.models.priors import kappa_prior, scale_prior

PARAMETERS = ("kappa", "scale")
LAW_SITES = ("kappa", "scale")
#: NUTS with a dense mass matrix: kappa and scale are correlated in the posterior, and on MiniLM layers a diagonal
#: one gave ~300 effective draws per 1000 where the dense one gives ~700. (Not for every model: MP + outliers on a
#: heavy-tailed square layer stalled with it after a short warm-up.)
DENSE_MASS = True


def log_density(x, p, *, gamma, m, scale_ref):
    return htmp_logpdf(x, gamma, p["kappa"], p["scale"])


def cdf(x, p, *, gamma, m, scale_ref):
    return htmp_cdf(x, gamma, p["kappa"], p["scale"])


def log_cdf(x, p, *, gamma, m, scale_ref):
    return htmp_log_cdf(x, gamma, p["kappa"], p["scale"])


def draw(key, p, n, *, gamma, m, scale_ref):
    u = jax.random.uniform(key, (n,), minval=1e-12, maxval=1 - 1e-12)
    return htmp_icdf(u, gamma, p["kappa"], p["scale"])


def model(eigenvalues, *, gamma: float, m: int, n_censored: int = 0, floor: float = 0.0, scale_ref: float = 1.0):
    kappa = kappa_prior()
    scale = scale_prior("scale", scale_ref)
    numpyro.deterministic("T", m / kappa)  # log-gas temperature (SPEC section 3)
    law = HTMP(gamma, kappa, scale)
    observe(law, lambda: law.log_cdf(floor), eigenvalues, n_censored)
