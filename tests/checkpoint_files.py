"""Checkpoint files that several test modules write."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file


def write_shards(folder: Path, shards: dict[str, dict[str, np.ndarray]], *, index: bool = True) -> Path:
    """Safetensors shards (file name -> tensors) in `folder`, with the index that names each tensor's shard."""
    folder.mkdir(parents=True, exist_ok=True)
    for shard, tensors in shards.items():
        save_file(tensors, folder / shard)
    if index:
        weight_map = {name: shard for shard, tensors in shards.items() for name in tensors}
        (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return folder
