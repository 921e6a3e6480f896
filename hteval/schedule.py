"""One compilation per layer size: the fits of a whole-model run grouped by the program they compile.

A fit's compiled sampler depends on the model, gamma (the density's table), the number of eigenvalues and whether
any are censored; every other layer with the same four reuses it (`hteval.infer.layer_model`), and JAX's
persistent cache keeps it across runs. Grouping the fits by that key means each program is built once and then
stays hot, so a run's cost grows with its number of distinct shapes plus a few seconds per layer.

The groups are also the unit of parallel work (`hteval.parallel`): `partition` deals them out to worker
processes so that no program is compiled twice and the workers' loads are even.

Measured and rejected on this 2-core CPU: vmapping the chains of all same-shape layers (each NUTS step then costs
the longest tree of the batch, which undoes the 2x throughput of the batched density; on a GPU it is the fast
path, `hteval.batched`), and compiling the next groups in a background process while the main one samples
(under 10%: it only overlaps compilation).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any


def program_key(rec, model: str) -> Hashable:
    """What a fit's compiled programs depend on (besides the sampler settings, which are one per run); a joint
    likelihood (htmp-exact) only on the bucket of its size (`static_bound`) and its number of conv slices, not on
    the eigenvalue count."""
    from hteval.infer import static_arguments
    from hteval.models import MODELS

    bound = static_arguments(MODELS[model], rec)
    if bound:  # per-slice statistics: one array entry per conv slice
        return (model, float(rec.gamma), bool(rec.n_censored), bound, int(rec.n_slices))
    return (model, float(rec.gamma), int(rec.n_eigs), bool(rec.n_censored))


#: rough cost on one CPU core of building a program (density table and XLA compilation) and of one fit with it;
#: only their ratio matters, for balancing the workers
COMPILE_SECONDS, FIT_SECONDS = 20.0, 2.5


def partition(tasks: Sequence[tuple[Any, str]], workers: int) -> list[list[tuple[Any, str]]]:
    """(layer, model) tasks grouped by program_key, whole groups dealt to at most `workers` bins, largest first to
    the least loaded (LPT); empty bins dropped. Inside a bin the groups keep their order of first appearance and
    the tasks network order, so a worker builds each of its programs once (one bin: all tasks, grouped)."""
    groups: dict[Hashable, list[tuple[Any, str]]] = {}
    for rec, model in tasks:
        groups.setdefault(program_key(rec, model), []).append((rec, model))
    ordered = list(groups.values())
    bins: list[list[int]] = [[] for _ in range(max(workers, 1))]
    load = [0.0] * len(bins)
    for g in sorted(range(len(ordered)), key=lambda g: len(ordered[g]), reverse=True):  # stable: ties in order
        i = load.index(min(load))
        bins[i].append(g)
        load[i] += COMPILE_SECONDS + FIT_SECONDS * len(ordered[g])
    return [[task for g in sorted(b) for task in ordered[g]] for b in bins if b]
