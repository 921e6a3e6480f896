"""The ESD figure: its numpy HTMP density (`hteval.special.onepoint`) against the JAX one and mpmath, and the figure
itself (written without JAX, every text inside the canvas, the legend over no curve)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import mpmath
import numpy as np
import pytest
from PIL import Image

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
