"""The posterior predictive checks: exact replicate spectra for htmp-exact, KS for the iid models."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from benchmarks.goodness_of_fit import FAMILIES, band, calibration, power
from hteval import goodness_of_fit, names
from hteval.infer import eigenvalue_spectrum, fit
from hteval.sampling import sample_htmp_spectrum


def test_replicates_follow_the_exact_sampler():
    """Batched replicates have the law of `sample_htmp_spectrum`: the trace's exact chi-square law, and the
    largest and smallest eigenvalues' laws (two-sample KS against the reference sampler)."""
    m, gamma, kappa, scale = 40, 0.5, 3.0, 2.0
    n = 400
    rng = np.random.default_rng(1)
    reps = goodness_of_fit.replicate_spectra(rng, m, gamma, np.full(n, kappa), np.full(n, scale))
    assert reps.shape == (n, m) and np.all(np.diff(reps, axis=1) >= 0)
    trace = reps.sum(axis=1) * kappa / (gamma * scale)
    assert stats.kstest(trace, stats.chi2(m * kappa / gamma).cdf).pvalue > 1e-3
    reference = np.stack([sample_htmp_spectrum(np.random.default_rng([2, i]), m, gamma, kappa, scale)
                          for i in range(n)])
    for rank in (0, m // 2, m - 1):
        assert stats.ks_2samp(reps[:, rank], reference[:, rank]).pvalue > 1e-3


def test_replicates_of_a_conv_layer_pool_its_slices():
    reps = goodness_of_fit.replicate_spectra(np.random.default_rng(0), 30, 1.0, np.array([2.0, 5.0]),
                                             np.array([1.0, 1.0]), n_slices=3)
    assert reps.shape == (2, 90)


def test_a_spectrum_from_the_replicates_law_is_not_flagged_and_a_distorted_one_is():
    rng = np.random.default_rng(3)
    reps = goodness_of_fit.replicate_spectra(rng, 100, 0.5, np.full(25, 4.0), np.ones(25))
    same = goodness_of_fit.replicate_spectra(rng, 100, 0.5, np.array([4.0]), np.ones(1))[0]
    assert goodness_of_fit.envelope_check(same, reps).p_value > 0.01
    stretched = same ** 1.3  # the same ranks, the wrong shape
    assert goodness_of_fit.envelope_check(stretched, reps).p_value < 1e-3


def test_censored_ranks_count_as_the_floor():
    rng = np.random.default_rng(4)
    reps = goodness_of_fit.replicate_spectra(rng, 80, 0.5, np.full(25, 0.5), np.ones(25))
    observed = goodness_of_fit.replicate_spectra(rng, 80, 0.5, np.array([0.5]), np.ones(1))[0]
    floor = float(np.quantile(observed, 0.3))
    check = goodness_of_fit.envelope_check(np.where(observed > floor, observed, 0.0), reps, floor=floor)
    assert np.isfinite(check.observed) and check.p_value > 0.01


def test_fit_reports_ppc_pvalue_and_misfit():
    x = sample_htmp_spectrum(np.random.default_rng(5), 200, 0.5, 2.0, 1.0)
    result = fit(eigenvalue_spectrum(x, gamma=0.5), model="htmp-exact", seed=0, log_likelihood=False)
    document = result.to_json()
    assert 0.0 <= document[names.PPC_PVALUE] <= 1.0 and document[names.MISFIT] is False
    assert document["probabilities"][names.P_KAPPA_BELOW_10] == pytest.approx(1.0)
    lognormal, gamma = FAMILIES["lognormal"](np.random.default_rng(6), 384)
    bad = fit(eigenvalue_spectrum(lognormal, gamma=gamma), model="htmp-exact", seed=0, log_likelihood=False)
    assert bad.misfit and bad.ppc_pvalue < names.MISFIT_LEVEL


def test_iid_models_use_the_ks_pvalue():
    x = sample_htmp_spectrum(np.random.default_rng(7), 200, 0.5, 2.0, 1.0)
    result = fit(eigenvalue_spectrum(x, gamma=0.5), model="htmp", seed=0, log_likelihood=False)
    p = result.ppc_pvalue
    assert 0.0 <= p <= 1.0 and result.misfit == (p < names.MISFIT_LEVEL)


def _calibration_bound(p: np.ndarray) -> float:
    return band(0.05, p.size)


def test_calibration_on_exact_spectra_reduced():
    """At most 5% + 3 binomial se of exact HTMP spectra flagged at 0.05 (a reduced run; the full one is slow)."""
    p = np.concatenate([calibration(45, 100), calibration(15, 384)])
    assert np.mean(p < 0.05) <= _calibration_bound(p)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_power_reduced(family):
    """At least 80% of 8 spectra of each non-HTMP family flagged at 0.01 (the full run: 100 per family).
    A check with power 0.9 passes this (6 of 8) with probability 0.96, one with power 0.6 with probability 0.32."""
    p = power(family, 8)
    assert np.mean(p < names.MISFIT_LEVEL) >= 0.75


@pytest.mark.slow
def test_calibration_on_exact_spectra():
    """1080 exact spectra at M = 100 and 384, gamma 0.25 / 0.5 / 1, kappa 0.3-30."""
    p = np.concatenate([calibration(540, 100), calibration(540, 384)])
    assert np.mean(p < 0.05) <= _calibration_bound(p)


@pytest.mark.slow
@pytest.mark.parametrize("family", list(FAMILIES))
def test_power(family):
    p = power(family, 100)
    assert np.mean(p < names.MISFIT_LEVEL) >= 0.8
