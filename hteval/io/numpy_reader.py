"""NumPy reader: a .npy file is one tensor named after the file; a .npz archive, its members in order."""

import logging
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from hteval.errors import InputError
from hteval.io.base import NamedTensor

logger = logging.getLogger(__name__)

# What np.load raises on a truncated, corrupt or pickled file; pickles are refused (they can execute code).
_LOAD_ERRORS = (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error)


def iter_npy(path: Path) -> Iterator[NamedTensor]:
    """Yield the single array of a .npy file, named after the file's stem."""
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except _LOAD_ERRORS as err:
        raise InputError(f"cannot read .npy file: {err}", source=str(path)) from err
    yield NamedTensor(path.stem, array, array.dtype.name)


def iter_npz(path: Path) -> Iterator[NamedTensor]:
    """Yield the members of a .npz archive in archive order, reading one member at a time."""
    try:
        archive = np.load(path, allow_pickle=False)
    except _LOAD_ERRORS as err:
        raise InputError(f"cannot read .npz archive: {err}", source=str(path)) from err
    with archive:
        for key in archive.files:
            array = _member(archive, key, path)
            yield NamedTensor(key, array, array.dtype.name)


def _member(archive: np.lib.npyio.NpzFile, key: str, path: Path) -> np.ndarray:
    try:
        return archive[key]
    except _LOAD_ERRORS as err:
        raise InputError(f"cannot read archive member: {err}", source=str(path), layer=key) from err
