"""Many checkpoints: wall time of `analyze_checkpoints` run locally (one checkpoint after another, each with
analyze's worker processes) against one Dask task per checkpoint on a loopback LocalCluster.

Run: python benchmarks/bench_checkpoints.py [--checkpoints 8] [--workers 2] [--out DIR]

The checkpoints are synthetic stand-ins of one training run (two layers, 384 x 192 and 256 x 128, whose spectra
grow a heavier tail with the step), so the figures measure scheduling, not a model's size. The persistent
compilation cache is off, so every run compiles, as a first run on a fresh machine would. Prints the machine
every figure was measured on, and whether both engines gave the same posterior summaries.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from safetensors.numpy import save_file  # noqa: E402

from hteval import names  # noqa: E402
from hteval.checkpoints import analyze_checkpoints  # noqa: E402


def write_run(folder: Path, count: int) -> None:
    rng = np.random.default_rng(0)
    base = {"a.weight": rng.standard_normal((384, 192)), "b.weight": rng.standard_normal((256, 128))}
    for i in range(count):
        step = 100 * i
        heavy = {k: w + 0.01 * np.sqrt(step) * rng.standard_t(2.5, w.shape) for k, w in base.items()}
        save_file({k: w.astype(np.float32) for k, w in heavy.items()}, folder / f"step_{step}.safetensors")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    os.environ["HTEVAL_CACHE"] = "off"
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, JAX {jax.__version__} "
          f"({jax.default_backend()})")
    root = args.out or Path(tempfile.mkdtemp(prefix="hteval-bench-"))
    run = root / "run"
    run.mkdir(parents=True, exist_ok=True)
    write_run(run, args.checkpoints)
    tables = {}
    for engine in ("local", "dask"):
        start = time.perf_counter()
        tables[engine] = analyze_checkpoints(run, root / engine, engine=engine, workers=args.workers, figures=False)
        seconds = time.perf_counter() - start
        fitted = tables[engine][tables[engine][names.MODEL].notna()]
        print(f"{engine:5s}: {args.checkpoints} checkpoints, {len(fitted)} fits in {seconds:.1f} s "
              f"({seconds / len(fitted):.2f} s a fit), {int((fitted[names.STATUS] == names.STATUS_OK).sum())} "
              f"converged, {args.workers} workers")
    key = [names.CHECKPOINT, names.NAME, names.MODEL]
    a, b = (t.set_index(key).sort_index()["kappa_median"] for t in tables.values())
    print(f"largest relative difference of kappa medians, local vs dask: {float(np.max(np.abs(a / b - 1))):.1e}")
    print(pd.read_csv(root / "local" / "dynamics.csv")[["name", "step", "median", "ci_low", "ci_high"]]
          .to_string(index=False, float_format="{:.3g}".format))


if __name__ == "__main__":
    main()
