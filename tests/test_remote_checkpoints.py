"""Checkpoints named by a URL (`hteval.io.remote_path`): safetensors read through fsspec, locally in a test by
file:// URLs of tmp_path files and by fsspec's in-process memory:// file system, which go through the same code as
s3:// or gs://. Checked: the tensors, spectra and listing of a URL equal those of its local path (a file, a sharded
directory with or without an index, an index); `hteval analyze URL --engine dask` on a loopback cluster writes the
local path's rows; a task reads the headers and its own tensors' byte ranges only; a missing, corrupt or
non-safetensors URL is one InputError line; a run over a URL resumes, and is refused once the file changed."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from checkpoint_files import write_shards
from safetensors.numpy import save

from hteval import names
from hteval.cli import main
from hteval.errors import InputError, RunMismatchError
from hteval.fingerprint import fingerprint
from hteval.io import iter_tensors
from hteval.io.checkpoint_set import is_checkpoint_set
from hteval.network_analysis import LAYER_TABLE, analyze, read_layer_table
from hteval.spectra import LayerSpectrum, iter_spectra, list_tensors

fsspec = pytest.importorskip("fsspec")

#: the columns compared to 1e-12: every median and interval end analyze writes for htmp-exact
SUMMARY = [f"{p}_{s}" for p in ("kappa", "scale") for s in ("median", "ci_low", "ci_high")]
SHARDS = {
    "model-00001-of-00002.safetensors": {"layers.0.weight": (96, 64), "layers.0.bias": (64,)},
    "model-00002-of-00002.safetensors": {"layers.1.weight": (80, 48), "layers.2.weight": (72, 40)},
}


def _tensors(seed: int = 1) -> dict[str, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return {shard: {name: rng.standard_normal(shape).astype(np.float32) for name, shape in tensors.items()}
            for shard, tensors in SHARDS.items()}


def _write(folder: Path, *, index: bool = True, seed: int = 1) -> Path:
    return write_shards(folder, _tensors(seed), index=index)


@pytest.fixture(scope="module")
def sharded(tmp_path_factory) -> Path:
    return _write(tmp_path_factory.mktemp("remote") / "model")


def _url(path: Path) -> str:
    return path.resolve().as_uri()  # file:///...


def _summary(results) -> list[tuple]:
    """Every field of every record, the arrays as bytes: two readings are equal exactly or not at all."""
    return [tuple(v.tobytes() if isinstance(v, np.ndarray) else v for v in dataclasses.astuple(r)) for r in results]


@pytest.mark.parametrize("where", ["model", "model/model.safetensors.index.json",
                                   "model/model-00002-of-00002.safetensors", "unindexed"])
def test_a_url_reads_as_its_local_path(sharded, where):
    local = sharded.parent / where
    if where == "unindexed":
        _write(local, index=False)
    url = _url(local)
    assert [(t.name, t.dtype) for t in iter_tensors(url)] == [(t.name, t.dtype) for t in iter_tensors(local)]
    for ours, theirs in zip(iter_tensors(url), iter_tensors(local), strict=True):
        np.testing.assert_array_equal(ours.array, theirs.array, strict=True)
    assert list_tensors(url) == list_tensors(local)
    spectra = list(iter_spectra(url, on_error="skip"))
    assert any(isinstance(s, LayerSpectrum) for s in spectra)
    assert _summary(spectra) == _summary(iter_spectra(local, on_error="skip"))
    assert fingerprint(url) == fingerprint(local)
    assert not is_checkpoint_set(url)


@pytest.fixture
def memory_checkpoint():
    """A sharded checkpoint with its index in the memory:// file system, and the (file name, start, end) of every
    byte range read from it."""
    fs = fsspec.filesystem("memory")
    shards = _tensors()
    for shard, tensors in shards.items():
        fs.pipe_file(f"/ckpt/{shard}", save(tensors))
    weight_map = {name: shard for shard, tensors in shards.items() for name in tensors}
    fs.pipe_file("/ckpt/model.safetensors.index.json", json.dumps({"weight_map": weight_map}).encode())
    reads: list[tuple[str, int | None, int | None]] = []
    original = fs.cat_file

    def counting(path, start=None, end=None, **kwargs):
        reads.append((path.rsplit("/", 1)[-1], start, end))
        return original(path, start=start, end=end, **kwargs)

    fs.cat_file = counting
    yield "memory://ckpt", shards, reads
    del fs.cat_file
    fs.rm("/ckpt", recursive=True)


def test_a_task_reads_the_headers_and_its_own_tensors_bytes_only(memory_checkpoint):
    from hteval.dask_layers import group_spectra
    from hteval.io.remote_path import RemotePath
    from hteval.io.safetensors_reader import read_header

    folder, shards, reads = memory_checkpoint
    shard = "model-00002-of-00002.safetensors"
    for url in (f"{folder}/{shard}", folder, f"{folder}/model.safetensors.index.json"):
        entries = {entry.name: entry for entry in read_header(RemotePath(f"{folder}/{shard}"))}
        header_end = min(entry.start for entry in entries.values())
        reads.clear()
        (spectrum,) = group_spectra(url, ["layers.2.weight"], None, "host")
        assert (spectrum.N, spectrum.M) == (72, 40)
        tensor_reads = [(name, start, end) for name, start, end in reads if not name.endswith(".json")]
        # the other shard is not opened, and no other tensor of this one is read
        assert {name for name, _, _ in tensor_reads} == {shard}
        wanted = entries["layers.2.weight"]
        assert [(start, end) for _, start, end in tensor_reads if end > header_end] == [(wanted.start, wanted.end)]
        assert sum(end - start for _, start, end in tensor_reads) < wanted.end - wanted.start + 2 * header_end
    np.testing.assert_array_equal(next(iter_tensors(folder, names={"layers.2.weight"})).array,
                                  shards[shard]["layers.2.weight"])


def test_a_missing_corrupt_or_other_format_url_is_one_input_error_line(tmp_path, capsys):
    fs = fsspec.filesystem("memory")
    fs.pipe_file("/bad/corrupt.safetensors", (40).to_bytes(8, "little") + b'{"w": {"dtype": "F32", nonsense')
    np.savez(tmp_path / "weights.npz", w=np.ones((4, 4)))
    cases = {"memory://bad/missing.safetensors": "no such file or directory",
             _url(tmp_path / "missing"): "no such file or directory",
             "memory://bad/corrupt.safetensors": "corrupt safetensors file",
             _url(tmp_path / "weights.npz"): "over a URL hteval reads safetensors checkpoints",
             "nonesuch://bucket/model.safetensors": "Protocol not known"}
    try:
        for url, message in cases.items():
            with pytest.raises(InputError, match=message) as raised:
                list(iter_tensors(url))
            assert url in str(raised.value) and "\n" not in str(raised.value)
            assert main(["esd", url]) == 2
            (line,) = capsys.readouterr().err.strip().splitlines()
            assert line.startswith("hteval: error: ") and message in line
    finally:
        fs.rm("/bad", recursive=True)


def test_analyze_url_on_a_cluster_writes_the_local_rows(sharded, tmp_path):
    local = analyze(sharded, tmp_path / "local", figures=False, report=False)
    out = tmp_path / "dask"
    assert main(["analyze", _url(sharded), "--engine", "dask", "--workers", "2", "--no-figures", "--out",
                 str(out)]) == 0
    ours = read_layer_table(out / LAYER_TABLE).set_index(names.NAME).sort_index()
    theirs = local.set_index(names.NAME).sort_index()
    assert list(ours.index) == list(theirs.index) and list(ours[names.STATUS]) == list(theirs[names.STATUS])
    assert list(ours[names.STATUS]).count(names.STATUS_OK) == 3  # three weights fitted, the bias skipped
    np.testing.assert_allclose(ours[SUMMARY].to_numpy(float), theirs[SUMMARY].to_numpy(float), rtol=1e-12, atol=0)


def test_a_run_over_a_url_resumes_and_refuses_a_changed_file(tmp_path):
    folder = tmp_path / "model"
    _write(folder, index=False)
    url = _url(folder / "model-00002-of-00002.safetensors")
    out = tmp_path / "out"
    first = analyze(url, out, layers="layers.2.*", figures=False, report=False)
    assert list(first[names.STATUS]) == [names.STATUS_OK]
    recorded = json.loads((out / "run.json").read_text())["source"]
    assert recorded["path"] == url
    assert recorded["sha256"] == fingerprint(folder / "model-00002-of-00002.safetensors").sha256
    rows: list[dict] = []
    again = analyze(url, out, layers="layers.2.*", figures=False, report=False,
                    on_row=lambda row, done, total: rows.append(row))
    assert not rows  # resumed: nothing refitted
    pd.testing.assert_frame_equal(again, first)
    _write(folder, index=False, seed=2)
    with pytest.raises(RunMismatchError, match="as it was"):
        analyze(url, out, layers="layers.2.*", figures=False, report=False)
