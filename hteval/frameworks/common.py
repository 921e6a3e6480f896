"""What every framework adapter shares: conv kernels brought to (out, in, *spatial), grouped convolutions split
into their groups, and tied weights told apart from the tensor they repeat."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import numpy as np

from hteval.io.base import NamedTensor, SkippedTensor


def from_spatial_first(kernel: np.ndarray, *, out_last: bool = True) -> np.ndarray:
    """(*spatial, in, out) (flax and Keras convolutions, HWIO), or (*spatial, out, in) with out_last=False (Keras
    transposed convolutions), as (out, in, *spatial). A view: nothing is copied."""
    n = kernel.ndim
    out_axis, in_axis = (n - 1, n - 2) if out_last else (n - 2, n - 1)
    return kernel.transpose(out_axis, in_axis, *range(n - 2))


def from_torch_transposed(kernel: np.ndarray, groups: int) -> np.ndarray:
    """A torch ConvTranspose weight (in, out/groups, *spatial) as the (out, in/groups, *spatial) weight of a
    convolution: per kernel position, the out x in matrix that takes the layer's input channels to its output
    channels (the position order is not flipped: a permutation of the slices changes no pooled spectrum)."""
    n_in, per_out, *spatial = kernel.shape
    by_group = kernel.reshape(groups, n_in // groups, per_out, *spatial).swapaxes(1, 2)
    return by_group.reshape(groups * per_out, n_in // groups, *spatial)


def conv_record(name: str, kernel: np.ndarray, dtype: str, groups: int = 1) -> NamedTensor | SkippedTensor:
    """A conv kernel in torch layout (out, in/groups, *spatial), as the reader hands it to `hteval.spectra`.

    A grouped convolution is block-diagonal over its groups, so its spectrum is the union of the groups' spectra:
    the kernel becomes (out/groups, in/groups, groups, *spatial), and each group at each position is one slice of
    the pooled spectrum. A group of a single input (or output) channel, as in depthwise convolutions, is a vector
    with one eigenvalue: such a layer is skipped.
    """
    if groups == 1:
        return NamedTensor(name, kernel, dtype)
    n_out, per_in, *spatial = kernel.shape
    per_out = n_out // groups
    if min(per_out, per_in) == 1:
        kind = "depthwise convolution" if per_in == 1 else "grouped convolution"
        return SkippedTensor(name, tuple(kernel.shape), dtype,
                             f"{kind} of {groups} groups, each a {per_out} x {per_in} matrix per kernel position: "
                             "one eigenvalue each, no spectrum")
    by_group = kernel.reshape(groups, per_out, per_in, *spatial)
    return NamedTensor(name, np.moveaxis(by_group, 0, 2), dtype)


class Ties:
    """The first name under which each tensor was met, so that a tensor met again (tied weights) is analysed once.

    Keys identify the data (a torch storage address with shape and strides, a JAX array or Keras variable object);
    the objects are kept referenced while the adapter runs, so that an id is never reused for another tensor.
    """

    def __init__(self) -> None:
        self._first: dict[Hashable, str] = {}
        self._alive: list[Any] = []

    def earlier(self, key: Hashable | None, owner: Any, name: str) -> str | None:
        """The name the data of `key` was first met under, or None (and `name` is remembered) the first time."""
        if key is None:
            return None
        first = self._first.setdefault(key, name)
        if first == name:
            self._alive.append(owner)
            return None
        return first

    def skipped(self, key: Hashable | None, owner: Any, name: str, shape: tuple[int, ...],
                dtype: str) -> SkippedTensor | None:
        """A skipped record 'tied to <first name>' for a tensor met before, else None."""
        first = self.earlier(key, owner, name)
        return None if first is None else SkippedTensor(name, shape, dtype, f"tied to {first}")
