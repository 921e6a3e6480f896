"""A whole-model run's fits spread over worker processes, their rows gathered by the one process that writes.

XLA compiles and NUTS samples a 384-eigenvalue layer on about one core, so on a multi-core machine the groups of
same-program fits (`hteval.schedule`) run side by side in worker processes: on this 2-core CPU the 39 MiniLM
layers take ~1.5x less wall time with 2 workers than with one process. Workers are spawned, not forked (JAX's
threads do not survive a fork), get JAX's float64 and compilation-cache settings from the parent, and send back
("start", layer, model) before each fit and ("row", row) after it; only the parent writes layers.csv, so a
run stays resumable exactly as a single-process one. Each layer's random key depends on the seed and its name
only, so which worker fitted it does not change its numbers.

A worker that dies (killed, out of memory) does not take the run with it: the parent fits what it left in its
own process afterwards. A run that is stopped (KeyboardInterrupt, or SIGTERM under the command line) ends its
workers at once; a worker ignores SIGINT, which a Ctrl-C sends to the whole process group, and ends when its parent
does (`hteval.interrupts`).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from hteval.interrupts import setup_worker, stop_processes
from hteval.schedule import partition

logger = logging.getLogger(__name__)

#: default cap on worker processes: each holds its own compiled programs (~0.5-1 GB)
MAX_WORKERS = 4
#: JAX settings a worker copies from the parent process
_JAX_OPTIONS = ("jax_enable_x64", "jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")


def worker_count(workers: int | None) -> int:
    """`workers`, or by default the CPU count capped at MAX_WORKERS."""
    return min(os.cpu_count() or 1, MAX_WORKERS) if workers is None else workers


#: where a row carries its FitResult to this process (a run without an output folder keeps its results)
RESULT_KEY = "_result"


def run_tasks(tasks: Sequence[tuple[Any, str]], fit_row: Callable[..., dict], args: tuple, *, workers: int,
              on_start: Callable[[str, str], None], on_row: Callable[[dict], None]) -> None:
    """fit_row(item, model, *args) -> row for every (item, model) task, over up to `workers` processes (1: here).

    fit_row must be a module-level function (workers import it by name). on_start and on_row run in this process,
    in the order messages arrive.
    """
    bins = partition(tasks, workers)
    if len(bins) <= 1:
        for item, model in (t for b in bins for t in b):
            on_start(item.name, model)
            on_row(fit_row(item, model, *args))
        return
    context = multiprocessing.get_context("spawn")
    # one pipe per worker, not a Queue: nothing to wait for or leak when the run is stopped (a Queue has a feeder
    # thread and named semaphores), and a worker that dies is an end of file here
    pipes = [context.Pipe(duplex=False) for _ in bins]
    options = jax_options()
    processes = [context.Process(target=_work, args=(i, b, fit_row, args, options, pipes[i][1]), daemon=True)
                 for i, b in enumerate(bins)]
    received = [0] * len(bins)
    try:
        for process, (_, writer) in zip(processes, pipes, strict=True):
            process.start()
            writer.close()  # the worker holds the only write end now
        _gather({reader: i for i, (reader, _) in enumerate(pipes)}, received, on_start, on_row)
    except BaseException:
        stop_processes(processes)  # an error or an interrupt (KeyboardInterrupt, SIGTERM): no worker goes on
        raise
    finally:
        for reader, writer in pipes:
            reader.close()
            writer.close()
    for process in processes:
        process.join()
    for i, p in enumerate(processes):
        left = bins[i][received[i]:]
        if left:
            logger.warning("worker %d stopped (exit code %s) with %d fits left; fitting them here", i, p.exitcode,
                           len(left))
            run_tasks(left, fit_row, args, workers=1, on_start=on_start, on_row=on_row)


def jax_options() -> dict[str, Any]:
    """This process's float64 and compilation-cache settings, for a worker process to apply; none where JAX was
    never imported (the worker then reads the same environment that this process would have)."""
    if "jax" not in sys.modules:
        return {}
    import jax

    return {name: getattr(jax.config, name) for name in _JAX_OPTIONS}


def apply_jax_options(options: dict[str, Any]) -> None:
    if not options:
        return
    import jax

    for name, value in options.items():
        if value is not None:
            jax.config.update(name, value)


def _gather(readers: dict, received: list[int], on_start, on_row) -> None:
    """Messages from every worker's pipe as they come, until each has said it is done or has gone."""
    from multiprocessing.connection import wait

    while readers:
        for reader in wait(list(readers)):
            worker = readers[reader]
            try:
                kind, payload = reader.recv()
            except EOFError:  # the worker is gone (killed, out of memory): its fits left are done afterwards
                kind = "done"
            if kind == "start":
                on_start(*payload)
            elif kind == "row":
                received[worker] += 1
                on_row(payload)
            else:
                del readers[reader]


def _work(worker: int, tasks, fit_row, args, options, messages) -> None:
    setup_worker()
    apply_jax_options(options)
    for item, model in tasks:
        messages.send(("start", (item.name, model)))
        row = fit_row(item, model, *args)
        if RESULT_KEY in row:
            row[RESULT_KEY].data  # noqa: B018 (built here: what builds it on first access is a closure, not picklable)
        messages.send(("row", row))
    messages.send(("done", None))
