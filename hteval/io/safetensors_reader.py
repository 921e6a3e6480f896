"""Safetensors reader: single files and sharded directories.

The header is parsed here rather than by `safetensors.safe_open`, whose numpy framework cannot return
bfloat16: an 8-byte little-endian header length, a JSON header, then the raw little-endian tensor bytes. The
file is memory-mapped and each tensor is a view of its byte range, so tensors are read one at a time. Every
offset is checked against the file size, and against the other tensors' ranges, before the first tensor is
yielded, so a truncated or scrambled file fails up front; an entry whose dtype is unknown or whose shape does not
fit its byte range becomes that tensor's error (hteval.io.base.UnreadableArray), and its neighbours are read.

Pages of a mapped file that were read count in the process's resident memory until they are unmapped: reading a
whole multi-GB checkpoint would leave all of it resident. So once the consumer asks for the next tensor, the pages
of the previous one are dropped from this process (madvise MADV_DONTNEED; they stay in the page cache, and the
array stays valid: touching it again reads them back).

A checkpoint named by a URL (`hteval.io.remote_path`) is read the same way, its headers validated alike, but each
tensor is one range read of its bytes instead of a view of a mapping. `names` limits what is read to those
tensors: the others' bytes are never requested, so a task that computes a few tensors of a remote checkpoint
downloads those and the headers only.
"""

import json
import logging
import math
import mmap
from collections.abc import Collection, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import ml_dtypes
import numpy as np

from hteval.errors import InputError
from hteval.io.base import NamedTensor, printable_name, unreadable
from hteval.io.remote_path import RemotePath

logger = logging.getLogger(__name__)

INDEX_SUFFIX = ".safetensors.index.json"
_HEADER_LIMIT = 100_000_000  # the format's own cap on the header size
_MAX_DIMS = 64  # numpy's; also keeps the product of a shape cheap to compute

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
    """One tensor of the header; start and end are absolute byte offsets in the file. `problem` says why the
    tensor cannot be read (an unknown dtype, a shape that does not fit its bytes); its neighbours still can."""

    name: str
    dtype: np.dtype | None
    dtype_name: str
    shape: tuple[int, ...]
    start: int
    end: int
    problem: str | None = None


def iter_file(path: Path | RemotePath, *, names: Collection[str] | None = None) -> Iterator[NamedTensor]:
    """Yield the tensors of one .safetensors file in file order (by data offset, not by header key order); with
    `names`, only the tensors of those names."""
    entries = read_header(path)
    data = _memmap(path)
    for entry in entries:
        if names is not None and entry.name not in names:
            continue
        yield _tensor(data, entry, path)
        _release(data, entry)


def iter_directory(path: Path | RemotePath, *, names: Collection[str] | None = None) -> Iterator[NamedTensor]:
    """Yield the tensors of a sharded checkpoint directory (with `names`, only the tensors of those names).

    With a `*.safetensors.index.json` the order is that of its weight_map; without one, shards are read in
    file name order (model-00001-of-00003 first) and each shard in file order.
    """
    index = find_index(path)
    if index is not None:
        yield from iter_index(index, names=names)
        return
    for shard in sorted(p for p in path.glob("*.safetensors") if p.is_file()):
        yield from iter_file(shard, names=names)


def find_index(directory: Path | RemotePath) -> Path | RemotePath | None:
    """The directory's shard index, None without one; several indexes are ambiguous and raise InputError."""
    indexes = sorted(directory.glob("*" + INDEX_SUFFIX))
    if len(indexes) > 1:
        found = ", ".join(p.name for p in indexes)
        raise InputError(f"several shard indexes ({found}); pass the one to read as PATH",
                         source=str(directory))
    return indexes[0] if indexes else None


def iter_index(index: Path | RemotePath, *, names: Collection[str] | None = None) -> Iterator[NamedTensor]:
    """Yield the tensors listed in a shard index, in the order of its weight_map (with `names`, only the tensors of
    those names). A tensor its shard lacks is that tensor's error; a shard that is missing or corrupt is an
    InputError before any tensor is read (with `names`, a shard that holds one of them)."""
    weight_map = _read_weight_map(index)
    if names is not None:
        weight_map = {name: shard for name, shard in weight_map.items() if printable_name(name) in names}
    shards = {shard: _open_shard(index.parent / shard) for shard in dict.fromkeys(weight_map.values())}
    for name, shard in weight_map.items():
        entries, data = shards[shard]
        if name not in entries:
            yield unreadable(printable_name(name), f"tensor listed in the index is missing from shard {shard}",
                             str(index), dtype_name="unknown")
            continue
        yield _tensor(data, entries[name], index.parent / shard)
        _release(data, entries[name])


def read_header(path: Path | RemotePath) -> list[_Entry]:
    """Parse and validate a safetensors header; entries sorted by data offset. A header that cannot be parsed,
    byte ranges that overlap or run past the end of the file are InputErrors; an entry whose dtype or shape is
    wrong is kept with its problem, to be reported as that tensor's error."""
    size = _file_size(path)
    header, data_start = _read_json_header(path, size)
    if not isinstance(header, dict):
        raise InputError("corrupt safetensors header (not a JSON object)", source=str(path))
    entries = [_entry(path, printable_name(name), spec, data_start)
               for name, spec in header.items() if name != "__metadata__"]
    entries.sort(key=lambda entry: (entry.start, entry.end))
    _check_layout(path, entries, size)
    return entries


def _check_layout(path: Path, entries: list[_Entry], size: int) -> None:
    previous = None
    for entry in entries:
        if entry.end > size:
            raise InputError(f"truncated safetensors file: tensor ends at byte {entry.end}, file has {size}",
                             source=str(path), layer=entry.name)
        if previous is not None and entry.start < previous.end and entry.end > entry.start:
            raise InputError(f"corrupt safetensors header: the bytes of {entry.name!r} [{entry.start}, "
                             f"{entry.end}) overlap those of {previous.name!r} [{previous.start}, {previous.end})",
                             source=str(path))
        if previous is None or entry.end > previous.end:
            previous = entry


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError as err:
        raise InputError(f"cannot read file: {err.strerror}", source=str(path)) from err


def _read_json_header(path: Path, size: int) -> tuple[object, int]:
    try:
        with path.open("rb") as handle:
            length = int.from_bytes(handle.read(8), "little")
            if size < 8 or length > min(size - 8, _HEADER_LIMIT):
                raise InputError(f"truncated or corrupt safetensors file: header of {length} bytes in a file of "
                                 f"{size}", source=str(path))
            raw = handle.read(length)
    except OSError as err:
        raise InputError(f"cannot read file: {err.strerror}", source=str(path)) from err
    try:
        return json.loads(raw.decode("utf-8"), object_pairs_hook=_unique_keys), 8 + length
    except UnicodeDecodeError as err:
        raise InputError(f"corrupt safetensors header (not UTF-8: {err.reason} at byte {8 + err.start})",
                         source=str(path)) from err
    except (ValueError, RecursionError) as err:  # JSONDecodeError, a duplicate key, an integer of 4300+ digits
        raise InputError(f"corrupt safetensors header (not JSON: {_short(str(err))})", source=str(path)) from err


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """A JSON object as a dict; a key given twice is an error (json.loads would keep the last silently)."""
    result = dict(pairs)
    if len(result) < len(pairs):
        seen: set[str] = set()
        twice = next(key for key, _ in pairs if key in seen or seen.add(key))
        raise ValueError(f"key {printable_name(twice)!r} appears twice")
    return result


def _entry(path: Path, name: str, spec: object, data_start: int) -> _Entry:
    """The entry of one tensor. Its byte range must be valid, or nothing after it can be trusted (InputError);
    its dtype and shape are checked against that range, and a mismatch is the tensor's own problem."""
    offsets = spec.get("data_offsets") if isinstance(spec, dict) else None
    if not (_is_int_list(offsets) and len(offsets) == 2 and 0 <= offsets[0] <= offsets[1]):
        raise InputError(f"corrupt safetensors header entry: data_offsets must be two byte offsets, first <= "
                         f"second, in {_short(repr(spec))}", source=str(path), layer=name)
    begin, end = offsets
    code, shape = spec.get("dtype"), spec.get("shape")
    dtype = _DTYPES.get(code) if isinstance(code, str) else None
    shape_ok = _is_int_list(shape) and len(shape) <= _MAX_DIMS and min(shape, default=0) >= 0
    entry = _Entry(name, dtype, code if isinstance(code, str) else "unknown", tuple(shape) if shape_ok else (),
                   data_start + begin, data_start + end)
    if dtype is None:
        problem = f"unknown dtype {_short(repr(code))}; hteval reads {', '.join(_DTYPES)}"
    elif not shape_ok:
        problem = f"shape {_short(repr(shape))} is not a list of at most {_MAX_DIMS} non-negative integers"
    elif end - begin != math.prod(shape) * dtype.itemsize:
        problem = (f"shape {_short(repr(shape))} of {code} needs {math.prod(shape) * dtype.itemsize} bytes, its "
                   f"data_offsets [{begin}, {end}] hold {end - begin}")
    else:
        return entry
    return replace(entry, problem=f"corrupt safetensors header entry: {problem}")


def _is_int_list(value: object) -> bool:
    return isinstance(value, list) and all(type(n) is int for n in value)


def _short(text: str, limit: int = 200) -> str:
    """Text from a file, cut to a length that fits an error message."""
    return text if len(text) <= limit else text[:limit] + "..."


def _memmap(path: Path | RemotePath) -> "np.ndarray | _RangeBytes":
    if isinstance(path, RemotePath):
        return _RangeBytes(path)
    try:
        return np.memmap(path, dtype=np.uint8, mode="r")
    except (OSError, ValueError) as err:
        raise InputError(f"cannot memory-map file: {err}", source=str(path)) from err


class _RangeBytes:
    """A remote file's bytes as the reader slices a mapped file: `data[start:end]` is a read-only uint8 array of
    those bytes, read when sliced (one range request), so only the tensors asked for are downloaded."""

    def __init__(self, path: RemotePath):
        self._path = path

    def __getitem__(self, where: slice) -> np.ndarray:
        raw = self._path.read_range(where.start, where.stop)
        if len(raw) != where.stop - where.start:  # the object changed since its header was read
            raise InputError(f"truncated safetensors file: bytes [{where.start}, {where.stop}) gave {len(raw)}",
                             source=str(self._path))
        return np.frombuffer(raw, dtype=np.uint8)


def _release(data: np.memmap, entry: _Entry) -> None:
    """Drop the tensor's pages from this process's resident memory (see the module docstring)."""
    mapped = getattr(data, "_mmap", None)
    if mapped is None or not hasattr(mmap, "MADV_DONTNEED") or entry.end == entry.start:
        return  # not an mmap-backed array, a platform without MADV_DONTNEED, or an empty tensor: no pages
    start = entry.start - entry.start % mmap.PAGESIZE  # madvise takes page-aligned ranges
    mapped.madvise(mmap.MADV_DONTNEED, start, entry.end - start)


def _tensor(data: np.ndarray, entry: _Entry, path: Path) -> NamedTensor:
    if entry.problem is not None:
        return unreadable(entry.name, entry.problem, str(path), shape=entry.shape, dtype=entry.dtype,
                          dtype_name=entry.dtype_name if entry.dtype is None else None)
    array = data[entry.start:entry.end].view(entry.dtype).reshape(entry.shape)
    return NamedTensor(entry.name, array, entry.dtype.name)


def _open_shard(path: Path) -> tuple[dict[str, _Entry], np.ndarray]:
    if not path.is_file():
        raise InputError("shard named in the index does not exist", source=str(path))
    entries = read_header(path)
    return {entry.name: entry for entry in entries}, _memmap(path)


def _read_weight_map(index: Path) -> dict[str, str]:
    try:
        weight_map = json.loads(index.read_bytes().decode("utf-8"))["weight_map"]
    except (OSError, ValueError, RecursionError, KeyError, TypeError) as err:
        raise InputError(f"cannot read shard index ({_short(repr(err))})", source=str(index)) from err
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise InputError("shard index: weight_map is not a mapping of tensor names to shard files",
                         source=str(index))
    for shard in dict.fromkeys(weight_map.values()):
        # Shards lie beside their index: a name with a directory in it could reach any file on the machine.
        if shard in ("", ".", "..") or "/" in shard or "\\" in shard or "\0" in shard:
            raise InputError(f"shard index names {printable_name(shard)!r}, which is not a file name beside the "
                             f"index", source=str(index))
    return weight_map
