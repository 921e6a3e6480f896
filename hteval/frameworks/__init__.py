"""A model or a dict of arrays in memory -> named tensors, as a checkpoint reader yields them (`hteval.io.base`).

Each framework has its own adapter module, imported only when the object belongs to it: a torch object is
recognised by its class's module, so torch is never imported for anything else. Conv kernels come out in one
layout, (out, in, *spatial), whatever the framework stores (torch OIHW, flax and Keras HWIO).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any

from hteval.errors import InputError
from hteval.frameworks.arrays import array_dict_tensors
from hteval.io.base import NamedTensor


def is_path(source: Any) -> bool:
    """A checkpoint named by a path (read by `hteval.io`), not an object in memory."""
    return isinstance(source, (str, bytes)) or isinstance(source, os.PathLike)


def named_tensors(source: Any) -> Iterator[NamedTensor]:
    """Every weight tensor of an in-memory object, in its framework's order, one at a time."""
    if isinstance(source, Mapping):
        return array_dict_tensors(source)
    raise InputError(f"cannot read weights from a {type(source).__module__}.{type(source).__qualname__}; hteval "
                     "reads a checkpoint path, a dict of arrays, a torch nn.Module, a JAX pytree (flax, equinox) "
                     "or a Keras 3 model")


def source_label(source: Any) -> str:
    """How messages and reports name a source: a path as given, an object by its class."""
    if is_path(source):
        return os.fsdecode(source)
    return f"<{type(source).__qualname__}>"


__all__ = ["is_path", "named_tensors", "source_label"]
