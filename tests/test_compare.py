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


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="correlated-mp's posterior does not converge on finite-size spectra "
                   "(README, 'Model comparison', known defect)")
@pytest.mark.parametrize("nu", [0.3, 1.0])
def test_correlated_spectrum_prefers_correlated_mp_and_recovers_nu(nu):
    """The issue's check on W = X Sigma^(1/2), t_i ~ i^-nu. Measured 2026-11-26 (m = 300, 2 x 500): correlated-mp
    wins both times (by 2.1 se over HTMP at nu = 0.3, by 4.8 se over MP at nu = 1) and nu = 0.3 lies in its 90%
    interval, but its chains do not converge (R-hat 1.15 and 1.2, 5-6 divergences): the limiting law of the
    per-atom population spectrum has islands and hard edges that finite-size eigenvalues straddle, so the
    likelihood jumps as parameters move them across. Strict: this fails loudly once the model is mended."""
    x = sample_correlated_spectrum(600, 300, nu, seed=31)
    comparison = compare(x, gamma=0.5, models=("mp", "htmp", "correlated-mp"), **LIGHT)
    fit = comparison.fits["correlated-mp"]
    row = fit.summary.loc["nu"]
    assert comparison.best == "correlated-mp" and fit.converged
    assert row["ci_low"] <= nu <= row["ci_high"]
