"""Tensor -> LayerSpectrum (SPEC section 1): conventions, conv slices, floor and censoring, bad input."""

import dataclasses
import json
import subprocess
import sys
import tracemalloc

import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
import safetensors.numpy
import scipy.linalg

import hteval
from hteval import names, spectra
from hteval.errors import InputError, LayerSkipped

EPS = {"float64": 2.0**-52, "float32": 2.0**-23, "float16": 2.0**-10, "bfloat16": 2.0**-7}


def gaussian(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape)


def test_eigenvalues_are_squared_singular_values_over_n():
    W = gaussian(200, 50)
    spec = hteval.spectrum(W, "w")
    np.testing.assert_allclose(spec.eigenvalues, np.linalg.eigvalsh(W.T @ W / 200), rtol=1e-10)
    assert (spec.N, spec.M, spec.gamma, spec.n_slices) == (200, 50, 0.25, 1)
    assert (spec.n_eigs, spec.n_censored) == (50, 0)
    assert spec.normalisation == names.NORMALISATION_GRAM_OVER_N
    assert spec.dtype == "float64" and spec.shape == (200, 50)
    assert spec.eigenvalues.dtype == np.float64 and np.all(np.diff(spec.eigenvalues) >= 0)
    assert spec.slice_ids.shape == (50,) and not spec.slice_ids.any()


def test_small_eigenvalues_keep_their_digits():
    """Ill-conditioned W: the Gram would lose the smallest eigenvalues entirely, the SVD keeps them."""
    q1, _ = np.linalg.qr(gaussian(300, 40, seed=1))
    q2, _ = np.linalg.qr(gaussian(40, 40, seed=2))
    singular = np.logspace(0, -7, 40)
    spec = hteval.spectrum(q1 * singular @ q2.T, "ill")
    np.testing.assert_allclose(spec.eigenvalues, np.sort(singular**2 / 300), rtol=1e-5)


def test_wide_matrix_is_transposed():
    W = gaussian(50, 200)
    wide, tall = hteval.spectrum(W, "wide"), hteval.spectrum(W.T, "tall")
    assert (wide.N, wide.M, wide.gamma, wide.shape) == (200, 50, 0.25, (50, 200))
    np.testing.assert_array_equal(wide.eigenvalues, tall.eigenvalues)


def test_conv2d_slices_are_pooled_with_their_ids():
    W = gaussian(8, 20, 3, 3)
    spec = hteval.spectrum(W, "conv")
    assert (spec.N, spec.M, spec.n_slices, spec.n_eigs, spec.gamma) == (20, 8, 9, 72, 8 / 20)
    assert np.all(np.diff(spec.eigenvalues) >= 0)
    for k in range(9):
        i, j = divmod(k, 3)
        expected = np.linalg.eigvalsh(W[:, :, i, j] @ W[:, :, i, j].T / 20)
        np.testing.assert_allclose(spec.eigenvalues[spec.slice_ids == k], expected, rtol=1e-10)


def test_conv1d_kernel():
    spec = hteval.spectrum(gaussian(16, 4, 5), "conv1d")
    assert (spec.N, spec.M, spec.n_slices, spec.n_eigs) == (16, 4, 5, 20)
    assert np.bincount(spec.slice_ids).tolist() == [4] * 5


def test_keep_slices_gives_one_spectrum_per_slice():
    W = gaussian(8, 20, 3, 3)
    pooled = hteval.spectrum(W, "conv")
    slices = hteval.spectrum(W, "conv", keep_slices=True, min_eigs=4)
    assert [s.name for s in slices] == [f"conv[{i},{j}]" for i in range(3) for j in range(3)]
    for k, s in enumerate(slices):
        assert (s.n_slices, s.n_eigs, s.shape) == (1, 8, (8, 20, 3, 3))
        np.testing.assert_array_equal(s.eigenvalues, pooled.eigenvalues[pooled.slice_ids == k])
        assert np.all(s.slice_ids == k)


def test_min_eigs_counts_pooled_or_per_slice_eigenvalues():
    W = gaussian(4, 4, 3, 3)
    assert hteval.spectrum(W, "small").n_eigs == 36
    with pytest.raises(LayerSkipped, match="4 eigenvalues < min_eigs=16"):
        hteval.spectrum(W, "small", keep_slices=True)
    with pytest.raises(LayerSkipped, match="5 eigenvalues < min_eigs=16"):
        hteval.spectrum(gaussian(10, 5), "tiny")
    assert hteval.spectrum(gaussian(10, 5), "tiny", min_eigs=5).n_eigs == 5


def test_rank_deficient_float32_is_censored():
    W = gaussian(100, 20).astype(np.float32)
    W[:, 17:] = 0
    spec = hteval.spectrum(W, "deficient")
    expected_floor = (EPS["float32"] * np.linalg.norm(W.astype(np.float64))) ** 2 / 100
    assert spec.floor == pytest.approx(expected_floor, rel=1e-12)
    assert spec.n_censored >= 3 and spec.n_eigs + spec.n_censored == 20
    assert spec.eigenvalues.size == spec.n_eigs == spec.slice_ids.size
    assert np.all(spec.eigenvalues > spec.floor)


def test_censoring_cuts_exactly_at_the_floor():
    """Two eigenvalues placed at half and twice the float32 floor: only the first is censored."""
    n, m = 100, 20
    floor = EPS["float32"] ** 2 * (m - 2) / n  # ||W||_F^2 = sum of s^2, dominated by the 18 unit values
    singular = np.ones(m)
    singular[:2] = np.sqrt(np.array([0.5, 2.0]) * floor * n)
    q1, _ = np.linalg.qr(gaussian(n, m, seed=5))
    q2, _ = np.linalg.qr(gaussian(m, m, seed=6))
    spec = hteval.spectrum(q1 * singular @ q2.T, "straddle", dtype="float32")
    assert spec.floor == pytest.approx(floor, rel=1e-9)
    assert (spec.n_censored, spec.n_eigs) == (1, 19)
    assert spec.eigenvalues[0] == pytest.approx(2 * floor, rel=1e-6)


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", "bfloat16"])
def test_floor_follows_the_stored_dtype(dtype):
    W = gaussian(120, 30).astype(np.dtype(dtype))
    spec = hteval.spectrum(W, "w")
    norm = np.linalg.norm(W.astype(np.float64))
    assert spec.dtype == dtype
    assert spec.floor == pytest.approx((EPS[dtype] * norm) ** 2 / 120, rel=1e-12)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_rounding_noise_of_a_low_rank_matrix_is_censored(dtype):
    """Rank 5 rounded to a half-precision dtype: the 35 noise eigenvalues sit below the floor, 5 above."""
    W = (gaussian(100, 5, seed=3) @ gaussian(5, 40, seed=4)).astype(np.dtype(dtype))
    spec = hteval.spectrum(W, "low_rank")
    assert (spec.n_eigs, spec.n_censored) == (5, 35)


def test_dtype_argument_sets_the_floor_of_an_upcast_tensor():
    W = gaussian(120, 30)
    spec = hteval.spectrum(W, "upcast", dtype="bfloat16")
    assert spec.dtype == "bfloat16"
    assert spec.floor == pytest.approx((EPS["bfloat16"] * np.linalg.norm(W)) ** 2 / 120, rel=1e-12)
    with pytest.raises(InputError, match="integer"):
        hteval.spectrum(W, "upcast", dtype="int8")


def test_jax_arrays_are_accepted():
    W = gaussian(64, 32)
    spec = hteval.spectrum(jnp.asarray(W, dtype=jnp.bfloat16), "jax")
    assert spec.dtype == "bfloat16" and spec.n_eigs + spec.n_censored == 32


@pytest.mark.parametrize("shape", [(), (7,)])
def test_scalars_and_vectors_are_not_layers(shape):
    with pytest.raises(LayerSkipped, match=f"{len(shape)}-D tensor"):
        hteval.spectrum(np.ones(shape), "bias")


def test_all_zero_tensor_is_skipped():
    with pytest.raises(LayerSkipped, match="all-zero"):
        hteval.spectrum(np.zeros((32, 32), dtype=np.float32), "zero")


def _with(value: float) -> np.ndarray:
    W = gaussian(32, 32)
    W[3, 4] = value
    return W


@pytest.mark.parametrize(("array", "problem"), [
    (_with(np.nan), "1 non-finite"),
    (_with(np.inf), "1 non-finite"),
    (np.ones((32, 32), dtype=np.int32), "integer tensor"),
    (np.ones((32, 32), dtype=bool), "boolean tensor"),
    (np.ones((32, 32), dtype=np.complex64), "complex tensor"),
    (np.ones((0, 32), dtype=np.float32), "empty tensor"),
    (np.array([["a", "b"]]), "not a floating-point weight"),
])
def test_bad_tensors_raise_input_error_naming_the_layer(array, problem):
    with pytest.raises(InputError, match=problem) as info:
        hteval.spectrum(array, "encoder.bad")
    assert info.value.layer == "encoder.bad" and str(info.value).startswith("encoder.bad: ")
    assert "\n" not in str(info.value)


def test_to_record_is_json_safe_and_ordered():
    spec = hteval.spectrum(gaussian(64, 32).astype(np.float32), "w")
    record = spec.to_record()
    assert tuple(record) == names.RECORD_FIELDS + names.EIG_SUMMARY_FIELDS
    assert json.loads(json.dumps(record)) == record
    assert record[names.SHAPE] == [64, 32] and isinstance(record[names.FLOOR], float)
    assert record[names.EIG_MIN] == spec.eigenvalues[0] and record[names.EIG_MAX] == spec.eigenvalues[-1]
    assert record[names.EIG_MEAN] == pytest.approx(spec.eigenvalues.mean())
    full = spec.to_record(with_eigenvalues=True)
    assert tuple(full) == names.RECORD_FIELDS + (names.EIGENVALUES, names.SLICE_IDS)
    assert json.loads(json.dumps(full))[names.EIGENVALUES] == spec.eigenvalues.tolist()


def test_layer_spectrum_is_frozen():
    spec = hteval.spectrum(gaussian(32, 16), "w")
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.N = 3
    with pytest.raises(ValueError, match="read-only"):
        spec.eigenvalues[0] = 0.0


def test_public_api_and_no_import_side_effects():
    # Third-party imports first: numpy, scipy, jax and numpyro add warning filters of their own.
    code = ("import logging, warnings, ml_dtypes, numpy, scipy.linalg, jax, numpyro.distributions; "
            "before = list(warnings.filters); "
            "import hteval; "
            "assert not logging.getLogger().handlers; assert warnings.filters == before; "
            "print(sorted(hteval.__all__))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "LayerSpectrum" in out and "load_spectra" in out and "spectrum" in out and "InputError" in out
    assert hteval.__version__ == "0.1.0"
    assert {"HtevalError", "InputError", "LayerSkipped", "LayerSpectrum", "__version__", "load_spectra",
            "spectrum", "fit", "FitResult", "compare", "Comparison"} <= set(hteval.__all__)


def test_fit_works_when_arviz_was_imported_first():
    """ArviZ installs numpyro as a lazy module; NUTS's initialisation then failed with "numpyro.distributions has
    no attribute distribution" unless hteval's own imports had loaded numpyro fully first (users often import
    arviz before hteval)."""
    code = ("import arviz, jax; jax.config.update('jax_enable_x64', True); import numpy as np; "
            "from hteval.infer import fit; "
            "r = fit(np.linspace(0.2, 2.5, 40), gamma=0.5, model='mp', chains=1, draws=20, warmup=20); "
            "import hteval; print(callable(hteval.fit) and callable(hteval.compare))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip().endswith("True"), out.stderr[-2000:]


_MODULE_CONSTANTS = """
import sys
{enable}
import pkgutil, importlib, numbers, json
import numpy as np
import hteval, hteval.models
{late}
found = {{}}
for package in (hteval, hteval.models):
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if info.name.startswith(("hteval.cli", "hteval.callbacks.")):  # callbacks import their framework
            continue
        module = importlib.import_module(info.name)
        for key, value in vars(module).items():
            if isinstance(value, numbers.Real) and not isinstance(value, bool):
                found[info.name + "." + key] = float(value).hex()
            elif isinstance(value, (np.ndarray, np.generic)) or type(value).__module__.startswith("jax"):
                if not hasattr(value, "dtype") or not np.issubdtype(value.dtype, np.number):
                    continue
                found[info.name + "." + key] = str(value.dtype) + np.asarray(value, dtype=np.float64).tobytes().hex()
print(json.dumps(found))
"""


def test_module_constants_do_not_depend_on_when_float64_was_enabled():
    """The command line imports all of hteval before it enables float64; a constant computed with jnp at import
    (log 1e-3 of the kappa prior's box was) then came out float32 and moved every chain (the pooler of MiniLM
    fitted from the command line diverged where the same fit from Python did not)."""
    enable = "import jax; jax.config.update('jax_enable_x64', True)"
    runs = [subprocess.run([sys.executable, "-c", _MODULE_CONSTANTS.format(enable=a, late=b)], capture_output=True,
                           text=True) for a, b in ((enable, ""), ("", enable))]
    for run in runs:
        assert run.returncode == 0, run.stderr[-2000:]
    first, late = (json.loads(r.stdout) for r in runs)
    assert len(first) > 20 and first == late, {k: (first.get(k), late.get(k)) for k in first if first[k] != late.get(k)}


def test_device_singular_values_match_lapack(tmp_path):
    import jax

    jax.config.update("jax_enable_x64", True)
    rng = np.random.default_rng(8)
    path = tmp_path / "w.npz"
    np.savez(path, fc=rng.standard_normal((80, 30)), conv=rng.standard_normal((12, 6, 3, 3)))
    host, device = (hteval.load_spectra(path, svd=s) for s in ("host", "device"))
    for a, b in zip(host, device, strict=True):
        np.testing.assert_allclose(b.eigenvalues, a.eigenvalues, rtol=1e-12)
        assert (a.n_eigs, a.n_censored, a.floor) == (b.n_eigs, b.n_censored, b.floor)
    with pytest.raises(InputError, match="svd"):
        hteval.load_spectra(path, svd="gpu")


# The host path converts each matrix to float64 block by block: tall matrices (N >= 11/6 M) go through a blocked
# QR (blocks of max(M rows, 32 MB), the last one partial), square-ish ones through one float64 copy. The tests
# shrink the blocks (small_blocks) so that small matrices take several.
@pytest.fixture
def small_blocks(monkeypatch):
    monkeypatch.setattr(spectra, "_BLOCK_BYTES", 256 * 8 * 8)  # 256 rows of 8 columns


def _reference_eigenvalues(W: np.ndarray) -> np.ndarray:
    x = np.moveaxis(W.astype(np.float64).reshape(*W.shape[:2], -1), -1, 0)
    x = x if x.shape[1] >= x.shape[2] else x.swapaxes(1, 2)
    return np.sort(scipy.linalg.svd(x, compute_uv=False) ** 2 / x.shape[1], axis=1)


def _rank_deficient(n: int, m: int, rank: int) -> np.ndarray:
    return gaussian(n, rank, seed=11) @ gaussian(rank, m, seed=12)


@pytest.mark.parametrize(("W", "dtype"), [
    (gaussian(3001, 40), "float64"),            # tall: 59 blocks of 51 rows, the last with 43
    (gaussian(5000, 300), "float32"),           # tall: blocks of M = 300 rows, the last with 200
    (gaussian(40, 3001).T, "float64"),          # a column-major (transposed) tall view
    (gaussian(60, 3001), "bfloat16"),           # wide, stored row-major: its transpose is read column-major
    (gaussian(300, 300), "float32"),            # square: one float64 copy
    (gaussian(200, 150), "float16"),            # square-ish (N < 11/6 M)
    (gaussian(600, 24, 3, 3), "float32"),       # conv: strided slices, tall
    (gaussian(16, 24, 2, 2), "float64"),        # conv: strided slices, wide
    (_rank_deficient(2000, 60, 7), "float64"),  # tall, rank 7 of 60
    (_rank_deficient(120, 100, 7), "float64"),  # square-ish, rank 7
], ids=["tall", "tall-wide-blocks", "tall-view", "wide", "square", "squarish", "conv-tall", "conv-wide",
        "rank-deficient-tall", "rank-deficient-square"])
def test_host_eigenvalues_match_lapack_on_the_whole_float64_matrix(W, dtype, small_blocks):
    W = W.astype(np.dtype(dtype))
    eigs, floors = spectra._host_eigenvalues(W, W.dtype, "w", None)
    expected = _reference_eigenvalues(W)
    assert eigs.shape == expected.shape
    np.testing.assert_allclose(eigs, expected, rtol=0, atol=1e-12 * expected.max())
    norms = np.sum(np.moveaxis(W.astype(np.float64).reshape(*W.shape[:2], -1), -1, 0) ** 2, axis=(1, 2))
    np.testing.assert_allclose(floors, EPS[dtype] ** 2 * norms / max(W.shape[:2]), rtol=1e-12)


@pytest.mark.parametrize(("n", "m"), [(3000, 64), (2000, 100), (300, 200)], ids=["tall", "tall-100", "square-ish"])
def test_small_eigenvalues_of_an_ill_conditioned_matrix_keep_ten_digits(n, m, small_blocks):
    """Singular values spanning 1e-6..1: each eigenvalue to 1e-10 relative (the Gram gets ~1e-5 on the smallest)."""
    q1, _ = np.linalg.qr(gaussian(n, m, seed=13))
    q2, _ = np.linalg.qr(gaussian(m, m, seed=14))
    singular = np.logspace(0, -6, m)
    eigs, _ = spectra._host_eigenvalues(q1 * singular @ q2.T, np.dtype("float64"), "ill", None)
    np.testing.assert_allclose(eigs[0], np.sort(singular**2 / n), rtol=1e-10)


def test_host_path_holds_no_float64_copy_of_a_tall_tensor(small_blocks):
    """numpy's allocations are traced: a 20000 x 50 float32 tensor (8 MB in float64) reduces in 50-row blocks."""
    W = gaussian(20000, 50).astype(np.float32)
    tracemalloc.start()
    try:
        hteval.spectrum(W, "tall")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 0.05 * W.size * 8


def test_host_path_holds_one_float64_copy_of_a_square_tensor():
    W = gaussian(800, 700).astype(np.float32)
    tracemalloc.start()
    try:
        hteval.spectrum(W, "square")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1.2 * W.size * 8


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_non_finite_values_in_a_later_block_are_counted_over_the_whole_tensor(dtype, small_blocks):
    W = gaussian(3000, 40).astype(np.dtype(dtype))
    W[2900, 3], W[2950, :2], W[10, 0] = np.nan, np.inf, -np.inf
    with pytest.raises(InputError, match="4 non-finite values") as info:
        hteval.spectrum(W, "late")
    assert info.value.layer == "late"
    conv = gaussian(600, 24, 3, 3)
    conv[500, 3, 2, 2] = np.nan
    with pytest.raises(InputError, match="1 non-finite value "):
        hteval.spectrum(conv, "conv")


@pytest.mark.filterwarnings("ignore:overflow encountered in square:RuntimeWarning")  # eigenvalues of 1e200 entries
def test_extreme_finite_float64_values_are_not_mistaken_for_bad_input(small_blocks):
    """Squares of huge values overflow and of tiny ones underflow; neither is a NaN nor an all-zero tensor. Tiny
    weights still give a record; huge ones have eigenvalues beyond float64, which are said to be inf (rather than
    the weights said to be non-finite, or a spectrum censored below an infinite floor)."""
    spec = hteval.spectrum(gaussian(3000, 40) * 1e-170, "tiny")
    assert spec.n_eigs + spec.n_censored == 40
    with pytest.raises(InputError, match="huge: 40 eigenvalues are NaN or inf"):
        hteval.spectrum(gaussian(3000, 40) * 1e200, "huge")
    with pytest.raises(LayerSkipped, match="all-zero"):
        hteval.spectrum(np.zeros((3000, 40), dtype=ml_dtypes.bfloat16), "zero")


def test_safetensors_pages_are_released_and_tensors_stay_readable(tmp_path):
    """A read tensor's mapped pages leave the process's resident memory once the next is asked for, and its array
    still reads the file: resident file pages stay at one 16 MB tensor, not the 64 MB of all four."""
    path = tmp_path / "big.safetensors"
    tensors = {f"layer{i}.weight": gaussian(1024, 4096, seed=i).astype(np.float32) for i in range(4)}
    safetensors.numpy.save_file(tensors, path)
    code = ("from hteval.io import iter_tensors; "
            "rss = lambda: int(next(l for l in open('/proc/self/status') if l.startswith('RssFile')).split()[1]); "
            f"before = rss(); read = [(t, float(t.array.sum()), rss() - before) for t in iter_tensors({str(path)!r})]; "
            "print(max(r[2] for r in read), [(t.name, float(t.array.sum())) for t, _, _ in read])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    grown_kib, sums = out.stdout.split(" ", 1)
    assert int(grown_kib) < 24 * 1024
    assert sums.strip() == str([(name, float(w.sum())) for name, w in tensors.items()])


# One rule for computed and given eigenvalues: [-floor, floor] censored, NaN, inf and below -floor refused ---------

def test_above_floor_censors_rounding_on_both_sides_and_refuses_the_rest():
    x = np.array([-1e-6, -5e-7, 0.0, 1e-6, 2e-6, 0.5])
    assert spectra.above_floor(x, 1e-6).tolist() == [False, False, False, False, True, True]
    per_slice = spectra.above_floor(np.array([[-1e-3, 1.0], [-1e-3, 1.0]]), np.array([[1e-2], [1e-3]]))
    assert per_slice.tolist() == [[False, True], [False, True]]
    with pytest.raises(InputError, match=r"^s: w: 2 eigenvalues below -1e-06 \(the resolution bound\); the most "
                                         r"negative is -0.3; eigenvalues of W\^T W / N are >= 0 up to rounding$"):
        spectra.above_floor(np.array([0.2, -0.3, -1e-6, -2e-6]), 1e-6, source="s", layer="w")
    with pytest.raises(InputError, match="^2 eigenvalues are NaN or inf$"):
        spectra.above_floor(np.array([np.nan, -np.inf, -1.0]), 1e-6)


def test_computed_eigenvalues_follow_the_same_rule(tmp_path, monkeypatch):
    """Squared singular values are >= 0, but a device SVD that does not converge returns NaN instead of raising:
    the layer then fails with the message raw eigenvalues get, and the other layers are read."""
    import jax

    jax.config.update("jax_enable_x64", True)
    np.savez(tmp_path / "w.npz", a=gaussian(40, 20), b=gaussian(50, 20))
    real = spectra._device_singular_values
    monkeypatch.setattr(spectra, "_device_singular_values",  # layer a's SVD fails
                        lambda slices: real(slices) * (np.nan if slices.shape[1] == 40 else 1.0))
    a, b = spectra.iter_spectra(tmp_path / "w.npz", svd="device", on_error="skip")
    assert (a.name, a.status, a.reason) == ("a", names.STATUS_ERROR, "20 eigenvalues are NaN or inf")
    assert isinstance(b, spectra.LayerSpectrum) and b.n_eigs == 20


@pytest.mark.parametrize(("rank", "warned"), [(20, False), (18, False), (17, True), (4, True)])
def test_a_layer_with_over_ten_percent_censored_warns(rank, warned):
    """20 columns: 2 censored (10%) is the limit itself, 3 (15%) are over it."""
    spec = hteval.spectrum(_rank_deficient(60, 20, rank).astype(np.float32), "low")
    assert spec.n_censored == 20 - rank
    assert bool(spec.warnings) == warned
    assert list(spectra.censored_layers([spec.to_record()])) == (["low"] if warned else [])
    if warned:
        (warning,) = spec.warnings
        assert warning.startswith(f"low: {20 - rank} of 20 eigenvalues") and "structural zero" in warning
    assert names.CENSORED_SHARE_LIMIT == 0.1


def test_censored_layers_reads_table_rows():
    """Rows of layers.csv: errors and skipped tensors have no counts; a layer with several models counts once."""
    rows = [{names.NAME: "e", names.N_EIGS: float("nan"), names.N_CENSORED: float("nan")},
            {names.NAME: "s"},
            {names.NAME: "low", names.N_EIGS: 4.0, names.N_CENSORED: 28.0},
            {names.NAME: "low", names.N_EIGS: 4.0, names.N_CENSORED: 28.0},
            {names.NAME: "ok", names.N_EIGS: 30, names.N_CENSORED: 2}]
    assert spectra.censored_layers(rows) == {"low": 28 / 32}
