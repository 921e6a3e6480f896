"""Checkpoint -> every layer's posterior, one table row per (layer, model) and per shuffled copy with
--randomize, written as each fit finishes.

A run is resumable: layers.csv is appended one complete, flushed line at a time, and a second run over the same
--out reads it back and fits only the (layer, model, randomized) rows it lacks. A line cut short by a kill is dropped on
resume (its layer is fitted again); finished lines are never rewritten. A layer that cannot be fitted gets a row
with its status and error, and the run goes on. One run writes a folder at a time (`hteval.run_lock`: a second is
refused); a write that fails (full disk, read-only folder) stops the run with one error, its rows kept for the
resume. Each layer's files are named after its name alone (`file_stem`), whatever other layers the run has.

Two ways through a checkpoint. Models drawn exactly (the default, htmp-exact) cost milliseconds a layer, so the
linear algebra is what takes time: one process, the singular values of the next tensors computed by a pool of
threads (`iter_spectra(threads=...)`; LAPACK releases the GIL) while this one fits, writes and draws the layers
already done. Models fitted by NUTS cost seconds a layer: all spectra first, then groups of same-program fits
spread over worker processes (`hteval.parallel`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hteval import calibration, names
from hteval.dask_layers import ClusterSpectra, check_engine
from hteval.errors import HtevalError, InputError
from hteval.evidence import model_probabilities
from hteval.frameworks import source_label
from hteval.infer import fit
from hteval.layer_order import network_order
from hteval.models import MODELS
from hteval.parallel import RESULT_KEY, run_tasks, worker_count
from hteval.result_files import DERIVED, DRAWS_SUFFIX, write_result
from hteval.rowfile import RowFile, RowList, atomic_write, in_order, read_table
from hteval.run_identity import claiming, run_identity
from hteval.run_lock import holding
from hteval.run_restart import restartable
from hteval.schedule import program_key
from hteval.spectra import SkippedLayer, iter_spectra
from hteval.summary import median_and_interval

logger = logging.getLogger(__name__)

LAYER_TABLE = "layers.csv"
LAYER_DIR = "layers"
HIERARCHICAL_JSON = "hierarchical.json"
POOLED_TABLE = "pooled.csv"
#: interval bounds and centre reported per parameter in layers.csv: kappa_median, kappa_ci_low, kappa_ci_high
STATISTICS = ("median", "ci_low", "ci_high")
#: bytes of a layer's file stem at most: with ".MODEL.randomized.draws.npz.partial" a file name stays within the
#: 255 bytes that file systems allow
MAX_STEM = 200
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_HASH_BYTES = 4


def table_columns(models: Sequence[str]) -> list[str]:
    """The columns of layers.csv for these models: record, model, per-parameter statistics, diagnostics."""
    parameters: list[str] = []
    for model in models:
        for p in (*MODELS[model].PARAMETERS, *DERIVED):
            if p not in parameters:
                parameters.append(p)
    return [*names.RECORD_FIELDS, names.MODEL, names.RANDOMIZED, *[f"{p}_{s}" for p in parameters for s in STATISTICS],
            names.PPC_PVALUE, names.MISFIT, *_probability_columns(models), names.LOG_EVIDENCE,
            *([names.BEST, names.WEIGHT] if len(models) > 1 else []), names.R_HAT, names.CONVERGED,
            names.DIVERGENCES, names.INTERVALS, names.STATUS, names.ERROR, names.SECONDS]


def finished_layers(done: set[tuple[str, ...]], rows, models: Sequence[str], randomize: bool) -> set[str]:
    """The layers all of whose rows are among `done` (keys of layers.csv): the one row of a skipped or unreadable
    tensor, or a row per model, and per model for the shuffled copy too with randomize."""
    copies = (False, True) if randomize else (False,)
    finished = set()
    for name in {key[0] for key in done}:
        wanted = [{names.NAME: name, names.MODEL: m, names.RANDOMIZED: r} for m in models for r in copies]
        if rows.key_of({names.NAME: name}) in done or all(rows.key_of(row) in done for row in wanted):
            finished.add(name)
    return finished


def auto_models() -> list[str]:
    """`--models auto`: the fast models drawn exactly (names.AUTO_MODEL_LIST), htmp-exact first."""
    return list(names.AUTO_MODEL_LIST)


def _probability_columns(models: Sequence[str]) -> list[str]:
    """The posterior probabilities these models report (P(kappa < 10) for the HTMP family, P(alpha < 2) and
    P(alpha > 6) for the power law)."""
    columns = []
    if any(names.KAPPA in MODELS[m].PARAMETERS for m in models):
        columns.append(names.P_KAPPA_BELOW_10)
    if any("alpha" in MODELS[m].PARAMETERS for m in models):
        columns += [names.P_ALPHA_BELOW_2, names.P_ALPHA_ABOVE_6]
    return columns


@restartable
def analyze(path, out: str | Path | None, models: Sequence[str] = (names.DEFAULT_MODEL,), layers=None, *, prob=0.9,
            seed=0, chains=4, draws=1000, warmup=500, max_draws: int | None = 2400, randomize: bool = False,
            hierarchical: bool = False, figures: bool = True, workers: int | None = None,
            batched: bool | None = None, svd: str = "auto", sampler: str = "auto",
            on_row: Callable[[dict[str, Any], int, int], None] | None = None,
            on_start: Callable[[str, str], None] | None = None, label: str | None = None,
            report: bool = True, keep: dict | None = None,
            on_pooled: Callable[[dict], None] | None = None, engine: str = "local",
            scheduler=None, restart: bool = False) -> pd.DataFrame:
    """Fit `models` to every eligible layer of a checkpoint; returns layers.csv (this run's rows and earlier ones).

    Models drawn exactly (sampler "auto": htmp-exact, the power law) get chains x draws independent draws; the
    others run NUTS with lighter warm-up than `fit` (run on up to max_draws per chain while R-hat or ESS fall
    short, see `fit`), judged by fit's criteria: a layer that misses them gets status "not_converged" with its
    numbers kept. Each layer's random numbers derive from the seed and its name, so its result does not depend
    on the other layers, on the order they are fitted in or on resuming. on_row(row, done, total) is called after
    each row is written (total grows while the checkpoint is still being read) and on_start(layer, model) before
    each fit (the command line's progress bar).

    workers: NUTS fits' processes, each taking whole groups of same-program fits (`hteval.parallel`; default the
    CPU count, at most 4; 1: everything here). Exact fits run in this process. batched fits each group of
    same-program layers in one vmapped NUTS run (`hteval.batched`: the accelerator path, without fit's run-on);
    None (the default) batches NUTS fits when JAX's backend is a GPU or TPU. svd: where singular values are
    computed (`iter_spectra`): "host" (LAPACK), "device" (JAX on its default device) or "auto", the device when
    JAX has a GPU (JAX is then imported; on a machine without one it is not). randomize also fits every layer's
    element-shuffled copy (rows with randomized = True); with two or more models (models="auto": `auto_models`)
    each layer's rows get best and weight, the model of highest exact evidence and its probability; hierarchical
    pools kappa across the converged layers that the model fits (`hteval.hierarchy`). The report (report.md and
    forest plots) is rewritten at the end of every run unless report=False; its header names the checkpoint as
    `label` (default: the path as given).

    path may also be a model or a dict of arrays in memory (`hteval.frameworks`). out=None writes nothing: the table
    is kept in memory, without figures or report. keep: a dict that receives every FitResult of this run, keyed by
    (layer, model, randomized); on_pooled(pooled) receives the partial pooling's results (hierarchical=True).

    engine="dask" computes the singular values on a Dask cluster, one task per tensor or group of small tensors,
    each reading its tensors from `path` on its worker (`hteval.dask_layers`): the scheduler at `scheduler`
    ("tcp://host:8786", or a `LayerCluster`), or else a loopback LocalCluster of `workers` processes. The fits,
    the table and the files stay in this process, so the rows and resuming are those of engine="local"; layers this
    folder has already are not read again.

    out records what its rows are a run of (run.json: the checkpoint's fingerprint, the models and the options that
    change the numbers, `hteval.run_identity`): a run over a folder that holds another run is refused with
    RunMismatchError, before anything is read or written; a wider layer filter resumes. restart=True replaces the
    folder's run instead: this run is written beside it and swapped in when it finishes (`hteval.run_restart`).
    """
    check_engine(path, engine, scheduler)
    if models == names.AUTO_MODELS or list(models) == [names.AUTO_MODELS]:
        models = auto_models()
    unknown = [m for m in models if m not in MODELS]
    if unknown or not models:
        raise InputError(f"unknown model(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(MODELS)}")
    key = (names.NAME, names.MODEL, names.RANDOMIZED)
    if out is None:
        rows, figures, report = RowList(table_columns(models), key), False, False
        keep = {} if keep is None else keep  # pooling reads the draws from here
    else:
        out = Path(out)
        rows = RowFile(out / LAYER_TABLE, table_columns(models), key=key)
    identity = None if out is None else run_identity(
        "analyze", path, models, layers, prob=prob, seed=seed, chains=chains, draws=draws, warmup=warmup,
        max_draws=max_draws, sampler=sampler, randomize=randomize, hierarchical=hierarchical)
    # one run at a time per folder, and only the run the folder holds; a full or read-only disk stops it with a clear
    # error
    with holding(out, rows), claiming(out, identity, rows):
        if out is not None:
            (out / LAYER_DIR).mkdir(parents=True, exist_ok=True)
        done = rows.finished()
        exact = all(sampler != "nuts" and hasattr(MODELS[m], "posterior_draws") for m in models)
        accelerator = _accelerator() if (svd == "auto" or (batched is None and not exact)) else False
        if engine == "dask":  # each worker reads its tensors from `path`, and decides svd="auto" for itself
            spectra = ClusterSpectra(path, scheduler=scheduler, workers=workers, layers=layers,
                                     randomize=seed if randomize else None, svd=svd,
                                     finished=finished_layers(done, rows, models, randomize))
        else:
            svd = ("device" if accelerator else "host") if svd == "auto" else svd
            # singular values of several tensors at a time, ahead of the fits (which need little CPU on the exact
            # path)
            spectra = iter_spectra(path, layers=layers, on_error="skip", randomize=seed if randomize else None,
                                   svd=svd, threads=None)
        settings = {"prob": prob, "seed": seed, "chains": chains, "draws": draws, "warmup": warmup,
                    "max_draws": max_draws, "sampler": sampler}
        order: list[str] = []
        # exact fits: the figures are drawn in a worker process while this one fits (they cost as much as the fits
        # here), and the report is written while the worker finishes
        with _figure_drawer(figures if exact else False) as draw:
            with rows.appending(0, on_row) as written:
                emit = _Keeper(written, keep)
                _fit_every_layer(spectra, models, rows, done, emit, exact, draw if exact else figures, settings, out,
                                 order=order, on_start=on_start or (lambda name, model: None), accelerator=accelerator,
                                 batched=batched, workers=workers)
            # network order (the file keeps the order rows were written in), with the layers finished before this
            # run, which a run on a cluster does not read again
            order = network_order([*order, *(key[0] for key in done)])
            result = in_order(rows.read(bool_columns=(names.RANDOMIZED,)), names.NAME, order)
            pooled = pool_layers(result, out, prob=prob, seed=seed, kept=keep) if hierarchical else {}
            if on_pooled is not None:
                on_pooled(pooled)
            if report:
                from hteval.report.analysis import write_report

                write_report(result, out, network_order=order, pooled=pooled, prob=prob,
                             source=label or source_label(path))
        return result


class _Keeper:
    """The row writer, which also hands each row's FitResult (carried under RESULT_KEY, never written) to `keep`."""

    def __init__(self, writer, keep: dict | None):
        self._writer, self._keep = writer, keep

    def __call__(self, row: dict[str, Any]) -> None:
        result = row.pop(RESULT_KEY, None)
        if result is not None and self._keep is not None:
            self._keep[(row[names.NAME], row[names.MODEL], bool(row[names.RANDOMIZED]))] = result
        self._writer(row)

    def skip(self) -> None:
        self._writer.skip()

    @property
    def total(self) -> int:
        return self._writer.total

    @total.setter
    def total(self, value: int) -> None:
        self._writer.total = value


def _fit_every_layer(spectra, models, rows, done, emit, exact: bool, figures, settings, out: Path, *, order,
                     on_start, accelerator: bool, batched, workers) -> None:
    """Every (layer, model) row the table lacks: skipped tensors' rows at once, fits as the spectra arrive (exact
    models) or all spectra first, then the fits grouped by compiled program over worker processes (NUTS)."""
    tasks = _pending(spectra, models, rows, done, emit, order)
    if exact:
        # a layer's rows are written together, once its models' evidence says which is best
        earlier = _earlier_evidence(rows.path) if len(models) > 1 and rows.path is not None else {}
        try:
            for layer_tasks in _by_layer(tasks):
                layer_rows = []
                for item, model in layer_tasks:
                    on_start(item.name, model)
                    layer_rows.append(_fit_row(item, model, settings, out, figures))
                if len(models) > 1:
                    _choose(layer_rows, earlier)
                for row in layer_rows:
                    emit(row)
        finally:
            tasks.close()  # stopped by an interrupt or an error: the spectra being computed ahead are dropped
        return
    tasks = list(tasks)
    if accelerator if batched is None else batched:
        _fit_batched_rows(tasks, settings, out, figures, on_start=on_start, on_row=emit)
    else:
        run_tasks(tasks, _fit_row, (settings, out, figures), workers=worker_count(workers), on_start=on_start,
                  on_row=emit)


def _pending(items, models, rows, done, emit, order: list[str]) -> Iterator[tuple[Any, str]]:
    """(layer, model) pairs still to fit; rows of skipped tensors written, finished pairs counted, every name
    appended to `order` (network order) as it arrives. Closing it early closes `items` too (threads or a
    cluster computing spectra ahead stop at once, not when the generator is garbage-collected)."""
    items = iter(items)
    try:
        for item in items:
            order.append(item.name)
            emit.total += 1 if isinstance(item, SkippedLayer) else len(models)
            if isinstance(item, SkippedLayer):
                if rows.key_of({names.NAME: item.name}) in done:
                    emit.skip()
                else:
                    emit({names.NAME: item.name, names.SHAPE: list(item.shape), names.STATUS: item.status,
                          names.ERROR: item.reason})
                continue
            for model in models:
                key = {names.NAME: item.name, names.MODEL: model, names.RANDOMIZED: item.randomized}
                if rows.key_of(key) in done:
                    emit.skip()
                else:
                    yield item, model
    finally:
        if hasattr(items, "close"):
            items.close()


def _by_layer(tasks) -> Iterator[list[tuple[Any, str]]]:
    """The (layer, model) tasks grouped by layer (they arrive layer by layer)."""
    group: list[tuple[Any, str]] = []
    for item, model in tasks:
        if group and (group[0][0].name, group[0][0].randomized) != (item.name, item.randomized):
            yield group
            group = []
        group.append((item, model))
    if group:
        yield group


def _earlier_evidence(path: Path) -> dict[tuple[str, bool], dict[str, float]]:
    """Log evidence of the rows a resumed run already has: (layer, randomized) -> {model: log evidence}."""
    table = read_layer_table(path) if path.exists() else pd.DataFrame()
    found: dict[tuple[str, bool], dict[str, float]] = {}
    if table.empty or names.LOG_EVIDENCE not in table:
        return found
    for _, row in table[table[names.LOG_EVIDENCE].notna()].iterrows():
        found.setdefault((row[names.NAME], bool(row[names.RANDOMIZED])), {})[row[names.MODEL]] = row[names.LOG_EVIDENCE]
    return found


def _choose(layer_rows: list[dict[str, Any]], earlier: dict) -> None:
    """best and weight on every row of a layer: the model of highest exact evidence among its converged fits, and
    its posterior probability among them (equal prior odds). No choice where fewer than two models have one."""
    if not layer_rows:
        return
    first = layer_rows[0]
    evidence = dict(earlier.get((first[names.NAME], bool(first[names.RANDOMIZED])), {}))
    for row in layer_rows:
        value = row.get(names.LOG_EVIDENCE)
        if row.get(names.STATUS) == names.STATUS_OK and value is not None and np.isfinite(value):
            evidence[row[names.MODEL]] = float(value)
    if len(evidence) < 2:
        return
    models = list(evidence)
    log_z = np.array([evidence[m] for m in models])
    probability = model_probabilities(log_z)
    best = int(np.argmax(log_z))
    for row in layer_rows:
        row.update({names.BEST: models[best], names.WEIGHT: float(probability[best])})


def _accelerator() -> bool:
    """Whether JAX would run on a GPU or TPU here, without importing JAX where no accelerator can be present."""
    if not (os.path.exists("/dev/nvidiactl") or os.path.exists("/dev/accel0") or os.path.exists("/dev/kfd")):
        return False
    import jax

    return jax.default_backend() != "cpu"


class _NoFigures:
    """The figure drawer of a run without figures."""

    def __enter__(self):
        return False

    def __exit__(self, *exc) -> None:
        return None


def _figure_drawer(figures: bool):
    if not figures:
        return _NoFigures()
    from hteval.report.background import BackgroundFigures

    return BackgroundFigures()


def _fit_row(item, model: str, settings: dict[str, Any], out: Path, figures) -> dict[str, Any]:
    start = time.perf_counter()
    try:
        result = fit(item, model=model, log_likelihood=False, **settings)
        result.ppc_pvalue  # noqa: B018 (the fit check, computed here: one that fails gives this layer's error row)
    except (HtevalError, ValueError, FloatingPointError) as err:
        result = err
    return _row(item, model, result, out, figures, time.perf_counter() - start)


def _fit_batched_rows(tasks, settings: dict[str, Any], out: Path, figures: bool, *, on_start, on_row) -> None:
    """One vmapped run per group of same-program (layer, model) tasks; the group's rows when it finishes, each
    with its share of the group's time."""
    from hteval.batched import fit_batched

    groups: dict[Any, list] = {}
    for item, model in tasks:
        groups.setdefault(program_key(item, model), []).append((item, model))
    sampler = {k: settings[k] for k in ("prob", "seed", "chains", "draws", "warmup", "sampler")}
    for group in groups.values():
        model = group[0][1]
        for item, _ in group:
            on_start(item.name, model)
        start = time.perf_counter()
        try:
            results = fit_batched([item for item, _ in group], model, **sampler)
        except (HtevalError, ValueError, FloatingPointError) as err:
            results = [err] * len(group)
        share = (time.perf_counter() - start) / len(group)
        for (item, _), result in zip(group, results, strict=True):
            on_row(_row(item, model, result, out, figures, share))


def _row(item, model: str, result, out: Path, figures, seconds: float) -> dict[str, Any]:
    """A layer's table row from its FitResult, or from the error that stopped its fit; its files written.
    figures: False, True (drawn here) or a drawer draw(result, path) (`hteval.report.background`)."""
    row = {**item.to_record(), names.MODEL: model, names.RANDOMIZED: item.randomized}
    if isinstance(result, Exception):
        row.update({names.STATUS: names.STATUS_ERROR, names.ERROR: " ".join(str(result).split())})
    elif out is None:
        row.update(_result_row(result))
        row[RESULT_KEY] = result
    else:
        row.update(_result_row(result))
        stem = out / LAYER_DIR / layer_file_stem(item.name, model, item.randomized)
        write_result(stem, result, item.randomized)
        if callable(figures):
            figures(result, stem.with_name(stem.name + ".esd.png"))
        elif figures:
            from hteval.report.figures import plot_esd

            plot_esd(result, stem.with_name(stem.name + ".esd.png"), prob=result.prob)
    row[names.SECONDS] = round(seconds, 2)
    return row


def pool_layers(table: pd.DataFrame, out: Path | None, *, prob: float, seed: int, kept: dict | None = None) -> dict:
    """Partial pooling of kappa, per model that has one, over its converged rows of the real (not randomized) layers
    that the model fits (misfit layers are left out and listed); writes hierarchical.json (model-level kappa and
    tau) and pooled.csv (per-layer pooled intervals); with out=None the draws come from `kept` (analyze's keep)
    and nothing is written."""
    from hteval.hierarchy import pool_kappa
    from hteval.kappa_posterior import kappa_upper_bound

    pooled: dict = {}
    documents: dict[str, Any] = {}
    if table.empty or names.MODEL not in table:
        return pooled
    for model in dict.fromkeys(table[names.MODEL].dropna()):
        if names.KAPPA not in MODELS[model].PARAMETERS:
            continue
        rows = table[(table[names.MODEL] == model) & ~table[names.RANDOMIZED]]
        # a layer the model does not fit has no kappa to pool: its interval answers the wrong question
        misfit = rows[names.MISFIT] == True if names.MISFIT in rows else False  # noqa: E712 (cells may be NaN)
        usable = rows[(rows[names.STATUS] == names.STATUS_OK) & ~misfit]
        if out is None:
            draws = {name: np.asarray(kept[(name, model, False)].draws[names.KAPPA]) for name in usable[names.NAME]}
        else:
            draws = {name: np.load(out / LAYER_DIR / f"{layer_file_stem(name, model)}{DRAWS_SUFFIX}")[names.KAPPA]
                     for name in usable[names.NAME]}
        left_out = sorted(set(rows[names.NAME]) - set(draws))
        # the prior's box: the iid models' [1e-3, 1e3]; the exact model's reaches the largest layer's 10 M
        upper = max((kappa_upper_bound(m) for m in usable[names.M]), default=1e3) if model == "htmp-exact" else 1e3
        try:
            pooled[model] = pool_kappa(draws, prob=prob, seed=seed, box=(math.log(1e-3), math.log(upper)))
        except InputError as err:
            documents[model] = {names.STATUS: names.STATUS_ERROR, names.ERROR: str(err), "left_out": left_out}
            continue
        documents[model] = {**pooled[model].to_json(), "left_out": left_out,
                            names.INTERVALS: calibration.intervals(model)}
    if out is None:
        return pooled
    atomic_write(out / HIERARCHICAL_JSON, lambda h: h.write(json.dumps(documents, indent=2).encode()))
    frames = [p.table().reset_index().assign(**{names.MODEL: m}) for m, p in pooled.items()]
    if frames:
        pooled_table = pd.concat(frames)[[names.NAME, names.MODEL, "kappa_median", "kappa_ci_low", "kappa_ci_high"]]
        pooled_table.to_csv(out / POOLED_TABLE, index=False)
    return pooled


def layer_file_stem(layer: str, model: str, randomized: bool = False) -> str:
    """layers/<stem>.json, .draws.npz, .esd.png: the layer name made safe for a file name (`file_stem`), then
    model."""
    return f"{file_stem(layer)}.{model}" + (".randomized" if randomized else "")


def file_stem(layer: str) -> str:
    """A layer's name as a file name that depends on that name only: the name itself where it is made of letters,
    digits, '.', '_' and '-' and at most MAX_STEM bytes long; otherwise the name with every run of other characters
    made '_', cut to fit, then '~' and a hash of the whole name (so `a/b` and `a_b` get files of their own, and a
    name never collides with one kept as it is, which has no '~')."""
    safe = _UNSAFE.sub("_", layer)
    if safe == layer and 0 < len(layer) <= MAX_STEM:
        return layer
    digest = hashlib.blake2b(layer.encode("utf-8"), digest_size=_HASH_BYTES).hexdigest()
    return f"{safe[: MAX_STEM - 1 - 2 * _HASH_BYTES]}~{digest}"


def read_layer_table(path: str | Path) -> pd.DataFrame:
    """layers.csv as a DataFrame (a trailing line cut short by a kill is ignored); `randomized` is a bool column
    (False on rows of skipped tensors, whose cell is empty)."""
    return read_table(path, bool_columns=(names.RANDOMIZED,))


def _result_row(result) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for p, stats in result.summary.iterrows():
        for s in STATISTICS:
            row[f"{p}_{s}"] = stats[s]
    for p in DERIVED:
        if p in result.draws:
            row.update(zip((f"{p}_{s}" for s in STATISTICS), median_and_interval(result.draws[p], result.prob),
                           strict=True))
    row[names.LOG_EVIDENCE] = result.evidence.get(names.LOG_EVIDENCE, math.nan)
    row[names.PPC_PVALUE] = result.ppc_pvalue
    row[names.MISFIT] = result.misfit
    row.update({k: v for k, v in result.probabilities.items() if k in names.PROBABILITY_FIELDS})
    diagnostics = result.diagnostics
    row.update({names.R_HAT: diagnostics["max_r_hat"], names.CONVERGED: result.converged,
                names.DIVERGENCES: diagnostics["divergences"], names.INTERVALS: calibration.intervals(result.model),
                names.STATUS: names.STATUS_OK if result.converged else names.STATUS_NOT_CONVERGED,
                names.ERROR: "; ".join(diagnostics["reasons"])})
    return row


__all__ = ["LAYER_TABLE", "analyze", "finished_layers", "read_layer_table", "table_columns"]
