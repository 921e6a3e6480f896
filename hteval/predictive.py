"""Posterior predictive draws: iid eigenvalue spectra from posterior parameter draws (inverse-CDF sampling)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from hteval.densities.htmp import htmp_icdf, htmp_logpdf
from hteval.densities.inverse_htmp import inverse_htmp_icdf, inverse_htmp_logpdf
from hteval.densities.mp import mp_icdf, mp_logpdf

_LAWS = {"htmp": (htmp_logpdf, htmp_icdf), "inverse-htmp": (inverse_htmp_logpdf, inverse_htmp_icdf)}


def parameter_draws(result, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """n posterior draws (chains pooled, thinned evenly; `seed` picks the offset) of the model's parameters."""
    post = result.data["posterior"].to_dataset()
    names = ("sigma2", "outlier_weight") if result.model == "mp" else ("kappa", "scale")
    flat = {k: post[k].values.reshape(-1) for k in names}
    total = next(iter(flat.values())).size
    idx = (np.linspace(0, total - 1, n).astype(int) + seed) % total
    return {k: v[idx] for k, v in flat.items()}


def log_density_draws(result, x, n: int = 200) -> np.ndarray:
    """log f(x) for n posterior draws: shape (n, len(x)); MP draws include their outlier component."""
    draws = parameter_draws(result, n)
    gamma = result.record["gamma"]
    x = jnp.asarray(x)
    if result.model == "mp":
        from hteval.models.mp import OUTLIER_LOG_SD

        mean = float(np.mean(result.data["observed_data"]["obs"].values))

        def one(s2, w):
            outlier = jax.scipy.stats.norm.logpdf(jnp.log(x), jnp.log(mean), OUTLIER_LOG_SD) - jnp.log(x)
            return jnp.logaddexp(jnp.log1p(-w) + mp_logpdf(x, gamma, s2), jnp.log(w) + outlier)

        return np.asarray(jax.vmap(one)(draws["sigma2"], draws["outlier_weight"]))
    logpdf, _ = _LAWS[result.model]
    return np.asarray(jax.vmap(lambda k, s: logpdf(x, gamma, k, s))(draws["kappa"], draws["scale"]))


def predictive_spectra(result, n: int = 100, seed: int = 0) -> np.ndarray:
    """n predictive spectra of the layer's size, each sorted ascending: shape (n, n_eigs)."""
    draws = parameter_draws(result, n)
    m = result.record["n_eigs"]
    gamma = result.record["gamma"]
    u = jax.random.uniform(jax.random.PRNGKey(seed), (n, m), minval=1e-12, maxval=1 - 1e-12)
    if result.model == "mp":
        sample = jax.vmap(lambda q, s2: mp_icdf(q, gamma, s2))(u, draws["sigma2"])
    else:
        _, icdf = _LAWS[result.model]
        sample = jax.vmap(lambda q, k, s: icdf(q, gamma, k, s))(u, draws["kappa"], draws["scale"])
    return np.sort(np.asarray(sample), axis=1)


def add_posterior_predictive(result, n: int = 100, seed: int = 0) -> None:
    """Store predictive spectra in the result's DataTree as the posterior_predictive group (one pseudo-chain)."""
    spectra = predictive_spectra(result, n, seed)
    ds = xr.Dataset({"obs": (("chain", "draw", "obs_dim_0"), spectra[None])})
    result.data["posterior_predictive"] = ds
