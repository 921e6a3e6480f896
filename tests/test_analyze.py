"""hteval analyze: every layer gets a row (fitted, skipped or failed), results are written as they come, and a
second run over the same output resumes without refitting or rewriting finished rows."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import save_file

from hteval import names
from hteval.cli import main
from hteval.errors import InputError
from hteval.network_analysis import LAYER_TABLE, analyze, read_layer_table, table_columns
from hteval.spectra import iter_spectra

LIGHT = {"chains": 1, "draws": 100, "warmup": 100, "max_draws": None}  # NUTS: no extension (one chain, no R-hat)


@pytest.fixture
def checkpoint(tmp_path):
    rng = np.random.default_rng(0)
    bad = rng.standard_normal((64, 32)).astype(np.float32)
    bad[3, 4] = np.nan
    path = tmp_path / "tiny.safetensors"
    save_file({"a.weight": rng.standard_normal((96, 48)).astype(np.float32),
               "a.bias": rng.standard_normal(48).astype(np.float32),
               "b.weight": bad,
               "c.weight": (rng.standard_normal((96, 48)) * 0.5).astype(np.float32)}, path)
    return path


def test_every_tensor_gets_a_row_and_each_fit_its_json(checkpoint, tmp_path):
    out = tmp_path / "out"
    seen = []
    table = analyze(checkpoint, out, on_row=lambda row, done, total: seen.append((done, total))).set_index(names.NAME)
    order = [item.name for item in iter_spectra(checkpoint, on_error="skip")]
    assert list(table.index) == order and set(order) == {"a.weight", "a.bias", "b.weight", "c.weight"}
    assert seen[-1] == (4, 4)
    assert table.loc["a.bias", names.STATUS] == names.STATUS_SKIPPED
    assert table.loc["b.weight", names.STATUS] == names.STATUS_ERROR and "NaN" in table.loc["b.weight", names.ERROR]
    for layer in ("a.weight", "c.weight"):
        row = table.loc[layer]
        assert row[names.STATUS] == names.STATUS_OK  # exact draws of the default model: the quadrature's checks
        assert row["kappa_ci_low"] < row["kappa_median"] < row["kappa_ci_high"]
        assert row["T_median"] == pytest.approx(48 / row["kappa_median"], rel=0.05)  # T = M / kappa
        doc = json.loads((out / "layers" / f"{layer}.htmp-exact.json").read_text())
        assert doc["layer"] == layer and doc["model"] == "htmp-exact"
        assert doc["diagnostics"]["quadrature"]["edge_mass"] < 1e-4
        assert row[names.INTERVALS] == doc[names.INTERVALS] == names.INTERVALS_CALIBRATED
        assert (out / "layers" / f"{layer}.htmp-exact.esd.png").stat().st_size > 10_000
        with np.load(out / "layers" / f"{layer}.htmp-exact.draws.npz") as draws:
            assert draws["kappa"].shape == (4, 1000)
    # scale is the mean eigenvalue: c's weights are half as large, so its scale is a quarter of a's
    assert table.loc["c.weight", "scale_median"] / table.loc["a.weight", "scale_median"] == pytest.approx(0.25,
                                                                                                          rel=0.05)


def test_every_fit_has_its_goodness_of_fit(checkpoint, tmp_path):
    table = analyze(checkpoint, tmp_path / "out", figures=False).set_index(names.NAME)
    for layer in ("a.weight", "c.weight"):  # white Gaussian layers: HTMP fits them
        row = table.loc[layer]
        assert 0.0 <= row[names.PPC_PVALUE] <= 1.0 and row[names.MISFIT] == (row[names.PPC_PVALUE] < 0.01)
        assert row[names.P_KAPPA_BELOW_10] <= 1.0 and np.isfinite(row[names.LOG_EVIDENCE])
    assert names.BEST not in table  # one model: nothing to choose


def test_models_auto_chooses_each_layers_model_by_evidence(checkpoint, tmp_path):
    out = tmp_path / "out"
    table = analyze(checkpoint, out, models="auto", figures=False)
    fitted = table[table[names.MODEL].notna()]
    assert set(fitted[names.MODEL]) == set(names.AUTO_MODEL_LIST)
    for _, rows in fitted.groupby(names.NAME):
        ok = rows[rows[names.STATUS] == names.STATUS_OK]
        log_z = ok.set_index(names.MODEL)[names.LOG_EVIDENCE]
        assert (rows[names.BEST] == log_z.idxmax()).all()
        probability = np.exp(log_z.max() - np.logaddexp.reduce(log_z.to_numpy()))
        assert rows[names.WEIGHT].to_numpy() == pytest.approx(probability)
    # resuming computes nothing again and keeps the choice
    again = analyze(checkpoint, out, models="auto", figures=False)
    assert again[names.BEST].equals(table[names.BEST])


def test_default_analysis_imports_no_jax_and_reads_ahead(checkpoint, tmp_path):
    """The exact default runs in numpy: a whole analysis, figures and report included, never imports JAX, numpyro
    or ArviZ (its spectra are read in a background thread meanwhile)."""
    import subprocess
    import sys

    code = (f"import sys; from hteval.network_analysis import analyze; "
            f"analyze({str(checkpoint)!r}, {str(tmp_path / 'o')!r});"
            "print(sorted(m for m in ('jax', 'numpyro', 'arviz') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stderr


def test_an_unreadable_file_is_one_error_from_the_reading_thread(tmp_path):
    path = tmp_path / "broken.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(InputError):
        analyze(path, tmp_path / "out")


def test_resume_keeps_finished_rows_and_refits_only_what_is_missing(checkpoint, tmp_path):
    out = tmp_path / "out"
    first = analyze(checkpoint, out)
    table = out / LAYER_TABLE
    lines = table.read_text().splitlines(keepends=True)
    # a kill -9 during c.weight's row: its line is cut short
    table.write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])
    finished = "".join(lines[:-1])
    refitted = []
    again = analyze(checkpoint, out, on_row=lambda row, done, total: refitted.append(row[names.NAME]))
    assert refitted == ["c.weight"]
    assert table.read_text().startswith(finished)  # finished rows untouched
    assert len(again) == len(first)
    # same seed, same layer name: the same numbers whether fitted first or on resume
    assert again.set_index(names.NAME).loc["c.weight", "kappa_median"] == pytest.approx(
        first.set_index(names.NAME).loc["c.weight", "kappa_median"], rel=1e-12)
    assert analyze(checkpoint, out, on_row=lambda *a: pytest.fail("refitted")).shape == again.shape


def test_worker_processes_give_the_numbers_of_one_process(tmp_path):
    """Two shapes, hence two groups, one per spawned worker; rows come back to the one writer, and each layer's
    numbers are those of a single-process run (its key depends on the seed and its name only)."""
    rng = np.random.default_rng(1)
    path = tmp_path / "two_shapes.safetensors"
    save_file({"a.weight": rng.standard_normal((96, 48)).astype(np.float32),
               "d.weight": rng.standard_normal((64, 48)).astype(np.float32)}, path)
    started = []
    # MP: the machinery is model-blind, and MP compiles in a fraction of HTMP's time in every worker
    parallel = analyze(path, tmp_path / "two", ("mp",), workers=2, figures=False, sampler="nuts",
                       on_start=lambda name, model: started.append(name), **LIGHT).set_index(names.NAME)
    single = analyze(path, tmp_path / "one", ("mp",), workers=1, figures=False, sampler="nuts",
                     **LIGHT).set_index(names.NAME)
    assert sorted(started) == ["a.weight", "d.weight"]
    for column in ("sigma2_median", "sigma2_ci_high", "outlier_weight_median", names.R_HAT):
        np.testing.assert_array_equal(parallel.loc[["a.weight", "d.weight"], column],
                                      single.loc[["a.weight", "d.weight"], column])
    assert (tmp_path / "two" / "layers" / "d.weight.mp.json").exists()


def test_other_models_need_a_new_output_directory(checkpoint, tmp_path):
    out = tmp_path / "out"
    (out).mkdir()
    (out / LAYER_TABLE).write_text(",".join(table_columns(["htmp-exact"])) + "\n")
    with pytest.raises(InputError, match="--out"):
        analyze(checkpoint, out, ("mp",), **LIGHT)
    assert read_layer_table(out / LAYER_TABLE).empty


def test_analyze_command(checkpoint, tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(["analyze", str(checkpoint), "--layers", "a.*", "--chains", "1", "--draws", "100", "--warmup", "100",
                 "--max-draws", "100", "--out", str(out)])
    assert code == 0
    table = read_layer_table(out / LAYER_TABLE)
    assert set(table[names.NAME]) == {"a.weight", "a.bias"}
    printed = capsys.readouterr().out
    assert str(out / LAYER_TABLE) in printed and str(out / "report.md") in printed
    assert (out / "layers" / "a.weight.htmp-exact.esd.png").stat().st_size > 10_000  # the default model
    assert set(table[names.INTERVALS].dropna()) == {names.INTERVALS_CALIBRATED}
    report = (out / "report.md").read_text()
    assert "Intervals of htmp-exact: calibrated" in report
    assert report.splitlines()[0] == f"# hteval analyze: {checkpoint}"  # the checkpoint as the user named it
    assert main(["analyze", str(checkpoint), "--models", "nope", "--out", str(out)]) == 2


def test_randomized_copies_report_and_partial_pooling(tmp_path):
    """A layer with power-law column scales has a heavy-tailed ESD (small kappa); its element-shuffled copy is
    white noise again (large kappa). Two such layers are pooled into a model-level kappa."""
    rng = np.random.default_rng(1)
    scales = np.arange(1, 49) ** -0.8
    path = tmp_path / "structured.safetensors"
    save_file({f"{k}.weight": (rng.standard_normal((96, 48)) * scales).astype(np.float32) for k in "pq"}, path)
    out = tmp_path / "out"
    table = analyze(path, out, randomize=True, hierarchical=True, figures=False)
    assert list(zip(table[names.NAME], table[names.RANDOMIZED], strict=True)) == [
        ("p.weight", False), ("p.weight", True), ("q.weight", False), ("q.weight", True)]
    real, shuffled = (table[table[names.RANDOMIZED] == flag].set_index(names.NAME) for flag in (False, True))
    assert np.all(real["kappa_ci_high"] < shuffled["kappa_ci_low"])
    assert json.loads((out / "layers" / "p.weight.htmp-exact.randomized.json").read_text())[names.RANDOMIZED] is True
    pooled = json.loads((out / "hierarchical.json").read_text())["htmp-exact"]
    usable = real[(real[names.STATUS] == names.STATUS_OK) & (real[names.MISFIT] != True)]  # noqa: E712
    if "left_out" in pooled:
        assert sorted(pooled["left_out"]) == sorted(set(real.index) - set(usable.index))
    if len(usable) == 2:
        assert pooled["n_layers"] == 2
        assert pooled["kappa"]["ci_low"] < pooled["kappa"]["median"] < pooled["kappa"]["ci_high"]
        assert pooled["kappa"]["ci_low"] < real["kappa_median"].max()
        assert pooled["kappa"]["ci_high"] > real["kappa_median"].min()
    else:
        assert pooled[names.STATUS] == names.STATUS_ERROR
    report = (out / "report.md").read_text()
    assert "kappa_forest.png" in report and "p.weight" in report
    assert (out / "kappa_forest.png").stat().st_size > 10_000
