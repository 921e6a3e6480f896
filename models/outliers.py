"""The outlier component shared by models that can put zero (or vanishing) density where eigenvalues land.

A broad log-normal centred on the ESD's mean (log-sd 3, about +-9 decades at 3 sd): one eigenvalue beyond a
bulk edge then costs a finite amount instead of making the likelihood -inf. Its weight has the prior of
`hteval.models.priors.outlier_weight_prior`.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import log_ndtr, ndtr
from scipy import special

LOG_SD = 3.0
_HALF_LOG_TWO_PI = 0.5 * math.log(2 * math.pi)


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


# numpy twins for exact posteriors (whole tables at once, no compilation)

#: the Beta(alpha, beta) prior of the outlier weight, as `hteval.models.priors.outlier_weight_prior` draws it (a
#: test checks the two agree): the quadratures integrate w against it
PRIOR = (1.0, 20.0)


def log_density_np(x, scale_ref):
    logs = np.log(np.asarray(x, dtype=np.float64))
    return -0.5 * ((logs - math.log(scale_ref)) / LOG_SD) ** 2 - math.log(LOG_SD) - _HALF_LOG_TWO_PI - logs


def log_cdf_np(x, scale_ref):
    return special.log_ndtr((np.log(np.asarray(x, dtype=np.float64)) - math.log(scale_ref)) / LOG_SD)


def cdf_np(x, scale_ref):
    return special.ndtr((np.log(np.asarray(x, dtype=np.float64)) - math.log(scale_ref)) / LOG_SD)


def draw_np(rng: np.random.Generator, shape, scale_ref):
    return scale_ref * np.exp(LOG_SD * rng.standard_normal(shape))


def mix_log_np(log_main, log_outlier, w):
    """log((1 - w) e^log_main + w e^log_outlier) in numpy, w broadcasting against both."""
    with np.errstate(divide="ignore"):
        return np.logaddexp(np.log1p(-w) + log_main, np.log(w) + log_outlier)


def mix_draw_np(rng: np.random.Generator, main_quantile, w, n, scale_ref):
    """n iid draws per row of (1 - w) main + w outlier, w (D,); main_quantile(u (D, n)) inverts the main CDF."""
    pick = rng.uniform(size=(w.size, n)) < w[:, None]
    u = rng.uniform(1e-12, 1 - 1e-12, size=(w.size, n))
    return np.where(pick, draw_np(rng, (w.size, n), scale_ref), main_quantile(u))
