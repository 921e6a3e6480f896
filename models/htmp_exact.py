"""HTMP with its exact finite-size likelihood: the joint beta-Laguerre density of all M eigenvalues of the layer.

Same parameters and priors as `htmp`, but the eigenvalues are not treated as iid: their repulsion (beta = kappa/M)
enters through sum log|x_i - x_j| (`hteval.densities.htmp_exact`). The likelihood is one joint density, not a sum
over eigenvalues, so it has no pointwise log-likelihood and takes no part in PSIS-LOO comparisons. Censored
eigenvalues are integrated out over [0, floor] (the density module says how).

For figures and predictive checks, `log_density` and `log_cdf` are HTMP's one-point law (the large-M marginal of
one eigenvalue, what an ESD histogram shows), and `draw` gives exact finite-size spectra.
"""

from __future__ import annotations

import numpy as np
import numpyro

from hteval.densities.htmp_exact import htmp_exact_loglik, htmp_exact_sample, log_vandermonde, size_bucket
from hteval.models.htmp import cdf, log_cdf, log_density  # the one-point law is HTMP's
from hteval.models.priors import kappa_prior, scale_prior

__all__ = ["cdf", "draw", "log_cdf", "log_density", "model", "statistics", "static_bound"]

PARAMETERS = ("kappa", "scale")
LAW_SITES = ("kappa", "scale")
DENSE_MASS = True
#: one joint density: no pointwise log-likelihood (no LOO). The model reads only the spectrum's statistics, never
#: the eigenvalue array, and the static bound on M is a power of two (`size_bucket`): layers and simulations of
#: similar sizes share one compiled program whatever their censored counts.
POINTWISE = False


def static_bound(rec) -> dict:
    """Static model arguments for a layer: the bucket of its size M."""
    return {"size": size_bucket(rec.M)}


def statistics(eigenvalues) -> dict:
    """The spectrum's sufficient statistics, computed once (O(M^2) for the pairwise sum) outside the sampler."""
    x = np.asarray(eigenvalues, dtype=np.float64)
    return {"log_vandermonde": log_vandermonde(x), "log_sum": float(np.sum(np.log(x))), "total": float(np.sum(x)),
            "n_observed": float(x.size)}


def draw(key, p, n, *, gamma, m, scale_ref):
    """The top n of an exact spectrum of M = max(m, n) eigenvalues (ascending)."""
    spectrum = htmp_exact_sample(key, max(int(m), n), gamma, p["kappa"], p["scale"])
    return spectrum[-n:]


def model(eigenvalues, *, gamma: float, m: int, n_censored: int = 0, floor: float = 0.0, scale_ref: float = 1.0,
          log_vandermonde: float = 0.0, log_sum: float = 0.0, total: float = 0.0, n_observed: float = 0.0,
          size: int = 16):
    """eigenvalues is not read (see POINTWISE): the statistics carry all the likelihood needs."""
    kappa = kappa_prior()
    scale = scale_prior("scale", scale_ref)
    numpyro.deterministic("T", m / kappa)
    numpyro.factor("joint", htmp_exact_loglik(log_vandermonde, log_sum, total, n=n_observed, n_censored=n_censored,
                                              floor=floor, gamma=gamma, kappa=kappa, scale=scale, size=size))
