"""Inverse HTMP model: lambda = scale / s with s ~ HTMP(gamma, kappa); power-law upper tail (SPEC section 2)."""

from __future__ import annotations

import numpyro

from hteval.densities.inverse_htmp import InverseHTMP, tail_exponent
from hteval.models.observe import observe
from hteval.models.priors import kappa_prior, scale_prior

PARAMETERS = ("kappa", "scale", "tail_exponent")


def model(eigenvalues, *, gamma: float, m: int, n_censored: int = 0, floor: float = 0.0, scale_ref: float = 1.0):
    kappa = kappa_prior()
    scale = scale_prior("scale", scale_ref)
    numpyro.deterministic("T", m / kappa)
    numpyro.deterministic("tail_exponent", tail_exponent(gamma, kappa))
    law = InverseHTMP(gamma, kappa, scale)
    observe(law, lambda: law.log_cdf(floor), eigenvalues, n_censored)
