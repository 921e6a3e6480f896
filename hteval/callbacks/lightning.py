"""A Lightning (`lightning.pytorch`) callback that records the run with a `hteval.tracker.Tracker`.

    trainer = lightning.pytorch.Trainer(..., callbacks=[TrackerCallback("runs/hteval")])

Steps are `trainer.global_step` (optimizer steps). Only the global-zero process records in a distributed run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lightning.pytorch import Callback

from hteval import names
from hteval.callbacks import checked_every, tracker_for


class TrackerCallback(Callback):
    """Records the LightningModule at the start of training, at the end of every training epoch (or, with
    `every`, every that many steps instead) and at the end, then draws the dynamics view. `out` is a folder or a
    Tracker; models, layers and options are the Tracker's."""

    def __init__(self, out: Any, models: Sequence[str] = (names.DEFAULT_MODEL,), layers=None, *,
                 every: int | None = None, **options: Any):
        self.tracker = tracker_for(out, models, layers, options)
        self.every = checked_every(every)

    def on_train_start(self, trainer, pl_module) -> None:
        self._record(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # with gradient accumulation several batches share a step: the tracker records it once
        if self.every is not None and trainer.global_step % self.every == 0:
            self._record(trainer, pl_module)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.every is None:
            self._record(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        self._record(trainer, pl_module)
        if trainer.is_global_zero:
            self.tracker.close()

    def _record(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            self.tracker.update(trainer.global_step, pl_module)


__all__ = ["TrackerCallback"]
