"""Wall time and peak RSS of `hteval analyze --bundled` against weightwatcher 0.7.7's default analyze().

Run: .venv/bin/python benchmarks/bench_analyze_vs_weightwatcher.py [--pairs 5] [--hierarchical] [--out DIR]
Needs .venv-ww (bash scripts/weightwatcher_env.sh). Both tools read the bundled all-MiniLM-L6-v2 safetensors
checkpoint. hteval runs with its default model and outputs (per-layer JSON, draws and ESD figures, layers.csv,
report.md and the forest plot), each run into a fresh output folder with a fresh, empty compilation cache
(HTEVAL_CACHE); weightwatcher runs its default analyze() (point estimates). The two alternate, --pairs times, the
order flipping every pair, because this 2-core machine is noisy: the medians are compared. Each tool runs in its own
subprocess and is timed whole, interpreter start-up and imports included, since that is what a user waits for.
Peak memory is sampled every 0.05 s over the whole process tree: RSS (resident pages, shared ones counted in each
process) and PSS (shared pages split between the processes that map them).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
WW_PYTHON = ROOT / ".venv-ww" / "bin" / "python"
WW_HELPER = Path(__file__).resolve().parent / "_weightwatcher_run.py"
FITTED = ("ok", "not_converged", "error")


def busy_cpu_seconds() -> float:
    """Machine-wide CPU time spent outside idle and iowait since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, f.readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def tree_rss_mib(root: int) -> float:
    """Resident memory of a process and all its descendants (hteval analyze's worker processes), from /proc."""
    return tree_memory_mib(root)[0]


def tree_memory_mib(root: int) -> tuple[float, float]:
    """(RSS, PSS) of a process and all its descendants, from /proc."""
    parents, rss = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue  # exited meanwhile
        parents[int(entry)] = int(fields["PPid"])
        rss[int(entry)] = int(fields.get("VmRSS", "0 kB").split()[0]) / 1024
    tree, grew = {root}, True
    while grew:
        added = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= added
        grew = bool(added)
    return sum(rss.get(pid, 0.0) for pid in tree), sum(_pss_mib(pid) for pid in tree)


def _pss_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("Pss:")) / 1024
    except (OSError, StopIteration, ValueError):
        return 0.0


def run(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> tuple[float, float, float, float, str]:
    """Run cmd with stdout to LOG.out, stderr to LOG.err; exits on failure.

    Returns (wall s, CPU s, CPU s used by everything else meanwhile, peak RSS MiB, stdout); run.last_pss holds
    the peak PSS. Peak RSS is that of the whole process tree (the parent and its workers together), sampled every
    0.05 s. On a 2-core machine
    another job starting mid-run inflates wall time far more than CPU time, and the third figure shows whether
    one did, so a contaminated run can be told from a clean one after the fact.
    """
    print(f"$ {' '.join(cmd)}", file=sys.stderr, flush=True)
    out_path, err_path = log.with_suffix(".out"), log.with_suffix(".err")
    with out_path.open("w") as out, err_path.open("w") as err:
        start, busy_before = time.perf_counter(), busy_cpu_seconds()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=ROOT)
        peak, peak_pss, done = [0.0], [0.0], threading.Event()

        def sample():
            while not done.wait(0.05):
                rss, pss = tree_memory_mib(proc.pid)
                peak[0], peak_pss[0] = max(peak[0], rss), max(peak_pss[0], pss)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        # os.wait4 gives this child's rusage (its CPU time includes its waited-for workers'); RUSAGE_CHILDREN would
        # accumulate over every child so far
        _, status, usage = os.wait4(proc.pid, 0)
        wall, busy = time.perf_counter() - start, busy_cpu_seconds() - busy_before
        done.set()
        sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"{cmd[0]} exited {proc.returncode}; end of its stderr:\n{err_path.read_text()[-3000:]}")
    cpu = usage.ru_utime + usage.ru_stime
    run.last_pss = peak_pss[0]
    # ru_maxrss (KiB) is the largest single process; the sampled tree total is what the machine had to hold
    return wall, cpu, max(busy - cpu, 0.0), max(peak[0], usage.ru_maxrss / 1024), out_path.read_text()


def hteval_layers(out_dir: Path) -> tuple[int, str]:
    """Layers fitted (one model, no --randomize: one row each) and a breakdown by status."""
    with (out_dir / "layers.csv").open() as f:
        statuses = [row["status"] for row in csv.DictReader(f) if row["status"] in FITTED]
    breakdown = ", ".join(f"{statuses.count(s)} {s}" for s in FITTED if s in statuses)
    return len(statuses), breakdown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5, help="alternating (hteval, weightwatcher) pairs")
    parser.add_argument("--hierarchical", action="store_true", help="hteval also pools kappa across layers")
    parser.add_argument("--out", type=Path, help="keep hteval's outputs and logs here (default: a temp dir, removed)")
    args = parser.parse_args()
    if not WW_PYTHON.exists():
        sys.exit(f"{WW_PYTHON.relative_to(ROOT)} is missing; build it with: bash scripts/weightwatcher_env.sh")

    from hteval.io.bundled import bundled_checkpoint

    checkpoint = str(bundled_checkpoint())
    hteval = str(Path(sys.executable).parent / "hteval")
    work = args.out or Path(tempfile.mkdtemp(prefix="bench_ww_"))
    if work.exists() and any(work.iterdir()):
        sys.exit(f"{work} is not empty; give --out a fresh directory")
    work.mkdir(parents=True, exist_ok=True)
    print(f"checkpoint: {checkpoint}")
    print(f"cpus: {os.cpu_count()}, load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    runs: dict[str, list[tuple]] = {"hteval": [], "weightwatcher": []}
    for pair in range(args.pairs):
        order = ("hteval", "weightwatcher") if pair % 2 == 0 else ("weightwatcher", "hteval")
        for tool in order:
            runs[tool].append(_hteval_run(hteval, work, pair, args.hierarchical) if tool == "hteval"
                              else _weightwatcher_run(checkpoint, work, pair))
            wall, cpu, other, rss, pss, layers = runs[tool][-1]
            print(f"pair {pair + 1} {tool:13s}: {layers} layers, wall {wall:5.2f} s, CPU {cpu:5.2f} s, peak RSS "
                  f"{rss:5.0f} MiB (PSS {pss:5.0f}), other processes' CPU {other:4.1f} s", flush=True)
    _print_table(runs, args.hierarchical)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.out is None:
        shutil.rmtree(work)
    else:
        print(f"outputs and logs kept in {work}")


def _hteval_run(hteval: str, work: Path, pair: int, hierarchical: bool) -> tuple:
    """One cold `hteval analyze --bundled`: a fresh output folder and an empty compilation cache."""
    out_dir, cache = work / f"hteval-{pair}", work / f"cache-{pair}"
    cache.mkdir()
    cmd = [hteval, "analyze", "--bundled", "--out", str(out_dir)] + (["--hierarchical"] if hierarchical else [])
    wall, cpu, other, rss, _ = run(cmd, work / out_dir.name, {**os.environ, "HTEVAL_CACHE": str(cache)})
    layers, breakdown = hteval_layers(out_dir)
    return wall, cpu, other, rss, run.last_pss, f"{layers} ({breakdown})"


def _weightwatcher_run(checkpoint: str, work: Path, pair: int) -> tuple:
    wall, cpu, other, rss, text = run([str(WW_PYTHON), str(WW_HELPER), checkpoint], work / f"weightwatcher-{pair}")
    result = json.loads(next(line for line in text.splitlines() if line.startswith("RESULT "))[len("RESULT "):])
    return wall, cpu, other, rss, run.last_pss, str(result["layers"])


def _print_table(runs: dict[str, list[tuple]], hierarchical: bool) -> None:
    label = "hteval analyze --bundled" + (" --hierarchical" if hierarchical else "")
    print("\n| tool | layers | wall s (median [range]) | CPU s | peak RSS MiB | peak PSS MiB |")
    print("|---|---|---|---|---|---|")
    medians = {}
    for tool, rows in runs.items():
        wall, cpu, _, rss, pss, layers = (list(c) for c in zip(*rows, strict=True))
        medians[tool] = (float(np.median(wall)), float(np.median(rss)), float(np.median(pss)))
        name = label if tool == "hteval" else "weightwatcher 0.7.7 analyze()"
        print(f"| {name} | {layers[0]} | {np.median(wall):.2f} [{min(wall):.2f}, {max(wall):.2f}] | "
              f"{np.median(cpu):.2f} | {np.median(rss):.0f} (max {max(rss):.0f}) | {np.median(pss):.0f} |")
    pairs = [h[0] / w[0] for h, w in zip(runs["hteval"], runs["weightwatcher"], strict=True)]
    print(f"wall-time ratio hteval / weightwatcher: {medians['hteval'][0] / medians['weightwatcher'][0]:.2f} "
          f"(medians); per pair {', '.join(f'{r:.2f}' for r in pairs)}")
    print(f"peak RSS ratio: {medians['hteval'][1] / medians['weightwatcher'][1]:.2f}; "
          f"peak PSS ratio: {medians['hteval'][2] / medians['weightwatcher'][2]:.2f} (medians)")
    print("(other processes' CPU s: CPU time used by other processes during that run; near 0 means a clean timing)")


if __name__ == "__main__":
    main()
