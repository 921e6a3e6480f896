"""The outlier component shared by models that can put zero (or vanishing) density where eigenvalues land.

A broad log-normal centred on the ESD's mean (log-sd 3, about +-9 decades at 3 sd): one eigenvalue beyond a
bulk edge then costs a finite amount instead of making the likelihood -inf. Its weight has the prior of
`hteval.models.priors.outlier_weight_prior`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.special import log_ndtr, ndtr

LOG_SD = 3.0


def log_density(x, scale_ref):
    safe = jnp.where(x > 0, x, 1.0)
    value = jax.scipy.stats.norm.logpdf(jnp.log(safe), jnp.log(scale_ref), LOG_SD) - jnp.log(safe)
    return jnp.where(x > 0, value, -jnp.inf)


def log_cdf(x, scale_ref):
    return log_ndtr((jnp.log(x) - jnp.log(scale_ref)) / LOG_SD)


def cdf(x, scale_ref):
    return ndtr((jnp.log(x) - jnp.log(scale_ref)) / LOG_SD)


def draw(key, n, scale_ref):
    return jnp.exp(jnp.log(scale_ref) + LOG_SD * jax.random.normal(key, (n,)))


def mix_log(log_main, log_outlier, w):
    """log((1 - w) e^log_main + w e^log_outlier), for densities and CDFs alike."""
    return jnp.logaddexp(jnp.log1p(-w) + log_main, jnp.log(w) + log_outlier)


def mix_draw(key, main_draw, n, w, scale_ref):
    """n iid draws of (1 - w) main + w outlier; main_draw(key, n) draws the main component."""
    k_pick, k_main, k_out = jax.random.split(key, 3)
    pick = jax.random.uniform(k_pick, (n,)) < w
    return jnp.where(pick, draw(k_out, n, scale_ref), main_draw(k_main, n))
