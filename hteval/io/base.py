"""What every reader yields: one named tensor at a time, so a checkpoint never has to fit in memory twice."""

from typing import NamedTuple

import numpy as np

from hteval.errors import InputError

#: the dtype of a tensor whose dtype is unknown
UNKNOWN_DTYPE = np.dtype(np.void)


class UnreadableArray:
    """Stands in for the data of a tensor that a reader found but cannot read (a corrupt archive member, a header
    entry that does not match its bytes): it has the declared shape and dtype where those are known, and turning it
    into an array raises the InputError that says why. `hteval.spectra` reports that as the layer's error (a
    SkippedLayer with status 'error' under on_error="skip") and goes on with the file's other tensors."""

    def __init__(self, error: InputError, shape: tuple[int, ...] = (), dtype: np.dtype = UNKNOWN_DTYPE):
        self.error = error
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __array__(self, dtype=None, copy=None):
        raise self.error.with_traceback(None)  # a fresh traceback on every attempt, not a growing one

    def __repr__(self) -> str:
        return f"UnreadableArray({self.error})"


class NamedTensor(NamedTuple):
    """A tensor as stored in a checkpoint: its name, its data (often a read-only memory map; an UnreadableArray
    where the reader could not read it), its dtype."""

    name: str
    array: np.ndarray | UnreadableArray
    dtype: str


class SkippedTensor(NamedTuple):
    """A tensor a reader found but does not hand over, and why: no values to read (the meta device), a second name
    of a tensor already read (tied weights), a layer with no spectrum (a depthwise convolution). `hteval.spectra`
    reports it as a skipped layer with this reason."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    reason: str


def printable_name(name: str) -> str:
    """The name as stored, with code points that cannot be written as UTF-8 (lone surrogates, which JSON escapes
    and pickles can carry) escaped, so that every name can be printed and saved."""
    return name.encode("utf-8", "backslashreplace").decode("utf-8")


def unreadable(name: str, message: str, source: str, *, shape: tuple[int, ...] = (),
               dtype: np.dtype | None = None, dtype_name: str | None = None) -> NamedTensor:
    """A NamedTensor whose data raise InputError(message) naming the source and the tensor when read."""
    dtype = UNKNOWN_DTYPE if dtype is None else dtype
    error = InputError(message, source=source, layer=name)
    return NamedTensor(name, UnreadableArray(error, shape, dtype), dtype_name or dtype.name)
