"""Priors shared by the ensemble models: weakly informative and scale-free.

* kappa: log-uniform on [1e-3, 1e3], the domain of the HTMP density (kappa -> infinity is the MP model); the
  exact model's range reaches max(1e3, 10 M), since a Gaussian layer has kappa near M.
* scale: log-normal centred on the mean eigenvalue of the observed ESD with a log-sd of 1, so the prior is
  invariant to the normalisation of the weights (it only moves with the data's own scale).
* outlier weight (models with an outlier component): Beta(1, 20), a few percent of eigenvalues at most a priori.
* log-normal location mu (log-normal baseline, power-law bulk): normal centred on log(ESD mean), sd 2 (decades of
  room either way); spread sigma: log-normal with median 1 and log-sd 1.
* power-law exponent alpha (density ~ x^-alpha): alpha - 1 log-uniform on [0.05, 50], i.e. alpha in (1.05, 51),
  no preference between the field's "heavy" (alpha < 2) and "light" (alpha > 6) tails; the tail weight is
  Beta(1, 1) and the breakpoint xmin uniform over its candidates (both marginalised exactly).
* correlation exponent nu (correlated MP): uniform on [0, 3]; nu = 0 is white MP.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist

from hteval.densities.htmp import KAPPA_MAX, KAPPA_MIN

# math, not jnp: computed at import, before the caller may have enabled float64
LOG_KAPPA_LOW = math.log(KAPPA_MIN)
LOG_KAPPA_HIGH = math.log(KAPPA_MAX)


def kappa_prior(upper: float | None = None):
    """log kappa uniform on [log 1e-3, log upper] (default 1e3, the iid HTMP density's domain; the exact model
    passes max(1e3, 10 M), `hteval.kappa_posterior.kappa_upper_bound`)."""
    high = LOG_KAPPA_HIGH if upper is None else jnp.log(upper)
    log_kappa = numpyro.sample("log_kappa", dist.Uniform(LOG_KAPPA_LOW, high))
    return numpyro.deterministic("kappa", jnp.exp(log_kappa))


def scale_prior(name: str, reference: float):
    log_scale = numpyro.sample(f"log_{name}", dist.Normal(jnp.log(reference), 1.0))
    return numpyro.deterministic(name, jnp.exp(log_scale))


def outlier_weight_prior():
    return numpyro.sample("outlier_weight", dist.Beta(1.0, 20.0))


LOG_LOCATION_SD, LOG_SPREAD_SD = 2.0, 1.0


def log_location_prior(reference: float):
    return numpyro.sample("mu", dist.Normal(jnp.log(reference), LOG_LOCATION_SD))


def log_spread_prior():
    return numpyro.sample("sigma", dist.LogNormal(0.0, LOG_SPREAD_SD))


ALPHA_MINUS_ONE_LOW, ALPHA_MINUS_ONE_HIGH = 0.05, 50.0


def tail_exponent_prior():
    log_excess = numpyro.sample("log_alpha_minus_1", dist.Uniform(math.log(ALPHA_MINUS_ONE_LOW),
                                                                 math.log(ALPHA_MINUS_ONE_HIGH)))
    return numpyro.deterministic("alpha", 1.0 + jnp.exp(log_excess))


NU_MAX = 3.0


def correlation_exponent_prior():
    return numpyro.sample("nu", dist.Uniform(0.0, NU_MAX))
