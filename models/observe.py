"""The one observation rule every model shares: iid eigenvalues above the floor, left-censored counts below it."""

from __future__ import annotations

import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints


class PointwiseDensity(dist.Distribution):
    """A positive-valued law given by its log-density alone (mixtures whose parts have different supports)."""

    support = constraints.positive

    def __init__(self, log_density, *, validate_args=None):
        self._log_density = log_density
        super().__init__(batch_shape=(), validate_args=validate_args)

    def log_prob(self, value):
        return self._log_density(value)


def observe(law, log_cdf_floor, eigenvalues, n_censored: int):
    """Eigenvalues above the floor as the observed site 'obs' (its pointwise log-likelihood feeds PSIS-LOO);
    the n_censored below it contribute n_censored * log F(floor) (SPEC section 1)."""
    with numpyro.plate("eigenvalues", eigenvalues.shape[-1]):
        numpyro.sample("obs", law, obs=eigenvalues)
    if isinstance(n_censored, int) and n_censored == 0:
        return  # known to be zero when the model is built: no censoring term in the compiled graph
    numpyro.factor("censored", n_censored * log_cdf_floor())
