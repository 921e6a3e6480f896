"""HTMP with an outlier component: (1 - w) HTMP(gamma, kappa, scale) + w Outlier.

Real layers often show a few spikes above a heavy bulk (the field's "bulk + spikes" phase); under plain HTMP a
single spike drags kappa down to fatten the whole upper tail. The outlier law is the one MP uses.
"""

from __future__ import annotations

import jax
import numpyro

from hteval.densities.htmp import htmp_cdf, htmp_icdf, htmp_log_cdf, htmp_logpdf
from hteval.models import outliers
from hteval.models.observe import PointwiseDensity, observe
from hteval.models.priors import kappa_prior, outlier_weight_prior, scale_prior

PARAMETERS = ("kappa", "scale", "outlier_weight")
LAW_SITES = ("kappa", "scale", "outlier_weight")


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
