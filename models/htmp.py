"""HTMP model: each eigenvalue iid from HTMP(gamma, kappa, scale), gamma fixed by the layer shape."""

from __future__ import annotations

import numpyro

from hteval.densities.htmp import HTMP
from hteval.models.observe import observe
from hteval.models.priors import kappa_prior, scale_prior

PARAMETERS = ("kappa", "scale")


def model(eigenvalues, *, gamma: float, m: int, n_censored: int = 0, floor: float = 0.0, scale_ref: float = 1.0):
    kappa = kappa_prior()
    scale = scale_prior("scale", scale_ref)
    numpyro.deterministic("T", m / kappa)  # log-gas temperature (SPEC section 3)
    law = HTMP(gamma, kappa, scale)
    observe(law, lambda: law.log_cdf(floor), eigenvalues, n_censored)
