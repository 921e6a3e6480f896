"""float64 for hteval's own JAX computations, scoped to its calls: the caller's global JAX setting is never changed,
so hteval runs in a Python where `jax_enable_x64` is off and leaves it off."""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Callable
from typing import Any


def float64():
    """A context in which JAX computes in float64 (JAX is imported), leaving the caller's global setting as it was."""
    import jax

    return contextlib.nullcontext() if jax.config.jax_enable_x64 else jax.enable_x64(True)


def float64_if_loaded():
    """float64() where JAX is already imported; nothing otherwise, so that numpy-only paths never import JAX (a
    module that computes in JAX has imported it by the time it is called)."""
    return float64() if "jax" in sys.modules else contextlib.nullcontext()


def in_float64(function: Callable) -> Callable:
    """`function` run inside float64_if_loaded()."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any):
        with float64_if_loaded():
            return function(*args, **kwargs)

    return wrapper


__all__ = ["float64", "float64_if_loaded", "in_float64"]
