"""Prior and posterior predictive draws: iid eigenvalue spectra from parameter draws, for every model.

The prior predictive check asks whether the priors of `hteval.models.priors` put mass on spectra like the
observed one before seeing it (they are scale-free: centred on the ESD's mean); the posterior predictive check
asks whether the fitted model reproduces it, the upper tail above all (`hteval.report.figures.plot_rank`), and
`hteval.goodness_of_fit.ks_pvalue` (also importable from here) turns that into a posterior predictive p-value.

Each model module gives its one-eigenvalue law for a parameter draw (`log_density`, `log_cdf`, `draw`; see
`hteval.models`), so nothing here knows a model by name. A module may also give the law for a whole batch of draws
in numpy (`batch_cdf(x, p, **context)` -> (draws, points) and `batch_draw(rng, p, n, **context)` -> (draws, n), p a
dict of arrays; and `batch_log_density(x, p, **context)` -> (draws, points)): those are used instead, with no
per-model compilation.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from hteval.goodness_of_fit import ks_pvalue, thinned_draws  # noqa: F401 (ks_pvalue: its earlier home)
from hteval.models import MODELS
from hteval.precision import in_float64


def _observed(result) -> np.ndarray:
    """The fitted eigenvalues (from the layer where the result has it: no ArviZ data need be built)."""
    if getattr(result, "layer", None) is not None:
        return np.asarray(result.layer.eigenvalues, dtype=np.float64)
    return np.asarray(result.data["observed_data"]["obs"].values)


def _context(result) -> dict:
    """The fixed quantities every law function takes: gamma, M and the ESD mean the outlier law is centred on."""
    scale_ref = float(np.mean(_observed(result)))
    return {"gamma": float(result.record["gamma"]), "m": int(result.record["M"]), "scale_ref": scale_ref}


def _posterior_site(result, name: str) -> np.ndarray:
    draws = getattr(result, "draws", None)
    if draws and name in draws:
        return np.asarray(draws[name])
    return result.data["posterior"][name].values


def parameter_draws(result, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """n posterior draws (chains pooled, thinned evenly; `seed` picks the offset) of the model's law parameters."""
    return thinned_draws({k: _posterior_site(result, k) for k in MODELS[result.model].LAW_SITES}, n, seed)


def _law(model: str, what: str, context: dict):
    """The law function `what` of a model over a batch of draws, for this layer's context."""
    fn = _batched(model, what, context["gamma"], context["m"])
    return lambda *args: fn(*args[:2], context["scale_ref"], *args[2:])


@functools.lru_cache(maxsize=32)
def _batched(model: str, what: str, gamma: float, m: int):
    """A jitted law function over a batch of draws, compiled once per (model, gamma, M): the ESD mean is an
    argument, so the layers of one shape share it. lax.map rather than vmap: the per-draw program (one kappa,
    hence one table of log|U|) is the one NUTS compiles, while vmap would batch the table build and run both
    sides of every branch, which costs more to compile than the draws cost to evaluate."""
    module, context = MODELS[model], {"gamma": gamma, "m": m}
    if what == "draw":
        def draw(keys, p, scale_ref, n):
            return jax.lax.map(lambda a: module.draw(a[0], a[1], n, scale_ref=scale_ref, **context), (keys, p))

        return jax.jit(draw, static_argnums=3)
    function = getattr(module, what)
    return jax.jit(lambda x, p, scale_ref: jax.lax.map(lambda q: function(x, q, scale_ref=scale_ref, **context), p))


@in_float64
def log_density_draws(result, x, n: int = 200) -> np.ndarray:
    """log f(x) for n posterior draws: shape (n, len(x)), outlier components included."""
    draws = parameter_draws(result, n)
    module = MODELS[result.model]
    if hasattr(module, "batch_log_density"):
        return module.batch_log_density(np.asarray(x, dtype=np.float64), draws, **_context(result))
    fn = _law(result.model, "log_density", _context(result))
    return np.asarray(fn(jnp.asarray(x), draws))


@in_float64
def spectra_from_draws(model: str, draws: dict[str, np.ndarray], context: dict, n_eigs: int,
                       seed: int = 0) -> np.ndarray:
    """One iid spectrum of n_eigs eigenvalues per parameter draw, each sorted ascending: shape (n_draws, n_eigs)."""
    module = MODELS[model]
    if hasattr(module, "batch_draw"):
        p = {k: np.asarray(v, dtype=np.float64) for k, v in draws.items()}
        return np.sort(module.batch_draw(np.random.default_rng(seed), p, n_eigs, **context), axis=1)
    n = next(iter(draws.values())).size
    keys = jax.random.split(jax.random.PRNGKey(seed), n)
    fn = _law(model, "draw", context)
    return np.sort(np.asarray(fn(keys, {k: jnp.asarray(v) for k, v in draws.items()}, n_eigs)), axis=1)


@in_float64
def predictive_spectra(result, n: int = 100, seed: int = 0) -> np.ndarray:
    """n posterior predictive spectra of the layer's size, each sorted ascending: shape (n, n_eigs)."""
    return spectra_from_draws(result.model, parameter_draws(result, n), _context(result),
                              result.record["n_eigs"], seed)


@in_float64
def law_cdf(result, n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The sorted observed eigenvalues and the model's CDF there for n posterior draws, (n, n_eigs): what the KS
    p-value (`hteval.goodness_of_fit.ks_pvalue`) reads where its numpy path does not apply."""
    draws = parameter_draws(result, n, seed)
    observed = np.sort(_observed(result))
    module = MODELS[result.model]
    if hasattr(module, "batch_cdf"):
        return observed, np.asarray(module.batch_cdf(observed, draws, **_context(result)))
    if hasattr(module, "cdf"):  # the absolute accuracy of a plain CDF is all KS needs, and it is cheaper
        return observed, np.asarray(_law(result.model, "cdf", _context(result))(jnp.asarray(observed), draws))
    return observed, np.exp(np.asarray(_law(result.model, "log_cdf", _context(result))(jnp.asarray(observed), draws)))


@in_float64
def prior_draws(model: str, rec, n: int = 200, seed: int = 0) -> dict[str, np.ndarray]:
    """n draws of every latent and derived site from the model's priors, for this layer (its gamma, its mean)."""
    from numpyro.infer import Predictive

    from hteval.infer import layer_model, model_data

    module = MODELS[model]
    data = model_data(rec, module)
    predictive = Predictive(layer_model(module, rec), num_samples=n)
    out = predictive(jax.random.PRNGKey(seed), jnp.asarray(rec.eigenvalues), **data)
    draws = {k: np.asarray(v) for k, v in out.items() if k not in ("obs", "censored", "marginal_likelihood")}
    if hasattr(module, "complete_prior"):
        added = module.complete_prior(jax.random.PRNGKey(seed + 1), draws, jnp.asarray(rec.eigenvalues),
                                      gamma=rec.gamma, **data)
        draws.update({k: np.asarray(v) for k, v in added.items()})
    return draws


@in_float64
def add_prior_predictive(result, n: int = 200, seed: int = 0) -> None:
    """Store prior draws and prior predictive spectra in the result's DataTree (groups prior, prior_predictive)."""
    rec = result.layer
    draws = prior_draws(result.model, rec, n, seed)
    law = {k: draws[k] for k in MODELS[result.model].LAW_SITES}
    spectra = spectra_from_draws(result.model, law, _context(result), rec.n_eigs, seed)
    result.data["prior"] = xr.Dataset({k: (("chain", "draw"), v[None]) for k, v in draws.items() if v.ndim == 1})
    result.data["prior_predictive"] = xr.Dataset({"obs": (("chain", "draw", "obs_dim_0"), spectra[None])})


@in_float64
def add_posterior_predictive(result, n: int = 100, seed: int = 0) -> None:
    """Store predictive spectra in the result's DataTree as the posterior_predictive group (one pseudo-chain)."""
    spectra = predictive_spectra(result, n, seed)
    ds = xr.Dataset({"obs": (("chain", "draw", "obs_dim_0"), spectra[None])})
    result.data["posterior_predictive"] = ds
