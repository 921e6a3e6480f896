"""Wall time and effective samples per second of the default HTMP fit (4 chains x 1000 draws after 1000 warm-up).

Run: python benchmarks/bench_fit.py [--sizes 384 1000 4096] [--model htmp-exact]
Times include compilation (the first fit of a new shape compiles; a second fit of the same shape does not).
"""

from __future__ import annotations

import argparse
import time

import jax

jax.config.update("jax_enable_x64", True)

from hteval.infer import fit  # noqa: E402
from hteval.sampling import sample_htmp_spectrum  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[384, 1000, 4096])
    parser.add_argument("--gamma", type=float, default=0.5)
    parser.add_argument("--model", default="htmp", choices=("htmp", "htmp-exact"),
                        help="the iid likelihood (issue 3's figures) or the exact joint one (the default of fit)")
    args = parser.parse_args()
    print(f"device: {jax.devices()[0].device_kind}")
    for m in args.sizes:
        x = sample_htmp_spectrum(m, m, args.gamma, 2.0)
        start = time.perf_counter()
        result = fit(x, gamma=args.gamma, model=args.model)
        wall = time.perf_counter() - start
        start = time.perf_counter()
        # same shapes: compiled programs reused
        fit(sample_htmp_spectrum(m + 1, m, args.gamma, 2.0), gamma=args.gamma, model=args.model)
        again = time.perf_counter() - start
        ess = result.summary["ess_bulk"].min()
        steps = int(result.data["sample_stats"]["n_steps"].sum())
        print(f"m = {m:5d}: {wall:6.1f} s including compilation (table build included for the first size), "
              f"{again:5.1f} s for a second layer of the same shape; min bulk ESS {ess:.0f}, "
              f"{ess / wall:.0f} effective samples/s cold, {ess / again:.0f} warm; {steps} leapfrog steps after "
              f"warm-up; converged {result.converged}", flush=True)


if __name__ == "__main__":
    main()
