"""Plain eigenvalue files: text (whitespace, comma or newline separated, '#' comments) or a 1-D .npy array.

Such a file carries no shape, so gamma = M/N must be supplied separately by the command that fits it. Nor does it
carry a floor: which values are rounding (censored) and which are wrong (NaN, inf, below minus the resolution bound)
is decided where the floor is known, by the spectrum built from them (`hteval.infer.eigenvalue_spectrum`).
"""

import logging
from pathlib import Path

import numpy as np

from hteval.errors import InputError

logger = logging.getLogger(__name__)

NPY_MAGIC = b"\x93NUMPY"


def read_eigenvalues(path: str | Path) -> np.ndarray:
    """Read a file of eigenvalues of W^T W / N as written (float64, sorted ascending): rounding below zero and
    non-finite values included, for the spectrum to judge."""
    path = Path(path)
    values = _read_npy(path) if _head(path) == NPY_MAGIC else _read_text(path)
    if values.size == 0:
        raise InputError("no eigenvalues in file", source=str(path))
    return np.sort(values)


def _head(path: Path) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read(len(NPY_MAGIC))
    except OSError as err:
        raise InputError(f"cannot read eigenvalue file: {err.strerror}", source=str(path)) from err


def _read_npy(path: Path) -> np.ndarray:
    from hteval.io.numpy_reader import read_npy

    array = read_npy(path)  # its header checked against the file's size before anything is allocated
    if array.ndim != 1 or array.dtype.kind not in "fiu":
        raise InputError(f"expected a 1-D real array of eigenvalues, found shape {array.shape} of "
                         f"{array.dtype}", source=str(path))
    return array.astype(np.float64)


def _read_text(path: Path) -> np.ndarray:
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError as err:
        raise InputError("not a text file of eigenvalues (nor a .npy file)", source=str(path)) from err
    values = [_parse(token, number, path) for number, line in enumerate(lines, start=1)
              for token in line.split("#", 1)[0].replace(",", " ").split()]
    return np.asarray(values, dtype=np.float64)


def _parse(token: str, line: int, path: Path) -> float:
    try:
        return float(token)
    except ValueError as err:
        raise InputError(f"line {line}: {token!r} is not a number", source=str(path)) from err

