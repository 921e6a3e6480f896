"""Which random-matrix picture explains a layer: PSIS-LOO per model, stacking weights, predictive checks.

Every model sees the same observations (the eigenvalues above the floor) and the same censoring, so their
pointwise log-likelihoods are comparable. The eigenvalues of one matrix are not independent (they repel), so
LOO's standard errors, which assume independent pointwise terms, are approximate: a difference counts as
decisive only beyond DECISIVE_Z standard errors.

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
import warnings
from dataclasses import dataclass, field
from typing import Any

import arviz as az
import numpy as np
import pandas as pd

from hteval import calibration, names
from hteval.errors import InputError
from hteval.infer import FitResult, fit, layer_from_source
from hteval.models import MODELS
from hteval.predictive import add_posterior_predictive, ks_pvalue

logger = logging.getLogger(__name__)

DEFAULT_MODELS = names.DEFAULT_COMPARE_MODELS
#: |d_elpd| / d_se beyond which a loss is called decisive (calibrated: see the module docstring and the README)
DECISIVE_Z = 4.0


@dataclass
class Comparison:
    """A comparison of ensemble models on one layer: the table (one row per model, best first) and the fits."""

    layer: str
    table: pd.DataFrame
    fits: dict[str, FitResult] = field(repr=False)
    record: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def best(self) -> str:
        return str(self.table.index[0])

    def decisive_over(self, model: str) -> bool:
        """Whether the best model beats `model` by more than DECISIVE_Z standard errors of the difference."""
        row = self.table.loc[model]
        return bool(row[names.D_SE] > 0 and -row[names.D_ELPD] > DECISIVE_Z * row[names.D_SE])

    def to_json(self) -> dict[str, Any]:
        """The comparison.json document of `hteval compare`."""
        rows = []
        for model, row in self.table.iterrows():
            entry = {"name": model}
            for column in names.COMPARISON_FIELDS[1:]:
                value = row[column]
                entry[column] = value if isinstance(value, (bool, np.bool_)) else _number(value)
            entry[names.CONVERGED] = bool(row[names.CONVERGED])
            entry["decisively_worse"] = self.decisive_over(model) if model != self.best else False
            entry["parameters"] = {p: _number(self.fits[model].summary.loc[p, "median"])
                                   for p in self.fits[model].summary.index}
            entry["probabilities"] = self.fits[model].probabilities
            entry[names.INTERVALS] = calibration.intervals(model)
            rows.append(entry)
        return {"layer": self.layer, "best": self.best, "decisive_z": DECISIVE_Z, "models": rows,
                "warnings": self.warnings, "record": self.record}


def _number(value):
    value = float(value)
    return value if np.isfinite(value) else None


def compare_fits(fits: dict[str, FitResult], *, ppc_draws: int = 200, seed: int = 0) -> Comparison:
    """PSIS-LOO of each fit, ArviZ's stacking comparison, Pareto-k counts and a KS posterior predictive p-value."""
    if len(fits) < 2:
        raise InputError("a comparison needs at least two models")
    notes = []
    loo, bad_k = {}, {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ArviZ's own warning is replaced by the count and the note below
        for model, result in fits.items():
            loo[model] = az.loo(result.data, pointwise=True)
            bad_k[model] = int((loo[model].pareto_k > loo[model].good_k).sum())
        table = az.compare({m: r.data for m, r in fits.items()}, method="stacking", round_to="none")
    for model, count in bad_k.items():
        if count:
            notes.append(f"{model}: {count} eigenvalues with Pareto k above {loo[model].good_k:.2f}; "
                         "its LOO estimate is unreliable")
        if not fits[model].converged:
            notes.append(f"{model}: not converged ({'; '.join(fits[model].diagnostics['reasons'])})")
    out = pd.DataFrame({
        names.ELPD_LOO: table["elpd"], names.SE: table["se"], names.D_ELPD: table["elpd_diff"],
        names.D_SE: table["dse"], names.WEIGHT: table["weight"],
        names.PARETO_K_BAD: pd.Series(bad_k), names.CONVERGED: pd.Series({m: r.converged for m, r in fits.items()}),
        names.PPC_PVALUE: pd.Series({m: ks_pvalue(r, ppc_draws, seed) for m, r in fits.items()}),
    }).loc[table.index]
    out.index.name = "name"
    for note in notes:
        logger.warning(note)
    first = next(iter(fits.values()))
    return Comparison(layer=first.record[names.NAME], table=out[list(names.COMPARISON_FIELDS[1:])], fits=fits,
                      record=first.record, warnings=notes)


def fit_models(source, layer=None, models=DEFAULT_MODELS, gamma=None, prob=0.9, seed=0, chains=4, draws=1000,
               warmup=1000, *, floor=None, progress_bar=False, predictive_draws=100, on_fit=None, max_draws=None):
    """Fit each model to one layer (same spectrum, same seed), with posterior predictive spectra.

    on_fit(model, result) is called as each fit finishes (the CLI writes it out, so nothing computed is lost).
    """
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise InputError(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    joint = [m for m in models if not getattr(MODELS[m], "POINTWISE", True)]
    if joint:
        raise InputError(f"{', '.join(joint)}: a joint likelihood has no pointwise terms, so no PSIS-LOO; "
                         "compare its iid counterpart (htmp) instead")
    rec = layer_from_source(source, layer, gamma, floor)
    fits = {}
    for model in models:
        logger.info("fitting %s to %s", model, rec.name)
        fits[model] = fit(rec, model=model, prob=prob, seed=seed, chains=chains, draws=draws, warmup=warmup,
                          progress_bar=progress_bar, max_draws=max_draws)
        add_posterior_predictive(fits[model], predictive_draws, seed)
        if on_fit is not None:
            on_fit(model, fits[model])
    return fits


def compare(source, layer=None, models=DEFAULT_MODELS, gamma=None, prob=0.9, seed=0, chains=4, draws=1000,
            warmup=1000, *, floor=None, progress_bar=False, ppc_draws=200, predictive_draws=100) -> Comparison:
    """Fit each model to one layer and compare them by PSIS-LOO and stacking (`fit_models`, `compare_fits`).

    predictive_draws: posterior predictive spectra stored with each fit (the overlay figure's); ppc_draws:
    posterior draws behind each model's KS p-value."""
    fits = fit_models(source, layer, models, gamma, prob, seed, chains, draws, warmup, floor=floor,
                      progress_bar=progress_bar, predictive_draws=predictive_draws)
    return compare_fits(fits, ppc_draws=ppc_draws, seed=seed)
