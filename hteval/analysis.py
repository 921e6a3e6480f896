"""A network's analysis as one object: `hteval.analyze(model)` in a notebook, `hteval.load_analysis(folder)` later.

`analyze` takes whatever holds the weights (a checkpoint path, a dict of arrays, a torch, JAX or Keras model) and
returns an `Analysis`: the layers table, each layer's FitResult, the forest plot and an HTML table of verdicts for
notebooks. With out=None nothing touches the disk; `Analysis.save(folder)` writes what `hteval analyze --out`
writes, and `load_analysis` reads it back.
"""

from __future__ import annotations

import difflib
import html
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from hteval import names
from hteval.errors import InputError

ANALYSIS_JSON = "analysis.json"
#: rows shown by the notebook table before it says how many more there are
_HTML_ROWS = 40


@dataclass
class Analysis:
    """What `analyze` found: `table` (layers.csv: one row per layer and model, in network order), each fit's
    FitResult by `layer(name)`, the forest plot by `plot()`. `folder` is where it is saved (None: in memory only)."""

    table: pd.DataFrame
    source: str
    models: list[str]
    prob: float
    settings: dict[str, Any] = field(default_factory=dict)
    folder: Path | None = None
    pooled: dict = field(default_factory=dict, repr=False)
    _results: dict = field(default_factory=dict, repr=False)

    @property
    def layers(self) -> list[str]:
        """The names of the fitted layers, in network order."""
        return list(dict.fromkeys(self._fitted()[names.NAME]))

    @property
    def verdicts(self) -> pd.Series:
        """Per row of the fitted table: fits, misfit, unchecked, not_converged or error (report.md's verdicts)."""
        from hteval.report.analysis import verdicts

        return verdicts(self._fitted())

    def layer(self, name: str, model: str | None = None, randomized: bool = False):
        """The FitResult of one layer: of `model`, or else of the layer's best model (several models), or else of
        its only one."""
        rows = self._fitted()
        rows = rows[(rows[names.NAME] == name) & (rows[names.RANDOMIZED] == randomized)]
        if rows.empty:
            raise InputError(_unknown_layer(name, self.layers))
        model = model or _default_model(rows)
        if model not in set(rows[names.MODEL]):
            raise InputError(f"layer {name!r} has no fit of model {model!r}; it has {', '.join(rows[names.MODEL])}")
        key = (name, model, randomized)
        if key not in self._results:
            self._results[key] = self._read_result(*key)
        return self._results[key]

    def plot(self, parameter: str = names.KAPPA):
        """The forest plot of `parameter` (kappa, or alpha for the power law): every layer's median and interval,
        in network order, one colour per model; a matplotlib Figure."""
        from hteval.report.analysis import forest_figure

        rows = self._fitted()
        column = f"{parameter}_median"
        if column not in rows or rows[column].isna().all():
            raise InputError(f"no fitted layer has {parameter!r}; models: {', '.join(self.models)}")
        return forest_figure(rows, parameter, pooled=self.pooled, prob=self.prob)

    def save(self, folder: str | Path) -> Path:
        """Write the analysis as `hteval analyze --out folder` does (layers.csv, layers/, report.md, forest plots)
        and analysis.json; returns the folder. `load_analysis(folder)` reads it back."""
        folder = Path(folder)
        if self.folder is not None and folder.resolve() == self.folder.resolve():
            return folder
        from hteval.run_lock import holding

        with holding(folder):  # as a run's writes: one writer a folder at a time, a full disk one clear error
            if self.folder is not None:
                shutil.copytree(self.folder, folder, dirs_exist_ok=True)
            else:
                self._write(folder)
        self.folder = folder
        return folder

    def _write(self, folder: Path) -> None:
        from hteval.network_analysis import LAYER_DIR, LAYER_TABLE, layer_file_stem
        from hteval.report.analysis import write_report
        from hteval.result_files import write_result

        (folder / LAYER_DIR).mkdir(parents=True, exist_ok=True)
        for (name, model, randomized), result in self._results.items():
            write_result(folder / LAYER_DIR / layer_file_stem(name, model, randomized), result, randomized)
        self.table.to_csv(folder / LAYER_TABLE, index=False)
        _write_description(folder, self)
        write_report(self.table, folder, network_order=list(self.table.get(names.NAME, [])), pooled=self.pooled,
                     prob=self.prob, source=self.source)

    def _read_result(self, name: str, model: str, randomized: bool):
        from hteval.network_analysis import LAYER_DIR, layer_file_stem
        from hteval.result_files import read_result

        if self.folder is None:
            raise InputError(f"{name} / {model}: this analysis kept no result for it")
        return read_result(self.folder / LAYER_DIR / layer_file_stem(name, model, randomized))

    def _fitted(self) -> pd.DataFrame:
        table = self.table
        if table.empty or names.MODEL not in table:
            return pd.DataFrame(columns=[names.NAME, names.MODEL, names.RANDOMIZED])
        return table[table[names.MODEL].notna()]

    def __repr__(self) -> str:
        counts = self.verdicts.value_counts()
        found = ", ".join(f"{n} {v}" for v, n in counts.items()) or "no fits"
        where = f", saved in {self.folder}" if self.folder is not None else ", in memory"
        return f"<Analysis of {self.source}: {len(self.layers)} layers, {found}{where}>"

    def _repr_html_(self) -> str:
        """The notebook view: one line per fit with the parameter's median and interval, the predictive check's
        p-value and the verdict."""
        rows = self._fitted()
        verdicts = self.verdicts
        head = (f"<p><b>hteval analysis</b> of {html.escape(self.source)}: {len(self.layers)} layers, "
                f"models {html.escape(', '.join(self.models))}; {self.prob:.0%} intervals</p>")
        lines = ["<tr><th>layer</th><th>model</th><th>estimate</th><th>p (fit check)</th><th>verdict</th></tr>"]
        for (_, row), verdict in list(zip(rows.iterrows(), verdicts, strict=True))[:_HTML_ROWS]:
            name = row[names.NAME] + (" (shuffled)" if row[names.RANDOMIZED] else "")
            cells = (name, row[names.MODEL], _estimate(row), _p_value(row.get(names.PPC_PVALUE)), verdict)
            lines.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
        more = len(rows) - _HTML_ROWS
        tail = f"<p>... {more} more rows in <code>.table</code></p>" if more > 0 else ""
        return head + "<table>" + "".join(lines) + "</table>" + tail


def analyze(source, out: str | Path | None = None, *, models: str | Sequence[str] = (names.DEFAULT_MODEL,),
            layers=None, prob: float = 0.9, seed: int = 0, restart: bool = False, **options: Any) -> Analysis:
    """Fit every layer of `source` and return the Analysis.

    source: a checkpoint path (safetensors, PyTorch, NumPy), a dict of arrays, a torch nn.Module (Hugging Face
    models included), a JAX pytree (flax, equinox) or a Keras 3 model. out: a folder to write layers.csv, the
    per-layer files and report.md into as the run goes (resumable, as `hteval analyze --out`); None (the default)
    writes nothing. models: model names or "auto"; layers: a glob or a list of names. Other options are those of
    `hteval.network_analysis.analyze` (chains, draws, randomize, hierarchical, figures, workers, ...).

    A folder that holds another run (another source, other options: its run.json) is refused with
    RunMismatchError; restart=True replaces that run with this one (swapped in whole when this one finishes).
    """
    from hteval.frameworks import source_label
    from hteval.network_analysis import analyze as analyze_network
    from hteval.network_analysis import auto_models

    models = auto_models() if models == names.AUTO_MODELS else [models] if isinstance(models, str) else list(models)
    kept: dict = {}
    label = options.pop("label", None) or source_label(source)
    pooled: dict = {}
    table = analyze_network(source, out, models, layers, prob=prob, seed=seed, keep=kept, label=label,
                            on_pooled=pooled.update, restart=restart, **options)
    settings = {"seed": seed, "layers": layers, **{k: v for k, v in options.items() if _plain(v)}}
    analysis = Analysis(table=table, source=label, models=models, prob=prob, settings=settings,
                        folder=None if out is None else Path(out), pooled=pooled, _results=kept)
    if out is not None:
        from hteval.run_lock import holding

        with holding(Path(out)):  # a run that took the folder since is refused, not written over
            _write_description(Path(out), analysis)
    return analysis


def load_analysis(folder: str | Path) -> Analysis:
    """The Analysis saved in `folder` (by `Analysis.save`, `hteval.analyze(..., out=folder)` or `hteval analyze
    --out folder`); FitResults are read from its layers/ files when asked for."""
    from hteval.network_analysis import LAYER_TABLE, read_layer_table

    folder = Path(folder)
    if not (folder / LAYER_TABLE).exists():
        raise InputError(f"no {LAYER_TABLE} here: not an hteval analysis folder", source=str(folder))
    table = read_layer_table(folder / LAYER_TABLE)
    description = json.loads((folder / ANALYSIS_JSON).read_text()) if (folder / ANALYSIS_JSON).exists() else {}
    found = list(dict.fromkeys(table[names.MODEL].dropna())) if names.MODEL in table else []
    models = description.get("models") or found
    return Analysis(table=table, source=description.get("source", str(folder)), models=models,
                    prob=float(description.get("prob", 0.9)), settings=description.get("settings", {}),
                    folder=folder)


def _write_description(folder: Path, analysis: Analysis) -> None:
    from hteval import __version__
    from hteval.rowfile import atomic_write

    document = {"source": analysis.source, "models": analysis.models, "prob": analysis.prob,
                "settings": analysis.settings, "version": __version__}
    atomic_write(folder / ANALYSIS_JSON, lambda h: h.write(json.dumps(document, indent=2).encode()))


def _plain(value) -> bool:
    return isinstance(value, (bool, int, float, str, type(None)))


def _default_model(rows: pd.DataFrame) -> str:
    if len(rows) == 1:
        return rows[names.MODEL].iloc[0]
    best = rows[names.BEST].dropna() if names.BEST in rows else pd.Series(dtype=object)
    return best.iloc[0] if not best.empty else rows[names.MODEL].iloc[0]


def _unknown_layer(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; layers: {', '.join(known[:8])}" + \
        (", ..." if len(known) > 8 else "")
    return f"no fitted layer named {name!r}{hint}"


def _estimate(row: pd.Series) -> str:
    from hteval.report.analysis import significant

    for parameter in ("kappa", "alpha", "nu", "sigma2", "mu"):
        if pd.notna(row.get(f"{parameter}_median")):
            low, high = row[f"{parameter}_ci_low"], row[f"{parameter}_ci_high"]
            return (f"{parameter} {significant(row[f'{parameter}_median'])} "
                    f"[{significant(low)}, {significant(high)}]")
    return ""


def _p_value(p) -> str:
    from hteval.report.analysis import format_p

    return "" if p is None or pd.isna(p) else format_p(float(p))


__all__ = ["Analysis", "analyze", "load_analysis"]
