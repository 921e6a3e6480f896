"""The accelerator path: many layers' NUTS chains as lanes of one vmapped program run the sequential fits' own
chains (same keys, same kernel, up to floating-point reassociation), grouped by compiled program, each layer
summarised and judged on its own."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from hteval.batched import fit_batched
from hteval.infer import eigenvalue_spectrum, fit
from hteval.sampling import sample_htmp_spectrum

jax.config.update("jax_enable_x64", True)

TRUTH = [(1, 40, 1.0), (2, 50, 3.0), (3, 30, 2.0)]  # seed, M, kappa: M 40 and 50 share the 64 bucket, 30 has its own


@pytest.fixture(scope="module")
def layers():
    return [eigenvalue_spectrum(sample_htmp_spectrum(s, m, 0.5, k, 1.0), gamma=0.5, name=f"l{s}") for s, m, k in TRUTH]


def test_lanes_run_the_sequential_chains(layers):
    # a short run: NUTS is chaotic, and after a few hundred iterations a last-bit difference from vmapping can flip
    # a U-turn and part two chains; over 100 iterations they still agree to rounding
    # two programs: l1 and l2 in 4 lanes, l3 in 2
    batched = fit_batched(layers, chains=2, draws=50, warmup=50, sampler="nuts")
    assert [r.record["name"] for r in batched] == ["l1", "l2", "l3"]
    assert "4 (layer, chain) lanes" in batched[0].settings["chain_method"]
    assert "2 (layer, chain) lanes" in batched[2].settings["chain_method"]
    for b, rec in zip(batched[:2], layers[:2], strict=True):  # one sequential program suffices to compare
        s = fit(rec, chains=2, draws=50, warmup=50, sampler="nuts")
        kb, ks = (r.data["posterior"]["kappa"].values for r in (b, s))
        assert len(np.unique(ks)) > 50  # the chains move: the comparison is not of two constants
        np.testing.assert_allclose(kb, ks, rtol=1e-5)
        assert b.summary.loc["kappa", "median"] == pytest.approx(s.summary.loc["kappa", "median"], rel=1e-4)
        assert b.diagnostics.keys() == s.diagnostics.keys() and b.to_json()["intervals"] == "calibrated"
    assert batched[2].data["posterior"]["kappa"].shape == (2, 50)


@pytest.mark.slow  # a second vmapped program (~10 s to compile); the lanes test above runs in CI
def test_analyze_on_the_batched_path_writes_the_sequential_rows(tmp_path):
    from safetensors.numpy import save_file

    from hteval.network_analysis import analyze

    rng = np.random.default_rng(4)
    path = tmp_path / "two.safetensors"
    save_file({"a.weight": rng.standard_normal((60, 30)).astype(np.float32),
               "b.weight": rng.standard_t(3.0, (60, 30)).astype(np.float32)}, path)
    light = {"chains": 2, "draws": 50, "warmup": 50, "max_draws": None, "figures": False, "sampler": "nuts"}
    batched = analyze(path, tmp_path / "batched", batched=True, svd="device", **light)
    sequential = analyze(path, tmp_path / "sequential", batched=False, workers=1, **light)
    assert list(batched.status) == list(sequential.status) and len(batched) == 2
    for column in ("kappa_median", "kappa_ci_low", "scale_median"):
        np.testing.assert_allclose(batched[column], sequential[column], rtol=1e-4)
    assert (tmp_path / "batched" / "layers" / "b.weight.htmp-exact.json").exists()


def test_a_model_drawn_exactly_gets_its_own_draws_on_the_batched_path(layers):
    """The power law has no chains to batch: each layer gets the draws `fit` gives it (same key), no LOO terms."""
    batched = fit_batched(layers[:2], model="powerlaw", chains=2, draws=100)
    for b, rec in zip(batched, layers[:2], strict=True):
        s = fit(rec, model="powerlaw", chains=2, draws=100)
        np.testing.assert_array_equal(b.data["posterior"]["alpha"].values, s.data["posterior"]["alpha"].values)
        assert b.settings["sampler"] == s.settings["sampler"] and "log_likelihood" not in b.data.children
