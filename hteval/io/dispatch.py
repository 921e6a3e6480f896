"""Choose a reader from the file's suffix and its first bytes; an unknown file is an InputError naming both.

Rules: a recognised suffix whose format the header bytes confirm (or do not contradict) picks its reader,
which then reports any corruption precisely; header bytes that clearly belong to another format win over a
misleading suffix; a zip archive with an unknown suffix is told apart by its member names (.npy members vs
torch's data.pkl).

A checkpoint named by a URL (`hteval.io.remote_path`) is read only if it is safetensors (a file, a directory of
shards or a shard index), by the same rules restricted to that format: the other formats have no random access to
one tensor, and their readers need a local file.
"""

import logging
import string
import zipfile
from collections.abc import Callable, Collection, Iterator
from pathlib import Path

from hteval.errors import InputError
from hteval.io import numpy_reader, safetensors_reader, torch_reader
from hteval.io.base import NamedTensor
from hteval.io.remote_path import RemotePath, is_url

logger = logging.getLogger(__name__)

NPY, NPZ, SAFETENSORS, SAFETENSORS_DIR, SAFETENSORS_INDEX, TORCH = (
    "npy", "npz", "safetensors", "safetensors-dir", "safetensors-index", "torch")

_READERS: dict[str, Callable[[Path], Iterator[NamedTensor]]] = {
    NPY: numpy_reader.iter_npy,
    NPZ: numpy_reader.iter_npz,
    SAFETENSORS: safetensors_reader.iter_file,
    SAFETENSORS_DIR: safetensors_reader.iter_directory,
    SAFETENSORS_INDEX: safetensors_reader.iter_index,
    TORCH: torch_reader.iter_tensors,
}
_SUFFIXES = {".npy": NPY, ".npz": NPZ, ".safetensors": SAFETENSORS,
             ".pt": TORCH, ".pth": TORCH, ".bin": TORCH, ".ckpt": TORCH}
#: file suffixes read as checkpoints
CHECKPOINT_SUFFIXES = frozenset(_SUFFIXES)
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
#: formats read by URL, whose readers take `names`
SAFETENSORS_FORMATS = frozenset({SAFETENSORS, SAFETENSORS_DIR, SAFETENSORS_INDEX})
SUPPORTED = ".safetensors, a directory of .safetensors shards (with or without *.safetensors.index.json), " \
            ".npy, .npz, .pt/.pth/.bin/.ckpt (torch)"


def iter_tensors(source, *, names: Collection[str] | None = None) -> Iterator[NamedTensor]:
    """Yield (name, array, dtype) for each tensor of a checkpoint, in checkpoint order, one at a time. source: a
    path, a URL of a safetensors checkpoint (s3://, gs://, https://, file://: whatever fsspec reaches), or a model
    or dict of arrays in memory (`hteval.frameworks`). names: only the tensors of these names; a safetensors
    checkpoint then reads no other tensor's bytes."""
    from hteval import frameworks

    if not frameworks.is_path(source):
        tensors = frameworks.named_tensors(source)
    else:
        path = checkpoint_path(source)
        found = detect_format(path)
        if names is not None and found in SAFETENSORS_FORMATS:
            return _READERS[found](path, names=frozenset(names))
        tensors = _READERS[found](path)
    if names is None:
        return tensors
    wanted = frozenset(names)
    return (tensor for tensor in tensors if tensor.name in wanted)


def checkpoint_path(source) -> Path | RemotePath:
    """A checkpoint path as the readers take it: a RemotePath for a URL, else a Path."""
    return RemotePath(source) if is_url(source) else Path(source)


def detect_format(path: Path | RemotePath) -> str:
    """The format of a checkpoint file or directory (one of this module's format constants); by URL (a RemotePath),
    one of the safetensors formats, or an InputError."""
    if not path.exists():
        raise InputError("no such file or directory", source=str(path))
    if path.is_dir():
        return _directory_format(path)
    if path.name.endswith(safetensors_reader.INDEX_SUFFIX):
        return SAFETENSORS_INDEX
    by_suffix = _SUFFIXES.get(path.suffix.lower())
    by_bytes = _sniff(path)
    if isinstance(path, RemotePath):
        return _url_format(path, by_suffix, by_bytes)
    if by_suffix in by_bytes or (by_suffix and not by_bytes):
        return by_suffix
    if len(by_bytes) == 1:
        logger.info("%s: reading as %s (its header bytes), not as its suffix suggests", path, by_bytes[0])
        return by_bytes[0]
    if by_bytes == (NPZ, TORCH):
        return _zip_format(path)
    raise InputError(_unknown_message(path), source=str(path))


def _url_format(path: RemotePath, by_suffix: str | None, by_bytes: tuple[str, ...]) -> str:
    """A file by URL: safetensors where its first bytes say so, or its suffix does and they say nothing else (its
    corruption is then the reader's to report)."""
    if by_bytes == (SAFETENSORS,) or (by_suffix == SAFETENSORS and not by_bytes):
        return SAFETENSORS
    found = by_bytes[0] if len(by_bytes) == 1 else by_suffix or "unrecognised"
    raise InputError(f"over a URL hteval reads safetensors checkpoints (a .safetensors file, a directory of shards or "
                     f"a *.safetensors.index.json; this one: {found}); copy other formats to a local path",
                     source=str(path))


def _directory_format(path: Path) -> str:
    if any(path.glob("*.safetensors")) or any(path.glob("*" + safetensors_reader.INDEX_SUFFIX)):
        return SAFETENSORS_DIR
    found = sorted({p.suffix or p.name for p in path.iterdir()})
    raise InputError(f"directory holds no .safetensors shards (found: {', '.join(found) or 'nothing'}); "
                     f"hteval reads {SUPPORTED}", source=str(path))


def _sniff(path: Path) -> tuple[str, ...]:
    """The formats the first bytes are consistent with; empty when they match none."""
    head = _head(path, 9)
    if head.startswith(b"\x93NUMPY"):
        return (NPY,)
    if head.startswith(_ZIP_MAGICS):
        return (NPZ, TORCH)
    if head[:1] == b"\x80" and head[1:2] in b"\x02\x03\x04\x05":  # pickle protocols 2-5: legacy torch.save
        return (TORCH,)
    if len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") <= path.stat().st_size - 8:
        return (SAFETENSORS,)
    return ()


def _zip_format(path: Path) -> str:
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.namelist()
    except numpy_reader.ARCHIVE_ERRORS as err:
        raise InputError(f"corrupt zip archive: {err}", source=str(path)) from err
    if members and all(m.endswith(".npy") for m in members):
        return NPZ
    if any(m == "data.pkl" or m.endswith("/data.pkl") for m in members):
        return TORCH
    raise InputError(f"zip archive that is neither .npz nor a torch file (members: {members[:5]}); "
                     f"hteval reads {SUPPORTED}", source=str(path))


def _head(path: Path, n: int) -> bytes:
    try:
        with path.open("rb") as handle:
            return handle.read(n)
    except OSError as err:
        raise InputError(f"cannot read file: {err.strerror}", source=str(path)) from err


def _unknown_message(path: Path) -> str:
    head = _head(path, 16)
    message = (f"unrecognised checkpoint format (suffix {path.suffix or '(none)'!r}, first bytes {head!r}); "
               f"hteval reads {SUPPORTED}")
    if head and all(chr(b) in string.printable for b in head):
        message += "; a text file of eigenvalues is read with hteval.io.read_eigenvalues"
    return message
