"""The notebook tooling: percent-format sources become the cells they say, and idx files parse to their arrays.
(The notebooks themselves run top to bottom in reduced mode in CI: `scripts/notebooks.py --reduced`.)"""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _notebooks_script():
    spec = importlib.util.spec_from_file_location("notebooks_script", ROOT / "scripts" / "notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_percent_source_becomes_markdown_and_code_cells(tmp_path):
    source = tmp_path / "demo.py"
    source.write_text("# %% [markdown]\n# # Title\n#\n# text\n\n# %%\nx = 1\n\n# %%\n\n# %% [markdown]\n# end\n")
    notebook = _notebooks_script().build(source)
    assert [(c.cell_type, c.source) for c in notebook.cells] == [
        ("markdown", "# Title\n\ntext"), ("code", "x = 1"), ("markdown", "end")]  # the empty code cell is dropped
    assert notebook.metadata["kernelspec"]["name"] == "python3"


def test_every_notebook_source_builds():
    script = _notebooks_script()
    sources = sorted((ROOT / "notebooks" / "src").glob("*.py"))
    assert [s.stem for s in sources][:2] == ["01_quickstart", "02_phases_of_training"]
    for source in sources:
        notebook = script.build(source)
        assert notebook.cells[0].cell_type == "markdown" and any(c.cell_type == "code" for c in notebook.cells)
        for cell in notebook.cells:
            if cell.cell_type == "code":
                compile(cell.source, f"{source.name} cell", "exec")  # every code cell is valid Python


def test_idx_files_parse_to_their_arrays(tmp_path):
    from experiments.fashion_mnist import load

    images = np.arange(3 * 28 * 28, dtype=np.uint64).reshape(3, 28, 28) % 256
    labels = np.array([4, 0, 9], dtype=np.uint8)
    for name, array in (("train-images-idx3-ubyte.gz", images), ("train-labels-idx1-ubyte.gz", labels)):
        header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
        with gzip.open(tmp_path / name, "wb") as handle:
            handle.write(header + array.astype(np.uint8).tobytes())
    x, y = load("train", data=tmp_path)
    assert x.shape == (3, 784) and x.dtype == np.float32 and np.array_equal(y, labels)
    np.testing.assert_allclose(x[1, :5] * 255, images[1].ravel()[:5])
    with pytest.raises(FileNotFoundError, match="fetch_fashion_mnist"):
        load("test", data=tmp_path)


def test_mtcnn_keras_weights_become_hteval_tensors(tmp_path):
    import joblib

    from experiments.mtcnn_weights import stage_tensors

    rng = np.random.default_rng(0)
    kernel = rng.standard_normal((3, 3, 4, 8)).astype(np.float32)  # Keras: (h, w, in, out)
    dense = rng.standard_normal((72, 16)).astype(np.float32)
    layers = [kernel, np.zeros(8), np.ones((1, 1, 8)), dense, np.zeros(16), np.ones(16),
              rng.standard_normal((16, 2)), np.zeros(2)]
    joblib.dump(layers, tmp_path / "onet.lz4", compress="lz4")
    tensors = stage_tensors("onet", tmp_path)
    assert list(tensors) == ["conv1.weight", "conv1.bias", "conv1.prelu", "fc2.weight", "fc2.bias", "fc2.prelu",
                             "fc3.weight", "fc3.bias"]
    assert tensors["conv1.weight"].shape == (8, 4, 3, 3)  # hteval's (out, in, h, w)
    assert tensors["conv1.weight"][5, 2, 1, 0] == kernel[1, 0, 2, 5]
    assert tensors["conv1.prelu"].shape == (8,) and tensors["fc2.weight"] is not None
