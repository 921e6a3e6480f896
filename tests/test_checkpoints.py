"""Many checkpoints: which paths a directory, glob or list file names, in step order; the gathered table, the same
from a local Dask cluster (loopback) as from the local run; resuming; one unreadable checkpoint among good ones;
the training-dynamics table and figure."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from safetensors.numpy import save_file

from hteval import names
from hteval.checkpoints import CHECKPOINT_TABLE, analyze_checkpoints
from hteval.cli import main
from hteval.errors import InputError
from hteval.io.checkpoint_set import checkpoint_set, is_checkpoint_set
from hteval.report.dynamics import DYNAMICS_REPORT, DYNAMICS_TABLE

LIGHT = {"chains": 2, "draws": 150, "warmup": 150, "max_draws": 150, "seed": 5}
STEPS = (0, 50, 400)


def _weights(rng, step):
    """A layer whose spectrum grows a heavier tail with the step (a rank-one spike of growing size)."""
    w = rng.standard_normal((96, 48))
    u, v = rng.standard_normal(96), rng.standard_normal(48)
    return {"fc.weight": (w + 0.02 * step ** 0.5 * np.outer(u, v)).astype(np.float32),
            "fc.bias": np.zeros(48, np.float32),
            "head.weight": rng.standard_normal((64, 32)).astype(np.float32)}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    rng = np.random.default_rng(0)
    for step in STEPS:
        save_file(_weights(rng, step), folder / f"step_{step}.safetensors")
    return folder


def test_directories_globs_and_list_files_name_checkpoints_in_step_order(tmp_path):
    for step in (100, 2, 10):
        np.savez(tmp_path / f"ckpt-{step}.npz", w=np.ones((4, 4)))
    by_dir = checkpoint_set(tmp_path)
    assert [c.step for c in by_dir] == [2, 10, 100] and by_dir[0].name == "ckpt-2"
    assert [c.name for c in checkpoint_set(str(tmp_path / "ckpt-1*.npz"))] == ["ckpt-10", "ckpt-100"]
    listing = tmp_path / "run.txt"
    listing.write_text("# chosen steps\nckpt-100.npz\n\nckpt-2.npz\n")
    assert [c.step for c in checkpoint_set(listing)] == [2, 100]
    assert is_checkpoint_set(tmp_path) and is_checkpoint_set(listing) and not is_checkpoint_set(by_dir[0].path)
    # shards of one model (disjoint tensor names) stay one checkpoint; a Trainer's checkpoint folders are many
    shards = tmp_path / "sharded"
    shards.mkdir()
    save_file({"a": np.ones((4, 4), np.float32)}, shards / "model-00001-of-00002.safetensors")
    save_file({"b": np.ones((4, 4), np.float32)}, shards / "model-00002-of-00002.safetensors")
    assert not is_checkpoint_set(shards) and [c.path for c in checkpoint_set(shards)] == [shards]
    trainer = tmp_path / "trainer"
    for step in (500, 1000):
        (trainer / f"checkpoint-{step}").mkdir(parents=True)
        save_file({"a": np.ones((4, 4), np.float32)}, trainer / f"checkpoint-{step}" / "model.safetensors")
    assert [(c.name, c.step) for c in checkpoint_set(trainer)] == [("checkpoint-500", 500),
                                                                     ("checkpoint-1000", 1000)]
    with pytest.raises(InputError, match="not found"):
        (tmp_path / "bad.txt").write_text("missing.npz\n")
        checkpoint_set(tmp_path / "bad.txt")
    with pytest.raises(InputError, match="glob"):
        checkpoint_set(str(tmp_path / "nothing-*.npz"))


@pytest.fixture(scope="module")
def local_run(run_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("local")
    code = main(["analyze", str(run_dir), "--workers", "2", "--no-figures", "--chains", "2", "--draws", "150",
                 "--warmup", "150", "--max-draws", "150", "--seed", "5", "--out", str(out)])
    assert code == 0
    return out


def test_gathered_table_is_indexed_by_checkpoint_step_and_layer(local_run):
    table = pd.read_csv(local_run / CHECKPOINT_TABLE)
    assert list(table.columns[:3]) == [names.CHECKPOINT, names.STEP, names.NAME]
    assert sorted(set(table[names.STEP])) == list(STEPS)  # the file is in the order checkpoints finished
    fitted = table[table[names.MODEL] == names.DEFAULT_MODEL]
    assert len(fitted) == 2 * len(STEPS) and fitted.kappa_median.notna().all()
    assert (table[table[names.NAME] == "fc.bias"][names.STATUS] == names.STATUS_SKIPPED).all()
    # every checkpoint was analyzed into its own resumable folder
    for step in STEPS:
        assert (local_run / "checkpoints" / f"step_{step}" / "layers.csv").exists()
    # the growing spike makes fc's spectrum heavier-tailed: kappa falls from the first checkpoint to the last
    fc = fitted[fitted[names.NAME] == "fc.weight"].set_index(names.STEP).kappa_median
    assert fc[STEPS[-1]] < fc[STEPS[0]]


def test_dynamics_table_and_figure(local_run):
    dynamics = pd.read_csv(local_run / DYNAMICS_TABLE)
    fc = dynamics[(dynamics[names.NAME] == "fc.weight") & (dynamics.parameter == names.KAPPA)]
    assert list(fc[names.STEP]) == list(STEPS)
    assert (fc.ci_low <= fc["median"]).all() and (fc["median"] <= fc.ci_high).all()
    figure = local_run / f"dynamics_kappa_{names.DEFAULT_MODEL}.png"
    assert figure.stat().st_size > 10_000
    report = (local_run / DYNAMICS_REPORT).read_text()
    assert "| layer | step_0 | step_50 | step_400 |" in report and "| fc.weight |" in report


def test_a_local_dask_cluster_gives_the_local_run_summaries(run_dir, local_run, tmp_path):
    # the same checkpoints and a corrupt one, on two Dask worker processes bound to 127.0.0.1
    corrupt = tmp_path / "step_7.safetensors"
    corrupt.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    paths = [run_dir / f"step_{step}.safetensors" for step in STEPS] + [corrupt]
    table = analyze_checkpoints(paths, tmp_path / "out", engine="dask", workers=2, figures=False, **LIGHT)
    assert list(dict.fromkeys(table[names.STEP])) == [0, 7, 50, 400]
    broken = table[table[names.STEP] == 7]  # one error row; the others are analyzed
    assert len(broken) == 1 and broken[names.STATUS].item() == names.STATUS_ERROR
    assert "corrupt" in broken[names.ERROR].item()
    local = pd.read_csv(local_run / CHECKPOINT_TABLE)
    key = [names.STEP, names.NAME, names.MODEL]
    columns = ["kappa_median", "kappa_ci_low", "kappa_ci_high", "scale_median", names.R_HAT, names.STATUS]
    ours = table[table[names.STEP] != 7].set_index(key).sort_index()[columns]
    theirs = local.set_index(key).sort_index()[columns]
    pd.testing.assert_frame_equal(ours, theirs, check_exact=False, rtol=1e-9)


def test_a_second_run_analyzes_no_finished_checkpoint_again(run_dir, local_run, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a finished checkpoint was analyzed again")

    monkeypatch.setattr("hteval.checkpoints.analyze", refuse)
    before = pd.read_csv(local_run / CHECKPOINT_TABLE)
    again = analyze_checkpoints(run_dir, local_run, figures=False, **LIGHT)
    assert len(again) == len(before) and (local_run / DYNAMICS_TABLE).exists()
