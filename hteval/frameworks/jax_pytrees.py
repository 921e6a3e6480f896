"""A JAX pytree -> named tensors: a flax nnx module or its nnx.State, an equinox module, or any other pytree of
arrays (lists, tuples, registered classes). Names are the leaves' paths with '.' between keys, as nnx.state
prints them: `layers.0.kernel`.

Where the tree is made of modules, the module holding a leaf says what it is: nnx Conv kernels are
(*spatial, in/groups, out), ConvTranspose kernels (*spatial, in, out) or (*spatial, out, in) with transpose_kernel,
LinearGeneral kernels (*in, *out) one matrix; equinox Conv and ConvTranspose weights are (out, in/groups, *spatial)
like torch's. Elsewhere a leaf named `kernel` of 3 or more dimensions is read in flax's layout (`arrays`).
nnx random-number state (keys and counters) is not a weight and is left out.
"""

from __future__ import annotations

import logging
import math
import operator
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from hteval.errors import InputError
from hteval.frameworks.arrays import FLAX_KERNEL, array_record, flax_kernel_layout
from hteval.frameworks.common import Ties, conv_record, from_spatial_first
from hteval.io.base import NamedTensor, SkippedTensor
from hteval.io.torch_reader import is_torch_tensor

logger = logging.getLogger(__name__)


def is_module(obj: object) -> bool:
    """True for a flax nnx Module or State, or an equinox Module; imports neither."""
    nnx, eqx = sys.modules.get("flax.nnx"), sys.modules.get("equinox")
    return ((nnx is not None and isinstance(obj, (nnx.Module, nnx.State)))
            or (eqx is not None and isinstance(obj, eqx.Module)))


def pytree_tensors(tree: Any) -> Iterator[NamedTensor | SkippedTensor]:
    """Each array leaf of the tree in JAX's flattening order; a leaf met again under another path (a shared nnx
    Variable, the same array twice) is skipped as tied."""
    ties = Ties()
    found = False
    for path, value in _array_leaves(tree):
        found = True
        name = _dotted(path)
        record = array_record(name, value, ties)
        if not isinstance(record, SkippedTensor):
            record = _layout(record, _owner(tree, path), _key_name(path[-1]) if path else None)
        yield record
    if not found:
        raise InputError(f"no arrays among the leaves of a {type(tree).__qualname__}")


def _array_leaves(tree: Any) -> Iterator[tuple[tuple, Any]]:
    import jax

    nnx = sys.modules.get("flax.nnx")
    is_variable = None if nnx is None else (lambda x: isinstance(x, nnx.Variable))
    leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_variable)[0]
    if nnx is not None and isinstance(tree, nnx.Module) and len(leaves) == 1 and leaves[0][1] is tree:
        # a module declared pytree=False is a leaf to JAX: its State holds the same variables by the same paths
        leaves = jax.tree_util.tree_flatten_with_path(nnx.state(tree), is_leaf=is_variable)[0]
    for path, leaf in leaves:
        if nnx is not None and isinstance(leaf, nnx.Variable):
            if isinstance(leaf, nnx.RngState):
                continue
            leaf = leaf.get_value()
        if isinstance(leaf, (np.ndarray, jax.Array)) or is_torch_tensor(leaf):
            yield path, leaf
        else:
            logger.debug("ignoring non-array leaf %s of type %s", _dotted(path), type(leaf).__name__)


def _layout(record: NamedTensor, owner: Any, leaf: Any) -> NamedTensor | SkippedTensor:
    nnx, eqx = sys.modules.get("flax.nnx"), sys.modules.get("equinox")
    kernel = record.array
    if leaf == "bias" and _is_instance(owner, (nnx, "LinearGeneral"), (eqx, "nn.Conv"), (eqx, "nn.ConvTranspose")):
        # a bias shaped for broadcasting ((heads, head_dim), (out, 1, 1)) is still a bias, not a matrix
        return record._replace(array=kernel.reshape(-1))
    if nnx is not None and leaf == FLAX_KERNEL:
        if isinstance(owner, nnx.Conv):
            return conv_record(record.name, from_spatial_first(kernel), record.dtype, owner.feature_group_count)
        if isinstance(owner, nnx.ConvTranspose):
            return record._replace(array=from_spatial_first(kernel, out_last=not owner.transpose_kernel))
        if isinstance(owner, nnx.LinearGeneral) and not owner.batch_axis:
            # a multi-head projection (in, heads, head_dim) is one in x (heads * head_dim) matrix
            n_in = math.prod(owner.in_features)
            return record._replace(array=kernel.reshape(n_in, kernel.size // n_in))
    if eqx is not None and leaf == "weight" and isinstance(owner, (eqx.nn.Conv, eqx.nn.ConvTranspose)):
        # equinox stores both, transposed convs included, as (out, in/groups, *spatial)
        return conv_record(record.name, kernel, record.dtype, owner.groups)
    return flax_kernel_layout(record, leaf)


def _is_instance(obj: Any, *classes: tuple[Any, str]) -> bool:
    """isinstance against classes given as (module or None, dotted name), leaving out modules not loaded."""
    loaded = tuple(operator.attrgetter(name)(module) for module, name in classes if module is not None)
    return bool(loaded) and isinstance(obj, loaded)


def _owner(tree: Any, path: tuple) -> Any:
    """The object holding the leaf at `path` (a module, a list, a dict), or None where the path cannot be
    followed (leaves of an nnx.State, custom pytree nodes)."""
    node = tree
    for key in path[:-1]:
        name = _key_name(key)
        try:
            is_attribute = isinstance(name, str) and not isinstance(node, Mapping) and hasattr(node, name)
            node = getattr(node, name) if is_attribute else node[name]
        except (KeyError, IndexError, TypeError):
            return None
    return node


def _key_name(key: Any) -> Any:
    for attribute in ("name", "key", "idx"):  # GetAttrKey, DictKey and FlattenedIndexKey, SequenceKey
        if hasattr(key, attribute):
            return getattr(key, attribute)
    return str(key)


def _dotted(path: tuple) -> str:
    return ".".join(str(_key_name(key)) for key in path)
