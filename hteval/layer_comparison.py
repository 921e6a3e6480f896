"""The best ensemble model for every layer of a checkpoint: `hteval compare PATH --layers PATTERN --out DIR`.

One comparison (`hteval.compare`) per layer, run in worker processes like `analyze` (`hteval.parallel`), one row
per layer appended to comparisons.csv as each finishes (resumable, `hteval.rowfile`), and the full comparison
of each layer in layers/LAYER.comparison.json. Only converged fits are ranked: a model whose fit did not converge
has no evidence or ELPD to be trusted, so it is listed in `not_converged` instead, and the posterior probabilities,
stacking weights and differences are those of the converged models among themselves.

A row holds both rankings: the exact evidence's (best, its probability `weight`, the runner-up and its
d_log_evidence, best_wide under priors twice as wide, every model's probability `weight_MODEL`) and PSIS-LOO's
among the iid models (best_loo, the LOO runner-up's d_elpd and d_se, decisive, best_loo's pareto_k_bad).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from hteval import names
from hteval.dask_layers import ClusterSpectra, check_engine
from hteval.errors import HtevalError, InputError, OutputError
from hteval.model_comparison import DEFAULT_MODELS, compare_fits, fit_models
from hteval.network_analysis import LAYER_DIR, layer_file_stem
from hteval.parallel import run_tasks, worker_count
from hteval.rowfile import RowFile, atomic_write, in_order, read_table
from hteval.run_identity import claiming, run_identity
from hteval.run_lock import holding
from hteval.run_restart import restartable
from hteval.spectra import SkippedLayer, iter_spectra

COMPARISON_TABLE = "comparisons.csv"


def comparison_columns(models: Sequence[str]) -> list[str]:
    """comparisons.csv: the layer record, the evidence's winner, its probability and its margin over the runner-up,
    the winner under wide priors, PSIS-LOO's winner and its margin, every model's probability."""
    return [*names.RECORD_FIELDS, names.BEST, names.WEIGHT, names.RUNNER_UP, names.D_LOG_EVIDENCE, names.BEST_WIDE,
            names.PPC_PVALUE, names.BEST_LOO, names.D_ELPD, names.D_SE, names.DECISIVE, names.PARETO_K_BAD,
            *[f"{names.WEIGHT}_{m}" for m in models], names.NOT_CONVERGED_MODELS, names.STATUS, names.ERROR,
            names.SECONDS]


@restartable
def compare_layers(path: str | Path, out: str | Path, models: Sequence[str] = DEFAULT_MODELS, layers=None, *,
                   prob=0.9, seed=0, chains=4, draws=1000, warmup=1000, max_draws: int | None = None,
                   workers: int | None = None, sampler: str = "auto",
                   on_row: Callable[[dict[str, Any], int, int], None] | None = None, engine: str = "local",
                   scheduler=None, restart: bool = False) -> pd.DataFrame:
    """Compare `models` on every eligible layer of a checkpoint; returns comparisons.csv in network order.

    `layers` selects tensors as in `iter_spectra` (a glob pattern or a list of names). A layer's fits use the
    same per-layer keys as `compare` on that layer alone, so its row does not depend on the other layers or on
    the worker that ran it. on_row(row, done, total) is called after each row is written. sampler: as in
    `hteval.model_comparison.fit_models` ("auto": exact draws where a model has them). engine="dask": the
    singular values on a Dask cluster, each tensor read on its worker (`hteval.dask_layers`; `scheduler` as in
    `hteval.network_analysis.analyze`), the comparisons here in `workers` processes. out records what it is a
    run of, and restart=True replaces its run, as in `hteval.network_analysis.analyze`.
    """
    check_engine(path, engine, scheduler)
    if len(models) < 2:
        raise InputError("a comparison needs at least two models")
    workers = worker_count(workers)
    out = Path(out)
    rows = RowFile(out / COMPARISON_TABLE, comparison_columns(models), key=(names.NAME,))
    identity = run_identity("compare", path, models, layers, prob=prob, seed=seed, chains=chains, draws=draws,
                            warmup=warmup, max_draws=max_draws, sampler=sampler)
    # a checkpoint or pattern that gives nothing to compare leaves no empty output folder behind: the lock removes
    # the folder it made when the run stops before writing into it
    with holding(out, rows), claiming(out, identity, rows):
        done = rows.finished()
        if engine == "dask":  # layers compared before are not read again
            source = ClusterSpectra(path, scheduler=scheduler, workers=workers, layers=layers, svd="host",
                                    finished={key[0] for key in done})
            items = list(source)
            listed = source.names
            position = {name: i for i, name in enumerate(listed)}
            items.sort(key=lambda item: position.get(item.name, len(position)))  # checkpoint order, as here
        else:
            items = list(iter_spectra(path, layers=layers, on_error="skip"))
            listed = [i.name for i in items]
        (out / LAYER_DIR).mkdir(parents=True, exist_ok=True)
        settings = {"prob": prob, "seed": seed, "chains": chains, "draws": draws, "warmup": warmup,
                    "max_draws": max_draws, "sampler": sampler}
        with rows.appending(len(items), on_row) as emit:
            tasks = []
            for item in items:
                if rows.key_of({names.NAME: item.name}) in done:
                    emit.skip()
                elif isinstance(item, SkippedLayer):
                    emit({names.NAME: item.name, names.SHAPE: list(item.shape), names.STATUS: item.status,
                          names.ERROR: item.reason})
                else:
                    tasks.append((item, models[0]))  # the model only groups layers by compiled program
            run_tasks(tasks, _compare_row, (tuple(models), settings, out), workers=workers,
                      on_start=lambda name, model: None, on_row=emit)
        return in_order(read_table(rows.path, bool_columns=(names.DECISIVE,)), names.NAME, listed)


def _compare_row(item, _model: str, models: tuple[str, ...], settings: dict[str, Any], out: Path) -> dict[str, Any]:
    start = time.perf_counter()
    row: dict[str, Any] = item.to_record()
    try:
        fits = fit_models(item, models=models, **settings)
        ranked = {m: f for m, f in fits.items() if f.converged}
        row[names.NOT_CONVERGED_MODELS] = ",".join(m for m in fits if m not in ranked)
        document: dict[str, Any] = {names.NOT_CONVERGED_MODELS: sorted(set(fits) - set(ranked))}
        if len(ranked) >= 2:
            comparison = compare_fits(ranked, seed=settings["seed"])
            row.update(_winner(comparison, models))
            document.update(comparison.to_json())
        elif ranked:  # one converged model: it is the best by default, with nothing to beat
            only = next(iter(ranked))
            row.update({names.BEST: only, names.WEIGHT: 1.0, f"{names.WEIGHT}_{only}": 1.0})
        row[names.STATUS] = names.STATUS_OK if ranked else names.STATUS_NOT_CONVERGED
        stem = out / LAYER_DIR / layer_file_stem(item.name, "comparison")
        atomic_write(stem.with_name(stem.name + ".json"),
                     lambda h: h.write(json.dumps({**document, "record": item.to_record()}, indent=2).encode()))
    except OutputError:
        raise  # the folder, not the layer: the run stops, and this layer is compared again on resume
    except (HtevalError, ValueError, FloatingPointError) as err:
        row.update({names.STATUS: names.STATUS_ERROR, names.ERROR: " ".join(str(err).split())})
    row[names.SECONDS] = round(time.perf_counter() - start, 2)
    return row


def _winner(comparison, models: Sequence[str]) -> dict[str, Any]:
    """A layer's row: the evidence's ranking, then PSIS-LOO's among the iid models (the LOO runner-up's d_elpd and
    d_se against best_loo; empty where fewer than two iid models converged)."""
    table = comparison.table
    best, runner_up = table.index[0], table.index[1]
    row = {names.BEST: best, names.WEIGHT: table.loc[best, names.WEIGHT], names.RUNNER_UP: runner_up,
           names.D_LOG_EVIDENCE: table.loc[runner_up, names.D_LOG_EVIDENCE], names.BEST_WIDE: comparison.best_wide,
           names.PPC_PVALUE: table.loc[best, names.PPC_PVALUE], names.BEST_LOO: comparison.best_loo}
    by_loo = table[names.ELPD_LOO].dropna().sort_values(ascending=False).index
    if len(by_loo):
        row[names.PARETO_K_BAD] = table.loc[by_loo[0], names.PARETO_K_BAD]
    if len(by_loo) >= 2:
        loo_runner_up = by_loo[1]
        row.update({names.D_ELPD: table.loc[loo_runner_up, names.D_ELPD],
                    names.D_SE: table.loc[loo_runner_up, names.D_SE],
                    names.DECISIVE: comparison.decisive_over(loo_runner_up)})
    row.update({f"{names.WEIGHT}_{m}": table.loc[m, names.WEIGHT] for m in models if m in table.index})
    return row


__all__ = ["COMPARISON_TABLE", "compare_layers", "comparison_columns"]
