"""Per-layer ESD figures drawn in a worker process while the fitting process goes on.

On the exact path of `hteval analyze` a layer's fit costs about as much as its figure, so drawing the figures in a
second process (one more core) takes them off the critical path. The worker comes from a fork server
(`multiprocessing`'s "forkserver" context), so it never inherits the parent's threads, and the parent does not
wait for it: the worker imports the figure code on its first figure while the parent reads its first tensors.
Only what a figure needs crosses to it: the record, the eigenvalues and a few dozen parameter draws. Models whose
ESD density needs JAX are drawn in this process instead. A run that is interrupted ends the worker at once: the
figures still queued are not drawn, and their layers' rows are kept.
"""

from __future__ import annotations

import logging
import multiprocessing
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from hteval.interrupts import setup_worker, stop_pool

logger = logging.getLogger(__name__)

#: models whose ESD figure the worker draws (its density is numpy's: `hteval.special.onepoint`)
IN_WORKER = frozenset({"htmp", "htmp-exact"})
#: figures queued at most; beyond that this process draws the next one itself, so that neither process waits for
#: the other at the end of a run (the worker starts later and draws at about this process's pace)
MAX_BACKLOG = 3


class BackgroundFigures:
    """A callable draw(result, path) that queues the ESD figure for the worker; `close()` waits for them all."""

    def __init__(self):
        # the worker ignores Ctrl-C and ends with this process (`hteval.interrupts.setup_worker`)
        self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("forkserver"),
                                         initializer=setup_worker)
        # start the worker now, and have it import the figure code before the first figure arrives
        self._warm_up = self._pool.submit(_warm_up)
        self._pending: list[tuple[str, dict, Future]] = []

    def __call__(self, result, path: Path) -> None:
        from hteval.report.figures import ESD_DRAWS, plot_esd

        if result.model in IN_WORKER and self._pool is not None and self._backlog() < MAX_BACKLOG:
            payload = _payload(result, ESD_DRAWS)
            try:
                self._pending.append((str(path), payload, self._pool.submit(_draw, payload, str(path))))
                return
            except BrokenProcessPool as err:  # the worker could not start or died: draw here from now on
                logger.warning("figure worker stopped (%s); drawing the figures in this process", err)
                self._pool = None
        plot_esd(result, path, prob=result.prob)

    def _backlog(self) -> int:
        return sum(not future.done() for _, _, future in self._pending[-2 * MAX_BACKLOG:])

    def close(self) -> None:
        """Wait for every queued figure; one the worker could not draw is drawn here if it can be, else logged
        (its row is written either way)."""
        for path, payload, future in self._pending:
            if future.exception() is None:
                continue
            try:
                _draw(payload, path)
            except Exception as err:  # noqa: BLE001 - a figure never stops a run
                logger.warning("%s: figure not drawn: %s", Path(path).name, " ".join(str(err).split()))
        if self._pool is not None:
            self._pool.shutdown()

    def __enter__(self) -> BackgroundFigures:
        return self

    def __exit__(self, kind, *exc) -> None:
        if kind is not None and issubclass(kind, KeyboardInterrupt) and self._pool is not None:
            stop_pool(self._pool)  # the run was stopped: the figures not drawn yet are dropped, none waited for
        else:
            self.close()


def _payload(result, draws: int) -> dict:
    """What plot_esd reads of a FitResult, with its draws thinned as plot_esd would thin them."""
    flat = {k: np.asarray(result.draws[k], dtype=np.float64).reshape(-1) for k in ("kappa", "scale")}
    index = np.unique(np.linspace(0, flat["kappa"].size - 1, min(draws, flat["kappa"].size)).astype(int))
    return {"model": result.model, "record": result.record, "prob": result.prob,
            "eigenvalues": np.asarray(result.layer.eigenvalues), "draws": {k: v[index] for k, v in flat.items()}}


def _warm_up() -> None:
    import hteval.report.figures  # noqa: F401


def _draw(payload: dict, path: str) -> None:
    from hteval.report.figures import plot_esd

    result = SimpleNamespace(model=payload["model"], record=payload["record"], prob=payload["prob"],
                             draws=payload["draws"], layer=SimpleNamespace(eigenvalues=payload["eigenvalues"]))
    plot_esd(result, Path(path), prob=payload["prob"])
