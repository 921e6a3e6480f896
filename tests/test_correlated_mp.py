"""Tests of hteval.densities.correlated_mp (SPEC section 3) and hteval.sampling.sample_correlated_spectrum.

Every jitted function compiles once per input shape (a few seconds each), so points are padded to a few fixed
lengths throughout.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hteval.densities import correlated_mp as cmp
from hteval.densities.correlated_mp import (
    correlated_mp_cdf,
    correlated_mp_logpdf,
    correlated_mp_support,
    population_atoms,
)
from hteval.densities.mp import mp_cdf, mp_logpdf
from hteval.sampling import sample_correlated_spectrum

jax.config.update("jax_enable_x64", True)

N_POINTS = 512  # the one length every point set is padded to
GL_X, GL_W = np.polynomial.legendre.leggauss(40)
structure = jax.jit(cmp._structure)


def padded(x, fill):
    """x padded with ``fill`` to N_POINTS (one compiled shape), and the count of real points."""
    x = np.asarray(x, dtype=float)
    assert x.size <= N_POINTS
    return np.concatenate([x, np.full(N_POINTS - x.size, fill)]), x.size


def logpdf(x, gamma, nu, scale, m):
    xp, n = padded(x, 1.0)
    return np.asarray(correlated_mp_logpdf(xp, gamma, nu, scale, m))[:n]


def cdf(x, gamma, nu, scale, m):
    xp, n = padded(x, 1.0)
    return np.asarray(correlated_mp_cdf(xp, gamma, nu, scale, m))[:n]


def exact_moment(nu, m, k):
    t = np.arange(1, m + 1, dtype=float) ** -nu
    t /= t.mean()
    return np.mean(t**k)


def density_integrals(gamma, nu, m, upper=None):
    """(int f, int x f, int x^2 f) over the support (up to ``upper``), Gauss-Legendre on every piece between
    the table nodes (atoms and edges are nodes); the first piece at gamma = 1 in x = u^2 for the x^-1/2 edge."""
    t, p = population_atoms(nu, m)
    _, (x_tab, _, _) = structure(jnp.asarray(gamma), t, p)
    nodes = np.unique(np.asarray(x_tab))
    if upper is not None:
        nodes = np.append(nodes[nodes < upper], upper)
    xs, ws = [], []
    for i, (lo, hi) in enumerate(zip(nodes[:-1], nodes[1:], strict=True)):
        if i == 0 and gamma == 1.0:
            u = np.sqrt(hi) * (GL_X + 1) / 2
            xs.append(u**2)
            ws.append(GL_W * np.sqrt(hi) / 2 * 2 * u)
        else:
            xs.append(lo + (hi - lo) * (GL_X + 1) / 2)
            ws.append(GL_W * (hi - lo) / 2)
    x, w = np.concatenate(xs), np.concatenate(ws)
    f = np.concatenate([np.exp(logpdf(c, gamma, nu, 1.0, m)) for c in np.array_split(x, -(-x.size // N_POINTS))])
    return w @ f, w @ (x * f), w @ (x**2 * f)


@pytest.mark.parametrize("nu", [0.0, 0.5, 1.0, 1.5])
def test_population_moments_match_the_discrete_sums(nu):
    t, p = (np.asarray(v) for v in population_atoms(nu, 384))
    assert t.shape == p.shape == (cmp._K0 + cmp._NQ,)
    assert np.all(np.diff(t) >= 0) and np.all(p >= 0)
    assert np.sum(p) == pytest.approx(1.0, abs=1e-14)
    for k in (1, 2, 3):
        assert np.sum(p * t**k) == pytest.approx(exact_moment(nu, 384, k), rel=1e-6)


@pytest.mark.parametrize("m", [1, 5, 31, 32, 33, 35])
def test_population_atoms_for_small_m(m):
    t, p = (np.asarray(v) for v in population_atoms(1.2, m))
    assert np.all(np.isfinite(t)) and np.all(np.isfinite(p))
    if m <= cmp._K0:  # exact: atoms beyond M are idle and sit on atom M
        assert np.count_nonzero(p) == m
        assert np.all(t[p == 0] == t[p > 0].min())
    for k in (2, 3):
        assert np.sum(p * t**k) == pytest.approx(exact_moment(1.2, m, k), rel=1e-4 if m > cmp._K0 else 1e-13)


@pytest.mark.parametrize("gamma", [0.25, 0.5, 1.0])
def test_nu_zero_is_marchenko_pastur(gamma):
    scale = 2.5
    lo, hi = scale * (1 - np.sqrt(gamma)) ** 2, scale * (1 + np.sqrt(gamma)) ** 2
    x = lo + (hi - lo) * np.concatenate([np.linspace(1e-6, 1 - 1e-6, 300), np.geomspace(1e-9, 1e-3, 50)])
    expected = np.asarray(mp_logpdf(x, gamma, scale))
    np.testing.assert_allclose(logpdf(x, gamma, 0.0, scale, 384), expected, rtol=0, atol=1e-8)
    np.testing.assert_allclose(cdf(x, gamma, 0.0, scale, 384), np.asarray(mp_cdf(x, gamma, scale)), atol=1e-12)
    # a mean-preserving spread of H changes the law only at second order: d/dnu = 0 at nu = 0 (checked away
    # from the edges, where rounding in 1/(x - edge) dominates)
    xp, n = padded(x[:300], 1.0)
    d_nu = jax.jacfwd(lambda nu: correlated_mp_logpdf(xp, gamma, nu, scale, 384))(0.0)
    np.testing.assert_allclose(np.asarray(d_nu)[:n], 0.0, atol=1e-8)
    s_lo, s_hi = (float(v) for v in correlated_mp_support(gamma, 0.0, 384))
    assert s_lo == pytest.approx((1 - np.sqrt(gamma)) ** 2, abs=1e-14)
    assert s_hi == pytest.approx((1 + np.sqrt(gamma)) ** 2, rel=1e-14)


@pytest.mark.parametrize("gamma", [0.25, 0.5, 1.0])
@pytest.mark.parametrize("nu", [0.5, 1.0, 1.5])
def test_normalisation_and_free_moments(gamma, nu):
    t, p = (np.asarray(v) for v in population_atoms(nu, 384))
    total, mean, second = density_integrals(gamma, nu, 384)
    assert total == pytest.approx(1.0, abs=1e-5)
    assert mean == pytest.approx(1.0, rel=1e-5)
    assert second == pytest.approx(np.sum(p * t**2) + gamma * np.sum(p * t) ** 2, rel=1e-5)


@pytest.mark.parametrize(("gamma", "nu"), [(0.5, 1.0), (1.0, 0.5), (0.25, 1.5)])
def test_cdf_is_the_integral_of_the_density(gamma, nu):
    lo, hi = (float(v) for v in correlated_mp_support(gamma, nu, 384))
    for frac in (0.01, 0.1, 0.3):
        upper = lo + frac * (hi - lo)
        total, _, _ = density_integrals(gamma, nu, 384, upper=upper)
        assert cdf([upper], gamma, nu, 1.0, 384)[0] == pytest.approx(total, abs=2e-7)


@pytest.mark.parametrize("gamma", [0.05, 0.5, 1.0])
@pytest.mark.parametrize("nu", [0.0, 0.7, 2.0])
def test_cdf_monotone_zero_below_one_above(gamma, nu):
    lo, hi = (float(v) for v in correlated_mp_support(gamma, nu, 384))
    x = np.concatenate([[0.0, lo], np.linspace(lo, hi, 400), [hi, 1.001 * hi, 1e12]])
    if lo > 0:
        x = np.concatenate([[0.999 * lo], x])
    x = np.sort(x)
    f = cdf(x, gamma, nu, 1.0, 384)
    assert np.all(np.diff(f) >= -1e-14)
    assert np.all(f[x <= lo] == 0.0)
    assert np.all(f[x >= hi] == 1.0)
    assert np.all((f >= 0) & (f <= 1))
    # inside an inner gap the CDF is flat: the population mass of the atoms below it
    lp = logpdf(x, gamma, nu, 1.0, 384)
    gap = (x > lo) & (x < hi) & ~np.isfinite(lp)
    if gap.any():
        t, p = (np.asarray(v) for v in population_atoms(nu, 384))
        assert np.all(np.isclose(f[gap][:, None], np.cumsum(p)[None, :], atol=1e-12).any(axis=1))


@pytest.mark.parametrize("nu", [0.5, 1.0])
def test_matches_simulated_spectra(nu):
    m, n = 500, 1000
    x = np.sort(np.concatenate([sample_correlated_spectrum(n, m, nu, scale=2.0, seed=s) for s in range(4)]))
    f = np.concatenate([cdf(c, m / n, nu, 2.0, m) for c in np.array_split(x, 4)])
    i = np.arange(1, x.size + 1)
    ks = max(np.max(i / x.size - f), np.max(f - (i - 1) / x.size))
    assert ks < 0.03


@pytest.mark.parametrize(("gamma", "nu"), [(0.5, 0.7), (1.0, 1.3), (0.25, 0.05)])
def test_gradients_match_finite_differences(gamma, nu):
    scale, m = 1.3, 384
    lo, hi = (float(v) for v in correlated_mp_support(gamma, nu, m))
    # points well inside the bulk: below the first gap (separated top eigenvalues) and away from its edges
    grid = lo + (hi - lo) * np.linspace(0.0, 1.0, 402)[1:-1]
    bulk_top = grid[np.argmin(np.isfinite(logpdf(grid, gamma, nu, 1.0, m)))]
    x = scale * (lo + (bulk_top - lo) * np.linspace(0.02, 0.9, 12))
    xp, n = padded(x, 1.0)

    def both(nu_, scale_):
        return correlated_mp_logpdf(xp, gamma, nu_, scale_, m), correlated_mp_cdf(xp, gamma, nu_, scale_, m)

    value = both(nu, scale)
    assert np.all(np.isfinite(np.asarray(value[0])[:n]))
    jac = jax.jacfwd(both, argnums=(0, 1))(nu, scale)
    for which in range(2):
        for arg, h in ((0, 1e-5), (1, 1e-6)):
            up = both(*(v + h if i == arg else v for i, v in enumerate((nu, scale))))[which]
            down = both(*(v - h if i == arg else v for i, v in enumerate((nu, scale))))[which]
            fd = (np.asarray(up) - np.asarray(down))[:n] / (2 * h)
            ad = np.asarray(jac[which][arg])[:n]
            np.testing.assert_allclose(ad, fd, rtol=1e-5, atol=1e-7)


def test_no_nan_anywhere():
    x = np.concatenate([[0.0], np.geomspace(1e-300, 1e12, 120), np.linspace(1e-4, 20.0, 100)])
    xp, n = padded(x, 0.0)

    @jax.jit
    def run(gamma, nu, scale):
        def f(nu_, scale_):
            xs = xp * scale
            return correlated_mp_logpdf(xs, gamma, nu_, scale_, 384), correlated_mp_cdf(xs, gamma, nu_, scale_, 384)

        return f(nu, scale), jax.jacfwd(
            lambda a, b: jnp.stack([jnp.where(jnp.isfinite(v), v, 0.0) for v in f(a, b)]), argnums=(0, 1)
        )(nu, scale)

    for gamma in (0.05, 0.5, 1.0):
        for nu in (0.0, 1e-3, 0.5, 1.0, 2.0, 3.0):
            for scale in (1e-6, 1.0, 1e6):
                (lp, f), (g_nu, g_scale) = run(gamma, nu, scale)
                for arr in (lp, f, g_nu, g_scale):
                    assert not np.any(np.isnan(np.asarray(arr))), (gamma, nu, scale)
                assert np.all(np.isfinite(np.asarray(g_nu))) and np.all(np.isfinite(np.asarray(g_scale)))
                lp = np.asarray(lp)[:n]
                assert np.isneginf(lp[0]) and np.isneginf(lp[-101])  # x = 0 and x = 1e12 * scale are outside
                assert np.count_nonzero(np.isfinite(lp)) >= 3


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
