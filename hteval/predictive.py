"""Prior and posterior predictive draws: iid eigenvalue spectra (inverse-CDF sampling) from parameter draws.

The prior predictive check asks whether the priors of `hteval.models.priors` put mass on spectra like the
observed one before seeing it (they are scale-free: centred on the ESD's mean); the posterior predictive check
asks whether the fitted model reproduces it, the upper tail above all (`hteval.report.figures.plot_rank`).
"""

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


def spectra_from_draws(model: str, draws: dict[str, np.ndarray], gamma: float, m: int, seed: int = 0) -> np.ndarray:
    """One iid spectrum of m eigenvalues per parameter draw, each sorted ascending: shape (n_draws, m)."""
    n = next(iter(draws.values())).size
    u = jax.random.uniform(jax.random.PRNGKey(seed), (n, m), minval=1e-12, maxval=1 - 1e-12)
    if model == "mp":
        sample = jax.vmap(lambda q, s2: mp_icdf(q, gamma, s2))(u, jnp.asarray(draws["sigma2"]))
    else:
        _, icdf = _LAWS[model]
        sample = jax.vmap(lambda q, k, s: icdf(q, gamma, k, s))(u, jnp.asarray(draws["kappa"]),
                                                                 jnp.asarray(draws["scale"]))
    return np.sort(np.asarray(sample), axis=1)


def predictive_spectra(result, n: int = 100, seed: int = 0) -> np.ndarray:
    """n posterior predictive spectra of the layer's size, each sorted ascending: shape (n, n_eigs)."""
    return spectra_from_draws(result.model, parameter_draws(result, n), result.record["gamma"],
                              result.record["n_eigs"], seed)


def prior_draws(model: str, rec, n: int = 200, seed: int = 0) -> dict[str, np.ndarray]:
    """n draws of every latent and derived site from the model's priors, for this layer (its gamma, its mean)."""
    from numpyro.infer import Predictive

    from hteval.infer import layer_model, model_data
    from hteval.models import MODELS

    module = MODELS[model]
    predictive = Predictive(layer_model(module, rec), num_samples=n)
    out = predictive(jax.random.PRNGKey(seed), jnp.asarray(rec.eigenvalues), **model_data(rec))
    return {k: np.asarray(v) for k, v in out.items() if k not in ("obs", "censored")}


def add_prior_predictive(result, n: int = 200, seed: int = 0) -> None:
    """Store prior draws and prior predictive spectra in the result's DataTree (groups prior, prior_predictive)."""
    rec = result.layer
    draws = prior_draws(result.model, rec, n, seed)
    spectra = spectra_from_draws(result.model, draws, rec.gamma, rec.n_eigs, seed)
    result.data["prior"] = xr.Dataset({k: (("chain", "draw"), v[None]) for k, v in draws.items() if v.ndim == 1})
    result.data["prior_predictive"] = xr.Dataset({"obs": (("chain", "draw", "obs_dim_0"), spectra[None])})


def add_posterior_predictive(result, n: int = 100, seed: int = 0) -> None:
    """Store predictive spectra in the result's DataTree as the posterior_predictive group (one pseudo-chain)."""
    spectra = predictive_spectra(result, n, seed)
    ds = xr.Dataset({"obs": (("chain", "draw", "obs_dim_0"), spectra[None])})
    result.data["posterior_predictive"] = ds
