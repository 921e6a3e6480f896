"""Many checkpoints of a training run -> one table indexed by checkpoint and layer, run here or on Dask.

One task per checkpoint: `analyze` over that checkpoint into DIR/checkpoints/NAME/ (its own resumable
layers.csv, per-layer files and report), then its rows, with the checkpoint's name and step in front, are appended
to DIR/checkpoints.csv by this process as each task finishes. A checkpoint whose task finished leaves a marker
file, so a second run over the same DIR neither resubmits it nor duplicates its rows; a checkpoint cut short is
resumed by its own analyze. At the end the training-dynamics view is drawn (`hteval.report.dynamics`).

engine="local" deals whole checkpoints to `workers` spawned processes on this machine (a lone checkpoint gets
analyze's own worker processes instead); each task's analyze runs with one process (the pool is the parallelism),
and its worker keeps its compiled programs for the next checkpoint. engine="dask" spreads (checkpoint, layer) over
a Dask cluster: the scheduler at `scheduler` ("tcp://host:8786"), or else a LocalCluster of `workers`
single-threaded processes bound to 127.0.0.1. Each tensor's singular values are a task that reads the tensor from
the checkpoint's path on its worker (`hteval.dask_layers`), and this process analyzes the checkpoints in step order,
fitting and writing every row itself, while the next checkpoints' tasks run; the workers must see the checkpoints
at the same paths, and never write. The run holds DIR's lock (`hteval.run_lock`) and each checkpoint's analyze the
lock of its own folder, so a second run on DIR is refused while this one goes on.

Each layer's random key depends on the seed and the layer's name only, so a checkpoint's rows are the same
whichever engine or worker computed them (tests/test_checkpoints.py checks the Dask run against the local one).
"""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import pandas as pd

from hteval import names
from hteval.errors import InputError, OutputError
from hteval.interrupts import setup_worker, stop_pool
from hteval.io.checkpoint_set import Checkpoint, checkpoint_set
from hteval.network_analysis import LAYER_TABLE, analyze, finished_layers, read_layer_table, table_columns
from hteval.parallel import apply_jax_options, jax_options, worker_count
from hteval.report.dynamics import write_dynamics
from hteval.rowfile import RowFile, in_order, read_table
from hteval.run_identity import check, claiming, run_identity, widened, with_defaults
from hteval.run_lock import holding, writing_to
from hteval.run_restart import restartable

logger = logging.getLogger(__name__)

CHECKPOINT_TABLE = "checkpoints.csv"
CHECKPOINT_DIR = "checkpoints"
ENGINES = ("local", "dask")
_FINISHED = ".finished"


@restartable
def analyze_checkpoints(spec, out: str | Path, models: Sequence[str] = (names.DEFAULT_MODEL,), layers=None, *,
                        engine: str = "local", scheduler: str | None = None, workers: int | None = None,
                        on_checkpoint: Callable[[Checkpoint, int, int], None] | None = None,
                        restart: bool = False, **options: Any) -> pd.DataFrame:
    """Analyze every checkpoint of `spec` (a directory, glob, list file or list of paths: `checkpoint_set`);
    returns DIR/checkpoints.csv in step order. `options` go to `analyze` (prob, seed, chains, draws, warmup,
    max_draws, randomize, hierarchical, figures). on_checkpoint(checkpoint, done, total) is called as each
    checkpoint's rows are written.

    DIR records the models and options of its run (`hteval.run_identity`), and each checkpoint's sub-folder the
    checkpoint's fingerprint: a run with other options, or over a checkpoint whose content changed since its
    sub-folder was written, is refused before anything is written; restart=True replaces DIR's run
    (`hteval.run_restart`). Checkpoints may come and go between runs: the rows of those no longer in `spec` stay."""
    if engine not in ENGINES:
        raise InputError(f"unknown engine {engine!r}; choose from {', '.join(ENGINES)}")
    if scheduler is not None and engine != "dask":
        raise InputError("a scheduler address needs engine='dask'")
    out = Path(out)
    checkpoints = checkpoint_set(spec)
    rows = RowFile(out / CHECKPOINT_TABLE, [names.CHECKPOINT, names.STEP, *table_columns(models)],
                   key=(names.CHECKPOINT, names.NAME, names.MODEL, names.RANDOMIZED))
    number_options = with_defaults(options)
    identity = run_identity("checkpoints", None, models, layers, **number_options)
    # its checkpoints' analyze runs hold their own sub-folders
    with holding(out, rows), claiming(out, identity, rows) as earlier:
        _check_checkpoint_folders(out, checkpoints, models, layers, number_options)
        done = rows.finished()
        # a wider layer filter: the finished checkpoints resume too, to add the newly selected layers
        pending = [c for c in checkpoints
                   if widened(earlier, identity) or not (_checkpoint_dir(out, c) / _FINISHED).exists()]
        workers = worker_count(workers)
        task = (tuple(models), layers, options, jax_options())
        with rows.appending() as write:
            count = 0

            def gather(checkpoint: Checkpoint, records: list[dict[str, Any]]) -> None:
                nonlocal count
                for record in records:
                    row = {names.CHECKPOINT: checkpoint.name, names.STEP: checkpoint.step, **record}
                    if rows.key_of(row) not in done:
                        write(row)
                        done.add(rows.key_of(row))
                count += 1  # per checkpoint, not per row as the Writer counts
                if on_checkpoint is not None:
                    on_checkpoint(checkpoint, count, len(checkpoints))

            for checkpoint in checkpoints:  # finished earlier: only make sure the gathered table has its rows
                if checkpoint not in pending:
                    gather(checkpoint, _layer_records(_checkpoint_dir(out, checkpoint)))
            if engine == "dask":
                _run_on_dask(pending, out, task, scheduler, workers, gather)
            elif workers > 1 and len(pending) > 1:
                _run_in_processes(pending, out, task, workers, gather)
            else:  # one checkpoint: analyze's own worker processes share out its layers
                for checkpoint in pending:
                    gather(checkpoint, _run_one(checkpoint, out, *task, workers))
        table = in_order(read_table(rows.path, bool_columns=(names.RANDOMIZED,)), names.CHECKPOINT,
                         [c.name for c in checkpoints])
        if not table.empty:
            write_dynamics(table, out)
        return table


def _check_checkpoint_folders(out: Path, checkpoints: list[Checkpoint], models, layers,
                              number_options: dict[str, Any]) -> None:
    """Refuse (RunMismatchError) where a checkpoint's sub-folder holds a run of other content than the checkpoint
    has now, before any checkpoint's task starts (a task's own refusal would be that checkpoint's error row)."""
    for checkpoint in checkpoints:
        folder = _checkpoint_dir(out, checkpoint)
        if not folder.is_dir():
            continue
        try:
            identity = run_identity("analyze", checkpoint.path, models, layers, **number_options)
        except InputError:  # unreadable now: its task gives its error row
            continue
        check(folder, identity, RowFile(folder / LAYER_TABLE, table_columns(models),
                                        key=(names.NAME, names.MODEL, names.RANDOMIZED)))


def _run_one(checkpoint: Checkpoint, out: Path, models, layers, options, jax_settings,
             workers: int) -> list[dict[str, Any]]:
    """One checkpoint's analyze; its rows, or one error row when the checkpoint cannot be read at all.
    (All arguments positional: Dask's submit takes `workers=` as its own.)"""
    apply_jax_options(jax_settings)  # a Dask worker is a fresh process
    folder = _checkpoint_dir(out, checkpoint)
    try:
        table = analyze(checkpoint.path, folder, models, layers, workers=workers, **options)
    except OutputError:
        raise  # the output folder, not the checkpoint: the whole run stops (and resumes from here)
    except InputError as err:
        logger.warning("%s: %s", checkpoint.name, err)
        return [{names.STATUS: names.STATUS_ERROR, names.ERROR: " ".join(str(err).split())}]
    with writing_to(folder):
        (folder / _FINISHED).touch()
    return _records(table)


def _run_in_processes(pending: list[Checkpoint], out: Path, task: tuple, workers: int,
                      gather: Callable[[Checkpoint, list[dict[str, Any]]], None]) -> None:
    """Whole checkpoints dealt to `workers` spawned processes that live through the run, so each compiles a
    layer shape once rather than once per checkpoint (benchmarks/bench_checkpoints.py: 3.7x faster than
    analyze's per-checkpoint workers on 8 small checkpoints)."""
    context = multiprocessing.get_context("spawn")  # JAX's threads do not survive a fork
    # the workers ignore Ctrl-C and end with this process (`hteval.interrupts.setup_worker`)
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=setup_worker) as pool:
        futures = {pool.submit(_run_one, c, out, *task, 1): c for c in pending}
        try:
            for future in as_completed(futures):
                _gather_outcome(futures[future], future, gather)
        except KeyboardInterrupt:
            stop_pool(pool)  # interrupted: no checkpoint goes on (each resumes from its own rows)
            raise
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)  # a full disk fails them all: start no more
            raise


def _gather_outcome(checkpoint: Checkpoint, future, gather) -> None:
    """A finished task's rows, or one error row when its worker raised or died: the run goes on. (A
    concurrent.futures and a Dask future alike: exception() is None after a success.)"""
    error = future.exception()
    if error is None:
        gather(checkpoint, future.result())
        return
    if isinstance(error, OutputError):
        raise error
    logger.warning("%s: %s", checkpoint.name, error)
    gather(checkpoint, [{names.STATUS: names.STATUS_ERROR,
                         names.ERROR: f"{type(error).__name__}: {' '.join(str(error).split())}"}])


def _run_on_dask(pending: list[Checkpoint], out: Path, task: tuple, scheduler: str | None, workers: int,
                 gather: Callable[[Checkpoint, list[dict[str, Any]]], None]) -> None:
    """Each checkpoint analyzed here in step order, its singular values computed on the cluster one task per tensor
    or group of small tensors (`hteval.dask_layers`). The next checkpoints' tasks are submitted while this one's
    are fitted, up to twice the cluster's threads of them, so that the workers do not wait between checkpoints and
    the scheduler does not hold the tasks of a whole long run at once."""
    from hteval.dask_layers import layer_cluster

    if not pending:
        return
    models, layers, options, _ = task
    with layer_cluster(scheduler, workers) as cluster:
        for i, checkpoint in enumerate(pending):
            # this checkpoint first: tasks submitted earlier run first
            for later in pending[i:]:
                if cluster.waiting >= 2 * cluster.threads:
                    break
                _prefetch(cluster, later, out, models, layers, options)
            gather(checkpoint, _run_one(checkpoint, out, models, layers,
                                        {**options, "engine": "dask", "scheduler": cluster}, {}, workers))


def _prefetch(cluster, checkpoint: Checkpoint, out: Path, models, layers, options: dict[str, Any]) -> None:
    """Submit a checkpoint's tasks ahead of its analyze, with the request analyze will make (the defaults of
    analyze's seed and svd; a request that differs only costs the work done ahead)."""
    folder = _checkpoint_dir(out, checkpoint)
    randomize = bool(options.get("randomize"))
    try:
        rows = RowFile(folder / LAYER_TABLE, table_columns(models), key=(names.NAME, names.MODEL, names.RANDOMIZED))
        finished = finished_layers(rows.finished(), rows, models, randomize)
    except (InputError, KeyError):  # models analyze resolves itself ("auto"), a table of other models: read all
        finished = set()
    try:
        cluster.prefetch(checkpoint.path, layers=layers, randomize=options.get("seed", 0) if randomize else None,
                         svd=options.get("svd", "auto"), finished=finished)
    except InputError:
        pass  # an unreadable checkpoint: its analyze gives its error row


def _checkpoint_dir(out: Path, checkpoint: Checkpoint) -> Path:
    return out / CHECKPOINT_DIR / checkpoint.name.replace("/", "__")


def _layer_records(folder: Path) -> list[dict[str, Any]]:
    return _records(read_layer_table(folder / LAYER_TABLE))


def _records(table: pd.DataFrame) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if not (isinstance(v, float) and v != v)} for row in
            table.to_dict("records")]


__all__ = ["CHECKPOINT_TABLE", "ENGINES", "analyze_checkpoints"]
