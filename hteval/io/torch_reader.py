"""PyTorch reader: .pt/.pth/.bin/.ckpt state dicts, loaded with `torch.load(weights_only=True)`.

torch is an optional dependency (`pip install 'hteval[torch]'`); it is imported only when such a file is read.
weights_only=True refuses arbitrary pickled objects, so reading a checkpoint cannot execute code.
"""

import logging
import pickle
import sys
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

from hteval.errors import InputError
from hteval.io.base import NamedTensor

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'hteval[torch]'"
# Training checkpoints (Lightning, many research repos) nest the state dict under one of these keys.
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module")
_LOAD_ERRORS = (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile)


def iter_tensors(path: Path) -> Iterator[NamedTensor]:
    """Yield the tensors of a torch state dict, nested mappings flattened to dotted names, in stored order."""
    torch = _import_torch(path)
    state = _unwrap(_load(torch, path))
    for name, tensor in _flatten(torch, state, prefix=""):
        name = name or path.stem  # a file holding one bare tensor
        yield NamedTensor(name, _numpy_of(tensor, path, name), str(tensor.dtype).removeprefix("torch."))


def is_torch_tensor(obj: object) -> bool:
    """True for a torch.Tensor; never imports torch (an object can only be one if torch is already loaded)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.Tensor)


def tensor_to_numpy(tensor: Any) -> np.ndarray:
    """A CPU numpy copy of a torch tensor, keeping bfloat16 and float8 exactly (numpy has no such dtypes)."""
    torch = sys.modules["torch"]
    tensor = tensor.detach().cpu()
    exotic = {torch.bfloat16: (torch.int16, ml_dtypes.bfloat16)}
    for name, ml_type in (("float8_e4m3fn", ml_dtypes.float8_e4m3fn), ("float8_e5m2", ml_dtypes.float8_e5m2)):
        if hasattr(torch, name):
            exotic[getattr(torch, name)] = (torch.uint8, ml_type)
    if tensor.dtype in exotic:
        carrier, ml_type = exotic[tensor.dtype]
        return tensor.view(carrier).numpy().view(ml_type)
    return tensor.numpy()


def _import_torch(path: Path) -> Any:
    try:
        import torch
    except ImportError as err:
        raise InputError(f"reading a PyTorch file needs torch, which is not installed: {INSTALL_HINT}",
                         source=str(path)) from err
    return torch


def _load(torch: Any, path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except _LOAD_ERRORS as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputError(f"cannot read PyTorch file: {message}", source=str(path)) from err


def _unwrap(obj: Any) -> Any:
    for key in _WRAPPER_KEYS:
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            logger.debug("reading the state dict nested under %r", key)
            return obj[key]
    return obj


def _flatten(torch: Any, obj: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    if isinstance(obj, torch.Tensor):
        yield prefix.removesuffix("."), obj
    elif isinstance(obj, Mapping):
        for key, value in obj.items():
            yield from _flatten(torch, value, f"{prefix}{key}.")
    else:
        logger.debug("ignoring non-tensor entry %r of type %s", prefix, type(obj).__name__)


def _numpy_of(tensor: Any, path: Path, name: str) -> np.ndarray:
    try:
        return tensor_to_numpy(tensor)
    except (TypeError, RuntimeError) as err:
        raise InputError(f"cannot convert tensor to numpy ({err})", source=str(path), layer=name) from err
