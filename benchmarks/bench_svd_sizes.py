"""Time of one tensor's singular values at LLM widths, as one Dask worker computes them, and of the client's fit.

Run: .venv/bin/python benchmarks/bench_svd_sizes.py [--shapes 4096x4096,8192x8192,28672x8192] [--repeat 1]
     [--blas-threads 1] [--json FILE]

Each shape is a Gaussian float32 matrix (stored as a checkpoint would store it; bfloat16 costs the same) turned
into its spectrum by `hteval.spectra.spectrum`: the product's own path, float64 throughout, singular values only (a
tall matrix is first reduced to its square triangular factor by a tall-skinny QR, then LAPACK's gesdd). BLAS is
limited to --blas-threads threads (default 1: a worker of `--engine dask` runs one task on one core). For the
largest width the client's share is timed too: the default model's fit of that spectrum with the goodness-of-fit
check, as `hteval analyze` runs it in the client for every layer (the per-layer figure, drawn in a separate process,
is not counted). The load average and the CPU time other processes used meanwhile are printed beside each figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

DEFAULT_SHAPES = "4096x4096,8192x8192,28672x8192"
_TICKS = os.sysconf("SC_CLK_TCK")


def busy_cpu_s() -> float:
    """CPU seconds spent by all processes of this machine since boot (user + nice + system + irq + softirq)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (fields[0] + fields[1] + fields[2] + fields[5] + fields[6]) / _TICKS


def timed(work) -> tuple[float, float, float, object]:
    """wall s, this process's CPU s, other processes' CPU s, result."""
    busy, cpu, start = busy_cpu_s(), time.process_time(), time.perf_counter()
    result = work()
    wall, own = time.perf_counter() - start, time.process_time() - cpu
    return wall, own, max(busy_cpu_s() - busy - own, 0.0), result


def matrix(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty(shape, np.float32)
    for start in range(0, shape[0], 1024):  # float64 draws a few rows at a time: memory stays near float32's
        out[start:start + 1024] = rng.standard_normal((min(1024, shape[0] - start), shape[1]))
    return out


def fit_time(spectrum) -> dict:
    """The client's work for one layer: the default model's exact fit and its goodness-of-fit check."""
    from hteval import names
    from hteval.infer import fit

    def work():
        result = fit(spectrum, model=names.DEFAULT_MODEL, log_likelihood=False)
        return result.ppc_pvalue

    wall, own, others, _ = timed(work)  # the first call includes imports and set-up
    wall2, own2, others2, _ = timed(work)
    return {"first_wall_s": wall, "wall_s": wall2, "cpu_s": own2, "others_cpu_s": others2, "m": spectrum.M}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default=DEFAULT_SHAPES, help="comma-separated NxM (default %(default)s)")
    parser.add_argument("--repeat", type=int, default=1, help="timings per shape (default 1)")
    parser.add_argument("--blas-threads", type=int, default=1, help="BLAS threads (default 1, as a worker)")
    parser.add_argument("--no-fit", action="store_true", help="skip the client's fit of the largest spectrum")
    parser.add_argument("--json", type=Path, help="save the figures here")
    args = parser.parse_args()
    from hteval.spectra import spectrum

    blas = [(i["internal_api"], i.get("version"), i["num_threads"]) for i in threadpool_info()
            if i["user_api"] == "blas"]
    figures = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
               "blas": blas, "blas_threads": args.blas_threads, "shapes": {}}
    print(f"{figures['machine']}; BLAS {blas}, limited to {args.blas_threads} thread(s)", flush=True)
    last = None
    for text in args.shapes.split(","):
        shape = tuple(int(v) for v in text.lower().split("x"))
        weights = matrix(shape)
        runs = []
        for _ in range(args.repeat):
            with threadpool_limits(limits=args.blas_threads, user_api="blas"):
                wall, own, others, last = timed(lambda w=weights, n=text: spectrum(w, name=n))
            runs.append({"wall_s": wall, "cpu_s": own, "others_cpu_s": others, "load_avg": os.getloadavg()[0]})
            print(f"{text:>12s}: {wall:8.1f} s wall, {own:8.1f} s CPU, others used {others:7.1f} CPU s, load "
                  f"{runs[-1]['load_avg']:.2f}", flush=True)
        figures["shapes"][text] = runs
        del weights
    if last is not None and not args.no_fit:
        figures["client_fit"] = fit_time(last)
        f = figures["client_fit"]
        print(f"client fit of M = {f['m']}: {f['wall_s']:.1f} s wall ({f['first_wall_s']:.1f} s the first time), "
              f"others used {f['others_cpu_s']:.1f} CPU s", flush=True)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
