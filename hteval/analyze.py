"""Checkpoint -> every layer's posterior, one table row per (layer, model), written as each fit finishes.

A run is resumable: layers.csv is appended one complete, flushed line at a time, and a second run over the same
--out reads it back and fits only the (layer, model) pairs it lacks. A line cut short by a kill is dropped on
resume (its layer is fitted again); finished lines are never rewritten. A layer that cannot be fitted gets a row
with its status and error, and the run goes on.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hteval import names
from hteval.errors import HtevalError, InputError
from hteval.models import MODELS
from hteval.spectra import SkippedLayer, iter_spectra

logger = logging.getLogger(__name__)

LAYER_TABLE = "layers.csv"
LAYER_DIR = "layers"
#: interval bounds and centre reported per parameter in layers.csv: kappa_median, kappa_ci_low, kappa_ci_high
STATISTICS = ("median", "ci_low", "ci_high")
#: derived quantities reported beside a model's parameters when its posterior has them (SPEC section 3)
DERIVED = (names.TEMPERATURE,)


def table_columns(models: Sequence[str]) -> list[str]:
    """The columns of layers.csv for these models: record, model, per-parameter statistics, diagnostics."""
    parameters: list[str] = []
    for model in models:
        for p in (*MODELS[model].PARAMETERS, *DERIVED):
            if p not in parameters:
                parameters.append(p)
    return [*names.RECORD_FIELDS, names.MODEL, *[f"{p}_{s}" for p in parameters for s in STATISTICS],
            names.R_HAT, names.CONVERGED, names.DIVERGENCES, names.STATUS, names.ERROR, names.SECONDS]


def analyze(path: str | Path, out: str | Path, models: Sequence[str] = ("htmp",), layers=None, *, prob=0.9,
            seed=0, chains=2, draws=500, warmup=500,
            on_row: Callable[[dict[str, Any], int, int], None] | None = None) -> pd.DataFrame:
    """Fit `models` to every eligible layer of a checkpoint; returns layers.csv (this run's rows and earlier ones).

    Lighter sampler defaults than `fit` (2 x 500): convergence is still judged with fit's criteria, and a
    layer that misses them gets status "not_converged" with its numbers kept. Each layer's key derives from
    the seed and its name, so its result does not depend on the other layers or on resuming. The spectra are
    computed first (eigenvalues only, never a whole model's weights in float64); on_row(row, done, total) is
    called after each row is written (the command line's progress bar).
    """
    from hteval.infer import fit

    unknown = [m for m in models if m not in MODELS]
    if unknown or not models:
        raise InputError(f"unknown model(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(MODELS)}")
    out = Path(out)
    (out / LAYER_DIR).mkdir(parents=True, exist_ok=True)
    columns = table_columns(models)
    table = out / LAYER_TABLE
    done = _finished_pairs(table, columns)
    with table.open("a", newline="") as handle:
        if handle.tell() == 0:
            _write_line(handle, columns, dict(zip(columns, columns, strict=True)))
        items = list(iter_spectra(path, layers=layers, on_error="skip"))
        total = sum(1 if isinstance(i, SkippedLayer) else len(models) for i in items)
        count = 0

        def emit(row):
            nonlocal count
            _write_line(handle, columns, row)
            count += 1
            if on_row is not None:
                on_row(row, count, total)

        for item in items:
            if isinstance(item, SkippedLayer):
                if (item.name, "") not in done:
                    emit({names.NAME: item.name, names.SHAPE: list(item.shape), names.STATUS: item.status,
                          names.ERROR: item.reason})
                else:
                    count += 1
                continue
            for model in models:
                if (item.name, model) in done:
                    count += 1
                    continue
                start = time.perf_counter()
                row = {**item.to_record(), names.MODEL: model}
                try:
                    result = fit(item, model=model, prob=prob, seed=seed, chains=chains, draws=draws,
                                 warmup=warmup)
                except (HtevalError, ValueError, FloatingPointError) as err:
                    row.update({names.STATUS: names.STATUS_ERROR, names.ERROR: " ".join(str(err).split())})
                else:
                    row.update(_result_row(result))
                    _write_json(out / LAYER_DIR / f"{_file_stem(item.name)}.{model}.json", result)
                row[names.SECONDS] = round(time.perf_counter() - start, 2)
                emit(row)
    return read_layer_table(table)


def read_layer_table(path: str | Path) -> pd.DataFrame:
    """layers.csv as a DataFrame (a trailing line cut short by a kill is ignored)."""
    text = _complete_lines(Path(path))
    return pd.read_csv(io.StringIO(text)) if text else pd.DataFrame()


def _result_row(result) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for p, stats in result.summary.iterrows():
        for s in STATISTICS:
            row[f"{p}_{s}"] = stats[s]
    posterior = result.data["posterior"]
    for p in DERIVED:
        if p in posterior:
            draws = np.asarray(posterior[p].values).ravel()
            lo, hi = (1 - result.prob) / 2, (1 + result.prob) / 2
            row.update({f"{p}_median": np.median(draws), f"{p}_ci_low": np.quantile(draws, lo),
                        f"{p}_ci_high": np.quantile(draws, hi)})
    diagnostics = result.diagnostics
    row.update({names.R_HAT: diagnostics["max_r_hat"], names.CONVERGED: result.converged,
                names.DIVERGENCES: diagnostics["divergences"],
                names.STATUS: names.STATUS_OK if result.converged else names.STATUS_NOT_CONVERGED,
                names.ERROR: "; ".join(diagnostics["reasons"])})
    return row


def _write_json(path: Path, result) -> None:
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(result.to_json(), indent=2))
    partial.replace(path)  # atomic: a reader never sees half a file


def _write_line(handle, columns, row) -> None:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow([_cell(row.get(c)) for c in columns])
    handle.write(buffer.getvalue())  # one write per complete line, so a kill leaves at most one partial line
    handle.flush()


def _cell(value):
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return "x".join(str(v) for v in value)
    if isinstance(value, (float, np.floating)):
        return repr(float(value)) if np.isfinite(value) else ""
    return value


def _complete_lines(path: Path) -> str:
    if not path.exists():
        return ""
    text = path.read_text()
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
        path.write_text(text)  # drop the line a kill cut short; it is fitted again
    return text


def _finished_pairs(table: Path, columns: list[str]) -> set[tuple[str, str]]:
    text = _complete_lines(table)
    if not text:
        return set()
    rows = list(csv.reader(io.StringIO(text)))
    if rows[0] != columns:
        raise InputError(f"{table} was written for other models or by another hteval version; "
                         "choose a new --out (or delete it to start again)")
    i_name, i_model = columns.index(names.NAME), columns.index(names.MODEL)
    return {(r[i_name], r[i_model]) for r in rows[1:]}


def _file_stem(layer: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", layer)


__all__ = ["LAYER_TABLE", "analyze", "read_layer_table", "table_columns"]
