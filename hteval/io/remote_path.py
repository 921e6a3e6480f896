"""Checkpoints named by a URL (s3://, gs://, https://, file://, memory://: any file system fsspec reaches).

`RemotePath` is the part of pathlib.Path that the safetensors reader, `hteval.io.dispatch` and
`hteval.fingerprint` use, over an fsspec file system, so that one reader serves both. Bytes are read as byte
ranges (`read_range`), never a whole file at once: a tensor costs one range read of its own bytes. Every error of
the file system (a missing object, a refused request, a backend that is not installed) is an InputError naming
the URL.

fsspec comes with the distributed extra (Dask depends on it); s3fs, gcsfs and the like are the user's to install.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Any

from hteval.errors import InputError

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(source: Any) -> bool:
    """Whether `source` is a string naming a checkpoint by URL (a scheme, then ://)."""
    return isinstance(source, str) and _URL.match(source) is not None


class RemotePath:
    """A file or directory of an fsspec file system, made from its URL (or, inside, from a file system and a
    path); `str()` gives its URL."""

    def __init__(self, url: str, *, _fs: Any = None, _path: str | None = None):
        given = _fs is None
        if given:
            _fs, _path = _file_system(url)
        self.fs, self.path = _fs, _path.rstrip("/") or "/"
        # messages name the checkpoint as the user typed it; what the reader found inside it, by its full URL
        self._url = url.rstrip("/") if given else _fs.unstrip_protocol(self.path)

    def _child(self, path: str) -> RemotePath:
        return RemotePath("", _fs=self.fs, _path=path)

    def __str__(self) -> str:
        return self._url

    def __repr__(self) -> str:
        return f"RemotePath({self._url!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RemotePath) and (self.fs, self.path) == (other.fs, other.path)

    def __hash__(self) -> int:
        return hash(self.path)

    def __lt__(self, other: RemotePath) -> bool:
        return self.path < other.path

    def __truediv__(self, name: str) -> RemotePath:
        return self._child(f"{self.path.rstrip('/')}/{name}")

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def suffix(self) -> str:
        name = self.name
        dot = name.rfind(".")
        return name[dot:] if 0 < dot < len(name) - 1 else ""

    @property
    def parent(self) -> RemotePath:
        head = self.path.rsplit("/", 1)[0]
        return self._child(head or "/")

    def exists(self) -> bool:
        return self._call("cannot reach file or directory", self.fs.exists, self.path)

    def is_file(self) -> bool:
        return self._call("cannot reach file or directory", self.fs.isfile, self.path)

    def is_dir(self) -> bool:
        return self._call("cannot reach file or directory", self.fs.isdir, self.path)

    def stat(self) -> _Stat:
        return _Stat(int(self._call("cannot read file size", self.fs.size, self.path)))

    def iterdir(self) -> list[RemotePath]:
        found = self._call("cannot list directory", self.fs.ls, self.path, detail=False)
        # some object stores list a directory's own marker object among its children
        return [self._child(p) for p in sorted(p.rstrip("/") for p in found) if p != self.path]

    def glob(self, pattern: str) -> list[RemotePath]:
        """The directory's children whose names match `pattern` (one level, as Path.glob without **); the directory's
        own name is never read as a pattern."""
        return [p for p in self.iterdir() if fnmatch.fnmatchcase(p.name, pattern)]

    def read_range(self, start: int, end: int) -> bytes:
        """Bytes [start, end) of the file; fewer where the file ends before `end`."""
        if end <= start:
            return b""
        return self._call("cannot read file", self.fs.cat_file, self.path, start, end)

    def read_bytes(self) -> bytes:
        return self._call("cannot read file", self.fs.cat_file, self.path)

    def open(self, mode: str = "rb") -> _RangeReader:
        if mode != "rb":
            raise ValueError(f"a URL is read-only (mode {mode!r})")
        return _RangeReader(self)

    def _call(self, doing: str, method, *args, **kwargs):
        try:
            return method(*args, **kwargs)
        except Exception as err:  # a backend's own errors (botocore, aiohttp, google-auth) as well as OSErrors
            raise InputError(f"{doing}: {_reason(err)}", source=self._url) from err


class _Stat:
    """What `RemotePath.stat` tells: st_size, as os.stat_result names it."""

    def __init__(self, size: int):
        self.st_size = size


class _RangeReader:
    """A file opened for reading over range requests: each read is one request for the bytes it asks for (a
    buffered fsspec file would fetch a whole block, megabytes, to read an 8-byte header length)."""

    def __init__(self, path: RemotePath):
        self._path, self._position = path, 0

    def read(self, size: int = -1) -> bytes:
        end = self._path.stat().st_size if size < 0 else self._position + size
        data = self._path.read_range(self._position, end)
        self._position += len(data)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._position}.get(whence)
        self._position = (self._path.stat().st_size if base is None else base) + offset
        return self._position

    def tell(self) -> int:
        return self._position

    def close(self) -> None:
        pass

    def __enter__(self) -> _RangeReader:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def _file_system(url: str) -> tuple[Any, str]:
    try:
        from fsspec.core import url_to_fs
    except ImportError as err:
        raise InputError("reading a checkpoint by URL needs fsspec: pip install 'hteval[distributed]'",
                         source=url) from err
    try:
        return url_to_fs(url)
    except Exception as err:  # ImportError "Install s3fs to access S3", ValueError "Protocol not known: foo"
        raise InputError(f"cannot open the URL: {_reason(err)}", source=url) from err


def _reason(err: Exception) -> str:
    """An error of a file system in one line: its OS reason where it has one (a FileNotFoundError of fsspec's
    memory or S3 file system has only the path), else its type and message."""
    if isinstance(err, FileNotFoundError):
        return "no such file or directory"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:200]}" if text else type(err).__name__


__all__ = ["RemotePath", "is_url"]
