"""The ESD figure: its numpy HTMP density (`hteval.special.onepoint`) against the JAX one and mpmath, and the figure
itself (written without JAX, every text inside the canvas, the legend over no curve). Then every figure the report
code saves, from small synthetic fits, comparisons and tables: inspected in the draw that writes each file, every
text lies on the canvas and no axis's tick labels collide."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import mpmath
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from matplotlib.text import Text
from PIL import Image

from hteval import names
from hteval.sampling import sample_htmp_spectrum
from hteval.special import onepoint


def _plot_grid(gamma, kappa, scale, m=200):
    """The points an ESD figure of a sampled layer evaluates (its x range widened by 2 either side)."""
    x = sample_htmp_spectrum(1, m, gamma, kappa, scale)
    x = x[x > 1e-20 * scale]  # JAX's small-s closed form is not trusted below (see test_deep_tails_against_mpmath)
    return np.geomspace(x.min() / 2, x.max() * 2, 250)


def test_density_matches_jax():
    """Against `hteval.densities.htmp.htmp_logpdf` at gamma = 1 on the points of a figure of a layer drawn at each
    kappa. Jitted (kappa traced: its log-kappa interpolation agrees with exact contour sums to ~1e-10): one
    compilation serves every kappa, where eager calls would compile each. Other gammas: the mpmath test below."""
    import jax

    from hteval.densities.htmp import htmp_logpdf

    reference = jax.jit(lambda x, kappa, scale: htmp_logpdf(x, 1.0, kappa, scale))
    scale = 0.7
    for kappa in (1e-3, 0.5, 1e3):
        grid = _plot_grid(1.0, kappa, scale)
        expected = np.asarray(reference(grid, kappa, scale))
        got = onepoint.htmp_logpdf_draws(grid, 1.0, [kappa, kappa], [scale, scale])
        assert got.shape == (2, grid.size)
        np.testing.assert_array_equal(got[0], got[1])
        assert np.all(np.isfinite(expected)) and np.all(np.isfinite(got))
        assert np.max(np.abs(got[0] - expected)) < 1e-4, kappa


REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"


@pytest.mark.parametrize("name, every", [("htmp_logpdf_reference.npz", 19), ("htmp_logpdf_reference_square.npz", 1)])
def test_density_matches_mpmath_reference(name, every):
    """SPEC section 5's mpmath values (gamma 0.03 to 0.91 and 1, kappa 0.02 to 150, integer a included): every
    point of every `every`-th aspect ratio (all 149 take a minute; their largest error is 9e-6)."""
    d = np.load(REFERENCE / name)
    for gamma in np.unique(d["gamma"])[::every]:
        at = np.flatnonzero(d["gamma"] == gamma)
        # one call per aspect ratio: every point against every (kappa, scale), the diagonal kept
        got = np.diag(onepoint.htmp_logpdf_draws(d["x"][at], gamma, d["kappa"][at], d["scale"][at]))
        np.testing.assert_allclose(got, d["logpdf"][at], rtol=0, atol=2e-5)


def _mpmath_logpdf(x, gamma, kappa):
    """log f of SPEC section 2 at 40 digits (scale 1); U on the cut from just above it."""
    with mpmath.workdps(40):
        x, g, k = mpmath.mpf(x), mpmath.mpf(gamma), mpmath.mpf(kappa)
        b, n = k / 2, k / (2 * g)
        a, y = b * (1 / g - 1) - 1, n * x
        u = mpmath.hyperu(b, -a, mpmath.mpc(-y, y * mpmath.mpf(10) ** -30))
        return float(mpmath.log(n) - mpmath.loggamma(b + 1) - mpmath.loggamma(n) + a * mpmath.log(y) - y
                     - 2 * mpmath.log(abs(u)))


@pytest.mark.parametrize("gamma, kappa, s", [(0.5, 1e-3, 1e-30), (0.5, 1e-3, 1e-200), (0.9, 0.01, 1e-25),
                                             (1.0, 0.1, 1e-40), (1.0, 30.0, 1e-20), (0.25, 1e-3, 1e5),
                                             (1.0, 0.01, 1e7)])
def test_deep_tails_against_mpmath(gamma, kappa, s):
    """Far below and far above the contour nodes the closed forms take over. The first three points are where
    `hteval.special.asymptotic.small_s` (JAX) is off by 0.5 and 5e-4: its Taylor branch for lgamma(b + e) -
    lgamma(b) is used for e < 1e-3 even when e is not small against b."""
    got = onepoint.htmp_logpdf_draws([s], gamma, [kappa], [1.0])[0, 0]
    assert abs(got - _mpmath_logpdf(s, gamma, kappa)) < 1e-6


@pytest.mark.parametrize("gamma, kappa", [(0.25, 0.1), (0.0126, 1e3), (0.75, 5e3), (1.0, 2.0), (0.25, 1e5)])
def test_normalised(gamma, kappa):
    """The density integrates to 1 (in t = log x, out to x = 1e-300) and its mean is the scale. At gamma = 1 the
    mass below s ~ 1/(b |log y|) is added: it decays too slowly for any finite range. kappa = 1e5 is MP."""
    scale = 2.5
    t = np.linspace(np.log(1e-300), np.log(1e4), 200_001)
    x = np.exp(t) * scale
    f = np.exp(onepoint.htmp_logpdf_draws(x, gamma, [kappa], [scale])[0]) * x
    below = 1 / (kappa / 2 * abs(np.log(kappa / (2 * gamma) * 1e-300))) if gamma == 1.0 else 0.0
    assert abs(np.trapezoid(f, t) + below - 1) < 2e-5
    assert abs(np.trapezoid(f * x, t) / scale - 1) < 5e-5


def test_mp_density():
    from hteval.densities.mp import mp_logpdf

    for gamma in (0.0126, 0.5, 1.0):
        x = np.geomspace(1e-6, 10, 2001)
        np.testing.assert_allclose(onepoint.mp_logpdf(x, gamma, 1.3), np.asarray(mp_logpdf(x, gamma, 1.3)),
                                   rtol=1e-12, atol=1e-12)
        s = np.linspace(0, 5, 400_001)[1:]
        assert abs(np.trapezoid(np.exp(onepoint.mp_logpdf(s, gamma, 1.0)), s) - 1) < (3e-3 if gamma == 1 else 1e-5)


def test_never_nan():
    x = np.array([-1.0, 0.0, 1e-320, 1e-300, 0.5, 3.0, 1e300, np.inf, np.nan])
    kappa = np.array([np.nan, -1.0, 0.0, 1e-6, 1e-3, 1.0, 1e3, 1e4, 2e4, 1e8, np.inf])
    out = onepoint.htmp_logpdf_draws(x, 0.5, kappa, np.ones(kappa.size))
    assert not np.isnan(out).any()
    assert np.all(out[:3] == -np.inf) and np.all(out[-1] == -np.inf)  # invalid kappa: no density
    assert np.all(out[:, [0, 1, 7, 8]] == -np.inf)  # x <= 0, inf, nan
    np.testing.assert_allclose(out[3], onepoint.htmp_logpdf_draws(x, 0.5, [1e-3], [1.0])[0], rtol=1e-10)  # 1e-3
    np.testing.assert_array_equal(out[9], onepoint.mp_logpdf(x, 0.5, 1.0))  # kappa above KAPPA_MP: MP
    for bad_scale in (0.0, -1.0, np.nan):
        assert np.all(onepoint.htmp_logpdf_draws(x, 0.5, [1.0], [bad_scale]) == -np.inf)
    assert not np.isnan(onepoint.mp_logpdf(x, 1.0, 1.0)).any()


def _result(gamma, kappa, m=384, model="htmp-exact", floor_fraction=0.0, name=None, seed=0):
    """A stand-in FitResult: a sampled layer and draws around the true (kappa, scale)."""
    x = sample_htmp_spectrum(seed, m, gamma, kappa, 1.0)
    floor = floor_fraction * x.mean()
    kept = np.sort(x[x > floor])
    layer = SimpleNamespace(eigenvalues=kept)
    rng = np.random.default_rng(seed)
    draws = {"kappa": kappa * np.exp(0.1 * rng.standard_normal((2, 300))),
             "scale": np.exp(0.03 * rng.standard_normal((2, 300)))}
    record = {"name": name or f"layer gamma={gamma} kappa={kappa}", "gamma": gamma, "M": m,
              "n_censored": m - kept.size, "floor": floor}
    return SimpleNamespace(model=model, record=record, layer=layer, draws=draws, prob=0.9, converged=True,
                           diagnostics={"reasons": []})


_NO_JAX = textwrap.dedent("""
    import sys
    from types import SimpleNamespace
    import numpy as np
    import hteval.report.figures as figures
    heavy = [m for m in ("jax", "numpyro", "arviz") if m in sys.modules]
    assert not heavy, f"importing the figures imported {heavy}"
    from hteval.sampling import sample_htmp_spectrum
    x = np.sort(sample_htmp_spectrum(0, 128, 1.0, 5.0, 1.0))
    draws = {"kappa": np.full((2, 50), 2.0), "scale": np.ones((2, 50))}
    record = {"name": "w", "gamma": 1.0, "M": 128, "n_censored": 0, "floor": 0.0}
    result = SimpleNamespace(model="htmp-exact", record=record, layer=SimpleNamespace(eigenvalues=x), draws=draws)
    figures.plot_esd(result, sys.argv[1])
    heavy = [m for m in ("jax", "numpyro", "arviz", "xarray") if m in sys.modules]
    assert not heavy, f"plot_esd imported {heavy}"
""")


def test_plot_esd_without_jax(tmp_path):
    """In a fresh interpreter (this one has JAX loaded by conftest): the module and an HTMP figure load no JAX."""
    path = tmp_path / "esd.png"
    run = subprocess.run([sys.executable, "-c", _NO_JAX, str(path)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    image = Image.open(path)
    assert image.format == "PNG" and image.size == (900, 600)


def _drawn_texts(ax):
    """Every text the figure shows: title, axis labels, legend, and the tick labels inside the view limits (the
    axis keeps spare tick artists beyond them, which are not drawn)."""
    fig = ax.figure
    fig.canvas.draw()
    x0, x1 = sorted(ax.get_xlim())
    y0, y1 = sorted(ax.get_ylim())
    ticks = ([t for t in ax.get_xticklabels() if x0 <= t.get_position()[0] <= x1]
             + [t for t in ax.get_yticklabels() if y0 <= t.get_position()[1] <= y1])
    texts = [ax.title, ax.xaxis.label, ax.yaxis.label, ax.xaxis.offsetText, ax.yaxis.offsetText,
             *ax.get_legend().get_texts(), *ticks]
    return [t for t in texts if t.get_visible() and t.get_text().strip()]


def _texts_inside(ax):
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    width, height = fig.bbox.width, fig.bbox.height
    texts = _drawn_texts(ax)
    assert len(texts) > 10  # labels, title, legend, ticks
    for text in texts:
        box = text.get_window_extent(renderer)
        assert box.x0 >= -0.5 and box.y0 >= -0.5 and box.x1 <= width + 0.5 and box.y1 <= height + 0.5, text


@pytest.mark.parametrize("result", [
    _result(1.0, 0.5, floor_fraction=5e-12, name="encoder.layer.0.attention.self.query.weight"),  # heavy, censored
    _result(0.25, 300.0, model="htmp"),  # bulk-like, the iid model's longer band label
    _result(0.5, 5.0, name="model.decoder.layers.23.encoder_attn.out_proj.weight." + "long_" * 30 + "end"),
], ids=["heavy-censored", "bulk", "long-name"])
def test_esd_figure_layout(result, tmp_path):
    from hteval.report import figures

    path = figures.plot_esd(result, tmp_path / "esd.png")
    canvas = figures._esd_canvas()
    fig, ax = canvas.fig, canvas.ax
    # the file is the canvas, losslessly
    np.testing.assert_array_equal(np.asarray(Image.open(path)), np.asarray(fig.canvas.buffer_rgba())[..., :3])
    _texts_inside(ax)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[:3] == ["ESD", figures.band_label(result.model, 0.9), "posterior median"]
    assert len(labels) == (5 if result.record["n_censored"] else 4) and canvas.floor.get_visible() == (len(labels) == 5)
    # no curve or bar passes under the legend
    box = ax.get_legend().get_window_extent(fig.canvas.get_renderer()).transformed(ax.transData.inverted())
    under = (canvas.xs >= box.x0) & (canvas.xs <= box.x1)
    assert np.max(canvas.top[under], initial=0.0) < box.y0


def test_esd_band_follows_the_draws(tmp_path):
    """The median curve is the density of the median draw; the band is as wide as the draws are spread."""
    from hteval.report import figures

    result = _result(0.25, 30.0)

    def band_width():
        canvas = figures._esd_canvas()
        n = canvas.xs.size
        y = canvas.band.get_xy()[:2 * n, 1]  # lower edge left to right, upper edge back (closed: one more vertex)
        return np.max(y[n:][::-1] - y[:n])

    result.draws = {"kappa": np.full((1, 40), 30.0), "scale": np.ones((1, 40))}
    figures.plot_esd(result, tmp_path / "a.png")
    canvas = figures._esd_canvas()
    grid = 10 ** canvas.xs
    expected = np.exp(onepoint.htmp_logpdf_draws(grid, 0.25, [30.0], [1.0])[0]) * grid * np.log(10)
    np.testing.assert_allclose(canvas.median.get_ydata(), expected, rtol=1e-12, atol=1e-300)
    assert band_width() == 0
    result.draws = {"kappa": 30.0 * np.exp(np.linspace(-1, 1, 40))[None], "scale": np.ones((1, 40))}
    figures.plot_esd(result, tmp_path / "b.png")
    assert band_width() > 0.05 * np.max(canvas.median.get_ydata())


# --- every figure the report code saves: readable as written -----------------------------------------------------

LAYER = "encoder.layer.11.attention.output.dense.weight"
LONG_LAYER = "model.decoder.layers.23.encoder_attn.out_proj.weight." + "long_" * 30 + "end"


@dataclass
class _Saved:
    """One saved figure as the draw that wrote its file left it: the canvas and every text drawn, in the saved
    image's pixels."""

    figure: object
    path: Path
    size: tuple[float, float]
    texts: list  # (Text, its extent)


def _watch_saves(monkeypatch) -> dict[str, _Saved]:
    """Figures saved by the report code, by file name, inspected inside the draw that writes the file (at the
    saved resolution, after the layout engine ran). Every module under hteval.report saves through
    `figures.save`; a figure written any other way fails the test."""
    import hteval.report
    from hteval.report import figures

    found, saving, drawn = {}, [], []
    text_draw, figure_draw, savefig, write_png = Text.draw, Figure.draw, Figure.savefig, figures._write_png
    save = figures.save

    def draw_text(self, renderer):
        if saving:
            drawn.append(self)
        return text_draw(self, renderer)

    def draw_figure(self, renderer):
        drawn.clear()
        figure_draw(self, renderer)
        if saving:  # extents now, while the figure has the dpi it is written at
            texts = [(t, t.get_window_extent(renderer)) for t in drawn if t.get_visible() and t.get_text().strip()]
            found[saving[-1].name] = _Saved(self, saving[-1], (self.bbox.width, self.bbox.height), texts)

    def checked_save(fig, path):
        saving.append(Path(path))
        try:
            return save(fig, path)
        finally:
            saving.pop()

    def outside_save(original):
        def guarded(*args, **kwargs):
            assert saving, "a figure written without hteval.report.figures.save"
            return original(*args, **kwargs)
        return guarded

    monkeypatch.setattr(Text, "draw", draw_text)
    monkeypatch.setattr(Figure, "draw", draw_figure)
    monkeypatch.setattr(Figure, "savefig", outside_save(savefig))
    monkeypatch.setattr(figures, "_write_png", outside_save(write_png))
    for info in pkgutil.iter_modules(hteval.report.__path__):
        module = importlib.import_module(f"hteval.report.{info.name}")
        if getattr(module, "save", None) is save:
            monkeypatch.setattr(module, "save", checked_save)
    return found


def _unreadable(s: _Saved) -> list[str]:
    """Texts outside the canvas (a pixel's tolerance), and tick labels of one axis that overlap each other."""
    width, height = s.size
    problems = [f"{s.path.name}: {t.get_text()!r} at x {b.x0:.0f}..{b.x1:.0f}, y {b.y0:.0f}..{b.y1:.0f}, outside "
                f"the {width:.0f} x {height:.0f} canvas"
                for t, b in s.texts if b.x0 < -1 or b.y0 < -1 or b.x1 > width + 1 or b.y1 > height + 1]
    for ax in s.figure.axes:
        for axis in (ax.xaxis, ax.yaxis):
            ticks = _tick_label_boxes(s, axis)
            problems += [f"{s.path.name}: tick labels {a!r} and {b!r} overlap" for i, (a, box) in enumerate(ticks)
                         for b, other in ticks[i + 1:] if _overlap(box, other)]
    return problems


def _overlap(a, b) -> bool:
    """Two boxes share more than half a pixel each way (touching is no overlap)."""
    return min(a.x1, b.x1) - max(a.x0, b.x0) > 0.5 and min(a.y1, b.y1) - max(a.y0, b.y0) > 0.5


def _tick_label_boxes(s: _Saved, axis) -> list[tuple[str, object]]:
    """The drawn tick labels of one axis (major and minor) with their extents, in axis order."""
    labels = {id(t) for tick in axis.get_major_ticks() + axis.get_minor_ticks() for t in (tick.label1, tick.label2)}
    boxes = [(t.get_text(), b) for t, b in s.texts if id(t) in labels]
    along = 0 if axis.axis_name == "x" else 1
    return sorted(boxes, key=lambda item: (item[1].x0, item[1].y0)[along])


def _assert_readable(found: dict[str, _Saved]) -> None:
    problems = [p for s in found.values() for p in _unreadable(s)]
    assert not problems, "\n".join(problems)
    for s in found.values():  # the file is the whole canvas: nothing cropped at save time hides a cut-off text
        assert Image.open(s.path).size == (round(s.size[0]), round(s.size[1])), s.path.name


def _draws(rng, centres: dict, chains: int = 2, draws: int = 100) -> dict[str, np.ndarray]:
    """Posterior draws around centres: (value, spread), spread relative for positive values."""
    out = {}
    for site, (value, spread) in centres.items():
        noise = spread * rng.standard_normal((chains, draws))
        out[site] = value * np.exp(noise) if value > 0 else value + noise
    return out


def _spectra(rng, x: np.ndarray, n: int, spread: float) -> np.ndarray:
    """n stand-in predictive spectra, (1, n, eigenvalues) sorted: the observed one with its log-spread and level
    scattered (spread 0.1: a posterior; 1.5: priors that put eigenvalues dozens of decades apart)."""
    log_x = np.log(x)
    shape = np.exp(spread * rng.standard_normal((n, 1)))
    level = spread * rng.standard_normal((n, 1))
    noise = 0.05 * rng.standard_normal((n, x.size))
    return np.sort(np.exp(log_x.mean() + level + shape * (log_x - log_x.mean()) + noise), axis=1)[None]


def _stand_in_fit(model: str, x: np.ndarray, name: str, centres: dict, *, converged=True, seed=0):
    """What the figures read of a FitResult: record, fitted spectrum, draws, ArviZ groups, summary, diagnostics."""
    import xarray as xr

    rng = np.random.default_rng(seed)
    draws = _draws(rng, centres, chains=4 if model == "htmp" else 2)
    spectra = {"posterior_predictive": _spectra(rng, x, 50, 0.1), "prior_predictive": _spectra(rng, x, 200, 1.5)}
    groups = {"posterior": xr.Dataset({k: (("chain", "draw"), v) for k, v in draws.items()}),
              **{group: xr.Dataset({"obs": (("chain", "draw", "obs_dim_0"), v)}) for group, v in spectra.items()}}
    reasons = [] if converged else ["kappa: R-hat 1.083 > 1.01", "kappa: ess_bulk 57 < 400",
                                    "scale: ess_tail 212 < 400", "3 divergent transitions"]
    summary = pd.DataFrame({"median": [np.median(v) for v in draws.values()],
                            "r_hat": [1.003 if converged else 1.083] * len(draws)}, index=list(draws))
    record = {names.NAME: name, names.GAMMA: 0.5, names.M: x.size, names.N_EIGS: x.size, names.N_CENSORED: 0,
              names.FLOOR: 0.0}
    return SimpleNamespace(model=model, record=record, layer=SimpleNamespace(eigenvalues=x), draws=draws,
                           data=xr.DataTree.from_dict(groups), summary=summary, converged=converged, prob=0.9,
                           diagnostics={"converged": converged, "reasons": reasons})


#: six models fitted to a 120-eigenvalue HTMP(gamma 0.5, kappa 2) layer: posterior centres and spreads, and the
#: comparison table's columns, rounded from `hteval.model_comparison.compare` on such a layer (exact draws)
_CENTRES = {"htmp": {"kappa": (1.8, 0.18), "scale": (0.96, 0.09)},
            "htmp-outliers": {"kappa": (1.8, 0.19), "scale": (0.96, 0.09), "outlier_weight": (0.013, 0.5)},
            "powerlaw": {"alpha": (3.6, 0.25), "xmin": (1.86, 0.25), "tail_weight": (0.17, 0.4), "mu": (0.86, 0.3),
                         "sigma": (2.36, 0.15)},
            "lognormal": {"mu": (-0.81, 0.15), "sigma": (1.52, 0.07)},
            "mp": {"sigma2": (1.29, 0.09), "outlier_weight": (0.25, 0.2)},
            "inverse-htmp": {"kappa": (0.45, 0.13), "scale": (0.068, 0.16)}}
_TABLE = {names.LOG_EVIDENCE: [-116.6, -117.6, -123.4, -130.6, -136.9, -204.4],
          names.WEIGHT: [0.717, 0.282, 8e-4, 6e-7, 1e-9, 5e-39],
          names.LOG_EVIDENCE_WIDE: [-117.3, -118.7, -124.8, -131.9, -135.1, -202.5],
          names.ELPD_LOO: [-112.7, -113.4, -117.4, -127.7, -132.3, -202.3],
          names.SE: [11.3, 11.4, 12.2, 13.5, 8.7, 23.6],
          names.D_ELPD: [0.0, -0.62, -4.63, -14.9, -19.6, -89.5],
          names.D_SE: [0.0, 0.074, 1.37, 5.0, 4.98, 19.4],
          names.STACKING_WEIGHT: [1.0, 0.0, 0.0, 0.0, 0.0, 0.0],
          names.PARETO_K_BAD: [0, 0, 1, 0, 14, 1],
          names.PPC_PVALUE: [0.64, 0.61, 0.53, 0.15, 0.003, 2e-7]}


def _comparison(name: str, x: np.ndarray, n_models: int = 6):
    from hteval.model_comparison import Comparison

    models = list(_CENTRES)[:n_models]
    table = pd.DataFrame({k: v[:n_models] for k, v in _TABLE.items()}, index=pd.Index(models, name="name"))
    table[names.D_LOG_EVIDENCE] = table[names.LOG_EVIDENCE] - table[names.LOG_EVIDENCE].max()
    table[names.CONVERGED] = [model != "htmp-outliers" for model in models]  # the longest label: P and a flag
    table = table[list(names.COMPARISON_FIELDS[1:])]
    fits = {m: _stand_in_fit(m, x, name, _CENTRES[m], seed=i) for i, m in enumerate(models)}
    return Comparison(layer=name, table=table, fits=fits, record=fits[models[0]].record)


_MINILM = ["embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight",
           *[f"encoder.layer.{i}.{part}.weight" for i in range(3)
             for part in ("attention.self.query", "attention.output.dense", "intermediate.dense")],
           "pooler.dense.weight", LONG_LAYER]


def _forest_table() -> pd.DataFrame:
    """Two HTMP models over nine layers and a long-named one: fits, misfits, unconverged rows and shuffled copies;
    the power-law tail's alpha beside them."""
    rng = np.random.default_rng(3)
    rows = []
    for i, layer in enumerate(_MINILM):
        kappa = float(np.exp(rng.uniform(-1, 3)))
        status = names.STATUS_NOT_CONVERGED if i == 4 else names.STATUS_OK
        for model, shift in (("htmp-exact", 1.0), ("htmp", 1.2), ("powerlaw", None)):
            row = {names.NAME: layer, names.MODEL: model, names.RANDOMIZED: False, names.STATUS: status,
                   names.PPC_PVALUE: 0.0004 if i % 3 == 1 else 0.4}
            if shift is None:
                alpha = float(rng.uniform(2, 7))
                row.update(alpha_median=alpha, alpha_ci_low=0.8 * alpha, alpha_ci_high=1.3 * alpha)
            else:
                kappa_ = shift * kappa
                row.update(kappa_median=kappa_, kappa_ci_low=0.7 * kappa_, kappa_ci_high=1.5 * kappa_)
            rows.append(row)
        if i % 4 == 0:
            rows.append({names.NAME: layer, names.MODEL: "htmp-exact", names.RANDOMIZED: True,
                         names.STATUS: names.STATUS_OK, names.PPC_PVALUE: 0.5, "kappa_median": 900.0,
                         "kappa_ci_low": 700.0, "kappa_ci_high": 1200.0})
    return pd.DataFrame(rows)


def _pooled():
    from hteval.hierarchy import Pooled

    rng = np.random.default_rng(0)
    layers = _MINILM[:3]
    log_kappa = np.log([1.1, 9.0, 2.2]) + 0.05 * rng.standard_normal((500, 3))
    return {"htmp-exact": Pooled(layers, np.log(2.0) + 0.1 * rng.standard_normal(500),
                                 np.abs(0.5 + 0.08 * rng.standard_normal(500)), log_kappa, 0.9,
                                 {"converged": True, "reasons": []})}


def _dynamics(layers: list[str], checkpoints: list[str], steps: list[float]) -> pd.DataFrame:
    """dynamics.csv's rows for one (model, parameter): kappa falling over training, one fit not converged."""
    from hteval.report.dynamics import COLUMNS

    rows = []
    for i, layer in enumerate(layers):
        for j, (checkpoint, step) in enumerate(zip(checkpoints, steps, strict=True)):
            kappa = 40.0 / (1 + j) ** (0.5 + 0.2 * i)
            rows.append({names.MODEL: "htmp-exact", "parameter": "kappa", names.NAME: layer,
                         names.CHECKPOINT: checkpoint, names.STEP: step, "median": kappa, "ci_low": 0.8 * kappa,
                         "ci_high": 1.25 * kappa, names.INTERVALS: names.INTERVALS_CALIBRATED,
                         names.STATUS: names.STATUS_NOT_CONVERGED if (i, j) == (0, 2) else names.STATUS_OK})
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _every_figure(out: Path, name: str, converged: bool) -> None:
    """Every figure the report code saves, each from its own function, into out."""
    from hteval.report import analysis, dynamics, figures

    x = np.sort(sample_htmp_spectrum(0, 120, 0.5, 2.0, 1.0))
    result = _stand_in_fit("htmp", x, name, _CENTRES["htmp"], converged=converged)
    figures.plot_esd(result, out / "esd.png")
    # the power-law tail's predictive spectra come from numpy; the HTMP law's draws compile JAX code first
    figures.plot_rank(_stand_in_fit("powerlaw", x, name, _CENTRES["powerlaw"]), out / "rank.png", n=40)
    figures.plot_trace_pair(result, out / "trace.png")
    figures.plot_prior_predictive(result, out / "prior_predictive.png")
    figures.plot_comparison(_comparison(name, x), out)
    table, pooled = _forest_table(), _pooled()
    for parameter in ("kappa", "alpha"):
        analysis.plot_forest(table, parameter, out / f"{parameter}_forest.png", pooled=pooled, prob=0.9)
    dynamics.plot_dynamics(_dynamics([name], ["checkpoint-500", "checkpoint-1000", "checkpoint-final"],
                                     [np.nan] * 3), out / "dynamics_one_layer.png")
    dynamics.plot_dynamics(_dynamics(_MINILM[:6], [f"step_{s}" for s in (0, 1000, 5000, 20000)],
                                     [0.0, 1000.0, 5000.0, 20000.0]), out / "dynamics_six_layers.png")
    dynamics.plot_dynamics(_dynamics(_MINILM[:5], ["warmup", "epoch-1", "epoch-2", "epoch-3", "final-model"],
                                     [np.nan] * 5), out / "dynamics_five_layers.png")


#: the figure functions of hteval.report that `_every_figure` calls
_PLOTTED = {"plot_esd", "plot_rank", "plot_trace_pair", "plot_prior_predictive", "plot_comparison", "plot_forest",
            "plot_dynamics"}


def test_every_figure_function_is_checked():
    """A figure function added to hteval.report fails here until `_every_figure` draws its figure too."""
    import hteval.report

    found = set()
    for info in pkgutil.iter_modules(hteval.report.__path__):
        module = importlib.import_module(f"hteval.report.{info.name}")
        found |= {n for n, f in vars(module).items() if n.startswith("plot_") and callable(f)
                  and f.__module__ == module.__name__}
    assert found == _PLOTTED


@pytest.fixture(scope="module", params=[(LAYER, True), (LONG_LAYER, False)], ids=["layer", "long-name"])
def saved(request, tmp_path_factory):
    """Every saved figure, drawn once per module for a typical layer name, and for a very long one with a fit that
    did not converge (whose reasons head the trace figure)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        found = _watch_saves(monkeypatch)
        _every_figure(tmp_path_factory.mktemp("figures"), *request.param)
    return found


def test_every_saved_figure_is_readable(saved):
    """Every text of every saved figure (titles, suptitles, axis and tick labels, legends) lies inside the saved
    image, and no axis's tick labels overlap."""
    assert set(saved) == {"esd.png", "rank.png", "trace.png", "prior_predictive.png", "compare_density.png",
                          "compare_rank.png", "compare_elpd.png", "kappa_forest.png", "alpha_forest.png",
                          "dynamics_one_layer.png", "dynamics_six_layers.png", "dynamics_five_layers.png"}
    _assert_readable(saved)


def test_compare_rank_one_panel_per_model(saved):
    """Six models: six panels on shared log axes, best first, each with its own band and median over the observed
    spectrum, and one key for all."""
    fig = saved["compare_rank.png"].figure
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 6
    titles = [ax.get_title().replace("\n", " ") for ax in axes]
    assert [t.split(" (")[0] for t in titles] == [names.MODEL_LABELS[m] for m in _CENTRES]
    for ax in axes:
        assert ax.get_xscale() == ax.get_yscale() == "log"
        assert ax.get_shared_x_axes().joined(ax, axes[0]) and ax.get_shared_y_axes().joined(ax, axes[0])
        assert len(ax.collections) == 1 and len(ax.get_lines()) == 2  # band; median and observed
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["observed", "posterior predictive median",
                                                                  "90% band"]


def test_compare_elpd_axes_are_linear(saved):
    fig = saved["compare_elpd.png"].figure
    assert [ax.get_xscale() for ax in fig.axes] == ["linear", "linear"]
    evidence, loo = fig.axes
    assert evidence.get_xlim()[0] < min(_TABLE[names.LOG_EVIDENCE]) - max(_TABLE[names.LOG_EVIDENCE]) < 0
    assert loo.get_xlim()[0] < _TABLE[names.D_ELPD][-1] - _TABLE[names.D_SE][-1] and loo.get_xlim()[1] > 0


def test_trace_has_a_chain_legend_and_the_pair_plot_labelled_kappa_ticks(saved):
    """The chains are named in a key, and the pair plot's log kappa axis, whose view spans less than a decade (no
    power of ten inside), still carries plain-number tick labels, apart from each other."""
    s = saved["trace.png"]
    assert [t.get_text() for t in s.figure.legends[0].get_texts()] == [f"chain {i}" for i in range(1, 5)]
    pair = s.figure.axes[2]
    assert pair.get_xlabel() == "kappa" and pair.get_xscale() == "log"
    ticks = _tick_label_boxes(s, pair.xaxis)
    assert len(ticks) >= 2 and all(float(text) > 0 for text, _ in ticks)
    assert not [(a, b) for i, (a, box) in enumerate(ticks) for b, other in ticks[i + 1:] if _overlap(box, other)]
