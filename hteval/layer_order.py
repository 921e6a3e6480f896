"""Layers in the order a reader follows a network: embeddings, then the blocks by number, then the output head.

Checkpoint files list tensors in whatever order their writer chose (safetensors sorts them as strings, which
puts `layer.10` before `layer.2`), and a forest plot or table in that order is hard to read. The order here is
read from the names alone, so it is the same for every run, every file format and every order of the input.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

#: name components that hold embeddings (token, position, token-type; GPT-2's wte/wpe, T5/BART's shared)
EMBEDDING_COMPONENTS = frozenset({"wte", "wpe", "shared", "embed_in"})
#: components that map the last hidden state to outputs, wherever they sit before the blocks' numbers
HEAD_COMPONENTS = frozenset({"lm_head", "embed_out", "unembed"})
#: output heads recognised only as the first component: as inner names (`attention.output.dense`,
#: `classifier` inside a block) they are ordinary layers
TOP_LEVEL_HEADS = frozenset({"classifier", "score", "output", "head", "heads", "cls", "fc", "qa_outputs"})

_DIGITS = re.compile(r"(\d+)")


def network_order(layer_names: Iterable[str]) -> list[str]:
    """Layer names in network order, each once: embeddings first, then the others (an encoder's before the rest,
    so encoder-decoder models read encoder, decoder) in natural order, digit runs compared as numbers
    (`layers.2.mlp` before `layers.10.attn`), output heads last. Ties break on the name itself, so the result
    depends only on the set of names."""
    unique = dict.fromkeys(str(name) for name in layer_names)
    return sorted(unique, key=_sort_key)


def _sort_key(name: str) -> tuple:
    return _group(name), _stage(name), natural_key(name), name


def natural_key(name: str) -> tuple:
    """`name` split into text and numbers, alternately (text first), so digit runs compare as integers."""
    parts = _DIGITS.split(name)
    return tuple(int(part) if i % 2 else part for i, part in enumerate(parts))


def _prefix(name: str) -> list[str]:
    """The components before the first numbered one: where a module name says what it is for the whole network.
    An `embed` inside `layers.3` belongs to block 3 and stays there."""
    components = name.split(".")
    for i, component in enumerate(components):
        if component.isdigit():
            return components[:i]
    return components


def _group(name: str) -> int:
    """0: embedding, 1: body, 2: output head."""
    prefix = _prefix(name)
    if (prefix and prefix[0] in TOP_LEVEL_HEADS) or any(c in HEAD_COMPONENTS or c.startswith("unembed")
                                                         for c in prefix):
        return 2
    if any(c in EMBEDDING_COMPONENTS or "embed" in c for c in prefix):
        return 0
    return 1


def _stage(name: str) -> int:
    """0 for an encoder's layers, 1 for the rest: `decoder` sorts before `encoder` as text, not in the network."""
    return 0 if "encoder" in _prefix(name) else 1
