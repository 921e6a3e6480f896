"""A checkpoint's content fingerprint: what `hteval.run_identity` records a run to be a run of.

The rule, by what the source is:

* **A file** of at most FULL_HASH_BYTES: the sha256 of all its bytes.
* **A larger file**: a sha256 over its size and samples of its bytes, so that fingerprinting a checkpoint of many
  gigabytes reads a few megabytes: SAMPLES ranges of SAMPLE_BYTES spread evenly from its first byte to its last;
  for a safetensors file also its whole header (every tensor's name, dtype, shape and offsets) and the first,
  middle and last TENSOR_SAMPLE_BYTES of every tensor's data, so that each tensor is sampled however many there are.
* **A sharded checkpoint** (a directory of shards, or a shard index): the sha256 over its files, each by the rule
  above, by name: a directory's `*.safetensors` and `*.safetensors.index.json` files, an index and the shards it
  names.
* **A URL** (`hteval.io.remote_path`: s3://, gs://, file://, ...): the same rule, its bytes read as byte ranges, so
  that a file has the same fingerprint by its URL as by its local path.
* **A model or dict of arrays in memory** (`hteval.frameworks`): the sha256 over each tensor's name, dtype and
  shape and its bytes: whole up to SAMPLES x SAMPLE_BYTES (4 MiB, what the samples would read), beyond that the
  evenly spread samples, so that a Tracker's update of a large model hashes a few megabytes a tensor; a skipped
  tensor (tied, on the meta device) by its name, shape and reason.

What sampling misses: a large file changed only in bytes that no sample covers (a few elements of one tensor)
keeps its fingerprint. Training changes every element of the tensors it updates, and every tensor of a
safetensors file is sampled, so another step or another run of training gives another fingerprint; a few
hand-edited elements in a file over FULL_HASH_BYTES may not.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hteval.errors import InputError

#: files and in-memory tensors up to this size are hashed whole
FULL_HASH_BYTES = 64 * 2**20
#: evenly spread samples of a larger file or tensor, each SAMPLE_BYTES long
SAMPLES = 64
SAMPLE_BYTES = 64 * 2**10
#: bytes sampled at the start, middle and end of each tensor of a large safetensors file
TENSOR_SAMPLE_BYTES = 4 * 2**10
_URL_CHUNK = 8 * 2**20  # a file hashed whole by URL is downloaded in ranges of this size, not held all at once
_INDEX_SUFFIX = ".safetensors.index.json"  # as hteval.io.safetensors_reader names shard indexes
_HEADER_LIMIT = 100_000_000  # the safetensors format's own cap on its header


@dataclass(frozen=True)
class Fingerprint:
    """sha256: the fingerprint (hex); size: the bytes it stands for (files, or the tensors in memory); sampled:
    whether some of them were sampled rather than all read."""

    sha256: str
    size: int
    sampled: bool

    @property
    def short(self) -> str:
        """The first 8 hex digits, as messages show it."""
        return self.sha256[:8]


def fingerprint(source: Any) -> Fingerprint:
    """The content fingerprint of a checkpoint path or URL, or of a model or dict of arrays in memory (the module's
    rule). A path that does not exist is an InputError."""
    from hteval.frameworks import is_path
    from hteval.io.remote_path import RemotePath, is_url

    if not is_path(source):
        return _tensors_fingerprint(source)
    path = RemotePath(source) if is_url(source) else Path(os.fsdecode(source))
    if not path.exists():
        raise InputError("no such file or directory", source=str(path))
    if path.is_dir():
        return _files_fingerprint(sorted(p for p in path.iterdir() if p.is_file() and _is_shard_file(p)))
    if path.name.endswith(_INDEX_SUFFIX):
        return _files_fingerprint([path, *_indexed_shards(path)])
    return _file_fingerprint(path)


def _is_shard_file(path: Path) -> bool:
    return path.name.endswith(".safetensors") or path.name.endswith(_INDEX_SUFFIX)


def _indexed_shards(index: Path) -> list[Path]:
    """The shards a shard index names (none where it cannot be read: the reader reports that)."""
    try:
        weight_map = json.loads(index.read_bytes())["weight_map"]
        return sorted({index.parent / name for name in weight_map.values() if (index.parent / name).is_file()})
    except (OSError, ValueError, KeyError, TypeError, AttributeError, InputError):
        return []


def _files_fingerprint(files: list[Path]) -> Fingerprint:
    digest = hashlib.sha256()
    size, sampled = 0, False
    for path in files:
        part = _file_fingerprint(path)
        digest.update(f"{path.name}\0{part.size}\0{part.sha256}\n".encode("utf-8", "surrogateescape"))
        size, sampled = size + part.size, sampled or part.sampled
    return Fingerprint(digest.hexdigest(), size, sampled)


def _file_fingerprint(path) -> Fingerprint:
    if not isinstance(path, Path):
        return _url_file_fingerprint(path)
    try:
        with path.open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size <= FULL_HASH_BYTES:
                return Fingerprint(hashlib.file_digest(handle, "sha256").hexdigest(), size, False)

            def read(start: int, length: int) -> bytes:
                return os.pread(handle.fileno(), length, start)

            ranges = _spread(0, size, SAMPLES, SAMPLE_BYTES) + _safetensors_ranges(read, size)
            return Fingerprint(_sampled(read, size, ranges), size, True)
    except OSError as err:
        raise InputError(f"cannot read file: {err.strerror}", source=str(path)) from err


def _url_file_fingerprint(path) -> Fingerprint:
    """A file named by URL (a RemotePath), by the rule of a local file; its read errors are already InputErrors."""
    size = path.stat().st_size

    def read(start: int, length: int) -> bytes:
        return path.read_range(start, start + length)

    if size <= FULL_HASH_BYTES:
        digest = hashlib.sha256()
        for start in range(0, size, _URL_CHUNK):
            digest.update(read(start, min(_URL_CHUNK, size - start)))
        return Fingerprint(digest.hexdigest(), size, False)
    ranges = _spread(0, size, SAMPLES, SAMPLE_BYTES) + _safetensors_ranges(read, size)
    return Fingerprint(_sampled(read, size, ranges), size, True)


def _safetensors_ranges(read: Callable[[int, int], bytes], size: int) -> list[tuple[int, int]]:
    """The header and the start, middle and end of every tensor's data, where the file is safetensors (none where
    it is not, or its header does not parse: the reader reports that). read(start, length): the file's bytes."""
    head = read(0, 8)
    length = int.from_bytes(head, "little") if len(head) == 8 else 0
    if not 2 <= length <= min(_HEADER_LIMIT, size - 8):
        return []
    header = read(8, length)
    try:
        entries = json.loads(header)
    except ValueError:
        return []
    if not isinstance(entries, dict):
        return []
    ranges = [(0, 8 + length)]
    for name in sorted(entries):
        offsets = entries[name].get("data_offsets") if isinstance(entries[name], dict) else None
        if isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets):
            ranges += _spread(8 + length + offsets[0], 8 + length + offsets[1], 3, TENSOR_SAMPLE_BYTES)
    return ranges


def _spread(start: int, end: int, count: int, length: int) -> list[tuple[int, int]]:
    """`count` ranges of `length` bytes (fewer where [start, end) is short) spread evenly over [start, end), the
    first at start and the last ending at end."""
    span = end - start
    if span <= 0:
        return []
    if span <= count * length:
        return [(start, span)]
    step = (span - length) / (count - 1)
    return [(start + round(i * step), length) for i in range(count)]


def _sampled(read: Callable[[int, int], bytes], size: int, ranges: Iterable[tuple[int, int]]) -> str:
    digest = hashlib.sha256(f"{size}\n".encode())
    for start, length in ranges:
        digest.update(f"{start}:{length}\n".encode())
        digest.update(read(start, length))
    return digest.hexdigest()


def _tensors_fingerprint(source: Any) -> Fingerprint:
    import numpy as np

    from hteval.io.base import NamedTensor, UnreadableArray
    from hteval.io.dispatch import iter_tensors

    digest = hashlib.sha256()
    size, sampled = 0, False
    for tensor in iter_tensors(source):
        if not isinstance(tensor, NamedTensor) or isinstance(tensor.array, UnreadableArray):
            line = f"{tensor.name}\0{getattr(tensor, 'shape', '')}\0{getattr(tensor, 'reason', '')}\n"
            digest.update(line.encode("utf-8", "backslashreplace"))
            continue
        data = np.ascontiguousarray(tensor.array).reshape(-1).view(np.uint8)
        whole = data.size <= SAMPLES * SAMPLE_BYTES
        part = hashlib.sha256(data).hexdigest() if whole else _sampled(
            lambda start, length, data=data: data[start:start + length].tobytes(), data.size,
            _spread(0, data.size, SAMPLES, SAMPLE_BYTES))
        line = f"{tensor.name}\0{tensor.dtype}\0{tensor.array.shape}\0{part}\n"
        digest.update(line.encode("utf-8", "backslashreplace"))
        size, sampled = size + data.size, sampled or not whole
    return Fingerprint(digest.hexdigest(), size, sampled)


__all__ = ["FULL_HASH_BYTES", "Fingerprint", "fingerprint"]
