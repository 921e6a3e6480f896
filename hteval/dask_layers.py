"""One checkpoint's spectra computed on a Dask cluster: each tensor, or group of small tensors, is a task that reads
its tensors from the checkpoint path on its worker.

The client lists the checkpoint from its headers and shard index (no tensor values), then submits one task per
tensor of at least GROUP_BYTES in float64 and one per group of smaller ones. A task opens the checkpoint path
itself (a path its worker sees, or a URL of an object store that fsspec reaches: then it downloads the headers and
its own tensors' byte ranges only), reads its tensors one at a time, computes their spectra as `iter_spectra` does
and returns them (the eigenvalues: 8 bytes times the smaller dimension), or the SkippedLayer that says why a
tensor has none. No tensor passes through the client. The client yields the spectra as their tasks finish to
`analyze` or `compare_layers`, which fit and write them as on one machine: the client is the only writer, so
resuming, error rows and the report are unchanged, and layers that a resumed run already has are not submitted.
Checkpoints other than safetensors (a file, a sharded directory or an index) have no random access to one tensor,
and are one task each.

Costlier tasks get higher priority, so the largest matrices start first and a run does not end with one worker
finishing a large matrix alone; across checkpoints (`LayerCluster.prefetch`) earlier checkpoints come first.

Faults: the scheduler reruns elsewhere the tasks of a worker that dies mid-task (Dask's
distributed.scheduler.allowed-failures, 3 by default); a task that raises is retried RETRIES times; a group that
still fails is split into one task per tensor, and a tensor that fails alone gets an error row (status error, the
exception as its reason) while the run goes on. Each task's result is gathered once, so a rerun gives no duplicate
row and no row is lost.

Devices: svd="auto" is decided on each worker, so a worker whose JAX has a GPU takes its singular values there.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

from hteval import names
from hteval.errors import InputError
from hteval.frameworks import is_path, source_label
from hteval.io import iter_tensors
from hteval.io.dispatch import SAFETENSORS_FORMATS, checkpoint_path, detect_format
from hteval.parallel import worker_count
from hteval.spectra import LayerSpectrum, SkippedLayer, iter_spectra, list_tensors, tensor_spectra

logger = logging.getLogger(__name__)

#: where a checkpoint's singular values are computed: this machine, or a Dask cluster
ENGINES = ("local", "dask")
#: float64 bytes from which a tensor is a task of its own (1024 x 1024: about 0.3 s of singular values on one
#: core); smaller tensors are packed into tasks of about this size, so that a norm or a bias costs no task
GROUP_BYTES = 8 << 20
#: reruns of a task that raised (a transient read error on a network file system)
RETRIES = 2
#: formats whose tensors a task can read one at a time without reading the others
_RANDOM_ACCESS = SAFETENSORS_FORMATS
#: priorities of one checkpoint's tasks lie in [-order * stride, -order * stride + stride): earlier checkpoints first
_PRIORITY_STRIDE = 1 << 32
#: device files of an NVIDIA, TPU or AMD accelerator: without one JAX is not imported to ask
_DEVICE_FILES = ("/dev/nvidiactl", "/dev/accel0", "/dev/kfd")


def check_engine(source: Any, engine: str, scheduler: Any) -> None:
    """InputError for an unknown engine, a scheduler without engine='dask', or a model in memory sent to a cluster."""
    if engine not in ENGINES:
        raise InputError(f"unknown engine {engine!r}; choose from {', '.join(ENGINES)}")
    if scheduler is not None and engine != "dask":
        raise InputError("a scheduler address needs engine='dask'")
    if engine == "dask" and not is_path(source):
        raise InputError("engine='dask' reads a checkpoint from its path on the workers; a model in memory is "
                         "analyzed here (engine='local')")


@dataclass(frozen=True)
class TensorGroup:
    """The tensors of one task: their names and shapes in checkpoint order (names None: every tensor of the
    selection, for a checkpoint read whole)."""

    names: tuple[str, ...] | None
    shapes: tuple[tuple[int, ...], ...] = ()

    @property
    def cost(self) -> float:
        return sum(svd_flops(shape) for shape in self.shapes)

    def split(self) -> list[TensorGroup]:
        return [TensorGroup((name,), (shape,)) for name, shape in zip(self.names or (), self.shapes, strict=True)]


def svd_flops(shape: Sequence[int]) -> float:
    """Rough flops of a tensor's singular values: N M^2 per N x M matrix (N >= M), for a tall matrix's QR and a
    square one's bidiagonalisation alike; nothing for a tensor of fewer than 2 dimensions."""
    if len(shape) < 2:
        return 0.0
    n, m = max(shape[:2]), min(shape[:2])
    return float(math.prod(shape[2:])) * n * m * m


def plan_groups(tensors: Sequence[tuple[str, tuple[int, ...]]], group_bytes: int = GROUP_BYTES) -> list[TensorGroup]:
    """One group per tensor of at least `group_bytes` in float64; smaller tensors packed in checkpoint order into
    groups of at most about `group_bytes`; a name listed twice (in two shards) once, as `iter_spectra` reads both
    under it. Costliest group first."""
    groups, small, small_bytes = [], [], 0
    for name, shape in _unique(tensors):
        size = 8 * math.prod(shape)
        if size >= group_bytes:
            groups.append(TensorGroup((name,), (shape,)))
            continue
        if small and small_bytes + size > group_bytes:
            groups.append(_group(small))
            small, small_bytes = [], 0
        small.append((name, shape))
        small_bytes += size
    if small:
        groups.append(_group(small))
    return sorted(groups, key=lambda group: -group.cost)


def _unique(tensors: Sequence[tuple[str, tuple[int, ...]]]) -> list[tuple[str, tuple[int, ...]]]:
    seen: set[str] = set()
    return [(name, shape) for name, shape in tensors if not (name in seen or seen.add(name))]


def _group(members: list[tuple[str, tuple[int, ...]]]) -> TensorGroup:
    return TensorGroup(tuple(name for name, _ in members), tuple(shape for _, shape in members))


def group_spectra(path: str, selection: str | Sequence[str] | None, randomize: int | None,
                  svd: str) -> list[LayerSpectrum | SkippedLayer]:
    """A task's result: the spectra of the selected tensors of the checkpoint at `path`, read and computed on this
    worker one tensor at a time (svd="auto": on this worker's GPU where it has one)."""
    svd = _worker_svd(svd)
    if svd == "device":
        from hteval.precision import float64

        context = float64()
    else:
        context = nullcontext()
    with context:
        if selection is None or isinstance(selection, str):  # a checkpoint read whole, checked as a whole
            return list(iter_spectra(path, layers=selection, on_error="skip", randomize=randomize, svd=svd,
                                     threads=1))
        # named tensors of a checkpoint the client listed and checked: this group alone may hold no weight at all
        wanted, label, results = set(selection), source_label(path), []
        # by name before any byte is read: over a URL, each other tensor read would be a download
        for tensor in iter_tensors(path, names=wanted):
            results += tensor_spectra(tensor, source=label, on_error="skip", randomize=randomize, svd=svd)
        return results


def _worker_svd(svd: str) -> str:
    """svd="auto" decided on this machine: "device" where JAX runs on a GPU or TPU, else "host"."""
    if svd != "auto":
        return svd
    if not any(os.path.exists(device) for device in _DEVICE_FILES):
        return "host"
    import jax

    return "device" if jax.default_backend() != "cpu" else "host"


class CheckpointTasks:
    """One checkpoint's spectra being computed on a cluster: the tasks are submitted when this is made, and
    iterating yields every LayerSpectrum or SkippedLayer as its task finishes, except those of `finished` layers
    (no task reads them). `names`: the selected tensors in checkpoint order, finished ones included."""

    def __init__(self, client, path, *, layers=None, randomize: int | None = None, svd: str = "auto",
                 finished: Collection[str] = (), order: int = 0, group_bytes: int = GROUP_BYTES):
        self._client, self._path, self._layers = client, str(path), layers
        self._randomize, self._svd, self._finished = randomize, svd, frozenset(finished)
        self._base = -order * _PRIORITY_STRIDE
        if detect_format(checkpoint_path(path)) in _RANDOM_ACCESS:
            listing = list_tensors(path, layers=layers)
            self.names = list(dict.fromkeys(name for name, _ in listing))
            self._whole = False
            groups = plan_groups([t for t in listing if t[0] not in self._finished], group_bytes)
        else:
            self.names, self._whole, groups = [], True, [TensorGroup(None)]
        # costliest first: priorities count down from the checkpoint's base
        self._futures = {self._submit(group, len(groups) - rank): group for rank, group in enumerate(groups)}

    def _submit(self, group: TensorGroup, rank: int):
        selection = self._layers if group.names is None else list(group.names)
        return self._client.submit(group_spectra, self._path, selection, self._randomize, self._svd, pure=False,
                                   retries=RETRIES, priority=self._base + rank)

    def __iter__(self) -> Iterator[LayerSpectrum | SkippedLayer]:
        from dask.distributed import as_completed

        pending = as_completed(list(self._futures))
        try:
            for future in pending:
                group = self._futures.pop(future)
                for result in self._outcome(future, group, pending):
                    if self._whole and result.name not in self.names:
                        self.names.append(result.name)
                    if result.name not in self._finished:
                        yield result
        finally:
            self.cancel()  # the consumer stopped (an error, an interrupt): no work for nobody

    @property
    def pending(self) -> int:
        """Tasks not yet gathered."""
        return len(self._futures)

    def cancel(self) -> None:
        for future in self._futures:
            future.cancel()
        self._futures.clear()

    def _outcome(self, future, group: TensorGroup, pending) -> list[LayerSpectrum | SkippedLayer]:
        """A finished task's spectra; for one that failed after its retries, its tensors' tasks one by one, or the
        error row of the one tensor it had. A checkpoint read whole that fails fails the run, as on one machine."""
        error = future.exception()
        if error is None:
            return [_frozen(result) for result in future.result()]
        if group.names is None:
            raise error
        if len(group.names) > 1:
            logger.warning("%s: a task of %d tensors failed (%s: %s); computing them one by one", self._path,
                           len(group.names), type(error).__name__, error)
            for single in group.split():
                retry = self._submit(single, 0)
                self._futures[retry] = single
                pending.add(retry)
            return []
        reason = f"{type(error).__name__}: {' '.join(str(error).split())}"
        logger.warning("%s: %s: %s", self._path, group.names[0], reason)
        return [SkippedLayer(group.names[0], group.shapes[0], reason, status=names.STATUS_ERROR)]


def _frozen(result: LayerSpectrum | SkippedLayer) -> LayerSpectrum | SkippedLayer:
    """A spectrum as iter_spectra gives it: its arrays read-only again (pickling does not keep the flag)."""
    if isinstance(result, LayerSpectrum):
        result.eigenvalues.setflags(write=False)
        result.slice_ids.setflags(write=False)
    return result


class LayerCluster:
    """A Dask client that computes checkpoints' spectra. `spectra(path, ...)` submits one checkpoint's tasks, or
    takes those that `prefetch` submitted with the same request; `threads`: the cluster's task slots; `waiting`:
    the prefetched tasks not yet gathered."""

    def __init__(self, client):
        self.client = client
        self._prefetched: dict[tuple, CheckpointTasks] = {}
        self._submitted = 0

    @property
    def threads(self) -> int:
        return sum(self.client.nthreads().values())

    @property
    def waiting(self) -> int:
        """Tasks of prefetched checkpoints not yet gathered."""
        return sum(tasks.pending for tasks in self._prefetched.values())

    def spectra(self, path, *, layers=None, randomize: int | None = None, svd: str = "auto",
                finished: Collection[str] = ()) -> CheckpointTasks:
        request = _request(path, layers, randomize, svd)
        tasks = self._prefetched.pop(request, None)
        for other in [r for r in self._prefetched if r[0] == request[0]]:  # this path asked otherwise: not needed
            self._prefetched.pop(other).cancel()
        return tasks if tasks is not None else self._submit(path, layers, randomize, svd, finished)

    def prefetch(self, path, *, layers=None, randomize: int | None = None, svd: str = "auto",
                 finished: Collection[str] = ()) -> None:
        """Submit a checkpoint's tasks now, for a later `spectra` with the same path, layers, randomize and svd.
        `finished` may be older than that call's: layers finished since are computed and passed by."""
        request = _request(path, layers, randomize, svd)
        if request not in self._prefetched:
            self._prefetched[request] = self._submit(path, layers, randomize, svd, finished)

    def close(self) -> None:
        for tasks in self._prefetched.values():
            tasks.cancel()
        self._prefetched.clear()

    def _submit(self, path, layers, randomize, svd, finished) -> CheckpointTasks:
        self._submitted += 1
        return CheckpointTasks(self.client, path, layers=layers, randomize=randomize, svd=svd, finished=finished,
                               order=self._submitted)


def _request(path, layers, randomize, svd) -> tuple:
    return str(path), layers if layers is None or isinstance(layers, str) else tuple(layers), randomize, svd


@contextmanager
def layer_cluster(scheduler: str | LayerCluster | None = None, workers: int | None = None) -> Iterator[LayerCluster]:
    """A LayerCluster on the scheduler at `scheduler` ("tcp://host:8786"), or on a LocalCluster of `workers`
    single-threaded worker processes (default: `worker_count`) bound to 127.0.0.1 without a dashboard, closed on
    exit; a LayerCluster given as `scheduler` is used as it is and left open."""
    if isinstance(scheduler, LayerCluster):
        yield scheduler
        return
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError as err:
        raise InputError("engine='dask' needs Dask: pip install 'hteval[distributed]'") from err
    cluster = None
    if scheduler is None:
        # loopback only, no dashboard: nothing listens beyond this machine; the workers ignore a Ctrl-C sent to the
        # terminal's process group (`hteval.interrupts.dask_setup`): this process stops the run and closes them
        cluster = LocalCluster(n_workers=worker_count(workers), threads_per_worker=1, processes=True,
                               host="127.0.0.1", dashboard_address=None, silence_logs=logging.WARNING,
                               preload=["hteval.interrupts"],
                               # the scheduler's health HTTP server: any free loopback port (its default, 8787,
                               # is taken whenever two runs share a machine)
                               scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"})
    try:
        client = Client(cluster if cluster is not None else scheduler)
    except BaseException:
        if cluster is not None:
            cluster.close()
        raise
    layers = LayerCluster(client)
    try:
        yield layers
    finally:
        layers.close()
        client.close()
        if cluster is not None:
            cluster.close()


class ClusterSpectra:
    """The spectra of one checkpoint from a cluster, as `iter_spectra` gives them from this machine but in the
    order their tasks finish and without the `finished` layers: iterating opens the cluster (`layer_cluster`),
    submits the tasks and closes the cluster at the end. `names`: the selected tensors in checkpoint order, once
    iterating has begun."""

    def __init__(self, path, *, scheduler: str | LayerCluster | None = None, workers: int | None = None,
                 layers=None, randomize: int | None = None, svd: str = "auto", finished: Collection[str] = ()):
        self._path, self._scheduler, self._workers = path, scheduler, workers
        self._request = {"layers": layers, "randomize": randomize, "svd": svd, "finished": finished}
        self.names: list[str] = []

    def __iter__(self) -> Iterator[LayerSpectrum | SkippedLayer]:
        with layer_cluster(self._scheduler, self._workers) as cluster:
            tasks = cluster.spectra(self._path, **self._request)
            self.names = tasks.names
            yield from tasks


__all__ = ["ENGINES", "GROUP_BYTES", "ClusterSpectra", "LayerCluster", "check_engine", "layer_cluster",
           "plan_groups"]
