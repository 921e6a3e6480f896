"""One compilation per layer size: the fits of a whole-model run grouped by the program they compile.

A fit's compiled sampler depends on the model, gamma (the density's table), the number of eigenvalues and whether
any are censored; every other layer with the same four reuses it (`hteval.infer.layer_model`), and JAX's
persistent cache keeps it across runs. Grouping the fits by that key means each program is built once and then
stays hot, so a run's cost grows with its number of distinct shapes plus a few seconds per layer.

Measured and rejected on this 2-core CPU: vmapping the chains of all same-shape layers (each NUTS step then costs
the longest tree of the batch, which undoes the 2x throughput of the batched density), and compiling the next
groups in a background process (it competes for the second core that sampling and XLA already use, and saved
under 10%).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any


def program_key(rec, model: str) -> Hashable:
    """What a fit's compiled programs depend on (besides the sampler settings, which are one per run)."""
    return (model, float(rec.gamma), int(rec.n_eigs), bool(rec.n_censored))


def fit_order(tasks: Sequence[tuple[Any, str]]) -> list[tuple[Any, str]]:
    """(layer, model) tasks grouped by program_key, groups in order of first appearance, network order inside."""
    groups: dict[Hashable, list[tuple[Any, str]]] = {}
    for rec, model in tasks:
        groups.setdefault(program_key(rec, model), []).append((rec, model))
    return [task for group in groups.values() for task in group]
