"""Training-loop callbacks that record a run with a `hteval.tracker.Tracker`, one module per framework:
`hteval.callbacks.hf` (Hugging Face Trainer), `hteval.callbacks.lightning` (Lightning) and `hteval.callbacks.keras`
(Keras 3). Each imports its framework when it is imported; this package imports none.

Every callback records the step at which training starts, then every `every` optimizer steps (by default at the
framework's own cadence: the Trainer's logging steps, each epoch's end in Lightning and Keras), and the last step,
after which it draws the dynamics view (`Tracker.close`). Steps are optimizer steps as the framework counts them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hteval import names
from hteval.errors import InputError


def tracker_for(out: Any, models: Sequence[str] = (names.DEFAULT_MODEL,), layers=None,
                options: dict[str, Any] | None = None):
    """A callback's tracker: `out` itself when it is a Tracker, else a Tracker writing to the folder `out`."""
    from hteval.tracker import Tracker

    if isinstance(out, Tracker):
        if options or layers is not None or tuple(models) != (names.DEFAULT_MODEL,):
            raise InputError("give the tracker's models, layers and options to the Tracker, not to the callback")
        return out
    if not isinstance(out, (str, Path)):
        raise InputError(f"a callback records into a folder or a Tracker, not a {type(out).__qualname__}")
    return Tracker(out, models, layers, **(options or {}))


def checked_every(every: Any) -> int | None:
    """A callback's `every`: None (the framework's cadence) or a positive number of optimizer steps."""
    if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
        raise InputError(f"every must be a positive number of steps or None, not {every!r}")
    return every


__all__ = ["checked_every", "tracker_for"]
