"""Tests of hteval.densities.mp: Marchenko-Pastur log-density, closed-form CDF, quantile and Distribution."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro.distributions.transforms import biject_to
from scipy import integrate

from hteval.densities.mp import (
    MarchenkoPastur,
    half_open_unit_interval,
    mp_cdf,
    mp_icdf,
    mp_logpdf,
    mp_support,
)

jax.config.update("jax_enable_x64", True)

GAMMAS = [0.1, 0.5, 1.0]


def naive_pdf(x, gamma, sigma2):
    lo, hi = sigma2 * (1 - np.sqrt(gamma)) ** 2, sigma2 * (1 + np.sqrt(gamma)) ** 2
    return np.sqrt((hi - x) * (x - lo)) / (2 * np.pi * gamma * sigma2 * x)


def interior(gamma, sigma2, n=9):
    lo, hi = (float(v) for v in mp_support(gamma, sigma2))
    return lo + (hi - lo) * np.linspace(0.02, 0.98, n)


def quad_over_support(fun, gamma, sigma2, upper=None):
    """Integral of fun from l_- to ``upper`` (default l_+); quad copes with the edges' sqrt singularities."""
    lo, hi = (float(v) for v in mp_support(gamma, sigma2))
    value, _ = integrate.quad(fun, lo, hi if upper is None else upper, limit=200, epsabs=1e-13, epsrel=1e-12)
    return value


@pytest.fixture(scope="module")
def pdf_fn():
    logpdf = jax.jit(mp_logpdf)
    return lambda x, gamma, sigma2: float(jnp.exp(logpdf(x, gamma, sigma2)))


# --- values ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("sigma2", [1.0, 0.03, 7.0])
def test_logpdf_matches_naive_formula(gamma, sigma2):
    x = interior(gamma, sigma2)
    np.testing.assert_allclose(np.exp(mp_logpdf(x, gamma, sigma2)), naive_pdf(x, gamma, sigma2), rtol=1e-13)


@pytest.mark.parametrize("gamma", GAMMAS)
def test_density_integrates_to_one(gamma, pdf_fn):
    assert quad_over_support(lambda x: pdf_fn(x, gamma, 2.0), gamma, 2.0) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("gamma", GAMMAS)
def test_cdf_matches_quadrature(gamma, pdf_fn):
    sigma2 = 1.5
    for x in interior(gamma, sigma2, n=5):
        by_quad = quad_over_support(lambda t: pdf_fn(t, gamma, sigma2), gamma, sigma2, upper=x)
        assert float(mp_cdf(x, gamma, sigma2)) == pytest.approx(by_quad, abs=1e-10)


@pytest.mark.parametrize("gamma", GAMMAS)
def test_cdf_derivative_is_density(gamma):
    x = jnp.asarray(interior(gamma, 1.0))
    slope = jax.vmap(jax.grad(mp_cdf), in_axes=(0, None))(x, gamma)
    np.testing.assert_allclose(slope, jnp.exp(mp_logpdf(x, gamma)), rtol=1e-9)


@pytest.mark.parametrize("gamma", GAMMAS)
def test_cdf_limits_and_continuity(gamma):
    lo, hi = (float(v) for v in mp_support(gamma, 2.0))
    below = [0.0, lo * (1 - 1e-12), lo] if lo > 0 else [0.0, -1.0]
    np.testing.assert_array_equal(mp_cdf(jnp.array(below), gamma, 2.0), 0.0)
    np.testing.assert_array_equal(mp_cdf(jnp.array([hi, hi * (1 + 1e-12), 1e300]), gamma, 2.0), 1.0)
    # F - 0 and 1 - F vanish like distance^(3/2), or distance^(1/2) at x = 0 when gamma = 1
    near = jnp.array([lo + 1e-9 * hi, hi * (1 - 1e-9)])
    np.testing.assert_allclose(mp_cdf(near, gamma, 2.0), [0.0, 1.0], atol=1e-4 if gamma == 1 else 1e-12)
    grid = jnp.linspace(lo, hi, 2001)
    assert bool(jnp.all(jnp.diff(mp_cdf(grid, gamma, 2.0)) >= -1e-15))


@pytest.mark.parametrize("gamma", GAMMAS)
def test_icdf_round_trip(gamma):
    sigma2 = 0.7
    x = jnp.asarray(interior(gamma, sigma2, n=25))
    np.testing.assert_allclose(mp_icdf(mp_cdf(x, gamma, sigma2), gamma, sigma2), x, rtol=1e-10)
    q = jnp.linspace(1e-6, 1 - 1e-6, 101)
    np.testing.assert_allclose(mp_cdf(mp_icdf(q, gamma, sigma2), gamma, sigma2), q, atol=1e-13)
    lo, hi = mp_support(gamma, sigma2)
    np.testing.assert_allclose(mp_icdf(jnp.array([0.0, 1.0]), gamma, sigma2), [lo, hi], rtol=1e-15)
    assert bool(jnp.all(jnp.isnan(mp_icdf(jnp.array([-0.1, 1.1]), gamma, sigma2))))


@pytest.mark.parametrize("gamma", GAMMAS)
def test_mean_and_variance_by_quadrature(gamma, pdf_fn):
    sigma2 = 1.7
    mean = quad_over_support(lambda x: x * pdf_fn(x, gamma, sigma2), gamma, sigma2)
    second = quad_over_support(lambda x: x * x * pdf_fn(x, gamma, sigma2), gamma, sigma2)
    d = MarchenkoPastur(gamma, sigma2)
    assert mean == pytest.approx(float(d.mean), rel=1e-9)
    assert second - mean**2 == pytest.approx(float(d.variance), rel=1e-8)


@pytest.mark.parametrize("gamma", GAMMAS)
def test_samples_match_moments_and_cdf(gamma):
    n, sigma2 = 100_000, 1.3
    d = MarchenkoPastur(gamma, sigma2)
    x = np.asarray(d.sample(jax.random.PRNGKey(3), (n,)))
    assert np.all(np.isfinite(d.log_prob(x)))
    mean, var = float(d.mean), float(d.variance)
    assert abs(x.mean() - mean) < 4.5 * np.sqrt(var / n)
    # the sampling error of a variance: sqrt((mu4 - var^2)/n); bound mu4 by a loose 4 var^2
    assert abs(x.var() - var) < 4.5 * np.sqrt(3 * var**2 / n)
    f = np.asarray(mp_cdf(np.sort(x), gamma, sigma2))
    i = np.arange(1, n + 1)
    assert max(np.max(i / n - f), np.max(f - (i - 1) / n)) < 1.95 / np.sqrt(n)  # KS at p ~ 1e-3


# --- gradients and special points ------------------------------------------------------------------


@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("fn", [mp_logpdf, mp_cdf], ids=["logpdf", "cdf"])
def test_sigma2_gradient_matches_central_differences(gamma, fn):
    sigma2, h = 1.3, 1e-5
    for x in interior(gamma, sigma2, n=5):
        grad = float(jax.grad(fn, argnums=2)(x, gamma, sigma2))
        fd = (float(fn(x, gamma, sigma2 + h)) - float(fn(x, gamma, sigma2 - h))) / (2 * h)
        assert grad == pytest.approx(fd, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("fn", [mp_logpdf, mp_cdf], ids=["logpdf", "cdf"])
def test_gamma_gradient_matches_differences(fn):
    """Central differences at gamma = 0.5, one-sided (second order) at gamma = 1, the edge of its domain."""
    h = 1e-6
    for x in (0.3, 1.1, 2.5):
        grad = float(jax.grad(fn, argnums=1)(x, 0.5, 1.2))
        assert grad == pytest.approx(float(fn(x, 0.5 + h, 1.2) - fn(x, 0.5 - h, 1.2)) / (2 * h), rel=1e-6)
        grad = float(jax.grad(fn, argnums=1)(x, 1.0, 1.2))
        one_sided = float(3 * fn(x, 1.0, 1.2) - 4 * fn(x, 1.0 - h, 1.2) + fn(x, 1.0 - 2 * h, 1.2)) / (2 * h)
        assert grad == pytest.approx(one_sided, rel=1e-5)


def test_icdf_gradients_are_implicit():
    q, gamma, sigma2 = 0.3, 0.5, 1.2
    x = mp_icdf(q, gamma, sigma2)
    density = float(jnp.exp(mp_logpdf(x, gamma, sigma2)))
    assert float(jax.grad(mp_icdf)(q, gamma, sigma2)) == pytest.approx(1 / density)
    h = 1e-6
    for argnum, args_up, args_down in [(1, (q, gamma + h, sigma2), (q, gamma - h, sigma2)),
                                       (2, (q, gamma, sigma2 + h), (q, gamma, sigma2 - h))]:
        fd = (float(mp_icdf(*args_up)) - float(mp_icdf(*args_down))) / (2 * h)
        assert float(jax.grad(mp_icdf, argnums=argnum)(q, gamma, sigma2)) == pytest.approx(fd, rel=1e-6)


@pytest.mark.parametrize("gamma", GAMMAS)
def test_no_nan_at_special_points(gamma):
    lo, hi = (float(v) for v in mp_support(gamma, 1.0))
    points = [-1.0, 0.0, 1e-300, lo, hi, 1.5 * hi, 1e300, lo + 1e-12, hi - 1e-12, np.inf]
    for fn in (mp_logpdf, mp_cdf):
        for x in points + [5e-324]:  # a subnormal: no NaN, though its gradient may overflow
            assert not np.isnan(float(fn(x, gamma, 1.0))), (fn.__name__, x)
            grads = jax.grad(fn, argnums=(0, 1, 2))(x, gamma, 1.0)
            assert not any(np.isnan(float(g)) for g in grads), (fn.__name__, x, grads)
            if x in points:
                assert all(np.isfinite(float(g)) for g in grads), (fn.__name__, x, grads)
    assert float(mp_logpdf(lo, gamma)) == -np.inf and float(mp_logpdf(hi, gamma)) == -np.inf
    assert float(mp_logpdf(0.0, gamma)) == -np.inf and float(mp_logpdf(1e300, gamma)) == -np.inf


def test_gamma_one_small_x():
    """gamma = 1: f ~ x^-1/2 / pi and F ~ 2 sqrt(x) / pi at 0, with full relative accuracy down to 1e-300."""
    x = jnp.array([1e-300, 1e-100, 1e-20])
    np.testing.assert_allclose(jnp.exp(mp_logpdf(x, 1.0)), 1 / (np.pi * np.sqrt(x)), rtol=1e-8)
    np.testing.assert_allclose(mp_cdf(x, 1.0), 2 * np.sqrt(x) / np.pi, rtol=1e-9)


def test_lower_tail_cdf_keeps_relative_accuracy():
    """gamma < 1: F ~ c t^(3/2) near l_-, t = (x - l_-)/(l_+ - l_-); no absolute-1e-16 floor."""
    gamma = 0.5
    lo, hi = (float(v) for v in mp_support(gamma))
    t = np.array([1e-6, 1e-8])
    f = np.asarray(mp_cdf(lo + t * (hi - lo), gamma))
    assert np.all(f > 0) and f[0] / f[1] == pytest.approx(1e3, rel=1e-3)


# --- shapes, jit and the Distribution --------------------------------------------------------------


def test_batch_shapes_broadcast():
    x, sigma2 = jnp.linspace(0.5, 1.5, 5), jnp.array([[0.8], [1.0], [1.2]])
    for fn in (mp_logpdf, mp_cdf, mp_icdf):
        assert fn(x if fn is not mp_icdf else x / 2, 0.5, sigma2).shape == (3, 5)
    d = MarchenkoPastur(0.5, sigma2)
    assert d.batch_shape == (3, 1) and d.log_prob(x).shape == (3, 5) and d.cdf(x).shape == (3, 5)
    assert d.sample(jax.random.PRNGKey(0), (7,)).shape == (7, 3, 1)
    assert d.mean.shape == (3, 1) and d.variance.shape == (3, 1)
    assert MarchenkoPastur(jnp.array([0.2, 1.0])).sample(jax.random.PRNGKey(1), (4,)).shape == (4, 2)


def test_jit_matches_eager():
    x = jnp.linspace(0.0, 4.0, 17)
    for fn in (mp_logpdf, mp_cdf):
        np.testing.assert_allclose(jax.jit(fn)(x, 0.6, 1.1), fn(x, 0.6, 1.1), rtol=1e-14)
    np.testing.assert_allclose(jax.jit(mp_icdf)(x / 4, 0.6, 1.1), mp_icdf(x / 4, 0.6, 1.1), rtol=1e-14)


def test_gamma_constraint_is_half_open():
    assert bool(half_open_unit_interval(1.0)) and bool(half_open_unit_interval(jnp.array(0.3)))
    assert not bool(half_open_unit_interval(0.0)) and not bool(half_open_unit_interval(jnp.array(1.01)))
    assert 0.0 < float(biject_to(half_open_unit_interval)(jnp.array(3.0))) < 1.0
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError):
            MarchenkoPastur(bad, validate_args=True)
    with pytest.raises(ValueError):
        MarchenkoPastur(0.5, -1.0, validate_args=True)
    assert MarchenkoPastur(1.0, validate_args=True).batch_shape == ()


def test_distribution_log_prob_is_function_value():
    d = MarchenkoPastur(0.25, 2.0)
    x = jnp.array([0.1, 0.6, 2.0, 4.4, 5.0])
    np.testing.assert_array_equal(d.log_prob(x), mp_logpdf(x, 0.25, 2.0))
    np.testing.assert_array_equal(d.icdf(d.cdf(x[1:4])), mp_icdf(mp_cdf(x[1:4], 0.25, 2.0), 0.25, 2.0))


# --- numpy twins (exact posteriors and predictive checks) --------------------------------------------


@pytest.mark.parametrize("gamma", GAMMAS)
def test_numpy_twins_agree_with_the_jax_functions(gamma):
    from hteval.densities.mp import mp_cdf_np, mp_icdf_np, mp_logpdf_np

    sigma2 = np.array([[0.7], [1.3]])
    lo, hi = (float(v) for v in mp_support(gamma, 1.3))
    x = np.concatenate([[0.0, lo * 0.5], np.linspace(lo, hi, 41), [hi * 2.0]])[None, :]
    assert np.allclose(mp_logpdf_np(x, gamma, sigma2), np.asarray(mp_logpdf(x, gamma, sigma2)), rtol=0, atol=1e-12,
                       equal_nan=False)
    assert np.allclose(mp_cdf_np(x, gamma, sigma2), np.asarray(mp_cdf(x, gamma, sigma2)), rtol=0, atol=1e-13)
    q = np.linspace(0.0, 1.0, 21)[None, :]
    assert np.allclose(mp_icdf_np(q, gamma, sigma2), np.asarray(mp_icdf(q, gamma, sigma2)), rtol=1e-10, atol=1e-14)
