"""Which random-matrix picture explains a layer: exact marginal likelihoods, PSIS-LOO, predictive checks.

Ranking. Every model's fit by quadrature carries its exact log marginal likelihood (`hteval.evidence`), the prior
predictive density of the whole observed spectrum, so a joint likelihood (htmp-exact: all M eigenvalues at once)
and the iid models are compared on the same data; orderings are counted the same way for both. Models are ranked
by it, `weight` is each model's posterior probability among those compared (equal prior odds), and
`log_evidence_wide` repeats the evidence with every prior twice as wide (`best_wide` says whether the winner
changes). NUTS draws carry no evidence: such fits rank after those that do, among themselves by PSIS-LOO.

PSIS-LOO (the iid models only: a joint likelihood has no pointwise terms) stays beside it, with ArviZ's stacking
weights (`stacking_weight`) and its own best (`best_loo`). Every model sees the same observations (the eigenvalues
above the floor) and the same censoring, so their pointwise log-likelihoods are comparable. The eigenvalues of one
matrix are not independent (they repel), so LOO's standard errors, which assume independent pointwise terms, are
approximate: a difference counts as decisive only beyond DECISIVE_Z standard errors.

Calibration of DECISIVE_Z (`benchmarks/calibrate_decisive.py`, exact finite-size spectra, m = 200, gamma = 0.5,
8 spectra per scenario, 2026-11-26): the spread of the elpd difference over replicate spectra, divided by LOO's
standard error, was 1.55 for HTMP against MP on white Wishart spectra (nested models, the null case: LOO's se is
too small there), and 0.59-1.01 for clearly different models on HTMP spectra (LOO's se is conservative). So 4
LOO standard errors are at least 2.6 true ones: no competitor beat the true model by even 2 se in any of the 40
comparisons, while HTMP beat MP by more than 4 se on 7 of 8 kappa = 1 spectra. With 8 spectra per case the
ratio itself is uncertain by about 25%.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import arviz as az
import numpy as np
import pandas as pd
from scipy.special import logsumexp

from hteval import calibration, names
from hteval.errors import InputError
from hteval.evidence import model_probabilities
from hteval.goodness_of_fit import ppc_pvalue
from hteval.infer import FitResult, fit, layer_from_source
from hteval.models import MODELS
from hteval.predictive import add_posterior_predictive

logger = logging.getLogger(__name__)

DEFAULT_MODELS = names.DEFAULT_COMPARE_MODELS
#: |d_elpd| / d_se beyond which a loss is called decisive (calibrated: see the module docstring and the README)
DECISIVE_Z = 4.0
_LOO_COLUMNS = (names.ELPD_LOO, names.SE, names.D_ELPD, names.D_SE, names.STACKING_WEIGHT, names.PARETO_K_BAD)


@dataclass
class Comparison:
    """A comparison of ensemble models on one layer: the table (one row per model, best first by exact log
    evidence) and the fits."""

    layer: str
    table: pd.DataFrame
    fits: dict[str, FitResult] = field(repr=False)
    record: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def best(self) -> str:
        """The top model by exact log evidence (by PSIS-LOO where no fit has an evidence: `ranking`)."""
        return str(self.table.index[0])

    @property
    def ranking(self) -> str:
        """What the table's order is by: names.LOG_EVIDENCE, or names.ELPD_LOO where no fit has an evidence."""
        return names.LOG_EVIDENCE if np.isfinite(self.table[names.LOG_EVIDENCE]).any() else names.ELPD_LOO

    @property
    def best_loo(self) -> str | None:
        """The top model by PSIS-LOO among the iid models (None without one)."""
        return _top(self.table[names.ELPD_LOO])

    @property
    def best_wide(self) -> str | None:
        """The top model by log evidence under priors twice as wide (None without an evidence)."""
        return _top(self.table[names.LOG_EVIDENCE_WIDE])

    def decisive_over(self, model: str) -> bool:
        """Whether the best model by PSIS-LOO (`best_loo`) beats `model` by more than DECISIVE_Z standard errors of
        the difference (False for a model without pointwise LOO)."""
        row = self.table.loc[model]
        return bool(row[names.D_SE] > 0 and -row[names.D_ELPD] > DECISIVE_Z * row[names.D_SE])

    def to_json(self) -> dict[str, Any]:
        """The comparison.json document of `hteval compare`: both rankings, the evidence's (best, the models'
        order) and PSIS-LOO's among the iid models (best_loo, d_elpd, decisively_worse)."""
        rows = []
        for model, row in self.table.iterrows():
            entry = {"name": model}
            for column in names.COMPARISON_FIELDS[1:]:
                value = row[column]
                entry[column] = value if isinstance(value, (bool, np.bool_)) else _number(value)
            entry[names.CONVERGED] = bool(row[names.CONVERGED])
            entry["decisively_worse"] = self.decisive_over(model) if model != self.best_loo else False
            entry["parameters"] = {p: _number(self.fits[model].summary.loc[p, "median"])
                                   for p in self.fits[model].summary.index}
            entry["probabilities"] = self.fits[model].probabilities
            entry[names.INTERVALS] = calibration.intervals(model)
            rows.append(entry)
        return {"layer": self.layer, names.BEST: self.best, names.RANKING: self.ranking,
                names.BEST_LOO: self.best_loo, names.BEST_WIDE: self.best_wide, "decisive_z": DECISIVE_Z,
                "models": rows, "warnings": self.warnings, "record": self.record}


def _top(column: pd.Series) -> str | None:
    finite = column[np.isfinite(column.astype(float))]
    return str(finite.idxmax()) if len(finite) else None


def _number(value):
    value = float(value)
    return value if np.isfinite(value) else None


def compare_fits(fits: dict[str, FitResult], *, ppc_draws: int = 200, seed: int = 0) -> Comparison:
    """Rank fits by their exact log evidence (posterior probabilities with equal prior odds, and the evidence under
    priors twice as wide), with PSIS-LOO and stacking among the iid models, Pareto-k counts and each model's
    posterior predictive p-value (KS for the iid models, exact replicate spectra for htmp-exact)."""
    if len(fits) < 2:
        raise InputError("a comparison needs at least two models")
    pointwise = {m: r for m, r in fits.items() if _pointwise(m)}
    loo_table, notes = _loo_table(pointwise)
    unconverged = [f"{m}: not converged ({'; '.join(r.diagnostics['reasons'])})" for m, r in fits.items()
                   if not r.converged]
    out = _evidence_table(fits).join(loo_table)
    out[names.PPC_PVALUE] = pd.Series({m: ppc_pvalue(r, seed, ppc_draws) for m, r in fits.items()})
    out[names.CONVERGED] = pd.Series({m: r.converged for m, r in fits.items()})
    out = out.sort_values([names.LOG_EVIDENCE, names.ELPD_LOO], ascending=False, na_position="last")
    out.index.name = "name"
    first = next(iter(fits.values()))
    comparison = Comparison(layer=first.record[names.NAME], table=out[list(names.COMPARISON_FIELDS[1:])],
                            fits=fits, record=first.record)
    notes += _ranking_notes(comparison)
    comparison.warnings = unconverged + notes
    for note in notes:  # `fit` logged each non-convergence as its fit finished
        logger.warning(note)
    return comparison


def _pointwise(model: str) -> bool:
    return getattr(MODELS[model], "POINTWISE", True)


def _evidence_table(fits: dict[str, FitResult]) -> pd.DataFrame:
    """log evidence, its difference from the best, the posterior probability among the models with an evidence
    (equal prior odds; NaN without one) and the wide priors' log evidence, one row per fit."""
    log_z = pd.Series({m: r.evidence.get(names.LOG_EVIDENCE, math.nan) for m, r in fits.items()}, dtype=float)
    wide = pd.Series({m: r.evidence.get(names.LOG_EVIDENCE_WIDE, math.nan) for m, r in fits.items()}, dtype=float)
    finite = np.isfinite(log_z)
    d_log_z = log_z - (log_z[finite].max() if finite.any() else math.nan)
    weight = pd.Series(model_probabilities(log_z.to_numpy()), index=log_z.index)
    return pd.DataFrame({names.LOG_EVIDENCE: log_z, names.D_LOG_EVIDENCE: d_log_z, names.WEIGHT: weight,
                         names.LOG_EVIDENCE_WIDE: wide})


def _loo_table(fits: dict[str, FitResult]) -> tuple[pd.DataFrame, list[str]]:
    """PSIS-LOO of the iid fits with ArviZ's stacking comparison (d_elpd against the best of them), Pareto-k counts,
    and a note per fit whose LOO estimate is unreliable."""
    loo, bad_k, notes = {}, {}, []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ArviZ's own warning is replaced by the count and the note below
        for model, result in fits.items():
            loo[model] = _loo(result)
            bad_k[model] = int((loo[model].pareto_k > loo[model].good_k).sum())
        if len(loo) >= 2:
            # the ELPD data, not the fits: az.compare would compute every PSIS-LOO again
            table = az.compare(loo, method="stacking", round_to="none")
        else:
            table = pd.DataFrame({"elpd": {m: e.elpd for m, e in loo.items()}, "se": {m: e.se for m, e in loo.items()},
                                  "elpd_diff": 0.0, "dse": 0.0, "weight": 1.0}, index=list(loo))
    for model, count in bad_k.items():
        if count:
            notes.append(f"{model}: {count} eigenvalues with Pareto k above {loo[model].good_k:.2f}; "
                         "its LOO estimate is unreliable")
    out = pd.DataFrame({names.ELPD_LOO: table["elpd"], names.SE: table["se"], names.D_ELPD: table["elpd_diff"],
                        names.D_SE: table["dse"], names.STACKING_WEIGHT: table["weight"],
                        names.PARETO_K_BAD: pd.Series(bad_k)}, index=list(loo), columns=list(_LOO_COLUMNS))
    return out.astype(float), notes


def _ranking_notes(comparison: Comparison) -> list[str]:
    """What qualifies the evidence ranking: fits without an evidence, and a winner that wider priors change."""
    table = comparison.table
    notes = [f"{m}: no exact evidence (NUTS draws), ranked after the models that have one"
             for m in table.index[~np.isfinite(table[names.LOG_EVIDENCE])]]
    wide, best = comparison.best_wide, comparison.best
    if wide is not None and wide != best:
        gain = table.loc[wide, names.LOG_EVIDENCE_WIDE] - table.loc[best, names.LOG_EVIDENCE_WIDE]
        notes.append(f"with every prior twice as wide the evidence prefers {wide} to {best} (by {gain:.2f} in log "
                     f"evidence, against {-table.loc[wide, names.D_LOG_EVIDENCE]:.2f} the other way with the "
                     "priors as fitted): their order depends on the priors")
    return notes


def _loo(result: FitResult):
    """PSIS-LOO of one fit. Independent draws (an exact sampler) have relative efficiency 1, and their PSIS-LOO is
    computed here for all eigenvalues at once (`psis_loo`: ArviZ's algorithm and result, whose own loops over the
    eigenvalues cost ~1 s a model); Markov chains go through ArviZ, which estimates their relative efficiency."""
    if result.settings.get("chain_method") != "independent draws":
        return az.loo(result.data, pointwise=True)
    return psis_loo(result.data["log_likelihood"]["obs"])


def psis_loo(log_likelihood):
    """az.loo(..., reff=1, pointwise=True) of a log-likelihood DataArray (chain, draw, point) in a few array
    operations: the same smoothed weights, pointwise ELPD, Pareto k and summary (to rounding), as ArviZ's
    ELPDDataLOO, which az.compare takes."""
    import xarray as xr
    from arviz_stats.utils import ELPDDataLOO

    log_likelihood = log_likelihood.transpose("chain", "draw", ...)
    values = log_likelihood.values
    draws = values.shape[0] * values.shape[1]
    flat = values.reshape(draws, -1)
    log_weights, pareto_k = psis(flat)
    elpd_i = _logsumexp0(log_weights + flat)
    p_loo_i = _logsumexp0(flat) - np.log(draws) - elpd_i
    points = log_likelihood.dims[2:]
    coords = {d: log_likelihood.coords[d] for d in points if d in log_likelihood.coords}
    good_k = min(1 - 1 / np.log10(draws), 0.7)
    return ELPDDataLOO(
        elpd=float(np.sum(elpd_i)), se=float(np.sqrt(elpd_i.size * np.var(elpd_i, ddof=1))), p=float(np.sum(p_loo_i)),
        n_samples=draws, n_data_points=elpd_i.size, scale="log", warning=bool(np.any(pareto_k > good_k)),
        good_k=good_k, elpd_i=xr.DataArray(elpd_i, dims=points, coords=coords),
        pareto_k=xr.DataArray(pareto_k, dims=points, coords=coords), approx_posterior=False,
        log_weights=xr.DataArray(log_weights.reshape(values.shape), dims=log_likelihood.dims,
                                 coords=log_likelihood.coords))


def _logsumexp0(a: np.ndarray) -> np.ndarray:
    top = a.max(axis=0)
    return top + np.log(np.sum(np.exp(a - top), axis=0))


def psis(log_lik: np.ndarray, reff: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Pareto-smoothed importance log weights (draws, points), normalised per point, and each point's Pareto k, for
    leave-one-out weights 1 / p(y_i | theta): ArviZ's `psislw` (Vehtari et al. 2024; the generalised Pareto fit of
    Zhang and Stephens with its weakly informative prior on k) for every point at once, in numpy."""
    draws = log_lik.shape[0]
    tail = int(np.floor(3 * np.sqrt(draws / reff)) if draws * reff > 225 else np.floor(draws / 5))
    log_w = -log_lik
    log_w = log_w - log_w.max(axis=0)
    # only the largest tail + 1 weights of each point matter: partition, then sort those
    largest = np.argpartition(log_w, draws - tail - 1, axis=0)[draws - tail - 1:]
    cutoff_log = np.take_along_axis(log_w, largest[:1], axis=0)[0]
    tail_index = np.take_along_axis(largest[1:], np.argsort(np.take_along_axis(log_w, largest[1:], axis=0), axis=0),
                                    axis=0)
    tail_logs = np.take_along_axis(log_w, tail_index, axis=0)
    cutoff = np.exp(cutoff_log)
    khat, sigma = _gpdfit(np.exp(tail_logs) - cutoff)
    p = ((np.arange(tail) + 0.5) / tail)[:, None]
    fitted = np.isfinite(khat)
    with np.errstate(divide="ignore", invalid="ignore"):
        k_safe = np.where(fitted & (khat != 0), khat, 1.0)
        quantiles = np.where(khat == 0, cutoff - sigma * np.log1p(-p),
                             cutoff + sigma * np.expm1(-k_safe * np.log1p(-p)) / k_safe)
        smoothed = np.log(np.where(sigma > 0, quantiles, np.nan))
    smoothed = np.where(smoothed > tail_logs[-1], tail_logs[-1], smoothed)  # no smoothed weight above the largest
    np.put_along_axis(log_w, tail_index, np.where(fitted, smoothed, tail_logs), axis=0)
    return log_w - _logsumexp0(log_w), khat


def _gpdfit(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ArviZ's `_gpdfit` for every column of x (tail size, points), sorted ascending along axis 0: (k, sigma)."""
    n = x.shape[0]
    prior_bs, prior_k = 3, 10
    m_est = 30 + int(n**0.5)
    xstar = x[int((n / 4 + 0.5) - 1)]
    degenerate = xstar <= x[0]  # far from a generalised Pareto law: no fit
    with np.errstate(divide="ignore", invalid="ignore"):
        grid = 1 - np.sqrt(m_est / (np.arange(1, m_est + 1, dtype=float) - 0.5))
        b = grid[:, None] / (prior_bs * xstar) + 1 / x[-1]
        k = np.mean(np.log1p(-b[:, None, :] * x[None, :, :]), axis=1)
        length = n * (np.log(-b / k) - k - 1)
        weight = np.exp(length - logsumexp(length, axis=0))
        weight = np.where(weight >= 10 * np.finfo(float).eps, weight, 0.0)
        weight /= weight.sum(axis=0)
        b_post = np.sum(b * weight, axis=0)
        kappa = np.mean(np.log1p(-b_post * x), axis=0)
        sigma = -kappa / b_post
        kappa = (n * kappa + prior_k * 0.5) / (n + prior_k)
    kappa = np.where(np.isnan(kappa), np.inf, kappa)
    sigma = np.where(np.isnan(kappa) | np.isinf(kappa), np.nan, sigma)
    return np.where(degenerate, np.nan, kappa), np.where(degenerate, np.nan, sigma)


def fit_models(source, layer=None, models=DEFAULT_MODELS, gamma=None, prob=0.9, seed=0, chains=4, draws=1000,
               warmup=1000, *, floor=None, progress_bar=False, predictive_draws=100, on_fit=None, max_draws=None,
               sampler="auto"):
    """Fit each model to one layer (same spectrum, same seed), with posterior predictive spectra.

    on_fit(model, result) is called as each fit finishes (the CLI writes it out, so nothing computed is lost).
    sampler: as `hteval.infer.fit`'s ("auto": exact draws where a model has them, NUTS otherwise; "nuts": NUTS
    for every model).
    """
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise InputError(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    rec = layer_from_source(source, layer, gamma, floor)
    fits = {}
    for model in models:
        logger.info("fitting %s to %s", model, rec.name)
        fits[model] = fit(rec, model=model, prob=prob, seed=seed, chains=chains, draws=draws, warmup=warmup,
                          progress_bar=progress_bar, max_draws=max_draws, sampler=sampler)
        add_posterior_predictive(fits[model], predictive_draws, seed)
        if on_fit is not None:
            on_fit(model, fits[model])
    return fits


def compare(source, layer=None, models=DEFAULT_MODELS, gamma=None, prob=0.9, seed=0, chains=4, draws=1000,
            warmup=1000, *, floor=None, progress_bar=False, ppc_draws=200, predictive_draws=100,
            sampler="auto") -> Comparison:
    """Fit each model to one layer and compare them by exact log evidence, with PSIS-LOO and stacking among the iid
    models (`fit_models`, `compare_fits`).

    predictive_draws: posterior predictive spectra stored with each fit (the overlay figure's); ppc_draws:
    posterior draws behind each model's KS p-value; sampler: see `fit_models`."""
    fits = fit_models(source, layer, models, gamma, prob, seed, chains, draws, warmup, floor=floor,
                      progress_bar=progress_bar, predictive_draws=predictive_draws, sampler=sampler)
    return compare_fits(fits, ppc_draws=ppc_draws, seed=seed)
