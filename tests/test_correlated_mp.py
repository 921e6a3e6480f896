"""Tests of hteval.densities.correlated_mp (SPEC section 3) and hteval.sampling.sample_correlated_spectrum.

Every jitted function compiles once per input shape (a few seconds each), so points are padded to a few fixed
lengths throughout.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate

from hteval.densities import correlated_mp as cmp
from hteval.densities.correlated_mp import (
    correlated_mp_cdf,
    correlated_mp_icdf,
    correlated_mp_logpdf,
    correlated_mp_support,
    population_cells,
)
from hteval.densities.mp import mp_cdf, mp_logpdf
from hteval.sampling import sample_correlated_spectrum

jax.config.update("jax_enable_x64", True)

N_POINTS = 512  # the one length every point set is padded to
GL_X, GL_W = np.polynomial.legendre.leggauss(40)
table = jax.jit(lambda gamma, nu, m: cmp._table(gamma, cmp._law(nu, m)))
# the limiting law itself: the smoothing width taken to 1e-12 (numerically the unsmoothed density)
UNSMOOTHED = 1e-12
exact_logpdf = jax.jit(lambda x, gamma, nu, scale, m: cmp._logpdf(x, gamma, nu, scale, m, UNSMOOTHED))
exact_cdf = jax.jit(lambda x, gamma, nu, scale, m: cmp._cdf(x, gamma, nu, scale, m, UNSMOOTHED))


def padded(x, fill):
    """x padded with ``fill`` to N_POINTS (one compiled shape), and the count of real points."""
    x = np.asarray(x, dtype=float)
    assert x.size <= N_POINTS
    return np.concatenate([x, np.full(N_POINTS - x.size, fill)]), x.size


def logpdf(x, gamma, nu, scale, m, smoothed=True):
    xp, n = padded(x, 1.0)
    return np.asarray((correlated_mp_logpdf if smoothed else exact_logpdf)(xp, gamma, nu, scale, m))[:n]


def cdf(x, gamma, nu, scale, m, smoothed=True):
    xp, n = padded(x, 1.0)
    return np.asarray((correlated_mp_cdf if smoothed else exact_cdf)(xp, gamma, nu, scale, m))[:n]


def cell_moment(nu, m, k):
    """E t^k of the population law: each cell uniform between its endpoints."""
    e, p = (np.asarray(v) for v in population_cells(nu, m))
    lo, hi = e[:-1], e[1:]
    # (hi^(k+1) - lo^(k+1)) / ((k+1)(hi - lo)) without the cancellation
    return np.sum(p * sum(lo**j * hi ** (k - j) for j in range(k + 1)) / (k + 1))


def discrete_moment(nu, m, k):
    t = np.arange(1, m + 1, dtype=float) ** -nu
    t /= t.mean()
    return np.mean(t**k)


def density_integrals(gamma, nu, m, upper=None):
    """(int f, int x f, int x^2 f) of the unsmoothed law over its support (up to ``upper``), Gauss-Legendre on
    pieces between
    the table nodes; the first piece in x = u^2 (the x^-1/2 edge at gamma = 1, harmless elsewhere)."""
    x_tab, _, _ = table(jnp.asarray(gamma), nu, m)
    nodes = np.unique(np.asarray(x_tab))
    # each table piece in 8: the cells' edges leave sharp (if smooth) features that one 40-point rule per piece
    # misses by ~1e-4 in the mean at nu = 2
    nodes = np.concatenate([np.linspace(a, b, 9)[:-1] for a, b in zip(nodes[:-1], nodes[1:], strict=True)]
                           + [nodes[-1:]])
    if upper is not None:
        nodes = np.append(nodes[nodes < upper], upper)
    xs, ws = [], []
    for i, (lo, hi) in enumerate(zip(nodes[:-1], nodes[1:], strict=True)):
        if i == 0:
            u = np.sqrt(lo) + (np.sqrt(hi) - np.sqrt(lo)) * (GL_X + 1) / 2
            xs.append(u**2)
            ws.append(GL_W * (np.sqrt(hi) - np.sqrt(lo)) / 2 * 2 * u)
        elif i == nodes.size - 2 and upper is None:  # the square-root upper edge, in x = hi - u^2
            u = np.sqrt(hi - lo) * (GL_X + 1) / 2
            xs.append(hi - u**2)
            ws.append(GL_W * np.sqrt(hi - lo) / 2 * 2 * u)
        else:
            xs.append(lo + (hi - lo) * (GL_X + 1) / 2)
            ws.append(GL_W * (hi - lo) / 2)
    x, w = np.concatenate(xs), np.concatenate(ws)
    f = np.concatenate([np.exp(logpdf(c, gamma, nu, 1.0, m, smoothed=False))
                        for c in np.array_split(x, -(-x.size // N_POINTS))])
    return w @ f, w @ (x * f), w @ (x**2 * f)


@pytest.mark.parametrize("nu", [0.0, 0.3, 1.0, 2.0])
def test_population_law(nu):
    e, p = (np.asarray(v) for v in population_cells(nu, 384))
    assert e.shape == (cmp._CELLS + 1,) and p.shape == (cmp._CELLS,)
    assert np.all(np.diff(e) > 0) and np.all(p > 0)
    assert np.sum(p) == pytest.approx(1.0, abs=1e-14)
    assert cell_moment(nu, 384, 1) == pytest.approx(1.0, abs=1e-13)
    # the continuum law against the M atoms it stands for: equal means; the spread of the top cell (the top
    # eigenvalue's mass 1/M spread over u in [1/2, 3/2]) makes E t^2 larger: by 18% at nu = 1, 67% at nu = 2
    rel = cell_moment(nu, 384, 2) / discrete_moment(nu, 384, 2) - 1.0
    assert 0.0 <= rel < {0.0: 1e-7, 0.3: 0.01, 1.0: 0.2, 2.0: 0.7}[nu]


@pytest.mark.parametrize("gamma", [0.25, 0.5, 1.0])
def test_nu_zero_is_marchenko_pastur(gamma):
    scale = 2.5
    lo, hi = scale * (1 - np.sqrt(gamma)) ** 2, scale * (1 + np.sqrt(gamma)) ** 2
    x = lo + (hi - lo) * np.linspace(1e-4, 1 - 1e-4, 300)
    expected = np.asarray(mp_logpdf(x, gamma, scale))
    # nu is taken as 1e-4 at 0 (cells need a width): the population's spread of ~7e-4 moves the edges by ~1e-7
    np.testing.assert_allclose(logpdf(x, gamma, 0.0, scale, 384, smoothed=False), expected, rtol=0, atol=2e-4)
    np.testing.assert_allclose(cdf(x, gamma, 0.0, scale, 384, smoothed=False), np.asarray(mp_cdf(x, gamma, scale)),
                               atol=1e-7)
    s_lo, s_hi = (float(v) for v in correlated_mp_support(gamma, 0.0, 384))
    assert s_lo == pytest.approx((1 - np.sqrt(gamma)) ** 2, abs=1e-6)
    assert s_hi == pytest.approx((1 + np.sqrt(gamma)) ** 2, rel=1e-6)


def _log_smoothed_mp(x, gamma, theta):
    """Density of log(lambda) + noise, lambda ~ Marchenko-Pastur (scale 1), noise of density
    sin(theta) / (2 (pi - theta) (cosh l - cos theta)), by adaptive quadrature over l = log lambda."""
    lo, hi = (1 - np.sqrt(gamma)) ** 2, (1 + np.sqrt(gamma)) ** 2
    norm = np.sin(theta) / (2 * (np.pi - theta))

    def one(xi):
        def integrand(ell):
            lam = np.exp(ell)
            return np.exp(float(mp_logpdf(lam, gamma, 1.0))) * lam * norm / (np.cosh(ell - np.log(xi)) - np.cos(theta))

        a = np.log(lo) if lo > 0 else np.log(1e-40)
        inner = [np.log(xi)] if a < np.log(xi) < np.log(hi) else None
        return scipy.integrate.quad(integrand, a, np.log(hi), points=inner, limit=500, epsabs=0, epsrel=1e-8)[0] / xi

    return np.array([one(xi) for xi in x])


# the square case in CI (its hard edge too), the other with the slow checks: adaptive quadrature per point
@pytest.mark.parametrize("gamma", [pytest.param(0.5, marks=pytest.mark.slow), 1.0])
def test_smoothing_is_the_log_space_convolution(gamma):
    """At nu = 0 the smoothed law is Marchenko-Pastur with log x convolved with the ray kernel (module
    docstring): checked against adaptive quadrature of that convolution, in the bulk, at the edges, beyond
    them, and down at the hard edge at gamma = 1, whose x^(-1/2) it keeps."""
    lo, hi = (1 - np.sqrt(gamma)) ** 2, (1 + np.sqrt(gamma)) ** 2
    x = np.concatenate([lo + (hi - lo) * np.array([0.001, 0.01, 0.3, 0.7, 0.99, 0.999]),
                        [hi * 1.001, hi * 1.1, 2 * hi, 0.5 * lo if lo > 0 else 1e-5, 1e-4]])
    expected = np.log(_log_smoothed_mp(x, gamma, cmp._THETA))
    np.testing.assert_allclose(logpdf(x, gamma, 0.0, 1.0, 384), expected, rtol=0, atol=1e-4)
    if gamma == 1.0:
        small = logpdf(np.array([1e-8, 1e-6]), gamma, 0.0, 1.0, 384)
        assert small[0] - small[1] == pytest.approx(-0.5 * np.log(1e-8 / 1e-6), abs=1e-3)


# a few cases in CI, the rest of each grid with the slow checks
_MOMENT_CASES = [(0.25, 2.0), (0.5, 1.0), (1.0, 0.5)]


def _grid(gammas, nus, in_ci):
    """(gamma, nu) cases, those not ``in_ci`` marked slow."""
    return [(g, n) if in_ci(g, n) else pytest.param(g, n, marks=pytest.mark.slow) for g in gammas for n in nus]


@pytest.mark.parametrize(("gamma", "nu"),
                         _grid((0.25, 0.5, 1.0), (0.5, 1.0, 2.0), lambda g, n: (g, n) in _MOMENT_CASES))
def test_normalisation_and_free_moments(gamma, nu):
    total, mean, second = density_integrals(gamma, nu, 384)
    assert total == pytest.approx(1.0, abs=1e-7)
    assert mean == pytest.approx(1.0, rel=1e-6)
    # the sample-covariance moment identity: E x^2 = E t^2 + gamma (E t)^2
    assert second == pytest.approx(cell_moment(nu, 384, 2) + gamma, rel=1e-6)


# one case in CI (the suite's time), the square and the narrow aspect ratio with the slow checks
@pytest.mark.parametrize(("gamma", "nu"), [(0.5, 1.0), pytest.param(1.0, 0.5, marks=pytest.mark.slow),
                                           pytest.param(0.25, 1.5, marks=pytest.mark.slow)])
def test_cdf_is_the_integral_of_the_density(gamma, nu):
    lo, hi = (float(v) for v in correlated_mp_support(gamma, nu, 384))
    for frac in (0.001, 0.01, 0.1, 0.3):
        upper = lo + frac * (hi - lo)
        total, _, _ = density_integrals(gamma, nu, 384, upper=upper)
        assert cdf([upper], gamma, nu, 1.0, 384, smoothed=False)[0] == pytest.approx(total, abs=1e-7)


# 400 solves of 512 points each: with the slow checks
@pytest.mark.slow
@pytest.mark.parametrize(("gamma", "nu"), [(0.5, 1.0), (1.0, 0.5), (0.25, 1.5)])
def test_smoothed_cdf_is_the_integral_of_the_density(gamma, nu):
    # trapezoid in log x over (1e-14, 1e9), whose ends hold < 1e-8 of the mass
    u = np.linspace(np.log(1e-14), np.log(1e9), 200_001)
    x = np.exp(u)
    f = np.concatenate([np.exp(logpdf(c, gamma, nu, 1.0, 384)) for c in np.array_split(x, -(-x.size // N_POINTS))])
    running = np.concatenate([[0.0], np.cumsum(np.diff(u) * 0.5 * (f[1:] * x[1:] + f[:-1] * x[:-1]))])
    pick = np.arange(0, x.size, 20_000)
    head = cdf(x[:1], gamma, nu, 1.0, 384)[0]
    assert running[-1] + head == pytest.approx(1.0, abs=2e-8)
    np.testing.assert_allclose(cdf(x[pick], gamma, nu, 1.0, 384), running[pick] + head, atol=1e-8)


@pytest.mark.parametrize(("gamma", "nu"),
                         _grid((0.05, 0.5, 1.0), (0.0, 0.7, 2.0, 3.0), lambda g, n: g != 0.5 and n != 0.7))
def test_support_is_one_interval_and_cdf_monotone(gamma, nu):
    """No islands: the limiting density is far from 0 everywhere strictly between the edges (the atomic
    population law this module replaced left gaps around its top atoms, which finite-size eigenvalues fell
    into); the smoothed one is positive and finite on all of x > 0."""
    lo, hi = (float(v) for v in correlated_mp_support(gamma, nu, 384))
    inner = np.concatenate([np.geomspace(max(lo, 1e-12), hi, 402)[1:-1], lo + (hi - lo) * np.linspace(0, 1, 52)[1:-1]])
    assert np.all(logpdf(inner, gamma, nu, 1.0, 384, smoothed=False) > -20.0)
    x = np.sort(np.concatenate([[0.0, lo, 0.999 * lo, hi, 1.001 * hi, 1e12], inner]))
    assert np.all(np.isfinite(logpdf(x[x > 0], gamma, nu, 1.0, 384)))
    f = cdf(x, gamma, nu, 1.0, 384)
    assert np.all(np.diff(f) >= -1e-12)
    assert f[0] == 0.0 and f[-1] == pytest.approx(1.0, abs=1e-14)
    assert np.all((f >= 0) & (f <= 1))


@pytest.mark.parametrize(("gamma", "nu"), [(0.5, 0.0), (0.5, 1.0), (1.0, 1.0), (0.25, 2.0)])
def test_quantiles_invert_the_cdf(gamma, nu):
    u = np.concatenate([np.random.default_rng(0).uniform(0, 1, 200), [1e-9, 1e-4, 0.5, 1 - 1e-4, 1 - 1e-9]])
    up, n = padded(u, 0.5)
    x = np.asarray(correlated_mp_icdf(up, gamma, nu, 3.0, 384))
    assert np.all(np.isfinite(x)) and np.all(x > 0)
    np.testing.assert_allclose(cdf(x[:n], gamma, nu, 3.0, 384), u, atol=1e-6)


@pytest.mark.parametrize("nu", [0.5, 1.0])
def test_matches_simulated_spectra(nu):
    m, n = 500, 1000
    x = np.sort(np.concatenate([sample_correlated_spectrum(n, m, nu, scale=2.0, seed=s) for s in range(4)]))
    f = np.concatenate([cdf(c, m / n, nu, 2.0, m) for c in np.array_split(x, 4)])
    i = np.arange(1, x.size + 1)
    ks = max(np.max(i / x.size - f), np.max(f - (i - 1) / x.size))
    assert ks < 0.03


def values_and_jacobian(x, gamma, nu, scale, m):
    """(logpdf, cdf) at x and their derivatives in (nu, scale), as ((logpdf, cdf), ((dlogpdf/dnu, dlogpdf/dscale),
    (dcdf/dnu, dcdf/dscale))), by eager forward mode over the public functions: one compiled program per
    function and length, shared by every caller (values included)."""

    def both(nu_, scale_):
        return correlated_mp_logpdf(x, gamma, nu_, scale_, m), correlated_mp_cdf(x, gamma, nu_, scale_, m)

    value, by_nu = jax.jvp(both, (float(nu), float(scale)), (1.0, 0.0))
    _, by_scale = jax.jvp(both, (float(nu), float(scale)), (0.0, 1.0))
    return value, tuple(zip(by_nu, by_scale, strict=True))


@pytest.mark.parametrize(("gamma", "nu"), [(0.5, 0.7), pytest.param(1.0, 1.3, marks=pytest.mark.slow),
                                           pytest.param(0.25, 0.05, marks=pytest.mark.slow)])
def test_gradients_match_finite_differences(gamma, nu):
    scale, m = 1.3, 384
    lo, hi = (float(v) for v in correlated_mp_support(gamma, nu, m))
    # log-spaced across the support, away from its edges, where the derivatives blow up
    x = scale * np.geomspace(max(lo, 1e-3 * hi) * 1.05, 0.95 * hi, 12)
    xp, n = padded(x, 1.0)
    value, jac = values_and_jacobian(xp, gamma, nu, scale, m)
    assert np.all(np.isfinite(np.asarray(value[0])[:n]))
    for which in range(2):
        for arg, h in ((0, 1e-5), (1, 1e-6)):
            up = values_and_jacobian(xp, gamma, *(v + h if i == arg else v for i, v in enumerate((nu, scale))), m)
            down = values_and_jacobian(xp, gamma, *(v - h if i == arg else v for i, v in enumerate((nu, scale))), m)
            fd = (np.asarray(up[0][which]) - np.asarray(down[0][which]))[:n] / (2 * h)
            ad = np.asarray(jac[which][arg])[:n]
            np.testing.assert_allclose(ad, fd, rtol=1e-4, atol=1e-6)


def _assert_no_nan(x, n, gamma, nu, scale, m):
    """Values and derivatives at x (the first n real, x[0] = 0) carry no NaN; log f is -inf at 0 only."""
    (lp, f), (g_lp, g_f) = values_and_jacobian(x, gamma, nu, scale, m)
    for arr in (lp, f, *g_lp, *g_f):
        assert not np.any(np.isnan(np.asarray(arr))), (gamma, nu, scale)
    for arr in (*g_lp, *g_f):
        assert np.all(np.isfinite(np.asarray(arr))), (gamma, nu, scale)
    lp = np.asarray(lp)[:n]
    assert np.isneginf(lp[0]) and np.all(np.isfinite(lp[1:]))  # x = 0, then the smoothed law


def test_no_nan_anywhere():
    x = np.concatenate([[0.0], np.geomspace(1e-300, 1e12, 120), np.linspace(1e-4, 20.0, 100)])
    xp, n = padded(x, 0.0)
    for gamma in (0.05, 0.5, 1.0):
        for nu in (0.0, 1e-3, 0.5, 1.0, 2.0, 3.0):
            for scale in (1e-6, 1.0, 1e6):
                _assert_no_nan(xp * scale, n, gamma, nu, scale, 384)


def _far_tails(x, gamma, nu, m, tabulated):
    """log f and F at x (scale 2), by the node table (x padded to the tabulated tests' length: their programs)
    or point by point."""
    padding = np.geomspace(1e-3, 10.0, cmp._TABULATE - x.size) if tabulated else np.zeros(0)
    points = np.concatenate([x, padding])
    return (np.asarray(correlated_mp_logpdf(points, gamma, nu, 2.0, m))[:x.size],
            np.asarray(correlated_mp_cdf(points, gamma, nu, 2.0, m))[:x.size])


# CI: the point-by-point solve; the table (its own programs, ~15 s to compile) with the slow checks
@pytest.mark.parametrize("tabulated", [False, pytest.param(True, marks=pytest.mark.slow)])
@pytest.mark.parametrize(("gamma", "nu", "m"), [(0.25, 0.5, 384), (1.0, 0.0, 384), (0.5, 2.0, 50)])
def test_far_tails_are_the_smoothing_power_laws(gamma, nu, m, tabulated):
    """From far below the support to the ends of float64: finite log f and F (F = 1 at infinity), the tails'
    power laws (f ~ x^-2 above; f flat and F ~ x below, f ~ x^-1/2 and F ~ x^1/2 at gamma = 1); the table gives
    the point-by-point solve's numbers."""
    x = np.concatenate([np.geomspace(1e-300, 1e-100, 9), np.geomspace(1e6, 1e300, 12), [np.inf]])
    log_f, cdf_ = _far_tails(x, gamma, nu, m, tabulated)
    assert not np.isnan(log_f).any() and not np.isnan(cdf_).any()
    assert log_f[-1] == -np.inf and cdf_[-1] == 1.0
    low, high = slice(0, 9), slice(11, 21)
    np.testing.assert_allclose(np.diff(log_f[low]) / np.diff(np.log(x[low])), -0.5 if gamma == 1.0 else 0.0,
                               atol=1e-6)
    np.testing.assert_allclose(np.diff(np.log(cdf_[low])) / np.diff(np.log(x[low])), 0.5 if gamma == 1.0 else 1.0,
                               atol=1e-6)
    np.testing.assert_allclose(np.diff(log_f[high]) / np.diff(np.log(x[high])), -2.0, atol=1e-6)
    if tabulated:
        direct_f, direct_cdf = _far_tails(x, gamma, nu, m, False)
        np.testing.assert_allclose(log_f[:-1], direct_f[:-1], rtol=0, atol=1e-6)
        np.testing.assert_allclose(cdf_, direct_cdf, rtol=1e-9, atol=1e-12)


TABULATED = cmp._TABULATE  # inputs this long are read off the node table


def tabulated_points(gamma, nu, m, scale, inner):
    """TABULATED points: ``inner`` first, then the law's own quantiles, log-uniform points over 1e-6..1e6 times
    the support, points within 10% of both edges, and 0 and the extremes of float64 (checked for NaN only)."""
    lo, hi = (float(v) for v in correlated_mp_support(gamma, nu, m))
    lo = max(lo, 1e-6 * hi)
    quantiles = np.asarray(correlated_mp_icdf(padded((np.arange(N_POINTS) + 0.5) / N_POINTS, 0.5)[0], gamma, nu,
                                              scale, m)) / scale
    rng = np.random.default_rng(1)
    rest = TABULATED - inner.size - N_POINTS - 4
    spread = np.exp(rng.uniform(np.log(1e-6 * lo), np.log(1e6 * hi), rest // 2))
    edges = np.concatenate([lo * np.exp(rng.uniform(-0.1, 0.1, rest // 4)),
                            hi * np.exp(rng.uniform(-0.1, 0.1, rest - rest // 2 - rest // 4))])
    checked = scale * np.concatenate([inner, quantiles, spread, edges])
    return np.concatenate([checked, [0.0, 1e-300, 1e18 * scale, 1e12 * scale]]), checked.size


def check_tabulated(gamma, nu, m, scale, log_f_tol, cdf_tol, gradients):
    """The tabulated path against the direct one (chunks of N_POINTS), its derivatives in (nu, scale) against
    central differences of the direct path, and no NaN."""
    lo, hi = (float(v) for v in correlated_mp_support(gamma, nu, m))
    inner = np.geomspace(max(lo, 1e-3 * hi) * 1.05, 0.95 * hi, 12)
    x, n = tabulated_points(gamma, nu, m, scale, inner)
    assert x.size == TABULATED
    (lp, f), (g_lp, g_f) = values_and_jacobian(x, gamma, nu, scale, m)
    lp, f = np.asarray(lp), np.asarray(f)
    assert not np.any(np.isnan(lp)) and not np.any(np.isnan(f))
    assert all(np.all(np.isfinite(np.asarray(g))) for g in (*g_lp, *g_f))
    assert np.isneginf(lp[n]) and np.all(np.isfinite(lp[:n])) and f[n] == 0.0 and f[-2] == pytest.approx(1.0)
    chunks = np.array_split(x[:n], -(-n // N_POINTS))
    direct_lp = np.concatenate([logpdf(c, gamma, nu, scale, m) for c in chunks])
    direct_f = np.concatenate([cdf(c, gamma, nu, scale, m) for c in chunks])
    np.testing.assert_allclose(lp[:n], direct_lp, rtol=0, atol=log_f_tol)
    np.testing.assert_allclose(f[:n], direct_f, rtol=0, atol=cdf_tol)
    if not gradients:
        return
    x_in = x[:inner.size]
    for arg, h in ((0, 1e-5), (1, 1e-6 * scale)):
        shifted = [[v + sign * h if i == arg else v for i, v in enumerate((nu, scale))] for sign in (1, -1)]
        for g, direct in ((g_lp, logpdf), (g_f, cdf)):
            fd = (direct(x_in, gamma, *shifted[0], m) - direct(x_in, gamma, *shifted[1], m)) / (2 * h)
            np.testing.assert_allclose(np.asarray(g[arg])[:inner.size], fd, rtol=1e-4, atol=1e-6 / scale ** arg)


# where the direct solve itself is exact to rounding (module docstring, accuracy); a few cases in CI
_TABULATED_CASES = [(g, nu, m, scale) for g in (0.05, 0.25, 0.5, 1.0) for nu in (0.0, 0.05, 0.5, 1.0, 2.0)
                    for m in (50, 384, 4096, 100_000) for scale in (1e-3, 1.0)
                    if (nu <= 0.5 or (nu == 1.0 and m <= 384) or (nu == 2.0 and m <= 50))]
_TABULATED_CI = [(0.25, 0.5, 4096, 1e-3), (1.0, 1.0, 384, 1.0), (0.05, 2.0, 50, 1.0)]


@pytest.mark.parametrize(("gamma", "nu", "m", "scale"),
                         [c if c in _TABULATED_CI else pytest.param(*c, marks=pytest.mark.slow)
                          for c in _TABULATED_CASES])
def test_tabulated_path_matches_the_direct_one(gamma, nu, m, scale):
    in_ci = (gamma, nu, m, scale) in _TABULATED_CI
    check_tabulated(gamma, nu, m, scale, log_f_tol=2e-7, cdf_tol=1e-9, gradients=in_ci)


def test_m_is_traced_without_recompiling():
    x = np.linspace(0.2, 3.0, 8)
    f = jax.jit(lambda m: correlated_mp_logpdf(x, 0.5, 0.8, 1.0, m))
    values = [np.asarray(f(m)) for m in (3, 40, 384, 5000)]
    assert f._cache_size() == 1
    for v in values:
        assert not np.any(np.isnan(v)) and np.any(np.isfinite(v))


def test_sampler_shapes_scaling_and_validation():
    x = sample_correlated_spectrum(400, 100, 1.0, scale=3.0, seed=1)
    assert x.shape == (100,) and x.dtype == np.float64 and np.all(np.diff(x) >= 0) and x[0] >= 0
    # E[trace]/M = scale exactly in expectation; the sample mean is a chi-square average over 4e4 entries
    assert x.mean() == pytest.approx(3.0, rel=0.05)
    np.testing.assert_array_equal(x, sample_correlated_spectrum(400, 100, 1.0, scale=3.0, seed=1))
    with pytest.raises(ValueError):
        sample_correlated_spectrum(50, 100, 1.0)
    with pytest.raises(ValueError):
        sample_correlated_spectrum(100, 50, -0.5)
    with pytest.raises(ValueError):
        sample_correlated_spectrum(100, 50, 1.0, scale=0.0)
    with pytest.raises(ValueError):
        sample_correlated_spectrum(100, 0, 1.0)


def test_batches_agree_with_the_density():
    """The exact posterior's batch program (rows of nu, fixed shapes) against correlated_mp_logpdf and _cdf."""
    from hteval.densities.correlated_mp import log_density_of_log_batch

    gamma, m = 0.5, 200.0
    x = np.exp(np.linspace(-4.5, 2.5, 60))
    nu = np.array([0.0, 0.6, 1.3])
    psi, batch_cdf, edges = log_density_of_log_batch(gamma, nu, np.broadcast_to(np.log(x), (3, x.size)), m)
    for k in range(nu.size):
        # nu = 0 is taken as 1e-4, whose telescoped weights (~1 / width) leave z(w) ~1e-12 of rounding; at the
        # soft edge, where z' is small, that moves log f by up to ~1e-9 between programs of different shapes
        tolerance = 2e-9 if nu[k] == 0.0 else 1e-10
        assert np.allclose(psi[k] - np.log(x), logpdf(x, gamma, nu[k], 1.0, m), rtol=0, atol=tolerance)
        assert np.allclose(batch_cdf[k], cdf(x, gamma, nu[k], 1.0, m), rtol=0, atol=1e-9)
        low, high = correlated_mp_support(gamma, nu[k], m)
        assert np.allclose(edges[k], np.log([float(low), float(high)]), rtol=0, atol=1e-10)


@pytest.mark.slow
def test_model_tables_agree_with_the_density():
    """The tables `hteval.models.correlated_mp` interpolates from the batches: at the grid's step in t, and
    between nu nodes spaced as a posterior grid spaces them, log f within 2e-4 of direct solves, the fine
    structure of the upper bulk (the population cells' smoothed kinks) and both edges included."""
    from hteval.densities.correlated_mp import log_density_of_log_batch
    from hteval.models.correlated_mp import T_STEP, _Tables

    gamma, m = 0.5, 200.0
    nodes = 1.0 + 0.004 * np.arange(-8, 9)
    t_low, t_high = -5.0, 3.0
    tables = _Tables(gamma, m, nodes, t_low, t_high, int(np.ceil((t_high - t_low) / T_STEP)))
    rng = np.random.default_rng(0)
    at_nu = rng.uniform(nodes[2], nodes[-3], 8)
    t = rng.uniform(-4.8, 2.8, (8, 200))
    direct, _, _ = log_density_of_log_batch(gamma, at_nu, t, m)
    assert np.max(np.abs(tables.at(at_nu, t) - direct)) < 2e-4
