"""hteval compare --layers: one comparison per layer of a checkpoint, each row the same as comparing that layer
alone, written as it finishes and resumed without refitting."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import save_file

from hteval import names
from hteval.cli import main
from hteval.layer_comparison import COMPARISON_TABLE, compare_layers
from hteval.model_comparison import compare_fits, fit_models
from hteval.rowfile import read_table

MODELS = ("htmp-exact", "powerlaw", "lognormal")
SETTINGS = {"chains": 2, "draws": 300, "warmup": 300, "max_draws": 1200, "seed": 3}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A checkpoint with a Gaussian layer, a Student-t layer and a bias, and the command's run over it."""
    rng = np.random.default_rng(1)
    folder = tmp_path_factory.mktemp("layers")
    path = folder / "two.safetensors"
    save_file({"white.weight": rng.standard_normal((192, 96)).astype(np.float32),
               "white.bias": rng.standard_normal(96).astype(np.float32),
               "heavy.weight": rng.standard_t(2.5, (192, 96)).astype(np.float32)}, path)
    out = folder / "out"
    code = main(["compare", str(path), "--layers", "*", "--models", ",".join(MODELS), "--chains", "2",
                 "--draws", "300", "--warmup", "300", "--max-draws", "1200", "--seed", "3", "--workers", "1",
                 "--out", str(out)])
    return path, out, code


def test_every_layer_gets_the_row_of_its_own_comparison(run, capsys):
    path, out, code = run
    assert code == 0
    table = read_table(out / COMPARISON_TABLE, bool_columns=(names.DECISIVE,)).set_index(names.NAME)
    assert sorted(table.index) == ["heavy.weight", "white.bias", "white.weight"]
    assert table.loc["white.bias", names.STATUS] == names.STATUS_SKIPPED
    for layer in ("white.weight", "heavy.weight"):
        row = table.loc[layer]
        doc = json.loads((out / "layers" / f"{layer}.comparison.json").read_text())
        assert doc["record"][names.NAME] == layer and row[names.STATUS] == names.STATUS_OK
        assert row[names.BEST] in MODELS and row[f"{names.WEIGHT}_{row[names.BEST]}"] == row[names.WEIGHT]
        assert doc[names.BEST] == row[names.BEST] and doc[names.BEST_LOO] == row[names.BEST_LOO] != "htmp-exact"
    # the heavy layer, where every model converges, ranks exactly as a comparison of that layer alone: by the
    # evidence (best, runner-up, probabilities) and, among the iid models, by PSIS-LOO (best_loo, d_elpd, decisive)
    fits = fit_models(path, "heavy.weight", MODELS, **SETTINGS)
    assert all(f.converged for f in fits.values())
    alone, row = compare_fits(fits, seed=SETTINGS["seed"]), table.loc["heavy.weight"]
    assert row[names.BEST] == alone.best and row[names.RUNNER_UP] == alone.table.index[1]
    assert row[names.D_LOG_EVIDENCE] == pytest.approx(alone.table[names.D_LOG_EVIDENCE].iloc[1], rel=1e-12)
    assert row[names.BEST_WIDE] == alone.best_wide and row[names.BEST_LOO] == alone.best_loo
    loo_runner_up = next(m for m in ("powerlaw", "lognormal") if m != alone.best_loo)
    assert row[names.D_ELPD] == pytest.approx(alone.table.loc[loo_runner_up, names.D_ELPD], rel=1e-12)
    assert row[names.DECISIVE] == alone.decisive_over(loo_runner_up)
    assert sum(row[f"{names.WEIGHT}_{m}"] for m in MODELS) == pytest.approx(1.0)
    assert pd_isna(row[names.NOT_CONVERGED_MODELS])


def test_a_second_run_resumes_without_refitting(run, monkeypatch):
    path, out, _ = run
    first = compare_layers(path, out, MODELS, workers=1, **SETTINGS)  # nothing left to do
    with (out / COMPARISON_TABLE).open("a") as handle:
        handle.write("cut.weight,96x19")  # a line a kill cut short: dropped, not read as a row

    def refuse(*args, **kwargs):
        raise AssertionError("a finished layer was fitted again")

    monkeypatch.setattr("hteval.layer_comparison.fit_models", refuse)
    again = compare_layers(path, out, MODELS, workers=1, **SETTINGS)
    assert again.equals(first) and len(again) == 3


def pd_isna(value) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))
