"""One checkpoint on a Dask cluster (`hteval.dask_layers`): a task per tensor or group of small tensors, each reading
its tensors on its worker. Checked on loopback LocalClusters of two worker processes: the rows equal the local
engine's (medians and interval ends to 1e-12) with a worker killed mid-run, none duplicated or lost; a worker lost
for good gives its tensor an error row and the run goes on; the command line killed mid-run resumes without
duplicates and without reading finished layers again; compare --layers; the task plan."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from checkpoint_files import write_shards

from hteval import names
from hteval.cli import main
from hteval.dask_layers import GROUP_BYTES, TensorGroup, group_spectra, plan_groups
from hteval.errors import InputError
from hteval.network_analysis import LAYER_TABLE, analyze, read_layer_table
from hteval.spectra import list_tensors

pytest.importorskip("distributed")

#: tensors that each take about 0.4 s of singular values on one busy core: long enough to kill a worker mid-task
BIG = (1536, 1024)
N_BIG = 8
#: the columns compared to 1e-12: every median and interval end analyze writes for htmp-exact
SUMMARY = [f"{p}_{s}" for p in ("kappa", "scale") for s in ("median", "ci_low", "ci_high")]


def _write_checkpoint(folder: Path) -> Path:
    """Two shards and an index: eight large matrices, small ones packed into one task, a bias (skipped) and a
    matrix holding a NaN (its error row)."""
    folder.mkdir()
    rng = np.random.default_rng(1)
    first = {f"model.layers.{i}.mlp.weight": rng.standard_normal(BIG).astype(np.float32) for i in range(4)}
    first["model.layers.0.norm.weight"] = np.ones(64, np.float32)
    first["model.layers.0.attn.weight"] = rng.standard_normal((96, 64)).astype(np.float32)
    second = {f"model.layers.{i}.mlp.weight": rng.standard_normal(BIG).astype(np.float32) for i in range(4, N_BIG)}
    broken = rng.standard_normal((80, 48)).astype(np.float32)
    broken[5, 7] = np.nan
    second["model.layers.1.attn.weight"] = broken
    return write_shards(folder, {"model-00001-of-00002.safetensors": first, "model-00002-of-00002.safetensors": second})


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return _write_checkpoint(tmp_path_factory.mktemp("sharded") / "model")


@pytest.fixture(scope="module")
def local_table(checkpoint, tmp_path_factory) -> pd.DataFrame:
    return analyze(checkpoint, tmp_path_factory.mktemp("local"), figures=False, report=False)


@pytest.fixture(scope="module")
def loopback_cluster():
    """A LocalCluster of two single-threaded worker processes on 127.0.0.1, and a client of the test's own."""
    from dask.distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                           dashboard_address=None)
    client = Client(cluster)
    yield cluster, client
    client.close()
    cluster.close()


def _kill_a_busy_worker(client, every: bool = False) -> int:
    """SIGKILL a worker process that has a task in hand, or every such worker (their nannies start new ones); the
    first one's pid."""
    pids = client.run(os.getpid)
    for _ in range(500):
        busy = [address for address, keys in client.processing().items() if keys and address in pids]
        for address in busy if every else busy[:1]:
            os.kill(pids[address], signal.SIGKILL)
        if busy:
            return pids[busy[0]]
        time.sleep(0.01)
    raise AssertionError("no worker had a task in hand")


def _assert_same_rows(ours: pd.DataFrame, theirs: pd.DataFrame) -> None:
    key = [names.NAME, names.MODEL]
    assert not ours.duplicated(subset=[names.NAME, names.MODEL, names.RANDOMIZED]).any()
    assert sorted(ours[names.NAME]) == sorted(theirs[names.NAME])
    ours, theirs = ours.set_index(key).sort_index(), theirs.set_index(key).sort_index()
    assert list(ours[names.STATUS]) == list(theirs[names.STATUS])
    assert list(ours[names.N_EIGS].fillna(-1)) == list(theirs[names.N_EIGS].fillna(-1))
    np.testing.assert_allclose(ours[SUMMARY].to_numpy(float), theirs[SUMMARY].to_numpy(float), rtol=1e-12, atol=0)


def test_a_worker_killed_mid_run_leaves_the_local_rows_none_twice(checkpoint, local_table, loopback_cluster,
                                                                     tmp_path):
    cluster, client = loopback_cluster
    killed = []

    def kill_once(row, done, total):
        if not killed:
            killed.append(_kill_a_busy_worker(client))

    table = analyze(checkpoint, tmp_path / "out", figures=False, report=False, engine="dask",
                    scheduler=cluster.scheduler_address, on_row=kill_once)
    assert killed and killed[0] not in client.run(os.getpid).values()  # the worker died and was replaced
    _assert_same_rows(table, local_table)
    written = read_layer_table(tmp_path / "out" / LAYER_TABLE)
    assert len(written) == len(local_table) == N_BIG + 3  # none lost, none twice (the file as on disk)
    by_name = table.set_index(names.NAME)
    assert by_name.loc["model.layers.1.attn.weight", names.STATUS] == names.STATUS_ERROR
    assert "non-finite" in by_name.loc["model.layers.1.attn.weight", names.ERROR]
    assert by_name.loc["model.layers.0.norm.weight", names.STATUS] == names.STATUS_SKIPPED
    # network order, as the local engine writes it, whatever order the tasks finished in
    assert list(table[names.NAME]) == list(local_table[names.NAME])


def test_a_worker_lost_for_good_gives_its_tensor_an_error_row_and_the_run_goes_on(checkpoint, local_table,
                                                                                   loopback_cluster, tmp_path):
    cluster, client = loopback_cluster

    def allow(failures: int):
        def set_on(dask_scheduler):
            dask_scheduler.allowed_failures = failures

        client.run_on_scheduler(set_on)

    # no second chance for a task whose worker died: its tensor fails, the others are analyzed. Both workers are
    # killed, so that a task just finishing as its worker dies cannot leave the test without a failure to see.
    allow(0)
    try:
        killed = []
        table = analyze(checkpoint, tmp_path / "out", figures=False, report=False, engine="dask",
                        scheduler=cluster.scheduler_address,
                        on_row=lambda *_: killed or killed.append(_kill_a_busy_worker(client, every=True)))
    finally:
        allow(3)
    failed = table[table[names.ERROR].fillna("").str.contains("KilledWorker")]
    assert len(failed) >= 1 and (failed[names.STATUS] == names.STATUS_ERROR).all()
    others = table[~table[names.NAME].isin(failed[names.NAME])]
    _assert_same_rows(others, local_table[~local_table[names.NAME].isin(failed[names.NAME])])
    assert len(table) == len(local_table)


class _ClientDied(Exception):
    """Stands in for the end of a client process: the rows written so far are all it leaves."""


def test_a_run_whose_client_died_resumes_without_reading_finished_layers(checkpoint, local_table,
                                                                         loopback_cluster, tmp_path, monkeypatch):
    cluster, _ = loopback_cluster
    out = tmp_path / "out"

    def die_after_two_fits(row, done, total):
        if _fitted_rows(out / LAYER_TABLE) >= 2:
            raise _ClientDied

    with pytest.raises(_ClientDied):
        analyze(checkpoint, out, figures=False, engine="dask", scheduler=cluster.scheduler_address,
                on_row=die_after_two_fits)
    _resume_reads_only_what_is_missing(checkpoint, out, local_table, monkeypatch,
                                       ["--scheduler", cluster.scheduler_address])


@pytest.mark.slow
def test_the_command_line_killed_mid_run_resumes_without_reading_finished_layers(checkpoint, local_table,
                                                                                 tmp_path, monkeypatch):
    """The client process and its loopback cluster killed by SIGKILL, then the same command again."""
    out = tmp_path / "out"
    command = [sys.executable, "-m", "hteval.cli", "analyze", str(checkpoint), "--engine", "dask", "--workers",
               "2", "--no-figures", "--out", str(out)]
    # its own process group: the client and its cluster's processes are killed together, as by a crash
    run = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while _fitted_rows(out / LAYER_TABLE) < 2 and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert run.poll() is None, "the run finished before it could be killed"
        os.killpg(run.pid, signal.SIGKILL)
    finally:
        run.wait()
    _resume_reads_only_what_is_missing(checkpoint, out, local_table, monkeypatch, ["--workers", "2"])


def _resume_reads_only_what_is_missing(checkpoint: Path, out: Path, local_table: pd.DataFrame, monkeypatch,
                                       cluster: list[str]) -> None:
    kept = read_layer_table(out / LAYER_TABLE)
    assert 0 < len(kept) < len(local_table)
    planned: list[str] = []
    import hteval.dask_layers

    def recording(tensors, *args, **kwargs):
        planned.extend(name for name, _ in tensors)
        return plan_groups(tensors, *args, **kwargs)

    monkeypatch.setattr(hteval.dask_layers, "plan_groups", recording)
    # exit status 3 for the one unreadable layer, as with the local engine
    assert main(["analyze", str(checkpoint), "--engine", "dask", *cluster, "--no-figures", "--out", str(out)]) == 3
    assert not set(planned) & set(kept[names.NAME])  # finished layers are not read again
    assert set(planned) | set(kept[names.NAME]) == set(local_table[names.NAME])
    _assert_same_rows(read_layer_table(out / LAYER_TABLE), local_table)


def _fitted_rows(path: Path) -> int:
    if not path.exists():
        return 0
    return sum(",ok," in line for line in path.read_text().splitlines()[1:])


def test_compare_layers_on_a_cluster_gives_the_local_comparisons(checkpoint, loopback_cluster, tmp_path):
    from hteval.layer_comparison import COMPARISON_TABLE

    cluster, _ = loopback_cluster
    light = ["--models", "htmp-exact,mp", "--chains", "2", "--draws", "200", "--layers", "*.attn.weight"]
    assert main(["compare", str(checkpoint), *light, "--workers", "1", "--out", str(tmp_path / "local")]) == 3
    assert main(["compare", str(checkpoint), *light, "--workers", "1", "--engine", "dask", "--scheduler",
                 cluster.scheduler_address, "--out", str(tmp_path / "dask")]) == 3
    local = pd.read_csv(tmp_path / "local" / COMPARISON_TABLE).set_index(names.NAME).sort_index()
    ours = pd.read_csv(tmp_path / "dask" / COMPARISON_TABLE).set_index(names.NAME).sort_index()
    assert list(ours.index) == list(local.index) == ["model.layers.0.attn.weight", "model.layers.1.attn.weight"]
    assert list(ours[names.STATUS]) == list(local[names.STATUS]) == [names.STATUS_OK, names.STATUS_ERROR]
    assert ours[names.BEST].iloc[0] == local[names.BEST].iloc[0]
    np.testing.assert_allclose(ours[names.D_LOG_EVIDENCE].iloc[0], local[names.D_LOG_EVIDENCE].iloc[0], rtol=1e-12)
    # one --layer is compared here: the engine options are refused, with exit status 2
    assert main(["compare", str(checkpoint), "--layer", "model.layers.0.attn.weight", "--engine", "dask",
                 "--out", str(tmp_path / "one")]) == 2


def test_large_tensors_are_tasks_of_their_own_and_small_ones_share_one():
    side = 1024  # 8 MiB in float64: GROUP_BYTES
    tensors = [("embed", (32000, side)), ("norm.0", (side,)), ("q.0", (side, side)), ("small.0", (64, 32)),
               ("up.0", (2816, side)), ("norm.1", (side,)), ("small.1", (32, 64)), ("q.0", (side, side))]
    groups = plan_groups(tensors)
    assert [g.names for g in groups] == [("embed",), ("up.0",), ("q.0",), ("norm.0", "small.0", "norm.1", "small.1")]
    assert [g.cost for g in groups] == sorted((g.cost for g in groups), reverse=True)  # costliest first
    packed = plan_groups([(f"t.{i}", (256, 256)) for i in range(40)])  # 0.5 MiB each: 16 to a task
    assert [len(g.names) for g in packed] == [16, 16, 8]
    assert all(8 * sum(256 * 256 for _ in g.names) <= GROUP_BYTES for g in packed)
    assert TensorGroup(("a", "b"), ((4, 4), (8, 2))).split() == [TensorGroup(("a",), ((4, 4),)),
                                                                   TensorGroup(("b",), ((8, 2),))]


def test_the_listing_is_that_of_the_local_reading_with_its_errors(checkpoint):
    listed = list_tensors(checkpoint)
    assert len(listed) == N_BIG + 3 and listed[0][1] == BIG
    assert dict(listed)["model.layers.0.norm.weight"] == (64,)
    with pytest.raises(InputError, match="no tensors match"):
        list_tensors(checkpoint, layers="decoder.*")
    with pytest.raises(InputError, match="not found"):
        list_tensors(checkpoint, layers=["model.layers.9.mlp.weight"])


def test_a_task_of_norms_alone_gives_their_skipped_rows(checkpoint):
    """A task holds whatever tensors were packed together, which may hold no weight: the checkpoint as a whole was
    checked when it was listed."""
    (norm,) = group_spectra(str(checkpoint), ["model.layers.0.norm.weight"], None, "host")
    assert norm.status == names.STATUS_SKIPPED and "1-D" in norm.reason
    spectra = group_spectra(str(checkpoint), ["model.layers.0.attn.weight"], 3, "auto")  # and its shuffled copy
    assert [s.randomized for s in spectra] == [False, True] and spectra[0].M == 64


def test_an_engine_needs_a_path_and_a_scheduler_needs_dask(checkpoint, tmp_path):
    with pytest.raises(InputError, match="needs engine='dask'"):
        analyze(checkpoint, tmp_path / "a", scheduler="tcp://127.0.0.1:1")
    with pytest.raises(InputError, match="in memory"):
        analyze({"w": np.ones((32, 32))}, None, engine="dask")
    with pytest.raises(InputError, match="unknown engine"):
        analyze(checkpoint, tmp_path / "b", engine="ray")
