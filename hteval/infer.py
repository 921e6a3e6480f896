"""Model + spectrum -> NUTS (or a model's exact draws) -> ArviZ DataTree with diagnostics, wrapped in a FitResult.

Convergence is judged, never assumed: R-hat <= 1.01, bulk and tail ESS >= 400 for every reported parameter, and
no divergent transitions; a FitResult that fails any of these says which, and its JSON says converged: false.
"""

from __future__ import annotations

import functools
import logging
import zlib
from dataclasses import dataclass, field
from typing import Any

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from hteval import calibration, names
from hteval.errors import InputError
from hteval.models import MODELS
from hteval.nuts import continue_chains, draws_datatree, run_chains, to_datatree
from hteval.spectra import LayerSpectrum, load_spectra, spectrum

logger = logging.getLogger(__name__)

RHAT_MAX = 1.01
ESS_MIN = 400
#: floor of raw eigenvalue input without --floor: float64 resolution of the largest eigenvalue, times M
RAW_FLOOR_FACTOR = 1e-15


@dataclass
class FitResult:
    """Posterior of one model for one layer: summary table, ArviZ data, diagnostics and provenance."""

    model: str
    record: dict[str, Any]
    prob: float
    summary: pd.DataFrame
    data: Any  # xarray DataTree (posterior, log_likelihood, sample_stats, observed_data)
    diagnostics: dict[str, Any]
    settings: dict[str, Any]
    version: str = field(default="")
    layer: LayerSpectrum | None = field(default=None, repr=False)  # the fitted spectrum (for predictive checks)
    probabilities: dict[str, float] = field(default_factory=dict)  # e.g. P(alpha < 2) of the power-law model

    @property
    def converged(self) -> bool:
        return bool(self.diagnostics["converged"])

    def to_json(self) -> dict[str, Any]:
        """The summary.json document of `hteval fit`."""
        parameters = {name: {k: _json_number(v) for k, v in row.items()} for name, row in self.summary.iterrows()}
        return {"model": self.model, "layer": self.record[names.NAME], names.N_EIGS: self.record[names.N_EIGS],
                names.N_CENSORED: self.record[names.N_CENSORED], names.GAMMA: self.record[names.GAMMA],
                "prob": self.prob, "parameters": parameters,
                names.INTERVALS: calibration.intervals(self.model), names.INTERVALS_NOTE: calibration.note(self.model),
                "diagnostics": self.diagnostics,
                "probabilities": self.probabilities, "settings": self.settings, "record": self.record,
                "version": self.version}


def _json_number(value):
    value = float(value)
    return value if np.isfinite(value) else None


def layer_from_source(source, layer, gamma, floor) -> LayerSpectrum:
    if isinstance(source, LayerSpectrum):
        return source
    if isinstance(source, (str, bytes)) or hasattr(source, "__fspath__"):
        layers = load_spectra(source, layers=[layer] if layer else None)
        if len(layers) != 1:
            raise InputError(f"{len(layers)} layers found: choose one with layer=", source=str(source))
        return layers[0]
    array = np.asarray(source)
    if array.ndim == 1:
        return eigenvalue_spectrum(array, gamma=gamma, name=layer or "eigenvalues", floor=floor)
    return spectrum(array, name=layer or "W")


def eigenvalue_spectrum(eigenvalues, *, gamma, name="eigenvalues", floor=None) -> LayerSpectrum:
    """A layer record for raw eigenvalues: gamma is required; values at or below the floor are censored."""
    if gamma is None or not 0 < float(gamma) <= 1:
        raise InputError("raw eigenvalues need gamma = M/N in (0, 1]", source=name)
    values = np.asarray(eigenvalues, dtype=np.float64).ravel()
    if values.size == 0 or not np.all(np.isfinite(values)):
        raise InputError("eigenvalues must be a non-empty array of finite numbers", source=name)
    if floor is None:
        floor = RAW_FLOOR_FACTOR * values.size * max(float(values.max()), 0.0)
    kept = np.sort(values[values > floor])
    return LayerSpectrum(name=name, shape=(values.size,), N=int(round(values.size / float(gamma))), M=values.size,
                         gamma=float(gamma), n_slices=1, n_eigs=kept.size, n_censored=int(values.size - kept.size),
                         floor=float(floor), normalisation="as given", dtype="float64", eigenvalues=kept,
                         slice_ids=np.zeros(kept.size, dtype=int))


def layer_key(seed: int, name: str) -> jax.Array:
    """A layer's random key depends on the seed and its name only, not on what else is fitted with it."""
    return jax.random.fold_in(jax.random.PRNGKey(seed), zlib.crc32(name.encode()))


def median_and_interval(draws, prob: float) -> tuple[float, float, float]:
    """Median and equal-tailed `prob` interval (ci_low, ci_high) of a set of draws, any shape."""
    draws = np.ravel(np.asarray(draws))
    lo, hi = np.quantile(draws, [(1 - prob) / 2, (1 + prob) / 2])
    return float(np.median(draws)), float(lo), float(hi)


def _summarise(data, parameters, prob) -> pd.DataFrame:
    post = data["posterior"].to_dataset()
    rows = {}
    for name in parameters:
        draws = post[name]
        lo, hi = (1 - prob) / 2, (1 + prob) / 2
        hdi = az.hdi(draws, prob=prob)
        rows[name] = {
            "mean": float(draws.mean()), "median": float(draws.median()), "sd": float(draws.std()),
            "ci_low": float(draws.quantile(lo)), "ci_high": float(draws.quantile(hi)),
            "hdi_low": float(hdi.sel(ci_bound="lower")), "hdi_high": float(hdi.sel(ci_bound="upper")),
            "r_hat": float(az.rhat(draws)), "ess_bulk": float(az.ess(draws, method="bulk")),
            "ess_tail": float(az.ess(draws, method="tail")),
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def _diagnose(data, summary, extra=()) -> dict[str, Any]:
    divergences = int(data["sample_stats"]["diverging"].sum())
    reasons = list(extra)
    reasons += [f"{p}: R-hat {r:.3f} > {RHAT_MAX}" for p, r in summary["r_hat"].items() if not r <= RHAT_MAX]
    for column in ("ess_bulk", "ess_tail"):
        reasons += [f"{p}: {column} {e:.0f} < {ESS_MIN}" for p, e in summary[column].items() if not e >= ESS_MIN]
    if divergences:
        reasons.append(f"{divergences} divergent transitions")
    return {"converged": not reasons, "reasons": reasons, "divergences": divergences,
            "max_r_hat": float(summary["r_hat"].max()), "min_ess_bulk": float(summary["ess_bulk"].min())}


def layer_model(module, rec: LayerSpectrum):
    """The model with what fixes its shape bound in: gamma (the density's table), whether anything is censored, and
    a module's `static_bound(layer)` (the joint likelihood's bound on the spectrum's size).

    Everything else about the layer goes in as data (`model_data`), traced under jit, so that the compiled sampler
    is reused by every chain and by every layer of the same gamma and eigenvalue count instead of being rebuilt.
    """
    return _bound_model(module, rec.gamma, bool(rec.n_censored), static_arguments(module, rec))


def static_arguments(module, rec: LayerSpectrum) -> tuple:
    """A module's `static_bound(layer)` as hashable (name, value) pairs; () for models without one."""
    return tuple(module.static_bound(rec).items()) if hasattr(module, "static_bound") else ()


@functools.lru_cache(maxsize=64)
def _bound_model(module, gamma: float, censored: bool, bound: tuple = ()):
    # cached so that the same (model, gamma, censoring) is the same function object: the compiled sampler's key
    static = {"gamma": gamma} if censored else {"gamma": gamma, "n_censored": 0}  # a concrete 0: no censoring term
    return functools.partial(module.model, **static, **dict(bound))


def model_input(module, rec: LayerSpectrum) -> jax.Array:
    """The eigenvalue array the model is called with; a joint likelihood reads only `statistics`, so it gets an
    empty one and its compiled sampler does not depend on how many eigenvalues the layer kept."""
    return jnp.asarray(rec.eigenvalues) if getattr(module, "POINTWISE", True) else jnp.zeros(0)


def model_data(rec: LayerSpectrum, module=None) -> dict[str, Any]:
    """The layer's traced model arguments; a module's `statistics` (computed once per spectrum) are added."""
    data = {"m": rec.M, "floor": rec.floor, "scale_ref": float(np.mean(rec.eigenvalues))}
    if rec.n_censored:
        data["n_censored"] = rec.n_censored
    if hasattr(module, "statistics"):
        data.update(module.statistics(rec))
    return data


def fit(source, layer=None, model=names.DEFAULT_MODEL, gamma=None, prob=0.9, seed=0, chains=4, draws=1000,
        warmup=1000, *, floor=None, progress_bar=False, log_likelihood=True, max_draws=None,
        scale_ref=None) -> FitResult:
    """Fit one ensemble model to one layer by NUTS (float64). source: matrix, checkpoint path or eigenvalues.

    A model that draws its posterior exactly (`posterior_draws`, the power law) gets chains x draws independent
    draws instead; warmup and max_draws do not apply to it.

    log_likelihood=False leaves the pointwise log-likelihood (for LOO) out of the result, saving its computation;
    models with a joint likelihood (htmp-exact) never have one.
    max_draws: a fit that misses only the R-hat or ESS criteria (no divergences) runs its chains on, doubling the
    draws per chain up to this many, before it is called unconverged; a fixed rule, recorded in the settings
    (draws is what the result holds, draws_requested what was asked for). Longer chains cannot mend divergent
    transitions, so those fits are not extended.
    scale_ref: the centre of the scale prior (default: the ESD's mean, which makes the prior scale-free); fixing it
    makes the prior independent of the data, as simulation-based calibration needs.
    """
    module = model_module(model)
    rec = layer_from_source(source, layer, gamma, floor)
    kwargs = model_data(rec, module)
    log_likelihood = log_likelihood and getattr(module, "POINTWISE", True)  # a joint density has no pointwise terms
    if scale_ref is not None:
        kwargs["scale_ref"] = float(scale_ref)
    if hasattr(module, "posterior_draws"):
        return _fit_exactly(module, model, rec, kwargs, prob=prob, seed=seed, chains=chains, draws=draws,
                            log_likelihood=log_likelihood)
    model_fn, args = layer_model(module, rec), (model_input(module, rec),)
    sampler = {"warmup": warmup, "progress_bar": progress_bar, "dense_mass": getattr(module, "DENSE_MASS", False)}
    z, stats, kernel, states = run_chains(model_fn, args, kwargs, key=layer_key(seed, rec.name), chains=chains,
                                          draws=draws, **sampler)
    total = draws
    while True:
        data, summary, diagnostics = assemble(module, model, rec, model_fn, args, kwargs, kernel, z, stats,
                                              prob=prob, seed=seed, log_likelihood=log_likelihood)
        if diagnostics["converged"] or diagnostics["divergences"] or max_draws is None or total >= max_draws:
            break
        more = min(total, max_draws - total)
        logger.info("%s / %s: %s; %d more draws per chain", rec.name, model, "; ".join(diagnostics["reasons"]), more)
        z_more, stats_more, states = continue_chains(model_fn, args, kwargs, states, draws=more, **sampler)
        z, stats = (jax.tree.map(lambda a, b: np.concatenate([a, b], axis=1), old, new)
                    for old, new in ((z, z_more), (stats, stats_more)))
        total += more
    settings = {"seed": seed, "chains": chains, "draws": total, "draws_requested": draws, "max_draws": max_draws,
                "warmup": warmup, "sampler": "NUTS", "chain_method": "sequential, one compiled program",
                "backend": jax.default_backend()}
    return fit_result(module, model, rec, data, summary, diagnostics, settings, prob)


def _fit_exactly(module, model: str, rec: LayerSpectrum, data: dict[str, Any], *, prob: float, seed: int,
                 chains: int, draws: int, log_likelihood: bool) -> FitResult:
    """A model that draws its posterior exactly (`posterior_draws`): independent draws, laid out as chains so
    that R-hat and ESS are computed as for NUTS, and the grid's own checks added to the convergence verdict."""
    posterior, loglik, grid = module.posterior_draws(layer_key(seed, rec.name), rec.eigenvalues, chains=chains,
                                                     draws=draws, gamma=rec.gamma, log_likelihood=log_likelihood,
                                                     **data)
    tree = draws_datatree(posterior, {"diverging": np.zeros((chains, draws), dtype=bool)},
                          observed=rec.eigenvalues, attrs=_attrs(model, rec, seed), log_likelihood=loglik)
    summary = _summarise(tree, module.PARAMETERS, prob)
    diagnostics = _diagnose(tree, summary, extra=grid.problems())
    diagnostics["quadrature"] = grid.checks()
    settings = {"seed": seed, "chains": chains, "draws": draws, "draws_requested": draws, "max_draws": None,
                "warmup": 0, "sampler": module.SAMPLER, "chain_method": "independent draws",
                "backend": jax.default_backend()}
    return fit_result(module, model, rec, tree, summary, diagnostics, settings, prob)


def _attrs(model: str, rec: LayerSpectrum, seed: int) -> dict[str, Any]:
    from hteval import __version__

    return {"hteval_version": __version__, "model": model, "layer": rec.name, "seed": seed,
            names.INTERVALS: calibration.intervals(model), names.INTERVALS_NOTE: calibration.note(model)}


def model_module(model: str):
    """The module of a model name, once float64 is known to be on: what every fitting entry point checks first."""
    if model not in MODELS:
        raise InputError(f"unknown model {model!r}; choose from {', '.join(MODELS)}")
    if not jax.config.jax_enable_x64:
        raise RuntimeError("hteval needs float64: call jax.config.update('jax_enable_x64', True) first")
    return MODELS[model]


def assemble(module, model: str, rec: LayerSpectrum, model_fn, args, kwargs, kernel, z, stats, *, prob: float,
             seed: int, log_likelihood: bool):
    """Draws of one layer (chain, draw) -> (ArviZ data, summary table, diagnostics)."""
    data = to_datatree(model_fn, args, kwargs, kernel, z, stats, observed=rec.eigenvalues,
                       with_log_likelihood=log_likelihood, attrs=_attrs(model, rec, seed))
    summary = _summarise(data, module.PARAMETERS, prob)
    return data, summary, _diagnose(data, summary)


def fit_result(module, model: str, rec: LayerSpectrum, data, summary, diagnostics, settings, prob) -> FitResult:
    from hteval import __version__

    if not diagnostics["converged"]:
        logger.warning("%s / %s did not converge: %s", rec.name, model, "; ".join(diagnostics["reasons"]))
    probabilities = {}
    if hasattr(module, "probabilities"):
        probabilities = module.probabilities({k: v.values for k, v in data["posterior"].to_dataset().items()})
    return FitResult(model=model, record=rec.to_record(), prob=prob, summary=summary, data=data,
                     diagnostics=diagnostics, settings=settings, version=__version__, layer=rec,
                     probabilities=probabilities)

