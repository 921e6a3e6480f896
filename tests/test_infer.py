"""NUTS fits: result shape, JSON schema, reproducibility, convergence reporting, the fit command."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hteval.cli import main
from hteval.infer import eigenvalue_spectrum, fit, layer_key, layer_model
from hteval.models import MODELS
from hteval.nuts import TARGET_ACCEPT, _kernel_and_step
from hteval.predictive import add_prior_predictive
from hteval.sampling import sample_htmp_spectrum

PARAMETER_KEYS = {"mean", "median", "sd", "ci_low", "ci_high", "hdi_low", "hdi_high", "r_hat", "ess_bulk"}


@pytest.fixture(scope="module")
def spectrum_and_fit():
    x = sample_htmp_spectrum(3, 300, 0.5, 2.0, 1.0)
    return x, fit(x, gamma=0.5, model="htmp", chains=2, draws=500, warmup=500, seed=1, sampler="nuts")


def test_fit_reports_intervals_and_diagnostics(spectrum_and_fit):
    _, result = spectrum_and_fit
    doc = result.to_json()
    assert doc["model"] == "htmp" and doc["gamma"] == 0.5 and doc["n_eigs"] == 300 and doc["prob"] == 0.9
    assert PARAMETER_KEYS <= set(doc["parameters"]["kappa"]) and PARAMETER_KEYS <= set(doc["parameters"]["scale"])
    for p in doc["parameters"].values():
        assert p["ci_low"] < p["median"] < p["ci_high"] and p["hdi_low"] < p["hdi_high"]
    assert {"converged", "divergences", "reasons"} <= set(doc["diagnostics"])
    assert doc["settings"]["seed"] == 1 and doc["version"]
    # the iid likelihood's intervals are labelled, in the JSON and the ArviZ data: SBC found them too wide
    assert doc["intervals"] == "uncalibrated" and "too wide" in doc["intervals_note"]
    assert result.data["posterior"].attrs["intervals"] == "uncalibrated"
    json.dumps(doc)  # JSON-safe
    # the truth (kappa 2, scale 1) within 3 posterior sd
    for name, truth in (("kappa", 2.0), ("scale", 1.0)):
        row = result.summary.loc[name]
        assert abs(row["median"] - truth) < 3 * row["sd"]


def test_same_seed_same_draws(spectrum_and_fit):
    x, result = spectrum_and_fit
    again = fit(x, gamma=0.5, model="htmp", chains=2, draws=500, warmup=500, seed=1, sampler="nuts")
    a = result.data["posterior"]["kappa"].values
    b = again.data["posterior"]["kappa"].values
    assert np.array_equal(a, b)


def test_unconverged_fit_says_so(spectrum_and_fit):
    # the fixture's shape and warm-up length: the compiled sampler is reused, and 50 draws cannot reach ESS 400
    x, _ = spectrum_and_fit
    result = fit(x, gamma=0.5, model="htmp", chains=1, draws=50, warmup=500, seed=1, sampler="nuts")
    assert not result.converged and result.diagnostics["reasons"]
    assert result.to_json()["diagnostics"]["converged"] is False


def test_short_chains_run_on_until_converged(spectrum_and_fit):
    # 2 x 100 draws cannot reach ESS 400; max_draws doubles them from where they stopped (the fixture's chains,
    # same key and warm-up, continued): the first draws are the fixture's own
    x, full = spectrum_and_fit
    result = fit(x, gamma=0.5, model="htmp", chains=2, draws=100, warmup=500, seed=1, max_draws=800, sampler="nuts")
    assert result.converged, result.diagnostics
    assert result.settings["draws_requested"] == 100 and result.settings["draws"] in (200, 400, 800)
    kappa = result.data["posterior"]["kappa"].values
    assert kappa.shape == (2, result.settings["draws"])
    shared = min(kappa.shape[1], 500)
    assert np.array_equal(kappa[:, :shared], full.data["posterior"]["kappa"].values[:, :shared])


def test_layer_key_depends_on_seed_and_name_only():
    assert np.array_equal(layer_key(0, "a"), layer_key(0, "a"))
    assert not np.array_equal(layer_key(0, "a"), layer_key(0, "b"))
    assert not np.array_equal(layer_key(0, "a"), layer_key(1, "a"))


def test_raw_eigenvalues_are_censored_below_float64_floor():
    rec = eigenvalue_spectrum(np.array([0.0, -1e-20, 1e-18, 0.5, 1.0, 2.0]), gamma=0.5)
    assert rec.n_censored == 3 and rec.n_eigs == 3


def test_fit_command_writes_summary_and_posterior(tmp_path, capsys):
    """The default model is the exact likelihood, and every output says its intervals are calibrated."""
    path = tmp_path / "eigs.npy"
    np.save(path, sample_htmp_spectrum(5, 300, 0.5, 3.0))
    out = tmp_path / "out"
    code = main(["fit", "--eigenvalues", str(path), "--gamma", "0.5", "--chains", "1", "--draws", "200",
                 "--warmup", "500", "--out", str(out)])
    assert code == 0
    doc = json.loads((out / "summary.json").read_text())
    assert doc["layer"] == "eigs" and doc["model"] == "htmp-exact" and (out / "posterior.nc").stat().st_size > 0
    assert doc["intervals"] == "calibrated" and "simulation-based calibration" in doc["intervals_note"]
    for name in ("esd.png", "rank.png", "trace.png", "prior_predictive.png"):
        assert (out / name).stat().st_size > 10_000 and name in doc["figures"]
    printed = capsys.readouterr().out
    assert "kappa" in printed and "intervals: calibrated" in printed


def test_fit_command_needs_gamma_for_raw_eigenvalues(tmp_path, capsys):
    path = tmp_path / "eigs.npy"
    np.save(path, np.linspace(0.1, 2, 50))
    assert main(["fit", "--eigenvalues", str(path), "--out", str(tmp_path / "o")]) == 2
    assert "gamma" in capsys.readouterr().err


def test_chains_and_layers_of_one_shape_share_one_compiled_program():
    """The chunked sampler is compiled once per (model, gamma, censoring, warm-up, data shapes): two chains and a
    second layer of the same size reuse it (recompiling is ~15 s a time on a CPU)."""
    first = fit(sample_htmp_spectrum(3, 300, 0.5, 2.0, 1.0), gamma=0.5, model="htmp", chains=2, draws=500, warmup=500,
                seed=1, sampler="nuts")
    before = _kernel_and_step.cache_info().hits
    fit(sample_htmp_spectrum(33, 300, 0.5, 0.7, 2.0), gamma=0.5, model="htmp", chains=2, draws=500, warmup=500, seed=1,
        sampler="nuts")
    assert _kernel_and_step.cache_info().hits == before + 1
    _, init, advance = _kernel_and_step(layer_model(MODELS["htmp"], first.layer), 500, TARGET_ACCEPT,
                                        MODELS["htmp"].DENSE_MASS)
    assert init._cache_size() == 1 and advance._cache_size() == 1


# building the HTMP table and compiling a sampler at gamma = 1 costs ~40 s for each of the HTMP models, so their
# whole fits run with the slow checks; CI keeps the reduced version: the censoring terms (log F and log(1 - F) far
# into the tails, values and gradients) are finite over a grid of the domain (test_htmp.py)
@pytest.mark.parametrize("model", [pytest.param("htmp", marks=pytest.mark.slow),
                                   pytest.param("inverse-htmp", marks=pytest.mark.slow), "mp"])
def test_censored_eigenvalues_enter_every_model_finitely(model):
    """A square layer's near-zero eigenvalues are censored at the floor: every model's likelihood stays finite
    (the inverse model's P(lambda <= floor) is an upper-tail mass of about exp(-1e10), far below the phase
    formula's resolution) and the fit runs without divergences."""
    x = sample_htmp_spectrum(7, 120, 1.0, 1.0)
    x = np.concatenate([x, [0.0, 1e-30, 1e-25]])
    result = fit(x, gamma=1.0, model=model, chains=1, draws=200, warmup=200, seed=2, sampler="nuts")
    assert result.record["n_censored"] >= 3
    lp = result.data["sample_stats"]["lp"].values
    assert np.all(np.isfinite(lp)) and result.diagnostics["divergences"] == 0


def test_prior_predictive_covers_the_observed_spectrum(spectrum_and_fit):
    """The priors are scale-free and broad: the observed rank-ordered spectrum lies inside the prior predictive
    98% band at nearly every rank, and the band is much wider than the data's own spread."""
    _, result = spectrum_and_fit
    add_prior_predictive(result, n=200, seed=0)
    spectra = np.asarray(result.data["prior_predictive"]["obs"].values)[0]
    x = np.sort(np.asarray(result.data["observed_data"]["obs"].values))
    lo, hi = np.quantile(spectra, [0.01, 0.99], axis=0)
    assert np.mean((x >= lo) & (x <= hi)) > 0.95
    kappa = result.data["prior"]["kappa"].values.ravel()
    assert kappa.min() < 0.01 and kappa.max() > 100  # log-uniform over 1e-3..1e3
