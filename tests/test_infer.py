"""NUTS fits: result shape, JSON schema, reproducibility, convergence reporting, the fit command."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from hteval.cli import main
from hteval.errors import InputError
from hteval.infer import eigenvalue_spectrum, fit, layer_key, layer_model, model_data
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


# Raw eigenvalues as users compute them --------------------------------------------------------------

def _low_rank(n, m, rank, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, rank)) @ rng.standard_normal((rank, m))).astype(np.float32)


def _eigvalsh(W):
    """Eigenvalues the usual way: of the float64 Gram, with their rounding below zero."""
    X = np.asarray(W, dtype=np.float64)
    return np.linalg.eigvalsh(X.T @ X / X.shape[0])


@pytest.mark.parametrize(("W", "censored"), [(_low_rank(200, 100, 20), 80),
                                             (np.random.default_rng(1).standard_normal((100, 100)), 0),
                                             (_low_rank(100, 100, 90, seed=2), 10)],
                         ids=["200x100-rank-20", "square-100", "square-rank-90"])
def test_eigvalsh_output_fits_like_the_matrix(W, censored):
    """eigvalsh of a rank-deficient Gram has rounding below zero (-8e-14 here): it is censored with the zeros, and
    the fit of those eigenvalues agrees with the fit of the matrix (squared singular values, float32 weights, a
    floor of the same order) within a quarter of a posterior sd in kappa and in scale."""
    x = _eigvalsh(W)
    gamma = W.shape[1] / W.shape[0]
    from_eigs, from_matrix = fit(x, gamma=gamma, layer="W"), fit(W, layer="W")
    assert from_eigs.record["n_censored"] == from_matrix.record["n_censored"] == censored
    assert from_eigs.converged and from_matrix.converged
    for p in ("kappa", "scale"):
        a, b = from_eigs.summary.loc[p], from_matrix.summary.loc[p]
        assert abs(a["median"] - b["median"]) < 0.25 * a["sd"], (p, a["median"], b["median"])


def test_fit_command_censors_rounding_and_warns_once(tmp_path, caplog):
    """`hteval fit --eigenvalues` on eigvalsh output of a rank-20 layer: it succeeds, counts 80 censored values,
    and the structural zeros are warned of once on stderr and in summary.json's warnings."""
    x = _eigvalsh(_low_rank(200, 100, 20))
    assert np.sum(x < 0) > 10
    np.save(tmp_path / "eigs.npy", x)
    out = tmp_path / "out"
    assert main(["fit", "--eigenvalues", str(tmp_path / "eigs.npy"), "--gamma", "0.5", "--out", str(out)]) == 0
    doc = json.loads((out / "summary.json").read_text())
    assert doc["n_censored"] == 80 and doc["n_eigs"] == 20
    (warning,) = doc["warnings"]
    assert "80 of 100 eigenvalues (80%)" in warning and "structural zero is not a small eigenvalue" in warning
    logged = [r for r in caplog.records if "structural zero" in r.getMessage()]
    assert [r.levelname for r in logged] == ["WARNING"]


def test_fit_json_keeps_its_keys_and_adds_warnings():
    x = sample_htmp_spectrum(5, 200, 0.5, 3.0)
    doc = fit(x, gamma=0.5).to_json()
    assert doc["warnings"] == []
    assert {"model", "layer", "n_eigs", "n_censored", "gamma", "prob", "parameters", "intervals", "diagnostics",
            "ppc_pvalue", "misfit", "probabilities", "evidence", "settings", "record", "version"} < set(doc)


@pytest.mark.parametrize(("values", "floor", "message"), [
    ([0.1, 0.2, -0.5, -1e-3, 0.3, -1e-20], None,
     r"x: 2 eigenvalues below -1.8e-15 \(the resolution bound\); the most negative is -0.5"),
    ([0.1, 0.2, -2e-6, 0.3], 1e-6, r"1 eigenvalue below -1e-06 \(the resolution bound\); the most negative is -2e-06"),
    ([0.1, np.nan, 0.2, np.inf, 0.3], None, "x: 2 eigenvalues are NaN or inf"),
    ([0.1, -np.inf, 0.2], None, "x: 1 eigenvalue is NaN or inf"),
    ([0.1, 0.2], -1.0, "the floor must be a finite number >= 0"),
    ([0.0, 0.0, 0.0], None, r"x: no eigenvalue above the floor \(0\): nothing to fit"),
    ([0.0, 0.5, 1.0], 0.0, "1 eigenvalue is 0 and the floor is 0: counting zeros as censored needs a positive floor"),
])
def test_raw_eigenvalues_below_the_bound_or_not_finite_are_refused(values, floor, message):
    with pytest.raises(InputError, match=message):
        eigenvalue_spectrum(np.array(values), gamma=0.5, name="x", floor=floor)


def test_raw_eigenvalues_down_to_minus_the_floor_are_censored():
    """The floor bounds rounding on both sides: [-floor, floor] is censored, the default floor and a given one
    alike."""
    rec = eigenvalue_spectrum(np.array([-1e-6, -5e-7, 0.0, 1e-6, 0.5, 1.0]), gamma=0.5, floor=1e-6)
    assert (rec.n_censored, rec.n_eigs, rec.floor) == (4, 2, 1e-6)
    rec = eigenvalue_spectrum(np.array([-1.1e-15, 1e-15, 0.25, 0.5]), gamma=0.5)  # floor 1e-15 x 4 x 0.5 = 2e-15
    assert (rec.n_censored, rec.n_eigs) == (2, 2)


def test_repeated_eigenvalues_are_one_clear_error_from_the_command_line(tmp_path):
    """Equal eigenvalues give the exact likelihood zero density: the command says so in one line, exit 2."""
    path = tmp_path / "rounded.txt"
    path.write_text("0.1 0.2 0.2 0.2 0.3 0.4 0.4 0.5 0.6 0.7 0.8 0.9 1.0 1.1 1.2 1.3 1.4\n")
    result = subprocess.run([sys.executable, "-m", "hteval.cli", "fit", "--eigenvalues", str(path), "--gamma", "0.5",
                             "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        "hteval: error: rounded: 5 eigenvalues are repeated (e.g. 0.2 appears 3 times): the exact likelihood needs "
        "distinct values; give them at full precision (not rounded), or fit a model with an iid likelihood "
        "(--model htmp)"]


def test_equal_eigenvalues_in_different_conv_slices_are_no_tie():
    """Each slice is its own matrix (its own joint density): a value shared by two slices is not a repeat."""
    x = np.linspace(0.1, 2.0, 20)
    rec = eigenvalue_spectrum(np.concatenate([x, x]), gamma=0.5)
    per_slice = replace(rec, n_slices=2, M=20, slice_ids=np.repeat([0, 1], 20)[np.argsort(np.concatenate([x, x]),
                                                                                         kind="stable")])
    assert model_data(per_slice, MODELS["htmp-exact"])["n_observed"].tolist() == [20.0, 20.0]
    with pytest.raises(InputError, match="40 eigenvalues are repeated"):
        model_data(rec, MODELS["htmp-exact"])
