"""The correlated Marchenko-Pastur law's root finding: what its elementwise functions cost, and how close the node
table's chained starts are to the roots.

Run: python benchmarks/correlated_roots.py

Prints (1) the time of 10 passes of log, atan2 and atan over 680 x 41 values in one compiled program (the sums at
each Newton step take a logarithm and an argument per point and cell endpoint: XLA's CPU atan2 is not vectorised,
hence `_angle`), and (2) for each (gamma, nu) the largest relative distance from the root of the node starts
(`_node_starts`: every 8th node solved from the start table, the rest interpolated) and of the roots after
_REFINE_STEPS Newton steps from them, the root being 12 steps from the start table.
"""

from __future__ import annotations

import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from hteval.densities import correlated_mp as cmp  # noqa: E402


def _median_ms(f, *args, repeats=50):
    jax.block_until_ready(f(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(f(*args))
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def elementwise_costs() -> None:
    rng = np.random.default_rng(0)
    a, b = jnp.asarray(rng.random((680, 41)) + 0.1), jnp.asarray(rng.random((680, 41)) - 0.5)

    def passes(op):
        body = lambda i, acc: acc + 1e-9 * jnp.sum(op(a + 1e-9 * acc[:, None], b), axis=-1)  # noqa: E731
        return jax.jit(lambda: jax.lax.fori_loop(0, 10, body, jnp.zeros(a.shape[0])))

    ops = (("log", lambda x, y: jnp.log(x)), ("atan2", jnp.arctan2), ("atan", lambda x, y: jnp.arctan(x / y)))
    for name, op in ops:
        print(f"{name:6s} 10 passes over 680 x 41: {_median_ms(passes(op)):.2f} ms")


def start_errors() -> None:
    @jax.jit
    def errors(gamma, nu, m):
        gamma, cells, (table, kinks), edges = cmp._prepare(gamma, nu, m, kinks=True)
        t = cmp._node_positions(cells, table, kinks)
        zeta = jnp.exp(t + 1j * cmp._THETA)
        root = cmp._root(zeta, cmp._start(jnp.exp(t), table, cmp._THETA, edges), gamma, cells, 12)
        start = cmp._node_starts(t, gamma, cells, table, edges)
        refined = cmp._root(zeta, start, gamma, cells, cmp._REFINE_STEPS)
        return (jnp.max(jnp.abs(start - root) / jnp.abs(root)), jnp.max(jnp.abs(refined - root) / jnp.abs(root)))

    print("gamma   nu     m  start error  after refining")
    for gamma in (0.05, 0.25, 0.5, 1.0):
        for nu, m in ((0.0, 1000.0), (0.05, 1000.0), (0.5, 1000.0), (1.0, 384.0), (2.0, 50.0)):
            start, refined = (float(v) for v in errors(gamma, nu, m))
            print(f"{gamma:5.2f} {nu:4.2f} {m:5.0f}  {start:11.1e}  {refined:14.1e}")


if __name__ == "__main__":
    print(f"device: {jax.devices()[0].platform}, JAX {jax.__version__}")
    elementwise_costs()
    start_errors()
