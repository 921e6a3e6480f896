"""How the density functions run: one compiled program per function, aspect ratio and size bucket.

Every public density function (`htmp`, `inverse_htmp`, `mp`, `correlated_mp`) is a thin Python function over a
jitted program. Called eagerly (numbers or concrete arrays, in a loop over parameters: a maximum-likelihood fit, a
grid, a plot, KS distances), it broadcasts its array arguments, flattens them and pads them to the next size
bucket, runs the program and cuts the result back to the caller's shape. The program therefore compiles once per
bucket, and afterwards every call with new parameter values runs at compiled speed: nothing is compiled or
retained per call.

Size buckets: the flattened length n runs as the next power of two >= max(n, MIN_BUCKET) (`bucket_size`), so a
caller using lengths up to 2^k compiles at most k - 5 programs per function (per aspect ratio for the HTMP family,
whose gamma is a static argument that selects its precomputed table), and a program does at most twice the work of
an exact-length one. Padding repeats the last point, so it never leads a program into branches (far tails, closed
forms) that the caller's points do not need.

Inside the caller's own transformation (any argument a tracer: `jax.jit`, `jax.grad`, `jax.vmap`, a numpyro
model run by NUTS) the shapes are the caller's, fixed for that trace: the program is called as it is, without
padding, and becomes part of the caller's program.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax
import numpy as np

#: the smallest bucket: scalars and short arrays share one program
MIN_BUCKET = 64


def bucket_size(n: int) -> int:
    """The length a flattened input of n points is padded to: the next power of two >= max(n, MIN_BUCKET)."""
    return max(MIN_BUCKET, 1 << (max(int(n), 1) - 1).bit_length())


def _padded(value: np.ndarray, shape: tuple[int, ...], size: int) -> np.ndarray:
    flat = np.broadcast_to(value, shape).ravel()
    fill = flat[-1] if flat.size else 1.0
    return np.concatenate([flat, np.full(size - flat.size, fill, dtype=flat.dtype)])


def elementwise(program: Callable, arrays: Sequence, *, points: int = 1, **static) -> jax.Array:
    """program(*arrays, **static) for an elementwise program, run on size buckets when called eagerly.

    The first `points` arrays are always flattened and padded (the points: x, or q for a quantile); any other
    array is padded too when it is not a scalar (per-point parameters broadcast against the points), while scalar
    parameters stay scalars, so that the program shares their per-call work (node values of the HTMP table,
    the Silverstein table of correlated MP) between all points. The result has the broadcast shape of the arrays.
    """
    if any(isinstance(a, jax.core.Tracer) for a in arrays):
        return program(*arrays, **static)
    values = [np.asarray(a, dtype=np.float64) for a in arrays]
    shape = np.broadcast_shapes(*(v.shape for v in values))
    count = math.prod(shape)
    size = bucket_size(count)
    padded = [_padded(v, shape, size) if i < points or v.ndim else v for i, v in enumerate(values)]
    out = program(*padded, **static)
    if shape == (size,):
        return out
    # cut on the host and put back with device_put: a device-side slice, and jnp.asarray of the cut, would each
    # compile a small program per length
    return jax.device_put(np.asarray(out)[:count].reshape(shape))


__all__ = ["MIN_BUCKET", "bucket_size", "elementwise"]
