"""Fashion-MNIST from the idx files that scripts/fetch_fashion_mnist.sh unpacks (Debian's dataset package)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1] / "data" / "fashion-mnist"
_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
          "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


def load(split: str, data: Path = DATA) -> tuple[np.ndarray, np.ndarray]:
    """(images as float32 rows of 784 values in [0, 1], int32 labels 0..9) of the 'train' or 'test' split."""
    images, labels = (Path(data) / name for name in _FILES[split])
    if not images.is_file() or not labels.is_file():
        raise FileNotFoundError(f"Fashion-MNIST not found in {data}: run bash scripts/fetch_fashion_mnist.sh")
    x = _idx(images).reshape(-1, 28 * 28).astype(np.float32) / 255.0
    y = _idx(labels).astype(np.int32)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{images.name} and {labels.name} disagree on the number of examples")
    return x, y


def _idx(path: Path) -> np.ndarray:
    """An idx array (big-endian header: magic with the dimension count, then each dimension's size)."""
    with gzip.open(path, "rb") as handle:
        raw = handle.read()
    if raw[:2] != b"\x00\x00" or raw[2] != 0x08:  # 0x08: unsigned bytes, the only type these files use
        raise ValueError(f"{path} is not an unsigned-byte idx file")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)
