"""Priors shared by the ensemble models: weakly informative and scale-free.

* kappa: log-uniform on [1e-3, 1e3], the domain of the HTMP density (kappa -> infinity is the MP model).
* scale: log-normal centred on the mean eigenvalue of the observed ESD with a log-sd of 1, so the prior is
  invariant to the normalisation of the weights (it only moves with the data's own scale).
* outlier weight (models with an outlier component): Beta(1, 20), a few percent of eigenvalues at most a priori.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist

from hteval.densities.htmp import KAPPA_MAX, KAPPA_MIN

LOG_KAPPA_LOW = float(jnp.log(KAPPA_MIN))
LOG_KAPPA_HIGH = float(jnp.log(KAPPA_MAX))


def kappa_prior():
    log_kappa = numpyro.sample("log_kappa", dist.Uniform(LOG_KAPPA_LOW, LOG_KAPPA_HIGH))
    return numpyro.deterministic("kappa", jnp.exp(log_kappa))


def scale_prior(name: str, reference: float):
    log_scale = numpyro.sample(f"log_{name}", dist.Normal(jnp.log(reference), 1.0))
    return numpyro.deterministic(name, jnp.exp(log_scale))


def outlier_weight_prior():
    return numpyro.sample("outlier_weight", dist.Beta(1.0, 20.0))
