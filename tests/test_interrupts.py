"""Stopping a run by SIGINT or SIGTERM: `hteval analyze` (fits in worker processes, in its own process, reading
singular values in threads, writing its report), many checkpoints over a process pool or a Dask cluster, the Python
API as a notebook interrupts it, and the training tracker.

Each run starts in a session of its own; the signal goes to its whole process group (a terminal's Ctrl-C, a batch
scheduler) or to its first process alone (`kill PID`, a notebook's interrupt), at a point found by watching the
files the run writes. Every stop is checked the same way (`_check_stopped`): exit status 130 or 143 within 2 s,
one line on stderr that says how far the run got and where its rows are, no traceback and no leaked-semaphore
warning, every line of the table whole, and no process of the session left 5 s after the signal. Resuming then
gives the rows of a run never stopped (all columns but the seconds each fit took).

The runs that fit with NUTS in worker processes share a JAX compilation cache, so that only the first compiles.
The broader versions (more signals and points, a Dask LocalCluster) are marked slow.
"""

from __future__ import annotations

import csv
import io
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from safetensors.numpy import save_file

from hteval import names
from hteval.interrupts import STOP_SECONDS, Interrupted, exit_status, handling_signals, signals_deferred

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc") or sys.platform != "linux",
                                reason="process sessions are listed from Linux's /proc")

#: the limit the run must stop within after the signal (the issue's 2 s; the command's own bound is STOP_SECONDS)
STOP_LIMIT = 2.0
#: NUTS fits of under a second each, in two worker processes, one compiled program per layer shape
NUTS = ["--models", "mp", "--sampler", "nuts", "--chains", "1", "--draws", "4000", "--warmup", "500",
        "--max-draws", "4000", "--no-figures", "--workers", "2"]
LINE = re.compile(r"^hteval: interrupted (after \d+ of \d+ (fit|checkpoint|layer)s?|before the first (fit|checkpoint|"
                  r"layer)); (rows kept in (?P<table>\S+); run the same command to resume|no rows written yet; run "
                  r"the same command to start again)$")


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    """Four small layers of two shapes: two groups of NUTS fits, one per worker process."""
    rng = np.random.default_rng(0)
    tensors = {f"{kind}{i}.weight": rng.standard_normal(shape).astype(np.float32)
               for i in range(2) for kind, shape in (("a", (96, 48)), ("b", (64, 48)))}
    path = tmp_path_factory.mktemp("small") / "small.safetensors"
    save_file(tensors, path)
    return path


@pytest.fixture(scope="module")
def large(tmp_path_factory) -> Path:
    """A bias (its skipped row is the first written) and six 1600 x 1200 matrices: about a second of singular values
    each on one core, in the reading threads, and the exact fits quick."""
    rng = np.random.default_rng(1)
    tensors = {"a.bias": rng.standard_normal(64).astype(np.float32)}
    tensors.update({f"b{i}.weight": rng.standard_normal((1600, 1200)).astype(np.float32) for i in range(6)})
    path = tmp_path_factory.mktemp("large") / "large.safetensors"
    save_file(tensors, path)
    return path


@pytest.fixture(scope="module")
def environment(tmp_path_factory) -> dict[str, str]:
    """The runs' environment: one compilation cache for the module's runs, and no colour or terminal tricks."""
    return {**os.environ, "HTEVAL_CACHE": str(tmp_path_factory.mktemp("jax-cache")), "PYTHONUNBUFFERED": "1"}


@dataclass
class Stopped:
    status: int
    seconds: float  # from the signal to the end of the first process
    stderr: str
    stdout: str
    left: list[str]  # processes of the session 5 s after the signal (their command lines)


def _as_a_shell_starts_it() -> None:
    """A program started from a shell takes Ctrl-C at its default, unblocked; a test process may have come to
    ignore or block SIGINT, and a child that inherits that takes no KeyboardInterrupt (Python installs its handler
    only over the default), so each run under test starts with the default disposition and no signal blocked."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})


def _run(argv: list[str], environment: dict, folder: Path) -> subprocess.Popen:
    """`hteval ARGV` in a session of its own; stdout and stderr to files, so that waiting for it never waits for a
    process it left behind holding a pipe."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "stdout", "wb") as out, open(folder / "stderr", "wb") as err:
        return subprocess.Popen([sys.executable, "-m", "hteval.cli", *argv], stdout=out, stderr=err,
                                env=environment, start_new_session=True, preexec_fn=_as_a_shell_starts_it)


def _stop(process: subprocess.Popen, folder: Path, ready, signum: int, *, group: bool, again: bool = False,
          timeout: float = 240) -> Stopped:
    """Wait until ready() (the run still going), send `signum` to the process group or to the process alone (and
    once more 0.1 s later with again=True), then wait for its end, and for its session to have no process left
    (5 s after the signal at most)."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, f"the run ended before the point to stop it at:\n{_text(folder, 'stderr')}"
        assert time.monotonic() < deadline, "the point to stop the run at never came"
        time.sleep(0.02)
    send = os.killpg if group else os.kill
    sent = time.monotonic()
    send(process.pid, signum)
    if again:
        time.sleep(0.1)
        send(process.pid, signum)
    status = process.wait(timeout=60)
    seconds = time.monotonic() - sent
    left = _session(process.pid)
    while left and time.monotonic() < sent + 5:  # (none left sooner is a stricter check, and a quicker test)
        time.sleep(0.1)
        left = _session(process.pid)
    return Stopped(status, seconds, _text(folder, "stderr"), _text(folder, "stdout"), left)


def _text(folder: Path, name: str) -> str:
    return (folder / name).read_text(errors="replace")


def _session(sid: int) -> list[str]:
    """Command lines of the live processes of session `sid` (zombies waiting to be reaped are not running)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            command = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if int(fields[3]) == sid and fields[0] != "Z":
            found.append(f"{entry}: {command[:200]}")
    return found


def _check_gone(sid: int) -> None:
    """No process of session `sid` is left 5 s after its first process ended (multiprocessing's resource tracker
    ends once the last process holding it has)."""
    deadline = time.monotonic() + 5
    while _session(sid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _session(sid) == []


def _rows(table: Path) -> int:
    """Complete rows of a table (0 while it does not exist)."""
    return max(table.read_bytes().count(b"\n") - 1, 0) if table.exists() else 0


def _check_stopped(stopped: Stopped, signum: int, table: Path | None = None, limit: float = STOP_LIMIT) -> None:
    print(f"{signal.Signals(signum).name}: stopped {stopped.seconds:.2f} s after the signal")  # shown with -s
    assert stopped.status == 128 + signum, stopped.stderr
    assert stopped.seconds < limit, f"stopped {stopped.seconds:.2f} s after the signal"
    assert stopped.left == [], "\n".join(stopped.left)
    assert "Traceback" not in stopped.stderr and "leaked" not in stopped.stderr, stopped.stderr
    said = [line for line in re.split(r"[\r\n]", stopped.stderr) if line.startswith("hteval: interrupted")]
    assert len(said) == 1 and LINE.match(said[0]), stopped.stderr
    if table is not None:
        kept = LINE.match(said[0])["table"]
        assert kept is None or Path(kept) == table
        _check_whole(table)


def _check_whole(table: Path) -> None:
    """Every line of the table ends in a newline and has the header's number of cells."""
    data = table.read_text()
    assert data.endswith("\n")
    lines = list(csv.reader(io.StringIO(data)))
    assert {len(line) for line in lines} == {len(lines[0])}


def _same_rows(resumed: Path, whole: Path) -> None:
    """The rows of a resumed table are those of a run never stopped: each once, equal but for the seconds."""
    ours, theirs = (pd.read_csv(p).drop(columns=names.SECONDS) for p in (resumed, whole))
    ours, theirs = (t.sort_values([names.NAME, names.MODEL]).reset_index(drop=True) for t in (ours, theirs))
    assert not ours.duplicated([names.NAME, names.MODEL, names.RANDOMIZED]).any()
    pd.testing.assert_frame_equal(ours, theirs)


def _finish(argv: list[str], environment: dict, folder: Path) -> str:
    """Run the command to its end (resuming); its stderr."""
    process = _run(argv, environment, folder)
    assert process.wait(timeout=600) == 0, _text(folder, "stderr")
    return _text(folder, "stderr")


@pytest.fixture(scope="module")
def whole_large(large, environment, tmp_path_factory) -> Path:
    """layers.csv of `large` by a run never stopped."""
    folder = tmp_path_factory.mktemp("whole-large")
    _finish(["analyze", str(large), "--out", str(folder / "out")], environment, folder)
    return folder / "out" / "layers.csv"


def _stop_fits(small, environment, folder: Path, signum: int, group: bool) -> Path:
    """Stop a NUTS run of `small` over two worker processes once its first row is written; its table."""
    out = folder / "out"
    process = _run(["analyze", str(small), *NUTS, "--out", str(out)], environment, folder / "first")
    stopped = _stop(process, folder / "first", lambda: _rows(out / "layers.csv") >= 1, signum, group=group)
    _check_stopped(stopped, signum, out / "layers.csv")
    assert not (out / "report.md").exists()
    return out / "layers.csv"


def test_ctrl_c_to_the_group_stops_fits_in_worker_processes_and_the_same_command_resumes(small, environment,
                                                                                          tmp_path):
    """SIGINT to the whole group while two worker processes fit (where the workers printed a 25-line traceback):
    one line, 130, no worker left, the finished rows whole; the same command then completes the table without
    rewriting them."""
    table = _stop_fits(small, environment, tmp_path, signal.SIGINT, group=True)
    kept = table.read_text()
    assert 2 <= kept.count("\n") < 5  # the header, the rows finished before the stop, not all four
    # resumed in one process: what is checked is the table (the pool's number is not part of the run's identity),
    # and a second pool would start and compile twice over
    _finish(["analyze", str(small), *NUTS[:-2], "--workers", "1", "--out", str(table.parent)], environment,
            tmp_path / "resumed")
    assert table.read_text().startswith(kept)
    rows = pd.read_csv(table)
    assert sorted(rows[names.NAME]) == sorted(f"{k}{i}.weight" for i in range(2) for k in "ab")


@pytest.mark.slow  # in CI: SIGINT to the parent alone with worker processes (the notebook test) and SIGTERM to it
def test_sigterm_to_the_parent_alone_ends_its_worker_processes(small, environment, tmp_path):  # alone (exact path)
    """SIGTERM to the first process only (`kill PID`, a batch scheduler; where the workers ran on for 40 s and the
    resource tracker reported leaked semaphores): its workers, which got no signal, end with it."""
    _stop_fits(small, environment, tmp_path, signal.SIGTERM, group=False)


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "group"), [(signal.SIGTERM, True), (signal.SIGINT, False)])
def test_fits_in_worker_processes_stop_by_either_signal_and_resume_to_the_whole_table(small, environment, tmp_path,
                                                                                      signum, group):
    table = _stop_fits(small, environment, tmp_path, signum, group)
    _finish(["analyze", str(small), *NUTS, "--out", str(table.parent)], environment, tmp_path / "resumed")
    whole = tmp_path / "whole"
    _finish(["analyze", str(small), *NUTS, "--out", str(whole)], environment, tmp_path / "whole-run")
    _same_rows(table, whole / "layers.csv")


@pytest.mark.slow  # the fits in worker processes are stopped in CI
def test_a_fit_in_the_main_process_stops_at_once(small, environment, tmp_path):
    """One worker: NUTS runs in the command's own process. The signal comes a second into a fit of about 7 s; JAX
    waits for its result interruptibly, so the run stops at once, with the row of the fit before."""
    out = tmp_path / "out"
    argv = ["analyze", str(small), *NUTS[:-2], "--draws", "100000", "--max-draws", "100000", "--workers", "1",
            "--out", str(out)]
    process = _run(argv, environment, tmp_path)
    first_row: list[float] = []

    def fitting() -> bool:
        if not first_row and _rows(out / "layers.csv") >= 1:
            first_row.append(time.monotonic())
        return bool(first_row) and time.monotonic() > first_row[0] + 1

    stopped = _stop(process, tmp_path, fitting, signal.SIGINT, group=True)
    _check_stopped(stopped, signal.SIGINT, out / "layers.csv")
    assert _rows(out / "layers.csv") == 1


STUCK = """
import multiprocessing, signal, subprocess, sys, time
from hteval.interrupts import handling_signals

if __name__ == "__main__":
    queue = multiprocessing.get_context("spawn").Queue()  # named semaphores, which the exit must remove
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    with handling_signals(lambda: "hteval: interrupted after 3 of 5 fits"):
        print(child.pid, flush=True)
        # a main thread that never takes the signal up (as one inside a long call that holds the GIL would not)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        time.sleep(60)
"""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_the_main_thread_does_not_take_up_ends_the_process_after_stop_seconds(environment, tmp_path,
                                                                                       signum):
    """The watchdog's end: STOP_SECONDS after the signal, the process's children killed, its semaphores removed
    (no warning from the resource tracker), the line printed once, and the status of the signal."""
    script = tmp_path / "stuck.py"
    script.write_text(textwrap.dedent(STUCK))
    with open(tmp_path / "stdout", "wb") as stdout, open(tmp_path / "stderr", "wb") as stderr:
        process = subprocess.Popen([sys.executable, str(script)], stdout=stdout, stderr=stderr, env=environment,
                                   start_new_session=True, preexec_fn=_as_a_shell_starts_it)
    stopped = _stop(process, tmp_path, lambda: bool(_text(tmp_path, "stdout").strip()), signum, group=False)
    assert stopped.status == 128 + signum, stopped.stderr
    assert STOP_SECONDS - 0.1 < stopped.seconds < STOP_LIMIT + 0.5
    assert stopped.stderr.strip() == "hteval: interrupted after 3 of 5 fits" and stopped.left == []


def test_a_stop_signal_during_a_row_write_is_raised_once_the_row_is_whole():
    """Under the command line's handling, SIGTERM raises Interrupted (a KeyboardInterrupt) with its status, but
    not inside signals_deferred (a row being written): there it waits for the end of the block."""
    done = []
    with handling_signals() as handling, pytest.raises(Interrupted) as caught:
        with signals_deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)  # Python runs its handler in this time: it is deferred
            done.append("row")
    assert done == ["row"] and isinstance(caught.value, KeyboardInterrupt)
    assert caught.value.signum == signal.SIGTERM and exit_status(caught.value) == 143
    assert handling.report(caught.value) == 143
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored on leaving


def _exact_stop(large, environment, folder: Path, point: str, signum: int, group: bool, again: bool = False) -> Path:
    """Stop the default (exact) analysis of `large` while the singular values of its large matrices are computed
    (the bias's row written, none of the matrices') or while its report is written (every row is); its table."""
    out = folder / "out"
    table = out / "layers.csv"
    process = _run(["analyze", str(large), "--out", str(out)], environment, folder / "first")
    if point == "report":
        stopped = _stop(process, folder / "first", lambda: _rows(table) == 7, signum, group=group, again=again)
    else:
        stopped = _stop(process, folder / "first", lambda: _rows(table) >= 1, signum, group=group, again=again)
        assert _rows(table) < 7
    _check_stopped(stopped, signum, table, limit=1.0 if again else STOP_LIMIT)
    assert not (out / "report.md").exists()
    return table


@pytest.mark.parametrize(("point", "signum", "group"), [
    ("singular values", signal.SIGINT, True),
    ("report", signal.SIGTERM, False),
])
def test_the_exact_path_stops_while_reading_and_while_reporting(large, whole_large, environment, tmp_path, point,
                                                                signum, group):
    """The default exact fits run in this process while threads compute the next singular values and a second
    process draws the figures. Stopped while reading or while reporting, the threads do not hold the exit and the
    figure process ends; the resumed table is that of a run never stopped, and it has its report."""
    table = _exact_stop(large, environment, tmp_path, point, signum, group)
    _finish(["analyze", str(large), "--out", str(table.parent)], environment, tmp_path / "resumed")
    _same_rows(table, whole_large)
    assert (table.parent / "report.md").exists()


@pytest.mark.slow
@pytest.mark.parametrize("point", ["singular values", "report"])
@pytest.mark.parametrize(("signum", "group"), [(signal.SIGINT, True), (signal.SIGINT, False),
                                               (signal.SIGTERM, True), (signal.SIGTERM, False)])
def test_the_exact_path_stops_at_each_point_by_either_signal(large, whole_large, environment, tmp_path, point,
                                                             signum, group):
    table = _exact_stop(large, environment, tmp_path, point, signum, group)
    _finish(["analyze", str(large), "--out", str(table.parent)], environment, tmp_path / "resumed")
    _same_rows(table, whole_large)


def test_a_second_ctrl_c_ends_the_run_at_once(large, environment, tmp_path):
    """Two Ctrl-Cs 0.1 s apart while reading: the second ends the process at once (within 1 s of the first), still
    without a cut row or a process left."""
    _exact_stop(large, environment, tmp_path, "singular values", signal.SIGINT, group=True, again=True)


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "group"), [(signal.SIGINT, True), (signal.SIGTERM, False)])
def test_compare_layers_stops_and_resumes_to_the_whole_table(small, environment, tmp_path, signum, group):
    """`hteval compare --layers`: each layer's comparison in two worker processes, one row per layer."""
    argv = ["compare", str(small), "--layers", "*", "--models", "htmp-exact,powerlaw", "--workers", "2"]
    out = tmp_path / "out"
    process = _run([*argv, "--out", str(out)], environment, tmp_path / "first")
    table = out / "comparisons.csv"
    stopped = _stop(process, tmp_path / "first", lambda: _rows(table) >= 1, signum, group=group)
    _check_stopped(stopped, signum, table)
    assert "interrupted after" in stopped.stderr and " layers; rows kept" in stopped.stderr
    _finish([*argv, "--out", str(out)], environment, tmp_path / "resumed")
    _finish([*argv, "--out", str(tmp_path / "whole")], environment, tmp_path / "whole-run")
    ours, theirs = (pd.read_csv(p).drop(columns=names.SECONDS).sort_values(names.NAME).reset_index(drop=True)
                    for p in (table, tmp_path / "whole" / "comparisons.csv"))
    pd.testing.assert_frame_equal(ours, theirs)


def _checkpoints(folder: Path, count: int) -> Path:
    rng = np.random.default_rng(2)
    folder.mkdir()
    for step in range(count):
        tensors = {f"b{i}.weight": rng.standard_normal((1200, 900)).astype(np.float32) for i in range(3)}
        save_file(tensors, folder / f"step_{step}.safetensors")
    return folder


def test_many_checkpoints_over_worker_processes_stop_and_resume(environment, tmp_path):
    """Several checkpoints dealt to a pool of two processes, each analyzing a checkpoint: SIGTERM to the group once
    a checkpoint's rows are written stops the pool's workers (and each one's reading threads); the same command
    then completes checkpoints.csv, each row once."""
    run = _checkpoints(tmp_path / "run", 4)
    out = tmp_path / "out"
    argv = ["analyze", str(run), "--workers", "2", "--no-figures", "--out", str(out)]
    process = _run(argv, environment, tmp_path / "first")

    def started() -> bool:
        return any(_rows(p) >= 1 for p in (out / "checkpoints").glob("*/layers.csv"))

    stopped = _stop(process, tmp_path / "first", started, signal.SIGTERM, group=True)
    _check_stopped(stopped, signal.SIGTERM)
    for table in [out / "checkpoints.csv", *(out / "checkpoints").glob("*/layers.csv")]:
        if table.exists():
            _check_whole(table)
    _finish([*argv[:2], "--workers", "1", *argv[4:]], environment, tmp_path / "resumed")  # as above
    table = pd.read_csv(out / "checkpoints.csv")
    assert len(table) == 12 and not table.duplicated([names.CHECKPOINT, names.NAME]).any()


def _stop_on_dask(environment, folder: Path, signum: int, group: bool, *extra: str) -> Stopped:
    """Stop `hteval analyze --engine dask` over three checkpoints once a checkpoint's first row is written."""
    pytest.importorskip("distributed")
    run = _checkpoints(folder / "run", 3)
    out = folder / "out"
    process = _run(["analyze", str(run), "--engine", "dask", "--workers", "2", "--no-figures", "--out", str(out),
                    *extra], environment, folder)
    stopped = _stop(process, folder, lambda: any(_rows(p) for p in out.glob("checkpoints/*/layers.csv")), signum,
                    group=group)
    print(f"{signal.Signals(signum).name}: stopped {stopped.seconds:.2f} s after the signal")  # shown with -s
    # Dask logs its own shutdown (a connection closed mid-send among them); no KeyboardInterrupt from its workers
    assert stopped.status == 128 + signum and stopped.seconds < STOP_LIMIT and stopped.left == [], stopped.stderr
    assert "KeyboardInterrupt" not in stopped.stderr and "leaked" not in stopped.stderr, stopped.stderr
    assert sum(bool(LINE.match(line)) for line in re.split(r"[\r\n]", stopped.stderr)) == 1, stopped.stderr
    for table in out.glob("checkpoints/*/layers.csv"):
        _check_whole(table)
    return stopped


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "group"), [(signal.SIGINT, True), (signal.SIGTERM, False)])
def test_many_checkpoints_on_a_local_dask_cluster_stop_with_the_cluster(environment, tmp_path, signum, group):
    """The LocalCluster that the run started goes with it: no Dask worker or nanny process is left."""
    _stop_on_dask(environment, tmp_path, signum, group)


@pytest.mark.slow
def test_a_run_on_an_external_scheduler_cancels_its_tasks_and_leaves_the_cluster_running(environment, tmp_path):
    """On --scheduler the run's tasks are cancelled (the scheduler holds none of them afterwards) and the cluster,
    which is not the run's, goes on with all its workers."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None,
                                  silence_logs=40) as cluster, distributed.Client(cluster) as client:
        _stop_on_dask(environment, tmp_path, signal.SIGINT, True, "--scheduler", cluster.scheduler_address)
        deadline = time.monotonic() + 10
        while client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)):
            assert time.monotonic() < deadline, "the run's tasks are still on the scheduler"
            time.sleep(0.2)
        assert len(client.scheduler_info()["workers"]) == 2
        assert client.submit(sum, [1, 2]).result() == 3


NOTEBOOK = """
import os, sys
from pathlib import Path

import hteval


def children():
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            command = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\\0", b" ").decode()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if int(fields[1]) == os.getpid() and fields[0] != "Z" and "resource_tracker" not in command:
            found.append(command)
    return found


if __name__ == "__main__":  # worker processes are spawned: they import this file
    path, out = sys.argv[1], sys.argv[2]
    options = dict(models=["mp"], sampler="nuts", chains=1, draws=4000, warmup=500, max_draws=None, workers=2,
                   figures=False)
    try:
        hteval.analyze(path, out, **options)
        print("finished", flush=True)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
    print("children", children(), flush=True)
    # the same folder: its lock was released, and it resumes (in this process: a second pool would compile anew)
    analysis = hteval.analyze(path, out, **{**options, "workers": 1})
    print("rows", len(analysis.table), flush=True)
"""


def test_a_notebook_interrupt_stops_the_python_api_and_the_next_call_works(small, environment, tmp_path):
    """KeyboardInterrupt in hteval.analyze as a notebook's interrupt sends it (SIGINT to the kernel process alone):
    the call stops its worker processes and raises KeyboardInterrupt at once; the process has no child left, and
    the next call on the same folder takes its lock and finishes the table."""
    script = tmp_path / "notebook.py"
    script.write_text(textwrap.dedent(NOTEBOOK))
    out = tmp_path / "out"
    with open(tmp_path / "stdout", "wb") as stdout, open(tmp_path / "stderr", "wb") as stderr:
        process = subprocess.Popen([sys.executable, str(script), str(small), str(out)], stdout=stdout,
                                   stderr=stderr, env=environment, start_new_session=True,
                                   preexec_fn=_as_a_shell_starts_it)
    deadline = time.monotonic() + 240
    while _rows(out / "layers.csv") < 1:
        assert process.poll() is None and time.monotonic() < deadline, _text(tmp_path, "stderr")
        time.sleep(0.02)
    sent = time.monotonic()
    os.kill(process.pid, signal.SIGINT)
    while "children" not in _text(tmp_path, "stdout"):
        assert time.monotonic() - sent < STOP_LIMIT, _text(tmp_path, "stdout") + _text(tmp_path, "stderr")
        time.sleep(0.02)
    assert process.wait(timeout=600) == 0, _text(tmp_path, "stderr")
    stdout, stderr = _text(tmp_path, "stdout"), _text(tmp_path, "stderr")
    assert stdout.splitlines()[:2] == ["interrupted", "children []"], stdout
    assert "rows 4" in stdout and "leaked" not in stderr and "Traceback" not in stderr, stderr
    _check_gone(process.pid)


TRACKER = """
import sys
import numpy as np
from hteval import Tracker

rng = np.random.default_rng(0)
with Tracker(sys.argv[1], plot_every=None) as tracker:
    for step in range(1000):
        tracker.update(step, {f"b{i}.weight": rng.standard_normal((1200, 900)).astype(np.float32) for i in range(3)})
        print("step", step, flush=True)
"""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_training_script_with_a_tracker_stops_with_its_rows_whole(environment, tmp_path, signum):
    """A training loop that records every step: Ctrl-C (KeyboardInterrupt through the tracker, which releases its
    folder without drawing) or SIGTERM (Python's default, an immediate end) stops it within the limit, the table's
    lines whole and nothing left running; a new Tracker on the folder goes on from the steps recorded."""
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(TRACKER))
    out = tmp_path / "out"
    with open(tmp_path / "stdout", "wb") as stdout, open(tmp_path / "stderr", "wb") as stderr:
        process = subprocess.Popen([sys.executable, str(script), str(out)], stdout=stdout, stderr=stderr,
                                   env=environment, start_new_session=True,
                                   preexec_fn=_as_a_shell_starts_it)
    stopped = _stop(process, tmp_path, lambda: _rows(out / "checkpoints.csv") >= 3, signum, group=True)
    assert stopped.seconds < STOP_LIMIT and stopped.left == []
    if signum == signal.SIGINT:  # the script does not catch it: Python reports it and ends by SIGINT
        assert stopped.status == -signal.SIGINT and "KeyboardInterrupt" in stopped.stderr
    else:
        assert stopped.status == -signal.SIGTERM
    _check_whole(out / "checkpoints.csv")
    from hteval.tracker import Tracker

    with Tracker(out, plot_every=None) as tracker:
        assert tracker.steps and not tracker._lock.held  # noqa: SLF001 (no update yet: nothing taken)
