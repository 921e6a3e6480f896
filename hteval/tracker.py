"""A training run followed as it trains: each recorded step's layers fitted and appended to the table that
`hteval.checkpoints.analyze_checkpoints` writes for saved checkpoints, with the same training-dynamics view.

`Tracker(out).update(step, model)` fits every layer of `model` (a torch nn.Module, a JAX pytree, a Keras 3 model,
a dict of arrays or a checkpoint path) with `hteval.network_analysis.analyze` and appends the rows, with the
checkpoint name `step_S` and the step S in front, to out/checkpoints.csv: the columns and key of
analyze_checkpoints, and the name it gives a saved `step_S.safetensors`, so a tracked run and a run of saved
checkpoints give the same table. The file is appended one flushed line at a time; a Tracker made again on the same
folder (after a crash, or in a resumed training run) knows the steps recorded there and fits them no more.

An update at the defaults (exact htmp, milliseconds a layer) costs the singular values, the fits and a few small
file writes: docs/tracker.md has the measured figures. Drawing the dynamics view (matplotlib) costs several
updates' time, so it is drawn by `plot()`, by `close()` and on leaving a `with` block, and during training at most
once per `plot_every` seconds, at the first update after they have passed.

Each step is analyzed into out/checkpoints/step_S/ (its layers.csv and each fit's json and draws, as
analyze_checkpoints keeps per checkpoint). keep="last" (the default) removes a step's folder once the next step
is recorded, so the latest fits stay at hand and the folders do not pile up; keep="all" keeps every step's,
keep="none" none. A folder is marked finished once its rows are in the table: a step whose folder is found
unfinished was cut short and is fitted again from the start.

A Tracker holds out/'s lock (`hteval.run_lock`) from its first update until close(), so a second Tracker or run
on the same folder is refused meanwhile; it reads the table again whenever it takes the lock. Making a Tracker
takes no lock: a training script run on several processes makes one in each, and only one of them records.
An update stopped by a KeyboardInterrupt keeps the rows appended so far; leaving a `with` block that way releases
the lock without drawing the dynamics view.

out/run.json records the models and options that change the numbers (`hteval.run_identity`): a Tracker with other
settings is refused on that folder when it is made, before training starts. A wider layer filter goes on; the
steps recorded before keep the layers they had, since their weights are gone.
"""

from __future__ import annotations

import logging
import numbers
import re
import shutil
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from hteval import names
from hteval.checkpoints import CHECKPOINT_DIR, CHECKPOINT_TABLE
from hteval.errors import InputError
from hteval.models import MODELS
from hteval.network_analysis import analyze, auto_models, table_columns
from hteval.report.dynamics import write_dynamics
from hteval.rowfile import RowFile, read_table
from hteval.run_identity import check, claim, run_identity, with_defaults
from hteval.run_lock import RunLock, writing_to

logger = logging.getLogger(__name__)

KEEP = ("last", "all", "none")
#: seconds between drawings of the dynamics view during training (a drawing costs several updates' time)
PLOT_EVERY = 60.0
#: analyze's options that differ for a tracker: no per-step figures or report, and exact fits in this process, so
#: that the NUTS models' compiled programs are reused from one update to the next
DEFAULTS = {"figures": False, "report": False, "workers": 1}
_FINISHED = ".finished"  # the marker analyze_checkpoints leaves in a checkpoint's finished folder too
_NAME = re.compile(r"step_(\d+)")
#: what a Tracker refused a folder that holds another run can do (a tracked run cannot be redone by --restart)
OTHER_FOLDER = "choose another folder, or delete this one to start again"


class Tracker:
    """Fits a model's layers at the training steps it is given and gathers them into out/checkpoints.csv.

    models, layers and options (prob, seed, chains, draws, randomize, figures, ...) are analyze's. every: only
    steps that are multiples of it are recorded. keep: which steps' per-layer files stay on disk ("last", "all"
    or "none"; see the module docstring). plot_every: seconds between drawings of the dynamics view during
    training (None: only by plot() and close()). Use it as a context manager, or call close() at the end.
    """

    def __init__(self, out: str | Path, models: Sequence[str] = (names.DEFAULT_MODEL,), layers=None, *,
                 every: int = 1, keep: str = "last", plot_every: float | None = PLOT_EVERY, **options: Any):
        if not isinstance(every, numbers.Integral) or every < 1:
            raise InputError(f"every must be a positive integer, not {every!r}")
        if keep not in KEEP:
            raise InputError(f"keep must be one of {', '.join(KEEP)}, not {keep!r}")
        if models == names.AUTO_MODELS or list(models) == [names.AUTO_MODELS]:
            models = auto_models()
        unknown = [m for m in models if m not in MODELS]
        if unknown or not models:
            raise InputError(f"unknown model(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(MODELS)}")
        self.out, self.models, self.layers = Path(out), tuple(models), layers
        self.every, self.keep, self.plot_every = int(every), keep, plot_every
        self.options = {**DEFAULTS, **options}
        self._rows = RowFile(self.out / CHECKPOINT_TABLE, [names.CHECKPOINT, names.STEP, *table_columns(self.models)],
                             key=(names.CHECKPOINT, names.NAME, names.MODEL, names.RANDOMIZED))
        # a folder of another run (other settings, `hteval.run_identity`) is refused here, before training starts,
        # and again under the lock at the first update
        self._identity = run_identity("tracker", None, self.models, layers, **with_defaults(self.options))
        check(self.out, self._identity, self._rows, OTHER_FOLDER)
        self._lock = RunLock(self.out)
        # released when the tracker is dropped unclosed: its process may go on for long after (a notebook)
        weakref.finalize(self, self._lock.release)
        self._read_state()
        self._drawn_at, self._new_rows = time.monotonic(), False

    @property
    def path(self) -> Path:
        """out/checkpoints.csv."""
        return self._rows.path

    @property
    def steps(self) -> list[int]:
        """The steps recorded so far, this run's and earlier runs', in order."""
        return sorted(int(m[1]) for m in map(_NAME.fullmatch, self._recorded) if m)

    @property
    def table(self) -> pd.DataFrame:
        """checkpoints.csv in step order (rows in the order written within a step)."""
        table = read_table(self.path, bool_columns=(names.RANDOMIZED,))
        if table.empty:
            return table
        return table.sort_values(names.STEP, kind="stable", na_position="last").reset_index(drop=True)

    def recorded(self, step: int) -> bool:
        """Whether `step` is in the table already."""
        return checkpoint_name(step) in self._recorded

    def due(self, step: int) -> bool:
        """Whether update(step, ...) would fit: a multiple of `every` not recorded yet."""
        return int(step) % self.every == 0 and not self.recorded(step)

    def update(self, step: int, model: Any) -> pd.DataFrame | None:
        """Fit the layers of `model` at training step `step` and append their rows; returns them, or None when the
        step is not recorded (not a multiple of `every`) or was recorded before (nothing is fitted)."""
        step = _checked_step(step)
        self._hold()
        if not self.due(step):
            return None
        name = checkpoint_name(step)
        folder = self.out / CHECKPOINT_DIR / name
        with writing_to(self.out, self._rows):
            if folder.exists():  # cut short by an earlier run: its rows may come from other weights
                shutil.rmtree(folder)
            rows = analyze(model, folder, self.models, self.layers, **self.options)
            rows.insert(0, names.STEP, step)
            rows.insert(0, names.CHECKPOINT, name)
            self._append(rows)
            (folder / _FINISHED).touch()
            self._recorded.add(name)
            self._tidy(folder)
            self._new_rows = True
            if self.plot_every is not None and time.monotonic() - self._drawn_at >= self.plot_every:
                self.plot()
        return rows

    def plot(self) -> list[Path]:
        """Draw the training-dynamics view now (dynamics.csv, dynamics.md, dynamics_<parameter>_<model>.png in
        `out`); returns the paths written (none while nothing is recorded)."""
        self._drawn_at, self._new_rows = time.monotonic(), False
        table = self.table
        with writing_to(self.out, self._rows):
            return write_dynamics(table, self.out) if not table.empty else []

    def close(self) -> None:
        """Draw the dynamics view if rows came since the last drawing, and release out/ to other runs. The tracker
        stays usable: its next update takes the folder again."""
        try:
            if self._new_rows:
                self.plot()
        finally:
            self._lock.release()

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, kind, *exc) -> None:
        if kind is not None and issubclass(kind, KeyboardInterrupt):
            self._lock.release()  # stopped: no drawing (seconds) on the way out; the next close() or plot() draws
        else:
            self.close()

    def __repr__(self) -> str:
        steps = self.steps
        span = f"steps {steps[0]}..{steps[-1]}" if steps else "no steps"
        return f"Tracker({str(self.out)!r}, models={list(self.models)}, {len(steps)} recorded, {span})"

    def _hold(self) -> None:
        """Take out/'s lock unless held; the table is read again under it (another run may have added steps)."""
        if not self._lock.held:
            self._lock.acquire()
            try:
                claim(self.out, self._identity, self._rows, OTHER_FOLDER)
            except BaseException:
                self._lock.release()
                raise
            self._read_state()

    def _read_state(self) -> None:
        self._written = self._rows.finished()
        self._recorded = {key[0] for key in self._written} - self._unfinished()
        # folders of earlier runs' steps, which keep="last" or "none" removes at this run's first recorded step
        self._stale = [] if self.keep == "all" else self._finished_folders()

    def _append(self, rows: pd.DataFrame) -> None:
        with self._rows.appending() as write:
            for row in rows.to_dict("records"):  # NaN cells are written empty, as analyze_checkpoints leaves them
                key = self._rows.key_of(row)
                if key not in self._written:
                    write(row)
                    self._written.add(key)

    def _tidy(self, folder: Path) -> None:
        """Remove the folders `keep` does not keep, once `folder` (this step's) is finished."""
        if self.keep == "all":
            return
        for stale in self._stale:
            shutil.rmtree(stale, ignore_errors=True)
        self._stale = [folder] if self.keep == "last" else []
        if self.keep == "none":
            shutil.rmtree(folder)

    def _unfinished(self) -> set[str]:
        """Steps whose folder exists without the finished marker: cut short between fitting and marking."""
        return {p.name for p in self._step_folders() if not (p / _FINISHED).exists()}

    def _finished_folders(self) -> list[Path]:
        return [p for p in self._step_folders() if (p / _FINISHED).exists()]

    def _step_folders(self) -> list[Path]:
        root = self.out / CHECKPOINT_DIR
        if not root.is_dir():
            return []
        return sorted(p for p in root.iterdir() if p.is_dir() and _NAME.fullmatch(p.name))


def checkpoint_name(step: int) -> str:
    """The checkpoint column of a tracked step: the name analyze_checkpoints gives a saved step_S checkpoint."""
    return f"step_{int(step)}"


def _checked_step(step: Any) -> int:
    if isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 0:
        raise InputError(f"a training step is a non-negative integer, not {step!r}")
    return int(step)


__all__ = ["KEEP", "PLOT_EVERY", "Tracker", "checkpoint_name"]
