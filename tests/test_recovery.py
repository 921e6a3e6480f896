"""Parameter recovery on exact finite-size spectra (Dumitriu-Edelman sampler, SPEC section 4).

CI runs a reduced version (three kappas at gamma = 0.5, m = 300, 2 chains x 500 draws; the compiled sampler is
shared with tests/test_infer.py's fixture). The full grid (kappa in {0.3, 1, 3, 10} x gamma in
{0.25, 0.5, 1}, m = 500, m = 2000 at kappa = 10, 4 chains x 1000) is marked slow: `pytest -m slow`, about 20 min.
"""

from __future__ import annotations

import pytest

from benchmarks.recovery import GAMMAS, KAPPAS, run_case


@pytest.mark.parametrize("kappa", [0.5, 3.0, 20.0])
def test_recovers_kappa_on_exact_finite_size_spectra(kappa):
    row = run_case(kappa, 0.5, 300, seed=500 + int(kappa * 10), chains=2, draws=500)
    assert abs(row["median"] - kappa) <= 3 * row["sd"], row
    assert row["sd"] < 0.3 * kappa  # informative, not just wide


@pytest.mark.slow
def test_full_recovery_grid():
    """The kappa x gamma grid with its seeds (those of benchmarks/recovery.py). With calibrated 90% intervals each case
    misses with probability 0.1 and falls beyond 2 sd with probability ~0.05, so on 12 cases the checks are the
    coverage count (>= 10/12) and |median - truth| <= 2 sd in >= 10/12; the replicate study
    (`benchmarks/recovery.py --replicates 8`) measures the bias and calibration behind it."""
    rows = [run_case(k, g, 2000 if k == 10 else 500, seed=100 + i, chains=4, draws=1000)
            for i, (g, k) in enumerate((g, k) for g in GAMMAS for k in KAPPAS)]
    assert all(r["converged"] for r in rows)
    assert sum(r["covered"] for r in rows) >= 10
    assert sum(r["within_2sd"] for r in rows) >= 10
