"""Exact log evidence: every model's quadrature total plus its priors' constants is the marginal likelihood.

Checked against brute-force integrals of likelihood x prior on dense uniform grids over the prior's range
(written here from the models' definitions, not from the quadrature code): htmp-exact to 1e-4, the power law
(every breakpoint, alpha by adaptive quadrature, w by its Beta function) to 1e-3, MP + outliers to 1e-2 (its
bulk edges make the integrand kinked in sigma2, so the grid's rule converges slowly there), the log-normal with
censored values to 1e-3. The other iid models' constants are pinned in `tests/test_models.py` (the grid's log
density against numpyro's normalised log joint). The ordering convention is checked on the exact density itself:
the sorted density integrates to 1 over the sorted cone, and without repulsion the labelled one is the iid Gamma
law, i.e. what iid models count.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, special, stats

from hteval import evidence, kappa_posterior, names, quadrature, quadrature_1d
from hteval.densities import laguerre
from hteval.infer import eigenvalue_spectrum, fit
from hteval.sampling import sample_htmp_spectrum, sample_mp_spectrum

HALF_LOG_TWO_PI = 0.5 * math.log(2 * math.pi)


def _trapezoid_log(table: np.ndarray, first: np.ndarray, second: np.ndarray) -> float:
    """log of the 2-D trapezoid integral of exp(table) over the outer product of two even axes."""
    top = np.max(table)
    return math.log(integrate.trapezoid(integrate.trapezoid(np.exp(table - top), second, axis=1), first)) + top


def _log_evidence(x, model, **kwargs) -> float:
    result = fit(eigenvalue_spectrum(x, gamma=0.5, **kwargs), model=model, scale_ref=1.0, chains=1, draws=2000)
    assert result.converged, result.diagnostics["reasons"]
    return result.evidence[names.LOG_EVIDENCE]


def test_grid_totals_are_the_integrals_of_their_densities():
    """A bivariate normal mixture missing its 1 / (2 pi) integrates to 2 pi on the zoomed grid, to 1e-5 (1e-3
    before the Richardson step); a narrow normal to its sqrt(2 pi) sd on the one-dimensional grid."""
    means = np.array([[0.0, 0.0], [3.0, -2.0]])
    precisions = np.linalg.inv(np.array([[[1.0, 0.8], [0.8, 1.0]], [[0.04, 0.0], [0.0, 0.04]]]))
    log_weights = np.log([0.9, 0.1]) - 0.5 * np.log([0.36, 0.0016])

    def mixture(a, b):
        d = np.stack(np.broadcast_arrays(a[:, None], b[None, :]), axis=-1)[..., None, :] - means
        return special.logsumexp(log_weights - 0.5 * np.einsum("...ki,kij,...kj->...k", d, precisions, d), axis=-1)

    grid = quadrature.zoomed_grid(mixture, (-20.0, 20.0), (-20.0, 20.0), table=True)
    assert grid.log_total == pytest.approx(math.log(2 * math.pi), abs=1e-5)
    line = quadrature_1d.zoomed_grid(lambda t: -0.5 * ((t - 0.3) / 0.01) ** 2, (-7.0, 10.0))
    assert line.log_total == pytest.approx(math.log(0.01) + HALF_LOG_TWO_PI, abs=1e-5)


def _stats(x, gamma):
    x = np.sort(np.asarray(x, dtype=np.float64))
    return laguerre.ExactStatistics(log_vandermonde=np.array([laguerre.log_vandermonde(x)]),
                                    log_sum=np.array([np.sum(np.log(x))]), total=np.array([np.sum(x)]),
                                    n_observed=np.array([float(x.size)]), n_censored=np.array([0.0]), m=x.size,
                                    gamma=gamma, floor=0.0)


@pytest.mark.parametrize("kappa", [1.5, 2.0])
def test_the_exact_density_is_of_the_sorted_spectrum(kappa):
    """M = 2: the exact likelihood integrates to 1 over x1 < x2 (so it counts each unordered spectrum once, and
    minus log 2! it is the density of the labelled pair, which integrates to 1 over both orders). The integrand is
    the likelihood's A(kappa) - S / theta - C log theta with A's data terms beta V + alpha L written out (checked
    against `log_likelihood` at one point), so that the integral needs no statistics per point."""
    gamma, scale = 0.5, 1.3
    beta, alpha = kappa / 2, kappa / (2 * gamma) - 1 - kappa / 4
    theta = 2 * gamma * scale / kappa
    a0, c, _ = laguerre.kappa_terms(_stats([1.0, math.e], gamma), np.array([kappa]))
    a0 = a0.item() - beta * math.log(math.e - 1.0) - alpha  # V = log(e - 1), L = 1 at the pair (1, e)
    base = a0 - c.item() * math.log(theta)

    def log_density(x1, x2):
        return base + beta * math.log(x2 - x1) + alpha * math.log(x1 * x2) - (x1 + x2) / theta

    expected = laguerre.log_likelihood(_stats([0.4, 2.5], gamma), kappa, scale).item()
    assert log_density(0.4, 2.5) == pytest.approx(expected, abs=1e-12)
    total, error = integrate.dblquad(lambda d, x1: math.exp(log_density(x1, x1 + d)), 0.0, np.inf, 0.0, np.inf,
                                     epsabs=1e-10, epsrel=1e-8)
    assert total == pytest.approx(1.0, abs=1e-6), error


def test_without_repulsion_the_labelled_exact_density_is_the_iid_law():
    """beta = kappa / M -> 0: prod |x_i - x_j|^beta -> 1 and the Laguerre-Selberg integral -> Gamma(alpha + 1)^M, so
    the exact log-likelihood minus log M! is the iid Gamma(alpha + 1, theta) law's, the labelled vector's density
    (the iid models' convention). kappa = 1e-4, gamma = 1e-4 keeps alpha + 1 near 1/2."""
    x = np.array([0.3, 1.1, 4.0])
    kappa, gamma, scale = 1e-4, 1e-4, 0.7
    alpha = kappa / (2 * gamma) - 1 - kappa * (x.size - 1) / (2 * x.size)
    theta = 2 * gamma * scale / kappa
    labelled = laguerre.log_likelihood(_stats(x, gamma), kappa, scale).item() - math.log(math.factorial(x.size))
    assert labelled == pytest.approx(np.sum(stats.gamma.logpdf(x, alpha + 1, scale=theta)), abs=1e-3)


def _brute_htmp_exact(x, gamma, t_range=None, sd=1.0):
    """log of int L(kappa, scale) p(log kappa) p(log scale) over the whole prior range of log kappa and 30 sds of
    log scale, L the labelled spectrum's exact likelihood, on a 4001 x 4001 trapezoid grid."""
    m = x.size
    stats_ = _stats(x, gamma)
    low, high = t_range or kappa_posterior.support(m)
    t = np.linspace(low, high, 4001)
    a, c, s = laguerre.kappa_terms(stats_, np.exp(t))
    log_scale = np.linspace(-15 * sd, 15 * sd, 4001)
    log_theta = math.log(2 * gamma) + log_scale[None, :] - t[:, None]
    table = a[:, None] - s * np.exp(-log_theta) - c[:, None] * log_theta - special.gammaln(m + 1.0)
    table += -0.5 * (log_scale[None, :] / sd) ** 2 - math.log(sd) - HALF_LOG_TWO_PI - math.log(high - low)
    return _trapezoid_log(table, t, log_scale)


@pytest.mark.parametrize("seed, m, kappa", [(0, 8, 2.0), (1, 12, 20.0), (2, 6, 0.3)])
def test_htmp_exact_evidence_is_the_brute_force_integral(seed, m, kappa):
    """Measured 2026-12-07: within 2e-6 of the brute-force integral (1.6e-3 below it before the one-dimensional
    grid's Richardson step)."""
    x = sample_htmp_spectrum(seed, m, 0.5, kappa)
    assert _log_evidence(x, "htmp-exact") == pytest.approx(_brute_htmp_exact(x, 0.5), abs=1e-4)


def test_htmp_exact_wide_evidence_is_the_brute_force_integral_under_wide_priors():
    """log kappa's range doubled about its centre, log scale's sd doubled: reweighted draws agree with the
    integral under those priors, and so does the grid recomputed under them (the fallback)."""
    x = sample_htmp_spectrum(1, 12, 0.5, 5.0)
    result = fit(eigenvalue_spectrum(x, gamma=0.5), model="htmp-exact", scale_ref=1.0, chains=4, draws=1000)
    expected = _brute_htmp_exact(x, 0.5, evidence.widened(*kappa_posterior.support(x.size)), sd=2.0)
    assert result.diagnostics["quadrature"]["evidence"]["wide_method"] == "reweighted draws"
    assert result.evidence[names.LOG_EVIDENCE_WIDE] == pytest.approx(expected, abs=0.02)
    stats_ = _stats(x, 0.5)
    wide = kappa_posterior.posterior(stats_, scale_ref=1.0, t_range=evidence.widened(*kappa_posterior.support(12)),
                                     log_scale_sd=2.0, variant="closed")
    assert wide.log_evidence() == pytest.approx(expected, abs=1e-4)


def _brute_mp(x, gamma, ref=1.0):
    """MP + outliers: log sigma2 ~ N(log ref, 1) over +-7 sds, w ~ Beta(1, 20) through logit w on [-30, 10]."""
    log_sigma2 = np.linspace(math.log(ref) - 7, math.log(ref) + 7, 2801)[:, None, None]
    v = np.linspace(-30, 10, 2001)[None, :, None]
    log_w, log_rest = special.log_expit(v), special.log_expit(-v)
    sigma2 = np.exp(log_sigma2)
    low, high = sigma2 * (1 - math.sqrt(gamma)) ** 2, sigma2 * (1 + math.sqrt(gamma)) ** 2
    inside = (x > low) & (x < high)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_mp = np.where(inside, 0.5 * np.log((high - x) * (x - low)) - np.log(2 * math.pi * gamma * sigma2 * x),
                          -np.inf)
    log_outlier = stats.norm.logpdf(np.log(x), math.log(ref), 3.0) - np.log(x)
    table = np.sum(np.logaddexp(log_rest + log_mp, log_w + log_outlier), axis=-1)
    table += stats.norm.logpdf(log_sigma2[:, :, 0], math.log(ref), 1.0)
    table += (log_w + 20 * log_rest)[0, :, 0] - special.betaln(1, 20)  # Beta(1, 20) times dw / dlogit w
    return _trapezoid_log(table, log_sigma2[:, 0, 0], v[0, :, 0])


@pytest.mark.parametrize("case", ["white", "spike"])
def test_mp_evidence_is_the_brute_force_integral(case):
    """Measured 2026-12-07: within 2e-3 (white) and 4e-3 (a spike at 9) of a brute-force integral converged to 3e-4."""
    x = sample_mp_spectrum(3, 12, 0.5) if case == "white" else np.append(sample_mp_spectrum(4, 11, 0.5), 9.0)
    assert _log_evidence(x, "mp") == pytest.approx(_brute_mp(np.sort(x), 0.5), abs=1e-2)


def _brute_powerlaw(x, ref=1.0, alpha_range=(0.05, 50.0)):
    """The power law's evidence from its definition: the mean over candidate breakpoints of B(n_t + 1, n_b + 1)
    (w), the tail's likelihood integrated over log(alpha - 1) by adaptive quadrature, and the truncated log-normal
    bulk's over (mu, log sigma) on a dense grid."""
    logs = np.log(np.sort(x))
    mu = np.linspace(math.log(ref) - 12, math.log(ref) + 12, 1201)[:, None]
    log_sigma = np.linspace(-7, 4, 1101)[None, :]
    sigma = np.exp(log_sigma)
    prior = stats.norm.logpdf(mu, math.log(ref), 2.0) + stats.norm.logpdf(log_sigma, 0.0, 1.0)
    low, high = np.log(alpha_range)
    terms = []
    for j in range(10, logs.size - 9):
        bulk, tail, log_xmin = logs[:j], logs[j:], logs[j]
        excess = np.sum(tail - log_xmin)

        def log_tail(le, n=tail.size, excess=excess, log_xmin=log_xmin):
            return n * le - n * log_xmin - (1 + math.exp(le)) * excess - math.log(high - low)

        peak = max(log_tail(le) for le in np.linspace(low, high, 2001))
        tail_integral = integrate.quad(lambda le, peak=peak: math.exp(log_tail(le) - peak), low, high, limit=200,
                                       epsabs=0.0, epsrel=1e-10)[0]
        squares = np.sum(bulk**2) - 2 * mu * np.sum(bulk) + bulk.size * mu**2
        table = (-np.sum(bulk) - bulk.size * (log_sigma + HALF_LOG_TWO_PI) - squares / (2 * sigma**2)
                 - bulk.size * special.log_ndtr((log_xmin - mu) / sigma) + prior)
        terms.append(_trapezoid_log(table, mu[:, 0], log_sigma[0]) + math.log(tail_integral) + peak
                     + special.betaln(tail.size + 1, bulk.size + 1))
    return special.logsumexp(terms) - math.log(len(terms))


def test_powerlaw_evidence_is_the_brute_force_integral():
    """Measured 2026-12-07: within 2e-4 (24 and 30 eigenvalues)."""
    rng = np.random.default_rng(5)
    x = np.concatenate([np.exp(0.4 * rng.standard_normal(18)), 1.8 * rng.uniform(size=6) ** (-1 / 1.5)])
    assert _log_evidence(x, "powerlaw") == pytest.approx(_brute_powerlaw(x), abs=1e-3)


def test_lognormal_evidence_with_censored_values_is_the_brute_force_integral():
    """Three values below the floor count log Phi((log floor - mu) / sigma) each."""
    x = np.concatenate([[0.0, 0.0, 0.0], np.exp(0.5 * np.random.default_rng(2).standard_normal(20))])
    floor = 0.2
    kept = np.log(x[x > floor])
    mu = np.linspace(-8, 8, 1601)[:, None]
    log_sigma = np.linspace(-6, 4, 1601)[None, :]
    sigma = np.exp(log_sigma)
    squares = np.sum(kept**2) - 2 * mu * np.sum(kept) + kept.size * mu**2
    table = (-squares / (2 * sigma**2) - kept.size * (log_sigma + HALF_LOG_TWO_PI) - np.sum(kept)
             + 3 * special.log_ndtr((math.log(floor) - mu) / sigma)
             + stats.norm.logpdf(mu, 0.0, 2.0) + stats.norm.logpdf(log_sigma, 0.0, 1.0))
    expected = _trapezoid_log(table, mu[:, 0], log_sigma[0])
    assert _log_evidence(x, "lognormal", floor=floor) == pytest.approx(expected, abs=1e-3)


@pytest.mark.parametrize("model", ["lognormal", pytest.param("htmp", marks=pytest.mark.slow), "powerlaw",
                                   "htmp-exact"])
def test_reweighted_wide_evidence_is_the_recomputed_one(model, monkeypatch):
    """The wide priors' evidence by reweighting the exact draws equals the grid recomputed under those priors
    (forced by an unreachable ESS_MIN) within the reweighting's Monte Carlo error."""
    x = sample_htmp_spectrum(7, 120, 0.5, 3.0)
    rec = eigenvalue_spectrum(x, gamma=0.5)
    settings = {"model": model, "chains": 2, "draws": 2000}
    reweighted = fit(rec, **settings).diagnostics["quadrature"]["evidence"]
    monkeypatch.setattr(evidence, "ESS_MIN", 2.0)
    recomputed = fit(rec, **settings).diagnostics["quadrature"]["evidence"]
    assert recomputed["wide_method"] == "recomputed grid"
    assert reweighted["log_evidence"] == recomputed["log_evidence"]
    if reweighted["wide_method"] == "reweighted draws":
        error = 3 * math.sqrt((1 / reweighted["wide_ess"] - 1) / 4000) + 1e-3
        assert reweighted["log_evidence_wide"] == pytest.approx(recomputed["log_evidence_wide"], abs=error)


def test_widened_priors():
    assert evidence.widened(0.0, 3.0, (0.0, math.inf)) == (0.0, 4.5)
    assert evidence.widened(-1.0, 3.0) == (-3.0, 5.0)
    assert evidence.widened_beta((1.0, 20.0)) == (1.0, 10.0) and evidence.widened_beta((1.0, 1.0)) == (1.0, 1.0)
    x = np.linspace(-3, 5, 7)
    assert np.allclose(evidence.normal_log_ratio(x, 1.0, 0.5),
                       stats.norm.logpdf(x, 1.0, 1.0) - stats.norm.logpdf(x, 1.0, 0.5))
    w = np.array([1e-3, 0.1, 0.6])
    assert np.allclose(evidence.beta_log_ratio(w, (1.0, 20.0), (1.0, 10.0)),
                       stats.beta.logpdf(w, 1, 10) - stats.beta.logpdf(w, 1, 20))


def test_poor_reweighting_or_mass_at_a_bound_recomputes():
    flat = np.zeros(100)
    assert evidence.reweighted(flat + 0.3) == pytest.approx((0.3, 1.0))
    assert evidence.evidence(-5.0, flat, lambda: -7.0).log_evidence_wide == -5.0
    skewed = np.r_[20.0, np.zeros(99)]  # one draw holds all the weight
    assert evidence.reweighted(skewed)[1] < 0.02
    assert evidence.evidence(-5.0, skewed, lambda: -7.0).wide_method == "recomputed grid"
    assert evidence.evidence(-5.0, flat, lambda: -7.0, bound_mass=1e-3).log_evidence_wide == -7.0
