"""A FitResult <-> its files: <stem>.json (the summary document of `hteval fit`) and <stem>.draws.npz (the posterior
draws of its parameters), written by whole-network runs and read back by `hteval.load_analysis`."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hteval import names
from hteval.infer import FitResult
from hteval.models import MODELS
from hteval.rowfile import atomic_write

DRAWS_SUFFIX = ".draws.npz"
#: derived quantities kept beside a model's parameters when its posterior has them (SPEC section 3)
DERIVED = (names.TEMPERATURE,)
JSON_SUFFIX = ".json"


def write_result(stem: Path, result: FitResult, randomized: bool) -> None:
    """stem.json and stem.draws.npz, each replaced whole (a reader never sees half a file)."""
    document = {**result.to_json(), names.RANDOMIZED: randomized}
    atomic_write(stem.with_name(stem.name + JSON_SUFFIX), lambda h: h.write(json.dumps(document, indent=2).encode()))
    arrays = {p: np.asarray(result.draws[p]) for p in (*MODELS[result.model].PARAMETERS, *DERIVED)
              if p in result.draws}
    atomic_write(stem.with_name(stem.name + DRAWS_SUFFIX), lambda h: np.savez(h, **arrays))


def read_result(stem: Path) -> FitResult:
    """The FitResult that write_result wrote: summary, diagnostics, draws, probabilities, evidence and posterior
    predictive p-value as they were. The fitted spectrum is not kept, so `layer` is None and `data` holds the
    posterior only."""
    document = json.loads(stem.with_name(stem.name + JSON_SUFFIX).read_text())
    with np.load(stem.with_name(stem.name + DRAWS_SUFFIX)) as saved:
        draws = {k: saved[k] for k in saved.files}
    summary = pd.DataFrame.from_dict(document["parameters"], orient="index").astype(float)
    ppc = document.get(names.PPC_PVALUE)
    result = FitResult(model=document["model"], record=document["record"], prob=document["prob"], summary=summary,
                       diagnostics=document["diagnostics"], settings=document["settings"], draws=draws,
                       version=document.get("version", ""), probabilities=document.get("probabilities", {}),
                       evidence={k: _number(v) for k, v in document.get("evidence", {}).items()},
                       _ppc_pvalue=math.nan if ppc is None else float(ppc))
    result._build_data = lambda: _posterior_data(draws, document)
    return result


def _posterior_data(draws: dict[str, np.ndarray], document: dict[str, Any]):
    import arviz as az

    attrs = {"hteval_version": document.get("version", ""), "model": document["model"],
             "layer": document["layer"]}
    return az.from_dict({"posterior": draws}, attrs={"posterior": attrs})


def _number(value) -> float:
    return math.nan if value is None else float(value)
