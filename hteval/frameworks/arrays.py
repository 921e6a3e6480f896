"""A dict of arrays (numpy, JAX or torch, nested dicts allowed) -> named tensors; nested keys are joined by '.'."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from hteval.errors import InputError
from hteval.io.base import NamedTensor
from hteval.io.torch_reader import is_torch_tensor, tensor_to_numpy


def array_dict_tensors(arrays: Mapping[str, Any], prefix: str = "") -> Iterator[NamedTensor]:
    """Each array of the dict in insertion order, as stored: conv kernels are read as (out, in, *spatial)."""
    for key, value in arrays.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from array_dict_tensors(value, prefix=f"{name}.")
            continue
        array = to_numpy(value, name)
        yield NamedTensor(name, array, array.dtype.name)


def to_numpy(value: Any, name: str) -> np.ndarray:
    """A host numpy view or copy of an array of any framework (a torch tensor on a GPU is copied to the host)."""
    if is_torch_tensor(value):
        return tensor_to_numpy(value)
    try:
        return np.asarray(value)
    except (TypeError, ValueError, RuntimeError) as err:
        raise InputError(f"{type(value).__qualname__} is not an array: {err}", layer=name) from err
