"""The pretrained MTCNN face detector (P-, R- and O-Net) shipped inside the `mtcnn` wheel, as an .npz checkpoint.

The wheel (installed by scripts/bootstrap.sh with --no-deps: its TensorFlow dependency is not needed to read
weights) holds each stage's Keras weights as a joblib pickle, lz4-compressed, in layer order: for every Conv2D
or Dense layer its kernel and bias, followed by a PReLU's slopes where the layer has one. This module renames
them in hteval's conventions: a conv kernel (h, w, in, out) becomes (out, in, h, w); a Dense kernel (in, out)
stays as it is (hteval orients every matrix so that N >= M); layers are numbered in order (conv1, ..., fc5, fc6,
...). The files are unpickled, so only the pinned wheel's own files are read.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

STAGES = ("pnet", "rnet", "onet")


def weights_folder() -> Path:
    """The wheel's weight folder, found without importing mtcnn (whose import needs TensorFlow)."""
    spec = importlib.util.find_spec("mtcnn")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the mtcnn wheel is not installed: run bash scripts/bootstrap.sh")
    return Path(next(iter(spec.submodule_search_locations))) / "assets" / "weights"


def stage_tensors(stage: str, folder: Path | None = None) -> dict[str, np.ndarray]:
    """{name: array} of one stage: NAME.weight for kernels, NAME.bias and NAME.prelu for the vectors."""
    import joblib

    arrays = joblib.load((folder or weights_folder()) / f"{stage}.lz4")
    tensors: dict[str, np.ndarray] = {}
    layer, name = 0, None
    for array in arrays:
        array = np.asarray(array)
        if array.ndim in (2, 4):  # kernels; biases are 1-D, PReLU slopes 1-D or (1, 1, C)
            layer += 1
            name = f"{'conv' if array.ndim == 4 else 'fc'}{layer}"
            tensors[f"{name}.weight"] = array.transpose(3, 2, 0, 1) if array.ndim == 4 else array
        elif f"{name}.bias" not in tensors:
            tensors[f"{name}.bias"] = array.reshape(-1)
        else:
            tensors[f"{name}.prelu"] = array.reshape(-1)
    return tensors


def write_checkpoint(path: Path, folder: Path | None = None) -> Path:
    """All three stages in one .npz, tensor names prefixed by the stage (onet.fc5.weight)."""
    tensors = {f"{stage}.{name}": array for stage in STAGES for name, array in stage_tensors(stage, folder).items()}
    np.savez(path, **tensors)
    return path
