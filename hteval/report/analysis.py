"""The model-level report of `hteval analyze`: report.md with forest plots of kappa (and alpha) in network order.

report.md reads top to bottom as a person asks: how many layers the model fits, the model-level kappa, the forest
plot, one plain verdict per layer (with its probabilities), then the full table and notes.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from hteval import calibration, layer_order, names
from hteval.report.figures import log_axis, middle_ellipsis, save, subplots

REPORT = "report.md"
#: parameters that get a forest plot when a model reports them (kappa: the HTMP family; alpha: the power-law tail)
FOREST_PARAMETERS = ("kappa", "alpha")
_SYMBOL = {"kappa": "κ", "alpha": "α"}  # plain text: mathtext's parser costs a second to build

#: the posterior probabilities layers.csv holds for each parameter: kappa < 10 is farther than L1 distance 0.11
#: from Marchenko-Pastur (SPEC section 2); alpha < 2 and alpha > 6 are the field's heavy- and light-tail bounds
_PROBABILITIES = {"kappa": ((names.P_KAPPA_BELOW_10, "kappa < 10"),),
                  "alpha": ((names.P_ALPHA_BELOW_2, "alpha < 2"), (names.P_ALPHA_ABOVE_6, "alpha > 6"))}
#: a probability this far from 0 or 1 is stated as a finding, anything between as undecided
_DECIDED = 0.95

# What a fitted row says, from its status and its posterior predictive check (the column _VERDICT of `_fitted`)
FITS = "fits"
MISFIT = "misfit"
UNCHECKED = "unchecked"  # converged, but no ppc_pvalue (NUTS runs, tables from before the check)
NOT_CONVERGED = names.STATUS_NOT_CONVERGED
FAILED = names.STATUS_ERROR
_VERDICT = "_verdict"
#: short names for sentences ("HTMP fits"); the iid HTMP is told apart from the exact one
_SHORT = {"htmp-exact": "HTMP", "htmp": "HTMP (iid likelihood)"}


def write_report(table: pd.DataFrame, out: Path, *, network_order: list[str], pooled: dict, prob: float,
                 source: str = "") -> Path:
    """Write out/report.md and out/<parameter>_forest.png; returns the report's path. Rows are put in network
    order (`hteval.layer_order.network_order` of the names given and the table's), whatever order they come in."""
    out = Path(out)
    table_names = list(table[names.NAME]) if names.NAME in table else []
    fitted = _fitted(table, layer_order.network_order([*network_order, *table_names]))
    lines = [f"# hteval analyze{': ' + source if source else ''}", "", "## Summary", ""]
    lines += _summary_lines(table, fitted)
    lines += _pooled_lines(pooled, prob)
    lines += _forest_lines(fitted, out, pooled=pooled, prob=prob)
    lines += _verdict_lines(fitted, prob)
    lines += _layer_table(fitted, prob)
    lines += _notes(table, fitted)
    path = out / REPORT
    path.write_text("\n".join(lines) + "\n")
    return path


def _fitted(table: pd.DataFrame, network_order: list[str]) -> pd.DataFrame:
    if table.empty or names.MODEL not in table:
        return pd.DataFrame()
    fitted = table[table[names.MODEL].notna()].copy()
    if names.RANDOMIZED not in fitted:
        fitted[names.RANDOMIZED] = False
    rank = {name: i for i, name in enumerate(dict.fromkeys(network_order))}
    fitted["_order"] = fitted[names.NAME].map(rank).fillna(len(rank))
    fitted[_VERDICT] = verdicts(fitted)
    return fitted.sort_values(["_order", names.MODEL, names.RANDOMIZED], kind="stable")


def verdicts(rows: pd.DataFrame) -> pd.Series:
    """Per row: FITS, MISFIT, UNCHECKED (converged, no predictive check), NOT_CONVERGED or FAILED."""
    return pd.Series([_verdict_of(row) for _, row in rows.iterrows()], index=rows.index, dtype=object)


def _verdict_of(row: pd.Series) -> str:
    status = row.get(names.STATUS)
    if status == names.STATUS_NOT_CONVERGED:  # before the check: an unconverged posterior's p-value means nothing
        return NOT_CONVERGED
    if status != names.STATUS_OK:
        return FAILED
    misfit = misfit_of(row)
    return UNCHECKED if misfit is None else MISFIT if misfit else FITS


def misfit_of(row: pd.Series) -> bool | None:
    """The row's `misfit` flag (a bool, or its text as a CSV gives it back), else ppc_pvalue < MISFIT_LEVEL;
    None where the row has neither (no posterior predictive check)."""
    flag = row.get(names.MISFIT)
    if flag is not None and not pd.isna(flag):
        return str(flag).strip().lower() in ("true", "1", "1.0")
    p = row.get(names.PPC_PVALUE)
    return None if p is None or pd.isna(p) else bool(p < names.MISFIT_LEVEL)


# --- summary -----------------------------------------------------------------------------------------------------

def _summary_lines(table: pd.DataFrame, fitted: pd.DataFrame) -> list[str]:
    if table.empty:
        return ["No layers.", ""]
    lines = []
    if not fitted.empty:
        for (model, randomized), rows in fitted.groupby([names.MODEL, names.RANDOMIZED], sort=False):
            lines.append(f"* **{_group_title(model, randomized)}**: {_counts(rows[_VERDICT])}")
    unfitted = table[table[names.MODEL].isna()] if names.MODEL in table else table
    if not unfitted.empty:
        n = unfitted.get(names.STATUS, pd.Series(dtype=object)).value_counts()
        parts = [f"{n[names.STATUS_SKIPPED]} skipped (biases, norms and other non-layers)"
                 if names.STATUS_SKIPPED in n else "",
                 f"{n[names.STATUS_ERROR]} unreadable (see `error` in layers.csv)" if names.STATUS_ERROR in n else ""]
        lines.append(f"* {len(unfitted)} tensor{'s' * (len(unfitted) != 1)} not fitted: "
                     + (", ".join(p for p in parts if p) or "see layers.csv"))
    return [*lines, ""]


def _counts(kinds: pd.Series) -> str:
    n = kinds.value_counts()
    parts = [f"{n[FITS]} {'fits' if n[FITS] == 1 else 'fit'} (posterior predictive p >= {names.MISFIT_LEVEL:g})"
             if FITS in n else "",
             f"{n[MISFIT]} {'does' if n[MISFIT] == 1 else 'do'} not fit (p < {names.MISFIT_LEVEL:g})"
             if MISFIT in n else "",
             f"{n[UNCHECKED]} converged without a fit check" if UNCHECKED in n else "",
             f"{n[NOT_CONVERGED]} not converged" if NOT_CONVERGED in n else "",
             f"{n[FAILED]} failed" if FAILED in n else ""]
    return f"{len(kinds)} layer{'s' * (len(kinds) != 1)}: " + ", ".join(p for p in parts if p)


def _group_title(model: str, randomized: bool) -> str:
    title = f"{names.MODEL_LABELS.get(model, model)} ({model})"
    return f"{title}, element-shuffled copies" if randomized else title


def _pooled_lines(pooled: dict, prob: float) -> list[str]:
    lines = []
    for model, p in pooled.items():
        median, lo, hi = (significant(x) for x in p.interval(p.kappa))
        tau, tau_lo, tau_hi = p.interval(p.tau)
        caveat = "" if p.diagnostics["converged"] else f" -- NOT CONVERGED: {'; '.join(p.diagnostics['reasons'])}"
        lines += [f"**Model-level kappa** ({names.MODEL_LABELS.get(model, model)}, partial pooling of "
                  f"{len(p.layers)} converged layers that the model fits; misfitting layers left out): "
                  f"{median} [{lo}, {hi}]; spread between layers "
                  f"tau (sd of log kappa) {tau:.2f} [{tau_lo:.2f}, {tau_hi:.2f}], i.e. a layer's kappa typically "
                  f"within a factor {math.exp(tau):.3g} of it ({prob:.0%} intervals){caveat}", ""]
    return lines


def _forest_lines(fitted: pd.DataFrame, out: Path, *, pooled: dict, prob: float) -> list[str]:
    lines = []
    for parameter in FOREST_PARAMETERS:
        column = f"{parameter}_median"
        if column in fitted and fitted[column].notna().any():
            figure = plot_forest(fitted, parameter, out / f"{parameter}_forest.png", pooled=pooled, prob=prob)
            lines += [f"## {parameter} by layer", "", f"![{parameter} by layer]({figure.name})", ""]
    return lines


# --- forest plot -------------------------------------------------------------------------------------------------

#: how each kind of row is drawn: verdicts, marker, marker face (None: filled), interval line style and alpha,
#: legend suffix. Misfits are hollow with a dashed, faint interval and unconverged rows crosses with a dotted one,
#: so neither is read as a fit, nor one for the other.
_STYLES = (((FITS, UNCHECKED), "o", None, "-", 1.0, ""),
           ((MISFIT,), "o", "white", "--", 0.45, f": does not fit (p < {names.MISFIT_LEVEL:g}), not a fit"),
           ((NOT_CONVERGED, FAILED), "x", None, ":", 0.6, ": not converged, not a result"))


def plot_forest(fitted: pd.DataFrame, parameter: str, path: Path, *, pooled: dict, prob: float) -> Path:
    """The forest plot (`forest_figure`) saved at `path`."""
    fig = forest_figure(fitted, parameter, pooled=pooled, prob=prob)
    return save(fig, path)


def forest_figure(fitted: pd.DataFrame, parameter: str, *, pooled: dict, prob: float):
    """Median and interval of `parameter` for every layer (top = first in the network), one colour per model:
    filled, the model fits; hollow with a dashed interval, it does not fit the layer (p < MISFIT_LEVEL); crosses
    with a dotted interval, not converged; grey, the layer's element-shuffled copy; black squares, partially
    pooled intervals with the model-level band and median (--hierarchical). Returns the matplotlib Figure."""
    rows = fitted[fitted[f"{parameter}_median"].notna()]
    if _VERDICT not in rows:
        rows = rows.assign(**{_VERDICT: verdicts(rows)})
    layer_names = list(dict.fromkeys(rows[names.NAME]))
    models = list(dict.fromkeys(rows[names.MODEL]))
    y_of = {name: i for i, name in enumerate(layer_names)}
    shuffled = set(rows.loc[rows[names.RANDOMIZED].astype(bool), names.MODEL])
    pooled_models = [m for m in models if m in pooled and parameter == "kappa"]
    series = [(m, False) for m in models] + [(m, True) for m in models if m in shuffled]
    series += [(m, "pooled") for m in pooled_models]
    step = 0.7 / max(len(series), 1)
    fig, ax = subplots(figsize=(7, 0.8 + 0.2 * len(layer_names) * max(1, len(series) / 2)), constrained_layout=True)
    for k, (model, kind) in enumerate(series):
        offset = (k - (len(series) - 1) / 2) * step
        label = names.MODEL_LABELS.get(model, model)
        if calibration.intervals(model) != names.INTERVALS_CALIBRATED:
            label += " (uncalibrated intervals)"
        if kind == "pooled":
            _pooled_series(ax, pooled[model], y_of, offset, label, prob=prob,
                           tag=f" ({label})" if len(pooled_models) > 1 else "")
            continue
        part = rows[(rows[names.MODEL] == model) & (rows[names.RANDOMIZED] == kind)]
        _layer_series(ax, part, parameter, part[names.NAME].map(y_of).to_numpy() + offset,
                      colour="0.55" if kind else f"C{models.index(model)}",
                      label=f"{label}, shuffled copy" if kind else label)
    _reference_lines(ax, parameter)
    _forest_axes(ax, parameter, layer_names, prob)
    _forest_legend(fig, ax)
    return fig


def _layer_series(ax, part: pd.DataFrame, parameter: str, y: np.ndarray, *, colour: str, label: str) -> None:
    med, lo, hi = (part[f"{parameter}_{s}"].to_numpy(dtype=float) for s in ("median", "ci_low", "ci_high"))
    kinds = part[_VERDICT].to_numpy()
    for chosen, marker, face, line, alpha, suffix in _STYLES:
        pick = np.isin(kinds, chosen)
        if not pick.any():
            continue
        ax.hlines(y[pick], lo[pick], hi[pick], colors=colour, linestyles=line, lw=1.2, alpha=alpha)
        ax.plot(med[pick], y[pick], marker, ls="none", color=colour, mfc=face or colour, mec=colour, ms=4.5,
                mew=1.1, label=label + suffix)


def _pooled_series(ax, p, y_of, offset, label, *, prob: float, tag: str) -> None:
    table = p.table()
    keep = [n for n in table.index if n in y_of]
    med, lo, hi = (table.loc[keep, f"kappa_{s}"].to_numpy() for s in ("median", "ci_low", "ci_high"))
    y = np.array([y_of[n] for n in keep]) + offset
    ax.errorbar(med, y, xerr=[med - lo, hi - med], fmt="s", color="k", ms=3, elinewidth=1.0,
                label=f"{label}, partially pooled")
    mid, low, high = p.interval(p.kappa)
    caveat = "" if p.diagnostics["converged"] else ", NOT CONVERGED"
    ax.axvspan(low, high, color="k", alpha=0.08, lw=0, label=f"model-level κ{tag}, {prob:.0%} interval{caveat}")
    ax.axvline(mid, color="k", lw=0.9, alpha=0.7, label=f"model-level κ{tag}, median {significant(mid)}")


def _reference_lines(ax, parameter: str) -> None:
    if parameter == "kappa":  # where HTMP is within L1 distance 0.11 of MP (SPEC section 2): P(kappa < 10)'s line
        ax.axvline(10.0, color="0.6", lw=0.8, ls=":", label="κ = 10: L1 distance 0.11 to Marchenko-Pastur")
    if parameter == "alpha":  # the field's heavy (alpha < 2) and light (alpha > 6) tail conventions
        for bound in (2.0, 6.0):
            ax.axvline(bound, color="0.6", lw=0.8, ls=":",
                       label="α = 2 and 6: heavy- and light-tail conventions" if bound == 2.0 else None)


#: characters of a layer name beside a forest plot's row: longer names keep their ends around an ellipsis, where
#: the layout would otherwise squeeze the axes to nothing
_FOREST_NAME = 56


def _forest_axes(ax, parameter: str, layer_names: list[str], prob: float) -> None:
    labels = [middle_ellipsis(n.removesuffix(".weight"), _FOREST_NAME) for n in layer_names]
    ax.set_yticks(range(len(layer_names)), labels, fontsize=7)
    ax.set_ylim(len(layer_names) - 0.5, -0.5)  # the first layer of the network on top
    ax.set_xscale("log")
    log_axis(ax.xaxis)
    ax.tick_params(axis="x", labelsize=8)
    ax.set_xlabel(f"{_SYMBOL.get(parameter, parameter)} (posterior median and {prob:.0%} interval)", fontsize=9)
    ax.grid(axis="x", which="major", color="0.92")


def _forest_legend(fig, ax) -> None:
    """Below the axes, never over a layer's interval; the figure grows by the legend's height."""
    handles, labels = ax.get_legend_handles_labels()
    ncols = 2 if max(map(len, labels), default=0) <= 48 else 1
    width, height = fig.get_size_inches()
    fig.set_size_inches(width, height + 0.17 * math.ceil(len(labels) / ncols))
    fig.legend(handles, labels, fontsize=7.5, frameon=False, loc="outside lower center", ncols=ncols)


# --- verdicts ----------------------------------------------------------------------------------------------------

def _verdict_lines(fitted: pd.DataFrame, prob: float) -> list[str]:
    if fitted.empty:
        return []
    groups = list(fitted.groupby([names.MODEL, names.RANDOMIZED], sort=False))
    lines = ["## Verdicts", "", f"One line per fitted layer in network order: p is the posterior predictive p-value "
             f"(below {names.MISFIT_LEVEL:g} the model does not fit the layer), intervals are {prob:.0%} posterior "
             "intervals, probabilities are posterior probabilities.", ""]
    for (model, randomized), rows in groups:
        if len(groups) > 1:  # one model and no shuffled copies: the lines need no heading
            lines += [f"### {_group_title(model, randomized)}", ""]
        lines += [f"* {verdict_line(row)}" for _, row in rows.iterrows()] + [""]
    return lines


def verdict_line(row: pd.Series) -> str:
    """One plain sentence on a fitted row: whether the model fits (with p), which model the evidence prefers
    (with its weight), the estimate and its probabilities, or why there is no verdict."""
    model = row[names.MODEL]
    short = _SHORT.get(model, names.MODEL_LABELS.get(model, model))
    kind = row[_VERDICT] if _VERDICT in row else _verdict_of(row)
    reason = "" if pd.isna(row.get(names.ERROR)) else f" ({row[names.ERROR]})"
    head = f"`{row[names.NAME]}`: "
    if kind == NOT_CONVERGED:
        return head + f"{short} fit did not converge{reason}; no verdict, its numbers are not a result"
    if kind == FAILED:
        return head + f"{short} fit failed{reason}; no verdict"
    # a misfit's numbers describe no layer: the line gives the check and the preferred model, not the estimate
    tail = [f"{_parameter(row) or 'its parameters'} not reported as a fit"] if kind == MISFIT else _estimate(row)
    return head + "; ".join([_check(row, kind, short), *_preference(row, short), *tail])


def _check(row: pd.Series, kind: str, short: str) -> str:
    p = row.get(names.PPC_PVALUE)
    tested = "" if p is None or pd.isna(p) else f" ({format_p(p)})"
    if kind == UNCHECKED:
        return f"{short} fitted; fit not checked (no posterior predictive p-value)"
    return f"{short} fits{tested}" if kind == FITS else f"{short} does not fit{tested}"


def format_p(p: float) -> str:
    """'p = 0.43', 'p = 0.004', 'p < 0.001': two decimals where they tell values apart, a bound below 0.001."""
    if p < 0.001:
        return "p < 0.001"
    return f"p = {p:.3f}" if p < 0.01 else f"p = {p:.2f}"


def _preference(row: pd.Series, short: str) -> list[str]:
    """Which model the exact evidence prefers for the layer (--models auto), with its posterior probability."""
    best, weight = row.get(names.BEST), row.get(names.WEIGHT)
    if best is None or pd.isna(best):
        return []
    of = "" if weight is None or pd.isna(weight) else f" (weight {weight:.2f})"
    if best == row[names.MODEL]:
        return [f"{short} is the preferred model{of}"]
    return [f"{_SHORT.get(best, names.MODEL_LABELS.get(best, best))} preferred{of}"]


def _parameter(row: pd.Series) -> str | None:
    return next((p for p in FOREST_PARAMETERS if not pd.isna(row.get(f"{p}_median", np.nan))), None)


def _estimate(row: pd.Series) -> list[str]:
    """'kappa 1.09 [0.95, 1.24]' and the parameter's probabilities, each a phrase."""
    parameter = _parameter(row)
    if parameter is None:
        return []
    caveat = "" if calibration.intervals(row[names.MODEL]) == names.INTERVALS_CALIBRATED else " (uncalibrated)"
    phrases = [f"{parameter} {_interval(row, parameter)}{caveat}"]
    for column, event in _PROBABILITIES[parameter]:
        p = row.get(column)
        if p is not None and not pd.isna(p):
            phrases.append(_probability_phrase(column, event, p))
    return phrases


def _interval(row: pd.Series, parameter: str) -> str:
    med, lo, hi = (row[f"{parameter}_{s}"] for s in ("median", "ci_low", "ci_high"))
    return f"{significant(med)} [{significant(lo)}, {significant(hi)}]"


def significant(x: float) -> str:
    """Three significant digits, written out where that is short (1010, not 1.01e+03)."""
    rounded = float(f"{x:.3g}")
    return f"{rounded:g}" if 1e-3 <= abs(rounded) < 1e5 else f"{x:.3g}"


def _probability_phrase(column: str, event: str, p: float) -> str:
    stated = f"P({event}) = {p:.2f}"
    if column != names.P_KAPPA_BELOW_10:
        return stated
    if p >= _DECIDED:
        return f"far from Marchenko-Pastur, {stated}"
    return f"close to Marchenko-Pastur, {stated}" if p <= 1 - _DECIDED else \
        f"not clearly far from Marchenko-Pastur, {stated}"


# --- table and notes ---------------------------------------------------------------------------------------------

def _layer_table(fitted: pd.DataFrame, prob: float) -> list[str]:
    if fitted.empty:
        return []
    parameters = [p for p in FOREST_PARAMETERS if f"{p}_median" in fitted]
    checked = names.PPC_PVALUE in fitted or names.MISFIT in fitted  # old tables and NUTS runs have neither
    chosen = [c for c in (names.BEST, names.WEIGHT) if c in fitted]
    header = ["layer", "model", "shuffled", *[f"{p} median [{prob:.0%}]" for p in parameters],
              *([names.PPC_PVALUE, names.MISFIT] if checked else []), *chosen, "r_hat", names.INTERVALS, "status"]
    rows = []
    for _, row in fitted.iterrows():
        cells = [row[names.NAME], row[names.MODEL], "yes" if row[names.RANDOMIZED] else ""]
        cells += ["" if pd.isna(row[f"{p}_median"]) else _interval(row, p) for p in parameters]
        if checked:
            misfit = misfit_of(row)
            cells += [_number(row.get(names.PPC_PVALUE), ".3g"), "" if misfit is None else "yes" if misfit else "no"]
        cells += [_number(row[c], ".2f") if c == names.WEIGHT else _text(row[c]) for c in chosen]
        cells += [_number(row.get(names.R_HAT), ".3f"), calibration.intervals(row[names.MODEL]), row[names.STATUS]]
        rows.append([str(c) for c in cells])
    # a column empty in every row (no shuffled copies, no R-hat from exact draws) says nothing
    kept = [i for i in range(len(header)) if any(cells[i] for cells in rows)]
    lines = ["| " + " | ".join(header[i] for i in kept) + " |", "|" + "---|" * len(kept)]
    lines += ["| " + " | ".join(cells[i] for i in kept) + " |" for cells in rows]
    return ["## Layers", "", *lines, ""]


def _number(value, spec: str) -> str:
    return "" if value is None or pd.isna(value) else format(value, spec)


def _text(value) -> str:
    return "" if value is None or pd.isna(value) else str(value)


def _notes(table: pd.DataFrame, fitted: pd.DataFrame) -> list[str]:
    if table.empty:
        return []
    lines = ["## Notes", "", "A layer is `ok` only when its fit passed its checks: for exact draws the quadrature's "
             "(edge mass, resolution, censoring), for NUTS R-hat <= 1.01, bulk and tail ESS >= 400 and no "
             "divergences; `not_converged` rows keep their numbers but are not to be read as results. A converged "
             f"model does not fit a layer when its posterior predictive p-value is below {names.MISFIT_LEVEL:g} "
             "(`misfit`); its parameters then describe no layer, and the forest plot draws them hollow.", ""]
    if "kappa_median" in fitted:
        lines += ["kappa = 10 is where the HTMP law is within L1 distance 0.11 of Marchenko-Pastur (0.034 at 40, "
                  "0.0094 at 160): P(kappa < 10) near 1 says the layer's spectrum is far from a random matrix's.", ""]
    if "alpha_median" in fitted:
        lines += ["alpha < 2 (very heavy tail) and alpha > 6 (light tail) are the field's conventions.", ""]
    from hteval.spectra import censored_layers

    censored = censored_layers(table.to_dict("records"))
    if censored:
        lines += [f"**Mostly censored layers.** More than {names.CENSORED_SHARE_LIMIT:.0%} of the eigenvalues of "
                  f"{len(censored)} layer{'s' * (len(censored) > 1)} are at or below the floor. Rank deficiency or "
                  "pruning makes such zeros: a structural zero is not a small eigenvalue of the ensemble, yet the fit "
                  "counts each one as an eigenvalue below the floor, so kappa and scale there depend on where the "
                  "floor lies (the weights' dtype) as much as on the layer.", "",
                  *[f"* {name}: {share:.0%} censored" for name, share in censored.items()], ""]
    return [*lines, *[f"Intervals of {m}: {calibration.note(m)}." for m in dict.fromkeys(table[names.MODEL].dropna())],
            ""]
