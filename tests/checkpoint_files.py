"""Checkpoint files that several test modules write."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

#: safetensors' dtype codes of the numpy dtypes the tests write
SAFETENSORS_CODES = {"float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16", "int64": "I64",
                     "int32": "I32", "bool": "BOOL", "uint8": "U8"}


def safetensors_bytes(tensors, *, key_order=None, metadata=None) -> bytes:
    """A safetensors file written by hand (no library's own checks or ordering): the (name, array) pairs' data in
    the given order, header keys in `key_order` (default: that order), `metadata` as __metadata__ when given."""
    entries, blobs, offset = {}, [], 0
    for name, array in tensors:
        raw = np.ascontiguousarray(array).tobytes()
        entries[name] = {"dtype": SAFETENSORS_CODES[array.dtype.name], "shape": list(array.shape),
                         "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    header = {} if metadata is None else {"__metadata__": metadata}
    header.update({name: entries[name] for name in key_order or entries})
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + b"".join(blobs)


def write_shards(folder: Path, shards: dict[str, dict[str, np.ndarray]], *, index: bool = True) -> Path:
    """Safetensors shards (file name -> tensors) in `folder`, with the index that names each tensor's shard."""
    folder.mkdir(parents=True, exist_ok=True)
    for shard, tensors in shards.items():
        save_file(tensors, folder / shard)
    if index:
        weight_map = {name: shard for shard, tensors in shards.items() for name in tensors}
        (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return folder
