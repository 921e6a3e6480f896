"""Singular values, `hteval analyze` and weightwatcher on a synthetic ~1B-parameter Llama-style bf16 checkpoint.

Run: .venv/bin/python benchmarks/llm_checkpoint.py [--blocks N] [--dir DIR] [--skip-ww] [--skip-analyze]
     [--blas-threads N] [--json FILE]

The checkpoint (written once into --dir, reused while its configuration matches) has TinyLlama's widths with all
four attention projections square: per block q/k/v/o_proj 2048 x 2048, gate/up_proj 5632 x 2048, down_proj
2048 x 5632 and two 2048 norms; embed_tokens 32000 x 2048 and the final norm; lm_head only with --lm-head (by
default the embedding is tied, as in Llama 3.2 1B). 18 blocks: 0.99 B parameters, 1.98 GB of bf16 in 4 shards
with a model.safetensors.index.json. Each weight is Student-t (df drawn per tensor in [2.5, 6], scaled to the
standard deviation 0.02 of Llama's initialiser) plus 1-3 rank-one spikes above the bulk; written block by block
(a few MB at a time), seeded.

Measured, each in a fresh subprocess timed whole (interpreter start-up and imports included), peak RSS of the
process tree sampled every 0.1 s and at least the process's own ru_maxrss:
(a) `iter_spectra(DIR, svd="host", threads=None)` over every tensor: the singular values alone, computed as
    `hteval analyze` computes them (one tensor per core, single-threaded BLAS each);
(b) `hteval analyze DIR --out OUT` with its defaults, end to end;
(c) weightwatcher 0.7.7's default analyze() in .venv-ww (benchmarks/_weightwatcher_sharded.py: all shards loaded
    in bf16; weightwatcher converts each layer to float32 as it reads it).
The bounds checked: (b) / (a) wall time <= 1.5, and peak RSS of (a) and (b) <= 2 x (largest tensor in float64) +
1 GiB. On a shared machine, "others CPU s" (CPU time used by other processes meanwhile) tells a clean timing from
a contaminated one.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import ml_dtypes
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_analyze_vs_weightwatcher import ROOT, WW_PYTHON, run  # noqa: E402

WW_HELPER = Path(__file__).resolve().parent / "_weightwatcher_sharded.py"
DEFAULT_DIR = Path(tempfile.gettempdir()) / "hteval-llm-ckpt"
INDEX = "model.safetensors.index.json"
HIDDEN, INTERMEDIATE, VOCAB = 2048, 5632, 32000
INIT_STD = 0.02  # Llama's initializer_range
DF_RANGE = (2.5, 6.0)  # Student-t degrees of freedom, one per tensor: heavy tails, finite variance
SPIKE_RANGE = (1.5, 4.0)  # rank-one spikes' singular values, in units of the bulk's edge
CHUNK_ELEMENTS = 1 << 22  # generated and written at a time (32 MB of float64)
RATIO_BOUND = 1.5
MIB = 1 << 20
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def tensor_specs(blocks: int, lm_head: bool) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every tensor, in Llama's state-dict order."""
    specs = [("model.embed_tokens.weight", (VOCAB, HIDDEN))]
    for i in range(blocks):
        layer = f"model.layers.{i}"
        specs += [(f"{layer}.self_attn.{p}_proj.weight", (HIDDEN, HIDDEN)) for p in "qkvo"]
        specs += [(f"{layer}.mlp.gate_proj.weight", (INTERMEDIATE, HIDDEN)),
                  (f"{layer}.mlp.up_proj.weight", (INTERMEDIATE, HIDDEN)),
                  (f"{layer}.mlp.down_proj.weight", (HIDDEN, INTERMEDIATE)),
                  (f"{layer}.input_layernorm.weight", (HIDDEN,)),
                  (f"{layer}.post_attention_layernorm.weight", (HIDDEN,))]
    specs.append(("model.norm.weight", (HIDDEN,)))
    if lm_head:
        specs.append(("lm_head.weight", (VOCAB, HIDDEN)))
    return specs


def shard_plan(specs: list[tuple[str, tuple[int, ...]]], shards: int) -> list[list[tuple[str, tuple[int, ...]]]]:
    """Consecutive tensors packed into about `shards` files of about equal size."""
    target = sum(2 * math.prod(shape) for _, shape in specs) / shards
    plan, size = [[]], 0
    for name, shape in specs:
        if plan[-1] and size >= target:
            plan.append([])
            size = 0
        plan[-1].append((name, shape))
        size += 2 * math.prod(shape)
    return plan


def ensure_checkpoint(directory: Path, config: dict) -> None:
    """Write the checkpoint unless the directory already holds one of this configuration."""
    index = directory / INDEX
    if index.exists():
        meta = json.loads(index.read_text()).get("metadata", {})
        if meta.get("hteval_benchmark") == config:
            print(f"reusing {directory}", flush=True)
            return
        sys.exit(f"{directory} holds another checkpoint ({meta.get('hteval_benchmark')}); give another --dir "
                 f"or remove it")
    if directory.exists() and any(directory.iterdir()):
        sys.exit(f"{directory} is not empty and has no {INDEX}; give another --dir")
    directory.mkdir(parents=True, exist_ok=True)
    specs = tensor_specs(config["blocks"], config["lm_head"])
    plan = shard_plan(specs, config["shards"])
    start = time.perf_counter()
    weight_map, total = {}, 0
    for k, shard in enumerate(plan):
        filename = f"model-{k + 1:05d}-of-{len(plan):05d}.safetensors"
        total += write_shard(directory / filename, shard, specs, config["seed"])
        weight_map.update(dict.fromkeys((name for name, _ in shard), filename))
        print(f"wrote {filename} ({len(shard)} tensors), {time.perf_counter() - start:.0f} s", flush=True)
    # the index last: an interrupted run leaves no index, so it is not mistaken for a finished checkpoint
    index.write_text(json.dumps({"metadata": {"total_size": total, "hteval_benchmark": config},
                                 "weight_map": weight_map}, indent=2))


def write_shard(path: Path, shard: list[tuple[str, tuple[int, ...]]], specs: list, seed: int) -> int:
    """One .safetensors file by hand: 8-byte little-endian header length, JSON header, raw bf16 bytes."""
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, shape in shard:
        size = 2 * math.prod(shape)
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)  # the format pads the header so that the data starts 8-byte aligned
    order = [name for name, _ in specs]
    with open(path, "wb") as handle:
        handle.write(len(raw).to_bytes(8, "little") + raw)
        for name, shape in shard:
            rng = np.random.default_rng([seed, order.index(name)])
            for chunk in tensor_chunks(shape, rng):
                handle.write(chunk.astype(np.float32).astype(ml_dtypes.bfloat16).tobytes())
    return offset


def tensor_chunks(shape: tuple[int, ...], rng: np.random.Generator):
    """The tensor's values in row chunks (float64): norms near 1; weights heavy-tailed plus rank-one spikes."""
    if len(shape) == 1:
        yield 1.0 + 0.05 * rng.standard_normal(shape)
        return
    rows, cols = shape
    df = rng.uniform(*DF_RANGE)
    scale = INIT_STD * math.sqrt((df - 2) / df)  # Student-t's variance is df / (df - 2)
    n_spikes = int(rng.integers(1, 4))
    strength = INIT_STD * (math.sqrt(rows) + math.sqrt(cols)) * rng.uniform(*SPIKE_RANGE, n_spikes)
    u = rng.standard_normal((rows, n_spikes))
    v = rng.standard_normal((n_spikes, cols))
    u *= strength / np.linalg.norm(u, axis=0)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    step = max(1, CHUNK_ELEMENTS // cols)
    for start in range(0, rows, step):
        stop = min(rows, start + step)
        yield scale * rng.standard_t(df, (stop - start, cols)) + u[start:stop] @ v


SINGULAR_VALUES_CHILD = """
import json, sys, time
from collections import defaultdict
started = time.perf_counter()
from hteval.spectra import LayerSpectrum, iter_spectra
imported = time.perf_counter()
by_shape, layers, skipped, last = defaultdict(lambda: [0, 0.0]), 0, 0, time.perf_counter()
for result in iter_spectra(sys.argv[1], svd="host", threads=None):
    now = time.perf_counter()
    if isinstance(result, LayerSpectrum):
        layers += 1
        entry = by_shape["x".join(map(str, result.shape))]
        entry[0] += 1
        entry[1] += now - last
    else:
        skipped += 1
    last = now
print("RESULT " + json.dumps({"layers": layers, "skipped": skipped, "import_s": imported - started,
                              "loop_s": last - imported, "by_shape": by_shape}))
"""


def singular_values(path: Path, work: Path, env: dict[str, str]) -> dict:
    child = work / "singular_values.py"
    child.write_text(SINGULAR_VALUES_CHILD)
    wall, cpu, other, rss, text = run([sys.executable, str(child), str(path)], work / "singular_values", env)
    return {"wall_s": wall, "cpu_s": cpu, "others_cpu_s": other, "peak_rss_mib": rss, **_result(text)}


def analyze(path: Path, work: Path, env: dict[str, str], extra: list[str]) -> dict:
    out = work / "analyze"
    hteval = str(Path(sys.executable).parent / "hteval")
    wall, cpu, other, rss, _ = run([hteval, "analyze", str(path), "--out", str(out), *extra], work / "analyze",
                                   env)
    with (out / "layers.csv").open() as f:
        rows = sum(1 for _ in f) - 1
    return {"wall_s": wall, "cpu_s": cpu, "others_cpu_s": other, "peak_rss_mib": rss, "rows": rows}


def weightwatcher(path: Path, work: Path, env: dict[str, str]) -> dict:
    wall, cpu, other, rss, text = run([str(WW_PYTHON), str(WW_HELPER), str(path)], work / "weightwatcher", env)
    print("\n".join(line for line in text.splitlines() if not line.startswith("RESULT ")))
    return {"wall_s": wall, "cpu_s": cpu, "others_cpu_s": other, "peak_rss_mib": rss, **_result(text)}


def _result(text: str) -> dict:
    return json.loads(next(line for line in text.splitlines() if line.startswith("RESULT "))[len("RESULT "):])


def _attempt(label: str, measure, *args) -> dict:
    """A measurement, or its failure (run() exits on a failed command) without losing the others."""
    try:
        return measure(*args)
    except SystemExit as failed:
        print(f"{label} failed: {failed}", flush=True)
        return {"error": str(failed)[-2000:]}


def report(figures: dict) -> None:
    bound = figures["rss_bound_mib"]
    print(f"\ncheckpoint: {figures['checkpoint']}: {figures['parameters'] / 1e9:.3f} B parameters, "
          f"{figures['bytes'] / 1e9:.2f} GB bf16; largest tensor {figures['largest_shape']}, "
          f"{figures['largest_float64_mib']:.0f} MiB in float64 -> RSS bound {bound:.0f} MiB")
    print(f"cpus: {os.cpu_count()}, BLAS threads: {figures['blas_threads'] or 'inherited'}, load average after: "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"\n{'run':36s} {'wall s':>8s} {'CPU s':>8s} {'peak RSS MiB':>13s} {'others CPU s':>13s}")
    labels = {"singular_values": "(a) singular values alone", "analyze": "(b) hteval analyze",
              "weightwatcher": "(c) weightwatcher 0.7.7 analyze()"}
    for key, label in labels.items():
        row = figures.get(key)
        if row and "error" not in row:
            print(f"{label:36s} {row['wall_s']:8.1f} {row['cpu_s']:8.1f} {row['peak_rss_mib']:13.0f} "
                  f"{row['others_cpu_s']:13.1f}")
        elif row:
            print(f"{label:36s} failed")
    sv, an = figures.get("singular_values"), figures.get("analyze")
    if sv and "error" not in sv:
        print(f"\n(a) in its process: imports {sv['import_s']:.1f} s, loop {sv['loop_s']:.1f} s over "
              f"{sv['layers']} layers ({sv['skipped']} tensors skipped)")
        for shape, (count, seconds) in sv["by_shape"].items():
            print(f"    {shape:>12s}: {count:3d} x {seconds / count:6.2f} s = {seconds:7.1f} s")
        print(f"(a) peak RSS {sv['peak_rss_mib']:.0f} MiB vs bound {bound:.0f} MiB: "
              f"{'ok' if sv['peak_rss_mib'] <= bound else 'EXCEEDED'}")
    if an and "error" not in an and sv and "error" not in sv:
        ratio = an["wall_s"] / sv["wall_s"]
        figures["ratio_analyze_over_singular_values"] = ratio
        print(f"(b) / (a) wall time {ratio:.2f} vs bound {RATIO_BOUND}: {'ok' if ratio <= RATIO_BOUND else 'EXCEEDED'}")
        print(f"(b) peak RSS {an['peak_rss_mib']:.0f} MiB vs bound {bound:.0f} MiB: "
              f"{'ok' if an['peak_rss_mib'] <= bound else 'EXCEEDED'}")
    ww = figures.get("weightwatcher")
    if ww and "error" not in ww:
        print(f"(c) weightwatcher: {ww['layers']} layers, analyze() {ww['analyze_s']:.1f} s, import + load "
              f"{ww['load_s']:.1f} s, left out: {', '.join(ww['left_out']) or 'none'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=18, help="transformer blocks (default 18: ~1B parameters)")
    parser.add_argument("--lm-head", action="store_true", help="add an untied 32000 x 2048 lm_head")
    parser.add_argument("--shards", type=int, default=4, help="shard files (default 4)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dir", type=Path, help=f"checkpoint directory (default {DEFAULT_DIR}-<blocks>)")
    parser.add_argument("--out", type=Path, help="keep logs and analyze's outputs here (default: a temp dir)")
    parser.add_argument("--skip-ww", action="store_true", help="do not run weightwatcher")
    parser.add_argument("--skip-analyze", action="store_true", help="do not run hteval analyze")
    parser.add_argument("--skip-singular-values", action="store_true", help="do not run (a)")
    parser.add_argument("--analyze-args", default="", help="extra arguments for hteval analyze, e.g. '--workers 1'")
    parser.add_argument("--blas-threads", type=int, help="OPENBLAS/OMP/MKL_NUM_THREADS for all three runs (default: "
                        "inherited; with other jobs on the cores, 1 avoids threads that wait on each other)")
    parser.add_argument("--json", type=Path, help="save the figures to this JSON file")
    args = parser.parse_args()

    env = dict(os.environ)
    if args.blas_threads is not None:
        env.update(dict.fromkeys(BLAS_THREAD_VARIABLES, str(args.blas_threads)))
    config = {"blocks": args.blocks, "lm_head": args.lm_head, "shards": args.shards, "seed": args.seed}
    directory = args.dir or Path(f"{DEFAULT_DIR}-{args.blocks}{'-lm_head' if args.lm_head else ''}")
    ensure_checkpoint(directory, config)
    specs = tensor_specs(args.blocks, args.lm_head)
    largest = max((shape for _, shape in specs), key=math.prod)
    figures = {"checkpoint": str(directory), "config": config, "blas_threads": args.blas_threads,
               "parameters": sum(math.prod(s) for _, s in specs),
               "bytes": 2 * sum(math.prod(s) for _, s in specs), "largest_shape": "x".join(map(str, largest)),
               "largest_float64_mib": 8 * math.prod(largest) / MIB}
    figures["rss_bound_mib"] = 2 * figures["largest_float64_mib"] + 1024
    print(f"cpus: {os.cpu_count()}, load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
          flush=True)

    work = args.out or Path(tempfile.mkdtemp(prefix="llm_checkpoint_"))
    if (work / "analyze").exists():
        sys.exit(f"{work / 'analyze'} exists (analyze would resume, not fit); give --out a fresh directory")
    work.mkdir(parents=True, exist_ok=True)
    if not args.skip_singular_values:
        figures["singular_values"] = _attempt("(a)", singular_values, directory, work, env)
    if not args.skip_analyze:
        figures["analyze"] = _attempt("(b)", analyze, directory, work, env, args.analyze_args.split())
    if not args.skip_ww:
        if WW_PYTHON.exists():
            figures["weightwatcher"] = _attempt("(c)", weightwatcher, directory, work, env)
        else:
            print(f"{WW_PYTHON.relative_to(ROOT)} is missing (bash scripts/weightwatcher_env.sh): (c) skipped")
    report(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    if args.out is None:
        shutil.rmtree(work)
    else:
        print(f"logs kept in {work}")


if __name__ == "__main__":
    main()
