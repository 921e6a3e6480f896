"""Runs that meet each other or the disk: one run per output folder (an OS lock that a killed holder releases),
a full or read-only disk as one clear error that keeps the finished rows resumable, and per-layer file names that
never collide and never depend on which other layers a run has."""

from __future__ import annotations

import errno
import logging
import os
import signal
import subprocess
import sys
import types

import numpy as np
import pandas as pd
import pytest
from safetensors.numpy import save_file

from hteval import names, rowfile
from hteval.analysis import load_analysis
from hteval.checkpoints import analyze_checkpoints
from hteval.cli import main
from hteval.errors import OutputError
from hteval.layer_comparison import compare_layers
from hteval.network_analysis import LAYER_TABLE, MAX_STEM, analyze, file_stem, layer_file_stem, read_layer_table
from hteval.run_lock import LOCK_FILE, RunLock
from hteval.tracker import Tracker

FAST = {"figures": False, "report": False}


@pytest.fixture
def checkpoint(tmp_path):
    """Four rows: two fits, a skipped bias and a tensor with a NaN (an error row)."""
    rng = np.random.default_rng(0)
    bad = rng.standard_normal((64, 32)).astype(np.float32)
    bad[3, 4] = np.nan
    path = tmp_path / "tiny.safetensors"
    save_file({"a.weight": rng.standard_normal((64, 32)).astype(np.float32),
               "a.bias": rng.standard_normal(32).astype(np.float32), "b.weight": bad,
               "c.weight": rng.standard_normal((48, 32)).astype(np.float32)}, path)
    return path


@pytest.fixture
def reference(checkpoint, tmp_path):
    """The table of an uninterrupted run."""
    return analyze(checkpoint, tmp_path / "reference", **FAST)


def _same_table(out, reference: pd.DataFrame) -> None:
    """out's layers.csv holds the reference rows, each once, every line complete."""
    text = (out / LAYER_TABLE).read_text()
    assert text.endswith("\n") and text.count(f"{names.NAME},") == 1
    table = read_layer_table(out / LAYER_TABLE)
    assert not table.duplicated([names.NAME, names.MODEL, names.RANDOMIZED]).any()
    ordered = table.set_index(names.NAME).loc[reference[names.NAME]].reset_index()
    pd.testing.assert_frame_equal(ordered.drop(columns=names.SECONDS), reference.drop(columns=names.SECONDS))


def _holder(code: str, *args: str) -> subprocess.Popen:
    """A second process that runs `code` and prints 'held' once it holds its folder."""
    process = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def _kill(process: subprocess.Popen) -> None:
    os.kill(process.pid, signal.SIGKILL)
    process.wait()


# a run stopped after its first row (on_row sleeps): it holds the folder with one row written
_SLOW_RUN = """
import sys, time
from hteval.network_analysis import analyze
def stop(row, done, total):
    print("held", flush=True)
    time.sleep(120)
analyze(sys.argv[1], sys.argv[2], figures=False, report=False, on_row=stop)
"""


def test_a_second_run_is_refused_and_a_killed_run_frees_its_folder(checkpoint, reference, tmp_path, capsys):
    out = tmp_path / "out"
    first = _holder(_SLOW_RUN, str(checkpoint), str(out))
    try:
        written = (out / LAYER_TABLE).read_text()
        assert main(["analyze", str(checkpoint), "--out", str(out)]) == 2
        error = capsys.readouterr().err.splitlines()[-1]  # after the progress bar's lines
        assert error.startswith(f"hteval: error: {out} is in use by another hteval run (pid {first.pid}, started ")
        assert error.endswith("wait for it or choose another --out")
        assert (out / LAYER_TABLE).read_text() == written  # nothing interleaved
    finally:
        _kill(first)  # kill -9: the operating system releases its lock
    assert (out / LOCK_FILE).exists()  # left by the killed run, and harmless
    analyze(checkpoint, out, **FAST)
    _same_table(out, reference)
    assert not (out / LOCK_FILE).exists()


def test_every_run_that_writes_a_folder_is_refused_while_another_holds_it(checkpoint, tmp_path):
    out = tmp_path / "out"
    holder = _holder("import sys, time; from hteval.run_lock import RunLock; RunLock(sys.argv[1]).acquire(); "
                     "print('held', flush=True); time.sleep(120)", str(out))
    try:
        for run in (lambda: analyze(checkpoint, out, **FAST),
                    lambda: compare_layers(checkpoint, out, ("mp", "htmp")),
                    lambda: analyze_checkpoints([checkpoint], out, workers=1, **FAST),
                    lambda: Tracker(out).update(0, {"w": np.ones((8, 4))})):
            with pytest.raises(OutputError, match=f"in use by another hteval run \\(pid {holder.pid},") as caught:
                run()
            assert caught.value.path == str(out) and caught.value.errno is None
        assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]
    finally:
        _kill(holder)


def test_a_run_holds_its_folder_and_its_children_theirs(checkpoint, tmp_path, monkeypatch):
    """analyze_checkpoints holds out/ while each checkpoint's analyze holds out/checkpoints/NAME/: the run's own
    children are never refused, and every lock is gone at the end. out=None takes no lock."""
    with RunLock(tmp_path / "held"), pytest.raises(OutputError, match="in use by another hteval run in this process"):
        analyze(checkpoint, tmp_path / "held", **FAST)
    copy = checkpoint.with_name("copy.safetensors")
    copy.write_bytes(checkpoint.read_bytes())
    out = tmp_path / "out"
    table = analyze_checkpoints([checkpoint, copy], out, workers=1, **FAST)
    assert set(table[names.CHECKPOINT]) == {"tiny", "copy"}
    assert not list(out.rglob(LOCK_FILE))
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    assert len(analyze(checkpoint, None)) == 4 and not any((tmp_path / "here").iterdir())


def test_a_tracker_holds_its_folder_from_its_first_update_until_close(tmp_path, checkpoint):
    weights = {"w": np.random.default_rng(0).standard_normal((32, 16))}
    first, second = Tracker(tmp_path, plot_every=None), Tracker(tmp_path, plot_every=None)  # making one locks nothing
    first.update(0, weights)
    with pytest.raises(OutputError, match="in use by another hteval run in this process"):
        second.update(1, weights)
    with pytest.raises(OutputError, match="in use"):
        analyze(checkpoint, tmp_path, **FAST)
    first.close()
    assert second.update(1, weights) is not None
    assert second.steps == [0, 1]  # read again under the lock: the first tracker's step is known
    second.close()
    assert not (tmp_path / LOCK_FILE).exists()
    first.update(2, weights)  # a closed tracker stays usable
    del first  # dropped unclosed: the lock goes with it
    Tracker(tmp_path, plot_every=None).update(3, weights)


def test_without_file_locks_the_run_warns_and_goes_on(checkpoint, reference, tmp_path, monkeypatch, caplog):
    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr("hteval.run_lock.fcntl.flock", no_locks)
    with caplog.at_level(logging.WARNING, logger="hteval.run_lock"):
        analyze(checkpoint, tmp_path / "out", **FAST)
    assert "this file system has no file locks, so the run goes on without one" in caplog.text
    _same_table(tmp_path / "out", reference)


def _failing_writes(monkeypatch, module, number: int, failure: int) -> None:
    """module's `number`-th os.write writes half of its bytes, then fails with `failure`: a disk that fills, or a
    file system that turns read-only, in the middle of a line."""
    real = os.write
    calls = 0

    def write(fd, data):
        nonlocal calls
        calls += 1
        if calls == number:
            real(fd, data[: len(data) // 2])
            raise OSError(failure, os.strerror(failure))
        return real(fd, data)

    fake = types.ModuleType("os")
    fake.__dict__.update(os.__dict__)
    fake.write = write
    monkeypatch.setattr(module, "os", fake)


def test_after_a_failed_write_a_table_takes_no_more_rows(tmp_path, monkeypatch):
    """A line after the partial one would join it into one complete-looking, wrong row."""
    table = rowfile.RowFile(tmp_path / "t.csv", ["name", "x"], key=["name"])
    _failing_writes(monkeypatch, rowfile, 3, errno.ENOSPC)  # the header, a, then half of b
    with table.appending() as write:
        write({"name": "a", "x": 1})
        with pytest.raises(OutputError, match="the 1 row already written is kept"):
            write({"name": "b", "x": 2})
        with pytest.raises(OutputError, match="No space left on device"):
            write({"name": "c", "x": 3})  # the disk has room again, but the table stays closed
    assert (tmp_path / "t.csv").read_text() == "name,x\na,1\nb,"
    assert list(table.read()["name"]) == ["a"] and table.finished() == {("a",)}


@pytest.mark.parametrize("failure", [errno.ENOSPC, errno.EROFS])
def test_a_table_write_that_fails_keeps_the_rows_and_the_same_command_resumes(checkpoint, reference, tmp_path,
                                                                              monkeypatch, failure):
    out = tmp_path / "out"
    _failing_writes(monkeypatch, rowfile, 4, failure)  # the header and two rows, then half of the third
    with pytest.raises(OutputError) as caught:
        analyze(checkpoint, out, **FAST)
    message = f"cannot write {out / LAYER_TABLE}: {os.strerror(failure)}; the 2 rows already written are kept, and "
    assert str(caught.value) == message + "the same command resumes"
    assert caught.value.rows == 2 and caught.value.errno == failure
    assert not (out / LAYER_TABLE).read_text().endswith("\n")  # the torn line is there...
    monkeypatch.undo()
    analyze(checkpoint, out, **FAST)
    _same_table(out, reference)  # ... and cut off before the resumed rows


def test_a_per_layer_file_that_cannot_be_written_stops_the_run_and_leaves_no_partial_file(checkpoint, reference,
                                                                                          tmp_path, monkeypatch):
    out = tmp_path / "out"
    real = np.savez
    calls = []

    def savez(handle, **arrays):
        calls.append(1)
        if len(calls) == 2:  # c.weight's draws: half written when the disk fills
            handle.write(b"PK" * 1000)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(handle, **arrays)

    monkeypatch.setattr(np, "savez", savez)
    with pytest.raises(OutputError, match=r"cannot write .*c\.weight\.htmp-exact\.draws\.npz: No space left on "
                                          r"device; the 3 rows already written to .*layers\.csv are kept") as caught:
        analyze(checkpoint, out, **FAST)
    assert caught.value.rows == 3 == rowfile.RowFile(out / LAYER_TABLE, [], []).complete_rows()
    assert not list(out.rglob("*.partial")) and not (out / "layers" / "c.weight.htmp-exact.draws.npz").exists()
    monkeypatch.undo()
    analyze(checkpoint, out, **FAST)
    _same_table(out, reference)


def test_a_read_only_folder_is_one_error_before_anything_is_written(checkpoint, tmp_path, monkeypatch, capsys):
    import hteval.run_lock

    out = tmp_path / "out"
    out.mkdir()
    real = os.open

    def read_only(path, flags, *args, **kwargs):
        if flags & os.O_CREAT:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real(path, flags, *args, **kwargs)

    fake = types.ModuleType("os")
    fake.__dict__.update(os.__dict__)
    fake.open = read_only
    monkeypatch.setattr(hteval.run_lock, "os", fake)
    assert main(["analyze", str(checkpoint), "--out", str(out)]) == 2
    error = capsys.readouterr().err.splitlines()[-1]
    assert error == f"hteval: error: cannot write {out / LOCK_FILE}: Read-only file system"
    assert not any(out.iterdir())


def test_an_output_path_that_is_a_file(checkpoint, tmp_path):
    out = tmp_path / "taken"
    out.write_text("not a folder")
    with pytest.raises(OutputError, match="taken is a file, not a folder; choose another --out"):
        analyze(checkpoint, out, **FAST)
    assert out.read_text() == "not a folder"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder anyway")
def test_a_folder_without_write_permission(checkpoint, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o555)
    try:
        with pytest.raises(OutputError, match="cannot write .*Permission denied"):
            analyze(checkpoint, out, **FAST)
    finally:
        out.chmod(0o755)


def test_a_real_disk_that_fills_up(checkpoint, reference, tmp_path):
    """A 100 KiB tmpfs fills during the run; grown to 8 MiB, the same call resumes. Needs the right to mount."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=100k", "none", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        with pytest.raises(OutputError, match="No space left on device; the .* kept, and the same command resumes"):
            analyze(checkpoint, disk / "out", **FAST)
        assert not list(disk.rglob("*.partial"))
        subprocess.run(["mount", "-o", "remount,size=8m", str(disk)], check=True)
        analyze(checkpoint, disk / "out", **FAST)
        _same_table(disk / "out", reference)
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)


def test_names_that_collide_as_file_names_get_files_of_their_own(tmp_path):
    rng = np.random.default_rng(2)
    long = "blocks." + "x" * 300 + ".weight"
    layers = {"a/b.weight": rng.standard_normal((64, 32)), "a_b.weight": 2 * rng.standard_normal((64, 32)),
              "a b.weight": 3 * rng.standard_normal((64, 32)), long: rng.standard_normal((48, 32))}
    path = tmp_path / "clash.safetensors"
    save_file({k: v.astype(np.float32) for k, v in layers.items()}, path)
    out = tmp_path / "out"
    table = analyze(path, out, **FAST).set_index(names.NAME)
    stems = {name: layer_file_stem(name, "htmp-exact") for name in layers}
    assert len(set(stems.values())) == 4 and stems["a_b.weight"] == "a_b.weight.htmp-exact"
    assert sorted(p.name for p in (out / "layers").iterdir()) == sorted(
        f"{stem}{suffix}" for stem in stems.values() for suffix in (".json", ".draws.npz"))
    analysis = load_analysis(out)
    for name in layers:  # each file holds its own layer's fit
        result = analysis.layer(name)
        assert result.record[names.NAME] == name
        assert np.median(result.draws["scale"]) == pytest.approx(table.loc[name, "scale_median"])


def test_a_layers_file_name_depends_on_its_name_only(tmp_path):
    """A run on one layer, resumed with all of them and pooled (which reads every layer's draws by file name)."""
    rng = np.random.default_rng(3)
    path = tmp_path / "three.safetensors"
    save_file({name: rng.standard_normal((64, 32)).astype(np.float32) for name in ("a/b.weight", "a_b.weight",
                                                                                  "c.weight")}, path)
    out = tmp_path / "out"
    analyze(path, out, layers=["a/b.weight"], **FAST)
    first = (out / "layers" / f"{layer_file_stem('a/b.weight', 'htmp-exact')}.json").read_text()
    table = analyze(path, out, hierarchical=True, **FAST)
    assert len(table) == 3 and (out / "hierarchical.json").exists()
    assert (out / "layers" / f"{layer_file_stem('a/b.weight', 'htmp-exact')}.json").read_text() == first


def test_file_stems():
    # names made only of safe characters keep the stems earlier hteval versions gave them
    for name in ("encoder.layer.0.attention.self.query.weight", "h.0.mlp.c_fc.weight", "Dense_0-kernel"):
        assert file_stem(name) == name
    # others: the safe name, '~' and a hash of the name, pinned (existing folders are read by it)
    assert file_stem("a/b.weight") == "a_b.weight~1a285945"
    assert file_stem("params/Dense_0/kernel").startswith("params_Dense_0_kernel~")
    assert file_stem("") != "" and file_stem("ä").isascii()
    assert len({file_stem(n) for n in ("a/b", "a_b", "a b", "a//b", "a\\b")}) == 5
    for long in ("x" * 300, "x" * 300 + "y", "é" * 200, "z" * (MAX_STEM + 1)):
        stem = file_stem(long)
        assert len(stem.encode()) <= MAX_STEM and stem.isascii()
        assert len(f"{layer_file_stem(long, 'htmp-outliers', True)}.draws.npz.partial".encode()) <= 255
    assert file_stem("x" * 300) != file_stem("x" * 300 + "y")
    assert file_stem("z" * MAX_STEM) == "z" * MAX_STEM

