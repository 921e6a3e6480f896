"""An output folder holds one run: a second run of another checkpoint, other settings or another hteval version is
refused with one line and exit status 2, the folder untouched; a wider layer filter resumes; --restart replaces
the run whole, so that a kill at any point leaves the old results or the new ones."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from safetensors.numpy import save_file

from hteval import fingerprint as fingerprints
from hteval import names
from hteval.checkpoints import analyze_checkpoints
from hteval.cli import main
from hteval.errors import OutputError, RunMismatchError
from hteval.fingerprint import fingerprint
from hteval.layer_comparison import compare_layers
from hteval.network_analysis import LAYER_TABLE, analyze, read_layer_table
from hteval.run_identity import RESULT_TABLES, RUN_FILE
from hteval.run_lock import LOCK_FILE
from hteval.run_restart import UNFINISHED, replace_run
from hteval.tracker import Tracker

FAST = {"figures": False, "report": False}


def _gaussian(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.fixture
def checkpoints(tmp_path):
    """A: a Gaussian 200x100 layer fc.weight; B: a Student-t(2.5) layer of the same name and shape."""
    a, b = tmp_path / "A.safetensors", tmp_path / "B.safetensors"
    save_file({"fc.weight": _gaussian((200, 100))}, a)
    save_file({"fc.weight": np.random.default_rng(1).standard_t(2.5, (200, 100)).astype(np.float32)}, b)
    return a, b


def _files(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` by relative path, with its bytes; not the lock file, which a killed run leaves
    behind and which means nothing without its holder (`hteval.run_lock`)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != LOCK_FILE}


def _siblings(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(out.name + "."))


def _refusal(capsys) -> str:
    """The refusal's line, the only line a terminal shows (a carriage return overwrites what precedes it on its
    line: the progress bar, erased, leaves nothing)."""
    shown = [line.split("\r")[-1] for line in capsys.readouterr().err.split("\n")]
    shown = [line for line in shown if line.strip()]
    assert len(shown) == 1 and shown[0].startswith("hteval: error: "), shown
    return shown[0]


def test_a_second_checkpoint_is_refused_and_the_folder_is_left_as_it_was(checkpoints, tmp_path, capsys):
    a, b = checkpoints
    out = tmp_path / "out"
    assert main(["analyze", str(a), "--out", str(out), "--no-figures"]) == 0
    before = _files(out)
    capsys.readouterr()  # the first run's own output
    assert main(["analyze", str(b), "--out", str(out), "--no-figures"]) == 2
    line = _refusal(capsys)
    sha_a, sha_b = fingerprint(a).short, fingerprint(b).short
    assert line == (f"hteval: error: {out}/ holds a run of {a} (sha {sha_a}), not of {b} (sha {sha_b}); use "
                    "--restart to replace it or choose another --out")
    assert _files(out) == before
    # the same run again resumes: nothing is fitted, nothing changes but the report
    assert main(["analyze", str(a), "--out", str(out), "--no-figures"]) == 0
    assert (out / LAYER_TABLE).read_bytes() == before[LAYER_TABLE]


@pytest.mark.parametrize(("option", "difference"), [(["--seed", "1"], "with seed 0, not 1"),
                                                    (["--draws", "200"], "with draws 1000, not 200"),
                                                    (["--models", "htmp-exact,powerlaw"],
                                                     "with models htmp-exact, not htmp-exact,powerlaw")])
def test_other_settings_are_refused_by_name(checkpoints, tmp_path, capsys, option, difference):
    a, _ = checkpoints
    out = tmp_path / "out"
    analyze(a, out, **FAST)
    before = _files(out)
    assert main(["analyze", str(a), "--out", str(out), "--no-figures", *option]) == 2
    assert _refusal(capsys) == (f"hteval: error: {out}/ holds a run {difference}; use --restart to replace it or "
                                "choose another --out")
    assert _files(out) == before


def test_options_that_leave_the_numbers_alone_resume(checkpoints, tmp_path):
    """Figures, workers, the SVD engine, the report and (for exact draws) the NUTS warm-up are not the run's
    identity."""
    a, _ = checkpoints
    out = tmp_path / "out"
    analyze(a, out, **FAST)
    written = (out / LAYER_TABLE).read_bytes()
    analyze(a, out, figures=True, report=True, workers=1, svd="host", warmup=7, max_draws=None)
    assert (out / LAYER_TABLE).read_bytes() == written
    # the same bytes under another path are the same checkpoint
    moved = tmp_path / "moved.safetensors"
    moved.write_bytes(a.read_bytes())
    analyze(moved, out, **FAST)
    assert (out / LAYER_TABLE).read_bytes() == written


def test_a_wider_run_resumes_and_a_narrower_one_is_refused(tmp_path, capsys):
    path = tmp_path / "two.safetensors"
    save_file({"fc.weight": _gaussian((120, 60)), "head.weight": _gaussian((90, 60), seed=2)}, path)
    out = tmp_path / "out"
    analyze(path, out, layers="fc.*", **FAST)
    first = (out / LAYER_TABLE).read_text()
    table = analyze(path, out, layers="*", **FAST)
    assert list(table[names.NAME]) == ["fc.weight", "head.weight"]
    assert (out / LAYER_TABLE).read_text().startswith(first)  # fc.weight's row kept, not fitted again
    assert json.loads((out / RUN_FILE).read_text())["layers"] == "*"
    # pooling turned on adds the pooled output over every row; turned off again it is refused
    rows = (out / LAYER_TABLE).read_text()
    analyze(path, out, layers="*", hierarchical=True, **FAST)
    assert (out / LAYER_TABLE).read_text() == rows and (out / "hierarchical.json").exists()
    before = _files(out)
    with pytest.raises(RunMismatchError, match="holds a run with hierarchical on, not off;"):
        analyze(path, out, layers="*", **FAST)
    assert main(["analyze", str(path), "--out", str(out), "--no-figures", "--hierarchical", "--layers", "head.*"]) == 2
    assert _refusal(capsys).endswith("holds a run with layers '*', not 'head.*', which leaves out its rows of "
                                     "fc.weight; use --restart to replace it or choose another --out")
    assert _files(out) == before


def test_a_folder_of_an_earlier_hteval_is_refused_until_restarted(checkpoints, tmp_path, capsys):
    """The documented rule: rows without run.json (hteval before run records), or a run.json of another hteval
    version, are refused; --restart replaces them."""
    a, _ = checkpoints
    out = tmp_path / "out"
    analyze(a, out, **FAST)
    (out / RUN_FILE).unlink()
    before = _files(out)
    assert main(["analyze", str(a), "--out", str(out), "--no-figures"]) == 2
    assert "holds results without a run record (run.json: written by an earlier hteval)" in _refusal(capsys)
    assert _files(out) == before
    assert main(["analyze", str(a), "--out", str(out), "--no-figures", "--restart"]) == 0
    record = json.loads((out / RUN_FILE).read_text())
    record["hteval_version"] = "0.0.1"
    (out / RUN_FILE).write_text(json.dumps(record))
    with pytest.raises(RunMismatchError, match=r"holds a run made by hteval 0\.0\.1, not "):
        analyze(a, out, **FAST)


# a --restart of out/ over `path`, stopped (it sleeps) at its first row, or right after the swap with the old run
# not yet deleted
_STOPPED_RESTART = """
import sys, time
from hteval import run_restart
from hteval.network_analysis import analyze
path, out, where = sys.argv[1:]
def stop(*args):
    print("stopped", flush=True)
    time.sleep(120)
if where == "after-swap":
    swap = run_restart._swap
    run_restart._swap = lambda new, old: (swap(new, old), stop())[0]
analyze(path, out, figures=False, report=False, restart=True, on_row=stop if where == "first-row" else None)
"""


def _stopped_restart(path: Path, out: Path, where: str) -> None:
    """Run _STOPPED_RESTART in another process and kill -9 it where it stops."""
    process = subprocess.Popen([sys.executable, "-c", _STOPPED_RESTART, str(path), str(out), where],
                               stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "stopped"
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()


def test_a_restart_killed_while_it_runs_leaves_the_old_run(checkpoints, tmp_path):
    a, b = checkpoints
    out = tmp_path / "out"
    analyze(a, out, **FAST)
    before = _files(out)
    _stopped_restart(b, out, "first-row")
    assert _files(out) == before  # the old run, every byte
    [left] = _siblings(out)
    assert (out.parent / left / UNFINISHED).exists()
    # a run without --restart resumes the old run and clears what the killed restart left
    analyze(a, out, **FAST)
    assert _files(out) == before and not _siblings(out)
    # a restart cut short is resumed by the same command (its row kept), then swapped in
    _stopped_restart(b, out, "first-row")
    [left] = _siblings(out)
    kept = (out.parent / left / LAYER_TABLE).read_text()
    table = analyze(b, out, restart=True, **FAST)
    assert (out / LAYER_TABLE).read_text() == kept and not _siblings(out)
    assert json.loads((out / RUN_FILE).read_text())["source"]["path"] == str(b)
    assert table["kappa_median"].iloc[0] < 20  # B's heavy tail (A's Gaussian layer: about 100)


def test_a_restart_killed_after_the_swap_leaves_the_new_run(checkpoints, tmp_path):
    a, b = checkpoints
    out = tmp_path / "out"
    analyze(a, out, **FAST)
    reference = analyze(b, tmp_path / "reference", **FAST).drop(columns=names.SECONDS)
    _stopped_restart(b, out, "after-swap")
    new = read_layer_table(out / LAYER_TABLE)
    pd.testing.assert_frame_equal(new.drop(columns=names.SECONDS), reference)  # the new run, whole
    assert json.loads((out / RUN_FILE).read_text())["source"]["path"] == str(b)
    [old] = _siblings(out)  # the old run, not yet deleted
    assert json.loads((out.parent / old / RUN_FILE).read_text())["source"]["path"] == str(a)
    written = (out / LAYER_TABLE).read_bytes()
    analyze(b, out, **FAST)  # resumes the new run, and deletes the old one
    assert (out / LAYER_TABLE).read_bytes() == written and not _siblings(out)


def test_a_swap_cut_between_two_renames_puts_the_old_run_back(checkpoints, tmp_path, monkeypatch):
    """Where folders cannot be exchanged in one step, the swap is two renames; a kill between them leaves no out/,
    and the next run puts the old run back (and drops the new one)."""
    a, b = checkpoints
    out = tmp_path / "out"
    analyze(a, out, **FAST)
    before = _files(out)
    old, new = tmp_path / "out.hteval-replaced-0123456789ab", tmp_path / "out.hteval-restart-0123456789ab"
    out.rename(old)
    analyze(b, new, **FAST)
    analyze(a, out, **FAST)
    assert _files(out) == before and not _siblings(out)
    # a whole restart by two renames
    monkeypatch.setattr("hteval.run_restart._exchange", lambda *folders: False)
    analyze(b, out, restart=True, **FAST)
    assert json.loads((out / RUN_FILE).read_text())["source"]["path"] == str(b) and not _siblings(out)


def test_a_restart_replaces_only_a_folder_of_hteval(checkpoints, tmp_path):
    a, _ = checkpoints
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    with pytest.raises(OutputError, match="holds no hteval run \\(it holds notes.txt\\)"):
        analyze(a, mine, restart=True, **FAST)
    assert _files(mine) == {"notes.txt": b"my notes"} and _siblings(mine) == []
    out = tmp_path / "out"
    analyze(a, out, **FAST)
    inside = out / "A.safetensors"
    inside.write_bytes(a.read_bytes())
    with pytest.raises(OutputError, match="lies inside .*which --restart replaces whole"):
        analyze(inside, out, restart=True, **FAST)
    assert inside.exists() and not _siblings(out)
    # a restart whose run fails before writing leaves nothing beside the folder
    with pytest.raises(RunMismatchError):
        replace_run(tmp_path / "new", lambda folder: (_ for _ in ()).throw(RunMismatchError("no")))
    assert not _siblings(tmp_path / "new") and not (tmp_path / "new").exists()


def test_compare_layers_refuses_another_checkpoint(tmp_path, capsys):
    """Checkpoints of a layer too small to fit (8 eigenvalues) and a bias: compare --layers writes their skipped
    rows, with no fit to wait for."""
    first, second = tmp_path / "first.safetensors", tmp_path / "second.safetensors"
    save_file({"fc.weight": _gaussian((12, 8)), "fc.bias": _gaussian((8,))}, first)
    save_file({"fc.weight": _gaussian((12, 8), seed=1), "fc.bias": _gaussian((8,))}, second)
    out = tmp_path / "out"
    compare_layers(first, out, ("htmp-exact", "powerlaw"), "*")
    before = _files(out)
    assert main(["compare", str(second), "--layers", "*", "--models", "htmp-exact,powerlaw", "--out", str(out)]) == 2
    assert f"holds a run of {first} (sha " in _refusal(capsys)
    with pytest.raises(RunMismatchError, match="with seed 0, not 3"):
        compare_layers(first, out, ("htmp-exact", "powerlaw"), "*", seed=3)
    assert _files(out) == before


def test_analyze_checkpoints_refuses_a_checkpoint_whose_content_changed(checkpoints, tmp_path):
    a, b = checkpoints
    steps = tmp_path / "run"
    steps.mkdir()
    for step in (1, 2):
        (steps / f"step_{step}.safetensors").write_bytes(a.read_bytes())
    out = tmp_path / "out"
    analyze_checkpoints(steps, out, workers=1, **FAST)
    before = _files(out)
    with pytest.raises(RunMismatchError, match="with seed 0, not 5"):
        analyze_checkpoints(steps, out, workers=1, seed=5, **FAST)
    (steps / "step_2.safetensors").write_bytes(b.read_bytes())
    with pytest.raises(RunMismatchError, match=r"checkpoints/step_2/ holds a run of .*step_2.safetensors as it was"):
        analyze_checkpoints(steps, out, workers=1, **FAST)
    assert _files(out) == before
    table = analyze_checkpoints(steps, out, workers=1, restart=True, **FAST)
    assert table.groupby(names.CHECKPOINT)["kappa_median"].first()["step_2"] < 20  # B's heavy tail now


def test_a_tracker_refuses_a_folder_of_other_settings_before_training(tmp_path):
    weights = {"w": _gaussian((32, 16))}
    with Tracker(tmp_path / "out", plot_every=None) as tracker:
        tracker.update(0, weights)
    before = _files(tmp_path / "out")
    with pytest.raises(RunMismatchError, match="holds a run with seed 0, not 2; choose another folder"):
        Tracker(tmp_path / "out", seed=2)
    saved = tmp_path / "step_5.safetensors"
    save_file(weights, saved)
    with pytest.raises(RunMismatchError, match="of a Tracker, not hteval analyze of many checkpoints"):
        analyze_checkpoints([saved], tmp_path / "out", workers=1, **FAST)
    assert _files(tmp_path / "out") == before
    # the same settings go on recording
    with Tracker(tmp_path / "out", plot_every=None) as tracker:
        tracker.update(1, weights)
    assert tracker.steps == [0, 1]


def test_the_fingerprint_samples_large_files_and_reads_arrays_in_memory(tmp_path, monkeypatch):
    """Above the whole-file limit every tensor of a safetensors file is sampled: a change inside one tensor, far
    from the evenly spread samples, changes the fingerprint."""
    monkeypatch.setattr(fingerprints, "FULL_HASH_BYTES", 1024)
    weights = {f"layer{i}.weight": _gaussian((64, 64), seed=i) for i in range(40)}
    path = tmp_path / "big.safetensors"
    save_file(weights, path)
    sampled = fingerprint(path)
    assert sampled.sampled and sampled.size == path.stat().st_size
    weights["layer17.weight"] = weights["layer17.weight"] * 1.01
    save_file(weights, path)
    assert fingerprint(path).sha256 != sampled.sha256
    in_memory = fingerprint(weights)
    weights["layer3.weight"] = weights["layer3.weight"].copy()
    assert fingerprint(weights) == in_memory and not in_memory.sampled
    weights["layer3.weight"][0, 0] += 1
    assert fingerprint(weights) != in_memory
    # tensors in memory beyond what the samples read are sampled too: a training step changes every element
    monkeypatch.setattr(fingerprints, "SAMPLE_BYTES", 16)
    sampled = fingerprint(weights)
    weights["layer3.weight"] = weights["layer3.weight"] - 1e-3
    assert sampled.sampled and fingerprint(weights) != sampled


def test_a_model_in_memory_is_told_apart_by_its_weights(tmp_path):
    import hteval

    weights = {"fc.weight": _gaussian((96, 48))}
    out = tmp_path / "out"
    hteval.analyze(weights, out, **FAST)
    hteval.analyze(dict(weights), out, **FAST)  # the same weights: resumes
    trained = {"fc.weight": weights["fc.weight"] * 0.9}
    with pytest.raises(RunMismatchError, match=r"a run of <dict> as it was \(sha [0-9a-f]{8}\), not as it is now"):
        hteval.analyze(trained, out, **FAST)
    assert hteval.analyze(trained, out, restart=True, **FAST).folder == out


def test_the_result_tables_are_the_commands_own():
    from hteval.checkpoints import CHECKPOINT_DIR, CHECKPOINT_TABLE
    from hteval.layer_comparison import COMPARISON_TABLE
    from hteval.run_identity import CHECKPOINT_FOLDERS

    assert RESULT_TABLES == (LAYER_TABLE, COMPARISON_TABLE, CHECKPOINT_TABLE) and CHECKPOINT_FOLDERS == CHECKPOINT_DIR
    assert LOCK_FILE not in RESULT_TABLES
