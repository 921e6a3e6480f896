"""The LAPACK routines that singular values need (dgesdd, dgesvd, dtpqrt), called without holding Python's GIL.

scipy's wrappers (`scipy.linalg.svd`, `scipy.linalg.lapack.dtpqrt`) hold the GIL for the whole call: seconds to
minutes on a large layer, during which no other thread of the process runs Python. The threads that compute the
singular values of several tensors then take turns instead of running side by side, and a run that is stopped
waits for the matrix in progress before it can even see the signal (`hteval.interrupts`). These call the same
routines of the same library, scipy's LAPACK (through the function pointers that `scipy.linalg.cython_lapack`
exports), through ctypes, which releases the GIL for the call: the numbers are identical to scipy's.

Each takes Fortran-ordered float64 arrays of the caller's and works in them, as scipy's wrappers do with
overwrite_a=True.
"""

from __future__ import annotations

import ctypes
from functools import cache

import numpy as np

_INT, _DOUBLE = ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_double)
#: argument types of each routine, as scipy.linalg.cython_lapack declares them (int is LAPACK's 32-bit integer)
_SIGNATURES = {
    "dgesdd": (ctypes.c_char_p, _INT, _INT, _DOUBLE, _INT, _DOUBLE, _DOUBLE, _INT, _DOUBLE, _INT, _DOUBLE, _INT,
               _INT, _INT),
    "dgesvd": (ctypes.c_char_p, ctypes.c_char_p, _INT, _INT, _DOUBLE, _INT, _DOUBLE, _DOUBLE, _INT, _DOUBLE, _INT,
               _DOUBLE, _INT, _INT),
    "dtpqrt": (_INT, _INT, _INT, _INT, _DOUBLE, _INT, _DOUBLE, _INT, _DOUBLE, _INT, _DOUBLE, _INT),
}


def singular_values(a: np.ndarray, driver: str = "gesdd") -> np.ndarray:
    """The singular values of `a` (Fortran-ordered float64, overwritten), descending, as scipy.linalg.svd(a,
    compute_uv=False, lapack_driver=driver) gives them; np.linalg.LinAlgError where LAPACK does not converge."""
    a = _checked(a)
    m, n = a.shape
    s = np.empty(min(m, n))
    unused, iwork = np.empty(1), np.empty(8 * min(m, n), dtype=np.intc)
    sizes = [ctypes.c_int(v) for v in (m, n, max(m, 1), 1)]
    lwork, info = ctypes.c_int(-1), ctypes.c_int(0)

    def call(work: np.ndarray) -> None:
        m_, n_, lda, one = (ctypes.byref(v) for v in sizes)
        if driver == "gesdd":
            _routine("dgesdd")(b"N", m_, n_, _doubles(a), lda, _doubles(s), _doubles(unused), one, _doubles(unused),
                               one, _doubles(work), ctypes.byref(lwork), iwork.ctypes.data_as(_INT),
                               ctypes.byref(info))
        else:
            _routine("dgesvd")(b"N", b"N", m_, n_, _doubles(a), lda, _doubles(s), _doubles(unused), one,
                               _doubles(unused), one, _doubles(work), ctypes.byref(lwork), ctypes.byref(info))

    _with_workspace(call, lwork, info)
    if info.value > 0:
        raise np.linalg.LinAlgError("SVD did not converge")
    return s


def tpqrt(r: np.ndarray, b: np.ndarray, block: int) -> None:
    """R of the QR factorisation of [r; b] into r (n x n upper triangular, Fortran-ordered float64), with LAPACK's
    dtpqrt (l = 0: b is m x n rectangular, overwritten) and inner block size `block`."""
    r, b = _checked(r), _checked(b)
    m, n = b.shape
    t, work = np.empty((block, n), order="F"), np.empty(block * n)
    ints = [ctypes.c_int(v) for v in (m, n, 0, block, max(n, 1), max(m, 1), block)]
    info = ctypes.c_int(0)
    m_, n_, l_, nb, lda, ldb, ldt = (ctypes.byref(v) for v in ints)
    _routine("dtpqrt")(m_, n_, l_, nb, _doubles(r), lda, _doubles(b), ldb, _doubles(t), ldt, _doubles(work),
                       ctypes.byref(info))
    if info.value:
        raise RuntimeError(f"dtpqrt rejected its argument {-info.value}")


def _with_workspace(call, lwork: ctypes.c_int, info: ctypes.c_int) -> None:
    """A workspace query (lwork = -1), then the call with the optimal workspace, as scipy's wrappers size it."""
    query = np.empty(1)
    call(query)
    if info.value < 0:
        raise ValueError(f"LAPACK rejected its argument {-info.value}")
    lwork.value = max(int(query[0]), 1)
    call(np.empty(lwork.value))
    if info.value < 0:
        raise ValueError(f"LAPACK rejected its argument {-info.value}")


def _checked(a: np.ndarray) -> np.ndarray:
    if a.dtype != np.float64 or not a.flags.f_contiguous or not a.flags.writeable:
        raise ValueError("LAPACK works in a writeable, Fortran-ordered float64 array")
    return a


def _doubles(a: np.ndarray):
    return a.ctypes.data_as(_DOUBLE)


@cache
def _routine(name: str):
    """The routine as a ctypes function: a CFUNCTYPE call releases the GIL (a PYFUNCTYPE one would not)."""
    from scipy.linalg import cython_lapack

    capsule = cython_lapack.__pyx_capi__[name]
    get_name, get_pointer = ctypes.pythonapi.PyCapsule_GetName, ctypes.pythonapi.PyCapsule_GetPointer
    get_name.restype, get_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
    get_pointer.restype, get_pointer.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    return ctypes.CFUNCTYPE(None, *_SIGNATURES[name])(get_pointer(capsule, get_name(capsule)))


__all__ = ["singular_values", "tpqrt"]
