"""The accelerator path: NUTS for many same-shape layers at once, every (layer, chain) one lane of a vmapped program.

On a CPU the sequential path (`hteval.infer.fit`, one chain after another) is faster: vmapped lanes move in
lockstep, so each NUTS iteration costs the longest tree of the batch (`hteval.schedule`). On a GPU one lane uses
a sliver of the device and a kernel launch costs more than the arithmetic of a small layer, so batching the lanes
is how the device gets work (`benchmarks/bench_gpu.py` measures both).

Each lane starts from the same key as the sequential fit's chain (`layer_key` of the layer, split per chain)
and runs the same kernel on the same data, so a batched fit draws what the sequential one draws, up to floating
point reassociation.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from hteval import names
from hteval.infer import (
    FitResult,
    assemble,
    fit,
    fit_result,
    float64,
    layer_key,
    layer_model,
    model_data,
    model_input,
    model_module,
)
from hteval.nuts import CHUNK, TARGET_ACCEPT, _kernel_and_step
from hteval.schedule import program_key
from hteval.spectra import LayerSpectrum


def fit_batched(layers: Sequence[LayerSpectrum], model: str = names.DEFAULT_MODEL, *, prob: float = 0.9,
                seed: int = 0, chains: int = 4, draws: int = 1000, warmup: int = 1000,
                sampler: str = "auto") -> list[FitResult]:
    """Fit `model` to every layer by NUTS, each group of layers that share a compiled program in one vmapped run.

    Returns one FitResult per layer, in the given order, judged by the same convergence rules as `fit`. There is
    no run-on (max_draws): lanes of one batch share their iteration count. A model drawn exactly (sampler "auto"
    or "exact" with `posterior_draws`) has no chains to batch: its layers are fitted one by one.
    """
    module = model_module(model)
    if sampler != "nuts" and hasattr(module, "posterior_draws"):
        return [fit(rec, model=model, prob=prob, seed=seed, chains=chains, draws=draws, log_likelihood=False,
                    sampler=sampler) for rec in layers]
    with float64():
        return _fit_groups(module, model, layers, prob=prob, seed=seed, chains=chains, draws=draws, warmup=warmup)


def _fit_groups(module, model, layers, *, prob, seed, chains, draws, warmup) -> list[FitResult]:
    groups: dict = {}
    for i, rec in enumerate(layers):
        groups.setdefault(program_key(rec, model), []).append(i)
    results: list[FitResult | None] = [None] * len(layers)
    for indices in groups.values():
        batch = [layers[i] for i in indices]
        for i, result in zip(indices, _fit_group(module, model, batch, prob=prob, seed=seed, chains=chains,
                                                 draws=draws, warmup=warmup), strict=True):
            results[i] = result
    return results  # type: ignore[return-value]


def _fit_group(module, model, batch, *, prob, seed, chains, draws, warmup):
    dense = getattr(module, "DENSE_MASS", False)
    model_fn = layer_model(module, batch[0])
    kernel, _, advance = _kernel_and_step(model_fn, warmup, TARGET_ACCEPT, dense)
    args = [(model_input(module, rec),) for rec in batch]
    kwargs = [model_data(rec, module) for rec in batch]
    lanes = len(batch) * chains
    keys = jnp.stack([k for rec in batch for k in jax.random.split(layer_key(seed, rec.name), chains)])
    lane_args = _stack([a for a in args for _ in range(chains)])
    lane_kwargs = _stack([kw for kw in kwargs for _ in range(chains)])
    init, step = _batched_programs(kernel, advance, warmup)
    state = init(keys, lane_args, lane_kwargs)
    pieces = []
    for _ in range(math.ceil((warmup + draws) / CHUNK)):
        state, collected = step(state, lane_args, lane_kwargs)
        pieces.append(jax.device_get(collected))
    # (lane, iteration) -> per layer (chain, draw) after the warm-up
    z, stats = jax.tree.map(lambda *p: np.concatenate(p, axis=1)[:, warmup:warmup + draws], *pieces)
    results = []
    for j, rec in enumerate(batch):
        lane = slice(j * chains, (j + 1) * chains)
        zj, sj = (jax.tree.map(lambda a, lane=lane: a[lane], tree) for tree in (z, stats))
        data, summary, diagnostics = assemble(module, model, rec, model_fn, args[j], kwargs[j], kernel, zj, sj,
                                              prob=prob, seed=seed, log_likelihood=False)
        settings = {"seed": seed, "chains": chains, "draws": draws, "draws_requested": draws, "max_draws": None,
                    "warmup": warmup, "sampler": "NUTS",
                    "chain_method": f"vectorized over {lanes} (layer, chain) lanes, one compiled program",
                    "backend": jax.default_backend()}
        results.append(fit_result(module, model, rec, data, summary, diagnostics, settings, prob))
    return results


@functools.lru_cache(maxsize=32)
def _batched_programs(kernel, advance, warmup: int):
    init = jax.jit(jax.vmap(lambda key, args, kwargs: kernel.init(key, warmup, model_args=args,
                                                                  model_kwargs=kwargs)))
    return init, jax.jit(jax.vmap(advance))


def _stack(trees):
    return jax.tree.map(lambda *leaves: jnp.stack([jnp.asarray(x) for x in leaves]), *trees)
