"""Tensor -> layer spectrum (SPEC section 1).

A weight becomes one or more matrices W of shape N x M with N >= M; its empirical spectral density is the M
eigenvalues of W^T W / N, computed as squared singular values of W in float64 divided by N (forming the Gram
would lose half the digits of the small eigenvalues). Eigenvalues at or below the dtype's resolution floor are
counted as censored, never silently dropped; `above_floor` is that rule, for computed and for given eigenvalues
alike.

On the host, a tensor is read in its stored dtype (a memory map for safetensors) and converted to float64 one
matrix, and for a tall matrix one row block, at a time: a tall matrix is first reduced to the triangular factor of
its QR (see _reduce), so the largest float64 buffer is one square-ish matrix, whatever the embedding's row count.
"""

import fnmatch
import functools
import logging
import os
import zlib
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, overload

import ml_dtypes
import numpy as np

from hteval import lapack, names
from hteval.errors import InputError, LayerSkipped
from hteval.frameworks import source_label
from hteval.io import iter_tensors
from hteval.io.base import NamedTensor, SkippedTensor
from hteval.io.torch_reader import is_torch_tensor, tensor_to_numpy

logger = logging.getLogger(__name__)

OnError = Literal["raise", "skip"]
#: where singular values are computed: LAPACK on the CPU, or JAX on its default device
SVD_BACKENDS = ("host", "device")
_FLOAT_EXTRAS = frozenset(np.dtype(t) for t in (ml_dtypes.bfloat16, ml_dtypes.float8_e4m3fn,
                                                 ml_dtypes.float8_e5m2))
#: N/M from which a matrix is first reduced to its M x M QR factor: dgesdd's own cut-over (MNTHR = 11/6 M)
_QR_FIRST_RATIO = 11 / 6
#: float64 bytes of a row block folded into R: single-threaded, 384 to 30720 rows of 384 columns were equally fast,
#: and with two OpenBLAS threads on busy cores larger blocks (fewer, larger BLAS calls) were faster; a block has
#: at least M rows
_BLOCK_BYTES = 32 << 20
#: dtpqrt's inner block size: 32 was fastest on 384 columns, 64 on 2048 (by 10%, 32000 and 5632 rows)
_TPQRT_NB, _TPQRT_NB_WIDE, _TPQRT_WIDE = 32, 64, 1024
#: rows of a row-major source converted per copy into a Fortran-ordered float64 buffer
_COPY_ROWS = 16
#: elements per chunk when counting non-finite values
_COUNT_ELEMENTS = 1 << 20


@dataclass(frozen=True, eq=False)
class LayerSpectrum:
    """The ESD of one layer: float64 eigenvalues of W^T W / N above the floor, and what is needed to fit them.

    `eigenvalues` is sorted ascending and holds only values above the floor; the `n_censored` values at or
    below their slice's floor are counted, not kept, so n_eigs + n_censored = M * n_slices and every kept
    eigenvalue is > 0. `slice_ids[k]` is the conv spatial slice (C order over the kernel's spatial axes) of
    `eigenvalues[k]`, 0 for a plain matrix. For a conv kernel each slice has its own floor (from that slice's
    Frobenius norm); `floor` is the largest of them.
    """

    name: str
    shape: tuple[int, ...]
    N: int
    M: int
    gamma: float
    n_slices: int
    n_eigs: int
    n_censored: int
    floor: float
    normalisation: str
    dtype: str
    eigenvalues: np.ndarray = field(repr=False)
    slice_ids: np.ndarray = field(repr=False)
    #: the spectrum of the layer's element-shuffled copy (iter_spectra(randomize=seed)), not of the layer itself
    randomized: bool = False

    @property
    def warnings(self) -> list[str]:
        """What every output of this layer says beside its numbers (`censoring_warning`)."""
        warning = censoring_warning(self.name, self.n_censored, self.n_eigs)
        return [warning] if warning else []

    def to_record(self, with_eigenvalues: bool = False) -> dict[str, Any]:
        """JSON-safe dict keyed by names.RECORD_FIELDS in order, then the eigenvalues or min/max/mean."""
        record = {key: _plain(getattr(self, key)) for key in names.RECORD_FIELDS}
        if with_eigenvalues:
            record[names.EIGENVALUES] = self.eigenvalues.tolist()
            record[names.SLICE_IDS] = self.slice_ids.tolist()
        else:
            record.update(_summary(self.eigenvalues))
        return record


@dataclass(frozen=True)
class SkippedLayer:
    """A tensor that gave no spectrum: status 'skipped' (not a layer) or 'error' (bad data)."""

    name: str
    shape: tuple[int, ...]
    reason: str
    status: str = names.STATUS_SKIPPED

    def to_record(self) -> dict[str, Any]:
        """JSON-safe dict: name, shape, status, reason."""
        return {names.NAME: self.name, names.SHAPE: list(self.shape), names.STATUS: self.status,
                names.REASON: self.reason}


def above_floor(eigenvalues: np.ndarray, floor: Any, *, source: str | None = None,
                layer: str | None = None) -> np.ndarray:
    """Which eigenvalues are kept (a boolean mask): those above `floor` (a scalar, or an array that broadcasts,
    e.g. one floor per slice as a column).

    The floor is the resolution bound on both sides: an eigenvalue of W^T W / N is >= 0, so one in [-floor, floor]
    is a zero or a small value lost in rounding (`eigvalsh` of a rank-deficient Gram gives values such as -7e-17),
    and is censored. Raises InputError for a NaN or inf, or for values below -floor, which no rounding explains.
    """
    values = np.asarray(eigenvalues, dtype=np.float64)
    bound = np.broadcast_to(np.asarray(floor, dtype=np.float64), values.shape)
    n_bad = values.size - int(np.count_nonzero(np.isfinite(values)))
    if n_bad:
        raise InputError(f"{n_bad} eigenvalue{'s are' if n_bad > 1 else ' is'} NaN or inf", source=source,
                         layer=layer)
    below = values < -bound
    if below.any():
        worst = np.argmin(np.where(below, values, np.inf))
        n = int(np.count_nonzero(below))
        raise InputError(f"{n} eigenvalue{'s' * (n > 1)} below -{bound.flat[worst]:.2g} (the resolution bound); "
                         f"the most negative is {values.flat[worst]:.3g}; eigenvalues of W^T W / N are >= 0 up to "
                         "rounding", source=source, layer=layer)
    return values > bound


def censoring_warning(name: str, n_censored: int, n_eigs: int) -> str | None:
    """The warning of a layer whose censored share exceeds names.CENSORED_SHARE_LIMIT, else None."""
    total = n_censored + n_eigs
    if not total or n_censored <= names.CENSORED_SHARE_LIMIT * total:
        return None
    return (f"{name}: {n_censored} of {total} eigenvalues ({n_censored / total:.0%}) are at or below the floor "
            f"(over {names.CENSORED_SHARE_LIMIT:.0%}: rank deficiency or pruning?); a structural zero is not a small "
            "eigenvalue, yet the fit counts each one as an eigenvalue below the floor, so kappa and scale depend on "
            "where the floor lies")


def censored_layers(records: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """name -> censored share of the records (layer records, rows of layers.csv) whose share exceeds
    names.CENSORED_SHARE_LIMIT, in order; rows without counts (skipped tensors, errors) are passed by."""
    found = {}
    for record in records:
        counts = (record.get(names.N_CENSORED), record.get(names.N_EIGS))
        if all(isinstance(c, (int, float, np.number)) and np.isfinite(c) for c in counts):
            if censoring_warning(record[names.NAME], int(counts[0]), int(counts[1])):
                found.setdefault(record[names.NAME], counts[0] / (counts[0] + counts[1]))
    return found


@overload
def spectrum(W: Any, name: str = ..., *, dtype: Any = ..., min_eigs: int = ...,
             keep_slices: Literal[False] = ...) -> LayerSpectrum: ...
@overload
def spectrum(W: Any, name: str = ..., *, dtype: Any = ..., min_eigs: int = ...,
             keep_slices: Literal[True]) -> list[LayerSpectrum]: ...
def spectrum(W: Any, name: str = "W", *, dtype: Any = None, min_eigs: int = 16,
             keep_slices: bool = False) -> LayerSpectrum | list[LayerSpectrum]:
    """The ESD of one weight tensor (numpy, jax or torch array; any float dtype incl. bfloat16).

    2-D tensors (linear layers, embeddings) are one matrix; a 3-D or 4-D conv kernel (out, in, *spatial) is
    one out x in matrix per spatial position, pooled into one spectrum, or one spectrum per slice (named
    `name[i,j]`, returned as a list) with keep_slices=True. `dtype` names the stored dtype when W was upcast
    after loading; it sets the floor. Raises LayerSkipped for 0-D/1-D tensors, all-zero tensors and fewer
    than `min_eigs` eigenvalues; InputError for integer, boolean, complex, empty or non-finite tensors.
    """
    return _spectrum(W, name, dtype=dtype, min_eigs=min_eigs, keep_slices=keep_slices, source=None)


def iter_spectra(path: str | Path, *, layers: str | Sequence[str] | None = None, min_eigs: int = 16,
                 keep_slices: bool = False, on_error: OnError = "raise",
                 randomize: int | None = None, svd: str = "host",
                 threads: int | None = 1) -> Iterator[LayerSpectrum | SkippedLayer]:
    """Yield a LayerSpectrum or a SkippedLayer for each tensor of a checkpoint, in checkpoint order.

    `layers` selects tensors: a glob pattern (fnmatch) or a list of exact names. Integer and boolean tensors
    are buffers (position ids, step counters, masks), reported as skipped. With on_error="raise" the first bad
    layer raises its InputError; with "skip" it becomes a SkippedLayer with status 'error' and reading goes
    on. A file without any 2-D floating-point weight, or a selection matching nothing, is an InputError.

    randomize=seed also yields, after each layer's spectrum, the spectrum of its element-shuffled copy
    (`randomized=True`, same name): the null model of the field, which keeps the weights' marginal
    distribution and destroys their correlations. The permutation derives from the seed and the layer name.

    svd="host" takes singular values with LAPACK (scipy) on the CPU; "device" with JAX (float64) on its default
    device, a GPU where there is one, compiling once per layer shape (38 MiniLM layers of 5 shapes on an H100:
    3.3 s with compilation, 2.5 s again, against 1.2 s with scipy, agreeing to 3e-13; benchmarks/bench_gpu.py).
    Reading a checkpoint does not import JAX unless svd="device".

    threads: tensors whose singular values are computed side by side on the host (None: the CPU count), each
    with single-threaded BLAS, up to threads + 1 tensors ahead of the one being yielded. On a machine whose
    cores are also busy with other work (the fits of `hteval analyze` in the consuming thread), multi-threaded
    OpenBLAS on each matrix spins and runs up to 10x slower than this. Results come out in checkpoint order.
    """
    if on_error not in ("raise", "skip"):
        raise InputError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
    if svd not in SVD_BACKENDS:
        raise InputError(f"svd must be one of {', '.join(SVD_BACKENDS)}, not {svd!r}")
    selected = _selector(layers)
    tally = _Tally()
    label = source_label(path)

    def one(tensor: NamedTensor) -> list[LayerSpectrum | SkippedLayer]:
        return tensor_spectra(tensor, source=label, min_eigs=min_eigs, keep_slices=keep_slices, on_error=on_error,
                              randomize=randomize, svd=svd)

    def chosen() -> Iterator[NamedTensor]:
        for tensor in iter_tensors(path):
            tally.every_name.append(tensor.name)
            if selected(tensor.name):
                tally.add(tensor)
                yield tensor

    threads = (os.cpu_count() or 1) if threads is None else threads
    if threads <= 1 or svd == "device":
        for tensor in chosen():
            yield from one(tensor)
    else:
        yield from _in_threads(one, chosen(), threads)
    tally.check(label, layers)


def _in_threads(work: Callable, items: Iterator, threads: int) -> Iterator:
    """work(item) for every item, `threads` at a time with single-threaded BLAS, yielded in order (each result an
    iterable). A failure is raised where its item's results would have been yielded.

    The threads are daemons, and closing the generator early (a stop, an error) drops the work not started without
    waiting for the work running: a run that is interrupted ends at once rather than after the singular values of
    its largest matrices, which are then discarded.
    """
    import queue
    import threading
    from concurrent.futures import Future

    from threadpoolctl import threadpool_limits

    tasks: queue.SimpleQueue = queue.SimpleQueue()

    def serve() -> None:
        while (task := tasks.get()) is not None:
            future, item = task
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(work(item))
                except Exception as err:  # noqa: BLE001 - raised in the consumer's thread, by result()
                    future.set_exception(err)

    workers = [threading.Thread(target=serve, name=f"hteval-svd-{i}", daemon=True) for i in range(threads)]
    with threadpool_limits(limits=1, user_api="blas"):
        for worker in workers:
            worker.start()
        pending: deque = deque()
        try:
            for item in items:
                pending.append(Future())
                tasks.put((pending[-1], item))
                if len(pending) > threads:
                    yield from pending.popleft().result()
            while pending:
                yield from pending.popleft().result()
        finally:
            for future in pending:  # the consumer stopped early or a tensor failed: drop what is not started
                future.cancel()
            for _ in workers:
                tasks.put(None)


def load_spectra(path: str | Path, *, layers: str | Sequence[str] | None = None, min_eigs: int = 16,
                 keep_slices: bool = False, on_error: OnError = "skip", svd: str = "host",
                 threads: int | None = None) -> list[LayerSpectrum]:
    """The spectra of a checkpoint's readable layers in checkpoint order (iter_spectra also lists skipped
    tensors); the singular values of `threads` tensors at a time (default: the CPU count).

    on_error="skip" (the default): a bad layer (NaN or inf weights, a complex or empty tensor) is left out, and a
    logged warning names each one with its reason, so that one bad tensor does not hide the others. "raise": the
    first bad layer raises its InputError. A file that cannot be read at all raises either way.
    """
    results = list(iter_spectra(path, layers=layers, min_eigs=min_eigs, keep_slices=keep_slices,
                                on_error=on_error, svd=svd, threads=threads))
    spectra = [r for r in results if isinstance(r, LayerSpectrum)]
    failed = [r for r in results if isinstance(r, SkippedLayer) and r.status == names.STATUS_ERROR]
    if failed:
        logger.warning("%s: %d of %d layers could not be read and are left out: %s", source_label(path), len(failed),
                       len(spectra) + len(failed), "; ".join(f"{r.name} ({r.reason})" for r in failed))
    logger.info("%s: %d layers, %d tensors skipped", path, len(spectra), len(results) - len(spectra))
    return spectra


def list_tensors(path: str | Path, *,
                 layers: str | Sequence[str] | None = None) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of each tensor that iter_spectra(path, layers=layers) reads, in checkpoint order, without
    computing any spectrum; raises the InputErrors that iter_spectra raises for the checkpoint as a whole (a
    selection that matches nothing, a name not found, no 2-D floating-point weight). A safetensors checkpoint is
    listed from its headers and index alone; other formats are read as iter_spectra reads them."""
    selected = _selector(layers)
    tally = _Tally()
    found = []
    for tensor in iter_tensors(path):
        tally.every_name.append(tensor.name)
        if selected(tensor.name):
            tally.add(tensor)
            shape = tensor.shape if isinstance(tensor, SkippedTensor) else tensor.array.shape
            found.append((tensor.name, tuple(int(d) for d in shape)))
    tally.check(source_label(path), layers)
    return found


def tensor_spectra(tensor: NamedTensor | SkippedTensor, *, source: str, min_eigs: int = 16, keep_slices: bool = False,
                   on_error: OnError = "raise", randomize: int | None = None,
                   svd: str = "host") -> list[LayerSpectrum | SkippedLayer]:
    """What iter_spectra yields for one tensor of a checkpoint (`hteval.io.iter_tensors`), with the same options;
    `source` names the checkpoint in errors. No check of the checkpoint as a whole (`list_tensors` makes it)."""
    results = list(_layer_results(tensor, source, min_eigs, keep_slices, on_error, svd))
    if randomize is not None and isinstance(results[0], LayerSpectrum):
        results += _randomized(tensor, source, min_eigs, keep_slices, randomize, svd)
    return results


def _spectrum(W: Any, name: str, *, dtype: Any, min_eigs: int, keep_slices: bool,
              source: str | None, svd: str = "host") -> LayerSpectrum | list[LayerSpectrum]:
    array = tensor_to_numpy(W) if is_torch_tensor(W) else np.asarray(W)
    stored = _stored_dtype(array, dtype, name, source)
    _check_shape(array.shape, name, source, min_eigs=min_eigs, keep_slices=keep_slices)
    if svd == "device":
        slices = _slices(array)
        _check_values(slices, name, source)
        eigs, floors = _eigenvalues(slices, svd), _floors(slices, stored)
    else:
        eigs, floors = _host_eigenvalues(array, stored, name, source)
    if not keep_slices:
        return _build(name, array.shape, eigs, floors, stored.name, source=source)
    return [_build(_slice_name(name, array.shape, s), array.shape, eigs[s:s + 1], floors[s:s + 1],
                   stored.name, first_slice=s, source=source) for s in range(len(eigs))]


def _stored_dtype(array: np.ndarray, dtype: Any, name: str, source: str | None) -> np.dtype:
    _require_float(array.dtype, name, source)
    if dtype is None:
        return array.dtype
    try:
        stored = np.dtype(dtype)
    except TypeError as err:
        raise InputError(f"unknown dtype {dtype!r}", source=source, layer=name) from err
    _require_float(stored, name, source)
    return stored


def _require_float(dtype: np.dtype, name: str, source: str | None) -> None:
    if dtype.kind == "f" or dtype in _FLOAT_EXTRAS:
        return
    integer = f"integer tensor ({dtype.name})"
    problems = {"b": "boolean tensor", "i": integer, "u": integer,
                "c": f"complex tensor ({dtype.name}); hteval reads real weights only"}
    problem = problems.get(dtype.kind, f"dtype {dtype}")
    raise InputError(f"{problem}: not a floating-point weight", source=source, layer=name)


def _check_shape(shape: tuple[int, ...], name: str, source: str | None, *, min_eigs: int,
                 keep_slices: bool) -> None:
    if 0 in shape:
        raise InputError(f"empty tensor of shape {list(shape)}", source=source, layer=name)
    if len(shape) < 2:
        raise LayerSkipped(name, f"{len(shape)}-D tensor (bias, norm or scalar), not a layer")
    n_slices = int(np.prod(shape[2:], dtype=np.int64))
    n_eigs = min(shape[:2]) * (1 if keep_slices else n_slices)
    if n_eigs < min_eigs:
        raise LayerSkipped(name, f"{n_eigs} eigenvalues < min_eigs={min_eigs}")


def _slices(array: np.ndarray) -> np.ndarray:
    """Float64 stack (n_slices, N, M) of the layer's matrices, each transposed so that N >= M."""
    return np.asarray(_slice_views(array), dtype=np.float64)


def _slice_views(array: np.ndarray) -> np.ndarray:
    """The (n_slices, N, M) stack of _slices as a view of the array, in its stored dtype."""
    # Conv kernel (out, in, *spatial): one out x in matrix per spatial position, positions in C order.
    x = np.moveaxis(array.reshape(*array.shape[:2], -1), -1, 0)
    return x if x.shape[1] >= x.shape[2] else x.swapaxes(1, 2)


def _check_values(slices: np.ndarray, name: str, source: str | None) -> None:
    n_bad = slices.size - np.count_nonzero(np.isfinite(slices))
    if n_bad:
        raise InputError(f"{n_bad} non-finite value{'s' * (n_bad > 1)} (NaN or inf)", source=source, layer=name)
    if not slices.any():
        raise LayerSkipped(name, "all-zero tensor: no spectrum")


def _eigenvalues(slices: np.ndarray, svd: str = "host") -> np.ndarray:
    """(n_slices, M) eigenvalues of W^T W / N per slice, each row ascending."""
    if svd == "device":
        singular = _device_singular_values(slices)
    else:
        singular = np.stack([_singular_values(matrix)[0] for matrix in slices])
    return np.sort(singular**2 / slices.shape[1], axis=1)


def _floors(slices: np.ndarray, stored: np.dtype) -> np.ndarray:
    """Per-slice floor (eps_dtype * ||W||_F)^2 / N: the stored dtype's rounding noise, in eigenvalue units."""
    # summed block by block as the host path does, so that both paths give the same floors to the last bit
    sumsq = [sum(_norm(block)[0] for block in _float64_blocks(matrix)) for matrix in slices]
    return _floor(np.array(sumsq), slices.shape[1], stored)


def _floor(sumsq: np.ndarray, n: int, stored: np.dtype) -> np.ndarray:
    return float(ml_dtypes.finfo(stored).eps) ** 2 * sumsq / n


def _host_eigenvalues(array: np.ndarray, stored: np.dtype, name: str,
                      source: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (n_slices, M, rows ascending) and floors (n_slices) with LAPACK, one matrix at a time.

    The tensor stays in its stored dtype (often a read-only memory map); each matrix is converted to float64 as
    it is reduced, its norm and finiteness checked on the way, so that no float64 copy of the whole tensor (or of
    more than one matrix) ever exists.
    """
    views = _slice_views(array)
    try:
        results = [_singular_values(view) for view in views]
    except _NonFinite:
        n_bad = _count_non_finite(array)
        raise InputError(f"{n_bad} non-finite value{'s' * (n_bad > 1)} (NaN or inf)", source=source,
                         layer=name) from None
    singular, sumsq, nonzero = zip(*results, strict=True)
    if not any(nonzero):
        raise LayerSkipped(name, "all-zero tensor: no spectrum")
    n = views.shape[1]
    return np.sort(np.stack(singular) ** 2 / n, axis=1), _floor(np.array(sumsq), n, stored)


class _NonFinite(Exception):
    """A NaN or inf met while converting a matrix; the caller counts them over the whole tensor for its message."""


def _singular_values(matrix: np.ndarray) -> tuple[np.ndarray, float, bool]:
    """Singular values of one N x M matrix (N >= M; any float dtype and strides) in float64, its squared Frobenius
    norm, and whether any entry is non-zero (the singular values of an all-zero matrix are zeros, without LAPACK)."""
    square, sumsq, nonzero = _reduce(matrix)
    if not nonzero:
        return np.zeros(matrix.shape[1]), 0.0, False
    try:
        return _lapack_svd(square, "gesdd"), sumsq, True
    except np.linalg.LinAlgError:
        # gesdd occasionally fails to converge where the slower QR-iteration driver does not. gesdd overwrote
        # its input, which is rebuilt (rare) rather than copied beforehand (always).
        return _lapack_svd(_reduce(matrix)[0], "gesvd"), sumsq, True


def _lapack_svd(matrix: np.ndarray, driver: str) -> np.ndarray:
    # scipy's LAPACK, not np.linalg.svd: with numpy's bundled OpenBLAS the latter took 7.5 s instead of 0.4 s on
    # the 30522 x 384 MiniLM word embedding. The matrix is a Fortran-ordered float64 array of our own, so LAPACK
    # works in it instead of on a copy. Called without holding the GIL (`hteval.lapack`), so that the reading
    # threads run side by side and a stopped run does not wait for the matrix in progress.
    return lapack.singular_values(matrix, driver)


def _reduce(matrix: np.ndarray) -> tuple[np.ndarray, float, bool]:
    """A Fortran-ordered float64 matrix with the singular values of `matrix`, which LAPACK may overwrite; the
    squared Frobenius norm of `matrix`; whether it has a non-zero entry.

    A square-ish matrix is its own float64 copy. A tall one (N >= 11/6 M) becomes the M x M triangular R of its
    QR factorisation, by tall-skinny QR: row blocks are converted to float64 one at a time and folded into R with
    LAPACK's triangular-pentagonal QR (dtpqrt: the QR of [R; block]), so that memory is R and one block of
    max(M rows, 32 MB) whatever N is, for the flops of one Householder QR. That QR is backward stable (the small
    singular values keep their digits, unlike the Gram's), and it is what gesdd would do first with the whole
    matrix.
    """
    n, m = matrix.shape
    tall = n >= _QR_FIRST_RATIO * m
    reduced, sumsq, nonzero = np.zeros((m, m), order="F") if tall else None, 0.0, False
    for block in _float64_blocks(matrix):
        block_sumsq, block_nonzero = _norm(block)
        sumsq, nonzero = sumsq + block_sumsq, nonzero or block_nonzero
        reduced = _fold(reduced, block) if tall else block
    return reduced, sumsq, nonzero


def _float64_blocks(matrix: np.ndarray) -> Iterator[np.ndarray]:
    """The matrix as Fortran-ordered float64 row blocks: a square-ish matrix in one block (a fresh copy), a tall
    one (see _reduce) in blocks of max(M rows, 32 MB) in one reused buffer."""
    n, m = matrix.shape
    rows = min(n, max(m, _BLOCK_BYTES // (8 * m))) if n >= _QR_FIRST_RATIO * m else n
    storage = np.empty(rows * m)
    for start in range(0, n, rows):
        block = np.ndarray((min(rows, n - start), m), buffer=storage, order="F")
        _fill(block, matrix[start:start + rows])
        yield block


def _fold(r: np.ndarray, block: np.ndarray) -> np.ndarray:
    """The triangular factor of the QR of [r; block], in r's memory (block's is overwritten)."""
    m = r.shape[1]
    nb = min(m, _TPQRT_NB_WIDE if m >= _TPQRT_WIDE else _TPQRT_NB)
    lapack.tpqrt(r, block, nb)  # without holding the GIL, as _lapack_svd
    return r


def _fill(out: np.ndarray, matrix: np.ndarray) -> None:
    """out[...] = matrix in float64, out Fortran-ordered."""
    if abs(matrix.strides[0]) <= abs(matrix.strides[1]):
        out[...] = matrix
        return
    # Row-major source: numpy transposes a few rows at a time (they stay in cache) 2-3x faster than all at once.
    for start in range(0, matrix.shape[0], _COPY_ROWS):
        out[start:start + _COPY_ROWS] = matrix[start:start + _COPY_ROWS]


def _norm(block: np.ndarray) -> tuple[float, bool]:
    """Squared Frobenius norm of a Fortran-contiguous float64 block and whether it has a non-zero entry; raises
    _NonFinite at a NaN or inf."""
    flat = block.reshape(-1, order="F")
    with np.errstate(over="ignore"):
        sumsq = float(np.dot(flat, flat))
    # A NaN or inf makes the sum non-finite; so can huge finite float64 values, hence the second look.
    if not np.isfinite(sumsq) and not np.isfinite(flat).all():
        raise _NonFinite
    # Likewise tiny float64 values can square to 0.
    return sumsq, sumsq > 0 or bool(flat.any())


def _count_non_finite(array: np.ndarray) -> int:
    """NaNs and infs in the tensor, counted a few rows at a time (the error path: this reads the tensor again)."""
    rows = array.reshape(array.shape[0], -1)
    step = max(1, _COUNT_ELEMENTS // rows.shape[1])
    return sum(int(np.count_nonzero(~np.isfinite(np.asarray(rows[i:i + step], dtype=np.float64))))
               for i in range(0, rows.shape[0], step))


def _device_singular_values(slices: np.ndarray) -> np.ndarray:
    import jax
    import jax.numpy as jnp

    if not jax.config.jax_enable_x64:
        raise InputError("svd='device' needs JAX in float64 (jax.config.update('jax_enable_x64', True))")
    return np.asarray(jax.device_get(_jax_svd()(jnp.asarray(slices, dtype=jnp.float64))))


@functools.cache
def _jax_svd():
    import jax

    return jax.jit(lambda stack: jax.numpy.linalg.svd(stack, compute_uv=False))  # batched over the slices


def _build(name: str, shape: tuple[int, ...], eigs: np.ndarray, floors: np.ndarray, dtype: str, *,
           first_slice: int = 0, source: str | None = None) -> LayerSpectrum:
    n_slices, m = eigs.shape
    n = max(shape[:2])
    # squares are >= 0, but a device SVD that fails to converge returns NaN rather than raising
    kept = above_floor(eigs, floors[:, None], source=source, layer=name)
    ids = np.broadcast_to(np.arange(first_slice, first_slice + n_slices)[:, None], eigs.shape)[kept]
    values = eigs[kept]
    order = np.argsort(values, kind="stable")
    return LayerSpectrum(name=name, shape=tuple(int(d) for d in shape), N=n, M=m, gamma=m / n,
                         n_slices=n_slices, n_eigs=int(values.size), n_censored=int(eigs.size - values.size),
                         floor=float(floors.max()), normalisation=names.NORMALISATION_GRAM_OVER_N,
                         dtype=dtype, eigenvalues=_read_only(values[order]),
                         slice_ids=_read_only(ids[order].astype(np.int64)))


def _slice_name(name: str, shape: tuple[int, ...], index: int) -> str:
    if len(shape) == 2:
        return name
    position = np.unravel_index(index, shape[2:])
    return f"{name}[{','.join(str(int(i)) for i in position)}]"


def _read_only(array: np.ndarray) -> np.ndarray:
    # The record is frozen; its arrays should not be mutable behind its back.
    array = np.ascontiguousarray(array)
    array.setflags(write=False)
    return array


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [int(v) for v in value]
    return value.item() if isinstance(value, np.generic) else value


def _summary(eigenvalues: np.ndarray) -> dict[str, float | None]:
    if eigenvalues.size == 0:
        return dict.fromkeys(names.EIG_SUMMARY_FIELDS)
    stats = (eigenvalues.min(), eigenvalues.max(), eigenvalues.mean())
    return {key: float(v) for key, v in zip(names.EIG_SUMMARY_FIELDS, stats, strict=True)}


def _selector(layers: str | Sequence[str] | None) -> Callable[[str], bool]:
    if layers is None:
        return lambda name: True
    if isinstance(layers, str):
        return lambda name: fnmatch.fnmatchcase(name, layers)
    wanted = set(layers)
    return lambda name: name in wanted


def _layer_results(tensor: NamedTensor | SkippedTensor, source: str, min_eigs: int, keep_slices: bool,
                   on_error: OnError, svd: str) -> Iterator[LayerSpectrum | SkippedLayer]:
    if isinstance(tensor, SkippedTensor):
        # the reader found it but has no values to give (tied copy, meta device) and says why
        yield SkippedLayer(tensor.name, tensor.shape, tensor.reason)
        return
    shape = tuple(int(d) for d in tensor.array.shape)
    if tensor.array.dtype.kind in "biu":
        # Checkpoints keep integer and boolean buffers (position ids, step counters, masks) beside weights.
        yield SkippedLayer(tensor.name, shape, f"{tensor.dtype} tensor: a buffer, not a float weight")
        return
    try:
        result = _spectrum(tensor.array, tensor.name, dtype=None, min_eigs=min_eigs, keep_slices=keep_slices,
                           source=source, svd=svd)
    except LayerSkipped as skip:
        yield SkippedLayer(tensor.name, shape, skip.reason)
        return
    except InputError as err:
        if on_error == "raise":
            raise
        yield SkippedLayer(tensor.name, shape, _bare_message(err), status=names.STATUS_ERROR)
        return
    yield from result if isinstance(result, list) else [result]


def _randomized(tensor: NamedTensor, source: str, min_eigs: int, keep_slices: bool,
                seed: int, svd: str) -> list[LayerSpectrum]:
    """The spectra of the tensor with its elements shuffled (one layer's copy at a time, in its stored dtype)."""
    rng = np.random.default_rng([seed, zlib.crc32(tensor.name.encode())])
    array = np.asarray(tensor.array)
    shuffled = rng.permutation(array.reshape(-1)).reshape(array.shape)
    result = _spectrum(shuffled, tensor.name, dtype=None, min_eigs=min_eigs, keep_slices=keep_slices, source=source,
                       svd=svd)
    return [replace(r, randomized=True) for r in (result if isinstance(result, list) else [result])]


def _bare_message(err: InputError) -> str:
    """The message without the 'source: layer: ' prefix, which a SkippedLayer record already carries."""
    prefix = ": ".join(p for p in (err.source, err.layer) if p)
    return str(err).removeprefix(f"{prefix}: ") if prefix else str(err)


@dataclass
class _Tally:
    """What a checkpoint held, to tell an empty selection or a file without weights from a normal run."""

    names: list[str] = field(default_factory=list)
    kinds: Counter = field(default_factory=Counter)
    every_name: list[str] = field(default_factory=list)  # selected or not: what a missing name is compared with

    def add(self, tensor: NamedTensor) -> None:
        self.names.append(tensor.name)
        self.kinds[_kind(tensor)] += 1

    def check(self, source: str, layers: str | Sequence[str] | None) -> None:
        if layers is not None and not isinstance(layers, str):
            seen = set(self.names)
            missing = [name for name in layers if name not in seen]
            if missing:
                raise InputError(f"layer{'s' * (len(missing) > 1)} not found: {', '.join(missing)}"
                                 f"{self._suggestions(missing)}; `hteval esd {source}` lists every tensor",
                                 source=source)
        if not self.names:
            raise InputError("no tensors" + (f" match layers={layers!r}" if layers is not None else ""),
                             source=source)
        if not self.kinds["weight"]:
            found = ", ".join(f"{n} {'tensor is' if n == 1 else 'tensors are'} {kind}"
                              for kind, n in self.kinds.items())
            shown = ", ".join(self.names[:5]) + (f" and {len(self.names) - 5} more" if len(self.names) > 5 else "")
            raise InputError(f"no 2-D floating-point weight to fit: {found} ({shown})", source=source)


    def _suggestions(self, missing: list[str]) -> str:
        """' (closest: a, b)' for the names nearest the missing ones, or nothing."""
        import difflib

        close = dict.fromkeys(m for name in missing
                              for m in difflib.get_close_matches(name, self.every_name, n=3, cutoff=0.5))
        return f" (closest: {', '.join(close)})" if close else ""


def _kind(tensor: NamedTensor) -> str:
    """'weight' for a floating tensor of 2 or more dimensions, else what it is ('1-D', 'int64', ...)."""
    if isinstance(tensor, SkippedTensor):
        return "skipped"
    dtype, ndim = tensor.array.dtype, tensor.array.ndim
    if not (dtype.kind == "f" or dtype in _FLOAT_EXTRAS):
        return tensor.dtype
    return "weight" if ndim >= 2 else f"{ndim}-D"
