"""Start-up cost of the command line: `hteval --help` and `import hteval`, whole processes.

Run: python benchmarks/bench_startup.py [--repeats 7]

Each command runs in a fresh interpreter, timed from before the process starts to its exit (what a user waits
for); the median and the range of `--repeats` runs are printed. `hteval --help` must take at most 1 s.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HTEVAL = str(Path(sys.executable).parent / "hteval")
COMMANDS = {"hteval --help": [HTEVAL, "--help"], "hteval fit --help": [HTEVAL, "fit", "--help"],
            "python -c 'import hteval'": [sys.executable, "-c", "import hteval"],
            "python -c 'pass' (the interpreter alone)": [sys.executable, "-c", "pass"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    for label, command in COMMANDS.items():
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            subprocess.run(command, capture_output=True, check=True)
            times.append(time.perf_counter() - start)
        print(f"{label}: median {np.median(times):.3f} s, range {min(times):.3f}-{max(times):.3f} s")


if __name__ == "__main__":
    main()
