"""NumPy reader: a .npy file is one tensor named after the file; a .npz archive, its members in order.

Headers are parsed here (numpy.lib.format) and checked against the bytes present before anything is mapped or
allocated: np.load would allocate the shape a corrupt .npz member declares before reading it. A .npy file is
memory-mapped; an archive member is read into memory, one at a time. Pickled (object) arrays are refused, since
unpickling can execute code. A member that cannot be read (a CRC error, a truncated or foreign member) is that
tensor's error, and the archive's other members are read.
"""

import io
import logging
import math
import tokenize
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, NamedTuple

import ml_dtypes
import numpy as np

from hteval.errors import InputError
from hteval.io.base import NamedTensor, printable_name, unreadable

logger = logging.getLogger(__name__)

_FLOAT_EXTRAS = frozenset(np.dtype(t) for t in (ml_dtypes.bfloat16, ml_dtypes.float8_e4m3fn,
                                                 ml_dtypes.float8_e5m2))
#: what reading an archive member can raise on corrupt bytes: a bad CRC or local header, broken deflate data, a
#: member cut short, a compression method or encryption zipfile cannot undo
_MEMBER_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError, RuntimeError,
                  tokenize.TokenError)
#: what opening a corrupt zip archive raises: a bad central directory, a name flagged UTF-8 that is not (ValueError),
#: a member needing a newer zip version (NotImplementedError)
ARCHIVE_ERRORS = (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError)
#: what numpy's header parser raises on a malformed header: ValueError, and TokenError when its fallback for headers
#: written by Python 2 meets unbalanced brackets
_HEADER_ERRORS = (ValueError, tokenize.TokenError)
#: deflate cannot expand data more than about 1032-fold: a member that claims more is corrupt
_DEFLATE_RATIO = 1032
_CHUNK = 1 << 24
#: numpy's own limit on a header's length (np.load's max_header_size)
_MAX_HEADER = 10_000


class _Header(NamedTuple):
    shape: tuple[int, ...]
    fortran_order: bool
    dtype: np.dtype
    data_offset: int  # bytes of magic and header before the data
    nbytes: int


def iter_npy(path: Path) -> Iterator[NamedTensor]:
    """Yield the single array of a .npy file, named after the file's stem."""
    array = read_npy(path)
    yield NamedTensor(printable_name(path.stem), array, array.dtype.name)


def read_npy(path: Path) -> np.ndarray:
    """The array of a .npy file, memory-mapped once its header has been checked against the file's size;
    InputError for a corrupt, truncated, pickled or non-numeric file."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            header = _read_header(handle)
    except (OSError, *_HEADER_ERRORS) as err:
        raise InputError(f"cannot read .npy file: {err}", source=str(path)) from err
    problem = _problem(header, size - header.data_offset)
    if problem:
        raise InputError(f"cannot read .npy file: {problem}", source=str(path))
    return _map(path, header)


def iter_npz(path: Path) -> Iterator[NamedTensor]:
    """Yield the members of a .npz archive in archive order, reading one member at a time."""
    try:
        archive = zipfile.ZipFile(path)
    except ARCHIVE_ERRORS as err:
        raise InputError(f"cannot read .npz archive: {err}", source=str(path)) from err
    with archive:
        for info in archive.infolist():
            if not info.is_dir():
                yield _member(archive, info, path)


def _read_header(handle: IO[bytes]) -> _Header:
    """The header of a .npy stream, leaving the stream at the first data byte; ValueError when malformed. The
    header's length is checked before it is read: numpy reads what the length field says (up to 4 GiB) first."""
    version = np.lib.format.read_magic(handle)
    if version not in ((1, 0), (2, 0)):  # 3.0 differs only for structured dtypes with non-Latin-1 field names
        raise ValueError(f".npy format version {version[0]}.{version[1]} is not read by hteval")
    width = 2 if version == (1, 0) else 4
    field = handle.read(width)
    length = int.from_bytes(field, "little")
    if len(field) < width or length > _MAX_HEADER:
        raise ValueError(f"header of {length} bytes (numpy writes at most {_MAX_HEADER})")
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran_order, dtype = read(io.BytesIO(field + handle.read(length)))
    return _Header(shape, fortran_order, dtype, 8 + width + length, math.prod(shape) * dtype.itemsize)


def _problem(header: _Header, present: int) -> str | None:
    """Why the array cannot be read from `present` data bytes, or None."""
    if header.dtype.hasobject:
        return "it holds Python objects (a pickle); hteval reads numeric arrays only, and never unpickles"
    if not (header.dtype.kind in "biufc" or header.dtype in _FLOAT_EXTRAS):
        return f"dtype {header.dtype} is not a numeric tensor dtype"
    if min(header.shape, default=0) < 0:
        return f"negative dimension in shape {header.shape}"
    if header.nbytes != present:
        return (f"shape {header.shape} of {header.dtype} needs {header.nbytes} data bytes, "
                f"{'the file holds' if present >= 0 else 'it ends before its header,'} {max(present, 0)}")
    return None


def _map(path: Path, header: _Header) -> np.ndarray:
    if header.nbytes == 0:  # nothing to map (mmap refuses an empty range)
        return np.empty(header.shape, dtype=header.dtype)
    try:
        return np.memmap(path, dtype=header.dtype, mode="r", offset=header.data_offset, shape=header.shape,
                         order="F" if header.fortran_order else "C")
    except (OSError, ValueError) as err:
        raise InputError(f"cannot memory-map .npy file: {err}", source=str(path)) from err


def _member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> NamedTensor:
    """One archive member as a tensor, or as an unreadable one that says what is wrong with it."""
    name = printable_name(info.filename.removesuffix(".npy"))
    if not info.filename.endswith(".npy"):
        return unreadable(name, "archive member is not a .npy array", str(path))
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        return unreadable(name, f"archive member compressed with zip method {info.compress_type}; .npz members "
                                "are stored or deflated", str(path))
    stored = info.compress_type == zipfile.ZIP_STORED
    if (stored and info.file_size != info.compress_size) or info.file_size > _DEFLATE_RATIO * info.compress_size + 64:
        return unreadable(name, f"corrupt archive member: {info.file_size} bytes stored as {info.compress_size}",
                          str(path))
    try:
        with archive.open(info) as member:
            header = _read_header(member)
            problem = _problem(header, info.file_size - header.data_offset)
            if problem:
                return unreadable(name, f"cannot read archive member: {problem}", str(path))
            array = _read_data(member, header)
    except _MEMBER_ERRORS as err:
        return unreadable(name, f"cannot read archive member: {err}", str(path))
    return NamedTensor(name, array, header.dtype.name)


def _read_data(member: IO[bytes], header: _Header) -> np.ndarray:
    """The member's data, read in chunks into one buffer of the size already checked against the member's. Reading
    to the member's end makes zipfile check its CRC."""
    buffer = np.empty(header.nbytes, dtype=np.uint8)
    done = 0
    while done < header.nbytes:
        chunk = member.read(min(_CHUNK, header.nbytes - done))
        if not chunk:
            raise EOFError(f"archive member ends after {done} of {header.nbytes} data bytes")
        buffer[done:done + len(chunk)] = np.frombuffer(chunk, dtype=np.uint8)
        done += len(chunk)
    array = buffer.view(header.dtype)
    if header.fortran_order:
        return array.reshape(header.shape[::-1]).transpose()
    return array.reshape(header.shape)
