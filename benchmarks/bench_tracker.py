"""Training-loop tracker: the cost of one `Tracker.update` at the defaults (exact htmp) on a torch LeNet-5.

Run: python benchmarks/bench_tracker.py [--updates 20] [--out DIR]

LeNet-5 (conv 6x1x5x5, conv 16x6x5x5, fc 120x256, 84x120, 10x84, with their biases) stands in for a training run:
before each update every weight gets a small random step, so each update reads, decomposes and fits new weights.
Prints the first update apart (it imports the fitting and file code), the median and largest of the later ones,
what one drawing of the dynamics view costs (`plot()`; the tracker draws at most once a minute during training)
and whether JAX was imported. Target: the median later update at most 0.5 s.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from hteval.tracker import Tracker

TARGET_SECONDS = 0.5


class LeNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = torch.nn.Conv2d(1, 6, 5), torch.nn.Conv2d(6, 16, 5)
        self.fc1, self.fc2, self.fc3 = torch.nn.Linear(256, 120), torch.nn.Linear(120, 84), torch.nn.Linear(84, 10)

    def forward(self, x):
        pool = torch.nn.functional.max_pool2d
        x = pool(torch.relu(self.conv1(x)), 2)
        x = pool(torch.relu(self.conv2(x)), 2).flatten(1)
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=20, help="updates timed after the first")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}")
    torch.manual_seed(0)
    model = LeNet()
    out = args.out or Path(tempfile.mkdtemp(prefix="hteval-bench-tracker-"))
    seconds = []
    with Tracker(out) as tracker:
        for step in range(args.updates + 1):
            with torch.no_grad():  # a stand-in for an optimizer step
                for parameter in model.parameters():
                    parameter.add_(0.01 * parameter.abs().mean() * torch.randn_like(parameter))
            start = time.perf_counter()
            tracker.update(step, model)
            seconds.append(time.perf_counter() - start)
        start = time.perf_counter()
        tracker.plot()
        plot_seconds = time.perf_counter() - start
    rows = tracker.table
    fitted = rows[(rows.step == 0) & rows.model.notna()]
    print(f"layers fitted per update: {len(fitted)} of {int((rows.step == 0).sum())} ({', '.join(fitted.name)})")
    later = np.array(seconds[1:])
    print(f"first update: {seconds[0]:.3f} s")
    print(f"later updates ({later.size}): median {np.median(later):.3f} s, max {later.max():.3f} s "
          f"(target: median <= {TARGET_SECONDS} s: {'met' if np.median(later) <= TARGET_SECONDS else 'MISSED'})")
    print(f"one drawing of the dynamics view ({args.updates + 1} steps): {plot_seconds:.2f} s")
    print(f"JAX imported: {'jax' in sys.modules}; output in {out}")


if __name__ == "__main__":
    main()
