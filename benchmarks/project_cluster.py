"""Projected time of `hteval analyze --engine dask` on a 70B-parameter Llama-style checkpoint, from measured figures.

Run: .venv/bin/python benchmarks/project_cluster.py --svd FIGURES.json [--workers 8,64,512] [--bandwidth-gbs 1]

FIGURES.json is benchmarks/bench_svd_sizes.py's output with the shapes 4096x4096, 8192x8192 and 8192x28672 and the
client's fit of an 8192-eigenvalue spectrum. The checkpoint is Llama-2-70B's: 80 blocks of q_proj and o_proj
8192 x 8192, k_proj and v_proj 1024 x 8192, gate_proj and up_proj 28672 x 8192 and down_proj 8192 x 28672, and an
embedding and an output head of 32000 x 8192 (562 matrices, 69 B parameters, 138 GB of bfloat16).

A tensor's time on one worker core is the measured CPU time of its shape; shapes not measured are built from the
measured parts: a tall N x 8192 matrix costs the 8192 x 8192 SVD of its triangular factor plus a QR proportional
to N (the measured 8192 x 28672 minus the measured 8192 x 8192), and a 1024 x 8192 one is scaled from 4096 x 4096
by N M^2. The tasks are dealt costliest first to the first free worker, as the Dask run's priorities ask: the
makespan of that schedule is the workers' time. The client fits every layer in turn (the measured fit of 8192
eigenvalues, scaled by M^2 for the 1024-eigenvalue k and v projections: the goodness-of-fit check is O(M^2)),
overlapping the workers; the run takes the longer of the two, plus the last layer's fit. The file system must
deliver each task's tensor while it is computed: the mean read rate is printed against --bandwidth-gbs.
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
from pathlib import Path

HIDDEN, INTERMEDIATE, KV, VOCAB, BLOCKS = 8192, 28672, 1024, 32000, 80


def llama_70b() -> list[tuple[str, tuple[int, int]]]:
    shapes = [("embed_tokens", (VOCAB, HIDDEN)), ("lm_head", (VOCAB, HIDDEN))]
    for i in range(BLOCKS):
        shapes += [(f"{i}.q_proj", (HIDDEN, HIDDEN)), (f"{i}.o_proj", (HIDDEN, HIDDEN)),
                   (f"{i}.k_proj", (KV, HIDDEN)), (f"{i}.v_proj", (KV, HIDDEN)),
                   (f"{i}.gate_proj", (INTERMEDIATE, HIDDEN)), (f"{i}.up_proj", (INTERMEDIATE, HIDDEN)),
                   (f"{i}.down_proj", (HIDDEN, INTERMEDIATE))]
    return shapes


def seconds_per_shape(measured: dict[str, float]) -> dict[tuple[int, int], float]:
    square, tall, small = measured["8192x8192"], measured["8192x28672"], measured["4096x4096"]
    qr_per_row = (tall - square) / INTERMEDIATE

    def cost(shape: tuple[int, int]) -> float:
        n, m = max(shape), min(shape)
        if m == HIDDEN:  # a tall matrix: the QR of all its rows, then the square SVD
            return square + (qr_per_row * n if n > m else 0.0)
        return small * n * m * m / 4096**3

    return {shape: cost(shape) for shape in {s for _, s in llama_70b()}}


def makespan(times: list[float], workers: int) -> float:
    """Costliest first, each to the worker that frees first."""
    free = [0.0] * workers
    for t in sorted(times, reverse=True):
        heapq.heapreplace(free, free[0] + t)
    return max(free)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--svd", type=Path, required=True, help="bench_svd_sizes.py's JSON")
    parser.add_argument("--workers", default="8,64,512")
    parser.add_argument("--bandwidth-gbs", type=float, default=1.0, help="the file system's read rate (GB/s)")
    args = parser.parse_args()
    figures = json.loads(args.svd.read_text())
    measured = {shape: min(r["cpu_s"] for r in runs) for shape, runs in figures["shapes"].items()}
    per_shape = seconds_per_shape(measured)
    tensors = llama_70b()
    times = [per_shape[shape] for _, shape in tensors]
    fit = figures["client_fit"]["cpu_s"]
    client = sum(fit * (min(shape) / HIDDEN) ** 2 for _, shape in tensors)
    data_gb = sum(2 * math.prod(shape) for _, shape in tensors) / 1e9
    print(f"{len(tensors)} matrices, {sum(math.prod(s) for _, s in tensors) / 1e9:.1f} B parameters, "
          f"{data_gb:.0f} GB bf16")
    print("seconds per matrix on one core: " + ", ".join(f"{n}x{m} {t:.0f}" for (n, m), t in sorted(per_shape.items())))
    print(f"all singular values on one core: {sum(times):.0f} s ({sum(times) / 3600:.1f} h); longest task "
          f"{max(times):.0f} s")
    print(f"client: fits of every layer in turn {client:.0f} s ({client / 60:.0f} min); the client limits the run "
          f"from {sum(times) / client:.0f} workers on")
    print(f"\n{'workers':>7s} {'singular values':>16s} {'run':>9s} {'limit':>12s} {'mean read GB/s':>15s}")
    for w in (int(x) for x in args.workers.split(",")):
        span = makespan(times, w)
        run = max(span, client) + fit
        if client > span:
            limit = "client"
        else:  # no schedule ends before the longest task does
            limit = "longest task" if max(times) >= sum(times) / w else "workers"
        rate = data_gb / span
        note = "" if rate <= args.bandwidth_gbs else f" (above {args.bandwidth_gbs:g})"
        print(f"{w:7d} {span / 60:13.0f} min {run / 60:5.0f} min {limit:>12s} {rate:15.2f}{note}")


if __name__ == "__main__":
    main()
