"""LAPACK without the GIL: the same numbers as scipy's wrappers, bit for bit, and another thread runs meanwhile."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import scipy.linalg

from hteval import lapack


@pytest.mark.parametrize("driver", ["gesdd", "gesvd"])
@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (3, 7), (200, 200), (500, 120)])
def test_singular_values_are_scipys_bit_for_bit(shape, driver):
    a = np.asfortranarray(np.random.default_rng(0).standard_normal(shape))
    expected = scipy.linalg.svd(a.copy(order="F"), compute_uv=False, check_finite=False, lapack_driver=driver)
    np.testing.assert_array_equal(lapack.singular_values(a.copy(order="F"), driver), expected)


@pytest.mark.parametrize(("rows", "columns", "block"), [(40, 8, 8), (300, 64, 32), (5, 64, 32)])
def test_tpqrt_is_scipys_bit_for_bit(rows, columns, block):
    rng = np.random.default_rng(1)
    r = np.asfortranarray(np.triu(rng.standard_normal((columns, columns))))
    b = np.asfortranarray(rng.standard_normal((rows, columns)))
    expected, _, _, info = scipy.linalg.lapack.dtpqrt(0, block, r.copy(order="F"), b.copy(order="F"))
    assert info == 0
    lapack.tpqrt(r, b, block)
    np.testing.assert_array_equal(np.triu(r), np.triu(expected))


def test_arrays_lapack_cannot_work_in_are_refused():
    with pytest.raises(ValueError, match="Fortran-ordered float64"):
        lapack.singular_values(np.ones((4, 3)))  # C order
    with pytest.raises(ValueError, match="Fortran-ordered float64"):
        lapack.singular_values(np.ones((4, 3), dtype=np.float32, order="F"))


def test_another_thread_runs_while_a_matrix_is_decomposed():
    """scipy's wrapper held the GIL for the whole call (0.5 s here): no other thread ran meanwhile, so a stop
    signal waited for it. Now the longest pause of a thread that ticks every millisecond is a few milliseconds."""
    a = np.asfortranarray(np.random.default_rng(2).standard_normal((1500, 1200)))
    worker = threading.Thread(target=lapack.singular_values, args=(a,))
    pauses, last = [], time.monotonic()
    worker.start()
    while worker.is_alive():
        time.sleep(0.001)
        now = time.monotonic()
        pauses.append(now - last)
        last = now
    assert len(pauses) > 20 and max(pauses) < 0.1
