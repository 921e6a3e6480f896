"""The exact posterior of htmp-exact by quadrature (hteval.kappa_posterior, hteval.densities.laguerre,
hteval.quadrature_1d): the likelihood against the JAX one, the scale integral against adaptive quadrature, the
posterior against a brute-force grid, the draws against their own CDF, the checks, censoring, the prior's range,
NUTS agreement and simulation-based calibration with the exact sampler."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from scipy import integrate, stats

from hteval.densities.laguerre import kappa_terms, log_likelihood, log_vandermonde, statistics
from hteval.infer import eigenvalue_spectrum, fit
from hteval.kappa_posterior import (
    Censoring,
    _draw_log_theta,
    _mode,
    _scale_integral,
    censoring_profile,
    kappa_upper_bound,
    posterior,
)
from hteval.quadrature_1d import Grid1D, zoomed_grid
from hteval.sampling import sample_htmp_spectrum


def _record(x, gamma, floor=None):
    return eigenvalue_spectrum(x, gamma=gamma, floor=floor)


@pytest.mark.parametrize(("kappa", "scale"), [(2.0, 1.5), (0.01, 3.0), (500.0, 0.2), (4000.0, 1.0)])
def test_numpy_likelihood_equals_the_jax_one(kappa, scale):
    jax = pytest.importorskip("jax")
    from hteval.densities.htmp_exact import htmp_exact_loglik

    x = sample_htmp_spectrum(1, 300, 0.5, 2.0, 1.5)
    rec = _record(x, 0.5, floor=float(np.sort(x)[5]) * 1.0000001)  # 6 censored
    st = statistics(rec)
    with jax.enable_x64(True):
        ref = float(htmp_exact_loglik(st.log_vandermonde[0], st.log_sum[0], st.total[0], n=rec.n_eigs,
                                      n_censored=rec.n_censored, floor=rec.floor, gamma=0.5, kappa=kappa,
                                      scale=scale))
    assert float(log_likelihood(st, kappa, scale)) == pytest.approx(ref, rel=1e-12, abs=1e-9)


def test_log_vandermonde_in_blocks_and_equal_values():
    x = np.sort(np.random.default_rng(0).gamma(1.0, 1.0, 700))
    pairs = x[None, :] - x[:, None]
    assert log_vandermonde(x) == pytest.approx(np.sum(np.log(pairs[np.triu_indices(x.size, 1)])), rel=1e-13)
    with pytest.raises(ValueError, match="distinct"):
        log_vandermonde(np.array([1.0, 2.0, 2.0]))


@pytest.mark.parametrize(("s", "c", "mean"), [(10.0, 0.05, 3.0), (10.0, 0.05, -3.0), (1e3, 1e-3, 0.0),
                                              (5.0, 1.0, 5.0), (100.0, 50.0, -6.0), (1.0, 1e-3, 10.0)])
def test_scale_integral_against_adaptive_quadrature(s, c, mean):
    """The integral over u = log theta of exp(-s e^-u - c u - (u - mean)^2 / 2), its conditional mean and second
    moment: Gauss-Hermite about the mode against scipy's adaptive quadrature, from likelihood- to prior-dominated."""
    log_i, cond_mean, cond_second = (float(v[0]) for v in _scale_integral(np.array([s]), np.array([c]),
                                                                          np.array([mean])))
    mode = float(_mode(np.array([s]), np.array([c]), np.array([mean]))[0][0])

    def f(u, power=0):
        return u**power * math.exp(-s * math.exp(-u) - c * u - (u - mean) ** 2 / 2 - log_i)

    box = (mode - 40, mode + 40)
    assert integrate.quad(f, *box, points=[mode], limit=400)[0] == pytest.approx(1.0, abs=1e-9)
    assert integrate.quad(f, *box, args=(1,), points=[mode], limit=400)[0] == pytest.approx(cond_mean, abs=1e-8)
    assert integrate.quad(f, *box, args=(2,), points=[mode], limit=400)[0] == pytest.approx(cond_second, rel=1e-8)


@pytest.mark.parametrize(("s", "c", "mean"), [(10.0, 0.05, 3.0), (1e3, 1e-4, 0.0), (5.0, 1.0, 5.0),
                                              (2e6, 1e6, 2.0), (1.0, 1e-3, 10.0)])
def test_scale_draws_follow_their_conditional(s, c, mean):
    """Rejection draws of log theta (log-gamma envelope where the likelihood dominates, the prior where it does not)
    against the CDF of the target density, including the grid fallback's draws."""
    rng = np.random.default_rng(3)
    u = _draw_log_theta(rng, np.full(20000, s), np.full(20000, c), np.full(20000, mean))
    assert np.all(np.isfinite(u))
    mode, v = (float(a[0]) for a in _mode(np.array([s]), np.array([c]), np.array([mean])))
    width = 40 / math.sqrt(v + 1)
    grid = np.linspace(mode - width, mode + width, 200001)
    delta = grid - mode  # the log density relative to the mode, without cancellation
    log_p = -v * (np.expm1(-delta) + delta) - delta**2 / 2
    cdf = np.cumsum(np.exp(log_p - log_p.max()))
    assert stats.kstest(u, lambda v: np.interp(v, grid, cdf / cdf[-1])).pvalue > 1e-3


def _brute_force_moments(st, scale_ref, draws):
    """Means and sds of log kappa and log scale on a 400 x 400 grid of the exact log posterior."""
    q = np.quantile(draws["log_kappa"], [1e-4, 1 - 1e-4])
    r = np.quantile(draws["log_scale"], [1e-4, 1 - 1e-4])
    t = np.linspace(q[0] - 0.3 * np.ptp(q), q[1] + 0.3 * np.ptp(q), 400)
    v = np.linspace(r[0] - 0.3 * np.ptp(r), r[1] + 0.3 * np.ptp(r), 400)
    a, c, total = kappa_terms(st, np.exp(t))  # log L = A - S / theta - C log theta: A once per kappa
    tt, vv = np.meshgrid(t, v, indexing="ij")
    log_theta = np.log(2 * st.gamma) + vv - tt
    lp = a[:, None] - total * np.exp(-log_theta) - c[:, None] * log_theta - 0.5 * (vv - np.log(scale_ref)) ** 2
    assert float(lp[7, 11]) - float(log_likelihood(st, np.exp(t[7]), np.exp(v[11]))) == pytest.approx(
        -0.5 * (v[11] - np.log(scale_ref)) ** 2, abs=1e-6)
    p = np.exp(lp - lp.max())
    p /= p.sum()
    out = []
    for axis, points in ((1, t), (0, v)):
        marginal = p.sum(axis=axis)
        mean = np.sum(marginal * points)
        out.append((mean, math.sqrt(np.sum(marginal * points**2) - mean**2)))
    return out


@pytest.mark.parametrize(("m", "gamma", "kappa", "floor_rank"), [(384, 0.5, 2.0, None), (300, 1.0, 0.8, 10),
                                                                   (200, 0.25, 150.0, None), (384, 0.5, 384.0, None)])
def test_posterior_matches_a_brute_force_grid(m, gamma, kappa, floor_rank):
    x = sample_htmp_spectrum(3, m, gamma, kappa, 1.7)
    floor = None if floor_rank is None else float(np.sort(x)[floor_rank]) * 1.000001
    rec = _record(x, gamma, floor)
    st = statistics(rec)
    ref = float(np.mean(rec.eigenvalues))
    post = posterior(st, scale_ref=ref, variant="closed")
    draws = post.draw(8000, np.random.default_rng(0))
    (t_mean, t_sd), (s_mean, s_sd) = _brute_force_moments(st, ref, draws)
    moments = post.grid.moments()
    assert moments["x"][0] == pytest.approx(t_mean, abs=0.01 * t_sd)
    assert moments["x"][1] == pytest.approx(t_sd, rel=0.01)
    assert moments["log_scale"][0] == pytest.approx(s_mean, abs=0.01 * s_sd)
    assert moments["log_scale"][1] == pytest.approx(s_sd, rel=0.01)
    # the draws: within 4.5 Monte Carlo standard errors of the grid's mean
    assert abs(np.mean(draws["log_kappa"]) - t_mean) < 4.5 * t_sd / math.sqrt(8000)
    assert abs(np.mean(draws["log_scale"]) - s_mean) < 4.5 * s_sd / math.sqrt(8000)
    assert post.grid.problems() == []


def test_kappa_draws_follow_the_grid_cdf():
    x = sample_htmp_spectrum(5, 200, 0.5, 1.0, 1.0)
    post = posterior(statistics(_record(x, 0.5)), scale_ref=1.0)
    draws = post.draw(20000, np.random.default_rng(1))["log_kappa"]
    q = np.linspace(0.001, 0.999, 999)
    grid_quantiles = post.quantiles(q)
    assert stats.kstest(draws, lambda v: np.interp(v, grid_quantiles, q, left=0.0, right=1.0)).pvalue > 1e-3


def test_grid_checks_report_prior_bound_and_resolution():
    at_bound = zoomed_grid(lambda t: 2 * t, (0.0, 1.0))
    assert any("prior's upper bound" in r for r in at_bound.problems())
    # a density with structure finer than the grid: the two resolutions disagree
    points = np.linspace(0.0, 1.0, 9)
    rough = Grid1D(points, np.where(np.arange(9) % 2 == 0, 0.0, -8.0), (-1.0, 2.0))
    assert any("moments move" in r for r in rough.problems())
    smooth = zoomed_grid(lambda t: -0.5 * ((t - 0.3) / 0.01) ** 2, (-7.0, 10.0))
    assert smooth.problems() == []


def test_prior_range_scales_with_m_and_a_gaussian_layer_is_not_cut_off():
    """A Gaussian (white Wishart) layer has kappa near M; at M = 2048 the old bound 1e3 cut its posterior off."""
    assert kappa_upper_bound(100) == 1e3 and kappa_upper_bound(2048) == 20480
    x = sample_htmp_spectrum(0, 2048, 0.5, 2048.0, 1.0)  # beta = 1: the real Wishart ensemble
    result = fit(x, gamma=0.5)
    row = result.summary.loc["kappa"]
    assert result.converged, result.diagnostics
    assert 0.8 * 2048 < row["median"] < 1.25 * 2048 and row["ci_high"] < kappa_upper_bound(2048) / 2


def test_kappa_at_the_prior_bound_is_not_converged():
    x = sample_htmp_spectrum(2, 100, 0.5, 0.0012, 1.0)
    result = fit(x, gamma=0.5)
    assert not result.converged
    assert any("lower bound" in r for r in result.diagnostics["reasons"])


def _bf16_like_layer(m, gamma, kappa, fraction, seed=0):
    x = sample_htmp_spectrum(seed, m, gamma, kappa, 1.0)
    floor = float(np.quantile(x, fraction))
    return _record(x, gamma, floor), x


def test_censoring_negligible_for_a_float64_floor():
    x = sample_htmp_spectrum(4, 300, 1.0, 0.5, 1.0)
    rec = _record(x, 1.0, float(np.sort(x)[20]) * 1.0001)  # 21 censored, all far below the rest
    result = fit(rec)
    assert result.converged and rec.n_censored == 21
    assert result.diagnostics["quadrature"]["censoring"]["error_bound"] < 1e-3


def test_heavy_censoring_is_reported_not_silent():
    """A bfloat16-like floor at 0.3 of the mean eigenvalue censors a quarter of a heavy-tailed spectrum: the
    closed-form term's bounds move the posterior, and the fit says so."""
    rec, _ = _bf16_like_layer(1000, 1.0, 2.0, 0.25)
    result = fit(rec)
    report = result.diagnostics["quadrature"]["censoring"]
    assert report["n_censored"] == rec.n_censored and report["error_bound"] > 1.0
    assert not result.converged
    assert any(r.startswith("censoring:") for r in result.diagnostics["reasons"])


def test_mean_field_censoring_recovers_kappa_over_replicates():
    """With a floor at the 10% quantile, the mean-field posterior's kappa is unbiased over replicates: the mean
    z-score of the truth stays within what 12 replicates allow."""
    z = []
    for seed in range(12):
        rec, _ = _bf16_like_layer(400, 0.5, 3.0, 0.10, seed=seed)
        st = statistics(rec)
        x = np.asarray(rec.eigenvalues)
        cens = Censoring(k=st.n_censored, profile=censoring_profile([x], rec.floor), floor=rec.floor)
        post = posterior(st, scale_ref=float(np.mean(x)), censoring=cens)
        mean, sd = post.grid.moments()["x"]
        z.append((math.log(3.0) - mean) / sd)
    assert abs(np.mean(z)) < 3.0 / math.sqrt(12) + 0.3, z


def test_default_fit_imports_neither_jax_nor_arviz():
    code = ("import sys, numpy as np; from hteval.infer import fit; from hteval.sampling import sample_htmp_spectrum;"
            "r = fit(sample_htmp_spectrum(1, 200, 0.5, 2.0, 1.0), gamma=0.5); assert r.converged;"
            "print(sorted(m for m in ('jax', 'numpyro', 'arviz', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stderr


def test_exact_draws_agree_with_nuts_reduced():
    """The agreement criterion on one spectrum with short chains (the slow test runs five, NUTS 4 x 5000): medians
    within 0.1 sd + 3 MCSE, interval ends within 0.2 sd + 3 MCSE, for kappa and scale."""
    from benchmarks.exact_vs_nuts import compare

    x = sample_htmp_spectrum(8, 150, 0.5, 1.5, 1.0)
    exact = fit(x, gamma=0.5)
    nuts = fit(x, gamma=0.5, sampler="nuts", chains=2, draws=1500, warmup=500, seed=1)
    assert exact.converged and nuts.converged
    for p in ("kappa", "scale"):
        for statistic, diff, allowed in compare(exact.draws[p], nuts.draws[p]):
            assert diff <= allowed, (p, statistic, diff, allowed)


@pytest.mark.slow
@pytest.mark.parametrize(("m", "gamma", "kappa", "censored"), [(100, 0.5, 0.5, 0), (300, 1.0, 2.0, 0),
                                                                (500, 0.25, 20.0, 0), (200, 0.5, 300.0, 0),
                                                                (300, 1.0, 1.0, 15)])
def test_exact_draws_agree_with_long_nuts(m, gamma, kappa, censored):
    """Five spectra, NUTS run long (4 x 5000 draws): the agreement criterion on every median and interval
    end of kappa and scale."""
    from benchmarks.exact_vs_nuts import compare

    x = sample_htmp_spectrum(10 + m, m, gamma, kappa, 1.3)
    floor = float(np.sort(x)[censored]) * 1.000001 if censored else None
    rec = _record(x, gamma, floor)
    exact = fit(rec)
    nuts = fit(rec, sampler="nuts", chains=4, draws=5000, warmup=1000, seed=2)
    assert exact.converged and nuts.converged, (exact.diagnostics, nuts.diagnostics)
    for p in ("kappa", "scale"):
        for statistic, diff, allowed in compare(exact.draws[p], nuts.draws[p]):
            assert diff <= allowed, (p, statistic, diff, allowed)


def _sbc(m: int, sims: int, seed: int):
    from benchmarks.sbc import simulate_and_fit, summarise

    return summarise([simulate_and_fit(i, m=m, gamma=0.5, model="htmp-exact", seed=seed) for i in range(sims)])


def test_reduced_simulation_based_calibration():
    """300 simulations at M = 60 (about 10 s): coverage of the 50% and 90% intervals of kappa and scale within 3.5
    binomial standard errors of nominal (a calibrated method fails this with probability ~1e-3 per interval).
    The slow test and benchmarks/sbc.py run 1000 simulations at M = 100 and M = 500."""
    s = _sbc(60, 300, seed=11)
    assert s["failed"] == 0
    for p in ("kappa", "scale"):
        for level in (0.5, 0.9):
            half = 3.5 * math.sqrt(level * (1 - level) / 300)
            assert abs(s[f"in{round(100 * level)}_{p}"] - level) <= half, s
        assert s[f"rank_pvalue_{p}"] > 1e-3, s


@pytest.mark.slow
@pytest.mark.parametrize("m", [100, 500])
def test_simulation_based_calibration(m):
    """The calibration criterion: 1000 simulations, 90% and 50% intervals within 3 binomial standard errors."""
    s = _sbc(m, 1000, seed=0)
    for p in ("kappa", "scale"):
        for level in (0.5, 0.9):
            half = 3 * math.sqrt(level * (1 - level) / 1000)
            assert abs(s[f"in{round(100 * level)}_{p}"] - level) <= half, s
