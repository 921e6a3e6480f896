"""Many checkpoints of one training run, named by a directory, a glob pattern or a list file, each with its step.

A directory is a set of checkpoints when it holds several checkpoint files or checkpoint subdirectories (a
Hugging Face Trainer's `checkpoint-500/`); it stays ONE checkpoint when it is a sharded model: a shard index, or
.safetensors files whose tensor names do not overlap (shards split one model's tensors; checkpoints of one run
repeat them). A list file (.txt) names one checkpoint per line, relative to the file's folder; blank lines and
lines starting with # are ignored.

A checkpoint's step is the last number in its name (`step_1000.safetensors`, `checkpoint-500`); the set is in
step order when every name has one, else in name order.

A URL (`hteval.io.remote_path`) is one checkpoint; many checkpoints are named by local paths.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hteval.errors import InputError
from hteval.io import safetensors_reader
from hteval.io.dispatch import CHECKPOINT_SUFFIXES, SUPPORTED
from hteval.io.remote_path import is_url

LIST_SUFFIXES = (".txt", ".list")
_GLOB_CHARACTERS = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint of a set: `name` (unique in the set; the checkpoint column of the gathered table), its path,
    and its training step (None where its name has no number)."""

    name: str
    path: Path
    step: int | None


def is_checkpoint_set(spec: str | Path | Sequence[str | Path]) -> bool:
    """Whether `spec` names several checkpoints (a list of paths, a glob, a list file, a directory of them)."""
    if not isinstance(spec, (str, Path)):
        return len(spec) > 1
    if is_url(spec):
        return False
    path = Path(spec)
    if not path.exists():
        return bool(_GLOB_CHARACTERS.search(str(spec)))
    if path.is_file():
        return path.suffix.lower() in LIST_SUFFIXES
    return len(_directory_members(path)) > 1


def checkpoint_set(spec: str | Path | Sequence[str | Path]) -> list[Checkpoint]:
    """The checkpoints `spec` names, in step order (see the module docstring); InputError when it names none."""
    urls = [p for p in ([spec] if isinstance(spec, (str, Path)) else spec) if is_url(p)]
    if urls:
        raise InputError(f"many checkpoints are named by local paths; analyze a URL on its own: {', '.join(urls)}")
    if not isinstance(spec, (str, Path)):
        paths = [Path(p) for p in spec]
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            raise InputError(f"no such checkpoint(s): {', '.join(missing)}")
    else:
        path = Path(spec)
        if not path.exists():
            paths = [Path(p) for p in sorted(glob.glob(str(spec)))]
            if not paths:
                raise InputError("no such file or directory, and no checkpoint matches it as a glob pattern",
                                 source=str(spec))
        elif path.is_file() and path.suffix.lower() in LIST_SUFFIXES:
            paths = _read_list(path)
        elif path.is_dir():
            paths = _directory_members(path)
        else:
            paths = [path]
    root = Path(os.path.commonpath([p.resolve().parent for p in paths]))  # names relative to their shared folder
    return _ordered([Checkpoint(name, p, _step(name)) for name, p in zip(_names(paths, root), paths, strict=True)])


def _read_list(path: Path) -> list[Path]:
    lines = [line.strip() for line in path.read_text().splitlines()]
    paths = [(path.parent / line) for line in lines if line and not line.startswith("#")]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise InputError(f"listed checkpoint(s) not found: {', '.join(missing)}", source=str(path))
    if not paths:
        raise InputError("the list file names no checkpoint", source=str(path))
    return paths


def _directory_members(path: Path) -> list[Path]:
    """The checkpoints a directory holds: [the directory] when it is one (sharded) checkpoint."""
    if safetensors_reader.find_index(path) is not None:
        return [path]
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in CHECKPOINT_SUFFIXES)
    folders = sorted(p for p in path.iterdir() if p.is_dir() and _holds_checkpoint(p))
    shards = [p for p in files if p.suffix.lower() == ".safetensors"]
    if len(shards) > 1 and not _repeat_tensor_names(shards[:2]):
        return [path]  # the shards of one model
    members = files + folders
    if not members:
        raise InputError(f"directory holds no checkpoint ({SUPPORTED}, or folders of them)", source=str(path))
    return members


def _holds_checkpoint(folder: Path) -> bool:
    return any(p.suffix.lower() in CHECKPOINT_SUFFIXES for p in folder.iterdir() if p.is_file())


def _repeat_tensor_names(files: list[Path]) -> bool:
    first, second = ({entry.name for entry in safetensors_reader.read_header(f)} for f in files)
    return bool(first & second)


def _names(paths: list[Path], root: Path) -> list[str]:
    def label(p: Path, keep_suffix: bool) -> str:
        text = p.resolve().relative_to(root.resolve()).as_posix()
        return text if keep_suffix or p.is_dir() else text.removesuffix(p.suffix)

    short = [label(p, keep_suffix=False) for p in paths]
    if len(set(short)) == len(short):
        return short
    full = [label(p, keep_suffix=True) for p in paths]
    if len(set(full)) != len(full):
        raise InputError(f"a checkpoint is named twice: {', '.join(sorted({n for n in full if full.count(n) > 1}))}")
    return full


def _step(name: str) -> int | None:
    numbers = re.findall(r"\d+", Path(name).name)
    return int(numbers[-1]) if numbers else None


def _ordered(checkpoints: list[Checkpoint]) -> list[Checkpoint]:
    if all(c.step is not None for c in checkpoints):
        return sorted(checkpoints, key=lambda c: (c.step, c.name))
    return sorted(checkpoints, key=lambda c: c.name)


__all__ = ["Checkpoint", "checkpoint_set", "is_checkpoint_set"]
