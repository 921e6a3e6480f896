"""Model + spectrum -> exact draws (quadrature) or NUTS -> FitResult with a summary, diagnostics and ArviZ data.

Two engines behind one call (`fit`): a model that draws its posterior exactly (`posterior_draws`: htmp-exact, the
power law) gets independent draws from a quadrature whose own checks decide convergence; every other model, and
any model with sampler="nuts", gets NUTS, judged by R-hat <= 1.01, bulk and tail ESS >= 400 for every reported
parameter, and no divergent transitions. A FitResult that fails its checks says which, and its JSON says
converged: false.

The exact engine of htmp-exact runs in numpy: neither JAX nor ArviZ is imported until NUTS runs or a result's
ArviZ `data` is asked for.
"""

from __future__ import annotations

import functools
import logging
import math
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from hteval import calibration, names
from hteval.errors import InputError
from hteval.models import MODELS
from hteval.precision import float64, float64_if_loaded
from hteval.spectra import LayerSpectrum, above_floor, censoring_warning, load_spectra, spectrum
from hteval.summary import median_and_interval, summarise

logger = logging.getLogger(__name__)

RHAT_MAX = 1.01
ESS_MIN = 400
#: floor of raw eigenvalue input without --floor: float64 resolution of the largest eigenvalue, times M; the same
#: bound below zero tells rounding (eigvalsh of a rank-deficient Gram) from values that are wrong
RAW_FLOOR_FACTOR = 1e-15


@dataclass
class FitResult:
    """Posterior of one model for one layer: summary table, draws, ArviZ data, diagnostics and provenance.

    `draws` holds every posterior site (parameters and derived quantities such as T) shaped (chain, draw) as numpy
    arrays: what tables, figures and pooling read. `data` is the ArviZ DataTree (posterior, sample_stats,
    observed_data, log_likelihood where there is one); for exact draws it is built on first access, so a
    whole-network run that never asks for it never imports ArviZ.
    """

    model: str
    record: dict[str, Any]
    prob: float
    summary: pd.DataFrame
    diagnostics: dict[str, Any]
    settings: dict[str, Any]
    draws: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    version: str = field(default="")
    layer: LayerSpectrum | None = field(default=None, repr=False)  # the fitted spectrum (for predictive checks)
    probabilities: dict[str, float] = field(default_factory=dict)  # e.g. P(alpha < 2) of the power-law model
    #: exact draws: the log marginal likelihood by quadrature, and with priors twice as wide (`hteval.evidence`)
    evidence: dict[str, float] = field(default_factory=dict)
    _data: Any = field(default=None, repr=False)
    _build_data: Any = field(default=None, repr=False)  # () -> DataTree, for results drawn exactly
    _ppc_pvalue: float | None = field(default=None, repr=False)

    @property
    def ppc_pvalue(self) -> float:
        """The fit's posterior predictive p-value (`hteval.goodness_of_fit`), computed on first access; NaN
        where the fitted spectrum is not kept."""
        if self._ppc_pvalue is None:
            from hteval import goodness_of_fit

            seed = int(self.settings.get("seed", 0))
            self._ppc_pvalue = goodness_of_fit.ppc_pvalue(self, seed=seed) if self.layer is not None else math.nan
        return self._ppc_pvalue

    @property
    def misfit(self) -> bool:
        """The model does not fit the layer: ppc_pvalue below names.MISFIT_LEVEL."""
        return bool(self.ppc_pvalue < names.MISFIT_LEVEL)

    @property
    def data(self):
        """The ArviZ DataTree (xarray), built once on first access where the fit did not need one."""
        if self._data is None and self._build_data is not None:
            self._data = self._build_data()
            self._build_data = None
        return self._data

    @data.setter
    def data(self, value) -> None:
        self._data, self._build_data = value, None

    @property
    def converged(self) -> bool:
        return bool(self.diagnostics["converged"])

    @property
    def warnings(self) -> list[str]:
        """What the layer's numbers do not say by themselves: a censored share over names.CENSORED_SHARE_LIMIT."""
        warning = censoring_warning(self.record[names.NAME], self.record[names.N_CENSORED],
                                    self.record[names.N_EIGS])
        return [warning] if warning else []

    def to_json(self) -> dict[str, Any]:
        """The summary.json document of `hteval fit`."""
        parameters = {name: {k: _json_number(v) for k, v in row.items()} for name, row in self.summary.iterrows()}
        return {"model": self.model, "layer": self.record[names.NAME], names.N_EIGS: self.record[names.N_EIGS],
                names.N_CENSORED: self.record[names.N_CENSORED], names.GAMMA: self.record[names.GAMMA],
                "prob": self.prob, "parameters": parameters,
                names.INTERVALS: calibration.intervals(self.model), names.INTERVALS_NOTE: calibration.note(self.model),
                "diagnostics": self.diagnostics, names.PPC_PVALUE: _json_number(self.ppc_pvalue),
                names.MISFIT: self.misfit, "probabilities": self.probabilities,
                "evidence": {k: _json_number(v) for k, v in self.evidence.items()}, "settings": self.settings,
                "record": self.record, "version": self.version, "warnings": self.warnings}


def _json_number(value):
    value = float(value)
    return value if np.isfinite(value) else None


def layer_from_source(source, layer, gamma, floor) -> LayerSpectrum:
    """The spectrum `fit` works on: a LayerSpectrum as it is; one layer of a checkpoint path or of a model in
    memory (`hteval.frameworks`), chosen by `layer`; a weight matrix; or raw eigenvalues (1-D, with gamma)."""
    if isinstance(source, LayerSpectrum):
        return source
    rec = _read_layer(source, layer, gamma, floor)
    for warning in rec.warnings:  # here, not in fit: a comparison fits one spectrum many times
        logger.warning("%s", warning)
    return rec


def _read_layer(source, layer, gamma, floor) -> LayerSpectrum:
    if not _is_array(source):
        # the one layer asked for: its own error, not "0 layers found"
        layers = load_spectra(source, layers=[layer] if layer else None, on_error="raise")
        if len(layers) != 1:
            from hteval.frameworks import is_path, source_label

            where = (f"choose one with --layer (Python: layer=); `hteval esd {source_label(source)}` lists them"
                     if is_path(source) else "choose one with layer=; hteval.load_spectra(source) lists them")
            raise InputError(f"{len(layers)} layers found: {where}", source=source_label(source))
        return layers[0]
    array = np.asarray(source)
    if array.ndim == 1:
        return eigenvalue_spectrum(array, gamma=gamma, name=layer or "eigenvalues", floor=floor)
    return spectrum(array, name=layer or "W")


def _is_array(source) -> bool:
    """A matrix or eigenvalues given directly (numpy, JAX or torch array, or a list), not a checkpoint or model."""
    from hteval.io.torch_reader import is_torch_tensor

    if isinstance(source, (np.ndarray, list, tuple)) or is_torch_tensor(source):
        return True
    return hasattr(source, "__array__") and hasattr(source, "shape") and not isinstance(source, (str, bytes))


def eigenvalue_spectrum(eigenvalues, *, gamma, name="eigenvalues", floor=None) -> LayerSpectrum:
    """A layer record for raw eigenvalues: gamma is required; values in [-floor, floor] are censored (rounding, as
    `eigvalsh` of a rank-deficient Gram gives), and NaN, inf or values below -floor are an InputError
    (`hteval.spectra.above_floor`). The floor defaults to RAW_FLOOR_FACTOR * M * the largest eigenvalue."""
    if gamma is None or not 0 < float(gamma) <= 1:
        raise InputError("raw eigenvalues need gamma = M/N in (0, 1]", source=name)
    values = np.asarray(eigenvalues, dtype=np.float64).ravel()
    if values.size == 0:
        raise InputError("no eigenvalues", source=name)
    if floor is None:
        floor = RAW_FLOOR_FACTOR * values.size * float(np.max(values[np.isfinite(values)], initial=0.0))
    elif not 0 <= float(floor) < np.inf:
        raise InputError(f"the floor must be a finite number >= 0, not {floor}", source=name)
    kept = np.sort(values[above_floor(values, floor, source=name)])
    if not kept.size:
        raise InputError(f"no eigenvalue above the floor ({float(floor):.3g}): nothing to fit", source=name)
    zeros = values.size - kept.size
    if zeros and not floor:
        raise InputError(f"{zeros} eigenvalue{'s are' if zeros > 1 else ' is'} 0 and the floor is 0: counting zeros as "
                         "censored needs a positive floor (--floor)", source=name)
    return LayerSpectrum(name=name, shape=(values.size,), N=int(round(values.size / float(gamma))), M=values.size,
                         gamma=float(gamma), n_slices=1, n_eigs=kept.size, n_censored=int(values.size - kept.size),
                         floor=float(floor), normalisation="as given", dtype="float64", eigenvalues=kept,
                         slice_ids=np.zeros(kept.size, dtype=int))


SAMPLERS = ("auto", "exact", "nuts")


def layer_key(seed: int, name: str):
    """A layer's JAX random key depends on the seed and its name only, not on what else is fitted with it."""
    import jax

    return jax.random.fold_in(jax.random.PRNGKey(seed), zlib.crc32(name.encode()))


def layer_rng(seed: int, name: str) -> np.random.Generator:
    """The numpy generator of a layer, likewise from the seed and its name only (the exact engines)."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def _summarise(data, parameters, prob) -> pd.DataFrame:
    """Summary of Markov chains: ArviZ's R-hat and ESS beside the intervals."""
    import arviz as az

    post = data["posterior"].to_dataset()
    table = summarise({name: post[name].values for name in parameters}, parameters, prob)
    for name in parameters:
        table.loc[name, "r_hat"] = float(az.rhat(post[name]))
        table.loc[name, "ess_bulk"] = float(az.ess(post[name], method="bulk"))
        table.loc[name, "ess_tail"] = float(az.ess(post[name], method="tail"))
    return table


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


def model_input(module, rec: LayerSpectrum):
    """The eigenvalue array the model is called with; a joint likelihood reads only `statistics`, so it gets an
    empty one and its compiled sampler does not depend on how many eigenvalues the layer kept."""
    import jax.numpy as jnp

    return jnp.asarray(rec.eigenvalues) if getattr(module, "POINTWISE", True) else jnp.zeros(0)


def model_data(rec: LayerSpectrum, module=None) -> dict[str, Any]:
    """The layer's model arguments; a module's `statistics` (computed once per spectrum) are added."""
    data = {"m": rec.M, "floor": rec.floor, "scale_ref": float(np.mean(rec.eigenvalues))}
    if rec.n_censored:
        data["n_censored"] = rec.n_censored
    if hasattr(module, "statistics"):
        if not getattr(module, "POINTWISE", True):
            _require_distinct(rec)
        data.update(module.statistics(rec))
    return data


def _require_distinct(rec: LayerSpectrum) -> None:
    """A joint likelihood holds prod |x_i - x_j|: equal eigenvalues of one matrix (a slice) give it zero density.
    Values rounded when written out are the usual cause; say so at the boundary, not as a ValueError deep in the
    likelihood."""
    order = np.lexsort((rec.eigenvalues, rec.slice_ids))
    x, ids = np.asarray(rec.eigenvalues)[order], np.asarray(rec.slice_ids)[order]
    tied = (np.diff(x) == 0) & (np.diff(ids) == 0)
    if not tied.any():
        return
    repeated = int(np.count_nonzero(np.r_[tied, False] | np.r_[False, tied]))
    first = int(np.argmax(tied))
    example, times = x[first], int(np.count_nonzero((x == x[first]) & (ids == ids[first])))
    raise InputError(f"{repeated} eigenvalues are repeated (e.g. {example:.6g} appears {times} times): the exact "
                     "likelihood needs distinct values; give them at full precision (not rounded), or fit a model "
                     "with an iid likelihood (--model htmp)", source=rec.name)


def fit(source, layer=None, model=names.DEFAULT_MODEL, gamma=None, prob=0.9, seed=0, chains=4, draws=1000,
        warmup=1000, *, floor=None, progress_bar=False, log_likelihood=True, max_draws=None,
        scale_ref=None, sampler: str = "auto") -> FitResult:
    """Fit one ensemble model to one layer (float64). source: matrix, checkpoint path or eigenvalues.

    sampler: "auto" (the default) draws the posterior exactly where the model can (`posterior_draws`: every
    built-in model, chains x draws independent draws, no warm-up) and runs NUTS otherwise; "nuts" runs NUTS for
    any model; "exact" insists on exact draws. warmup and max_draws apply to NUTS only.

    log_likelihood=False leaves the pointwise log-likelihood (for LOO) out of the result, saving its computation;
    models with a joint likelihood (htmp-exact) never have one.
    max_draws: a NUTS fit that misses only the R-hat or ESS criteria (no divergences) runs its chains on, doubling
    the draws per chain up to this many, before it is called unconverged; a fixed rule, recorded in the settings
    (draws is what the result holds, draws_requested what was asked for). Longer chains cannot mend divergent
    transitions, so those fits are not extended.
    scale_ref: the centre of the scale prior (default: the ESD's mean, which makes the prior scale-free); fixing it
    makes the prior independent of the data, as simulation-based calibration needs.
    """
    module = model_module(model)
    exact = _uses_exact_draws(module, model, sampler)
    rec = layer_from_source(source, layer, gamma, floor)
    kwargs = model_data(rec, module)
    log_likelihood = log_likelihood and getattr(module, "POINTWISE", True)  # a joint density has no pointwise terms
    if scale_ref is not None:
        kwargs["scale_ref"] = float(scale_ref)
    if exact:
        return _fit_exactly(module, model, rec, kwargs, prob=prob, seed=seed, chains=chains, draws=draws,
                            log_likelihood=log_likelihood)
    with float64():
        return _fit_nuts(module, model, rec, kwargs, prob=prob, seed=seed, chains=chains, draws=draws,
                         warmup=warmup, progress_bar=progress_bar, log_likelihood=log_likelihood,
                         max_draws=max_draws)


def _uses_exact_draws(module, model: str, sampler: str) -> bool:
    if sampler not in SAMPLERS:
        raise InputError(f"unknown sampler {sampler!r}; choose from {', '.join(SAMPLERS)}")
    if sampler == "exact" and not hasattr(module, "posterior_draws"):
        raise InputError(f"model {model!r} has no exact sampler; use sampler 'nuts' (or 'auto')")
    return sampler != "nuts" and hasattr(module, "posterior_draws")


def _fit_nuts(module, model: str, rec: LayerSpectrum, kwargs: dict[str, Any], *, prob, seed, chains, draws, warmup,
              progress_bar, log_likelihood, max_draws) -> FitResult:
    import jax

    from hteval.nuts import continue_chains, run_chains

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
    """A model that draws its posterior exactly (`posterior_draws`): independent draws, laid out as (chain, draw)
    like NUTS's, the quadrature's own checks deciding convergence. The ArviZ data are built on first access."""
    if getattr(module, "RANDOM", "jax") == "numpy":
        with float64_if_loaded():  # numpy random numbers; the likelihood may still be a JAX density
            posterior, loglik, checks = module.posterior_draws(layer_rng(seed, rec.name), rec.eigenvalues,
                                                               chains=chains, draws=draws, gamma=rec.gamma,
                                                               log_likelihood=log_likelihood, **data)
    else:
        with float64():
            posterior, loglik, checks = module.posterior_draws(layer_key(seed, rec.name), rec.eigenvalues,
                                                               chains=chains, draws=draws, gamma=rec.gamma,
                                                               log_likelihood=log_likelihood, **data)
    posterior = {k: np.asarray(v) for k, v in posterior.items()}
    summary = summarise(posterior, module.PARAMETERS, prob)
    reasons = list(checks.problems())
    diagnostics = {"converged": not reasons, "reasons": reasons, "divergences": 0, "max_r_hat": float("nan"),
                   "min_ess_bulk": float(summary["ess_bulk"].min()), "quadrature": checks.checks()}
    settings = {"seed": seed, "chains": chains, "draws": draws, "draws_requested": draws, "max_draws": None,
                "warmup": 0, "sampler": module.SAMPLER, "chain_method": "independent draws", "backend": "numpy"
                if getattr(module, "RANDOM", "jax") == "numpy" else _jax_backend()}

    def build_data():
        from hteval.datatree import draws_datatree

        return draws_datatree(posterior, {"diverging": np.zeros((chains, draws), dtype=bool)},
                              observed=rec.eigenvalues, attrs=_attrs(model, rec, seed), log_likelihood=loglik)

    result = _result(module, model, rec, summary, diagnostics, settings, prob, posterior, build_data=build_data)
    if getattr(checks, "evidence", None) is not None:
        result.evidence = checks.evidence.to_dict()
    return result


def _jax_backend() -> str:
    import jax

    return jax.default_backend()


def _attrs(model: str, rec: LayerSpectrum, seed: int) -> dict[str, Any]:
    from hteval import __version__

    return {"hteval_version": __version__, "model": model, "layer": rec.name, "seed": seed,
            names.INTERVALS: calibration.intervals(model), names.INTERVALS_NOTE: calibration.note(model)}


def model_module(model: str):
    """The module of a model name: what every fitting entry point checks first."""
    if model not in MODELS:
        raise InputError(f"unknown model {model!r}; choose from {', '.join(MODELS)}")
    return MODELS[model]


def assemble(module, model: str, rec: LayerSpectrum, model_fn, args, kwargs, kernel, z, stats, *, prob: float,
             seed: int, log_likelihood: bool):
    """NUTS draws of one layer (chain, draw) -> (ArviZ data, summary table, diagnostics)."""
    from hteval.nuts import to_datatree

    data = to_datatree(model_fn, args, kwargs, kernel, z, stats, observed=rec.eigenvalues,
                       with_log_likelihood=log_likelihood, attrs=_attrs(model, rec, seed))
    summary = _summarise(data, module.PARAMETERS, prob)
    return data, summary, _diagnose(data, summary)


def fit_result(module, model: str, rec: LayerSpectrum, data, summary, diagnostics, settings, prob) -> FitResult:
    """The FitResult of Markov chains (their ArviZ data already built)."""
    posterior = {k: np.asarray(v.values) for k, v in data["posterior"].to_dataset().items()}
    result = _result(module, model, rec, summary, diagnostics, settings, prob, posterior)
    result.data = data
    return result


def _result(module, model: str, rec: LayerSpectrum, summary, diagnostics, settings, prob, posterior, *,
            build_data=None) -> FitResult:
    from hteval import __version__

    if not diagnostics["converged"]:
        logger.warning("%s / %s did not converge: %s", rec.name, model, "; ".join(diagnostics["reasons"]))
    probabilities = module.probabilities(posterior) if hasattr(module, "probabilities") else {}
    if names.KAPPA in posterior:
        probabilities.update(kappa_probabilities(posterior[names.KAPPA]))
    return FitResult(model=model, record=rec.to_record(), prob=prob, summary=summary, diagnostics=diagnostics,
                     settings=settings, draws=posterior, version=__version__, layer=rec,
                     probabilities=probabilities, _build_data=build_data)


#: kappa below which HTMP is far from Marchenko-Pastur (SPEC section 2: L1 distance 0.11 from MP at kappa = 10)
FAR_FROM_MP_KAPPA = 10.0


def kappa_probabilities(kappa) -> dict[str, float]:
    """Posterior probabilities of kappa's readings: P(kappa < 10), the ESD far from Marchenko-Pastur."""
    return {names.P_KAPPA_BELOW_10: float(np.mean(np.asarray(kappa) < FAR_FROM_MP_KAPPA))}


__all__ = ["FitResult", "fit", "layer_from_source", "median_and_interval"]
