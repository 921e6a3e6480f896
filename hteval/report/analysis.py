"""The model-level report of `hteval analyze`: report.md with forest plots of kappa (and alpha) in network order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from hteval import calibration, names
from hteval.report.figures import log_axis, subplots

REPORT = "report.md"
#: parameters that get a forest plot when a model reports them (kappa: the HTMP family; alpha: the power-law tail)
FOREST_PARAMETERS = ("kappa", "alpha")
_SYMBOL = {"kappa": "κ", "alpha": "α"}  # plain text: mathtext's parser costs a second to build


def write_report(table: pd.DataFrame, out: Path, *, network_order: list[str], pooled: dict, prob: float,
                 source: str = "") -> Path:
    """Write out/report.md and out/<parameter>_forest.png; returns the report's path."""
    out = Path(out)
    fitted = _fitted(table, network_order)
    lines = [f"# hteval analyze{': ' + source if source else ''}", ""]
    lines += _status_lines(table)
    for model, p in pooled.items():
        median, lo, hi = p.interval(p.kappa)
        lines += [f"**Model-level kappa ({names.MODEL_LABELS[model]}, partial pooling of {len(p.layers)} converged "
                  f"layers):** {median:.3g} [{lo:.3g}, {hi:.3g}] ({prob:.0%} interval); spread between layers "
                  f"tau (sd of log kappa) {p.interval(p.tau)[0]:.2f}"
                  + ("" if p.diagnostics["converged"] else
                     f" -- NOT CONVERGED: {'; '.join(p.diagnostics['reasons'])}"), ""]
    for parameter in FOREST_PARAMETERS:
        column = f"{parameter}_median"
        if column in fitted and fitted[column].notna().any():
            figure = plot_forest(fitted, parameter, out / f"{parameter}_forest.png", pooled=pooled, prob=prob)
            lines += [f"![{parameter} by layer]({figure.name})", ""]
    lines += _layer_table(fitted, prob)
    path = out / REPORT
    path.write_text("\n".join(lines) + "\n")
    return path


def _fitted(table: pd.DataFrame, network_order: list[str]) -> pd.DataFrame:
    if table.empty or names.MODEL not in table:
        return pd.DataFrame()
    fitted = table[table[names.MODEL].notna()].copy()
    rank = {name: i for i, name in enumerate(dict.fromkeys(network_order))}
    fitted["_order"] = fitted[names.NAME].map(rank).fillna(len(rank))
    return fitted.sort_values(["_order", names.MODEL, names.RANDOMIZED], kind="stable")


def _status_lines(table: pd.DataFrame) -> list[str]:
    if table.empty:
        return ["No layers.", ""]
    counts = table.groupby(table[names.MODEL].fillna("(not fitted)"))[names.STATUS].value_counts()
    lines = ["| model | status | layers |", "|---|---|---|"]
    lines += [f"| {model} | {status} | {n} |" for (model, status), n in counts.items()]
    return [*lines, "", "A layer is `ok` only when its fit passed its checks: for exact draws the quadrature's "
            "(edge mass, resolution, censoring), for NUTS R-hat <= 1.01, bulk and tail ESS >= 400 and no "
            "divergences; `not_converged` rows keep their numbers but are not to be read as results.", "",
            *[f"Intervals of {m}: {calibration.note(m)}." for m in dict.fromkeys(table[names.MODEL].dropna())], ""]


def plot_forest(fitted: pd.DataFrame, parameter: str, path: Path, *, pooled: dict, prob: float) -> Path:
    """Median and interval of `parameter` for every layer (top = first in the network), one colour per model;
    open markers: not converged; grey: the layer's element-shuffled copy; black: partially pooled intervals."""
    rows = fitted[fitted[f"{parameter}_median"].notna()]
    layer_names = list(dict.fromkeys(rows[names.NAME]))
    models = list(dict.fromkeys(rows[names.MODEL]))
    y_of = {name: i for i, name in enumerate(layer_names)}
    shuffled = set(rows.loc[rows[names.RANDOMIZED], names.MODEL])
    series = [(m, False) for m in models] + [(m, True) for m in models if m in shuffled]
    series += [(m, "pooled") for m in models if m in pooled and parameter == "kappa"]
    step = 0.7 / max(len(series), 1)
    fig, ax = subplots(figsize=(7, 1.2 + 0.22 * len(layer_names) * max(1, len(series) / 2)),
                           constrained_layout=True)
    for k, (model, kind) in enumerate(series):
        offset = (k - (len(series) - 1) / 2) * step
        label = names.MODEL_LABELS[model]
        if calibration.intervals(model) != names.INTERVALS_CALIBRATED:
            label += " (uncalibrated intervals)"
        if kind == "pooled":
            _pooled_series(ax, pooled[model], y_of, offset, label)
            continue
        part = rows[(rows[names.MODEL] == model) & (rows[names.RANDOMIZED] == kind)]
        y = part[names.NAME].map(y_of).to_numpy() + offset
        med, lo, hi = (part[f"{parameter}_{s}"].to_numpy(dtype=float) for s in ("median", "ci_low", "ci_high"))
        ok = (part[names.STATUS] == names.STATUS_OK).to_numpy()
        colour = "0.55" if kind else f"C{models.index(model)}"
        name = f"{label}, shuffled copy" if kind else label
        ax.errorbar(med, y, xerr=[med - lo, hi - med], fmt="none", ecolor=colour, elinewidth=1.2)
        ax.plot(med[ok], y[ok], "o", color=colour, ms=4, label=name)
        if (~ok).any():
            ax.plot(med[~ok], y[~ok], "o", mfc="white", mec=colour, ms=4, label=f"{name}, not converged")
    ax.set_yticks(range(len(layer_names)), [n.removesuffix(".weight") for n in layer_names], fontsize=6)
    ax.invert_yaxis()
    ax.set_xscale("log")
    log_axis(ax.xaxis)
    ax.set_xlabel(f"{_SYMBOL.get(parameter, parameter)} (posterior median and {prob:.0%} interval)")
    if parameter == "alpha":
        for bound in (2.0, 6.0):  # the field's heavy (alpha < 2) and light (alpha > 6) tail conventions
            ax.axvline(bound, color="0.8", lw=0.8, ls=":")
    ax.grid(axis="x", which="major", color="0.92")
    fig.legend(fontsize=7, frameon=False, loc="outside lower center", ncols=2)  # never over a layer's interval
    fig.savefig(path, dpi=150)
    return path


def _pooled_series(ax, p, y_of, offset, label):
    table = p.table()
    keep = [n for n in table.index if n in y_of]
    med, lo, hi = (table.loc[keep, f"kappa_{s}"].to_numpy() for s in ("median", "ci_low", "ci_high"))
    y = np.array([y_of[n] for n in keep]) + offset
    ax.errorbar(med, y, xerr=[med - lo, hi - med], fmt="s", color="k", ms=3, elinewidth=1.0,
                label=f"{label}, partially pooled")
    mid, low, high = p.interval(p.kappa)
    caveat = "" if p.diagnostics["converged"] else ", NOT CONVERGED"
    ax.axvspan(low, high, color="k", alpha=0.08, lw=0, label=f"model-level kappa {mid:.3g}{caveat}")


def _layer_table(fitted: pd.DataFrame, prob: float) -> list[str]:
    if fitted.empty:
        return []
    parameters = [p for p in FOREST_PARAMETERS if f"{p}_median" in fitted]
    header = ["layer", "model", "shuffled", *[f"{p} median [{prob:.0%}]" for p in parameters], "r_hat",
              names.INTERVALS, "status"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, row in fitted.iterrows():
        cells = [row[names.NAME], row[names.MODEL], "yes" if row[names.RANDOMIZED] else ""]
        for p in parameters:
            med = row[f"{p}_median"]
            cells.append("" if pd.isna(med) else f"{med:.3g} [{row[f'{p}_ci_low']:.3g}, {row[f'{p}_ci_high']:.3g}]")
        r_hat = row.get(names.R_HAT)
        cells += ["" if pd.isna(r_hat) else f"{r_hat:.3f}", calibration.intervals(row[names.MODEL]), row[names.STATUS]]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return ["## Layers", "", *lines, ""]
