"""Inverse HTMP model: lambda = scale / s with s ~ HTMP(gamma, kappa); power-law upper tail (SPEC section 2)."""

from __future__ import annotations

import jax
import numpyro

from hteval.densities.inverse_htmp import (
    InverseHTMP,
    inverse_htmp_cdf,
    inverse_htmp_icdf,
    inverse_htmp_log_cdf,
    inverse_htmp_logpdf,
    tail_exponent,
)
from hteval.models.observe import observe
from hteval.models.priors import kappa_prior, scale_prior

PARAMETERS = ("kappa", "scale", "tail_exponent")
LAW_SITES = ("kappa", "scale")


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
