"""Tests of hteval.sampling: the exact finite-size HTMP sampler (SPEC section 4) and the Wishart sampler."""

import pathlib

import jax
import numpy as np
import pytest
import scipy.linalg
from scipy.interpolate import PchipInterpolator

from hteval.densities.mp import mp_cdf
from hteval.sampling import (
    _zero_rounding_negatives,
    sample_htmp_spectra,
    sample_htmp_spectrum,
    sample_mp_spectrum,
)

jax.config.update("jax_enable_x64", True)

DATA = pathlib.Path(__file__).parent / "data"
Z_LIMIT = 4.5  # two-sided z-tests: false alarm rate ~7e-6 per check


def ks_distance(sample: np.ndarray, cdf) -> float:
    """Kolmogorov-Smirnov distance between the empirical CDF of ``sample`` and ``cdf``."""
    x = np.sort(np.ravel(sample))
    f = cdf(x)
    i = np.arange(1, x.size + 1)
    return float(max(np.max(i / x.size - f), np.max(f - (i - 1) / x.size)))


def reference_htmp_cdf():
    """Interpolated mpmath HTMP CDF at gamma = 0.5, kappa = 2, scale = 1 (see test_pooled_ks_to_reference)."""
    table = np.load(DATA / "htmp_cdf_g0.5_k2.npz")
    spline = PchipInterpolator(table["x"], table["cdf"], extrapolate=False)
    x_max = table["x"][-1]  # F(x_max) = 1 to 1e-15
    return lambda x: np.where(x > x_max, 1.0, spline(np.minimum(x, x_max)))


# --- basic contract --------------------------------------------------------------------------------


def test_deterministic_for_a_seed():
    a = sample_htmp_spectrum(7, 50, 0.5, 3.0)
    np.testing.assert_array_equal(a, sample_htmp_spectrum(7, 50, 0.5, 3.0))
    np.testing.assert_array_equal(a, sample_htmp_spectrum(np.random.default_rng(7), 50, 0.5, 3.0))
    assert not np.array_equal(a, sample_htmp_spectrum(8, 50, 0.5, 3.0))
    np.testing.assert_array_equal(sample_mp_spectrum(3, 40, 0.3), sample_mp_spectrum(3, 40, 0.3))


def test_generator_is_advanced_not_reset():
    rng = np.random.default_rng(1)
    first = sample_htmp_spectrum(rng, 20, 0.5, 2.0)
    assert not np.array_equal(first, sample_htmp_spectrum(rng, 20, 0.5, 2.0))


@pytest.mark.parametrize("m", [1, 2, 37])
def test_shapes_dtype_order(m):
    for x in (sample_htmp_spectrum(0, m, 0.4, 2.0, scale=3.0), sample_mp_spectrum(0, m, 0.4, 3.0)):
        assert x.shape == (m,) and x.dtype == np.float64
        assert np.all(np.diff(x) >= 0) and np.all(x >= 0) and np.all(np.isfinite(x))


def test_replicates_shape_and_rows_independent_of_n():
    many = sample_htmp_spectra(5, 30, 0.5, 2.0, n=4)
    assert many.shape == (4, 30)
    np.testing.assert_array_equal(many[:2], sample_htmp_spectra(5, 30, 0.5, 2.0, n=2))
    assert not np.array_equal(many[0], many[1])


@pytest.mark.parametrize(
    "args",
    [(0, 0.5, 1.0), (2.5, 0.5, 1.0), (True, 0.5, 1.0), (10, 0.0, 1.0), (10, 1.5, 1.0), (10, np.nan, 1.0),
     (10, 0.5, 0.0), (10, 0.5, -1.0), (10, 0.5, np.inf)],
)
def test_invalid_arguments_raise(args):
    m, gamma, kappa = args
    with pytest.raises(ValueError):
        sample_htmp_spectrum(0, m, gamma, kappa)


def test_invalid_scale_and_sigma2_raise():
    with pytest.raises(ValueError, match="scale"):
        sample_htmp_spectrum(0, 10, 0.5, 1.0, scale=0.0)
    with pytest.raises(ValueError, match="sigma2"):
        sample_mp_spectrum(0, 10, 0.5, sigma2=-1.0)
    with pytest.raises(ValueError, match="n "):
        sample_htmp_spectra(0, 10, 0.5, 1.0, n=0)


def test_tiny_kappa_keeps_underflowed_draws():
    """kappa = 1e-3: chi-square df ~ 1e-5 underflow to exact zeros; they stay (no clip, no drop, no NaN)."""
    x = sample_htmp_spectra(11, 60, 0.7, 1e-3, n=10)
    assert x.shape == (10, 60) and np.all(np.isfinite(x)) and np.all(x >= 0)
    assert np.any(x == 0.0)


def test_rounding_negatives_are_zeroed_and_larger_ones_raise():
    lam = np.array([-1e-15, 0.5, 1.0])
    np.testing.assert_array_equal(_zero_rounding_negatives(lam), [0.0, 0.5, 1.0])
    with pytest.raises(RuntimeError):
        _zero_rounding_negatives(np.array([-1e-6, 0.5, 1.0]))


# --- exact distributional identities (SPEC section 4) ----------------------------------------------


@pytest.mark.parametrize(("m", "gamma", "kappa", "scale"), [(100, 0.5, 2.0, 2.0), (60, 0.25, 0.3, 0.1)])
def test_trace_is_chi_square(m, gamma, kappa, scale):
    """sum(lambda) = kappa/(gamma scale) sum(x) ~ chi^2(m kappa/gamma) exactly: z-test mean and variance."""
    n_rep = 400
    trace = kappa / (gamma * scale) * sample_htmp_spectra(21, m, gamma, kappa, scale, n=n_rep).sum(axis=1)
    df = m * kappa / gamma
    z_mean = (trace.mean() - df) / np.sqrt(2 * df / n_rep)
    # sampling variance of s^2 for chi^2(df): sigma^4 (2 + excess kurtosis 12/df) / n
    z_var = (trace.var(ddof=1) - 2 * df) / np.sqrt((2 * df) ** 2 * (2 + 12 / df) / n_rep)
    assert abs(z_mean) < Z_LIMIT and abs(z_var) < Z_LIMIT, (z_mean, z_var)


def test_mean_eigenvalue_variance_is_not_iid():
    """Var(mean s) = 2 gamma/(kappa m), half the iid value gamma (1 + 2/kappa)/m at kappa = 2."""
    m, gamma, kappa, n_rep = 100, 0.5, 2.0, 400
    mean_s = sample_htmp_spectra(22, m, gamma, kappa, n=n_rep).mean(axis=1)
    exact, iid = 2 * gamma / (kappa * m), gamma * (1 + 2 / kappa) / m
    se = exact * np.sqrt(2 / (n_rep - 1))  # normal approximation to the sampling error of a variance
    assert abs(mean_s.var(ddof=1) - exact) < Z_LIMIT * se
    assert abs(mean_s.var(ddof=1) - iid) > 2 * Z_LIMIT * se


# --- goodness of fit -------------------------------------------------------------------------------


def test_pooled_ks_to_reference():
    """Pooled draws (50 spectra, m = 200) match the mpmath HTMP CDF at gamma = 0.5, kappa = 2, scale = 1.

    Reference table tests/data/htmp_cdf_g0.5_k2.npz, made by tests/data/make_htmp_cdf.py on 2026-11-25 with
    mpmath 1.4.1 (30 digits), numpy 2.5.5, Python 3.12: CDF from the phase of U(b, -a, -y - i0) on 841
    points of [0, 30], checked against mp.quad of the SPEC section 2 density to 1e-12 (and its mass, mean
    and variance).
    Measured with these seeds: KS 0.0100 at 10^4 pooled points (iid sampling noise alone is ~0.009 there; with
    10^5 points it falls to 0.002-0.003, SPEC's 0.001-0.004); the wrong scaling beta = kappa/N gives 0.090.
    """
    cdf = reference_htmp_cdf()
    m, gamma, kappa, n_rep = 200, 0.5, 2.0, 50
    assert ks_distance(sample_htmp_spectra(31, m, gamma, kappa, n=n_rep), cdf) < 0.02

    # Power: Dyson index beta = kappa/N (N = m/gamma) instead of kappa/m, with eigenvalues rescaled to mean 1.
    rng = np.random.default_rng(32)
    n_big, beta_wrong = round(m / gamma), kappa / round(m / gamma)
    i = np.arange(m)
    wrong = []
    for _ in range(n_rep):
        x2 = rng.chisquare(beta_wrong * (n_big - i))
        y2 = rng.chisquare(beta_wrong * (m - 1 - i[:-1]))
        lam = scipy.linalg.eigvalsh_tridiagonal(x2 + np.concatenate([[0.0], y2]), np.sqrt(x2[:-1] * y2))
        wrong.append(lam / (beta_wrong * n_big))
    assert ks_distance(np.array(wrong), cdf) > 0.05


def test_large_kappa_is_marchenko_pastur():
    x = sample_htmp_spectra(41, 200, 0.5, 1e4, scale=1.0, n=20)
    assert ks_distance(x, lambda v: np.asarray(mp_cdf(v, 0.5, 1.0))) < 0.03


def test_mp_sampler_mean_and_edges():
    m, gamma, sigma2 = 400, 0.25, 2.0
    x = sample_mp_spectrum(51, m, gamma, sigma2)
    n_rows = round(m / gamma)
    # sum of all squared entries / (N m): mean sigma2, variance 2 sigma2^2 / (N m)
    assert abs(x.mean() - sigma2) < Z_LIMIT * sigma2 * np.sqrt(2 / (n_rows * m))
    lo, hi = sigma2 * (1 - np.sqrt(gamma)) ** 2, sigma2 * (1 + np.sqrt(gamma)) ** 2
    # edge fluctuations are O(m^-2/3) ~ 2% here
    assert abs(x.max() / hi - 1) < 0.05 and abs(x.min() / lo - 1) < 0.1
    assert ks_distance(x, lambda v: np.asarray(mp_cdf(v, gamma, sigma2))) < 0.05
