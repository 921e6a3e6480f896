"""Model comparison: PSIS-LOO and stacking pick the ensemble that generated an exact finite-size spectrum.

CI runs reduced versions (m = 300, two or three models, 2 x 500 draws); the issue's full checks (m = 500, more
models) are marked slow.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from hteval import names
from hteval.cli import main
from hteval.compare import DECISIVE_Z, compare
from hteval.sampling import sample_correlated_spectrum, sample_htmp_spectrum, sample_mp_spectrum

LIGHT = {"chains": 2, "draws": 500, "warmup": 500, "seed": 0}


def _inverse_htmp_spectrum(seed, m, gamma, kappa):
    s = sample_htmp_spectrum(seed, m, gamma, kappa)
    return np.sort(1.0 / s[s > 0])


def test_htmp_spectrum_prefers_htmp_decisively_over_mp():
    x = sample_htmp_spectrum(11, 300, 0.5, 1.0)
    comparison = compare(x, gamma=0.5, models=("mp", "htmp"), **LIGHT)
    assert comparison.best == "htmp"
    assert comparison.decisive_over("mp")
    doc = comparison.to_json()
    json.dumps(doc)
    assert doc["best"] == "htmp" and {m["name"] for m in doc["models"]} == {"mp", "htmp"}
    for entry in doc["models"]:
        assert set(names.COMPARISON_FIELDS) <= set(entry)
        assert 0.0 <= entry[names.PPC_PVALUE] <= 1.0
    weights = comparison.table[names.WEIGHT]
    assert weights.sum() == pytest.approx(1.0) and weights["htmp"] > 0.9


def test_white_wishart_spectrum_does_not_beat_mp_significantly():
    x = sample_mp_spectrum(12, 300, 0.5)
    comparison = compare(x, gamma=0.5, models=("mp", "htmp"), **LIGHT)
    if comparison.best != "mp":
        assert not comparison.decisive_over("mp")
        assert comparison.fits["htmp"].summary.loc["kappa", "median"] > 20  # HTMP near its MP limit


def test_inverse_htmp_spectrum_prefers_the_inverse_model():
    x = _inverse_htmp_spectrum(13, 300, 0.5, 4.0)
    comparison = compare(x, gamma=0.5, models=("htmp", "inverse-htmp"), **LIGHT)
    assert comparison.best == "inverse-htmp" and comparison.decisive_over("htmp")


def test_compare_command_writes_json_csv_and_figures(tmp_path):
    path = tmp_path / "eigs.npy"
    np.save(path, sample_mp_spectrum(14, 120, 0.5))
    out = tmp_path / "out"
    code = main(["compare", "--eigenvalues", str(path), "--gamma", "0.5", "--models", "mp,lognormal",
                 "--chains", "1", "--draws", "200", "--warmup", "200", "--out", str(out)])
    assert code == 0
    doc = json.loads((out / "comparison.json").read_text())
    assert doc["layer"] == "eigs" and doc["best"] in ("mp", "lognormal") and len(doc["models"]) == 2
    assert (out / "comparison.csv").read_text().startswith("name,")
    for name in ("compare_density.png", "compare_rank.png", "compare_elpd.png", "posterior_mp.nc"):
        assert (out / name).stat().st_size > 5_000


def test_compare_command_rejects_unknown_models(tmp_path, capsys):
    code = main(["compare", "--eigenvalues", str(tmp_path / "x.npy"), "--gamma", "0.5", "--models", "mp,nope",
                 "--out", str(tmp_path)])
    assert code == 2 and "--models" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("seed", [21, 22, 23])
def test_issue_checks_full(seed):
    """The issue's checks at m = 500 with the default sampler and more competitors."""
    models = ("mp", "htmp", "inverse-htmp", "powerlaw", "lognormal")
    htmp = compare(sample_htmp_spectrum(seed, 500, 0.5, 1.0), gamma=0.5, models=models, seed=seed)
    assert htmp.best == "htmp" and htmp.decisive_over("mp")
    assert -htmp.table.loc["mp", names.D_ELPD] > DECISIVE_Z * htmp.table.loc["mp", names.D_SE]
    white = compare(sample_mp_spectrum(seed, 500, 0.5), gamma=0.5, models=models, seed=seed)
    if white.best != "mp":
        assert not white.decisive_over("mp")
    inverse = compare(_inverse_htmp_spectrum(seed, 500, 0.5, 4.0), gamma=0.5, models=models, seed=seed)
    assert inverse.best == "inverse-htmp"


def _correlated_comparison(nu, m=300, decisive=True, **sampler):
    x = sample_correlated_spectrum(2 * m, m, nu, seed=31)
    comparison = compare(x, gamma=0.5, models=("mp", "htmp", "correlated-mp"), seed=0, **sampler)
    assert comparison.best == "correlated-mp"
    assert comparison.decisive_over("mp") or not decisive
    fit = comparison.fits["correlated-mp"]
    row = fit.summary.loc["nu"]
    assert row["ci_low"] <= nu <= row["ci_high"]
    return fit


def test_correlated_spectrum_prefers_correlated_mp_reduced():
    """CI's reduced version of the issue's check (W = X Sigma^(1/2), t_i ~ i^-nu, nu = 1, m = 120, gamma = 0.5):
    correlated-mp wins, the true nu lies in its 90% interval, and its chains agree with no divergences. At this
    size and 2 x 300 draws (chosen to keep the suite under 15 minutes) the win over MP is ~18 (3.3 standard
    errors when first measured, not decisive) and ESS falls short of `converged`: decisiveness and convergence
    are the slow test's. Measured here (2026-11-27): nu 0.96 [0.77, 1.16], R-hat 1.013, bulk ESS 178, MP 17.7
    below, HTMP 47.7 below; ~110 s."""
    fit = _correlated_comparison(1.0, m=120, decisive=False, chains=2, draws=300, warmup=200, ppc_draws=50,
                                 predictive_draws=20)
    summary = fit.summary
    assert fit.diagnostics["divergences"] == 0
    assert summary["r_hat"].max() < 1.05 and summary["ess_bulk"].min() > 100


@pytest.mark.slow
@pytest.mark.timeout(3600)  # ~20 minutes a case on a 2-core CPU
@pytest.mark.parametrize("nu", [0.3, 1.0])
def test_correlated_spectrum_prefers_correlated_mp_and_recovers_nu(nu):
    """The issue's check at m = 300 with the default sampler (4 x 1000 draws): correlated-mp best, nu covered, and
    the fit converged by every criterion (R-hat <= 1.01, bulk and tail ESS >= 400, no divergences). Decisive over
    MP is asserted at nu = 1 only: at nu = 0.3 the population spread is small and MP with its outlier component
    came 26.8 below, 3.8 standard errors (measured 2026-11-27, nu 0.290 [0.238, 0.363], converged)."""
    fit = _correlated_comparison(nu, decisive=nu >= 1.0)
    assert fit.converged, fit.diagnostics["reasons"]
