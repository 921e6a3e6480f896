"""HTMP with its exact finite-size likelihood: the joint beta-Laguerre density of all M eigenvalues of the layer.

Same parameters and priors as `htmp`, but the eigenvalues are not treated as iid: their repulsion (beta = kappa/M)
enters through sum log|x_i - x_j| (`hteval.densities.htmp_exact`). The likelihood is one joint density, not a sum
over eigenvalues, so it has no pointwise log-likelihood and takes no part in PSIS-LOO comparisons. Censored
eigenvalues are integrated out over [0, floor] (the density module says how).

For figures and predictive checks, `log_density` and `log_cdf` are HTMP's one-point law (the large-M marginal of
one eigenvalue, what an ESD histogram shows), and `draw` gives exact finite-size spectra.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpyro

from hteval.densities.htmp import htmp_cdf, htmp_log_cdf, htmp_logpdf
from hteval.densities.htmp_exact import htmp_exact_loglik, htmp_exact_sample, log_vandermonde
from hteval.models.priors import kappa_prior, scale_prior

PARAMETERS = ("kappa", "scale")
LAW_SITES = ("kappa", "scale")
DENSE_MASS = True
#: one joint density: no pointwise log-likelihood (no LOO), and M and the censored count fix the program's shape
POINTWISE = False


def statistics(eigenvalues) -> dict:
    """What the likelihood needs of a spectrum beyond its sums, computed once (O(M^2)) outside the sampler."""
    return {"log_vandermonde": log_vandermonde(eigenvalues)}


def log_density(x, p, *, gamma, m, scale_ref):
    return htmp_logpdf(x, gamma, p["kappa"], p["scale"])


def cdf(x, p, *, gamma, m, scale_ref):
    return htmp_cdf(x, gamma, p["kappa"], p["scale"])


def log_cdf(x, p, *, gamma, m, scale_ref):
    return htmp_log_cdf(x, gamma, p["kappa"], p["scale"])


def draw(key, p, n, *, gamma, m, scale_ref):
    """The top n of an exact spectrum of M = max(m, n) eigenvalues, in random order like the iid models' draws."""
    spectrum = htmp_exact_sample(key, max(int(m), n), gamma, p["kappa"], p["scale"])
    return spectrum[-n:]


def model(eigenvalues, *, gamma: float, m: int, n_censored: int = 0, floor: float = 0.0, scale_ref: float = 1.0,
          log_vandermonde: float = 0.0):
    kappa = kappa_prior()
    scale = scale_prior("scale", scale_ref)
    numpyro.deterministic("T", m / kappa)
    numpyro.factor("joint", htmp_exact_loglik(
        log_vandermonde, jnp.sum(jnp.log(eigenvalues)), jnp.sum(eigenvalues), n=eigenvalues.shape[-1],
        n_censored=n_censored, floor=floor, gamma=gamma, kappa=kappa, scale=scale))
