"""The exact finite-size HTMP likelihood (SPEC section 4): normalised, its censoring term the integral it stands
for, gradients, the JAX sampler against the numpy one, and a fit that recovers the truth."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from hteval.densities.htmp_exact import htmp_exact_loglik, htmp_exact_sample, log_vandermonde
from hteval.infer import fit
from hteval.sampling import sample_htmp_spectrum

jax.config.update("jax_enable_x64", True)


def _pair_log_density(gamma, kappa, scale):
    """log of the ordered density of M = 2 eigenvalues (x1 < x2) at (log x1, log x2), jitted once per case."""
    fn = jax.jit(lambda v1, v2: htmp_exact_loglik(jnp.log(jnp.exp(v2) - jnp.exp(v1)), v1 + v2,
                                                  jnp.exp(v1) + jnp.exp(v2), n=2, n_censored=0, floor=0.0,
                                                  gamma=gamma, kappa=kappa, scale=scale))
    return lambda v1, v2: float(fn(v1, v2)) if v2 > v1 else -np.inf


@pytest.mark.parametrize(("gamma", "kappa", "scale"), [(0.5, 1.0, 1.0), (1.0, 0.3, 2.0), (0.25, 5.0, 0.5)])
def test_two_eigenvalues_are_normalised_and_censoring_is_their_integral(gamma, kappa, scale):
    log_p = _pair_log_density(gamma, kappa, scale)
    # in log coordinates (the Jacobian x1 x2 folded into the exponent): the density has integrable singularities
    # at x1 = 0 (x^alpha, alpha = -0.925 at kappa 0.3 and gamma 1: the mass below x lies as x^0.075, hence the far
    # lower limit) and at x1 = x2
    total, _ = integrate.dblquad(lambda v2, v1: np.exp(log_p(v1, v2) + v1 + v2), -300, 8, lambda v1: v1, 8,
                                 epsabs=1e-7)
    assert total == pytest.approx(1.0, abs=1e-4)
    # one eigenvalue below the floor f, the other observed at x2: the closed form is the integral over [0, f]
    f, x2 = 1e-6, 0.8
    alpha = kappa / (2 * gamma) - 1 - kappa / 4  # M = 2: the integrand in log x falls as x^(alpha + 1)
    numeric, _ = integrate.quad(lambda v1: np.exp(log_p(v1, np.log(x2)) + v1), np.log(f) - 40 / (alpha + 1),
                                np.log(f), epsabs=0, epsrel=1e-10, limit=200)
    closed = float(np.exp(htmp_exact_loglik(0.0, np.log(x2), x2, n=1, n_censored=1, floor=f, gamma=gamma,
                                            kappa=kappa, scale=scale)))
    assert closed == pytest.approx(numeric, rel=1e-4)  # the approximation's error is O(f / x2)


def test_gradients_match_finite_differences():
    x = sample_htmp_spectrum(3, 60, 0.5, 1.5)
    v, s1, s0 = log_vandermonde(x[3:]), float(np.sum(np.log(x[3:]))), float(np.sum(x[3:]))

    def loglik(theta):
        return htmp_exact_loglik(v, s1, s0, n=57, n_censored=3, floor=float(x[3]) * 1e-3, gamma=0.5,
                                 kappa=theta[0], scale=theta[1])

    theta = jnp.array([1.3, 0.9])
    grad = np.asarray(jax.grad(loglik)(theta))
    for i in range(2):
        step = np.zeros(2)
        step[i] = 1e-6
        numeric = (float(loglik(theta + step)) - float(loglik(theta - step))) / 2e-6
        assert grad[i] == pytest.approx(numeric, rel=1e-6)
    assert np.isfinite(float(loglik(jnp.array([1e-3, 1e-3])))) and np.isfinite(float(loglik(jnp.array([1e3, 1e3]))))


def test_log_vandermonde_is_the_pairwise_sum():
    x = np.array([0.5, 2.0, 1.0, 4.0])
    pairs = [abs(a - b) for i, a in enumerate(x) for b in x[i + 1:]]
    assert log_vandermonde(x) == pytest.approx(np.sum(np.log(pairs)), rel=1e-14)
    with pytest.raises(ValueError, match="distinct"):
        log_vandermonde(np.array([1.0, 1.0, 2.0]))


def test_jax_sampler_matches_the_numpy_sampler():
    m, gamma, kappa, scale = 40, 0.5, 2.0, 1.5
    a = np.array([sample_htmp_spectrum(s, m, gamma, kappa, scale) for s in range(300)])
    keys = jax.random.split(jax.random.PRNGKey(0), 300)
    b = np.asarray(jax.jit(jax.vmap(lambda k: htmp_exact_sample(k, m, gamma, kappa, scale)))(keys))
    for statistic in (lambda s: s.mean(axis=1), lambda s: np.log(s).mean(axis=1), lambda s: s.max(axis=1)):
        assert stats.ks_2samp(statistic(a), statistic(b)).pvalue > 1e-3
    # sum of the eigenvalues is exactly scale * gamma / kappa * chi^2(M kappa / gamma) (SPEC section 4)
    assert b.sum(axis=1).mean() == pytest.approx(m * scale, rel=0.03)


@pytest.mark.parametrize("kappa", [0.5, 4.0])
def test_exact_fit_recovers_kappa_and_narrows_scale(kappa):
    """On an exact spectrum the joint likelihood recovers kappa, and its scale interval is the narrower one: the
    iid likelihood ignores repulsion and overstates Var(scale) by (kappa + 2) / 2 (SPEC section 4)."""
    # test_infer's fixture shape and warm-up (300 eigenvalues, gamma 0.5, 500): the iid sampler is compiled once
    x = sample_htmp_spectrum(11, 300, 0.5, kappa, 1.0)
    exact = fit(x, gamma=0.5, model="htmp-exact", chains=2, draws=500, warmup=500, seed=4, max_draws=2000)
    assert exact.converged, exact.diagnostics
    row = exact.summary.loc["kappa"]
    assert abs(row["median"] - kappa) <= 3 * row["sd"] and row["sd"] < 0.3 * kappa
    assert abs(exact.summary.loc["scale", "median"] - 1.0) <= 3 * exact.summary.loc["scale", "sd"]
    iid = fit(x, gamma=0.5, model="htmp", chains=2, draws=500, warmup=500, seed=4)
    ratio = iid.summary.loc["scale", "sd"] / exact.summary.loc["scale", "sd"]
    assert ratio == pytest.approx(np.sqrt((kappa + 2) / 2), rel=0.35)
    assert "log_likelihood" not in exact.data.children  # a joint density: no pointwise terms, no LOO


def test_reduced_simulation_based_calibration_of_the_exact_likelihood():
    """20 prior draws, exact spectra of 30 eigenvalues, exact-likelihood fits (benchmarks/sbc.py has the full
    runs). Calibrated intervals miss these bounds with probability ~1% each: 90% intervals covering in >= 15 of 20,
    50% intervals in 4..16, ranks of the truth not far from uniform."""
    from benchmarks.sbc import simulate_and_fit, summarise

    rows = [simulate_and_fit(i, m=30, gamma=0.5, model="htmp-exact", seed=7, chains=2, draws=300, warmup=200)
            for i in range(20)]
    s = summarise(rows)
    assert s["failed"] == 0, [r["error"] for r in rows if r.get("error")]
    for p in ("kappa", "scale"):
        assert s[f"in90_{p}"] >= 15 / 20 and 4 / 20 <= s[f"in50_{p}"] <= 16 / 20, s
        assert s[f"rank_pvalue_{p}"] > 1e-3, s


def _conv_layer(slices, floor):
    """A pooled conv-layer record from per-slice spectra: values at or below the floor censored, slice ids kept."""
    from hteval.spectra import LayerSpectrum

    m = slices[0].size
    kept = [s[s > floor] for s in slices]
    values = np.concatenate(kept)
    ids = np.concatenate([np.full(k.size, i) for i, k in enumerate(kept)])
    order = np.argsort(values, kind="stable")
    return LayerSpectrum(name="conv", shape=(2 * m, m, len(slices)), N=2 * m, M=m, gamma=0.5, n_slices=len(slices),
                         n_eigs=values.size, n_censored=len(slices) * m - values.size, floor=floor,
                         normalisation="svd(W)^2/N", dtype="float64", eigenvalues=values[order],
                         slice_ids=ids[order])


def test_conv_layer_likelihood_is_one_joint_density_per_slice():
    """A pooled conv ESD is several matrices: its likelihood is the sum of each slice's joint density with that
    slice's own statistics and censored count, not one joint density of the pooled values (SPEC section 4)."""
    from numpyro.infer.util import log_density

    from hteval.infer import layer_model, model_data, model_input
    from hteval.kappa_posterior import censoring_profile
    from hteval.models import MODELS
    from hteval.models.priors import LOG_KAPPA_HIGH, LOG_KAPPA_LOW

    module = MODELS["htmp-exact"]
    slices = [sample_htmp_spectrum(s, 40, 0.5, 1.5, 1.0) for s in range(3)]
    floor = float(np.sort(slices[1])[2]) * 1.0001  # slice 1 loses 3 eigenvalues, the others their own number
    rec = _conv_layer(slices, floor)
    per_slice = [int(np.sum(s <= floor)) for s in slices]
    assert per_slice[1] == 3 and len(set(per_slice)) > 1 and rec.n_censored == sum(per_slice)
    params = {"kappa": 1.3, "scale": 0.9}
    sites = {"log_kappa": np.log(params["kappa"]), "log_scale": np.log(params["scale"])}
    got, _ = log_density(layer_model(module, rec), (model_input(module, rec),), model_data(rec, module), sites)
    expected = 0.0
    for s in slices:
        kept = s[s > floor]
        # with the mean-field correction of the censored term, as both engines use (hteval.kappa_posterior)
        expected += float(htmp_exact_loglik(log_vandermonde(kept), np.sum(np.log(kept)), np.sum(kept), n=kept.size,
                                            n_censored=s.size - kept.size, floor=floor, gamma=0.5, **params,
                                            censoring_profile=censoring_profile([kept], floor)[0]))
    # the joint factor is the log density less the priors' terms (log kappa uniform, log scale normal)
    log_prior = (-np.log(LOG_KAPPA_HIGH - LOG_KAPPA_LOW)
                 + stats.norm.logpdf(sites["log_scale"], np.log(np.mean(rec.eigenvalues)), 1.0))
    assert float(got) - log_prior == pytest.approx(expected, rel=1e-10)
    # the exact engine's likelihood of the same layer (numpy): the same value
    from hteval.densities.laguerre import statistics
    from hteval.kappa_posterior import Censoring, _Likelihood

    st = statistics(rec)
    likelihood = _Likelihood(st, Censoring(st.n_censored, module.statistics(rec)["censoring_profile"], floor),
                             "mean-field")
    a, c, total = likelihood(np.log(np.array([params["kappa"]])))
    theta = 2 * 0.5 * params["scale"] / params["kappa"]
    assert float(a[0] - total[0] / theta - c[0] * np.log(theta)) == pytest.approx(expected, rel=1e-10)
    # pooled into one matrix's joint density instead, the value would differ: the slices do not repel each other
    pooled = np.concatenate([s[s > floor] for s in slices])
    wrong = float(htmp_exact_loglik(log_vandermonde(pooled), np.sum(np.log(pooled)), np.sum(pooled),
                                    n=pooled.size, n_censored=rec.n_censored, floor=floor, gamma=0.5, **params))
    assert abs(wrong - expected) > 10


def test_conv_layer_fit_recovers_kappa():
    slices = [sample_htmp_spectrum(20 + s, 60, 0.5, 2.0, 1.0) for s in range(4)]
    result = fit(_conv_layer(slices, 0.0), model="htmp-exact", chains=2, draws=500, warmup=300, seed=1)
    assert result.converged, result.diagnostics
    row = result.summary.loc["kappa"]
    assert abs(row["median"] - 2.0) <= 3 * row["sd"] and row["sd"] < 0.5
