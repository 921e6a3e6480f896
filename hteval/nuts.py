"""NUTS chains that share one compiled program, collected into an ArviZ DataTree.

numpyro's MCMC with chain_method="sequential" compiles its sampling loop again for every chain (a fresh closure
each run), which for the HTMP likelihood costs ~15 s a chain on a CPU; "vectorized" compiles once but moves the
chains in lockstep, each iteration as long as the longest tree. Here the NUTS kernel is advanced in fixed-length
chunks by one jitted scan whose model data are arguments, so every chain (and the progress bar between chunks)
reuses the same executable.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.infer import NUTS
from numpyro.infer.util import log_likelihood

from hteval.datatree import draws_datatree

#: iterations per compiled chunk: the progress bar's granularity; a chain runs at most CHUNK - 1 spare iterations
CHUNK = 50

#: Linux refuses new memory mappings past vm.max_map_count (65530 by default), and XLA's CPU compiler then fails
#: with "Cannot allocate memory"; a compiled sampler holds ~2000 mappings, so a process that fits many layer
#: shapes drops its compiled programs when it nears the limit (they are rebuilt on demand).
_MAP_BUDGET = 0.6

#: numpyro's default acceptance target; the ensemble models need no other
TARGET_ACCEPT = 0.8

#: per-iteration NUTS statistics, under ArviZ's sample_stats names
_STATS = ("diverging", "energy", "lp", "n_steps", "acceptance_rate", "step_size")


@functools.lru_cache(maxsize=32)
def _kernel_and_step(model, warmup: int, target_accept: float, dense_mass: bool):
    """One NUTS kernel with its jitted initialisation and chunk per (model function, warm-up length): a later
    layer whose data have the same shapes reuses the compiled programs (the data are arguments; the adaptation
    schedule is static). Initialising eagerly instead would compile the likelihood op by op, ~10 s a chain."""
    kernel = NUTS(model, dense_mass=dense_mass, target_accept_prob=target_accept)
    init = jax.jit(lambda key, args, kwargs: kernel.init(key, warmup, model_args=args, model_kwargs=kwargs))
    return kernel, init, _advance(kernel)


@functools.lru_cache(maxsize=32)
def _draw_functions(kernel: NUTS, model):
    """Jitted (constrain, pointwise log-likelihood) of a batch of draws, reused across layers of one shape."""
    constrain = jax.jit(lambda z, args, kwargs: jax.vmap(kernel.postprocess_fn(args, kwargs))(z))
    loglik = jax.jit(lambda s, args, kwargs: log_likelihood(model, s, *args, batch_ndims=1, **kwargs)["obs"])
    return constrain, loglik


def release_compiled_programs_near_map_limit() -> bool:
    """Drop JAX's compiled programs if this process uses over _MAP_BUDGET of its memory-mapping limit."""
    try:
        with open("/proc/sys/vm/max_map_count") as f:
            limit = int(f.read())
        with open("/proc/self/maps") as f:
            count = sum(1 for _ in f)
    except (OSError, ValueError):
        return False  # not Linux: no such limit to guard
    if count <= _MAP_BUDGET * limit:
        return False
    jax.clear_caches()
    _kernel_and_step.cache_clear()
    _draw_functions.cache_clear()
    return True


def _advance(kernel: NUTS):
    def run(state, args, kwargs):
        def body(s, _):
            s = kernel.sample(s, args, kwargs)
            stats = (s.diverging, s.energy, -s.potential_energy, s.num_steps, s.accept_prob, s.adapt_state.step_size)
            return s, (s.z, dict(zip(_STATS, stats, strict=True)))

        return jax.lax.scan(body, state, None, length=CHUNK)

    return jax.jit(run)


def run_chains(model, args: tuple, kwargs: dict[str, Any], *, key, chains: int, warmup: int, draws: int,
               progress_bar: bool = False,
               target_accept: float = TARGET_ACCEPT,
               dense_mass: bool = False) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], NUTS, list]:
    """Run `chains` NUTS chains one after another: (unconstrained draws, sample stats, each (chain, draw); kernel;
    each chain's final state, from which `continue_chains` draws more)."""
    release_compiled_programs_near_map_limit()
    kernel, init, advance = _kernel_and_step(model, warmup, target_accept, dense_mass)
    states = [init(chain_key, args, kwargs) for chain_key in jax.random.split(key, chains)]
    z, stats, states = _advance_all(advance, states, args, kwargs, skip=warmup, keep=draws, progress_bar=progress_bar)
    return z, stats, kernel, states


def continue_chains(model, args: tuple, kwargs: dict[str, Any], states: list, *, warmup: int, draws: int,
                    progress_bar: bool = False, target_accept: float = TARGET_ACCEPT,
                    dense_mass: bool = False) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], list]:
    """`draws` more draws per chain from the states `run_chains` (same settings) returned, with the step size and
    mass matrix its warm-up adapted (adaptation ends with the warm-up) and the same compiled program."""
    _, _, advance = _kernel_and_step(model, warmup, target_accept, dense_mass)
    return _advance_all(advance, states, args, kwargs, skip=0, keep=draws, progress_bar=progress_bar)


def _advance_all(advance, states, args, kwargs, *, skip: int, keep: int, progress_bar: bool):
    n_chunks = math.ceil((skip + keep) / CHUNK)
    bar = None
    if progress_bar:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(states) * n_chunks * CHUNK, unit="it", desc="NUTS")
    z_chains, stat_chains, finals = [], [], []
    for state in states:
        pieces = []
        for _ in range(n_chunks):
            state, collected = advance(state, args, kwargs)
            pieces.append(jax.device_get(collected))
            if bar is not None:
                bar.update(CHUNK)
                bar.set_postfix(chain=len(z_chains), step_size=f"{float(state.adapt_state.step_size):.3g}")
        z, stats = jax.tree.map(lambda *p: np.concatenate(p)[skip:skip + keep], *pieces)
        z_chains.append(z)
        stat_chains.append(stats)
        finals.append(state)
    if bar is not None:
        bar.close()
    stack = lambda *c: np.stack(c)  # noqa: E731
    return jax.tree.map(stack, *z_chains), jax.tree.map(stack, *stat_chains), finals


def to_datatree(model, args: tuple, kwargs: dict[str, Any], kernel: NUTS, z: dict[str, np.ndarray],
                stats: dict[str, np.ndarray], *, observed: np.ndarray, attrs: dict[str, Any],
                with_log_likelihood: bool = True):
    """posterior (constrained and deterministic sites), log_likelihood of the observed eigenvalues, sample_stats
    and observed_data (`draws_datatree`) from NUTS's unconstrained draws.

    Without with_log_likelihood (whole-model runs, which compute no LOO) the log_likelihood group is left out,
    and so is its compilation.
    """
    chains, draws = next(iter(z.values())).shape[:2]
    flat = {k: jnp.asarray(v.reshape((chains * draws,) + v.shape[2:])) for k, v in z.items()}
    constrain, loglik = _draw_functions(kernel, model)
    posterior = constrain(flat, args, kwargs)
    loglik = loglik(posterior, args, kwargs) if with_log_likelihood else None
    unflat = lambda v: np.asarray(v).reshape((chains, draws) + np.shape(v)[1:])  # noqa: E731
    return draws_datatree({k: unflat(v) for k, v in posterior.items()}, dict(stats), observed=observed,
                          attrs=attrs, log_likelihood=None if loglik is None else unflat(loglik))
