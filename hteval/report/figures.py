"""Figures of one fit, for a paper: ESD with the posterior density, rank-ordered spectrum, trace and pair plots;
the figures of a model comparison; and what every report figure shares.

Importing this module imports neither JAX nor ArviZ: `plot_esd`, the one figure `hteval analyze` draws per layer,
evaluates the HTMP density in numpy (`hteval.special.onepoint`) from `FitResult.draws` and `FitResult.layer`. The
other figures, and plot_esd for models without an HTMP one-point law, import the JAX predictive code when called.

Every figure is written by `save`, whole (no cropping at save time), so every text must lie on the canvas: titles
that carry a layer name of any length are fitted to it (`figure_title`, `fit_panel_titles`, `fit_text`), and log
axes label their ticks in plain text (`log_axis`).
"""

from __future__ import annotations

import functools
import math
import struct
import textwrap
import threading
import zlib
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: hteval never opens windows (pyplot, where others import it, uses Agg too)

import numpy as np  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg, RendererAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Polygon, StepPatch  # noqa: E402
from matplotlib.ticker import Formatter, MaxNLocator  # noqa: E402

from hteval import calibration, names  # noqa: E402
from hteval.special import onepoint  # noqa: E402

_LABELS = names.MODEL_LABELS
#: models whose one-eigenvalue law is HTMP(gamma, kappa, scale): their density needs no JAX
_HTMP_LAW = frozenset({"htmp", "htmp-exact"})
_LN10 = np.log(10)


def band_label(model: str, prob: float) -> str:
    """Legend text of a model's credible band, which says when its intervals are not calibrated."""
    caveat = "" if calibration.intervals(model) == names.INTERVALS_CALIBRATED else " (uncalibrated, iid likelihood)"
    return f"{_LABELS[model]} {prob:.0%} band{caveat}"


def _eigenvalues(result) -> np.ndarray:
    """The observed (uncensored) eigenvalues, sorted: from the fitted spectrum, which costs no ArviZ import."""
    if getattr(result, "layer", None) is not None:
        return np.sort(np.asarray(result.layer.eigenvalues, dtype=np.float64))
    return np.sort(np.asarray(result.data["observed_data"]["obs"].values).ravel())


def _thinned(result, sites, n: int) -> dict[str, np.ndarray]:
    """n draws of each site, chains pooled and thinned evenly (the same draws for every site)."""
    flat = {k: np.asarray(result.draws[k], dtype=np.float64).reshape(-1) for k in sites}
    total = next(iter(flat.values())).size
    idx = np.unique(np.linspace(0, total - 1, min(n, total)).astype(int))
    return {k: v[idx] for k, v in flat.items()}


#: posterior draws behind the ESD figure's band, and its grid: the band is quantiles over draws, so a few dozen
#: give its edges to a few percent of their width, and 250 log-spaced points draw even a kappa ~ 500 bulk edge
#: smoothly (checked by eye)
ESD_DRAWS = 40
ESD_POINTS = 250


def _log_density(result, grid: np.ndarray) -> np.ndarray:
    """log f(grid) for ESD_DRAWS posterior draws: (draws, points). numpy for HTMP laws, JAX for the others."""
    if result.model in _HTMP_LAW and getattr(result, "draws", None):
        p = _thinned(result, ("kappa", "scale"), ESD_DRAWS)
        return onepoint.htmp_logpdf_draws(grid, result.record["gamma"], p["kappa"], p["scale"])
    from hteval.predictive import log_density_draws

    return log_density_draws(result, grid, n=ESD_DRAWS)


def plot_esd(result, path: Path, prob: float = 0.9) -> Path:
    """ESD histogram on a log x axis (density of log10 x) with the posterior density median and band, and MP.

    For a censored layer the histogram is scaled by the observed fraction, so that it and the curves are densities
    of the whole spectrum, and the floor is marked.
    """
    rec = result.record
    x = _eigenvalues(result)
    x = x[(x > 0) & np.isfinite(x)]  # a log axis (a fitted layer's eigenvalues are all positive already)
    n_censored, floor = int(rec.get(names.N_CENSORED, 0) or 0), float(rec.get(names.FLOOR, 0.0) or 0.0)
    censored = n_censored > 0 and floor > 0
    grid = np.geomspace(min(x.min(), floor) / 2 if censored else x.min() / 2, x.max() * 2, ESD_POINTS)
    dens = np.exp(_log_density(result, grid)) * grid * _LN10  # density of log10(x) = f(x) x ln 10
    lo, mid, hi = np.quantile(dens, [(1 - prob) / 2, 0.5, (1 + prob) / 2], axis=0)
    mp = np.exp(onepoint.mp_logpdf(grid, rec["gamma"], float(x.mean()))) * grid * _LN10
    heights, edges = np.histogram(np.log10(x), bins=min(60, max(15, x.size // 8)), density=True)
    heights *= x.size / (x.size + n_censored)
    canvas = _esd_canvas()
    canvas.update(np.log10(grid), heights, edges, (lo, mid, hi), mp, np.log10(floor) if censored else None)
    canvas.set_title(str(rec["name"]), f"(M = {rec['M']}, γ = {rec['gamma']:.3g})")
    labels = ("ESD", band_label(result.model, prob), "posterior median", "MP, σ² = mean eigenvalue")
    canvas.set_legend(labels + ((f"floor ({n_censored} censored)",) if censored else ()))
    return save(canvas.fig, path)


_DPI = 150
_PNG = {"compress_level": 1}  # zlib level 1: a third of the encoding time of the default 6, files ~25% larger


class _EsdCanvas:
    """The ESD figure, built once per thread and updated in place for every layer.

    Building a figure, its axes, tick artists and legend costs more than drawing them, so the artists persist and
    only their data, limits, title and (when its labels change) the legend are replaced. Fixed margins replace
    constrained_layout (about a third of the drawing time): they hold the tick labels, axis labels and a one-line
    title, which `set_title` shrinks to fit. Text is drawn through `_TextCache`.
    """

    size = (6.0, 4.0)
    axes = (0.105, 0.12, 0.87, 0.8)  # left, bottom, width, height (figure fractions)

    def __init__(self):
        self.fig = Figure(figsize=self.size, dpi=_DPI, facecolor="white")  # opaque: _write_png drops alpha
        _CachedTextCanvas(self.fig)
        ax = self.ax = self.fig.add_axes(self.axes)
        ax.set_xlabel("log₁₀ eigenvalue")
        ax.set_ylabel("density of log₁₀ eigenvalue")
        for axis in (ax.xaxis, ax.yaxis):  # a paper figure's few ticks; each tick label is a text to draw
            axis.set_major_locator(MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10]))
        # artists added directly, not through plot/stairs/fill_between: the limits are set by hand, so none of the
        # data-limit bookkeeping of those methods is needed
        self.hist = ax.add_artist(StepPatch([0.0], [0.0, 1.0], fill=True, color="0.8"))
        self.band = ax.add_artist(Polygon(np.zeros((3, 2)), closed=True, color="C0", alpha=0.3, lw=0))
        self.median = ax.add_artist(Line2D([], [], color="C0", lw=1.5))
        self.mp = ax.add_artist(Line2D([], [], color="C3", ls="--", lw=1.2))
        self.floor = ax.add_artist(Line2D([0, 0], [0, 1], color="0.3", ls=":", lw=1,
                                          transform=ax.get_xaxis_transform()))
        self.labels: tuple = ()
        self.top = np.zeros(0)  # highest curve or bar at each grid point, for the legend's placement
        self.xs = np.zeros(0)

    def update(self, xs, heights, edges, band, mp, floor) -> None:
        lo, mid, hi = band
        self.hist.set_data(heights, edges)
        self.band.set_xy(np.column_stack([np.concatenate([xs, xs[::-1]]), np.concatenate([lo, hi[::-1]])]))
        self.median.set_data(xs, mid)
        self.mp.set_data(xs, mp)
        self.floor.set_visible(floor is not None)
        self.floor.set_xdata([0.0 if floor is None else floor] * 2)
        self.ax.set_xlim(xs[0], xs[-1])
        bars = np.append(heights, 0.0)[np.searchsorted(edges, xs, side="right") - 1]  # the bar under each point
        self.xs, self.top = xs, np.nan_to_num(np.maximum.reduce([hi, mp, bars]))

    def set_title(self, name: str, detail: str) -> None:
        """Title "name  detail" over the axes, shrunk to fit the canvas if a long layer name needs it (down to 6 pt,
        then the middle of the name gives way to an ellipsis: `fit_text`)."""
        text = self.ax.set_title(f"{name}  {detail}", fontsize=10)
        box = text.get_window_extent(self.fig.canvas.get_renderer())
        centre = (box.x0 + box.x1) / 2
        room = 2 * min(centre, self.fig.bbox.width - centre) - 8  # pixels, centred on the axes
        if box.width > room:
            fit_text(text, name, detail, room / self.fig.dpi, sep="  ", min_size=6.0)

    def set_legend(self, labels: tuple[str, ...]) -> None:
        """Legend in the upper corner where the curves are lower, the y range raised so that no curve passes under
        it. Both corners are judged from one layout (mirrored) instead of the "best" search, which costs a third
        of the drawing time."""
        ax = self.ax
        if labels != self.labels or ax.get_legend() is None:
            handles = [self.hist, self.band, self.median, self.mp, self.floor][:len(labels)]
            ax.legend(handles, labels, frameon=False, fontsize=8, loc="upper left")
            self.labels = labels
        legend = ax.get_legend()
        legend.set_loc("upper left")
        box = legend.get_window_extent(self.fig.canvas.get_renderer()).transformed(ax.transAxes.inverted())
        xs, top = self.xs, self.top
        peak = float(np.max(top, initial=0.0)) or 1.0
        x0, x1 = xs[0], xs[-1]
        best = None
        for loc, (a, b) in (("upper left", (box.x0, box.x1)), ("upper right", (1 - box.x1, 1 - box.x0))):
            under = (xs >= x0 + a * (x1 - x0)) & (xs <= x0 + b * (x1 - x0))
            ylim = max(1.08 * peak, float(np.max(top[under], initial=0.0)) / max(box.y0 - 0.04, 0.05))
            if best is None or ylim < best[0]:
                best = (ylim, loc)
        legend.set_loc(best[1])
        ax.set_ylim(0, best[0])


def _write_png(path, rgba: np.ndarray) -> None:
    """An opaque RGBA canvas as an 8-bit RGB PNG: "up" filter and zlib level 3, in numpy.

    PIL spends three times as long on the same image (its per-row adaptive filter choice) for a file of the same
    size; a figure's flat background and long horizontal runs need nothing cleverer."""
    h, w, _ = rgba.shape
    rows = np.ascontiguousarray(rgba[..., :3]).reshape(h, 3 * w)
    filtered = np.empty((h, 3 * w + 1), np.uint8)
    filtered[:, 0] = 2  # "up": each byte minus the one above it (mod 256)
    filtered[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)  # 8-bit RGB, deflate, no interlace
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(filtered.tobytes(), 3))
                + chunk(b"IEND", b""))


_LOCAL = threading.local()


def _esd_canvas() -> _EsdCanvas:
    if not hasattr(_LOCAL, "esd"):
        _LOCAL.esd = _EsdCanvas()
    return _LOCAL.esd


class _TextCache(RendererAgg):
    """Agg renderer that rasterises each distinct plain-text string (font, size, angle) once per process.

    matplotlib 3.11 renders text glyph by glyph in Python (~0.1 ms a glyph here), which made text most of the ESD
    figure's drawing time although its axis labels, legend and most tick labels repeat from layer to layer. A
    string is drawn once into a scratch renderer by Agg itself and its coverage bitmap kept; later draws blit it at
    the whole-pixel position (as matplotlib did before 3.11). Math text and anything unexpected go to Agg.
    """

    def draw_text(self, gc, x, y, s, prop, angle, ismath=False, mtext=None):
        if ismath or not gc.get_antialiased():
            return super().draw_text(gc, x, y, s, prop, angle, ismath, mtext)
        image, dx, dy = _coverage(s, prop.copy(), float(angle), float(self.dpi))
        if image.size:
            self._renderer.draw_text_image(image, int(round(x)) + dx, int(round(y)) + dy, 0, gc)


@functools.lru_cache(maxsize=2048)
def _coverage(s: str, prop, angle: float, dpi: float) -> tuple[np.ndarray, int, int]:
    """Coverage bitmap of one string and its offset from the text anchor (left column, row below the bottom)."""
    w, h, d = RendererAgg(1, 1, dpi).get_text_width_height_descent(s, prop, False)
    # the text box [0, w] x [-d, h - d] about its anchor (y up), rotated: its extent in the scratch canvas
    c, si = np.cos(np.radians(angle)), np.sin(np.radians(angle))
    bx, by = np.array([0, w, w, 0]), np.array([-d, -d, h - d, h - d])
    rx, ry = c * bx - si * by, si * bx + c * by
    pad = 4
    left, top = int(np.ceil(-rx.min())) + pad, int(np.ceil(ry.max())) + pad  # anchor position, y down
    scratch = RendererAgg(left + int(np.ceil(rx.max())) + pad, top + int(np.ceil(-ry.min())) + pad, dpi)
    gc = scratch.new_gc()
    gc.set_foreground((0.0, 0.0, 0.0, 1.0), isRGBA=True)
    RendererAgg.draw_text(scratch, gc, left, top, s, prop, angle)
    gc.restore()
    alpha = np.asarray(scratch.buffer_rgba())[..., 3]
    rows, cols = np.flatnonzero(alpha.any(axis=1)), np.flatnonzero(alpha.any(axis=0))
    if rows.size == 0:
        return np.zeros((0, 0), np.uint8), 0, 0
    image = np.ascontiguousarray(alpha[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1])
    return image, int(cols[0]) - left, int(rows[-1]) + 1 - top


class _CachedTextCanvas(FigureCanvasAgg):
    """Agg canvas drawing with `_TextCache`."""

    def get_renderer(self):
        key = (*self.get_width_height(physical=True), self.figure.dpi)
        if self._lastKey != key:
            self.renderer = _TextCache(key[0], key[1], key[2])
            self._lastKey = key
        return self.renderer


def plot_rank(result, path: Path, prob: float = 0.9, n: int = 100) -> Path:
    """Rank-ordered spectrum (log-log) against posterior predictive spectra: tail misfit shows at low ranks."""
    from hteval.predictive import predictive_spectra

    return _rank_figure(_eigenvalues(result), predictive_spectra(result, n), prob, "posterior predictive",
                        (str(result.record["name"]), _LABELS[result.model]), path)


def plot_prior_predictive(result, path: Path, prob: float = 0.9) -> Path:
    """Rank-ordered spectrum against the prior predictive spectra (`hteval.predictive.add_prior_predictive`): the
    priors should cover the observed spectrum comfortably, far wider than the posterior band."""
    spectra = np.asarray(result.data["prior_predictive"]["obs"].values)[0]
    x = _eigenvalues(result)
    # kappa near 1e-3 puts prior quantiles at the bottom of double precision; the band is drawn to 6 decades
    # around the data, where a reader can still see the observed spectrum
    window = (x.min() * 1e-6, x.max() * 1e6)
    return _rank_figure(x, spectra, prob, "prior predictive",
                        (str(result.record["name"]), f"{_LABELS[result.model]}, prior predictive check"), path,
                        ylim=window, band_note=" (clipped at 6 decades from the data)")


def _rank_figure(x, spectra, prob, what, title, path, ylim=None, band_note=""):
    x, spectra = x[::-1], spectra[:, ::-1]
    rank = np.arange(1, x.size + 1)
    lo, mid, hi = np.quantile(spectra, [(1 - prob) / 2, 0.5, (1 + prob) / 2], axis=0)
    fig, ax = subplots(figsize=(6, 4), constrained_layout=True)
    ax.fill_between(rank, lo, hi, color="C0", alpha=0.3, label=f"{what} {prob:.0%}{band_note}")
    ax.plot(rank, mid, color="C0", lw=1, label=f"{what} median")
    ax.plot(rank, x, "k.", ms=3, label="observed")
    _log_log(ax)
    ax.set_xlabel("rank")
    ax.set_ylabel("eigenvalue")
    if ylim is not None:
        ax.set_ylim(*ylim)
    figure_title(fig, *title)
    ax.legend(frameon=False, fontsize=8)
    return save(fig, path)


def _log_log(ax) -> None:
    ax.set_xscale("log")
    ax.set_yscale("log")
    log_axis(ax.xaxis)
    log_axis(ax.yaxis)


def plot_trace_pair(result, path: Path) -> Path:
    """Trace of each parameter per chain, and the pair plot of the first two (log axes for positive ones)."""
    post = result.data["posterior"].to_dataset()
    shown = list(result.summary.index)[:2]
    fig, axes = subplots(1, 3, figsize=(11, 3.4), constrained_layout=True)
    for ax, name in zip(axes[:2], shown, strict=True):
        for i, chain in enumerate(post[name].values):
            ax.plot(chain, lw=0.5, color=f"C{i}", label=f"chain {i + 1}")
        r_hat = float(result.summary.loc[name, "r_hat"])
        ax.set_title(f"{name}  (R-hat {r_hat:.3f})" if np.isfinite(r_hat) else name)  # exact draws have none
        ax.set_xlabel("draw")
    handles, labels = axes[0].get_legend_handles_labels()
    legend = fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 8), frameon=False,
                        fontsize=8)
    for line in legend.get_lines():  # the traces' hairlines would hide their colour in the key
        line.set_linewidth(2)
    a, b = (post[n].values.ravel() for n in shown)
    axes[2].plot(a, b, ".", ms=1.5, alpha=0.4)
    if np.all(a > 0):
        axes[2].set_xscale("log")
        log_axis(axes[2].xaxis)
    if np.all(b > 0):
        axes[2].set_yscale("log")
        log_axis(axes[2].yaxis)
    axes[2].set_xlabel(shown[0])
    axes[2].set_ylabel(shown[1])
    if not result.converged:  # 130 characters at 9 pt: a line across the figure
        fig.suptitle(textwrap.fill("NOT CONVERGED: " + "; ".join(result.diagnostics["reasons"]), 130), color="C3",
                     fontsize=9)
    return save(fig, path)


def plot_comparison(comparison, out: Path, prob: float = 0.9) -> list[Path]:
    """The figures of `hteval compare`: every model's posterior density over the ESD, every model's posterior
    predictive rank-ordered spectrum over the observed one (a panel each), and the evidence and ELPD differences."""
    out = Path(out)
    return [_comparison_density(comparison, out / "compare_density.png"),
            _comparison_rank(comparison, out / "compare_rank.png", prob),
            _comparison_elpd(comparison, out / "compare_elpd.png")]


def _model_label(comparison, model):
    """The model's name with its posterior probability from the exact evidence (names.WEIGHT)."""
    weight = comparison.table.loc[model, names.WEIGHT]
    flag = "" if comparison.table.loc[model, names.CONVERGED] else ", not converged"
    probability = f"P = {weight:.2f}" if np.isfinite(weight) else "no evidence"
    return f"{_LABELS[model]} ({probability}{flag})"


def _comparison_density(comparison, path):
    from hteval.predictive import log_density_draws

    first = next(iter(comparison.fits.values()))
    x = _eigenvalues(first)
    grid = np.geomspace(x.min() / 2, x.max() * 2, 400)
    fig, ax = subplots(figsize=(6.5, 4.2), constrained_layout=True)
    heights, *_ = ax.hist(np.log10(x), bins=min(60, max(15, x.size // 8)), density=True, color="0.85", label="ESD")
    top = heights.max()
    for i, model in enumerate(comparison.table.index):
        dens = np.median(np.exp(log_density_draws(comparison.fits[model], grid, n=100)), axis=0)
        dens = dens * grid * np.log(10)
        top = max(top, np.quantile(dens, 0.99))
        ax.plot(np.log10(grid), dens, color=f"C{i}", lw=1.5 if i == 0 else 1, label=_model_label(comparison, model))
    ax.set_ylim(0, 1.3 * top)
    ax.set_xlabel("log₁₀ eigenvalue")
    ax.set_ylabel("density of log₁₀ eigenvalue")
    figure_title(fig, str(comparison.layer), "posterior median densities, best first")
    ax.legend(frameon=False, fontsize=7)
    return save(fig, path)


#: compare_rank's panels per row: six models (hteval compare's default set less one) make two rows of three
_RANK_COLUMNS = 3


def _comparison_rank(comparison, path, prob):
    """One panel per model, best first, on shared axes: its posterior predictive median and band over the observed
    spectrum (overlaid, the bands of six models hide each other and the data)."""
    first = next(iter(comparison.fits.values()))
    x = _eigenvalues(first)[::-1]
    rank = np.arange(1, x.size + 1)
    models = list(comparison.table.index)
    fig, axes = small_multiples(len(models), columns=_RANK_COLUMNS, panel=(2.7, 2.2), xlabel="rank",
                                ylabel="eigenvalue", sharey=True)
    for i, (ax, model) in enumerate(zip(axes, models, strict=True)):
        spectra = np.asarray(comparison.fits[model].data["posterior_predictive"]["obs"].values)[0][:, ::-1]
        lo, mid, hi = np.quantile(spectra, [(1 - prob) / 2, 0.5, (1 + prob) / 2], axis=0)
        ax.fill_between(rank, lo, hi, color=f"C{i}", alpha=0.3, lw=0)
        ax.plot(rank, mid, color=f"C{i}", lw=1.2)
        ax.plot(rank, x, "k.", ms=2)
        _log_log(ax)
        ax.set_title(_model_label(comparison, model), fontsize=8)
    axes[0].set_ylim(x.min() / 3, x.max() * 3)
    key = [Line2D([], [], color="k", ls="none", marker=".", ms=4), Line2D([], [], color="0.4", lw=1.2),
           Polygon(np.zeros((3, 2)), color="0.4", alpha=0.3, lw=0)]
    fig.legend(key, ["observed", "posterior predictive median", f"{prob:.0%} band"], loc="outside lower center",
               ncols=3, frameon=False, fontsize=8)
    figure_title(fig, str(comparison.layer), "posterior predictive spectra, best model first")
    fit_panel_titles(fig, axes)
    return save(fig, path)


def _comparison_elpd(comparison, path):
    """The evidence ranking (log evidence minus the best's, filled; with priors twice as wide, open) beside PSIS-LOO
    among the iid models (ELPD minus the best iid model's, +- 1 se), best first by evidence, on linear axes: a
    difference reads off as a distance."""
    table = comparison.table
    fig, (left, right) = subplots(1, 2, sharey=True, figsize=(8.5, 0.45 * len(table) + 1.8), constrained_layout=True)
    y = np.arange(len(table))[::-1]
    wide = table[names.LOG_EVIDENCE_WIDE] - table[names.LOG_EVIDENCE_WIDE].max()
    left.plot(table[names.D_LOG_EVIDENCE], y, "o", color="k", ms=4, label="priors as fitted")
    left.plot(wide, y, "o", mfc="none", color="C0", ms=6, label="priors twice as wide")
    right.errorbar(table[names.D_ELPD], y, xerr=table[names.D_SE], fmt="o", color="k", ms=4, capsize=3)
    for ax in (left, right):
        ax.axvline(0, color="0.6", lw=0.8)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
        ax.grid(axis="x", color="0.92")
    left.set_yticks(y, [_model_label(comparison, m) for m in table.index], fontsize=8)
    left.set_ylim(y.min() - 0.6, y.max() + 0.6)  # a margin of rows, not of the range: two models stay apart
    left.set_title("exact evidence", fontsize=9)
    left.set_xlabel("log evidence minus the best's")
    right.set_title("PSIS-LOO, iid models", fontsize=9)
    right.set_xlabel("ELPD minus the best's, ± 1 se")
    left.legend(frameon=False, fontsize=7)
    figure_title(fig, str(comparison.layer), "model comparison, best first by exact evidence")
    return save(fig, path)


_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def _power_of_ten(value: float, _position=None) -> str:
    """A log axis's tick label in plain text: 0.01 ... 1000 as numbers, other powers of ten as 10 with a Unicode
    superscript. matplotlib's default labels are mathtext, whose parser costs a second to build on first use."""
    if value <= 0:
        return ""
    exponent = int(np.round(np.log10(value)))
    if not np.isclose(value, 10.0**exponent, rtol=1e-9):
        return ""
    return f"{value:g}" if -2 <= exponent <= 3 else "10" + str(exponent).translate(_SUPERSCRIPT)


def _plain_number(digit: int, exponent: int) -> str:
    """digit x 10^exponent as _power_of_ten writes powers of ten: a plain number from 0.01 to 9000."""
    if -2 <= exponent <= 3:
        return f"{digit * 10.0**exponent:g}"
    return f"{digit}×10" + str(exponent).translate(_SUPERSCRIPT)


class _MinorLogLabels(Formatter):
    """A log axis's minor tick labels where its view spans two decades or less, which its powers of ten alone leave
    with three labels at most, often none: 2 and 5 times a power of ten, 3 too within a decade or so, and every
    minor tick within half a decade, where they lie far enough apart. A wider view leaves minor ticks unlabelled."""

    span = math.inf  # decades in view, set with the tick locations (once for all the ticks of a draw)

    def set_locs(self, locs):
        super().set_locs(locs)
        low, high = sorted(self.axis.get_view_interval())
        self.span = math.log10(high / low) if low > 0 else math.inf

    def __call__(self, value, pos=None):
        span = self.span
        if value <= 0 or span > 2.2:
            return ""
        exponent = math.floor(math.log10(value) + 1e-9)
        digit = round(value / 10.0**exponent)
        if (span > 1.2 and digit not in (2, 5)) or (span > 0.5 and digit not in (2, 3, 5)):
            return ""
        return _plain_number(digit, exponent)


def log_axis(axis) -> None:
    """Label a log-scaled axis (ax.xaxis or ax.yaxis, after set_xscale("log")) in plain text at its powers of ten,
    and at some minor ticks where the view spans two decades or less (`_MinorLogLabels`)."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    axis.set_major_locator(LogLocator(base=10.0))
    axis.set_major_formatter(FuncFormatter(_power_of_ten))
    axis.set_minor_formatter(_MinorLogLabels())


#: blank canvas kept either side of a title fitted to the figure's width, in inches
_TITLE_MARGIN = 0.1


def figure_title(fig, name: str, detail: str, *, fontsize: float = 10):
    """The figure's title: "name: detail" on one line where it fits the canvas, else the name (a layer's, usually)
    over the detail, shrunk and cut by `fit_text` where a long name needs it. Returns the Text."""
    text = fig.suptitle(f"{name}: {detail}", fontsize=fontsize)
    room = fig.get_figwidth() - 2 * _TITLE_MARGIN
    if _saved_width(text) > room:
        fit_text(text, name, detail, room, sep="\n", min_size=7.0)
    return text


def fit_panel_titles(fig, axes) -> None:
    """Fit each axes' title within the axes' width (`fit_text`) as a first run of the layout engine places them: a
    title no wider than its axes stays on the canvas, and the final layout, with titles no wider than before, only
    widens the axes."""
    fig.get_layout_engine().execute(fig)
    for ax in axes:
        title, room = ax.title, ax.get_position().width * fig.get_figwidth()
        text = title.get_text()
        if " " in text and _saved_width(title) > room:
            text = _two_lines(text)
        fit_text(title, text, "", room, sep="", min_size=6.0)


def _two_lines(text: str) -> str:
    """The text broken before its parenthesis (a model's name above its probability), else at its middle space."""
    at = text.find(" (")
    if at < 0:
        at = min((i for i, c in enumerate(text) if c == " "), key=lambda i: abs(2 * i - len(text)))
    return f"{text[:at]}\n{text[at + 1:]}"


def fit_text(text, name: str, detail: str, room: float, *, sep: str, min_size: float):
    """Set `text` to name, sep and detail within `room` inches of the saved figure: the font shrunk as far as
    `min_size` points, then the middle of the name cut out (`middle_ellipsis`: its ends say which layer it is).
    Returns the Text."""
    renderer = RendererAgg(1, 1, _DPI)
    text.set_text(f"{name}{sep}{detail}")
    width = _saved_width(text, renderer)
    if width > room:
        text.set_fontsize(max(min_size, text.get_fontsize() * room / width))
        width = _saved_width(text, renderer)
    keep = len(name)
    while width > room and keep > 8:
        keep = max(8, min(keep - 2, int(keep * room / width)))
        text.set_text(f"{middle_ellipsis(name, keep)}{sep}{detail}")
        width = _saved_width(text, renderer)
    return text


def _saved_width(text, renderer=None) -> float:
    """A text's width in inches as `save` writes it: measured at _DPI, since glyphs fitted to whole pixels make the
    widths at another resolution differ by a few percent."""
    return text.get_window_extent(renderer or RendererAgg(1, 1, _DPI), dpi=_DPI).width / _DPI


def middle_ellipsis(name: str, keep: int) -> str:
    """`name` cut to about `keep` characters by an ellipsis in its middle."""
    if len(name) <= keep:
        return name
    return f"{name[:keep // 2]}…{name[len(name) - keep // 2:]}"


def small_multiples(n: int, *, columns: int, panel: tuple[float, float], xlabel: str, ylabel: str,
                    sharey: bool = False):
    """A figure of n panels on a grid `columns` wide with a shared x axis (constrained layout): the axes in use,
    the rest hidden, with x tick labels and the x label under the lowest panel of every column (also where the
    row below is short) and the y label left of each row."""
    columns = min(columns, n)
    rows = math.ceil(n / columns)
    fig, grid = subplots(rows, columns, figsize=(max(4.8, panel[0] * columns), panel[1] * rows + 0.8), sharex=True,
                         sharey=sharey, squeeze=False, constrained_layout=True)
    axes = list(grid.flat[:n])
    for ax in grid.flat[n:]:
        ax.set_visible(False)
    for column in range(columns):
        lowest = grid[(n - 1 - column) // columns, column]
        lowest.xaxis.set_tick_params(labelbottom=True)
        lowest.set_xlabel(xlabel)
    for ax in grid[:, 0]:
        ax.set_ylabel(ylabel)
    return fig, axes


def subplots(*args, **kwargs):
    """A figure and axes, Agg canvas attached, as pyplot.subplots without pyplot: its import and figure registry
    are not needed for files (the ESD figure's own path never imports it)."""
    fig = Figure(figsize=kwargs.pop("figsize", None), constrained_layout=kwargs.pop("constrained_layout", None))
    FigureCanvasAgg(fig)
    return fig, fig.subplots(*args, **kwargs)


def save(fig, path: Path) -> Path:
    """Write a figure as a PNG at _DPI, the whole canvas (no tight cropping): every figure hteval saves passes
    through here, so that one place decides how figures are written."""
    if isinstance(fig.canvas, _CachedTextCanvas):  # the ESD canvas, written without PIL (`_write_png`)
        fig.canvas.draw()
        _write_png(path, np.asarray(fig.canvas.buffer_rgba()))
    else:
        fig.savefig(path, dpi=_DPI, pil_kwargs=_PNG)
    return Path(path)
