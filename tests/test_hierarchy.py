"""Partial pooling of kappa across layers (hteval.hierarchy) against the conjugate normal-normal answer."""

import jax
import numpy as np
import pytest
from scipy import stats

from hteval.errors import InputError
from hteval.hierarchy import MU_PRIOR_SD, TAU_PRIOR_SD, pool_kappa, probability_lower

jax.config.update("jax_enable_x64", True)

CENTRES = np.array([0.2, 0.8, 1.5, -0.3, 1.0, 0.5])  # per-layer posterior means of log kappa
SDS = np.array([0.3, 0.5, 0.4, 0.6, 0.35, 0.45])


def _gaussian_draws(centres, sds, n=2000):
    """Draws whose histogram is exactly Gaussian (normal quantiles), so the kernel density is the Gaussian."""
    q = stats.norm.ppf((np.arange(n) + 0.5) / n)
    return {f"layer{i}": np.exp(c + s * q) for i, (c, s) in enumerate(zip(centres, sds, strict=True))}


def _grid_posterior(centres, sds):
    """Posterior moments of (mu, tau, theta_l) by quadrature: layers' likelihoods N(c_l; theta_l, s_l)."""
    mu = np.linspace(-3, 4, 561)[:, None]
    tau = np.linspace(1e-4, 6, 600)[None, :]
    log_p = stats.norm.logpdf(mu, 0, MU_PRIOR_SD) + stats.halfnorm.logpdf(tau, scale=TAU_PRIOR_SD)
    for c, s in zip(centres, sds, strict=True):
        log_p = log_p + stats.norm.logpdf(c, mu, np.sqrt(tau**2 + s**2))
    w = np.exp(log_p - log_p.max())
    w /= w.sum()
    theta = [np.sum(w * (c * tau**2 + mu * s**2) / (tau**2 + s**2)) for c, s in zip(centres, sds, strict=True)]
    mean_mu = np.sum(w * mu)
    return mean_mu, np.sqrt(np.sum(w * (mu - mean_mu) ** 2)), np.sum(w * tau), np.array(theta)


def test_pooling_matches_the_conjugate_answer():
    pooled = pool_kappa(_gaussian_draws(CENTRES, SDS), seed=3)
    mean_mu, sd_mu, mean_tau, theta = _grid_posterior(CENTRES, SDS)
    assert pooled.diagnostics["converged"], pooled.diagnostics
    assert pooled.mu.mean() == pytest.approx(mean_mu, abs=0.25 * sd_mu)
    assert pooled.mu.std() == pytest.approx(sd_mu, rel=0.15)
    assert pooled.tau.mean() == pytest.approx(mean_tau, rel=0.15)
    np.testing.assert_allclose(pooled.log_kappa.mean(axis=0), theta, atol=0.05)
    # partial pooling: every layer moves toward the population, none past it
    assert np.all(np.abs(theta - mean_mu) < np.abs(CENTRES - mean_mu))
    assert np.all(np.abs(pooled.log_kappa.mean(axis=0) - mean_mu) < np.abs(CENTRES - mean_mu))
    median, lo, hi = pooled.interval(pooled.kappa)
    assert lo < np.exp(mean_mu) < hi and lo < median < hi


def test_a_network_with_larger_kappa_ranks_above_with_high_probability():
    low = pool_kappa(_gaussian_draws(CENTRES, SDS), seed=0)
    high = pool_kappa(_gaussian_draws(CENTRES + 2.0, SDS), seed=0)
    assert probability_lower(low, high) > 0.97
    assert probability_lower(high, low) < 0.03
    assert list(low.table().index) == [f"layer{i}" for i in range(len(CENTRES))]


def test_pooling_needs_two_layers_with_enough_draws():
    with pytest.raises(InputError, match="at least two layers"):
        pool_kappa({"only": np.ones(500)})
    with pytest.raises(InputError, match="posterior draws"):
        pool_kappa({"a": np.ones(10), "b": np.ones(10)})
