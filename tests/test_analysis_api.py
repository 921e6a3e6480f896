"""The notebook API: hteval.analyze on objects in memory returns an Analysis (table, per-layer FitResults, forest
plot, HTML view) that writes nothing unless asked, saves and loads back unchanged, and runs in a Python whose JAX
is in float32 without changing that setting."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import hteval
from hteval import names
from hteval.errors import InputError
from hteval.network_analysis import LAYER_TABLE


def _weights() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    return {"encoder.fc1.weight": rng.standard_normal((240, 96)),
            "encoder.fc2.weight": rng.standard_t(2.5, (200, 80)),
            "encoder.fc2.bias": np.zeros(80)}


@pytest.fixture(scope="module")
def in_memory():
    return hteval.analyze(_weights())


def test_top_level_functions_are_not_shadowed_by_modules():
    import hteval.model_comparison  # noqa: F401
    import hteval.network_analysis  # noqa: F401

    assert isinstance(hteval.analyze, type(hteval.fit)) and hteval.analyze.__module__ == "hteval.analysis"
    assert hteval.compare.__module__ == "hteval.model_comparison"
    assert importlib.util.find_spec("hteval.compare") is None and importlib.util.find_spec("hteval.analyze") is None


def test_analyze_without_out_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    analysis = hteval.analyze(_weights(), models="auto")
    assert list(tmp_path.iterdir()) == []
    assert analysis.folder is None
    fitted = analysis.table[analysis.table[names.MODEL].notna()]
    assert len(fitted) == 2 * len(names.AUTO_MODEL_LIST)
    assert set(analysis.table.loc[analysis.table[names.MODEL].isna(), names.STATUS]) == {names.STATUS_SKIPPED}


def test_in_memory_table_equals_the_folder_run(in_memory, tmp_path):
    on_disk = hteval.analyze(_weights(), out=tmp_path / "run")
    assert (tmp_path / "run" / LAYER_TABLE).exists() and (tmp_path / "run" / "report.md").exists()
    numbers = [c for c in in_memory.table if c.startswith("kappa_") or c in (names.PPC_PVALUE, names.LOG_EVIDENCE)]
    pd.testing.assert_frame_equal(in_memory.table[[names.NAME, *numbers]], on_disk.table[[names.NAME, *numbers]])


def test_layer_is_the_fit_of_that_layer(in_memory):
    result = in_memory.layer("encoder.fc2.weight")
    direct = hteval.fit(_weights()["encoder.fc2.weight"], layer="encoder.fc2.weight")
    np.testing.assert_allclose(result.summary["median"], direct.summary["median"], rtol=1e-12)
    assert result.record[names.NAME] == "encoder.fc2.weight"
    with pytest.raises(InputError, match="did you mean encoder.fc2.weight"):
        in_memory.layer("encoder.fc2.weigth")


def test_plot_and_notebook_view(in_memory):
    figure = in_memory.plot()
    labels = [t.get_text() for t in figure.axes[0].get_yticklabels()]
    assert labels == ["encoder.fc1", "encoder.fc2"]
    view = in_memory._repr_html_()
    assert view.count("<tr>") == 3 and "kappa" in view and ("fits" in view or "misfit" in view)
    assert "2 layers" in repr(in_memory)
    with pytest.raises(InputError, match="alpha"):
        in_memory.plot("alpha")


def test_save_and_load_round_trip(in_memory, tmp_path):
    in_memory.save(tmp_path / "saved")
    loaded = hteval.load_analysis(tmp_path / "saved")
    pd.testing.assert_frame_equal(loaded.table, in_memory.table)
    assert loaded.source == in_memory.source and loaded.models == in_memory.models
    for layer in in_memory.layers:
        before, after = in_memory.layer(layer), loaded.layer(layer)
        pd.testing.assert_frame_equal(after.summary, before.summary)
        np.testing.assert_array_equal(after.draws[names.KAPPA], before.draws[names.KAPPA])
        assert after.ppc_pvalue == before.ppc_pvalue and after.evidence == before.evidence
        assert after.data["posterior"]["kappa"].shape == before.draws[names.KAPPA].shape
    with pytest.raises(InputError, match="not an hteval analysis folder"):
        hteval.load_analysis(tmp_path)


def test_a_folder_run_resumes(tmp_path):
    first = hteval.analyze(_weights(), out=tmp_path)
    stamp = (tmp_path / LAYER_TABLE).stat().st_mtime_ns
    second = hteval.analyze(_weights(), out=tmp_path)
    assert (tmp_path / LAYER_TABLE).stat().st_mtime_ns == stamp  # nothing appended: every row was there
    pd.testing.assert_frame_equal(first.table, second.table)
    assert hteval.load_analysis(tmp_path).layer("encoder.fc1.weight").summary.equals(
        first.layer("encoder.fc1.weight").summary)


def test_python_api_runs_in_float32_jax_and_leaves_it_so():
    """Without jax_enable_x64 the API still computes in float64, and the caller's setting is unchanged after."""
    code = """
import numpy as np, jax, hteval
rng = np.random.default_rng(0)
W = rng.standard_normal((200, 80))
fits = {m: hteval.fit(W, model=m, draws=100, chains=2, warmup=100) for m in ("htmp-exact", "htmp")}
assert all(np.isfinite(f.ppc_pvalue) for f in fits.values())
hteval.compare(W, models=["htmp-exact", "mp"], draws=100, chains=2)
a = hteval.analyze({"w": W}, models=["htmp"], sampler="nuts", draws=100, warmup=100, chains=2, workers=1)
assert a.table[hteval.names.STATUS].isin(["ok", "not_converged"]).all()
assert hteval.htmp_logpdf(np.linspace(0.3, 2.0, 5), 0.4, 5.0).dtype == np.float64
print("x64", jax.config.jax_enable_x64)
"""
    env = {k: v for k, v in os.environ.items() if k != "JAX_ENABLE_X64"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("x64 False")
