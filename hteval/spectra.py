"""Tensor -> layer spectrum (SPEC section 1).

A weight becomes one or more matrices W of shape N x M with N >= M; its empirical spectral density is the M
eigenvalues of W^T W / N, computed as squared singular values of W in float64 divided by N (forming the Gram
would lose half the digits of the small eigenvalues). Eigenvalues at or below the dtype's resolution floor are
counted as censored, never silently dropped.
"""

import fnmatch
import functools
import logging
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, overload

import ml_dtypes
import numpy as np
import scipy.linalg

from hteval import names
from hteval.errors import InputError, LayerSkipped
from hteval.io import iter_tensors
from hteval.io.base import NamedTensor
from hteval.io.torch_reader import is_torch_tensor, tensor_to_numpy

logger = logging.getLogger(__name__)

OnError = Literal["raise", "skip"]
#: where singular values are computed: LAPACK on the CPU, or JAX on its default device
SVD_BACKENDS = ("host", "device")
_FLOAT_EXTRAS = frozenset(np.dtype(t) for t in (ml_dtypes.bfloat16, ml_dtypes.float8_e4m3fn,
                                                 ml_dtypes.float8_e5m2))


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
                 randomize: int | None = None, svd: str = "host") -> Iterator[LayerSpectrum | SkippedLayer]:
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
    """
    if on_error not in ("raise", "skip"):
        raise InputError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
    if svd not in SVD_BACKENDS:
        raise InputError(f"svd must be one of {', '.join(SVD_BACKENDS)}, not {svd!r}")
    selected = _selector(layers)
    tally = _Tally()
    for tensor in iter_tensors(path):
        if selected(tensor.name):
            tally.add(tensor)
            results = list(_layer_results(tensor, str(path), min_eigs, keep_slices, on_error, svd))
            yield from results
            if randomize is not None and isinstance(results[0], LayerSpectrum):
                yield from _randomized(tensor, str(path), min_eigs, keep_slices, randomize, svd)
    tally.check(str(path), layers)


def load_spectra(path: str | Path, *, layers: str | Sequence[str] | None = None, min_eigs: int = 16,
                 keep_slices: bool = False, on_error: OnError = "raise", svd: str = "host") -> list[LayerSpectrum]:
    """The spectra of a checkpoint's layers in checkpoint order (iter_spectra also lists skipped tensors)."""
    results = list(iter_spectra(path, layers=layers, min_eigs=min_eigs, keep_slices=keep_slices,
                                on_error=on_error, svd=svd))
    spectra = [r for r in results if isinstance(r, LayerSpectrum)]
    logger.info("%s: %d layers, %d tensors skipped", path, len(spectra), len(results) - len(spectra))
    return spectra


def _spectrum(W: Any, name: str, *, dtype: Any, min_eigs: int, keep_slices: bool,
              source: str | None, svd: str = "host") -> LayerSpectrum | list[LayerSpectrum]:
    array = tensor_to_numpy(W) if is_torch_tensor(W) else np.asarray(W)
    stored = _stored_dtype(array, dtype, name, source)
    _check_shape(array.shape, name, source, min_eigs=min_eigs, keep_slices=keep_slices)
    slices = _slices(array)
    _check_values(slices, name, source)
    eigs = _eigenvalues(slices, svd)
    floors = _floors(slices, stored)
    if not keep_slices:
        return _build(name, array.shape, eigs, floors, stored.name)
    return [_build(_slice_name(name, array.shape, s), array.shape, eigs[s:s + 1], floors[s:s + 1],
                   stored.name, first_slice=s) for s in range(len(slices))]


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
    x = np.asarray(array, dtype=np.float64)
    # Conv kernel (out, in, *spatial): one out x in matrix per spatial position, positions in C order.
    x = np.moveaxis(x.reshape(*x.shape[:2], -1), -1, 0)
    return x if x.shape[1] >= x.shape[2] else x.swapaxes(1, 2)


def _check_values(slices: np.ndarray, name: str, source: str | None) -> None:
    n_bad = slices.size - np.count_nonzero(np.isfinite(slices))
    if n_bad:
        raise InputError(f"{n_bad} non-finite values (NaN or inf)", source=source, layer=name)
    if not slices.any():
        raise LayerSkipped(name, "all-zero tensor: no spectrum")


def _eigenvalues(slices: np.ndarray, svd: str = "host") -> np.ndarray:
    """(n_slices, M) eigenvalues of W^T W / N per slice, each row ascending."""
    if svd == "device":
        singular = _device_singular_values(slices)
    else:
        singular = np.stack([_singular_values(matrix) for matrix in slices])
    return np.sort(singular**2 / slices.shape[1], axis=1)


def _floors(slices: np.ndarray, stored: np.dtype) -> np.ndarray:
    """Per-slice floor (eps_dtype * ||W||_F)^2 / N: the stored dtype's rounding noise, in eigenvalue units."""
    eps = float(ml_dtypes.finfo(stored).eps)
    return eps**2 * np.einsum("snm,snm->s", slices, slices) / slices.shape[1]


def _singular_values(matrix: np.ndarray) -> np.ndarray:
    # scipy's gesdd, not np.linalg.svd: with numpy's bundled OpenBLAS the latter took 7.5 s instead of 0.4 s
    # on the 30522 x 384 MiniLM word embedding.
    try:
        return scipy.linalg.svd(matrix, compute_uv=False, check_finite=False, lapack_driver="gesdd")
    except np.linalg.LinAlgError:
        # gesdd occasionally fails to converge where the slower QR-iteration driver does not.
        return scipy.linalg.svd(matrix, compute_uv=False, check_finite=False, lapack_driver="gesvd")


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
           first_slice: int = 0) -> LayerSpectrum:
    n_slices, m = eigs.shape
    n = max(shape[:2])
    kept = eigs > floors[:, None]
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


def _layer_results(tensor: NamedTensor, source: str, min_eigs: int, keep_slices: bool,
                   on_error: OnError, svd: str) -> Iterator[LayerSpectrum | SkippedLayer]:
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

    def add(self, tensor: NamedTensor) -> None:
        self.names.append(tensor.name)
        self.kinds[_kind(tensor)] += 1

    def check(self, source: str, layers: str | Sequence[str] | None) -> None:
        if not self.names:
            raise InputError("no tensors" + (f" match layers={layers!r}" if layers is not None else ""),
                             source=source)
        if layers is not None and not isinstance(layers, str):
            seen = set(self.names)
            missing = [name for name in layers if name not in seen]
            if missing:
                raise InputError(f"layers not found: {', '.join(missing)}", source=source)
        if not self.kinds["weight"]:
            found = ", ".join(f"{n} {kind}" for kind, n in self.kinds.items())
            raise InputError(f"no 2-D floating-point weights among {len(self.names)} tensors ({found})",
                             source=source)


def _kind(tensor: NamedTensor) -> str:
    """'weight' for a floating tensor of 2 or more dimensions, else what it is ('1-D', 'int64', ...)."""
    dtype, ndim = tensor.array.dtype, tensor.array.ndim
    if not (dtype.kind == "f" or dtype in _FLOAT_EXTRAS):
        return tensor.dtype
    return "weight" if ndim >= 2 else f"{ndim}-D"
