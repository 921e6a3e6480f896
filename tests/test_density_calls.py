"""Density functions called in loops: each compiles once per size bucket, then neither compiles nor holds memory.

A maximum-likelihood fit, a grid, a plot or a KS distance calls the public functions eagerly with new parameter
values, hundreds of times. Each call must run the function's compiled program: an eager lax.cond or fori_loop
whose branches close over the call's values is compiled anew at every call (seconds) and its executable kept by
JAX's primitive cache (megabytes), which is the failure these tests guard against. XLA compilations are counted
with jax.monitoring, memory as the resident set size of /proc/self/statm.

One aspect ratio (0.25) throughout, so the HTMP contour table is built once; 50 points run in the smallest bucket.
"""

from __future__ import annotations

import contextlib
import gc
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hteval
from hteval.densities import correlated_mp, htmp, inverse_htmp, mp
from hteval.densities.compiled import MIN_BUCKET, bucket_size

GAMMA = 0.25
CALLS = 40
#: a leak of a megabyte a call would add 40 MB over CALLS calls (the eager conditionals kept 6 MB a call)
RSS_BOUND_MB = 20.0
#: parameter values the calls go through (kappa; nu of correlated MP from 0 to 1)
GRID = 300
X = np.geomspace(1e-3, 0.05, 50)
Q = np.linspace(0.01, 0.99, 50)
COMPILE = "/jax/core/compile/backend_compile_duration"


@contextlib.contextmanager
def compilations():
    """A one-element list counting XLA compilations inside the block."""
    count = [0]

    def listener(event, duration, **kwargs):
        if event == COMPILE:
            count[0] += 1

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield count
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def rss_mb() -> float:
    gc.collect()
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def _kappa(i):
    return float(np.geomspace(0.05, 200.0, GRID)[i % GRID])


def _scale(i):
    return 0.01 * (1.0 + 0.005 * i)


def _family(name):
    """name -> f(i): one eager call with the i-th parameter values."""
    htmp_law = lambda i: htmp.HTMP(GAMMA, _kappa(i), _scale(i))  # noqa: E731
    inverse_law = lambda i: inverse_htmp.InverseHTMP(GAMMA, _kappa(i), _scale(i))  # noqa: E731
    mp_law = lambda i: mp.MarchenkoPastur(GAMMA, _scale(i))  # noqa: E731
    families = {
        "htmp": {
            "htmp_logpdf": lambda i: hteval.htmp_logpdf(X, GAMMA, _kappa(i), _scale(i)),
            "htmp_cdf": lambda i: hteval.htmp_cdf(X, GAMMA, _kappa(i), _scale(i)),
            "htmp_cdf, kappa a JAX scalar": lambda i: hteval.htmp_cdf(X, GAMMA, jnp.asarray(_kappa(i)), _scale(i)),
            "htmp_log_cdf": lambda i: hteval.htmp_log_cdf(X, GAMMA, _kappa(i), _scale(i)),
            "htmp_log_sf": lambda i: hteval.htmp_log_sf(X, GAMMA, _kappa(i), _scale(i)),
            "htmp_icdf": lambda i: hteval.htmp_icdf(Q, GAMMA, _kappa(i), _scale(i)),
            "HTMP.log_prob": lambda i: htmp_law(i).log_prob(X),
            "HTMP.cdf": lambda i: htmp_law(i).cdf(X),
            "HTMP.log_cdf": lambda i: htmp_law(i).log_cdf(X),
            "HTMP.icdf": lambda i: htmp_law(i).icdf(Q),
        },
        "inverse_htmp": {
            "inverse_htmp_logpdf": lambda i: hteval.inverse_htmp_logpdf(1 / X, GAMMA, _kappa(i), _scale(i)),
            "inverse_htmp_cdf": lambda i: hteval.inverse_htmp_cdf(1 / X, GAMMA, _kappa(i), _scale(i)),
            "inverse_htmp_log_cdf": lambda i: hteval.inverse_htmp_log_cdf(1 / X, GAMMA, _kappa(i), _scale(i)),
            "inverse_htmp_icdf": lambda i: inverse_htmp.inverse_htmp_icdf(Q, GAMMA, _kappa(i), _scale(i)),
            "InverseHTMP.log_prob": lambda i: inverse_law(i).log_prob(1 / X),
            "InverseHTMP.cdf": lambda i: inverse_law(i).cdf(1 / X),
            "InverseHTMP.icdf": lambda i: inverse_law(i).icdf(Q),
        },
        "mp": {
            "mp_logpdf": lambda i: hteval.mp_logpdf(X, GAMMA, _scale(i)),
            "mp_cdf": lambda i: hteval.mp_cdf(X, GAMMA, _scale(i)),
            "mp_icdf": lambda i: hteval.mp_icdf(Q, GAMMA, _scale(i)),
            "MarchenkoPastur.log_prob": lambda i: mp_law(i).log_prob(X),
            "MarchenkoPastur.cdf": lambda i: mp_law(i).cdf(X),
            "MarchenkoPastur.icdf": lambda i: mp_law(i).icdf(Q),
        },
        "correlated_mp": {
            "correlated_mp_logpdf": lambda i: correlated_mp.correlated_mp_logpdf(X, GAMMA, i / GRID, _scale(i), 300),
            "correlated_mp_cdf": lambda i: correlated_mp.correlated_mp_cdf(X, GAMMA, i / GRID, _scale(i), 300),
            "correlated_mp_icdf": lambda i: correlated_mp.correlated_mp_icdf(Q, GAMMA, i / GRID, _scale(i), 300),
        },
    }
    return families[name]


FAMILIES = ["htmp", "inverse_htmp", "mp", "correlated_mp"]


@pytest.mark.parametrize("family", FAMILIES)
def test_eager_loops_compile_once_and_hold_no_memory(family):
    """Each function: two warm-up calls, then CALLS calls (half as many for correlated MP) with new parameter
    values: no compilation, and the process grows by less than RSS_BOUND_MB over all of the family's calls."""
    _eager_loops(family, CALLS // 2 if family == "correlated_mp" else CALLS)  # its quantiles: ~20 ms a call


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_eager_loops_of_hundreds_of_calls_hold_no_memory(family):
    """As above with 300 calls of each function (150 of correlated MP's)."""
    _eager_loops(family, 150 if family == "correlated_mp" else 300)


def _eager_loops(family: str, calls: int) -> None:
    functions = _family(family)
    for f in functions.values():
        for i in range(2):
            jax.block_until_ready(f(i))
    before = rss_mb()
    compiled = {}
    for name, f in functions.items():
        with compilations() as count:
            for i in range(2, calls + 2):
                out = jax.block_until_ready(f(i))
        compiled[name] = count[0]
        assert out.shape == (50,) and out.dtype == np.float64 and not np.any(np.isnan(np.asarray(out))), name
    assert all(v == 0 for v in compiled.values()), compiled
    assert rss_mb() - before < RSS_BOUND_MB


def test_lengths_share_power_of_two_buckets():
    """Lengths 1 to 300 run in the buckets 64, 128, 256 and 512: at most four programs, whatever the lengths; the
    padded results are those of the unpadded program."""
    assert [bucket_size(n) for n in (0, 1, 64, 65, 1000, 100_000)] == [MIN_BUCKET, 64, 64, 128, 1024, 131072]
    with compilations() as count:
        for n in range(1, 301, 7):
            x = np.geomspace(1e-3, 0.05, n).reshape(-1, 1) if n % 2 else np.geomspace(1e-3, 0.05, n)
            out = hteval.htmp_cdf(x, GAMMA, 2.0, 0.01)
            assert out.shape == x.shape
    assert count[0] <= 4
    x = np.geomspace(1e-3, 0.05, 37)
    exact = jax.jit(lambda v: htmp.htmp_cdf(v, GAMMA, 2.0, 0.01))(x)
    np.testing.assert_allclose(hteval.htmp_cdf(x, GAMMA, 2.0, 0.01), exact, rtol=1e-13, atol=1e-15)
    kappa = np.linspace(0.5, 5.0, 37)  # per-point parameters are padded with the points
    np.testing.assert_allclose(hteval.htmp_logpdf(x, GAMMA, kappa, 0.01),
                               [float(hteval.htmp_logpdf(v, GAMMA, k, 0.01)) for v, k in zip(x, kappa, strict=True)],
                               rtol=1e-12)


def test_loops_under_jit_grad_and_vmap_compile_once():
    """The functions inside the caller's jit, grad (eager) and vmap: a loop over kappa compiles nothing after its
    first calls and keeps memory flat; gradients agree with central differences."""
    x = jnp.asarray(X)

    def total(k):
        return jnp.sum(htmp.htmp_logpdf(x, GAMMA, k, 0.01))

    loops = {"jit": jax.jit(total), "jit of grad": jax.jit(jax.grad(total)), "grad": jax.grad(total),
             "vmap": lambda k: jax.vmap(lambda v: jnp.sum(htmp.htmp_cdf(x, GAMMA, v, 0.01)))(jnp.stack([k, 2 * k]))}
    for f in loops.values():
        for i in range(2):
            jax.block_until_ready(f(_kappa(i)))
    before = rss_mb()
    with compilations() as count:
        for f in loops.values():
            for i in range(2, CALLS + 2):
                jax.block_until_ready(f(_kappa(i)))
    assert count[0] == 0 and rss_mb() - before < RSS_BOUND_MB
    k, h = 3.0, 1e-5
    np.testing.assert_allclose(float(loops["grad"](k)), float(total(k + h) - total(k - h)) / (2 * h), rtol=1e-6)


@pytest.mark.parametrize("kappa", [0.05, 2.0, 100.0, 1000.0])
def test_quantiles_invert_the_cdf_across_the_range(kappa):
    """HTMP quantiles (Newton in one piece of the CDF's table) reproduce q to 1e-9 relative from 1e-12 to
    1 - 1e-10; MP quantiles (Newton in one cell of a graded grid) to rounding."""
    q = np.concatenate([np.geomspace(1e-12, 0.5, 150), 1 - np.geomspace(1e-10, 0.5, 150)])
    got = np.asarray(hteval.htmp_cdf(hteval.htmp_icdf(q, GAMMA, kappa, 3.0), GAMMA, kappa, 3.0))
    np.testing.assert_allclose(got, q, rtol=1e-9, atol=1e-13)
    for gamma in (0.01, 0.5, 0.999, 1.0):
        got = np.asarray(hteval.mp_cdf(hteval.mp_icdf(q, gamma, kappa), gamma, kappa))
        np.testing.assert_allclose(got, q, rtol=0, atol=1e-13)


def test_float64_from_a_float32_process():
    """Where JAX runs in float32 the exported functions still compute in float64, compile once in a loop, and
    leave the caller's setting as it was."""
    script = textwrap.dedent(f"""
        import jax, numpy as np
        count = [0]
        jax.monitoring.register_event_duration_secs_listener(
            lambda event, duration, **kw: count.__setitem__(0, count[0] + (event == {COMPILE!r})))
        import hteval
        x = np.geomspace(1e-3, 0.05, 300)
        for k in (1.0, 1.5):
            hteval.htmp_cdf(x, 0.25, k, 0.01)
        warm = count[0]
        out = [hteval.htmp_cdf(x, 0.25, float(k), 0.01) for k in np.geomspace(0.5, 20.0, 100)]
        print(out[-1].dtype, jax.config.jax_enable_x64, count[0] - warm)
    """)
    # the command line, run in-process by other tests, sets JAX_ENABLE_X64 for its own process
    env = {k: v for k, v in os.environ.items() if k != "JAX_ENABLE_X64"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=300,
                          env=env)
    assert done.stdout.split() == ["float64", "False", "0"], done.stdout + done.stderr


def _layer(i):
    return np.random.default_rng(i).standard_t(4, size=(400, 100))


@pytest.mark.parametrize("path", ["fit", pytest.param("compare", marks=pytest.mark.slow), "analyze"])
def test_repeated_fits_compile_once_and_hold_no_memory(path):
    """The library's own loops over the densities (the iid HTMP drawn exactly calls its CDF and quantiles; compare
    fits two models and checks each; analyze reads and fits a small model in memory), repeated on new layers of
    one shape: nothing compiles after the first two calls and the process does not grow with the calls."""
    calls = {
        "fit": lambda i: hteval.fit(_layer(i), model="htmp", sampler="exact", seed=i, draws=250),
        "compare": lambda i: hteval.compare(_layer(i), models=("htmp-exact", "htmp"), seed=i, draws=250,
                                            ppc_draws=50, predictive_draws=20),
        "analyze": lambda i: hteval.analyze({"a.weight": _layer(i), "b.weight": _layer(i + 1000)[:300]}, out=None),
    }[path]
    for i in range(2):
        calls(i)
    repeats = 5 if path == "compare" else 10  # compare: about 2 s a call
    before = rss_mb()
    with compilations() as count:
        for i in range(2, 2 + repeats):
            calls(i)
    assert count[0] == 0
    assert rss_mb() - before < RSS_BOUND_MB
