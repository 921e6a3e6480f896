"""Every model's one-eigenvalue law (the functions predictive checks and comparison use): normalised, its CDF the
integral of its density, its draws distributed by its CDF, and its numpyro model finite with finite gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro.infer.util import initialize_model
from scipy import integrate, stats

from hteval.infer import eigenvalue_spectrum, layer_model, model_data
from hteval.models import MODELS
from hteval.sampling import sample_htmp_spectrum

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
# htmp-exact's one-point law is HTMP's (its joint likelihood and sampler: tests/test_htmp_exact.py)
@pytest.mark.parametrize("model", [pytest.param(m, marks=pytest.mark.slow) if m in ("correlated-mp", "htmp-exact")
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
