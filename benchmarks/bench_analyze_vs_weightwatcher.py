"""Wall time and peak RSS of `hteval analyze --bundled` against weightwatcher 0.7.7's default analyze().

Run: .venv/bin/python benchmarks/bench_analyze_vs_weightwatcher.py [--out DIR]
Needs .venv-ww (bash scripts/weightwatcher_env.sh). Both tools read the bundled all-MiniLM-L6-v2 safetensors
checkpoint. hteval runs twice with one HTEVAL_CACHE: first with the cache empty (XLA compilation included), then
warm; weightwatcher runs once (its fits are point estimates with nothing to compile). Each tool runs in its own
subprocess and is timed whole, interpreter start-up and imports included, since that is what a user waits for.
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
    return sum(rss.get(pid, 0.0) for pid in tree)


def run(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> tuple[float, float, float, float, str]:
    """Run cmd with stdout to LOG.out, stderr to LOG.err; exits on failure.

    Returns (wall s, CPU s, CPU s used by everything else meanwhile, peak RSS MiB, stdout). Peak RSS is that of
    the whole process tree (the parent and its workers together), sampled every 0.1 s. On a 2-core machine
    another job starting mid-run inflates wall time far more than CPU time, and the third figure shows whether
    one did, so a contaminated run can be told from a clean one after the fact.
    """
    print(f"$ {' '.join(cmd)}", file=sys.stderr, flush=True)
    out_path, err_path = log.with_suffix(".out"), log.with_suffix(".err")
    with out_path.open("w") as out, err_path.open("w") as err:
        start, busy_before = time.perf_counter(), busy_cpu_seconds()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=ROOT)
        peak, done = [0.0], threading.Event()

        def sample():
            while not done.wait(0.1):
                peak[0] = max(peak[0], tree_rss_mib(proc.pid))

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
    parser.add_argument("--out", type=Path, help="keep hteval's outputs and cache here (default: a temp dir, removed)")
    args = parser.parse_args()
    if not WW_PYTHON.exists():
        sys.exit(f"{WW_PYTHON.relative_to(ROOT)} is missing; build it with: bash scripts/weightwatcher_env.sh")

    from hteval.io.bundled import bundled_checkpoint

    checkpoint = str(bundled_checkpoint())
    hteval = str(Path(sys.executable).parent / "hteval")
    work = args.out or Path(tempfile.mkdtemp(prefix="bench_ww_"))
    cache, cold_dir, warm_dir = work / "cache", work / "hteval-cold", work / "hteval-warm"
    for d in (cache, cold_dir, warm_dir):
        # a leftover layers.csv would make analyze resume instead of fit, and a filled cache would not be cold
        if d.exists() and any(d.iterdir()):
            sys.exit(f"{d} is not empty; give --out a fresh directory")
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HTEVAL_CACHE": str(cache)}
    print(f"checkpoint: {checkpoint}")
    print(f"cpus: {os.cpu_count()}, load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    rows = []
    for label, out_dir in (("hteval analyze (cold cache)", cold_dir), ("hteval analyze (warm cache)", warm_dir)):
        cmd = [hteval, "analyze", "--bundled", "--hierarchical", "--out", str(out_dir)]
        wall, cpu, other, rss, _ = run(cmd, work / out_dir.name, env)
        layers, breakdown = hteval_layers(out_dir)
        rows.append((label, layers, wall, cpu, other, rss))
        print(f"{label}: {layers} layers ({breakdown}), {wall:.1f} s", flush=True)

    wall, cpu, other, rss, text = run([str(WW_PYTHON), str(WW_HELPER), checkpoint], work / "weightwatcher")
    result = json.loads(next(line for line in text.splitlines() if line.startswith("RESULT "))[len("RESULT "):])
    rows.append(("weightwatcher 0.7.7 analyze()", result["layers"], wall, cpu, other, rss))
    print("\n".join(line for line in text.splitlines() if not line.startswith("RESULT ")))

    print(f"\n{'tool':32s} {'layers':>6s} {'wall s':>8s} {'CPU s':>8s} {'peak RSS MiB':>13s} {'others CPU s':>13s}")
    for label, layers, wall, cpu, other, rss in rows:
        print(f"{label:32s} {layers:6d} {wall:8.1f} {cpu:8.1f} {rss:13.0f} {other:13.1f}")
    print("(others CPU s: CPU time used by other processes during that run; near 0 means the timing is clean)")
    ww_wall, ww_cpu = rows[-1][2], rows[-1][3]
    print(f"ratio hteval/weightwatcher (wall): cold {rows[0][2] / ww_wall:.1f}x, warm {rows[1][2] / ww_wall:.1f}x")
    print(f"ratio hteval/weightwatcher (CPU):  cold {rows[0][3] / ww_cpu:.1f}x, warm {rows[1][3] / ww_cpu:.1f}x")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.out is None:
        shutil.rmtree(work)
    else:
        print(f"outputs and logs kept in {work}")


if __name__ == "__main__":
    main()
