"""One checkpoint's singular values on a loopback Dask LocalCluster of 1 and 2 workers: wall time, speed-up, the
tasks' own times, each worker's peak memory.

Run: .venv/bin/python benchmarks/bench_dask_layers.py [--blocks 4] [--dir DIR] [--workers 1,2] [--no-local]
     [--json FILE]

The checkpoint is the synthetic Llama-style one (benchmarks/llm_checkpoint.py: bf16 shards with an index;
--blocks 4 keeps the run to minutes on two cores: the embedding, 28 projections of 2048 x 2048, 5632 x 2048 and
2048 x 5632, and the norms). For each worker count a fresh cluster (`hteval.dask_layers.layer_cluster`: one
single-threaded worker process each, bound to 127.0.0.1) computes every spectrum as `hteval analyze --engine dask`
does, without the fits: the time from submitting to the last spectrum. Dask's task stream gives each task's time
on its worker, so the run can be set against its two lower bounds: the work divided by the workers, and the longest
task. Each worker's peak resident memory (ru_maxrss of its process: interpreter, Dask, and its one tensor at a time,
memory-mapped pages included) is checked against 2 x the largest tensor in float64 + 1 GiB. With --local (default)
the local engine's `iter_spectra(threads=2)` runs on the same checkpoint for comparison. The CPU time that other
processes used meanwhile is printed beside each figure: on a shared machine it says how clean a timing is.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_svd_sizes import busy_cpu_s  # noqa: E402
from llm_checkpoint import DEFAULT_DIR, MIB, ensure_checkpoint, tensor_specs  # noqa: E402

GIB = 1 << 30


def _worker_cpu_s() -> float:
    return time.process_time()


def _worker_peak_rss() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def on_cluster(directory: Path, workers: int) -> dict:
    from dask.distributed import get_task_stream

    from hteval.dask_layers import layer_cluster
    from hteval.spectra import LayerSpectrum

    start = time.perf_counter()
    with layer_cluster(None, workers) as cluster:
        client = cluster.client
        client.wait_for_workers(workers)
        started = time.perf_counter() - start
        cpu_before = client.run(_worker_cpu_s)
        busy, own = busy_cpu_s(), time.process_time()
        begin = time.perf_counter()
        with get_task_stream(client=client) as stream:
            results = list(cluster.spectra(directory))
        wall = time.perf_counter() - begin
        own = time.process_time() - own
        workers_cpu = sum(client.run(_worker_cpu_s)[a] - cpu_before[a] for a in cpu_before)
        others = max(busy_cpu_s() - busy - own - workers_cpu, 0.0)
        peaks = list(client.run(_worker_peak_rss).values())
        tasks = [sum(s["stop"] - s["start"] for s in t["startstops"] if s["action"] == "compute")
                 for t in stream.data]
    layers = sum(isinstance(r, LayerSpectrum) for r in results)
    return {"workers": workers, "cluster_start_s": started, "wall_s": wall, "client_cpu_s": own,
            "workers_cpu_s": workers_cpu, "others_cpu_s": others, "layers": layers, "results": len(results),
            "tasks": len(tasks), "task_s_sum": sum(tasks), "task_s_max": max(tasks), "peak_rss_mib": [p / MIB
                                                                                                      for p in peaks]}


def on_this_machine(directory: Path, threads: int) -> dict:
    from hteval.spectra import LayerSpectrum, iter_spectra

    busy, own, begin = busy_cpu_s(), time.process_time(), time.perf_counter()
    results = list(iter_spectra(directory, svd="host", threads=threads, on_error="skip"))
    wall, own = time.perf_counter() - begin, time.process_time() - own
    return {"threads": threads, "wall_s": wall, "cpu_s": own, "others_cpu_s": max(busy_cpu_s() - busy - own, 0.0),
            "layers": sum(isinstance(r, LayerSpectrum) for r in results)}


def report(figures: dict) -> None:
    bound = figures["rss_bound_mib"]
    print(f"\ncheckpoint {figures['checkpoint']}: {figures['parameters'] / 1e9:.3f} B parameters; largest tensor "
          f"{figures['largest_shape']} ({figures['largest_float64_mib']:.0f} MiB in float64) -> per-worker bound "
          f"{bound:.0f} MiB; {os.cpu_count()} CPUs")
    print(f"\n{'workers':>7s} {'wall s':>8s} {'work s':>8s} {'longest task s':>15s} {'bound s':>8s} "
          f"{'others CPU s':>13s} {'peak RSS MiB per worker':>24s}")
    for run in figures["cluster"]:
        floor = max(run["task_s_sum"] / run["workers"], run["task_s_max"])
        peaks = ", ".join(f"{p:.0f}" for p in run["peak_rss_mib"])
        print(f"{run['workers']:7d} {run['wall_s']:8.1f} {run['task_s_sum']:8.1f} {run['task_s_max']:15.1f} "
              f"{floor:8.1f} {run['others_cpu_s']:13.1f} {peaks:>24s}")
        print(f"        {run['tasks']} tasks, {run['layers']} spectra, cluster start {run['cluster_start_s']:.1f} s, "
              f"peak RSS {'within' if max(run['peak_rss_mib']) <= bound else 'ABOVE'} the bound")
    runs = {run["workers"]: run for run in figures["cluster"]}
    if 1 in runs and 2 in runs:
        figures["speed_up_2_over_1"] = runs[1]["wall_s"] / runs[2]["wall_s"]
        print(f"speed-up, 2 workers over 1: {figures['speed_up_2_over_1']:.2f}")
    local = figures.get("local")
    if local:
        print(f"local engine, iter_spectra(threads={local['threads']}): {local['wall_s']:.1f} s wall, "
              f"{local['cpu_s']:.1f} CPU s, others {local['others_cpu_s']:.1f} CPU s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=4, help="transformer blocks (default 4)")
    parser.add_argument("--dir", type=Path, help=f"checkpoint directory (default {DEFAULT_DIR}-<blocks>)")
    parser.add_argument("--workers", default="1,2", help="worker counts, comma-separated (default %(default)s)")
    parser.add_argument("--no-local", dest="local", action="store_false", help="skip the local engine's run")
    parser.add_argument("--json", type=Path, help="save the figures here")
    args = parser.parse_args()

    config = {"blocks": args.blocks, "lm_head": False, "shards": 4, "seed": 0}
    directory = args.dir or Path(f"{DEFAULT_DIR}-{args.blocks}")
    ensure_checkpoint(directory, config)
    specs = tensor_specs(args.blocks, False)
    largest = max((shape for _, shape in specs), key=math.prod)
    figures = {"checkpoint": str(directory), "parameters": sum(math.prod(s) for _, s in specs),
               "largest_shape": "x".join(map(str, largest)), "largest_float64_mib": 8 * math.prod(largest) / MIB,
               "cluster": []}
    figures["rss_bound_mib"] = 2 * figures["largest_float64_mib"] + GIB / MIB
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    for workers in (int(w) for w in args.workers.split(",")):
        figures["cluster"].append(on_cluster(directory, workers))
        print(f"{workers} worker(s): {figures['cluster'][-1]['wall_s']:.1f} s", flush=True)
    if args.local:
        figures["local"] = on_this_machine(directory, 2)
    figures["load_average_after"] = os.getloadavg()
    report(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
