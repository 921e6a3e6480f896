"""A dict of arrays (numpy, JAX or torch, nested dicts allowed) -> named tensors; nested keys are joined by '.'.

Arrays are read as stored, conv kernels as (out, in, *spatial) like a checkpoint file's, with one exception: a
leaf named `kernel` of 3 or more dimensions is read in flax's layout (*spatial, in, out), which is how a flax
linen params dict (`model.init(...)`, with or without its 'params' level) stores every convolution.
"""

from __future__ import annotations

import sys
from collections.abc import Hashable, Iterator, Mapping
from typing import Any

import numpy as np

from hteval.errors import InputError
from hteval.frameworks.common import Ties, from_spatial_first
from hteval.frameworks.torch_modules import tensor_record
from hteval.io.base import NamedTensor, SkippedTensor
from hteval.io.torch_reader import is_torch_tensor

#: the leaf name under which flax keeps Dense and Conv weights, (in, out) and (*spatial, in, out)
FLAX_KERNEL = "kernel"


def array_dict_tensors(arrays: Mapping[str, Any], prefix: str = "",
                       ties: Ties | None = None) -> Iterator[NamedTensor | SkippedTensor]:
    """Each array of the dict in insertion order; an array met again under another key is skipped as tied."""
    ties = Ties() if ties is None else ties
    for key, value in arrays.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from array_dict_tensors(value, prefix=f"{name}.", ties=ties)
        else:
            yield flax_kernel_layout(array_record(name, value, ties), key)


def flax_kernel_layout(record: NamedTensor | SkippedTensor, leaf: Any) -> NamedTensor | SkippedTensor:
    """A 3-D or larger leaf named 'kernel' read as flax's (*spatial, in, out); anything else as it is."""
    if leaf != FLAX_KERNEL or isinstance(record, SkippedTensor) or record.array.ndim < 3:
        return record
    return record._replace(array=from_spatial_first(record.array))


def array_record(name: str, value: Any, ties: Ties) -> NamedTensor | SkippedTensor:
    """An array of any framework as a host array (a GPU's copied), or the reason it is skipped."""
    if is_torch_tensor(value):
        return tensor_record(name, value, ties)
    jax = sys.modules.get("jax")
    if jax is not None and isinstance(value, jax.Array):
        return _jax_record(jax, name, value, ties)
    array = to_numpy(value, name)
    key = _numpy_key(value) if isinstance(value, np.ndarray) else None
    tied = ties.skipped(key, value, name, array.shape, array.dtype.name)
    return tied if tied is not None else NamedTensor(name, array, array.dtype.name)


def to_numpy(value: Any, name: str) -> np.ndarray:
    """A numpy view or copy of an array-like (numpy, or anything with __array__)."""
    try:
        return np.asarray(value)
    except (TypeError, ValueError, RuntimeError) as err:
        raise InputError(f"{type(value).__qualname__} is not an array: {err}", layer=name) from err


def _jax_record(jax: Any, name: str, value: Any, ties: Ties) -> NamedTensor | SkippedTensor:
    shape, dtype = tuple(int(d) for d in value.shape), str(value.dtype)
    tied = ties.skipped(("object", id(value)), value, name, shape, dtype)
    if tied is not None:
        return tied
    if jax.dtypes.issubdtype(value.dtype, jax.dtypes.extended):
        return SkippedTensor(name, shape, dtype, "random key array, not a weight")
    if not value.is_fully_addressable:
        return SkippedTensor(name, shape, dtype, "sharded over several processes: this one cannot read all of it")
    array = np.asarray(jax.device_get(value))
    return NamedTensor(name, array, array.dtype.name)


def _numpy_key(array: np.ndarray) -> Hashable | None:
    if array.size == 0:
        return None
    return ("memory", array.__array_interface__["data"][0], array.shape, array.strides, array.dtype.str)
