"""Safetensors reader: single files and sharded directories.

The header is parsed here rather than by `safetensors.safe_open`, whose numpy framework cannot return
bfloat16: an 8-byte little-endian header length, a JSON header, then the raw little-endian tensor bytes. The
file is memory-mapped and each tensor is a view of its byte range, so tensors are read one at a time. Every
offset is checked against the file size before the first tensor is yielded, so a truncated file fails up
front.

Pages of a mapped file that were read count in the process's resident memory until they are unmapped: reading a
whole multi-GB checkpoint would leave all of it resident. So once the consumer asks for the next tensor, the pages
of the previous one are dropped from this process (madvise MADV_DONTNEED; they stay in the page cache, and the
array stays valid: touching it again reads them back).
"""

import json
import logging
import math
import mmap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import ml_dtypes
import numpy as np

from hteval.errors import InputError
from hteval.io.base import NamedTensor

logger = logging.getLogger(__name__)

INDEX_SUFFIX = ".safetensors.index.json"
_HEADER_LIMIT = 100_000_000  # the format's own cap on the header size

_DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
    "C64": np.dtype("<c8"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"),
    "U32": np.dtype("<u4"),
    "U16": np.dtype("<u2"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("bool"),
}


@dataclass(frozen=True)
class _Entry:
    """One tensor of the header; start and end are absolute byte offsets in the file."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    start: int
    end: int


def iter_file(path: Path) -> Iterator[NamedTensor]:
    """Yield the tensors of one .safetensors file in file order (by data offset, not by header key order)."""
    entries = read_header(path)
    data = _memmap(path)
    for entry in entries:
        yield _tensor(data, entry)
        _release(data, entry)


def iter_directory(path: Path) -> Iterator[NamedTensor]:
    """Yield the tensors of a sharded checkpoint directory.

    With a `*.safetensors.index.json` the order is that of its weight_map; without one, shards are read in
    file name order (model-00001-of-00003 first) and each shard in file order.
    """
    index = find_index(path)
    if index is not None:
        yield from iter_index(index)
        return
    for shard in sorted(path.glob("*.safetensors")):
        yield from iter_file(shard)


def find_index(directory: Path) -> Path | None:
    """The directory's shard index, None without one; several indexes are ambiguous and raise InputError."""
    indexes = sorted(directory.glob("*" + INDEX_SUFFIX))
    if len(indexes) > 1:
        found = ", ".join(p.name for p in indexes)
        raise InputError(f"several shard indexes ({found}); pass the one to read as PATH",
                         source=str(directory))
    return indexes[0] if indexes else None


def iter_index(index: Path) -> Iterator[NamedTensor]:
    """Yield the tensors listed in a shard index, in the order of its weight_map."""
    weight_map = _read_weight_map(index)
    shards = {shard: _open_shard(index.parent / shard) for shard in dict.fromkeys(weight_map.values())}
    for name, shard in weight_map.items():
        entries, data = shards[shard]
        if name not in entries:
            raise InputError(f"tensor listed in the index is missing from shard {shard}", source=str(index),
                             layer=name)
        yield _tensor(data, entries[name])
        _release(data, entries[name])


def read_header(path: Path) -> list[_Entry]:
    """Parse and validate a safetensors header; entries sorted by data offset."""
    size = _file_size(path)
    header, data_start = _read_json_header(path, size)
    entries = [_entry(path, name, spec, data_start)
               for name, spec in header.items() if name != "__metadata__"]
    entries.sort(key=lambda entry: entry.start)
    for entry in entries:
        if entry.end > size:
            raise InputError(f"truncated safetensors file: tensor ends at byte {entry.end}, file has {size}",
                             source=str(path), layer=entry.name)
    return entries


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError as err:
        raise InputError(f"cannot read file: {err.strerror}", source=str(path)) from err


def _read_json_header(path: Path, size: int) -> tuple[dict, int]:
    with open(path, "rb") as handle:
        length = int.from_bytes(handle.read(8), "little")
        if size < 8 or length > min(size - 8, _HEADER_LIMIT):
            raise InputError(f"truncated or corrupt safetensors file: header of {length} bytes in a file of "
                             f"{size}", source=str(path))
        raw = handle.read(length)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"corrupt safetensors header (not JSON: {err})", source=str(path)) from err
    if not isinstance(header, dict):
        raise InputError("corrupt safetensors header (not a JSON object)", source=str(path))
    return header, 8 + length


def _entry(path: Path, name: str, spec: object, data_start: int) -> _Entry:
    try:
        dtype = _DTYPES[spec["dtype"]]
        shape = tuple(int(n) for n in spec["shape"])
        begin, end = (int(n) for n in spec["data_offsets"])
    except (KeyError, TypeError, ValueError) as err:
        raise InputError(f"corrupt safetensors header entry ({err!r} in {spec!r})", source=str(path),
                         layer=name) from err
    if min(shape, default=0) < 0 or not 0 <= begin <= end or end - begin != math.prod(shape) * dtype.itemsize:
        raise InputError(f"corrupt safetensors header entry: shape {list(shape)} of {spec['dtype']} does not "
                         f"fit data_offsets [{begin}, {end}]", source=str(path), layer=name)
    return _Entry(name, dtype, shape, data_start + begin, data_start + end)


def _memmap(path: Path) -> np.ndarray:
    try:
        return np.memmap(path, dtype=np.uint8, mode="r")
    except (OSError, ValueError) as err:
        raise InputError(f"cannot memory-map file: {err}", source=str(path)) from err


def _release(data: np.memmap, entry: _Entry) -> None:
    """Drop the tensor's pages from this process's resident memory (see the module docstring)."""
    mapped = getattr(data, "_mmap", None)
    if mapped is None or not hasattr(mmap, "MADV_DONTNEED") or entry.end == entry.start:
        return  # not an mmap-backed array, a platform without MADV_DONTNEED, or an empty tensor: no pages
    start = entry.start - entry.start % mmap.PAGESIZE  # madvise takes page-aligned ranges
    mapped.madvise(mmap.MADV_DONTNEED, start, entry.end - start)


def _tensor(data: np.ndarray, entry: _Entry) -> NamedTensor:
    array = data[entry.start:entry.end].view(entry.dtype).reshape(entry.shape)
    return NamedTensor(entry.name, array, entry.dtype.name)


def _open_shard(path: Path) -> tuple[dict[str, _Entry], np.ndarray]:
    if not path.is_file():
        raise InputError("shard named in the index does not exist", source=str(path))
    entries = read_header(path)
    return {entry.name: entry for entry in entries}, _memmap(path)


def _read_weight_map(index: Path) -> dict[str, str]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise InputError(f"cannot read shard index ({err!r})", source=str(index)) from err
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise InputError("shard index: weight_map is not a mapping of tensor names to shard files",
                         source=str(index))
    return weight_map
