"""HTMP density, CDF and quantiles against mpmath references, analytic moments and finite differences.

The reference values (../shared/reference/*.npz) were computed with mpmath at 40 digits (SPEC section 5);
tests/data/htmp_cdf_g0.5_k2.npz was made by tests/data/make_htmp_cdf.py
(mpmath 1.4.1, 2026-11-25), tests/data/htmp_tails.npz by tests/data/make_htmp_tails.py.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import simpson
from scipy.special import gammaln

import hteval
from benchmarks.accuracy import max_error
from hteval.densities.htmp import HTMP, htmp_cdf, htmp_icdf, htmp_log_cdf, htmp_log_sf, htmp_logpdf
from hteval.densities.inverse_htmp import (
    InverseHTMP,
    inverse_htmp_cdf,
    inverse_htmp_log_cdf,
    inverse_htmp_logpdf,
)
from hteval.special.htmp_table import htmp_table

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"
DATA = Path(__file__).parent / "data"


def _reference(name):
    path = REFERENCE / name
    if not path.exists():  # CI lays shared/ beside the clone, as here
        pytest.fail(f"reference file {path} missing")
    d = np.load(path)
    return {k: d[k] for k in ("gamma", "kappa", "scale", "x", "logpdf")}


def _some_gammas(ref, count):
    """The rows of `count` of the table's aspect ratios (each costs a contour table, ~2.5 s): half where a is
    within 1e-3 of an integer (SPEC's trap), half from the rest, both spread evenly over gamma, ends included."""
    a = ref["kappa"] * (1 / ref["gamma"] - 1) / 2 - 1
    near = np.abs(a - np.round(a)) < 1e-3
    chosen = []
    for group in (np.unique(ref["gamma"][near]), np.setdiff1d(np.unique(ref["gamma"]), ref["gamma"][near])):
        chosen += list(group[np.unique(np.linspace(0, len(group) - 1, count // 2).round().astype(int))])
    rows = np.isin(ref["gamma"], chosen)
    return {k: v[rows] for k, v in ref.items()}


def test_logpdf_matches_mpmath_reference_square():
    """Every point at gamma = 1 (kappa 0.05 to 100) to 1e-8 absolute in log f."""
    assert max_error(_reference("htmp_logpdf_reference_square.npz")) <= 1e-8


def test_logpdf_matches_mpmath_reference_reduced():
    """CI's share of the 836-point table: 4 of its 149 aspect ratios, integer and near-integer a included (the
    slow test below checks every point)."""
    ref = _some_gammas(_reference("htmp_logpdf_reference.npz"), 4)
    assert len(np.unique(ref["gamma"])) == 4 and len(ref["x"]) > 20
    assert max_error(ref) <= 1e-8


@pytest.mark.slow
def test_logpdf_matches_mpmath_reference_every_point():
    """Every point, integer and near-integer a included, to 1e-8 absolute in log f (about 6 minutes)."""
    assert max_error(_reference("htmp_logpdf_reference.npz")) <= 1e-8


def test_cdf_matches_mpmath_table():
    d = np.load(DATA / "htmp_cdf_g0.5_k2.npz")
    x, cdf = d["x"][d["x"] > 0], d["cdf"][d["x"] > 0]
    got = np.asarray(htmp_cdf(jnp.asarray(x), float(d["gamma"]), float(d["kappa"]), float(d["scale"])))
    assert np.max(np.abs(got - cdf)) < 1e-9


# CI checks the square case (gamma = 1, SPEC's trap), the slow checks every tabulated gamma (the suite's time)
@pytest.mark.parametrize("gammas", [(1.0,), pytest.param((0.25, 0.5, 0.9), marks=pytest.mark.slow)])
def test_log_tail_masses_match_mpmath(gammas):
    """log F far below the bulk and log(1 - F) far above it, down to masses of exp(-20000), where the phase
    formula returns 0 or rounding noise: 1e-6 absolute in the logarithm at every reference point."""
    d = np.load(DATA / "htmp_tails.npz")
    errors = []
    for gamma in gammas:
        # scalar kappa and x: one small program per gamma (a batched kappa compiles far more slowly)
        both = jax.jit(lambda s, k, g=float(gamma): (htmp_log_cdf(s, g, k), htmp_log_sf(s, g, k)))
        rows = np.flatnonzero(d["gamma"] == gamma)
        for i in rows:
            lower, upper = both(d["s"][i], d["kappa"][i])
            errors.append(abs(float(lower if d["direction"][i] < 0 else upper) - d["log_mass"][i]))
    assert len(errors) == np.isin(d["gamma"], gammas).sum() >= 24 and max(errors) < 1e-6, max(errors)


@pytest.mark.parametrize("gamma", [pytest.param(0.25, marks=pytest.mark.slow),
                                   pytest.param(0.9, marks=pytest.mark.slow), 1.0])
def test_log_cdf_and_sf_agree_with_phase_where_it_is_exact(gamma):
    """log F and log(1 - F) are the phase's where it is exact (masses down to 1e-5, across the switch at 1e-4 to
    the tail integral) and monotone everywhere, so the switch leaves no visible step in a censored likelihood."""
    functions = jax.jit(lambda x, k: [f(x, gamma, k) for f in (htmp_cdf, htmp_log_cdf, htmp_log_sf)])
    for kappa in (0.05, 2.0, 40.0):
        x = np.exp(np.linspace(-30, 6, 400))
        cdf, log_cdf, log_sf = (np.asarray(v) for v in functions(x, kappa))
        # the phase is exact to ~1e-12 absolute, so ~1e-7 relative at a mass of 1e-5
        assert np.allclose(log_cdf[cdf > 1e-5], np.log(cdf[cdf > 1e-5]), atol=1e-6)
        assert np.all(np.diff(log_cdf) >= -1e-9) and np.all(np.diff(log_sf) <= 1e-9)
        sf = 1 - cdf
        assert np.allclose(log_sf[sf > 1e-5], np.log(sf[sf > 1e-5]), atol=1e-6)


@pytest.mark.parametrize("cases", [((0.05, "htmp"),),
                                   pytest.param(((1.0, "inverse"),), marks=pytest.mark.slow),
                                   pytest.param(((1.0, "htmp"),), marks=pytest.mark.slow)])
def test_log_tail_masses_are_finite_with_finite_gradients(cases):
    """Censoring terms anywhere in the domain: floors far below and far above the bulk, every kappa and scale, for
    a near-degenerate aspect ratio and the square case (gamma = 0.5 is covered by the censored fits)."""
    grid = list(zip(*(v.ravel() for v in np.meshgrid([1e-3, 0.3, 30.0, 1e3], [1e-6, 1.0, 1e4],
                                                      [1e-300, 1e-12, 1.0, 1e12])), strict=True))
    # the inverse model's mass is HTMP's upper tail: one aspect ratio suffices for it (each pair costs a compilation)
    functions = {"htmp": htmp_log_cdf, "inverse": inverse_htmp_log_cdf}
    for gamma, fn in ((g, functions[name]) for g, name in cases):
        value_and_grad = jax.jit(jax.value_and_grad(lambda k, sc, x, fn=fn, g=gamma: fn(x, g, k, sc), argnums=(0, 1)))
        for k, sc, x in grid:
            value, grads = value_and_grad(k, sc, x)
            assert float(value) <= 0 and not np.isnan(float(value)), (fn.__name__, gamma, k, sc, x)
            assert all(np.isfinite(float(g)) for g in grads), (fn.__name__, gamma, k, sc, x)


def _quadrature(gamma, kappa, cut=1e-10):
    """Integrals of f, x f, x^2 f and log(y) f over x > cut (trapezoid-free Simpson in log x), plus F(cut)."""
    t = np.linspace(np.log(cut), np.log(60 * (1 + 2 / kappa) + 50), 40001)
    x = np.exp(t)
    fx = np.exp(np.asarray(htmp_logpdf(jnp.asarray(x), gamma, kappa))) * x
    y = kappa * x / (2 * gamma)
    moments = [simpson(fx * w, x=t) for w in (1.0, x, x * x, np.log(y))]
    return moments, float(htmp_cdf(cut, gamma, kappa))


@pytest.mark.parametrize(("gamma", "kappa"), [(0.1, 0.05), (1.0, 0.05), (0.5, 0.5), (0.1, 5.0), (1.0, 50.0),
                                              (0.5, 50.0)]
                         + [pytest.param(g, k, marks=pytest.mark.slow)
                            for g, k in ((0.5, 0.05), (0.1, 0.5), (1.0, 0.5), (0.5, 5.0), (1.0, 5.0), (0.1, 50.0))])
def test_normalisation_and_moments(gamma, kappa):
    (mass, m1, m2, _), below = _quadrature(gamma, kappa)
    assert abs(mass + below - 1) < 1e-8
    assert abs(m1 - 1) < 1e-8  # E x = scale; the mass below the cut carries x < 1e-10
    assert abs((m2 - m1**2) / (gamma * (1 + 2 / kappa)) - 1) < 1e-8


@pytest.mark.parametrize("gamma,kappa", [(0.1, 0.5), (0.5, 5.0), (0.3, 50.0)])
def test_mean_log(gamma, kappa):
    """E log y = -(2/kappa) [lgamma(kappa(1-gamma)/(2gamma)) - lgamma(kappa/(2gamma))] for gamma < 1."""
    (_, _, _, mlog), below = _quadrature(gamma, kappa, cut=1e-30)
    expected = -(2 / kappa) * (gammaln(kappa * (1 - gamma) / (2 * gamma)) - gammaln(kappa / (2 * gamma)))
    assert below < 1e-15
    assert abs(mlog - expected) < 1e-7


@pytest.mark.parametrize("gamma", [0.01, pytest.param(0.3, marks=pytest.mark.slow), 0.77,
                                   pytest.param(0.9999, marks=pytest.mark.slow), 1.0])
def test_finite_everywhere_in_domain(gamma):
    # XLA flushes subnormals to zero, so the float64 range starts at the smallest normal number here
    x = np.concatenate([[np.finfo(float).tiny], np.geomspace(1e-300, 1e300, 121)])
    both = jax.jit(lambda k, sc: (htmp_logpdf(jnp.asarray(x), gamma, k, sc), htmp_cdf(jnp.asarray(x), gamma, k, sc)))
    for kappa in [1e-3, 1e-2, 0.3, 3.0, 30.0, 300.0, 1e3]:
        for scale in [1e-6, 1.0, 1e4]:
            lp, cdf = (np.asarray(v) for v in both(kappa, scale))
            # far above the bulk log f may reach -inf only through exp underflow of y (x/scale > 1e300)
            ok = np.isfinite(lp) | (np.isneginf(lp) & (x / scale > 1e290))
            assert ok.all(), (gamma, kappa, scale, x[~ok])
            assert np.all((cdf >= 0) & (cdf <= 1)) and not np.isnan(cdf).any()
            assert np.all(np.diff(cdf) >= -1e-12)


@pytest.mark.parametrize("gamma", [0.05, 0.5, 1.0])
def test_continuous_across_table_pieces_and_handovers(gamma):
    """No jumps where one Chebyshev piece or closed form hands over to the next."""
    table = htmp_table(gamma)
    t_edges = np.asarray(table.t_edges)
    x = np.exp(np.concatenate([t_edges * (1 - 1e-12) - 1e-12, t_edges * (1 + 1e-12) + 1e-12]))
    # accuracy is 1e-8 up to kappa ~ 150 (the reference range) and degrades to ~1e-6 at kappa ~ 1e3
    logpdf = jax.jit(lambda k: htmp_logpdf(jnp.asarray(x), gamma, k))
    for kappa, tol in [(0.01, 1e-7), (1.0, 1e-7), (30.0, 1e-7), (150.0, 1e-7), (900.0, 1e-5)]:
        lp = np.asarray(logpdf(kappa)).reshape(2, -1)
        assert np.all(np.abs(lp[0] - lp[1]) < tol * (1 + np.abs(lp[0]))), kappa


@pytest.mark.parametrize("gamma", [0.2, 0.5])
def test_smooth_through_integer_a(gamma):
    """a = kappa (1/gamma - 1)/2 - 1 crosses 1 and 4: second differences in kappa stay tiny."""
    x = jnp.asarray([0.05, 0.4, 1.0, 2.5])
    logpdf = jax.jit(lambda k: htmp_logpdf(x, gamma, k))
    for a in (1, 4):
        k0 = 2 * (a + 1) * gamma / (1 - gamma)
        ks = k0 + np.array([-2e-4, -1e-4, 0.0, 1e-4, 2e-4])
        vals = np.stack([np.asarray(logpdf(k)) for k in ks])
        second = vals[:-2] - 2 * vals[1:-1] + vals[2:]
        assert np.max(np.abs(second)) < 1e-8


# CI: a heavy tail, the square trap and a near-zero kappa; the moderate and near-MP cases with the slow checks
@pytest.mark.parametrize("gamma,kappa,scale", [(0.25, 0.3, 2.0), pytest.param(0.5, 3.0, 1.0, marks=pytest.mark.slow),
                                               (1.0, 10.0, 0.5), pytest.param(0.7, 120.0, 3.0, marks=pytest.mark.slow),
                                               (0.9, 0.05, 1.0)])
def test_gradients_match_finite_differences(gamma, kappa, scale):
    x = jnp.asarray(scale * np.array([0.01, 0.3, 0.9, 1.7, 4.0]))

    @jax.jit
    def total(k, sc):
        return jnp.sum(htmp_logpdf(x, gamma, k, sc))

    gk, gs = jax.jit(jax.grad(total, argnums=(0, 1)))(kappa, scale)
    hk, hs = 1e-5 * kappa, 1e-5 * scale
    fd_k = (total(kappa + hk, scale) - total(kappa - hk, scale)) / (2 * hk)
    fd_s = (total(kappa, scale + hs) - total(kappa, scale - hs)) / (2 * hs)
    for grad, fd in ((gk, fd_k), (gs, fd_s)):
        assert abs(float(grad) - float(fd)) <= 1e-6 * max(1.0, abs(float(fd)))


def test_gradient_is_finite_in_the_tails():
    x = jnp.asarray([1e-200, 1e-20, 1e-9, 1e3, 1e5])
    for gamma in (0.3, 1.0):
        g = jax.grad(lambda k, g_=gamma: jnp.sum(htmp_logpdf(x, g_, k, 1.0)))(2.0)
        assert np.isfinite(float(g))


def test_large_kappa_tends_to_marchenko_pastur():
    """SPEC: L1 distance to MP is 0.11 / 0.034 at kappa = 10 / 40."""
    from hteval.densities.mp import mp_logpdf

    gamma = 0.5
    x = np.linspace(1e-4, 4, 40001)
    mp = np.exp(np.asarray(mp_logpdf(jnp.asarray(x), gamma)))
    for kappa, l1 in ((10.0, 0.11), (40.0, 0.034)):
        f = np.exp(np.asarray(htmp_logpdf(jnp.asarray(x), gamma, kappa)))
        assert abs(np.trapezoid(np.abs(f - mp), x) - l1) < 0.005


def test_icdf_inverts_cdf():
    # at gamma = 1 the mass below x = 1e-300 is F ~ 1/|log x| (about 6e-4 at kappa = 5): no quantile 1e-6 there
    for gamma, kappa, low in ((0.5, 2.0, 1e-6), (1.0, 5.0, 1e-2), (0.1, 40.0, 1e-6)):
        q = jnp.asarray([low, 0.01, 0.3, 0.5, 0.9, 0.999])
        x = htmp_icdf(q, gamma, kappa, 3.0)
        assert np.allclose(np.asarray(htmp_cdf(x, gamma, kappa, 3.0)), np.asarray(q), rtol=1e-7, atol=1e-12)


def test_distribution_and_batch_shapes():
    d = HTMP(0.5, jnp.asarray([[1.0], [3.0]]), jnp.asarray([1.0, 2.0, 4.0]))
    assert d.batch_shape == (2, 3)
    lp = d.log_prob(jnp.full((2, 3), 1.5))
    assert lp.shape == (2, 3) and np.isfinite(np.asarray(lp)).all()
    single = htmp_logpdf(1.5, 0.5, 3.0, 4.0)
    assert abs(float(lp[1, 2]) - float(single)) < 1e-12
    draws = HTMP(0.5, 2.0, 1.0).sample(jax.random.PRNGKey(0), (4000,))
    assert abs(float(jnp.mean(draws)) - 1.0) < 0.05


def test_inverse_htmp_is_the_law_of_scale_over_s():
    gamma, kappa, scale = 0.5, 6.0, 2.0
    lam = jnp.asarray([0.5, 1.0, 3.0, 30.0])
    s = scale / lam
    expected = htmp_logpdf(s, gamma, kappa) + jnp.log(scale) - 2 * jnp.log(lam)
    assert np.allclose(np.asarray(inverse_htmp_logpdf(lam, gamma, kappa, scale)), np.asarray(expected))
    assert np.allclose(np.asarray(inverse_htmp_cdf(lam, gamma, kappa, scale)),
                       1 - np.asarray(htmp_cdf(s, gamma, kappa)))
    # E[1/lambda] = 1/scale
    draws = InverseHTMP(gamma, kappa, scale).sample(jax.random.PRNGKey(1), (4000,))
    assert abs(float(jnp.mean(1 / draws)) * scale - 1) < 0.05


def test_power_law_upper_tail_of_inverse_htmp():
    gamma, kappa = 0.5, 3.0
    lam = jnp.asarray([1e6, 1e7])
    lp = np.asarray(inverse_htmp_logpdf(lam, gamma, kappa))
    slope = (lp[1] - lp[0]) / np.log(10)
    assert abs(slope + (1 + kappa * (1 - gamma) / (2 * gamma))) < 1e-3


def test_gamma_must_be_concrete_and_in_range():
    with pytest.raises(ValueError, match="gamma"):
        htmp_logpdf(1.0, 1.5, 1.0)
    with pytest.raises(TypeError, match="concrete"):
        jax.jit(lambda g: htmp_logpdf(1.0, g, 1.0))(0.5)


@pytest.mark.parametrize("gamma", [0.05, 0.5, 1.0])
def test_traced_kappa_path_matches_exact_contour_sums(gamma):
    """Under jit the contour sums come from their log-b interpolation; they must agree with the exact sums."""
    from hteval.special.htmp_table import htmp_table, node_values

    table = htmp_table(gamma)
    traced = jax.jit(lambda b: node_values(table, b))
    for b in np.geomspace(6e-4, 490, 23):
        for fast, exact in zip(traced(b), node_values(table, b), strict=True):
            assert float(jnp.max(jnp.abs(fast - exact))) < 1e-10


def test_public_exports():
    """The top-level density is the module's, run in float64 whatever the caller's JAX setting."""
    assert hteval.htmp_logpdf.__wrapped__ is htmp_logpdf
    x = np.linspace(0.3, 2.0, 7)
    np.testing.assert_array_equal(hteval.htmp_logpdf(x, 0.4, 5.0), htmp_logpdf(x, 0.4, 5.0))


def test_batches_match_the_mpmath_references():
    """The exact posteriors' batch evaluation (two programs of fixed shapes per gamma, many kappas at once) against
    the mpmath references: log f at every square-case point (1e-8), the CDF table (1e-9), the tail masses of the
    square case down to exp(-20000) (1e-6 in the logarithm); quantiles invert the CDF."""
    from hteval.densities.htmp import PhiBatch, log_tail_batch, quantile_batch

    ref = _reference("htmp_logpdf_reference_square.npz")
    assert np.all(ref["gamma"] == 1.0)
    t = np.log(ref["x"] / ref["scale"])[:, None]
    phi = PhiBatch(1.0, ref["kappa"])
    assert np.max(np.abs(phi(t)[:, 0] - np.log(ref["x"]) - ref["logpdf"])) <= 1e-8

    tails = np.load(DATA / "htmp_tails.npz")
    rows = tails["gamma"] == 1.0
    phi = PhiBatch(1.0, tails["kappa"][rows])
    t = np.log(tails["s"][rows])[:, None]
    got = np.where(tails["direction"][rows] < 0, log_tail_batch(phi, t, upper=False)[:, 0],
                   log_tail_batch(phi, t, upper=True)[:, 0])
    assert rows.sum() >= 24 and np.max(np.abs(got - tails["log_mass"][rows])) < 1e-6

    d = np.load(DATA / "htmp_cdf_g0.5_k2.npz")
    x, cdf = d["x"][d["x"] > 0], d["cdf"][d["x"] > 0]
    phi = PhiBatch(float(d["gamma"]), [float(d["kappa"])])
    assert np.max(np.abs(phi(np.log(x / float(d["scale"]))[None, :], phase=True)[0] - cdf)) < 1e-9
    u = np.array([[1e-9, 0.01, 0.3, 0.5, 0.9, 1 - 1e-9]])
    assert np.max(np.abs(phi(quantile_batch(phi, u), phase=True) - u)) < 1e-12
