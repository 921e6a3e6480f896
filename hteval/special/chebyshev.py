"""Piecewise Chebyshev interpolation in jax.numpy: node values in, values anywhere on the pieces out."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def chebyshev_nodes(n: int) -> np.ndarray:
    """Chebyshev points of the first kind on [-1, 1] (no endpoints: the pieces meet at the bulk edges, where a
    contour would sit on a degenerate saddle)."""
    return np.cos(np.pi * (np.arange(n) + 0.5) / n)


def coefficient_matrix(n: int) -> np.ndarray:
    """Matrix taking values at chebyshev_nodes(n) to Chebyshev coefficients (a discrete cosine transform)."""
    k = np.arange(n)[:, None]
    j = np.arange(n)[None, :]
    mat = 2.0 / n * np.cos(np.pi * k * (j + 0.5) / n)
    mat[0] /= 2
    return mat


def basis(x, n: int, *, derivative: bool = False):
    """T_0(x) .. T_{n-1}(x) stacked on a last axis (and, with derivative, T_k'(x) = k U_{k-1}(x) too)."""
    t = [jnp.ones_like(x), x]
    for _ in range(2, n):
        t.append(2 * x * t[-1] - t[-2])
    values = jnp.stack(t[:n], axis=-1)
    if not derivative:
        return values
    u = [jnp.ones_like(x), 2 * x]
    for _ in range(2, n - 1):
        u.append(2 * x * u[-1] - u[-2])
    d = [jnp.zeros_like(x)] + [k * u[k - 1] for k in range(1, n)]
    return values, jnp.stack(d, axis=-1)


def clenshaw_scalar(coef, x):
    """sum_k coef[k] T_k(x) for one scalar x and coefficient rows coef of shape (n, ...): a vector per order.

    Unrolled rather than scanned: a scan's gradient compiles slowly, and n is only 20."""
    b1 = b2 = jnp.zeros_like(coef[0])
    for k in range(coef.shape[0] - 1, 0, -1):
        b1, b2 = coef[k] + 2 * x * b1 - b2, b1
    return coef[0] + x * b1 - b2


def clenshaw_rows(coef, x):
    """sum_k coef[i, k] T_k(x[i]) for coefficient rows coef (P, n) and points x (P,): one row per point (unrolled:
    n is a table's fixed piece size)."""
    b1 = b2 = jnp.zeros_like(x)
    for k in range(coef.shape[1] - 1, 0, -1):
        b1, b2 = coef[:, k] + 2 * x * b1 - b2, b1
    return coef[:, 0] + x * b1 - b2


def derivative_matrix(n: int) -> np.ndarray:
    """Matrix D (n, n) taking the coefficients c of a series to those of its derivative in x: D @ c."""
    out = np.zeros((n, n))
    for k in range(1, n):
        unit = np.zeros(n)
        unit[k] = 1.0
        d = np.polynomial.chebyshev.chebder(unit)
        out[:d.size, k] = d
    return out


def clenshaw_at(coef, piece, x):
    """sum_k coef[piece, k] T_k(x) per point, for coefficient rows coef (P, n) and piece indices and points x of
    one shape.

    The coefficients are gathered order by order: the table stays in cache, while a gathered (points, n) block of
    rows costs over ten times as much memory traffic at 1e5 points."""
    b1 = b2 = jnp.zeros_like(x)
    for k in range(coef.shape[1] - 1, 0, -1):
        b1, b2 = coef[piece, k] + 2 * x * b1 - b2, b1
    return coef[piece, 0] + x * b1 - b2

