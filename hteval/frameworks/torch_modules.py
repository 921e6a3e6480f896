"""A torch nn.Module (a Hugging Face transformers model, a Lightning module) -> named tensors, named and ordered
as in its state_dict().

torch is never imported here: an object can only be a torch object if torch is already loaded, so every function
takes it from sys.modules. Conv weights are read as their module class says: Conv (out, in/groups, *k) as stored,
ConvTranspose (in, out/groups, *k) as the matrices from its input to its output channels; grouped ones are split
into their groups (`common.conv_record`). Everything else is handed over as stored, a fused projection (GPT-2's
c_attn, nn.MultiheadAttention's in_proj_weight) as one matrix.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Hashable, Iterator
from typing import Any

from hteval.errors import InputError
from hteval.frameworks.common import Ties, conv_record, from_torch_transposed
from hteval.io.base import NamedTensor, SkippedTensor
from hteval.io.torch_reader import tensor_to_numpy

logger = logging.getLogger(__name__)

#: where a quantized Linear keeps its (weight, bias) pair in a state dict
_PACKED = "_packed_params._packed_params"


def is_module(obj: object) -> bool:
    """True for a torch nn.Module; never imports torch."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.nn.Module)


def module_tensors(module: Any) -> Iterator[NamedTensor | SkippedTensor]:
    """Each entry of the module's state_dict (parameters and persistent buffers), in its order."""
    convs = _conv_modules(module)
    ties = Ties()
    for key, value in module.state_dict(keep_vars=True).items():
        for name, tensor in _tensors_of(key, value):
            record = tensor_record(name, tensor, ties)
            conv = convs.get(name)
            yield record if conv is None or isinstance(record, SkippedTensor) else _conv_layout(record, conv)


def tensor_record(name: str, tensor: Any, ties: Ties) -> NamedTensor | SkippedTensor:
    """A torch tensor as a host array, wherever it lives: copied from a GPU, dequantized if quantized; skipped
    with the reason if it is a second name of a tensor already met, or on the meta device (no values)."""
    shape, dtype = tuple(int(d) for d in tensor.shape), str(tensor.dtype).removeprefix("torch.")
    tied = ties.skipped(_storage_key(tensor), tensor, name, shape, dtype)
    if tied is not None:
        return tied
    if tensor.is_meta:
        return SkippedTensor(name, shape, dtype, "on the meta device: no values to read (load the weights first)")
    if tensor.is_quantized:
        tensor = tensor.dequantize()
    try:
        return NamedTensor(name, tensor_to_numpy(tensor), dtype)
    except (TypeError, RuntimeError) as err:
        raise InputError(f"cannot copy {type(tensor).__qualname__} to a numpy array ({err})", layer=name) from err


def _storage_key(tensor: Any) -> Hashable | None:
    """Where the tensor's values live: two names with one key are one tensor (tied weights)."""
    if tensor.is_meta:
        # no storage to compare: only the very same tensor object (a tied Parameter) counts as tied
        return ("object", id(tensor))
    if tensor.numel() == 0:
        return None
    try:
        return ("storage", str(tensor.device), tensor.data_ptr(), tuple(tensor.shape), tuple(tensor.stride()),
                str(tensor.dtype))
    except RuntimeError:  # tensor subclasses without a data pointer
        return ("object", id(tensor))


def _tensors_of(key: str, value: Any) -> Iterator[tuple[str, Any]]:
    torch = sys.modules["torch"]
    if isinstance(value, torch.Tensor):
        yield key, value
    elif key.endswith(_PACKED) and isinstance(value, tuple):
        prefix = key.removesuffix(_PACKED)
        for part, tensor in zip(("weight", "bias"), value, strict=False):
            if isinstance(tensor, torch.Tensor):
                yield prefix + part, tensor
    else:
        logger.debug("ignoring non-tensor state %r of type %s", key, type(value).__name__)


def _conv_modules(module: Any) -> dict[str, Any]:
    """State-dict name of each conv weight -> its module (a module reached by several paths under each)."""
    conv_types = _conv_types()
    return {f"{prefix}.weight" if prefix else "weight": sub
            for prefix, sub in module.named_modules(remove_duplicate=False) if isinstance(sub, conv_types)}


def _conv_types() -> tuple[type, ...]:
    torch = sys.modules["torch"]
    names = [f"Conv{d}d" for d in (1, 2, 3)] + [f"ConvTranspose{d}d" for d in (1, 2, 3)]
    # quantized convs keep the float layouts; their package is loaded with torch, checked in case a build lacks it
    quantized = sys.modules.get("torch.ao.nn.quantized")
    return tuple(getattr(package, n) for package in (torch.nn, quantized) if package is not None
                 for n in names if hasattr(package, n))


def _conv_layout(record: NamedTensor, conv: Any) -> NamedTensor | SkippedTensor:
    kernel = record.array
    if conv.transposed:
        kernel = from_torch_transposed(kernel, conv.groups)
    return conv_record(record.name, kernel, record.dtype, conv.groups)
