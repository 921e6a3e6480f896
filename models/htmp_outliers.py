"""HTMP with an outlier component: (1 - w) HTMP(gamma, kappa, scale) + w Outlier.

Real layers often show a few spikes above a heavy bulk (the field's "bulk + spikes" phase); under plain HTMP a
single spike drags kappa down to fatten the whole upper tail. The outlier law is the one MP uses.

The posterior is drawn exactly (`posterior_draws`, `hteval.models.htmp.exact_posterior`): a grid over
(log kappa, log scale) with w integrated at every grid point by a one-dimensional rule, then w drawn from its exact
conditional given each (kappa, scale) draw. NUTS on `model` targets the same posterior.
"""

from __future__ import annotations

import jax
import numpy as np
import numpyro

from hteval.densities.htmp import PhiBatch, htmp_cdf, htmp_icdf, htmp_log_cdf, htmp_logpdf
from hteval.models import outliers
from hteval.models.htmp import exact_posterior, main_draws, main_log_density
from hteval.models.observe import PointwiseDensity, observe
from hteval.models.priors import kappa_prior, outlier_weight_prior, scale_prior

PARAMETERS = ("kappa", "scale", "outlier_weight")
LAW_SITES = ("kappa", "scale", "outlier_weight")
SAMPLER = ("exact: quadrature over (log kappa, log scale) with the outlier weight integrated per grid point; "
           "independent draws, w from its conditional")
#: `posterior_draws` takes a numpy Generator, not a JAX key
RANDOM = "numpy"


def log_density(x, p, *, gamma, m, scale_ref):
    main = htmp_logpdf(x, gamma, p["kappa"], p["scale"])
    return outliers.mix_log(main, outliers.log_density(x, scale_ref), p["outlier_weight"])


def log_cdf(x, p, *, gamma, m, scale_ref):
    main = htmp_log_cdf(x, gamma, p["kappa"], p["scale"])
    return outliers.mix_log(main, outliers.log_cdf(x, scale_ref), p["outlier_weight"])


def cdf(x, p, *, gamma, m, scale_ref):
    w = p["outlier_weight"]
    return (1 - w) * htmp_cdf(x, gamma, p["kappa"], p["scale"]) + w * outliers.cdf(x, scale_ref)


def draw(key, p, n, *, gamma, m, scale_ref):
    def main(k, size):
        u = jax.random.uniform(k, (size,), minval=1e-12, maxval=1 - 1e-12)
        return htmp_icdf(u, gamma, p["kappa"], p["scale"])

    return outliers.mix_draw(key, main, n, p["outlier_weight"], scale_ref)


def model(eigenvalues, *, gamma: float, m: int, n_censored: int = 0, floor: float = 0.0, scale_ref: float = 1.0):
    p = {"kappa": kappa_prior(), "scale": scale_prior("scale", scale_ref), "outlier_weight": outlier_weight_prior()}
    numpyro.deterministic("T", m / p["kappa"])
    context = {"gamma": gamma, "m": m, "scale_ref": scale_ref}
    law = PointwiseDensity(lambda x: log_density(x, p, **context))
    observe(law, lambda: log_cdf(floor, p, **context), eigenvalues, n_censored)


def posterior_draws(rng: np.random.Generator, eigenvalues, *, chains, draws, gamma, m, n_censored=0, floor=0.0,
                    scale_ref=1.0, log_likelihood=True):
    """Independent posterior draws (`hteval.models.htmp.exact_posterior`), the pointwise log-likelihood and the
    grid."""
    return exact_posterior(rng, eigenvalues, inverse=False, with_outliers=True, chains=chains, draws=draws,
                           gamma=gamma, m=m, n_censored=n_censored, floor=floor, scale_ref=scale_ref,
                           log_likelihood=log_likelihood)


def batch_log_density(x, p, *, gamma, m, scale_ref):
    """log f at points x (n,) for each of a batch of draws (arrays (D,)): (D, n), in numpy."""
    log_x = np.log(np.asarray(x, dtype=np.float64))
    main = main_log_density(PhiBatch(gamma, p["kappa"]), np.log(p["scale"])[:, None], log_x, False)[:, 0, :]
    return outliers.mix_log_np(main, outliers.log_density_np(x, scale_ref), p["outlier_weight"][:, None])


def batch_cdf(x, p, *, gamma, m, scale_ref):
    """The CDF at points x (n,) for each of a batch of draws (arrays (D,)): (D, n), in numpy."""
    t = np.log(np.asarray(x))[None, :] - np.log(p["scale"])[:, None]
    w = p["outlier_weight"][:, None]
    return (1 - w) * PhiBatch(gamma, p["kappa"])(t, phase=True) + w * outliers.cdf_np(x, scale_ref)


def batch_draw(rng: np.random.Generator, p, n, *, gamma, m, scale_ref):
    """n iid eigenvalues for each of a batch of draws: (D, n), in numpy."""
    main = main_draws(rng, p, n, gamma)
    return np.where(rng.uniform(size=main.shape) < p["outlier_weight"][:, None],
                    outliers.draw_np(rng, main.shape, scale_ref), main)
