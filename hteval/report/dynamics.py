"""The training-dynamics view of a many-checkpoint run: kappa (and alpha) with intervals against the training step,
per layer, as a table (dynamics.csv, dynamics.md) and a figure of small multiples (dynamics_PARAMETER_MODEL.png).

Rows of element-shuffled copies (--randomize) are left out: the view follows the real weights. A fit that did not
converge is drawn hollow and marked in the table, never passed off as a converged one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter, MaxNLocator

from hteval import names
from hteval.report.analysis import FOREST_PARAMETERS
from hteval.report.figures import figure_title, fit_panel_titles, log_axis, save, small_multiples

DYNAMICS_TABLE = "dynamics.csv"
DYNAMICS_REPORT = "dynamics.md"
#: columns of dynamics.csv, one row per (model, parameter, layer, checkpoint)
COLUMNS = (names.MODEL, "parameter", names.NAME, names.CHECKPOINT, names.STEP, "median", "ci_low", "ci_high",
           names.STATUS, names.INTERVALS)
_SYMBOL = {"kappa": "κ", "alpha": "α"}
_PANEL_COLUMNS = 4


def dynamics_table(table: pd.DataFrame) -> pd.DataFrame:
    """checkpoints.csv in long form: each fitted parameter of FOREST_PARAMETERS, per layer, in step order."""
    if table.empty or names.MODEL not in table:
        return pd.DataFrame(columns=COLUMNS)
    fitted = table[table[names.MODEL].notna() & ~table[names.RANDOMIZED].astype(bool)]
    checkpoint_order = {c: i for i, c in enumerate(dict.fromkeys(table[names.CHECKPOINT]))}
    layer_order = {n: i for i, n in enumerate(dict.fromkeys(fitted[names.NAME]))}
    frames = []
    for parameter in FOREST_PARAMETERS:
        if f"{parameter}_median" not in fitted:
            continue
        part = fitted[fitted[f"{parameter}_median"].notna()]
        frames.append(pd.DataFrame({
            names.MODEL: part[names.MODEL], "parameter": parameter, names.NAME: part[names.NAME],
            names.CHECKPOINT: part[names.CHECKPOINT], names.STEP: part[names.STEP],
            "median": part[f"{parameter}_median"], "ci_low": part[f"{parameter}_ci_low"],
            "ci_high": part[f"{parameter}_ci_high"], names.STATUS: part[names.STATUS],
            names.INTERVALS: part.get(names.INTERVALS)}))
    if not frames:
        return pd.DataFrame(columns=COLUMNS)
    long = pd.concat(frames, ignore_index=True)
    long["_layer"] = long[names.NAME].map(layer_order)
    long["_checkpoint"] = long[names.CHECKPOINT].map(checkpoint_order)
    long = long.sort_values([names.MODEL, "parameter", "_layer", "_checkpoint"], kind="stable")
    return long[list(COLUMNS)].reset_index(drop=True)


def write_dynamics(table: pd.DataFrame, out: Path) -> list[Path]:
    """dynamics.csv, dynamics.md (a layer-by-step table of 'median [low, high]') and one figure per (parameter,
    model); returns the paths written."""
    out = Path(out)
    long = dynamics_table(table)
    long.to_csv(out / DYNAMICS_TABLE, index=False)
    written = [out / DYNAMICS_TABLE]
    lines = ["# Training dynamics", "",
             "Posterior median and interval per layer (rows) and checkpoint (columns); * marks a fit that did "
             "not converge.", ""]
    for (model, parameter), part in long.groupby([names.MODEL, "parameter"], sort=False):
        figure = plot_dynamics(part, out / f"dynamics_{parameter}_{model}.png")
        written.append(figure)
        lines += [f"## {parameter}, {names.MODEL_LABELS.get(model, model)} ({_intervals(part)} intervals)", "",
                  f"![{parameter} against step]({figure.name})", "", *_wide_table(part), ""]
    (out / DYNAMICS_REPORT).write_text("\n".join(lines) + "\n")
    return [*written, out / DYNAMICS_REPORT]


def plot_dynamics(part: pd.DataFrame, path: Path) -> Path:
    """Small multiples, one panel per layer: the parameter's median and interval (log scale) against the step
    (against the checkpoint's position where steps are unknown); hollow markers where a fit did not converge."""
    parameter = part["parameter"].iloc[0]
    model = part[names.MODEL].iloc[0]
    layers = list(dict.fromkeys(part[names.NAME]))
    checkpoints = list(dict.fromkeys(part[names.CHECKPOINT]))
    by_step = part[names.STEP].notna().all()
    fig, axes = small_multiples(len(layers), columns=_PANEL_COLUMNS, panel=(3.2, 2.2),
                                xlabel="training step" if by_step else "checkpoint",
                                ylabel=_SYMBOL.get(parameter, parameter))
    for ax, layer in zip(axes, layers, strict=True):
        rows = part[part[names.NAME] == layer]
        x = rows[names.STEP].to_numpy(float) if by_step else rows[names.CHECKPOINT].map(checkpoints.index).to_numpy()
        median = rows["median"].to_numpy(float)
        error = np.vstack([median - rows["ci_low"].to_numpy(float), rows["ci_high"].to_numpy(float) - median])
        ok = (rows[names.STATUS] == names.STATUS_OK).to_numpy()
        ax.plot(x, median, color="C0", lw=1, zorder=1)
        ax.errorbar(x[ok], median[ok], yerr=error[:, ok], fmt="o", ms=3.5, color="C0", capsize=2, zorder=2)
        if (~ok).any():
            ax.errorbar(x[~ok], median[~ok], yerr=error[:, ~ok], fmt="o", ms=3.5, mfc="white", color="C3",
                        capsize=2, zorder=2, label="not converged")
            ax.legend(fontsize=6, frameon=False, loc="best")
        ax.set_yscale("log")
        log_axis(ax.yaxis)
        ax.set_title(_short(layer), fontsize=8)
        ax.tick_params(which="both", labelsize=7)
        ax.grid(alpha=0.3, which="both", lw=0.4)
    if by_step:  # a few steps, written short: five-digit steps side by side collide in a panel this narrow
        axes[0].xaxis.set_major_locator(MaxNLocator(nbins=4, steps=[1, 2, 2.5, 5, 10], integer=True))
        axes[0].xaxis.set_major_formatter(FuncFormatter(_step_label))
    else:  # on every panel: those over a short last row show their labels too
        for ax in axes:
            ax.set_xticks(range(len(checkpoints)), checkpoints, rotation=45, ha="right", fontsize=6)
    figure_title(fig, f"{_SYMBOL.get(parameter, parameter)} by layer over training",
                 f"{names.MODEL_LABELS.get(model, model)}, median and credible interval")
    fit_panel_titles(fig, axes)
    return save(fig, path)


def _step_label(step: float, _position=None) -> str:
    """A training step as 500, 20k or 1.5M."""
    for size, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(step) >= size:
            return f"{step / size:g}{suffix}"
    return f"{step:g}"


def _wide_table(part: pd.DataFrame) -> list[str]:
    cells = part.assign(cell=[f"{m:.3g} [{lo:.3g}, {hi:.3g}]" + ("" if s == names.STATUS_OK else "*")
                              for m, lo, hi, s in zip(part["median"], part["ci_low"], part["ci_high"],
                                                      part[names.STATUS], strict=True)])
    columns = list(dict.fromkeys(part[names.CHECKPOINT]))
    steps = dict(zip(part[names.CHECKPOINT], part[names.STEP], strict=False))
    header = [f"{c} (step {int(steps[c])})" if pd.notna(steps[c]) and str(int(steps[c])) not in str(c) else str(c)
              for c in columns]
    lines = ["| layer | " + " | ".join(header) + " |", "|---" * (len(columns) + 1) + "|"]
    for layer, rows in cells.groupby(names.NAME, sort=False):
        by_checkpoint = dict(zip(rows[names.CHECKPOINT], rows["cell"], strict=True))
        lines.append(f"| {layer} | " + " | ".join(by_checkpoint.get(c, "") for c in columns) + " |")
    return lines


def _intervals(part: pd.DataFrame) -> str:
    labels = set(part[names.INTERVALS].dropna()) if names.INTERVALS in part else set()
    return "/".join(sorted(labels)) or "unlabelled"


def _short(layer: str) -> str:
    return layer.removesuffix(".weight")


__all__ = ["DYNAMICS_REPORT", "DYNAMICS_TABLE", "dynamics_table", "plot_dynamics", "write_dynamics"]
