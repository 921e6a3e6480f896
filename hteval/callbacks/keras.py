"""A Keras 3 callback that records the run with a `hteval.tracker.Tracker`.

    model.fit(x, y, epochs=10, callbacks=[TrackerCallback("runs/hteval")])

Steps are the optimizer's iterations (gradient updates), as in the Trainer and Lightning callbacks, not epochs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from hteval import names
from hteval.callbacks import checked_every, tracker_for


class TrackerCallback(keras.callbacks.Callback):
    """Records the model at the start of training, at the end of every epoch (or, with `every`, every that many
    steps instead) and at the end, then draws the dynamics view. `out` is a folder or a Tracker; models, layers
    and options are the Tracker's."""

    def __init__(self, out: Any, models: Sequence[str] = (names.DEFAULT_MODEL,), layers=None, *,
                 every: int | None = None, **options: Any):
        super().__init__()
        self.tracker = tracker_for(out, models, layers, options)
        self.every = checked_every(every)
        self._epoch_start = self._last = 0

    def on_train_begin(self, logs=None) -> None:
        self._last = self._iterations()
        self.tracker.update(self._last, self.model)

    def on_epoch_begin(self, epoch, logs=None) -> None:
        if self.every is not None:
            self._epoch_start = self._iterations()

    def on_train_batch_end(self, batch, logs=None) -> None:
        if self.every is None:
            return
        # counted here rather than read from the optimizer: on JAX, reading a variable mid-epoch copies the
        # training state back into the model. `batch` is the last batch of its execution (steps_per_execution),
        # as if the epoch's last execution were whole
        step = self._epoch_start + min(batch + 1, self.params.get("steps") or batch + 1)
        if step // self.every > self._last // self.every:
            self._last = self._iterations()
            self.tracker.update(self._last, self.model)

    def on_epoch_end(self, epoch, logs=None) -> None:
        if self.every is None:
            self.tracker.update(self._iterations(), self.model)

    def on_train_end(self, logs=None) -> None:
        self.tracker.update(self._iterations(), self.model)
        self.tracker.close()

    def _iterations(self) -> int:
        # the variable's backend value: converting the variable itself trips numpy 2's copy-keyword deprecation
        return int(keras.ops.convert_to_numpy(self.model.optimizer.iterations.value))


__all__ = ["TrackerCallback"]
