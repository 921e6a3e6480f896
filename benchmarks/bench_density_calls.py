"""Per-call time of every public density function called eagerly in a loop with new parameter values.

Run: python benchmarks/bench_density_calls.py [--sizes 1000 100000] [--calls 15] [--only htmp_cdf mp_icdf ...]

For each function and size it prints the first call (compilation included), the median and the range of `--calls`
later calls, each with new parameter values on points of the same shape, their median CPU time (the process's,
all threads: steadier than wall time on a loaded machine), and the XLA compilations and traces during those calls
(expected: none). Criteria: after the first call, at most 10 ms a call at 1000 points and
50 ms at 100,000. The functions are called as a user calls them: `hteval.<name>` where hteval exports it (float64
whatever the caller's setting), the module's function otherwise, and the numpyro distributions' methods on a new
distribution per call. One gamma (0.25) for the HTMP family, so its contour table is built once. The points are
eigenvalues of HTMP(0.25, 2, 0.01) layers (1e-4 / x for the inverse model, so that its s = scale / x is that
sample scaled to mean 1), the probabilities a uniform grid.
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import time

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

import hteval  # noqa: E402
from hteval.densities import correlated_mp, htmp, inverse_htmp, mp  # noqa: E402

GAMMA = 0.25
COMPILE = "/jax/core/compile/backend_compile_duration"
TRACE = "/jax/core/compile/jaxpr_trace_duration"


@contextlib.contextmanager
def counting():
    """Counts of XLA compilations and jaxpr traces inside the block (a dict, filled as they happen)."""
    counts = {COMPILE: 0, TRACE: 0}

    def listener(event, duration, **kwargs):
        if event in counts:
            counts[event] += 1

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield counts
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def _kappa(i):
    return float(np.geomspace(0.5, 20.0, 41)[i % 41])


def _scale(i):
    return 0.01 * (1.0 + 0.01 * i)


def _nu(i):
    return 0.2 + 0.01 * (i % 50)


def _on_points(f, params):
    return lambda x, q, i: f(x, *params(i))


def _on_inverse_points(f, params):
    """The inverse model's points: 1e-4 / x, so that scale / x' = x / 0.01 is the HTMP sample of mean 1."""
    return lambda x, q, i: f(1e-4 / x, *params(i))


def _on_probabilities(f, params):
    return lambda x, q, i: f(q, *params(i))


def _law(make, method, inverse=False):
    return lambda x, q, i: getattr(make(i), method)(q if method == "icdf" else 1e-4 / x if inverse else x)


def functions():
    """name -> f(points, probabilities, i): one call with the i-th parameter values."""
    htmp_params = lambda i: (GAMMA, _kappa(i), _scale(i))  # noqa: E731
    mp_params = lambda i: (GAMMA, _scale(i))  # noqa: E731
    correlated_params = lambda i: (GAMMA, _nu(i), _scale(i), 1000)  # noqa: E731
    out = {}
    for name in ("htmp_logpdf", "htmp_cdf", "htmp_log_cdf", "htmp_log_sf"):
        out[name] = _on_points(getattr(hteval, name), htmp_params)
    for name in ("inverse_htmp_logpdf", "inverse_htmp_cdf", "inverse_htmp_log_cdf"):
        out[name] = _on_inverse_points(getattr(hteval, name), htmp_params)
    out["htmp_icdf"] = _on_probabilities(hteval.htmp_icdf, htmp_params)
    out["inverse_htmp_icdf"] = _on_probabilities(inverse_htmp.inverse_htmp_icdf, htmp_params)
    for name in ("mp_logpdf", "mp_cdf"):
        out[name] = _on_points(getattr(hteval, name), mp_params)
    out["mp_icdf"] = _on_probabilities(hteval.mp_icdf, mp_params)
    for name in ("correlated_mp_logpdf", "correlated_mp_cdf"):
        out[name] = _on_points(getattr(correlated_mp, name), correlated_params)
    out["correlated_mp_icdf"] = _on_probabilities(correlated_mp.correlated_mp_icdf, correlated_params)
    laws = {"HTMP": lambda i: htmp.HTMP(GAMMA, _kappa(i), _scale(i)),
            "InverseHTMP": lambda i: inverse_htmp.InverseHTMP(GAMMA, _kappa(i), _scale(i)),
            "MarchenkoPastur": lambda i: mp.MarchenkoPastur(GAMMA, _scale(i))}
    for law, make in laws.items():
        for method in ("log_prob", "cdf", "icdf"):
            out[f"{law}.{method}"] = _law(make, method, inverse=law == "InverseHTMP")
    return out


def points(n: int) -> tuple[np.ndarray, np.ndarray]:
    """n eigenvalues of HTMP(0.25, 2, 0.01) layers of 1000, and n probabilities strictly inside (0, 1)."""
    x = np.concatenate([hteval.sample_htmp_spectrum(seed, 1000, GAMMA, 2.0, 0.01)
                        for seed in range(-(-n // 1000))])[:n]
    return x, (np.arange(n) + 0.5) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 100_000])
    parser.add_argument("--calls", type=int, default=15)
    parser.add_argument("--only", nargs="+", help="function names (as printed) to time")
    args = parser.parse_args()
    table = {k: f for k, f in functions().items() if not args.only or k in args.only}
    print(f"device: {jax.devices()[0].device_kind} ({platform.processor() or platform.machine()}), "
          f"gamma = {GAMMA}, {args.calls} calls per row")
    print(f"{'function':24s} {'points':>7s} {'first call':>11s} {'median':>9s} {'range':>19s} {'cpu':>9s} "
          f"{'compiles':>8s} {'traces':>6s}")
    for n in args.sizes:
        x, q = points(n)
        for name, f in table.items():
            start = time.perf_counter()
            jax.block_until_ready(f(x, q, 0))
            first = time.perf_counter() - start
            times, cpu = [], []
            with counting() as counts:
                for i in range(1, args.calls + 1):
                    start, start_cpu = time.perf_counter(), time.process_time()
                    jax.block_until_ready(f(x, q, i))
                    times.append(time.perf_counter() - start)
                    cpu.append(time.process_time() - start_cpu)
            ms = np.array(times) * 1e3
            print(f"{name:24s} {n:7d} {first:9.2f} s {np.median(ms):6.2f} ms {ms.min():7.2f} - {ms.max():7.2f} ms "
                  f"{np.median(cpu) * 1e3:6.2f} ms {counts[COMPILE]:8d} {counts[TRACE]:6d}", flush=True)


if __name__ == "__main__":
    main()
