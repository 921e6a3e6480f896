"""Power-law tail model: exact marginalisation of xmin and the tail weight, law functions, recovery, classic MLE."""

from __future__ import annotations

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, special, stats

from hteval.classic import classic_powerlaw
from hteval.infer import fit
from hteval.models import powerlaw
from hteval.models.priors import ALPHA_MINUS_ONE_HIGH, ALPHA_MINUS_ONE_LOW

CONTEXT = {"gamma": 0.5, "m": 100, "scale_ref": 1.0}


def _pareto_over_lognormal(seed, n=500, alpha=3.0, tail_fraction=0.1, sigma=0.5):
    """n eigenvalues: a log-normal bulk truncated at its (1 - tail_fraction) quantile, a Pareto tail above it."""
    rng = np.random.default_rng(seed)
    xmin = float(np.exp(sigma * stats.norm.ppf(1 - tail_fraction)))
    n_tail = rng.binomial(n, tail_fraction)
    u = rng.uniform(size=n - n_tail) * (1 - tail_fraction)
    bulk = np.exp(sigma * stats.norm.ppf(u))
    tail = xmin * rng.uniform(size=n_tail) ** (-1.0 / (alpha - 1.0))
    return np.sort(np.concatenate([bulk, tail])), xmin


def _brute_force_log_joint(x, j, alpha, mu, sigma):
    """log of integral over w in (0, 1) of prod_i f(x_i | xmin = x_(j), w): quadrature instead of the Beta form."""
    p = {"alpha": alpha, "mu": mu, "sigma": sigma, "xmin": x[j]}
    def total(w):
        return float(jnp.sum(powerlaw.log_density(jnp.asarray(x), {**p, "tail_weight": w}, **CONTEXT)))
    peak = total((x.size - j) / x.size)
    value, _ = integrate.quad(lambda w: np.exp(total(w) - peak), 0, 1, points=[(x.size - j) / x.size], limit=200)
    return peak + np.log(value)


def test_marginal_over_breakpoint_and_weight_matches_quadrature():
    x, _ = _pareto_over_lognormal(0, n=40)
    log_joint, j = powerlaw.breakpoint_log_joint(jnp.log(jnp.asarray(x)), 2.5, 0.1, 0.6)
    for k in (0, len(j) // 2, len(j) - 1):
        assert float(log_joint[k]) == pytest.approx(_brute_force_log_joint(x, int(j[k]), 2.5, 0.1, 0.6), abs=1e-6)
    assert int(j[0]) == powerlaw.MIN_BULK and int(j[-1]) == x.size - powerlaw.MIN_TAIL


def test_tail_evidence_is_the_likelihood_integrated_over_the_alpha_prior():
    """The closed form (truncated gamma integral) against quadrature over alpha - 1 log-uniform on [0.05, 50]."""
    x, _ = _pareto_over_lognormal(1, n=300)
    logs = jnp.log(jnp.asarray(x))
    evidence = np.asarray(powerlaw.tail_log_evidence(logs))
    low, high = ALPHA_MINUS_ONE_LOW, ALPHA_MINUS_ONE_HIGH
    for k in (0, 50, evidence.size // 2, evidence.size - 1):
        def integrand(e, k=k):
            log_lik = float(powerlaw.tail_log_likelihood(logs, 1.0 + e)[k]) - evidence[k]
            return np.exp(log_lik) / (e * np.log(high / low))
        value, _ = integrate.quad(integrand, low, high, points=[0.1, 0.5, 1, 2, 5, 10], limit=400)
        assert value == pytest.approx(1.0, abs=1e-9)


def test_tail_evidence_is_finite_where_the_tail_is_outside_the_prior_range():
    """Nearly tied tails (alpha far above 51) and very flat ones (alpha near 1) underflow the gamma difference."""
    tied = np.log(np.concatenate([np.linspace(0.1, 1.0, 30), 1.0 + 1e-12 * np.arange(1, 81)]))
    flat = np.log(np.concatenate([np.linspace(0.1, 1.0, 30), np.geomspace(1e3, 1e300, 20)]))
    n_tail = tied.size - np.arange(powerlaw.MIN_BULK, tied.size - powerlaw.MIN_TAIL + 1)
    excess = np.array([np.sum(tied[-k:] - tied[-k]) for k in n_tail])
    assert np.min(special.gammainc(n_tail, ALPHA_MINUS_ONE_HIGH * excess)) < 1e-300  # the asymptotic branch runs
    for logs in (tied, flat):
        evidence = np.asarray(powerlaw.tail_log_evidence(jnp.asarray(logs)))
        assert np.all(np.isfinite(evidence))


def test_law_is_normalised_and_draws_follow_its_cdf():
    p = {"alpha": 2.7, "mu": -0.2, "sigma": 0.7, "xmin": 1.9, "tail_weight": 0.15}
    density = lambda t: float(jnp.exp(powerlaw.log_density(jnp.asarray(t), p, **CONTEXT)))  # noqa: E731
    mass = integrate.quad(density, 0, 1.9, limit=200)[0] + integrate.quad(density, 1.9, np.inf, limit=200)[0]
    assert mass == pytest.approx(1.0, abs=1e-7)
    assert float(jnp.exp(powerlaw.log_cdf(jnp.asarray(1.9), p, **CONTEXT))) == pytest.approx(0.85, abs=1e-12)
    for t in (0.5, 1.0, 3.0, 30.0):
        below = integrate.quad(density, 0, min(t, 1.9), limit=200)[0]
        if t > 1.9:
            below += integrate.quad(density, 1.9, t, limit=200)[0]
        assert float(jnp.exp(powerlaw.log_cdf(jnp.asarray(t), p, **CONTEXT))) == pytest.approx(below, abs=1e-7)
    draws = np.asarray(powerlaw.draw(jax.random.PRNGKey(0), p, 20_000, **CONTEXT))
    cdf = lambda t: np.exp(np.asarray(powerlaw.log_cdf(jnp.asarray(t), p, **CONTEXT)))  # noqa: E731
    assert stats.kstest(draws, cdf).pvalue > 1e-3


def test_log_joint_and_gradient_finite_over_the_prior_range():
    x, _ = _pareto_over_lognormal(1, n=200)
    logs = jnp.log(jnp.asarray(x))

    def marginal(theta):
        log_joint, _ = powerlaw.breakpoint_log_joint(logs, theta[0], theta[1], theta[2], n_censored=3, floor=1e-6)
        return jax.nn.logsumexp(log_joint)

    grad = jax.jit(jax.value_and_grad(marginal))
    for alpha in (1.05, 1.5, 3.0, 51.0):
        for mu in (-10.0, 0.0, 10.0):
            for sigma in (1e-3, 1.0, 50.0):
                value, g = grad(jnp.array([alpha, mu, sigma]))
                assert np.isfinite(float(value)) and np.all(np.isfinite(np.asarray(g)))


def test_recovers_alpha_and_xmin():
    x, xmin = _pareto_over_lognormal(2, n=500, alpha=3.0)
    result = fit(x, model="powerlaw", gamma=0.5, chains=2, draws=500, warmup=500, seed=0)
    alpha = result.summary.loc["alpha"]
    assert alpha["ci_low"] < 3.0 < alpha["ci_high"]
    assert result.summary.loc["xmin", "ci_low"] <= xmin <= result.summary.loc["xmin", "ci_high"]
    assert set(result.probabilities) == {"p_alpha_below_2", "p_alpha_above_6"}
    assert result.probabilities["p_alpha_below_2"] < 0.05
    loglik = result.data["log_likelihood"]["obs"]
    assert loglik.shape[-1] == x.size and np.all(np.isfinite(loglik.values))


def test_classic_estimate_recovers_a_pure_pareto_tail():
    x, xmin = _pareto_over_lognormal(3, n=4000, alpha=2.5, tail_fraction=0.2)
    est = classic_powerlaw(x)
    assert est.alpha == pytest.approx(2.5, abs=3 * est.sigma + 0.05)
    assert est.xmin >= 0.8 * xmin  # any breakpoint inside the Pareto tail is a valid choice; below it is not
    assert est.sigma == pytest.approx((est.alpha - 1) / np.sqrt(est.n_tail))


@pytest.mark.parametrize(("shape", "rate"), [(50, 25.0), (5, 1000.0), (400, 6.0), (30, 1.0)])
def test_truncated_gamma_draws_follow_the_truncated_law(shape, rate):
    """Inside the prior range, against its lower end (upper incomplete gamma) and against its upper end."""
    low, high = ALPHA_MINUS_ONE_LOW, ALPHA_MINUS_ONE_HIGH
    n = np.full(4000, float(shape))
    draws = powerlaw._truncated_gamma(np.random.default_rng(0), n, np.full(4000, rate), low, high)
    ends = np.array([low, high]) * rate
    edges = special.gammainc(shape, ends), special.gammaincc(shape, ends)

    def cdf(e):
        if edges[0][0] < 0.5:
            return (special.gammainc(shape, e * rate) - edges[0][0]) / (edges[0][1] - edges[0][0])
        return (edges[1][0] - special.gammaincc(shape, e * rate)) / (edges[1][0] - edges[1][1])

    assert np.all((draws >= low) & (draws <= high))
    assert stats.kstest(draws, cdf).pvalue > 1e-3


def test_truncated_gamma_is_finite_where_the_law_underflows_the_prior_range():
    draws = powerlaw._truncated_gamma(np.random.default_rng(0), np.array([3000.0, 3.0]), np.array([0.01, 1e5]),
                                      ALPHA_MINUS_ONE_LOW, ALPHA_MINUS_ONE_HIGH)
    assert draws[0] == pytest.approx(ALPHA_MINUS_ONE_HIGH, rel=0.01)
    assert draws[1] == pytest.approx(ALPHA_MINUS_ONE_LOW, rel=0.01)


@pytest.mark.slow
def test_exact_draws_agree_with_nuts_on_the_numpyro_model():
    """posterior_draws (grid, closed forms) and NUTS on `powerlaw.model` target the same posterior: the exact
    draws' CDF at NUTS's 5/50/95% quantiles is within 4 Monte Carlo standard errors (NUTS's ESS) of 5/50/95%."""
    from numpyro.infer import MCMC, NUTS

    x, _ = _pareto_over_lognormal(4, n=300, alpha=2.5, tail_fraction=0.15)
    data = {"gamma": 0.5, "m": x.size, "scale_ref": float(x.mean())}
    exact, _, grid = powerlaw.posterior_draws(np.random.default_rng(0), x, chains=1, draws=20_000,
                                              log_likelihood=False, **data)
    assert grid.problems() == []
    mcmc = MCMC(NUTS(powerlaw.model), num_warmup=500, num_samples=2000, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(1), jnp.asarray(x), **data)
    for name in ("alpha", "mu", "sigma"):
        nuts = np.asarray(mcmc.get_samples()[name])
        ess = float(az.ess(nuts[None, :]))
        for q in (0.05, 0.5, 0.95):
            held = np.mean(exact[name] <= np.quantile(nuts, q))
            assert abs(held - q) < 4 * np.sqrt(q * (1 - q) / ess), (name, q, held, ess)


def test_a_grid_that_fails_its_checks_makes_the_fit_unconverged(monkeypatch):
    from hteval import quadrature

    x, _ = _pareto_over_lognormal(2, n=200)
    result = fit(x, model="powerlaw", gamma=0.5, chains=2, draws=500)
    assert result.converged and result.settings["sampler"] == powerlaw.SAMPLER
    assert set(result.to_json()["diagnostics"]["quadrature"]) == {"grid_points", "edge_mass", "effective_cells",
                                                                   "evidence"}
    monkeypatch.setattr(quadrature, "EDGE_MASS_MAX", 0.0)
    result = fit(x, model="powerlaw", gamma=0.5, chains=2, draws=500)
    assert not result.converged and any("quadrature" in r for r in result.diagnostics["reasons"])
