"""The accelerator path on the bundled MiniLM: eigenvalues and NUTS on the JAX device, against the CPU path.

Run: python benchmarks/bench_gpu.py [--model htmp-exact] [--cpu-baseline] [--out results.json]

Prints the device every figure was measured on. Parts:

1. spectra: float64 singular values of every layer on the JAX device (load_spectra(svd="device")), against
   hteval.spectra's scipy path on the CPU; the largest relative difference of the eigenvalues.
2. fits: every layer's fit, batched (`hteval.batched.fit_batched`: all layers of one compiled program as lanes of
   one vmapped NUTS run) and sequential (`hteval.infer.fit`, chains one after another) on the JAX device;
   --sequential-layers limits the sequential part (it is the slow one on a GPU).
3. --cpu-baseline: sequential fits of --cpu-layers layers (the CPU's fast path: `hteval analyze` runs it in
   worker processes) in a child process with JAX_PLATFORMS=cpu on this machine, for the ratio and to check that
   device and CPU give the same posteriors.

Times include compilation, as a user's first run would (the persistent compilation cache is off).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

from hteval.batched import fit_batched  # noqa: E402
from hteval.infer import fit  # noqa: E402
from hteval.io import bundled_checkpoint  # noqa: E402
from hteval.spectra import load_spectra  # noqa: E402


def device_spectra(path) -> tuple[dict[str, np.ndarray], float]:
    """Eigenvalues of every layer by float64 SVD on the default JAX device (`load_spectra(svd="device")`)."""
    start = time.perf_counter()
    layers = load_spectra(path, svd="device")
    return {rec.name: rec.eigenvalues for rec in layers}, time.perf_counter() - start


def fits(layers, model, chains, draws, warmup, sequential_layers, batched=True) -> dict:
    start = time.perf_counter()
    batched = fit_batched(layers, model, chains=chains, draws=draws, warmup=warmup) if batched else []
    batched_s = time.perf_counter() - start
    start = time.perf_counter()
    chosen = layers[:sequential_layers]
    sequential = [fit(rec, model=model, chains=chains, draws=draws, warmup=warmup) for rec in chosen]
    sequential_s = time.perf_counter() - start
    shift = [abs(b.summary.loc["kappa", "median"] - s.summary.loc["kappa", "median"]) / s.summary.loc["kappa", "sd"]
             for b, s in zip(batched, sequential, strict=False)]
    return {"backend": jax.default_backend(), "device": jax.devices()[0].device_kind, "layers": len(layers),
            "batched_s": round(batched_s, 1), "batched_converged": sum(r.converged for r in batched),
            "sequential_layers": len(chosen), "sequential_s": round(sequential_s, 1),
            "sequential_converged": sum(r.converged for r in sequential),
            "max_kappa_median_shift_sd": float(max(shift)) if shift else None,
            "kappa_median": {r.record["name"]: float(r.summary.loc["kappa", "median"])
                             for r in batched or sequential}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="htmp-exact")
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--sequential-layers", type=int, default=39)
    parser.add_argument("--cpu-baseline", action="store_true")
    parser.add_argument("--cpu-layers", type=int, default=39)
    parser.add_argument("--copies", type=int, default=0,
                        help="then fit this many renamed copies of every layer in one batched call (warm programs): "
                        "the throughput of a many-checkpoint study")
    parser.add_argument("--fits-only", action="store_true", help=argparse.SUPPRESS)  # the CPU child
    parser.add_argument("--checkpoint", help="another checkpoint (default: the bundled MiniLM)")
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args()
    path = args.checkpoint or bundled_checkpoint()
    report: dict = {"jax": jax.__version__, "devices": [str(d) for d in jax.devices()]}
    print(f"JAX {jax.__version__}, default backend {jax.default_backend()}: {jax.devices()[0].device_kind}", flush=True)

    start = time.perf_counter()
    layers = load_spectra(path)
    cpu_spectra_s = time.perf_counter() - start
    if not args.fits_only:
        on_device, device_s = device_spectra(path)
        diff = max(float(np.max(np.abs(on_device[rec.name] - rec.eigenvalues)
                                / np.maximum(rec.eigenvalues.max(), 1e-300)))
                   for rec in layers if on_device[rec.name].size == rec.eigenvalues.size)
        report["spectra"] = {"layers": len(on_device), "device_s": round(device_s, 2),
                             "cpu_scipy_s": round(cpu_spectra_s, 2), "max_diff_relative_to_largest": diff}
        print(f"spectra of {len(on_device)} layers: {device_s:.2f} s on {jax.devices()[0].device_kind} "
              f"(float64 SVD, compilation included), {cpu_spectra_s:.2f} s scipy on the CPU (with reading); "
              f"largest difference {diff:.1e} of the largest eigenvalue", flush=True)

    if args.fits_only:  # the CPU child: sequential fits only
        report["fits"] = fits(layers, args.model, args.chains, args.draws, args.warmup, args.sequential_layers,
                              batched=False)
        print("JSON " + json.dumps(report["fits"]), flush=True)
        return
    report["fits"] = fits(layers, args.model, args.chains, args.draws, args.warmup, args.sequential_layers)
    f = report["fits"]
    print(f"{args.model}, {args.chains} x {args.draws} draws after {args.warmup}, on {f['device']} "
          f"({f['backend']}): batched {f['layers']} layers {f['batched_s']} s ({f['batched_converged']} converged); "
          f"sequential {f['sequential_layers']} layers {f['sequential_s']} s ({f['sequential_converged']} "
          f"converged)", flush=True)
    if f["max_kappa_median_shift_sd"] is not None:
        print(f"batched vs sequential kappa medians within {f['max_kappa_median_shift_sd']:.3f} sd", flush=True)

    if args.copies:
        import dataclasses

        many = [dataclasses.replace(rec, name=f"{rec.name}#{k}") for k in range(args.copies) for rec in layers]
        start = time.perf_counter()
        results = fit_batched(many, args.model, chains=args.chains, draws=args.draws, warmup=args.warmup)
        wall = time.perf_counter() - start
        report["copies"] = {"layers": len(many), "s": round(wall, 1), "converged": sum(r.converged for r in results),
                            "layers_per_s": round(len(many) / wall, 2)}
        print(f"batched, warm: {len(many)} layers ({args.copies} copies of each) in {wall:.1f} s, "
              f"{len(many) / wall:.2f} layers/s, {report['copies']['converged']} converged", flush=True)
    if args.cpu_baseline:
        command = [sys.executable, __file__, "--fits-only", "--checkpoint", str(path), "--model", args.model,
                   "--chains", str(args.chains),
                   "--draws", str(args.draws), "--warmup", str(args.warmup),
                   "--sequential-layers", str(args.cpu_layers)]
        child = subprocess.run(command, env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True, text=True)
        lines = [line for line in child.stdout.splitlines() if line.startswith("JSON ")]
        if child.returncode or not lines:
            print(child.stdout[-2000:], child.stderr[-4000:])
        else:
            cpu = report["cpu_fits"] = json.loads(lines[-1][5:])
            print(f"sequential fits on the CPU ({os.cpu_count()} cores, one process): {cpu['sequential_s']} s for "
                  f"{cpu['sequential_layers']} layers ({cpu['sequential_converged']} converged)", flush=True)
            gpu_k, cpu_k = report["fits"]["kappa_median"], cpu["kappa_median"]
            ratio = max(abs(np.log(gpu_k[n] / cpu_k[n])) for n in cpu_k)
            report["max_log_kappa_median_gpu_vs_cpu"] = ratio
            print(f"kappa medians, device against CPU: largest |log ratio| {ratio:.1e}", flush=True)
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(report, handle, indent=2)


if __name__ == "__main__":
    main()
