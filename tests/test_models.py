"""Every model's one-eigenvalue law (the functions predictive checks and comparison use): normalised, its CDF the
integral of its density, its draws distributed by its CDF, and its numpyro model finite with finite gradients."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro.infer.util import initialize_model
from scipy import integrate, special, stats

from hteval.infer import eigenvalue_spectrum, layer_model, model_data
from hteval.models import MODELS
from hteval.sampling import sample_correlated_spectrum, sample_htmp_spectrum, sample_mp_spectrum

CONTEXT = {"gamma": 0.5, "m": 200, "scale_ref": 1.0}
DRAWS = {
    "mp": {"sigma2": 1.0, "outlier_weight": 0.05},
    "htmp": {"kappa": 2.0, "scale": 1.0},
    "htmp-exact": {"kappa": 2.0, "scale": 1.0},
    "htmp-outliers": {"kappa": 2.0, "scale": 1.0, "outlier_weight": 0.05},
    "inverse-htmp": {"kappa": 6.0, "scale": 1.0},
    "powerlaw": {"alpha": 3.0, "mu": 0.0, "sigma": 0.5, "xmin": 1.5, "tail_weight": 0.1},
    "correlated-mp": {"nu": 0.7, "scale": 1.0, "outlier_weight": 0.05},
    "lognormal": {"mu": 0.0, "sigma": 0.8},
}
BREAKS = {"mp": [(1 - 0.5**0.5) ** 2, (1 + 0.5**0.5) ** 2], "powerlaw": [1.5]}


@functools.cache  # one compilation per model, shared by the tests below
def _law(model):
    module, p = MODELS[model], {k: jnp.asarray(v) for k, v in DRAWS[model].items()}
    density = jax.jit(lambda x: jnp.exp(module.log_density(x, p, **CONTEXT)))
    cdf = jax.jit(lambda x: jnp.exp(module.log_cdf(x, p, **CONTEXT)))
    return module, p, density, cdf


def test_every_model_has_law_functions():
    assert set(DRAWS) == set(MODELS)
    for module in MODELS.values():
        assert set(module.LAW_SITES) <= set(module.PARAMETERS) | {"xmin", "tail_weight"}
        for name in ("model", "log_density", "log_cdf", "draw"):
            assert callable(getattr(module, name))


# correlated-mp's density has its own normalisation, CDF and simulation checks (tests/test_correlated_mp.py);
# through quad here it costs ~40 s, so it runs with the slow checks
# htmp-exact's one-point law is HTMP's (its joint likelihood and sampler: tests/test_htmp_exact.py); htmp-outliers
# and inverse-htmp are HTMP's law mixed or inverted (their densities against mpmath: tests/test_htmp.py), so CI
# checks HTMP's and they run with the slow checks
@pytest.mark.parametrize("model", [pytest.param(m, marks=pytest.mark.slow)
                                   if m in ("correlated-mp", "htmp-exact", "htmp-outliers", "inverse-htmp")
                                   else m for m in sorted(DRAWS)])
def test_law_normalised_cdf_consistent_draws_match(model):
    module, p, density, cdf = _law(model)
    f = lambda t: float(density(jnp.asarray(t)))  # noqa: E731
    # split the integral in log x at the law's kinks (edges, breakpoints), where quad would lose accuracy
    points = [1e-12, *BREAKS.get(model, []), 1e12]
    g = lambda v: f(np.exp(v)) * np.exp(v)  # noqa: E731
    pieces = [integrate.quad(g, np.log(a), np.log(b), limit=400)[0] for a, b in zip(points, points[1:], strict=False)]
    assert sum(pieces) == pytest.approx(1.0, abs=2e-4)
    for t in (0.3, 1.0, 2.5):
        inner = [1e-12, *[b for b in BREAKS.get(model, []) if b < t], t]
        below = sum(integrate.quad(g, np.log(a), np.log(b), limit=400)[0]
                    for a, b in zip(inner, inner[1:], strict=False))
        assert float(cdf(jnp.asarray(t))) == pytest.approx(below, abs=2e-4)
    draws = np.asarray(jax.jit(lambda k: module.draw(k, p, 4000, **CONTEXT))(jax.random.PRNGKey(1)))
    assert np.all(draws > 0) and stats.kstest(draws, lambda t: np.asarray(cdf(jnp.asarray(t)))).pvalue > 1e-3


# the models whose exact samplers come with numpy laws for a batch of draws (what predictive checks, KS p-values
# and figures read instead of compiling the JAX laws per model); correlated-mp's law is slow to compile (see above)
BATCH = [pytest.param(m, marks=pytest.mark.slow) if m == "correlated-mp" else m
         for m in sorted(DRAWS) if hasattr(MODELS[m], "batch_cdf")]


@pytest.mark.parametrize("model", BATCH)
def test_batch_laws_are_the_models_laws(model):
    """batch_log_density and batch_cdf agree with log_density and log_cdf for every draw of a batch, and
    batch_draw's eigenvalues follow batch_cdf."""
    module, p, density, cdf = _law(model)
    x = np.concatenate([np.geomspace(0.01, 0.2, 8), np.linspace(0.25, 3.0, 30), np.geomspace(3.5, 40.0, 8)])
    batch = {k: np.full(3, float(v)) for k, v in DRAWS[model].items()}
    log_f = module.batch_log_density(x, batch, **CONTEXT)
    # point by point: the scalar programs the test above compiled
    with np.errstate(divide="ignore"):
        expected = np.log([float(density(jnp.asarray(t))) for t in x])
    finite = np.isfinite(expected)
    assert log_f.shape == (3, x.size) and np.array_equal(np.isfinite(log_f[0]), finite)
    assert np.allclose(log_f[:, finite], expected[finite], rtol=0, atol=1e-8)
    expected_cdf = [float(cdf(jnp.asarray(t))) for t in x]
    assert np.allclose(module.batch_cdf(x, batch, **CONTEXT), expected_cdf, rtol=0, atol=1e-8)
    draws = module.batch_draw(np.random.default_rng(0), batch, 2000, **CONTEXT)
    assert draws.shape == (3, 2000) and np.all(draws > 0)
    one = {k: v[:1] for k, v in batch.items()}
    assert stats.kstest(draws.ravel(), lambda t: module.batch_cdf(np.atleast_1d(t), one, **CONTEXT)[0]).pvalue > 1e-3


# the HTMP family's censoring terms have their own finiteness grids in test_htmp.py; compiling their full models
# again here costs ~40 s each, so they run with the slow checks
_LIGHT_MODELS = ("mp", "powerlaw", "lognormal", "htmp-exact")


@pytest.mark.parametrize("model", [m if m in _LIGHT_MODELS else pytest.param(m, marks=pytest.mark.slow)
                                   for m in sorted(DRAWS)])
def test_model_log_density_and_gradient_finite_with_censoring(model):
    x = sample_htmp_spectrum(5, 120, 0.5, 1.5)
    x[:3] = 0.0  # censored below the floor
    rec = eigenvalue_spectrum(x, gamma=0.5, floor=1e-6)
    fn, data = layer_model(MODELS[model], rec), model_data(rec, MODELS[model])
    assert rec.n_censored == 3
    info = initialize_model(jax.random.PRNGKey(0), fn, model_args=(jnp.asarray(rec.eigenvalues),),
                            model_kwargs=data)
    params = info.param_info.z
    potential = info.potential_fn
    value, grad = jax.jit(jax.value_and_grad(potential))(params)
    assert np.isfinite(float(value))
    assert all(np.all(np.isfinite(np.asarray(g))) for g in jax.tree.leaves(grad))


# --- exact posteriors ---------------------------------------------------------------------------------------------

EXACT = ("mp", "htmp", "htmp-outliers", "inverse-htmp", "lognormal", "correlated-mp")


def test_outlier_prior_is_the_numpyro_models():
    """The quadratures integrate the outlier weight against outliers.PRIOR: the Beta the numpyro models sample."""
    from numpyro import handlers

    from hteval.models import outliers
    from hteval.models.priors import outlier_weight_prior

    site = handlers.trace(handlers.seed(outlier_weight_prior, 0)).get_trace()["outlier_weight"]
    assert (float(site["fn"].concentration1), float(site["fn"].concentration0)) == outliers.PRIOR


@pytest.mark.parametrize("outliers_count, empty, censored", [(0, 0, 0), (5, 0, 0), (4, 3, 20), (150, 0, 0)])
def test_weight_rule_integrates_and_draws_the_outlier_weight(outliers_count, empty, censored):
    """quadrature.weight_log_marginal against adaptive quadrature of prod_i ((1 - w) f_i + w g_i)^m_i Beta(w) in
    log w, for no outliers (the mode of w at 0), a few, many (a narrow peak far from 0), eigenvalues where the main
    law is 0 (MP beyond its edges) and a censored count; its draws follow that conditional law."""
    from hteval import quadrature
    from hteval.models import outliers

    rng = np.random.default_rng(outliers_count)
    n = 200
    log_g = rng.normal(-2.0, 0.5, n)
    log_f = rng.normal(-1.0, 1.0, n)
    log_f[:outliers_count] = log_g[:outliers_count] - rng.uniform(3.0, 10.0, outliers_count)
    log_f[outliers_count:outliers_count + empty] = -np.inf
    counts = np.ones(n)
    if censored:
        log_f, log_g, counts = np.append(log_f, -1.0), np.append(log_g, -3.0), np.append(counts, censored)
    alpha, beta = outliers.PRIOR

    def log_joint(w):
        mixed = np.logaddexp(np.log1p(-w) + log_f, np.log(w) + log_g)
        return float(np.sum(counts * mixed) + (beta - 1) * np.log1p(-w) - special.betaln(alpha, beta))

    v = np.linspace(np.log(1e-14), -1e-12, 20001)
    values = np.array([log_joint(np.exp(a)) + a for a in v])
    top = values.max()
    mass = np.exp(values - top)
    expected = np.log(integrate.simpson(mass, x=v)) + top
    got = quadrature.weight_log_marginal(log_f[None, :], log_g, counts, outliers.PRIOR)[0]
    assert abs(got - expected) < 1e-5
    draws = quadrature.weight_draws(np.repeat(log_f[None, :], 4000, axis=0), log_g, counts, outliers.PRIOR, rng)
    cdf = integrate.cumulative_simpson(mass, x=v, initial=0.0)
    assert stats.kstest(np.log(draws), lambda a: np.interp(a, v, cdf / cdf[-1])).pvalue > 1e-3


def _exact_spectrum(model):
    if model == "correlated-mp":
        return sample_correlated_spectrum(120, 60, 1.0, seed=3)
    x = sample_htmp_spectrum(3, 60, 0.5, 2.0)
    return np.sort(1.0 / x) if model == "inverse-htmp" else x


def _numpyro_sites(model, a, b):
    """The numpyro model's sites at grid coordinates (a, b), and the log Jacobian from its sample sites to them."""
    if model == "lognormal":
        return {"mu": a, "sigma": jnp.exp(b)}, b
    if model == "mp":
        w = jax.nn.sigmoid(b)
        return {"log_sigma2": a, "outlier_weight": w}, jnp.log(w) + jnp.log1p(-w)
    first = "nu" if model == "correlated-mp" else "log_kappa"
    return {first: a, "log_scale": b}, 0.0


# the censored numpyro models of correlated-mp (~40 s to compile) and inverse-htmp run with the slow checks (the
# inverse model's floor term is HTMP's upper-tail mass, checked against mpmath in test_htmp.py)
@pytest.mark.parametrize("model, censored", [
    pytest.param(m, c, marks=pytest.mark.slow) if m == "correlated-mp" or (c and m == "inverse-htmp") else (m, c)
    for m in EXACT for c in (False, True)])
def test_exact_log_posterior_is_the_numpyro_models(model, censored, monkeypatch):
    """What each model's exact sampler tabulates is the posterior NUTS samples: at points around the mode, the
    quadrature's log density over its two grid coordinates minus the numpyro model's log joint (w integrated out
    for the three-parameter models, on a fine rule in log w) is one constant, to 1e-6 (2e-3 for correlated-mp,
    whose density is interpolated in log x between Silverstein solves); with three eigenvalues censored at a floor
    too (their log CDF there: deep in the lower tail, or the inverse model's upper tail). That constant is what the
    model's log evidence adds to the grid's total (the priors' and the likelihood's normalising constants)."""
    from numpyro.infer.util import log_density

    from hteval import quadrature

    module = MODELS[model]
    x = _exact_spectrum(model)
    if censored:
        x = np.concatenate([[0.0, 0.0, 0.0], x])
    rec = eigenvalue_spectrum(x, gamma=0.5, floor=1e-6 * float(np.median(x)) if censored else None)
    assert rec.n_censored == (3 if censored else 0)
    data = model_data(rec, module)
    captured = {}
    real = quadrature.zoomed_grid

    def spy(log_density_fn, first, second, data=(), **kwargs):
        grid = real(log_density_fn, first, second, data, **kwargs)
        if "grid" not in captured:  # the posterior's grid (a second one is the evidence's under wider priors)
            captured.update(fn=lambda a, b: log_density_fn(a, b, *data), grid=grid)
        return grid

    monkeypatch.setattr(quadrature, "zoomed_grid", spy)
    _, _, returned = module.posterior_draws(np.random.default_rng(0), rec.eigenvalues, chains=1, draws=100,
                                            gamma=rec.gamma, log_likelihood=False, **data)
    grid = captured["grid"]
    a = np.quantile(grid.first, [0.45, 0.55])
    b = np.quantile(grid.second, [0.45, 0.5, 0.55])
    # 40 points on the first axis: correlated-mp tabulates finely only beyond its zoom passes' size
    first = np.concatenate([a, np.linspace(a[0], a[-1], 40)])
    quadrature_values = captured["fn"](first, b)[:a.size]

    model_fn = layer_model(module, rec)
    args = (jnp.asarray(rec.eigenvalues),)
    w_nodes = np.linspace(np.log(1e-14), -1e-9, 161)

    def joint(a_, b_, w=None):
        sites, jacobian = _numpyro_sites(model, a_, b_)
        if w is not None:
            sites["outlier_weight"] = w
        return log_density(model_fn, args, data, sites)[0] + jacobian

    if "outlier_weight" in module.PARAMETERS and model != "mp":
        @jax.jit
        def numpyro_values(a_, b_):
            logs = jax.lax.map(lambda v: joint(a_, b_, jnp.exp(v)) + v, jnp.asarray(w_nodes))
            return jax.scipy.special.logsumexp(logs + jnp.log(jnp.asarray(np.gradient(w_nodes))))
    else:
        numpyro_values = jax.jit(joint)
    reference = np.array([[float(numpyro_values(x, y)) for y in b] for x in a])
    difference = quadrature_values - reference
    tolerance = 2e-3 if model == "correlated-mp" else 1e-6
    assert np.ptp(difference) < tolerance, difference
    # the log evidence adds to the grid's total exactly what its table leaves out of numpyro's log joint
    constant = returned.evidence.log_evidence - returned.log_total
    assert abs(np.mean(difference) + constant) < tolerance, (np.mean(difference), constant)


def _nuts_spectrum(model):
    """A spectrum each model describes (so that NUTS mixes on it), 150 eigenvalues."""
    if model == "mp":
        return sample_mp_spectrum(4, 150, 0.5)
    if model == "correlated-mp":
        return sample_correlated_spectrum(300, 150, 1.0, seed=4)
    x = sample_htmp_spectrum(4, 150, 0.5, 2.0)
    if model == "inverse-htmp":
        return np.sort(1.0 / x)
    return np.concatenate([x, [8.0, 12.0]]) if model == "htmp-outliers" else x


# NUTS on the HTMP family takes 12-28 s a model here and on correlated-mp 380 s: those run with the slow checks (all
# passed, 2026-11-28); CI keeps MP's and the log-normal's and, above, every model's log density against its numpyro
# model's
@pytest.mark.parametrize("model", [m if m in ("mp", "lognormal") else pytest.param(m, marks=pytest.mark.slow)
                                   for m in EXACT])
def test_exact_draws_agree_with_nuts(model):
    """Each model's exact draws and NUTS on its numpyro model give the same posterior: the exact draws' CDF at
    NUTS's 5/50/95% quantiles of every reported parameter is within 4 Monte Carlo standard errors (NUTS's ESS)."""
    import arviz as az

    from hteval.infer import fit

    x = _nuts_spectrum(model)
    exact = fit(x, gamma=0.5, model=model, chains=1, draws=20_000, log_likelihood=False)
    assert exact.converged and exact.settings["sampler"] == MODELS[model].SAMPLER
    nuts = fit(x, gamma=0.5, model=model, sampler="nuts", chains=2, draws=2000, warmup=1000, log_likelihood=False)
    assert nuts.settings["sampler"] == "NUTS"
    for name in MODELS[model].PARAMETERS:
        ess = float(az.ess(nuts.draws[name]))
        for q in (0.05, 0.5, 0.95):
            held = np.mean(exact.draws[name] <= np.quantile(nuts.draws[name], q))
            assert abs(held - q) < 4 * np.sqrt(q * (1 - q) / ess), (name, q, held, ess)
