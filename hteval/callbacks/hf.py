"""A Hugging Face `transformers.Trainer` callback that records the run with a `hteval.tracker.Tracker`.

    trainer = Trainer(model, args, ..., callbacks=[TrackerCallback("runs/hteval")])

Steps are `state.global_step` (optimizer steps). Only the main process records in a distributed run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from transformers import TrainerCallback

from hteval import names
from hteval.callbacks import checked_every, tracker_for


class TrackerCallback(TrainerCallback):
    """Records the model at the start of training, every `every` steps (None: every `logging_steps`, the
    Trainer's own cadence) and at the end, then draws the dynamics view. `out` is a folder or a Tracker;
    models, layers and options are the Tracker's."""

    def __init__(self, out: Any, models: Sequence[str] = (names.DEFAULT_MODEL,), layers=None, *,
                 every: int | None = None, **options: Any):
        self.tracker = tracker_for(out, models, layers, options)
        self.every = checked_every(every)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._record(state, model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        # the Trainer turns a fractional logging_steps into steps before training starts
        every = self.every or max(1, int(state.logging_steps or 1))
        if state.global_step % every == 0:
            self._record(state, model)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self._record(state, model)
        if state.is_world_process_zero:
            self.tracker.close()

    def _record(self, state, model) -> None:
        if state.is_world_process_zero and model is not None:
            self.tracker.update(state.global_step, model)


__all__ = ["TrackerCallback"]
